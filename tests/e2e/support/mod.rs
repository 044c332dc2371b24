//! What the end-to-end tests share that needs cs-tui itself (its library's types or its
//! binary, `CARGO_BIN_EXE_cs-tui`); everything else is in `cs-tui-testkit`.

pub mod accounts;
pub mod product;
pub mod session;

use cs_tui::proxy::events::ProxyEvent;
use cs_tui_testkit::WAIT;
use tokio::sync::broadcast;

/// Waits for the first event matching `pred`, panicking after [`WAIT`] with what was seen.
pub async fn wait_event(
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
