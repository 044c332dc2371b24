//! Zero retyped prompts, as a person sees it: the real cs-tui in tmux with the real Codex TUI,
//! the switching proxy, the real app-server, the mock backend and two accounts. A usage limit
//! mid-task never costs the prompt that hit it.

use std::time::Duration;

use crate::support::product::{NeverShown, Product, panel, prompt, ready, start_with};
use cs_tui_testkit::Tmux;
use cs_tui_testkit::WAIT;
use cs_tui_testkit::mock_backend::{AccountMode, ScriptedReply};
use cs_tui_testkit::{MockBackend, Usage, UsageWindow};

/// What the pane shows (left of the panel), lower-cased.
fn pane_text(screen: &str) -> String {
    screen
        .lines()
        .map(|l| l.chars().take(115).collect::<String>())
        .collect::<Vec<_>>()
        .join("\n")
        .to_lowercase()
}

const LIMIT_TEXTS: &[&str] = &["usage limit", "hit your", "heads up", "less than"];

async fn started(labels: &[&str], setup: impl FnOnce(&MockBackend)) -> Product {
    let p = start_with(labels, setup).await;
    p.tmux.wait_for(WAIT, "Codex and the panel on alice", |s| {
        ready(s) && panel(s).contains("● alice") && panel(s).contains("proxy ready")
    });
    p
}

fn ask_and_expect(t: &Tmux, question: &str, who: &str) {
    prompt(t, question);
    t.wait_for(WAIT, &format!("{who}'s reply to {question:?}"), |s| {
        s.contains(&format!("Served by {who}: you said \"{question}\""))
    });
}

/// A first prompt served by alice, and Codex's title generation after it, so that what
/// follows is about the user's next prompt only.
fn warm_up(t: &Tmux) {
    ask_and_expect(t, "warm up", "alice");
    t.wait_for(WAIT, "the title Codex generated", |s| {
        s.contains("Chat with alice")
    });
}

/// (f) Three more prompts work, served by `who`.
fn three_more(t: &Tmux, who: &str) {
    for i in 1..=3 {
        ask_and_expect(t, &format!("follow-up {i}"), who);
    }
}

fn occurrences(request: &cs_tui_testkit::RequestRecord, text: &str) -> usize {
    request
        .user_input_texts()
        .iter()
        .filter(|t| t.contains(text))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switches_before_its_limit_and_the_pane_never_warns() {
    let p = started(&["alice", "bob"], |_| {}).await;
    let t = &p.tmux;
    warm_up(t);
    let watch = NeverShown::start(t, &["heads up", "less than", "usage limit"]);
    // Alice's next reply reports 96 % used.
    p.mock.set_usage(
        "acct-alice",
        Usage {
            primary: Some(UsageWindow::five_hour(96)),
            ..Default::default()
        },
    );
    ask_and_expect(t, "almost out", "alice");
    t.wait_for(WAIT, "the early switch to bob", |s| {
        let panel = panel(s);
        panel.contains("alice → bob") && panel.contains("● bob")
    });
    ask_and_expect(t, "next one", "bob");
    assert_eq!(
        p.mock.user_turn_requests("next one")[0]
            .account_header
            .as_deref(),
        Some("acct-bob")
    );
    three_more(t, "bob");
    watch.assert_never_seen();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b_a_limit_hit_is_invisible_and_the_prompt_is_answered_by_the_next_account() {
    let p = started(&["alice", "bob"], |_| {}).await;
    let t = &p.tmux;
    warm_up(t);
    let watch = NeverShown::start(t, LIMIT_TEXTS);
    p.mock.set_mode("acct-alice", AccountMode::UsageLimit);
    prompt(t, "the prompt that hits the limit");
    let screen = t.wait_for(WAIT, "bob's answer without retyping", |s| {
        s.contains("Served by bob: you said \"the prompt that hits the limit\"")
    });
    assert_eq!(
        pane_text(&screen)
            .matches("› the prompt that hits the limit")
            .count(),
        1,
        "the prompt shows once:\n{screen}"
    );
    t.wait_for(WAIT, "the panel's account of it", |s| {
        let panel = panel(s);
        panel.contains("alice → bob") && panel.contains("limit hit on alice")
    });
    let to_bob: Vec<_> = p
        .mock
        .user_turn_requests("the prompt that hits the limit")
        .into_iter()
        .filter(|r| r.account_header.as_deref() == Some("acct-bob"))
        .collect();
    assert_eq!(to_bob.len(), 1, "one request to bob");
    assert_eq!(
        occurrences(&to_bob[0], "the prompt that hits the limit"),
        1,
        "bob's model input holds the prompt once: {:?}",
        to_bob[0].user_input_texts()
    );
    three_more(t, "bob");
    watch.assert_never_seen();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_a_limit_after_a_tool_call_continues_on_the_next_account_keeping_the_tool_work() {
    let p = started(&["alice", "bob"], |_| {}).await;
    let t = &p.tmux;
    warm_up(t);
    let watch = NeverShown::start(t, LIMIT_TEXTS);
    // Alice answers with a tool call; Codex runs it and asks again; that request hits the limit.
    p.mock.push_script(ScriptedReply::FunctionCall {
        call_id: "call_rerun_1".into(),
        name: "exec_command".into(),
        arguments: r#"{"cmd":"echo tool-output-marker","login":false}"#.into(),
    });
    p.mock.push_script(ScriptedReply::UsageLimit);
    prompt(t, "run the tool");
    t.wait_for(WAIT, "bob continuing the turn", |s| {
        s.contains("Served by bob")
    });
    let to_bob: Vec<_> = p
        .mock
        .model_requests()
        .into_iter()
        .filter(|r| !r.is_title_request() && r.account_header.as_deref() == Some("acct-bob"))
        .collect();
    assert_eq!(to_bob.len(), 1, "one request to bob");
    let bob = &to_bob[0];
    let calls = bob.input_items_of_type("function_call");
    let outputs = bob.input_items_of_type("function_call_output");
    assert_eq!(calls.len(), 1, "the tool call once: {calls:?}");
    assert_eq!(calls[0]["call_id"], "call_rerun_1");
    assert_eq!(outputs.len(), 1, "its output once: {outputs:?}");
    assert_eq!(occurrences(bob, "run the tool"), 1, "the prompt once");
    three_more(t, "bob");
    watch.assert_never_seen();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d_with_both_accounts_exhausted_the_real_error_shows_and_the_panel_names_the_reset() {
    let p = started(&["alice", "bob"], |mock| {
        mock.set_usage(
            "acct-bob",
            Usage {
                primary: Some(UsageWindow {
                    used_percent: 100,
                    window_minutes: 300,
                    resets_at: cs_tui_testkit::jwt::unix_now() + 45 * 60,
                }),
                ..Default::default()
            },
        );
    })
    .await;
    let t = &p.tmux;
    warm_up(t);
    p.mock.set_mode("acct-alice", AccountMode::UsageLimit);
    prompt(t, "nobody can answer");
    let screen = t.wait_for(WAIT, "the real error and the notice", |s| {
        pane_text(s).contains("usage limit") && panel(s).to_lowercase().contains("no account")
    });
    let reset = chrono::DateTime::from_timestamp(cs_tui_testkit::jwt::unix_now() + 45 * 60, 0)
        .unwrap()
        .with_timezone(&chrono::Local);
    let hhmm = [reset, reset - chrono::Duration::minutes(1)].map(|t| t.format("%H:%M").to_string());
    assert!(
        hhmm.iter().any(|h| panel(&screen).contains(h.as_str())),
        "the panel names bob's reset ({hhmm:?}):\n{screen}"
    );
    // Alice comes back: the session goes on.
    p.mock.set_mode("acct-alice", AccountMode::Normal);
    p.mock.set_usage("acct-alice", Usage::default());
    three_more(t, "alice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e_esc_during_the_switch_ends_the_turn_cleanly_and_the_next_prompt_works() {
    let p = started(&["alice", "bob"], |mock| {
        mock.set_login_delay("acct-bob", Duration::from_millis(2500));
    })
    .await;
    let t = &p.tmux;
    warm_up(t);
    p.mock.set_mode("acct-alice", AccountMode::UsageLimit);
    prompt(t, "interrupt me");
    t.wait_for(WAIT, "the switch under way", |s| {
        panel(s).contains("→ bob") || panel(s).to_lowercase().contains("switching")
    });
    t.keys(&["Escape"]);
    let screen = t.wait_for(WAIT, "the turn ended", |s| {
        pane_text(s).contains("interrupted") || pane_text(s).contains("ask codex to do anything")
    });
    assert!(
        !pane_text(&screen).contains("usage limit"),
        "the limit stays hidden:\n{screen}"
    );
    t.wait_for(WAIT, "bob active", |s| panel(s).contains("● bob"));
    let before = p
        .mock
        .user_turn_requests("interrupt me")
        .iter()
        .filter(|r| r.account_header.as_deref() == Some("acct-bob"))
        .count();
    assert_eq!(before, 0, "the cancelled turn was not re-run");
    three_more(t, "bob");
}

/// The re-run is shown to the TUI under the id of the TUI's own turn (docs/protocol.md §8):
/// Esc during it interrupts it by that id, which the proxy passes on as the re-run's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f_esc_during_the_rerun_interrupts_it_and_the_next_prompt_works() {
    let p = started(&["alice", "bob"], |_| {}).await;
    let t = &p.tmux;
    warm_up(t);
    let watch = NeverShown::start(t, LIMIT_TEXTS);
    p.mock.set_mode("acct-alice", AccountMode::UsageLimit);
    p.mock
        .set_mode("acct-bob", AccountMode::Slow(Duration::from_secs(120)));
    prompt(t, "interrupt the re-run");
    p.mock
        .wait_for_request(WAIT, "the re-run on bob", |r| {
            r.account_header.as_deref() == Some("acct-bob")
                && r.user_input_texts()
                    .iter()
                    .any(|t| t.contains("interrupt the re-run"))
        })
        .await;
    t.wait_for(WAIT, "the re-run reported", |s| {
        panel(s).contains("limit hit on alice")
    });
    t.keys(&["Escape"]);
    t.wait_for(WAIT, "the turn interrupted", |s| {
        pane_text(s).contains("interrupted")
    });
    // Were the turn still running, Codex would queue these behind it for two minutes.
    p.mock.set_mode("acct-bob", AccountMode::Normal);
    three_more(t, "bob");
    watch.assert_never_seen();
}
