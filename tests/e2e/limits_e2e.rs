//! Never switch on the wrong number (issue 11): limit families, window shapes, a lifted limit
//! and workspace limits, end to end with the real Codex TUI and app-server in front of the
//! mock backend.

use crate::support::product::{Product, first_turn, panel, prompt, quit, start_with};
use crate::support::session::Rig;
use cs_tui::proxy::events::{ProxyCommand, ProxyEvent};
use cs_tui::proxy::history;
use cs_tui_testkit::Tmux;
use cs_tui_testkit::WAIT;
use cs_tui_testkit::mock_backend::AccountMode;
use cs_tui_testkit::{FakeAccount, LimitFamily, Usage, UsageWindow, seat_key};

/// The panel's line that starts with `label` (a gauge's row), without the border.
fn row<'a>(panel: &'a str, label: &str) -> Option<&'a str> {
    panel
        .lines()
        .map(|l| l.trim().trim_end_matches('│').trim_end())
        .find(|l| l.starts_with(label))
}

fn ask_and_expect(t: &Tmux, question: &str, who: &str) {
    prompt(t, question);
    t.wait_for(WAIT, &format!("{who}'s reply to {question:?}"), |s| {
        s.contains(&format!("Served by {who}: you said \"{question}\""))
    });
}

fn history_lines(p: &Product) -> usize {
    history::read_recent(&p.store.path().join(history::HISTORY_FILE), 10).len()
}

/// A Spark family at 100 % on the active account whose `codex` quota is at 42 %: no switch,
/// and the 5-hour gauge keeps the quota's 42 %; Spark has its own row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_model_family_on_the_active_account_causes_no_switch() {
    let p = start_with(&["alice", "bob"], |mock| {
        mock.set_usage(
            "acct-alice",
            Usage {
                primary: Some(UsageWindow::five_hour(42)),
                ..Default::default()
            },
        );
        mock.set_families("acct-alice", vec![LimitFamily::spark(100)]);
    })
    .await;
    let t = &p.tmux;
    first_turn(t, "alice", "first question");
    // The turn's rate-limit update is the Spark family's (docs/protocol.md §9): the panel shows it
    // on its own row once the core has taken it in.
    let screen = t.wait_for(WAIT, "the Spark row under alice", |s| {
        row(&panel(s), "↳ GPT-5.3-Codex-Spark").is_some_and(|r| r.contains("5h 100%"))
    });
    let five = row(&panel(&screen), "5-hour").map(str::to_owned);
    assert!(
        five.as_deref().is_some_and(|r| r.ends_with("42%")),
        "the 5-hour gauge is the codex family's: {five:?}\n{screen}"
    );
    // A switch armed by that update would run at this turn boundary, before the next turn.
    ask_and_expect(t, "second question", "alice");
    let screen = t.screen();
    let panel = panel(&screen);
    assert!(panel.contains("● alice"), "{screen}");
    assert!(!panel.contains("→ bob"), "{screen}");
    assert!(!panel.contains("exhausted"), "{screen}");
    assert_eq!(
        p.mock
            .last_user_turn_request("second question")
            .account_header
            .as_deref(),
        Some("acct-alice")
    );
    assert_eq!(history_lines(&p), 0, "no switch was recorded");
    quit(t);
}

/// A weekly-only plan: no 5-hour row, and its weekly limit still switches, with the prompt
/// answered by the next account without being typed again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_weekly_only_account_shows_no_five_hour_row_and_switches_on_its_weekly_limit() {
    let p = start_with(&["alice", "bob"], |mock| {
        mock.set_usage("acct-alice", Usage::weekly_only(30));
    })
    .await;
    let t = &p.tmux;
    first_turn(t, "alice", "first question");
    let screen = t.wait_for(WAIT, "alice's weekly gauge", |s| {
        row(&panel(s), "weekly").is_some_and(|r| r.ends_with("30%"))
    });
    let alice_panel = panel(&screen);
    assert!(row(&alice_panel, "5-hour").is_none(), "{screen}");
    assert!(!alice_panel.contains("no data"), "{screen}");
    // Codex's title generation for the first prompt is done: the next model request is the
    // user's.
    t.wait_for(WAIT, "the title Codex generated", |s| {
        s.contains("Chat with alice")
    });

    // The weekly window fills up (the mock reads the account's primary window as full).
    p.mock.set_mode("acct-alice", AccountMode::UsageLimit);
    ask_and_expect(t, "second question", "bob");
    let screen = t.wait_for(WAIT, "the switch in the panel", |s| {
        let panel = panel(s);
        panel.contains("alice → bob") && panel.contains("● bob")
    });
    assert!(panel(&screen).contains("usage limit reached"), "{screen}");
    let bob = p.mock.last_user_turn_request("second question");
    assert_eq!(bob.account_header.as_deref(), Some("acct-bob"));
    let asked = p.mock.user_turn_requests("second question");
    let statuses: Vec<(Option<&str>, u16)> = asked
        .iter()
        .map(|r| (r.account_header.as_deref(), r.status))
        .collect();
    assert_eq!(
        statuses,
        [(Some("acct-alice"), 429), (Some("acct-bob"), 200)],
        "alice refused it on her weekly limit, bob answered it"
    );
    let typed = bob
        .user_input_texts()
        .iter()
        .filter(|t| t.contains("second question"))
        .count();
    assert_eq!(typed, 1, "the prompt was not typed again");
    quit(t);
}

/// alice hits her limit and the session moves to bob; her limit is then lifted. `Ctrl+] n`
/// reads her usage again, finds room, and switches back (the cooldown that keeps automatic
/// switches from ping-ponging does not hold back a switch the user asks for).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn next_after_a_lifted_limit_switches_back() {
    let p = start_with(&["alice", "bob"], |_| {}).await;
    let t = &p.tmux;
    first_turn(t, "alice", "first question");
    p.mock.set_mode("acct-alice", AccountMode::UsageLimit);
    ask_and_expect(t, "second question", "bob");
    t.wait_for(WAIT, "alice exhausted in the panel", |s| {
        let panel = panel(s);
        panel.contains("● bob") && panel.contains("exhausted until")
    });

    // A reset credit, or the window's reset: alice has room again.
    p.mock.set_mode("acct-alice", AccountMode::Normal);
    p.mock.set_usage(
        "acct-alice",
        Usage {
            primary: Some(UsageWindow::five_hour(42)),
            ..Default::default()
        },
    );
    t.keys(&["C-]", "n"]);
    let screen = t.wait_for(WAIT, "the switch back to alice", |s| {
        let panel = panel(s);
        panel.contains("bob → alice") && panel.contains("● alice")
    });
    let panel = panel(&screen);
    assert!(!panel.contains("no account available"), "{screen}");
    assert!(!panel.contains("exhausted"), "{screen}");
    ask_and_expect(t, "third question", "alice");
    assert_eq!(history_lines(&p), 2);
    quit(t);
}

async fn rig(accounts: &[(&str, Option<&str>)]) -> Rig {
    Rig::start(accounts, |_| {}).await
}

fn key(fake: &FakeAccount) -> String {
    seat_key(&fake.chatgpt_account_id, &fake.user_id)
}

fn seat(label: &str) -> FakeAccount {
    let mut fake = FakeAccount::new(label).with_plan("team");
    fake.chatgpt_account_id = "acct-team".to_owned();
    fake
}

/// alice hits her workspace's limit. bob, a seat of the same workspace, looks fresh (his own
/// numbers do not show the workspace's limit yet): the session goes to carol, never to bob.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workspace_limit_never_moves_to_another_seat_of_that_workspace() {
    let mut rig = rig(&[
        ("alice", Some("team")),
        ("bob", Some("team")),
        ("carol", None),
    ])
    .await;
    let alice = key(&seat("alice"));
    rig.mock.set_usage(
        &key(&seat("bob")),
        Usage {
            primary: Some(UsageWindow::five_hour(5)),
            ..Default::default()
        },
    );
    rig.mock.set_usage(
        "acct-carol",
        Usage {
            primary: Some(UsageWindow::five_hour(60)),
            ..Default::default()
        },
    );
    let mut client = rig.tui_client().await;
    let thread = cs_tui_testkit::turns::start_thread(&mut client, rig.home.work_dir()).await;
    cs_tui_testkit::turns::run_turn(&mut client, &thread, "first prompt").await;

    rig.mock.set_usage(
        &alice,
        Usage {
            limit_reached_type: Some("workspace_member_usage_limit_reached".into()),
            ..Default::default()
        },
    );
    rig.mock.set_mode(&alice, AccountMode::UsageLimit);
    let failed = cs_tui_testkit::turns::run_turn(&mut client, &thread, "second prompt").await;
    assert_eq!(failed["params"]["turn"]["status"], "failed");
    let done = crate::support::wait_event(&mut rig.events, "the switch", |e| {
        matches!(e, ProxyEvent::SwitchDone { .. })
    })
    .await;
    let ProxyEvent::SwitchDone { to, .. } = done else {
        unreachable!()
    };
    assert_eq!(to.name, "carol", "bob shares alice's workspace limit");
    cs_tui_testkit::turns::run_turn(&mut client, &thread, "third prompt").await;
    let served = rig.mock.last_user_turn_request("third prompt");
    assert_eq!(served.account_header.as_deref(), Some("acct-carol"));
    rig.session.shutdown().await;
}

/// With only seats of the limited workspace, the session stays, says why, and refuses a
/// switch to the other seat by name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_only_seats_of_the_limited_workspace_the_session_stays_and_says_why() {
    let mut rig = rig(&[("alice", Some("team")), ("bob", Some("team"))]).await;
    let alice = key(&seat("alice"));
    let mut client = rig.tui_client().await;
    let thread = cs_tui_testkit::turns::start_thread(&mut client, rig.home.work_dir()).await;
    rig.mock.set_usage(
        &alice,
        Usage {
            limit_reached_type: Some("workspace_owner_usage_limit_reached".into()),
            ..Default::default()
        },
    );
    rig.mock.set_mode(&alice, AccountMode::UsageLimit);
    cs_tui_testkit::turns::run_turn(&mut client, &thread, "hits the limit").await;
    crate::support::wait_event(&mut rig.events, "why bob is not used", |e| {
        matches!(e, ProxyEvent::Notice { message, .. }
            if message.contains("workspace") && message.contains("not switching to bob"))
    })
    .await;
    crate::support::wait_event(&mut rig.events, "no account available", |e| {
        matches!(e, ProxyEvent::NoAccountAvailable { .. })
    })
    .await;

    let refused = rig
        .session
        .commands()
        .send(ProxyCommand::SwitchTo {
            account_id: rig.account_id("bob"),
        })
        .await
        .unwrap()
        .unwrap_err();
    assert!(refused.contains("same workspace as alice"), "{refused}");
    assert!(
        history::read_recent(&rig.store.path().join(history::HISTORY_FILE), 5).is_empty(),
        "stayed on alice"
    );
    rig.session.shutdown().await;
}

/// The active account's plan stops sending its 5-hour window: live updates are sparse and
/// cannot say so, but the next full read of its usage drops the stale 5-hour numbers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_read_drops_the_active_accounts_stale_five_hour_window() {
    let mut rig = rig(&[("alice", None), ("bob", None)]).await;
    let mut client = rig.tui_client().await;
    let thread = cs_tui_testkit::turns::start_thread(&mut client, rig.home.work_dir()).await;
    cs_tui_testkit::turns::run_turn(&mut client, &thread, "first prompt").await;
    crate::support::wait_event(&mut rig.events, "alice's 5-hour window", |e| {
        matches!(e, ProxyEvent::RateLimitsUpdated { account, snapshot, .. }
            if account.name == "alice" && snapshot.five_hour().is_some())
    })
    .await;

    rig.mock.set_usage("acct-alice", Usage::weekly_only(30));
    rig.session
        .commands()
        .send(ProxyCommand::RefreshUsage)
        .await
        .unwrap()
        .unwrap();
    crate::support::wait_event(&mut rig.events, "alice without a 5-hour window", |e| {
        matches!(e, ProxyEvent::RateLimitsUpdated { account, snapshot, .. }
            if account.name == "alice"
                && snapshot.five_hour().is_none()
                && snapshot.weekly().is_some_and(|w| w.used_percent == 30.0))
    })
    .await;
    // Still alice: 30 % of the week is no reason to switch.
    cs_tui_testkit::turns::run_turn(&mut client, &thread, "second prompt").await;
    assert_eq!(
        rig.mock
            .last_user_turn_request("second prompt")
            .account_header
            .as_deref(),
        Some("acct-alice")
    );
    rig.session.shutdown().await;
}

/// Codex 0.169 reports only the last header family per response, so with a Spark family the
/// turns carry Spark's numbers, never the quota's. The session then reads the quota itself:
/// the `codex` family crossing its soft threshold still switches at the turn's end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_model_family_in_every_response_the_quota_is_read_and_still_switches() {
    let mut rig = rig(&[("alice", None), ("bob", None)]).await;
    rig.mock
        .set_families("acct-alice", vec![LimitFamily::spark(20)]);
    let mut client = rig.tui_client().await;
    let thread = cs_tui_testkit::turns::start_thread(&mut client, rig.home.work_dir()).await;
    cs_tui_testkit::turns::run_turn(&mut client, &thread, "first prompt").await;

    rig.mock.set_usage(
        "acct-alice",
        Usage {
            primary: Some(UsageWindow::five_hour(96)),
            ..Default::default()
        },
    );
    cs_tui_testkit::turns::run_turn(&mut client, &thread, "second prompt").await;
    let done = crate::support::wait_event(&mut rig.events, "the switch to bob", |e| {
        matches!(e, ProxyEvent::SwitchDone { .. })
    })
    .await;
    let ProxyEvent::SwitchDone { to, reason, .. } = done else {
        unreachable!()
    };
    assert_eq!(to.name, "bob");
    assert!(
        matches!(&reason, cs_tui::proxy::events::SwitchReason::SoftThreshold { window, .. }
            if window == "5h"),
        "{reason:?}"
    );
    rig.session.shutdown().await;
}
