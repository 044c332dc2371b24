//! Notifications as a user gets them: the real `cs-tui` in tmux with the real Codex in its
//! pane, a switch on a usage limit, and what cs-tui wrote to its own terminal (tmux's
//! `pipe-pane -O` records the pane's raw output, the bytes tmux received from cs-tui).

use std::time::Instant;

use crate::support::product::{first_turn, panel, prompt, quit, start};
use cs_tui_testkit::WAIT;
use cs_tui_testkit::mock_backend::AccountMode;

/// Occurrences of `needle` in `haystack`.
fn count(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .filter(|w| *w == needle)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switch_sends_one_osc9_notification_to_the_outer_terminal_through_tmux() {
    let p = start(&["alice", "bob"]).await;
    let t = &p.tmux;
    let recorded = p.store.path().join("outer-terminal.bytes");
    t.run(&[
        "pipe-pane",
        "-O",
        "-t",
        "main",
        &format!("cat >> '{}'", recorded.display()),
    ]);
    first_turn(t, "alice", "first question");

    p.mock.set_mode("acct-alice", AccountMode::UsageLimit);
    prompt(t, "second question");
    t.wait_for(WAIT, "the switch to bob in the panel", |s| {
        panel(s).contains("alice → bob") && panel(s).contains("● bob")
    });
    // Inside tmux ($TMUX is set in its panes) the OSC 9 goes in tmux's passthrough wrapper,
    // every ESC of the sequence doubled.
    let expected: &[u8] = b"\x1bPtmux;\x1b\x1b]9;cs-tui: switched to bob: alice \xe2\x86\x92 bob: usage limit reached\x07\x1b\\";
    let deadline = Instant::now() + WAIT;
    loop {
        let bytes = std::fs::read(&recorded).unwrap_or_default();
        if count(&bytes, expected) >= 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no switch notification in what cs-tui wrote; its OSC 9s: {:?}",
            osc9s(&bytes)
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }

    // More turns, more events: still one notification for the one switch.
    prompt(t, "third question");
    t.wait_for(WAIT, "bob's reply", |s| {
        s.contains("Served by bob: you said \"third question\"")
    });
    quit(t);
    let bytes = std::fs::read(&recorded).unwrap();
    assert_eq!(count(&bytes, expected), 1, "{:?}", osc9s(&bytes));
    assert_eq!(
        count(&bytes, b"]9;cs-tui: switched"),
        1,
        "{:?}",
        osc9s(&bytes)
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
