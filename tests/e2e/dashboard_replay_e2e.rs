//! The panel end to end: the real `cs-tui` in tmux, the real Codex in its pane (plain, against
//! the mock), and proxy events fed in through the development replay path
//! (`CS_TUI_NO_PROXY` + `CS_TUI_DEV_EVENTS`) while the session runs. The hotkeys' commands are
//! read back from `CS_TUI_DEV_COMMANDS`.

use crate::support::product::paste_prompt;
use crate::support::replay::{Replay, account};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::Utc;
use cs_tui::proxy::events::{ConnectionState, ProxyCommand, ProxyEvent, SwitchReason};
use cs_tui::quota::{RateLimitSnapshot, RateLimitWindow};
use cs_tui_testkit::WAIT;

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn snapshot(five_hour: f64, weekly: f64) -> RateLimitSnapshot {
    RateLimitSnapshot {
        primary: Some(RateLimitWindow {
            used_percent: five_hour,
            window_duration_mins: Some(300),
            resets_at: Some(unix_now() + 2 * 3600 + 13 * 60),
        }),
        secondary: Some(RateLimitWindow {
            used_percent: weekly,
            window_duration_mins: Some(10_080),
            resets_at: Some(unix_now() + 3 * 86_400),
        }),
        plan_type: Some("plus".into()),
        ..Default::default()
    }
}

fn commands(path: &Path) -> Vec<ProxyCommand> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panel_follows_proxy_events_and_hotkeys_send_commands() {
    let replay = Replay::new().await;
    let commands_file = replay.store.path().join("commands.jsonl");
    let now = Utc::now();
    replay.emit(&[
        ProxyEvent::Connection {
            state: ConnectionState::Ready { clients: 1 },
            at: now,
        },
        ProxyEvent::ActiveAccount {
            account: account("alice"),
            at: now,
        },
        ProxyEvent::RateLimitsUpdated {
            account: account("alice"),
            snapshot: snapshot(42.0, 18.0),
            families: Vec::new(),
            at: now,
        },
        ProxyEvent::RateLimitsUpdated {
            account: account("bob"),
            snapshot: snapshot(3.0, 9.0),
            families: Vec::new(),
            at: now,
        },
        ProxyEvent::RateLimitsUpdated {
            account: account("carol"),
            snapshot: snapshot(12.0, 50.0),
            families: Vec::new(),
            at: now,
        },
    ]);
    let t = replay.start(
        160,
        48,
        &[("CS_TUI_DEV_COMMANDS", commands_file.as_os_str())],
    );

    let screen = t.wait_for(WAIT, "the panel with alice's numbers", |screen| {
        screen.contains("● alice")
            && screen.contains("proxy ready")
            && screen.contains("42%")
            && screen.contains("resets in 2h 1")
            && screen.contains("gpt-5.1-codex")
    });
    println!("{screen}");

    paste_prompt(&t, "alice", "first");

    // alice hits her limit; the proxy switches to bob.
    let now = Utc::now();
    replay.emit(&[
        ProxyEvent::RateLimitsUpdated {
            account: account("alice"),
            snapshot: snapshot(100.0, 61.0),
            families: Vec::new(),
            at: now,
        },
        ProxyEvent::UsageLimitHit {
            account: account("alice"),
            session: None,
            at: now,
        },
        ProxyEvent::SwitchDone {
            from: Some(account("alice")),
            to: account("bob"),
            reason: SwitchReason::UsageLimit,
            elapsed_ms: 80,
            at: now,
        },
    ]);
    let screen = t.wait_for(WAIT, "the switch in the panel", |screen| {
        screen.contains("● bob")
            && screen.contains("alice → bob")
            && screen.contains("usage limit reached")
            && screen.contains("exhausted until")
    });
    println!("{screen}");
    println!("{}", t.screen_with_escapes());

    // Manual switch through the picker: it opens on the first account one can switch to.
    t.keys(&["C-]", "s"]);
    t.wait_for(WAIT, "the account picker on carol", |screen| {
        screen.contains("switch account") && screen.contains("› carol")
    });
    t.keys(&["Up"]);
    t.wait_for(WAIT, "bob highlighted", |screen| screen.contains("› bob"));
    t.keys(&["Down"]);
    t.wait_for(WAIT, "carol highlighted", |screen| {
        screen.contains("› carol")
    });
    t.keys(&["Enter"]);
    t.wait_for(WAIT, "the request noted", |screen| {
        screen.contains("switch to carol requested")
    });
    t.keys(&["C-]", "n"]);
    t.wait_for(WAIT, "the best-switch request noted", |screen| {
        screen.contains("switch to best account requested")
    });
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let sent = commands(&commands_file);
        if sent.len() >= 2 {
            assert_eq!(
                sent,
                [
                    ProxyCommand::SwitchTo {
                        account_id: "id-carol".into()
                    },
                    ProxyCommand::SwitchBest
                ]
            );
            break;
        }
        assert!(std::time::Instant::now() < deadline, "commands: {sent:?}");
        std::thread::sleep(Duration::from_millis(50));
    }

    // A deferred switch and the all-exhausted notice reach the panel too.
    replay.emit(&[ProxyEvent::NoAccountAvailable {
        reason: SwitchReason::UsageLimit,
        earliest_reset: Some(Utc::now() + chrono::Duration::minutes(61)),
        at: Utc::now(),
    }]);
    t.wait_for(WAIT, "the no-account notice", |screen| {
        screen.contains("no account available until")
    });
}
