//! The whole product for end-to-end tests: the real `cs-tui` binary in tmux with the real
//! Codex TUI in its pane, the switching proxy in front of the real app-server, the mock
//! backend, and stored accounts.

use crate::support::cs_tui_under_sh;
use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use cs_tui_testkit::WAIT;
use cs_tui_testkit::{CodexHome, MockBackend, codex_bin};
use serde_json::Value;

use cs_tui_testkit::Tmux;

pub(crate) struct Product {
    pub mock: MockBackend,
    pub home: CodexHome,
    pub store: tempfile::TempDir,
    pub tmux: Tmux,
    pub auth_before: Vec<u8>,
}

/// `cs-tui` with its store, Codex home, Codex binary and refresh endpoint set for the test.
pub(crate) fn cs_tui_command(store: &Path, home: &CodexHome, mock: &MockBackend) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cs-tui"));
    command
        .env("CS_TUI_HOME", store)
        .env("CODEX_HOME", home.path())
        .env("CS_TUI_CODEX_BIN", codex_bin())
        .env("CODEX_REFRESH_TOKEN_URL_OVERRIDE", mock.refresh_url())
        .env_remove("CS_TUI_LOG")
        .env_remove("CS_TUI_POOL");
    command
}

/// Runs `cs-tui ARGS` to completion; asserts it succeeded and returns its stdout.
pub(crate) fn cs_tui(store: &Path, home: &CodexHome, mock: &MockBackend, args: &[&str]) -> String {
    let out = cs_tui_command(store, home, mock)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cs-tui {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Stores `auth` as account `label` with `cs-tui accounts import`.
pub(crate) fn import(
    store: &Path,
    home: &CodexHome,
    mock: &MockBackend,
    label: &str,
    auth: &Value,
) {
    let file = store.join(format!("{label}.auth.json"));
    std::fs::write(&file, auth.to_string()).unwrap();
    cs_tui(
        store,
        home,
        mock,
        &[
            "accounts",
            "import",
            "--name",
            label,
            "--file",
            file.to_str().unwrap(),
        ],
    );
}

pub(crate) async fn start(labels: &[&str]) -> Product {
    start_with(labels, |_| {}).await
}

/// Like [`start`], with a hook to set the mock up before cs-tui starts.
pub(crate) async fn start_with(labels: &[&str], setup: impl FnOnce(&MockBackend)) -> Product {
    start_configured(labels, |mock, _| setup(mock)).await
}

/// Like [`start_with`], with the Codex home to configure too.
pub(crate) async fn start_configured(
    labels: &[&str],
    setup: impl FnOnce(&MockBackend, &CodexHome),
) -> Product {
    start_with_store(labels, |mock, home, _| setup(mock, home)).await
}

/// Like [`start_configured`], with the store (its accounts imported) to set up too.
pub(crate) async fn start_with_store(
    labels: &[&str],
    setup: impl FnOnce(&MockBackend, &CodexHome, &std::path::Path),
) -> Product {
    let mock = MockBackend::start().await;
    let home = CodexHome::offline(&mock.url());
    let store = tempfile::Builder::new()
        .prefix("cs-tui-store-")
        .tempdir()
        .unwrap();
    if std::env::var_os("CS_TUI_TEST_KEEP").is_some() {
        eprintln!("store kept at {}", store.path().display());
    }
    for (i, label) in labels.iter().enumerate() {
        let (fake, refresh) = mock.add_account(label);
        let auth = fake.auth_json(3600, &refresh);
        if i == 0 {
            // The user's own Codex login: cs-tui must leave it alone.
            home.write_auth_json(&auth);
        }
        import(store.path(), &home, &mock, label, &auth);
    }
    cs_tui(store.path(), &home, &mock, &["accounts", "use", labels[0]]);
    setup(&mock, &home, store.path());
    let auth_before = std::fs::read(home.path().join("auth.json")).unwrap();
    let codex = codex_bin();
    let refresh_url = mock.refresh_url();
    let env: Vec<(&str, &OsStr)> = vec![
        ("CS_TUI_HOME", store.path().as_os_str()),
        ("CS_TUI_CODEX_BIN", codex.as_os_str()),
        ("CODEX_HOME", home.path().as_os_str()),
        ("CODEX_REFRESH_TOKEN_URL_OVERRIDE", OsStr::new(&refresh_url)),
        ("CS_TUI_LOG", OsStr::new("cs_tui=debug")),
    ];
    let script = "\"$0\"; echo \"cs-tui exited $?\"; printf 'shell prompt> '; exec sleep 600";
    let tmux = cs_tui_under_sh(160, 48, home.work_dir(), &env, script);
    Product {
        mock,
        home,
        store,
        tmux,
        auth_before,
    }
}

pub(crate) fn ready(screen: &str) -> bool {
    screen.contains("Ask Codex to do anything") && screen.contains("gpt-5.1-codex")
}

/// The panel's text (right of the pane's border).
pub(crate) fn panel(screen: &str) -> String {
    screen
        .lines()
        .filter_map(|l| l.split_once('│').map(|(_, rest)| rest.to_owned()))
        .collect::<Vec<_>>()
        .join("\n")
}

pub(crate) fn prompt(t: &Tmux, text: &str) {
    t.type_like_a_person(text);
    t.keys(&["Enter"]);
}

/// Pastes `text` into Codex's composer (bracketed, through the pane), sends it with Enter, and
/// waits for `account`'s reply.
pub(crate) fn paste_prompt(t: &Tmux, account: &str, text: &str) {
    t.paste(text);
    t.wait_for(WAIT, "the pasted prompt", |screen| {
        screen.contains(&format!("› {text}"))
    });
    t.keys(&["Enter"]);
    let reply = format!("Served by {account}: you said \"{text}\"");
    t.wait_for(WAIT, "the reply to the pasted prompt", |screen| {
        screen.contains(&reply)
    });
}

/// Waits for Codex ready in the pane and the panel on `account` with the proxy ready, then
/// sends `first` and waits for that account's reply.
pub(crate) fn first_turn(t: &Tmux, account: &str, first: &str) {
    let active = format!("● {account}");
    t.wait_for(WAIT, "Codex and the panel", |s| {
        ready(s) && panel(s).contains(&active) && panel(s).contains("proxy ready")
    });
    prompt(t, first);
    let reply = format!("Served by {account}: you said \"{first}\"");
    t.wait_for(WAIT, "the first reply", |s| s.contains(&reply));
}

/// Quits with the hotkey and its confirmation; asserts cs-tui exited 0.
pub(crate) fn quit(t: &Tmux) {
    t.keys(&["C-]", "q"]);
    t.wait_for(WAIT, "the quit question", |s| s.contains("Quit cs-tui?"));
    t.keys(&["y"]);
    let screen = t.wait_for(WAIT, "the shell back", |s| s.contains("shell prompt>"));
    assert!(screen.contains("cs-tui exited 0"), "{screen}");
}

/// Watches Codex's pane in the background for text that must never appear there (a
/// usage-limit message, a low-quota warning), polling as fast as tmux answers. Only the pane is
/// read (the left 115 columns of the 160-column window): the panel beside it names limits on
/// purpose.
pub(crate) struct NeverShown {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<Vec<String>>>,
}

impl NeverShown {
    pub(crate) fn start(tmux: &Tmux, needles: &[&str]) -> Self {
        let socket = tmux.socket().to_owned();
        let needles: Vec<String> = needles.iter().map(|n| n.to_lowercase()).collect();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut seen = Vec::new();
            while !stopping.load(std::sync::atomic::Ordering::Relaxed) {
                let out = Command::new("tmux")
                    .args(["-L", &socket, "capture-pane", "-p", "-t", "main"])
                    .output();
                if let Ok(out) = out {
                    let screen: String = String::from_utf8_lossy(&out.stdout)
                        .lines()
                        .map(|l| l.chars().take(115).collect::<String>() + "\n")
                        .collect::<String>()
                        .to_lowercase();
                    for needle in &needles {
                        if screen.contains(needle.as_str()) {
                            seen.push(format!("{needle:?} on screen:\n{screen}"));
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            seen
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops watching; panics with the first screen that showed a needle.
    pub(crate) fn assert_never_seen(mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let seen = self
            .thread
            .take()
            .expect("joined once")
            .join()
            .expect("watcher");
        assert!(seen.is_empty(), "{}", seen[0]);
    }
}

impl Drop for Product {
    /// With `CS_TUI_TEST_KEEP` set, the store's logs are copied out for a post-mortem.
    fn drop(&mut self) {
        if std::env::var_os("CS_TUI_TEST_KEEP").is_none() {
            return;
        }
        // Let cs-tui exit (and flush its log) first.
        let _ = Command::new("tmux")
            .args(["-L", self.tmux.socket(), "kill-server"])
            .status();
        std::thread::sleep(Duration::from_millis(800));
        let to = std::env::temp_dir().join(format!(
            "cs-tui-kept-{}",
            self.store.path().file_name().unwrap().to_string_lossy()
        ));
        let _ = Command::new("cp")
            .arg("-r")
            .arg(self.store.path())
            .arg(&to)
            .status();
        eprintln!("store copied to {}", to.display());
    }
}
