//! Notifications as a user gets them: the real `cs-tui` in tmux with the real Codex in its
//! pane, a switch on a usage limit, and what cs-tui wrote to its own terminal (tmux's
//! `pipe-pane -O` records the pane's raw output, the bytes tmux received from cs-tui).

use std::path::PathBuf;
use std::time::Instant;

use crate::serve_cli::{import, spawn_serve_with};
use crate::support::product::{Product, first_turn, panel, prompt, quit, start, start_configured};
use cs_tui_testkit::WAIT;
use cs_tui_testkit::mock_backend::AccountMode;

/// Occurrences of `needle` in `haystack`.
fn count(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .filter(|w| *w == needle)
        .count()
}

/// What cs-tui writes to its own terminal, as tmux's `pipe-pane -O` records it.
struct Recording(PathBuf);

impl Recording {
    fn start(p: &Product) -> Self {
        let recorded = p.store.path().join("outer-terminal.bytes");
        p.tmux.run(&[
            "pipe-pane",
            "-O",
            "-t",
            "main",
            &format!("cat >> '{}'", recorded.display()),
        ]);
        Self(recorded)
    }

    /// The bytes recorded so far.
    fn bytes(&self) -> Vec<u8> {
        std::fs::read(&self.0).unwrap_or_default()
    }

    /// Waits until `found` holds of the bytes recorded, and returns them; fails after
    /// [`WAIT`] naming `what` and the OSC 9s recorded.
    fn wait_for(&self, what: &str, found: impl Fn(&[u8]) -> bool) -> Vec<u8> {
        let deadline = Instant::now() + WAIT;
        loop {
            let bytes = self.bytes();
            if found(&bytes) {
                return bytes;
            }
            assert!(
                Instant::now() < deadline,
                "{what}; its OSC 9s: {:?}",
                osc9s(&bytes)
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switch_sends_one_osc9_notification_to_the_outer_terminal_through_tmux() {
    let p = start(&["alice", "bob"]).await;
    let t = &p.tmux;
    let recorded = Recording::start(&p);
    first_turn(t, "alice", "first question");

    p.mock.set_mode("acct-alice", AccountMode::UsageLimit);
    prompt(t, "second question");
    t.wait_for(WAIT, "the switch to bob in the panel", |s| {
        panel(s).contains("alice → bob") && panel(s).contains("● bob")
    });
    // Inside tmux ($TMUX is set in its panes) the OSC 9 goes in tmux's passthrough wrapper,
    // every ESC of the sequence doubled.
    let expected: &[u8] = b"\x1bPtmux;\x1b\x1b]9;cs-tui: switched to bob: alice \xe2\x86\x92 bob: usage limit reached\x07\x1b\\";
    recorded.wait_for("no switch notification in what cs-tui wrote", |bytes| {
        count(bytes, expected) >= 1
    });

    // More turns, more events: still one notification for the one switch.
    prompt(t, "third question");
    t.wait_for(WAIT, "bob's reply", |s| {
        s.contains("Served by bob: you said \"third question\"")
    });
    quit(t);
    let bytes = recorded.bytes();
    assert_eq!(count(&bytes, expected), 1, "{:?}", osc9s(&bytes));
    assert_eq!(
        count(&bytes, b"]9;cs-tui: switched"),
        1,
        "{:?}",
        osc9s(&bytes)
    );
    // One limit hit, one notification: the switch (not also "alice at 100%"); alice stays at
    // her limit, so no reset either.
    let ours: Vec<String> = osc9s(&bytes)
        .into_iter()
        .filter(|n| n.starts_with("cs-tui"))
        .collect();
    assert_eq!(
        ours,
        ["cs-tui: switched to bob: alice → bob: usage limit reached"]
    );
    // No token in any notification (access tokens are JWTs, the mock's refresh tokens `rt-…`).
    for payload in osc9s(&bytes) {
        assert!(
            !payload.contains("eyJ") && !payload.contains("rt-acct"),
            "{payload}"
        );
    }
}

/// The OSC 9 payloads in `bytes`, for failure messages.
fn osc9s(bytes: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(bytes)
        .split("]9;")
        .skip(1)
        .map(|s| s.split('\x07').next().unwrap_or_default().to_owned())
        .collect()
}

/// `serve` has no terminal: the command method is the one that applies there, run without a
/// shell with the notice in its arguments, and nothing but JSON lines reaches its stdout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_runs_the_notify_command_once_on_a_manual_switch() {
    let mock = cs_tui_testkit::MockBackend::start().await;
    let home = cs_tui_testkit::CodexHome::offline(&mock.url());
    let store = tempfile::tempdir().unwrap();
    for label in ["alice", "bob"] {
        import(store.path(), &home, &mock, label);
    }
    let log = store.path().join("notified.txt");
    // The script writes its arguments; `{title}` and `{body}` are one argument each, whatever
    // they hold (no shell ever parses them).
    let config = format!(
        "[notify]\nmethods = [\"osc9\", \"command\"]\ncommand = [\"sh\", \"-c\", \
         \"printf '%s|%s|%s\\\\n' \\\"$0\\\" \\\"$1\\\" \\\"$2\\\" >> '{}'\", \"{{event}}\", \
         \"{{title}}\", \"{{body}}\"]\n",
        log.display()
    );
    std::fs::write(store.path().join("config.toml"), &config).unwrap();

    // Every line serve prints is checked: its first lines here, its events (JSON, so no raw
    // control byte) by `wait_event`, the rest once it has ended.
    let mut serve = spawn_serve_with(store.path(), &home, &mock, &[]);
    let mut printed = vec![
        serve.next_line("listening line"),
        serve.next_line("token-file line"),
    ];
    serve.wait_event("active account", |e| e["event"] == "active_account");
    let out = crate::support::product::cs_tui(store.path(), &home, &mock, &["switch", "bob"]);
    assert!(out.contains("switching to bob"), "{out}");
    serve.wait_event("switch done", |e| e["event"] == "switch_done");

    let expected = "switch|cs-tui: switched to bob|alice → bob: manual switch\n";
    let deadline = Instant::now() + WAIT;
    while std::fs::read_to_string(&log).unwrap_or_default() != expected {
        assert!(
            Instant::now() < deadline,
            "the notify command wrote {:?}",
            std::fs::read_to_string(&log)
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // SIGTERM ends serve; the command ran once, and serve wrote no escape sequence.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(serve.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(serve.child.wait().unwrap().success());
    printed.extend(serve.rest());
    assert_eq!(std::fs::read_to_string(&log).unwrap(), expected);
    assert!(
        !printed
            .iter()
            .any(|l| l.contains('\x1b') || l.contains('\x07')),
        "{printed:?}"
    );
}

/// The active account's 5-hour window crossing 80 % mid-session: one notification, and none
/// more while it climbs within the same window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_threshold_crossed_by_the_active_account_notifies_once() {
    use cs_tui_testkit::mock_backend::{Usage, UsageWindow};

    let p = start(&["alice", "bob"]).await;
    let t = &p.tmux;
    let recorded = Recording::start(&p);
    first_turn(t, "alice", "first question");
    let window = UsageWindow::five_hour(85);
    p.mock.set_usage(
        "acct-alice",
        Usage {
            primary: Some(window),
            ..Usage::default()
        },
    );
    prompt(t, "second question");
    t.wait_for(WAIT, "alice at 85% in the panel", |s| {
        s.contains("Served by alice: you said \"second question\"") && panel(s).contains("85%")
    });
    let expected: &[u8] = b"]9;cs-tui: alice at 85%: alice's 5h window passed 80%\x07";
    recorded.wait_for("no threshold notification", |bytes| {
        count(bytes, expected) > 0
    });
    // Climbing to 90 % in the same window (same reset time) crosses nothing new.
    p.mock.set_usage(
        "acct-alice",
        Usage {
            primary: Some(UsageWindow {
                used_percent: 90,
                ..window
            }),
            ..Usage::default()
        },
    );
    prompt(t, "third question");
    t.wait_for(WAIT, "alice at 90% in the panel", |s| {
        s.contains("Served by alice: you said \"third question\"") && panel(s).contains("90%")
    });
    quit(t);
    let notices = osc9s(&recorded.bytes());
    assert_eq!(
        notices
            .iter()
            .filter(|n| n.starts_with("cs-tui: alice at"))
            .count(),
        1,
        "{notices:?}"
    );
    assert!(
        !notices.iter().any(|n| n.contains("switched")),
        "{notices:?}"
    );
}

/// Codex's own desktop notifications (its `OSC 9` when a turn completes, with
/// `tui.notifications` on) keep reaching the outer terminal, tmux-wrapped inside tmux, beside
/// cs-tui's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codex_own_notifications_pass_through_to_the_outer_terminal() {
    let p = start_configured(&["alice"], |_, home| {
        let path = home.path().join("config.toml");
        let config = std::fs::read_to_string(&path).unwrap();
        let config = config.replacen(
            "[tui]\n",
            "[tui]\nnotifications = true\nnotification_method = \"osc9\"\n\
             notification_condition = \"always\"\n",
            1,
        );
        std::fs::write(&path, config).unwrap();
    })
    .await;
    let t = &p.tmux;
    let recorded = Recording::start(&p);
    first_turn(t, "alice", "first question");
    let from_codex = |bytes: &[u8]| osc9s(bytes).into_iter().find(|n| !n.starts_with("cs-tui"));
    let bytes = recorded.wait_for("no OSC 9 from Codex reached the outer terminal", |bytes| {
        from_codex(bytes).is_some()
    });
    let notice = from_codex(&bytes).unwrap();
    let wrapped = format!("\x1bPtmux;\x1b\x1b]9;{notice}\x07\x1b\\");
    assert_eq!(count(&bytes, wrapped.as_bytes()), 1, "{notice:?}");
    quit(t);
}
