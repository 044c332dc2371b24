//! What the end-to-end tests share that needs cs-tui itself (its library's types or its
//! binary, `CARGO_BIN_EXE_cs-tui`); everything else is in `cs-tui-testkit`.

pub(crate) mod accounts;
pub(crate) mod pool;
pub(crate) mod product;
pub(crate) mod replay;
pub(crate) mod session;

use std::ffi::OsStr;
use std::path::Path;

use cs_tui::proxy::events::ProxyEvent;
use cs_tui_testkit::{Tmux, WAIT};
use tokio::sync::broadcast;

/// Starts `sh -c SCRIPT` with the cs-tui binary as `$0`, in a detached `width`×`height` tmux
/// window in `cwd` with `env` added. The script runs `"$0"` and then shows what a person
/// would find after cs-tui exits (its status, the terminal's mode, a shell prompt).
pub(crate) fn cs_tui_under_sh(
    width: u16,
    height: u16,
    cwd: &Path,
    env: &[(&str, &OsStr)],
    script: &str,
) -> Tmux {
    Tmux::start(
        width,
        height,
        cwd,
        env,
        OsStr::new("sh"),
        &[
            OsStr::new("-c"),
            OsStr::new(script),
            OsStr::new(env!("CARGO_BIN_EXE_cs-tui")),
        ],
    )
}

/// Waits for the first event matching `pred`, panicking after [`WAIT`] with what was seen.
pub(crate) async fn wait_event(
    rx: &mut broadcast::Receiver<ProxyEvent>,
    what: &str,
    pred: impl Fn(&ProxyEvent) -> bool,
) -> ProxyEvent {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Ok(event)) => {
                if pred(&event) {
                    return event;
                }
                seen.push(event);
            }
            Ok(Err(broadcast::error::RecvError::Lagged(_))) => continue,
            Ok(Err(e)) => panic!("event channel closed waiting for {what}: {e}"),
            Err(_) => panic!("timed out waiting for {what}; saw: {seen:#?}"),
        }
    }
}
