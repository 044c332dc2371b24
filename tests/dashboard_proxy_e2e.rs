//! The whole product as a person uses it: the real `cs-tui` binary in tmux, the real Codex TUI
//! in its pane, the switching proxy in front of the real app-server, the mock backend, and two
//! stored accounts.

mod pane_support;

use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use cs_tui_testkit::mock_backend::AccountMode;
use cs_tui_testkit::{CodexHome, MockBackend, codex_bin};
use pane_support::Tmux;

const WAIT: Duration = Duration::from_secs(40);

struct Product {
    mock: MockBackend,
    home: CodexHome,
    store: tempfile::TempDir,
    tmux: Tmux,
    auth_before: Vec<u8>,
}

fn cs_tui(store: &Path, home: &CodexHome, mock: &MockBackend, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_cs-tui"))
        .env("CS_TUI_HOME", store)
        .env("CODEX_HOME", home.path())
        .env("CS_TUI_CODEX_BIN", codex_bin())
        .env("CODEX_REFRESH_TOKEN_URL_OVERRIDE", mock.refresh_url())
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

async fn start(labels: &[&str]) -> Product {
    let mock = MockBackend::start().await;
    let home = CodexHome::offline(&mock.url());
    let store = tempfile::tempdir().unwrap();
    for (i, label) in labels.iter().enumerate() {
        let (fake, refresh) = mock.add_account(label);
        let auth = fake.auth_json(3600, &refresh);
        if i == 0 {
            // The user's own Codex login: cs-tui must leave it alone.
            home.write_auth_json(&auth);
        }
        let file = store.path().join(format!("{label}.auth.json"));
        std::fs::write(&file, auth.to_string()).unwrap();
        cs_tui(
            store.path(),
            &home,
            &mock,
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
    cs_tui(store.path(), &home, &mock, &["accounts", "use", labels[0]]);
    let auth_before = std::fs::read(home.path().join("auth.json")).unwrap();
    let codex = codex_bin();
    let refresh_url = mock.refresh_url();
    let env: Vec<(&str, &OsStr)> = vec![
        ("CS_TUI_HOME", store.path().as_os_str()),
        ("CS_TUI_CODEX_BIN", codex.as_os_str()),
        ("CODEX_HOME", home.path().as_os_str()),
        ("CODEX_REFRESH_TOKEN_URL_OVERRIDE", OsStr::new(&refresh_url)),
    ];
    let script = "\"$0\"; echo \"cs-tui exited $?\"; printf 'shell prompt> '; exec sleep 600";
    let tmux = Tmux::start(
        160,
        48,
        home.work_dir(),
        &env,
        OsStr::new("sh"),
        &[
            OsStr::new("-c"),
            OsStr::new(script),
            OsStr::new(env!("CARGO_BIN_EXE_cs-tui")),
        ],
    );
    Product {
        mock,
        home,
        store,
        tmux,
        auth_before,
    }
}

fn ready(screen: &str) -> bool {
    screen.contains("Ask Codex to do anything") && screen.contains("gpt-5.1-codex")
}

/// The panel's text (right of the pane's border).
fn panel(screen: &str) -> String {
    screen
        .lines()
        .filter_map(|l| l.split_once('│').map(|(_, rest)| rest.to_owned()))
        .collect::<Vec<_>>()
        .join("\n")
}

fn prompt(t: &Tmux, text: &str) {
    t.type_like_a_person(text);
    t.keys(&["Enter"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limit_switches_accounts_in_the_running_session_and_the_panel_says_why() {
    let p = start(&["alice", "bob"]).await;
    let t = &p.tmux;
    t.wait_for(WAIT, "Codex and the panel on alice", |s| {
        ready(s) && panel(s).contains("● alice") && panel(s).contains("proxy ready")
    });

    prompt(t, "first question");
    t.wait_for(WAIT, "alice's reply", |s| {
        s.contains("Served by alice: you said \"first question\"")
    });

    // Alice hits her limit: the turn fails, the proxy logs the session into bob.
    p.mock.set_mode("acct-alice", AccountMode::UsageLimit);
    prompt(t, "second question");
    let screen = t.wait_for(WAIT, "the switch to bob in the panel", |s| {
        let panel = panel(s);
        panel.contains("alice → bob")
            && panel.contains("usage limit reached")
            && panel.contains("● bob")
    });
    assert!(panel(&screen).contains("exhausted until"), "{screen}");

    prompt(t, "third question");
    t.wait_for(WAIT, "bob's reply", |s| {
        s.contains("Served by bob: you said \"third question\"")
    });
    let last = p
        .mock
        .model_requests()
        .into_iter()
        .rev()
        .find(|r| {
            r.user_input_texts()
                .iter()
                .any(|t| t.contains("third question"))
        })
        .unwrap();
    assert_eq!(last.account_header.as_deref(), Some("acct-bob"));

    // A manual switch back through the picker (alice is usable again).
    p.mock.set_mode("acct-alice", AccountMode::Normal);
    p.mock
        .set_usage("acct-alice", cs_tui_testkit::Usage::default());
    t.keys(&["C-]", "s"]);
    t.wait_for(WAIT, "the picker", |s| s.contains("Enter switch"));
    // The picker opens on the first usable account other than the active one.
    t.wait_for(WAIT, "alice selected", |s| {
        s.lines().any(|l| l.contains("› alice"))
    });
    t.keys(&["Enter"]);
    t.wait_for(WAIT, "the manual switch in the panel", |s| {
        let panel = panel(s);
        panel.contains("bob → alice") && panel.contains("● alice")
    });
    prompt(t, "fourth question");
    t.wait_for(WAIT, "alice's reply again", |s| {
        s.contains("Served by alice: you said \"fourth question\"")
    });

    // Resizing the window: Codex redraws at the new size.
    t.resize(130, 40);
    t.wait_for(WAIT, "Codex redrawn at 130x40", |s| {
        let lines: Vec<&str> = s.lines().collect();
        lines.len() == 40 && lines[30..].iter().any(|l| l.contains("Ask Codex"))
    });

    t.keys(&["C-]", "q"]);
    t.wait_for(WAIT, "the quit question", |s| s.contains("Quit cs-tui?"));
    t.keys(&["y"]);
    let screen = t.wait_for(WAIT, "the shell back", |s| s.contains("shell prompt>"));
    assert!(screen.contains("cs-tui exited 0"), "{screen}");

    assert_eq!(
        std::fs::read(p.home.path().join("auth.json")).unwrap(),
        p.auth_before,
        "the user's auth.json is left unchanged"
    );
    let history = std::fs::read_to_string(p.store.path().join("switch-history.jsonl")).unwrap();
    assert_eq!(history.lines().count(), 2, "{history}");
    let runtime: Vec<_> = std::fs::read_dir(p.store.path().join("runtime"))
        .map(|d| d.flatten().collect())
        .unwrap_or_default();
    assert!(runtime.is_empty(), "no token files left: {runtime:?}");
}
