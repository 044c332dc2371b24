//! End-to-end tests of the switching proxy: the real `codex app-server`, the proxy, the mock
//! backend, and a scripted client that behaves like the Codex TUI.

use std::time::Duration;

use crate::support::session::{Rig, import, refresh_token};
use crate::support::wait_event;
use cs_tui::proxy::events::{ProxyCommand, ProxyEvent, SwitchReason};
use cs_tui::proxy::history;
use cs_tui_testkit::WAIT;
use cs_tui_testkit::mock_backend::AccountMode;
use cs_tui_testkit::turns::{agent_texts, run_turn, start_thread};
use cs_tui_testkit::ws_client::connect_status;
use cs_tui_testkit::{MockBackend, Usage, UsageWindow, WsClient};
use serde_json::json;

async fn rig(labels: &[&str]) -> Rig {
    rig_with(labels, |_| {}).await
}

/// A session over personal accounts `labels`, the mock set up by `setup` before it starts
/// (see [`Rig::start`]).
async fn rig_with(labels: &[&str], setup: impl FnOnce(&MockBackend)) -> Rig {
    let accounts: Vec<(&str, Option<&str>)> = labels.iter().map(|label| (*label, None)).collect();
    Rig::start(&accounts, setup).await
}

/// Waits for the switch to bob (`what`), lets alice answer normally again, and checks that
/// the next turn is served by bob.
async fn next_turn_on_bob(rig: &mut Rig, client: &mut WsClient, thread: &str, what: &str) {
    wait_event(
        &mut rig.events,
        what,
        |e| matches!(e, ProxyEvent::SwitchDone { to, .. } if to.name == "bob"),
    )
    .await;
    rig.mock.set_mode("acct-alice", AccountMode::Normal);
    run_turn(client, thread, "after the switch").await;
    assert_eq!(
        served_by(&rig.mock, "after the switch").0.as_deref(),
        Some("acct-bob")
    );
}

fn served_by(mock: &MockBackend, prompt: &str) -> (Option<String>, Option<String>) {
    let request = mock.last_user_turn_request(prompt);
    (request.account_header, request.token_account)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_usage_limit_switches_to_the_next_account_for_the_next_turn() {
    let mut rig = rig(&["alice", "bob"]).await;
    let mut client = rig.tui_client().await;
    let thread = start_thread(&mut client, rig.home.work_dir()).await;

    let done = run_turn(&mut client, &thread, "first prompt").await;
    assert_eq!(done["params"]["turn"]["status"], "completed");
    assert_eq!(
        served_by(&rig.mock, "first prompt"),
        (Some("acct-alice".into()), Some("acct-alice".into()))
    );

    rig.mock.set_mode("acct-alice", AccountMode::UsageLimit);
    let failed = run_turn(&mut client, &thread, "second prompt").await;
    assert_eq!(failed["params"]["turn"]["status"], "failed");
    let error = client
        .received_with_method("error")
        .into_iter()
        .find(|e| e["params"]["threadId"] == thread.as_str())
        .cloned()
        .expect("the usage-limit error reaches the client");
    assert_eq!(
        error["params"]["error"]["codexErrorInfo"],
        "usageLimitExceeded"
    );

    let done = wait_event(&mut rig.events, "switch to bob", |e| {
        matches!(e, ProxyEvent::SwitchDone { .. })
    })
    .await;
    let ProxyEvent::SwitchDone {
        from, to, reason, ..
    } = done
    else {
        unreachable!()
    };
    assert_eq!(from.unwrap().name, "alice");
    assert_eq!(to.name, "bob");
    assert_eq!(reason, SwitchReason::UsageLimit);

    let done = run_turn(&mut client, &thread, "third prompt").await;
    assert_eq!(done["params"]["turn"]["status"], "completed");
    assert_eq!(
        served_by(&rig.mock, "third prompt"),
        (Some("acct-bob".into()), Some("acct-bob".into()))
    );
    assert!(
        agent_texts(&client)
            .iter()
            .any(|t| t.contains("Served by bob"))
    );

    let records = history::read_recent(&rig.store.path().join(history::HISTORY_FILE), 10);
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0].from.as_ref().unwrap().name, "alice");
    assert_eq!(records[0].to.name, "bob");
    assert_eq!(records[0].reason, SwitchReason::UsageLimit);
    // Responses to the proxy's own requests never reach the client.
    assert!(
        !client
            .received
            .iter()
            .any(|m| m["id"].as_str().is_some_and(|id| id.starts_with("cs-tui/"))),
        "a proxy-owned response leaked to the client"
    );

    // Asked by hand to go back to alice, still at her limit (her /wham/usage says so): the
    // proxy refuses with the reason and stays on bob.
    rig.session
        .commands()
        .send(ProxyCommand::SwitchTo {
            account_id: rig.account_id("alice"),
        })
        .await
        .unwrap()
        .unwrap();
    wait_event(&mut rig.events, "the refusal", |e| {
        matches!(e, ProxyEvent::Notice { message, .. }
            if message.starts_with("cannot switch to alice: it has hit its usage limit until"))
    })
    .await;
    run_turn(&mut client, &thread, "fourth prompt").await;
    assert_eq!(
        served_by(&rig.mock, "fourth prompt").0.as_deref(),
        Some("acct-bob")
    );
    assert_eq!(
        history::read_recent(&rig.store.path().join(history::HISTORY_FILE), 10).len(),
        1,
        "a refused switch is not a switch"
    );
    rig.session.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switch_requested_during_a_slow_turn_waits_for_the_turn_to_end() {
    let mut rig = rig(&["alice", "bob"]).await;
    let mut client = rig.tui_client().await;
    let thread = start_thread(&mut client, rig.home.work_dir()).await;
    rig.mock
        .set_mode("acct-alice", AccountMode::Slow(Duration::from_millis(1500)));

    client
        .request(
            "turn/start",
            json!({"threadId": thread, "input": [{"type": "text", "text": "slow prompt"}]}),
        )
        .await
        .unwrap();
    client.wait_notification("turn/started", WAIT).await;
    let answer = rig
        .session
        .commands()
        .send(ProxyCommand::SwitchTo {
            account_id: rig.account_id("bob"),
        })
        .await
        .unwrap();
    assert!(
        answer
            .as_ref()
            .unwrap()
            .contains("when the running turn ends"),
        "{answer:?}"
    );
    wait_event(&mut rig.events, "deferral", |e| {
        matches!(e, ProxyEvent::SwitchDeferred { .. })
    })
    .await;

    let completed = client.wait_notification("turn/completed", WAIT).await;
    assert_eq!(
        completed["params"]["turn"]["status"], "completed",
        "the turn was not killed"
    );
    assert!(
        agent_texts(&client)
            .iter()
            .any(|t| t.contains("Served by alice"))
    );
    next_turn_on_bob(&mut rig, &mut client, &thread, "switch after the turn").await;
    rig.session.shutdown().await;
}

/// A switch asked for just after the TUI's `turn/start`, before the app-server's
/// `turn/started`: the turn guard has already told the core, so the login waits for the turn
/// (a login would kill it). Should the command overtake the request, the switch simply comes
/// first and the turn runs on the new account; either way no turn is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switch_asked_for_between_turn_start_and_turn_started_never_kills_the_turn() {
    let mut rig = rig(&["alice", "bob"]).await;
    let mut client = rig.tui_client().await;
    let thread = start_thread(&mut client, rig.home.work_dir()).await;
    rig.mock
        .set_mode("acct-alice", AccountMode::Slow(Duration::from_millis(800)));

    client
        .send_json(&json!({
            "id": "turn-1",
            "method": "turn/start",
            "params": {"threadId": thread, "input": [{"type": "text", "text": "racing prompt"}]},
        }))
        .await;
    // Long enough for the relay to pass the request on, well short of the app-server's
    // `turn/started` (tens of ms).
    tokio::time::sleep(Duration::from_millis(3)).await;
    let answer = rig
        .session
        .commands()
        .send(ProxyCommand::SwitchTo {
            account_id: rig.account_id("bob"),
        })
        .await
        .unwrap();
    assert!(answer.is_ok(), "{answer:?}");

    let completed = client.wait_notification("turn/completed", WAIT).await;
    assert_eq!(
        completed["params"]["turn"]["status"], "completed",
        "a switch killed the turn: {completed}"
    );
    let served = served_by(&rig.mock, "racing prompt").0;
    assert!(
        served.as_deref() == Some("acct-alice") || served.as_deref() == Some("acct-bob"),
        "{served:?}"
    );
    next_turn_on_bob(&mut rig, &mut client, &thread, "the switch").await;
    rig.session.shutdown().await;
}

/// The other side of the same race: the switch's login is already under way when the TUI asks
/// for a turn. The turn guard holds the `turn/start` until the login is done, so the turn
/// runs on the new account instead of being killed by the login halfway through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_asked_for_during_a_switch_waits_for_the_login_and_runs_on_the_new_account() {
    let mut rig = rig(&["alice", "bob"]).await;
    let mut client = rig.tui_client().await;
    let thread = start_thread(&mut client, rig.home.work_dir()).await;
    rig.mock
        .set_login_delay("acct-bob", Duration::from_millis(700));
    rig.mock
        .set_mode("acct-alice", AccountMode::Slow(Duration::from_millis(2000)));

    let answer = rig
        .session
        .commands()
        .send(ProxyCommand::SwitchTo {
            account_id: rig.account_id("bob"),
        })
        .await
        .unwrap();
    assert_eq!(answer.as_deref(), Ok("switching to bob"));
    wait_event(&mut rig.events, "the switch starting", |e| {
        matches!(e, ProxyEvent::SwitchStarted { .. })
    })
    .await;

    let done = run_turn(&mut client, &thread, "asked during the login").await;
    assert_eq!(
        done["params"]["turn"]["status"], "completed",
        "the login killed the turn: {done}"
    );
    assert_eq!(
        served_by(&rig.mock, "asked during the login").0.as_deref(),
        Some("acct-bob")
    );
    wait_event(
        &mut rig.events,
        "the switch done",
        |e| matches!(e, ProxyEvent::SwitchDone { to, .. } if to.name == "bob"),
    )
    .await;
    rig.session.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_401_is_answered_with_the_same_accounts_rotated_tokens() {
    let rig = rig(&["alice", "bob"]).await;
    let mut client = rig.tui_client().await;
    let thread = start_thread(&mut client, rig.home.work_dir()).await;
    let old_refresh = refresh_token(&rig.stored(), "alice");
    rig.mock
        .set_mode("acct-alice", AccountMode::UnauthorizedOnce);

    let done = run_turn(&mut client, &thread, "needs a refresh").await;
    assert_eq!(done["params"]["turn"]["status"], "completed", "{done}");
    assert!(
        client
            .received_with_method("account/chatgptAuthTokens/refresh")
            .is_empty(),
        "the refresh request must not reach the client"
    );
    let requests = rig.mock.requests();
    let refreshes: Vec<_> = requests
        .iter()
        .filter(|r| r.path == "/oauth/token")
        .collect();
    assert_eq!(refreshes.len(), 1, "answered exactly once");
    assert_eq!(
        refreshes[0].refresh_token.as_deref(),
        Some(old_refresh.as_str())
    );
    let new_refresh = refresh_token(&rig.stored(), "alice");
    assert_ne!(
        new_refresh, old_refresh,
        "the rotated refresh token is kept"
    );
    assert!(
        new_refresh.starts_with("rt-acct-alice-"),
        "the store holds the token the mock minted"
    );
    let served = rig
        .mock
        .model_requests()
        .into_iter()
        .filter(|r| {
            r.user_input_texts()
                .iter()
                .any(|t| t.contains("needs a refresh"))
        })
        .collect::<Vec<_>>();
    assert_eq!(served.last().unwrap().status, 200);
    assert_eq!(
        served.last().unwrap().token_account.as_deref(),
        Some("acct-alice")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_account_exhausted_the_proxy_stays_and_names_the_earliest_reset() {
    let soon = cs_tui_testkit::jwt::unix_now() + 1800;
    let later = cs_tui_testkit::jwt::unix_now() + 7200;
    let mut rig = rig_with(&["alice", "bob", "carol"], |mock| {
        for (id, reset) in [("acct-bob", later), ("acct-carol", soon)] {
            mock.set_usage(
                id,
                Usage {
                    primary: Some(UsageWindow {
                        used_percent: 100,
                        window_minutes: 300,
                        resets_at: reset,
                    }),
                    ..Default::default()
                },
            );
        }
    })
    .await;
    let mut client = rig.tui_client().await;
    let thread = start_thread(&mut client, rig.home.work_dir()).await;
    rig.mock.set_mode("acct-alice", AccountMode::UsageLimit);
    run_turn(&mut client, &thread, "hits the limit").await;
    let event = wait_event(&mut rig.events, "no account available", |e| {
        matches!(e, ProxyEvent::NoAccountAvailable { .. })
    })
    .await;
    let ProxyEvent::NoAccountAvailable { earliest_reset, .. } = event else {
        unreachable!()
    };
    assert_eq!(earliest_reset.unwrap().timestamp(), soon);
    assert_eq!(
        rig.stored().load().unwrap().active_account().unwrap().name,
        "alice",
        "stayed on alice"
    );
    assert!(history::read_recent(&rig.store.path().join(history::HISTORY_FILE), 5).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_bearer_is_refused_with_401() {
    let rig = rig(&["alice"]).await;
    assert_eq!(
        connect_status(rig.session.url(), Some("wrong")).await,
        Err(401)
    );
    assert_eq!(connect_status(rig.session.url(), None).await, Err(401));
    assert_eq!(
        connect_status(rig.session.url(), Some(rig.session.token().expose())).await,
        Ok(())
    );
}

fn kill_app_server(rig: &Rig) -> i32 {
    let pgid = rig.session.app_server_pgid().expect("an app-server runs");
    nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(pgid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    pgid
}

/// A killed app-server is reported and replaced: the new one listens on the same path, the
/// active account is logged in again before a client may attach, and the thread goes on
/// (the Codex TUI reconnects and resumes it by itself).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_app_server_is_restarted_and_the_session_goes_on() {
    let mut rig = rig(&["alice", "bob"]).await;
    let runtime = rig.session.runtime_dir().to_owned();
    // The app-server binds its socket under /tmp/codex-daemon-<uid>/ and links our path to it.
    let link = runtime.join("app-server").join("app-server.sock");
    let socket = std::fs::read_link(&link).expect("the app-server's socket link");
    assert!(socket.exists(), "{}", socket.display());
    let mut client = rig.tui_client().await;
    let thread = start_thread(&mut client, rig.home.work_dir()).await;
    run_turn(&mut client, &thread, "before the crash").await;

    let killed = kill_app_server(&rig);
    let event = wait_event(&mut rig.events, "app-server exit", |e| {
        matches!(e, ProxyEvent::AppServerExited { .. })
    })
    .await;
    let ProxyEvent::AppServerExited {
        status, restarting, ..
    } = event
    else {
        unreachable!()
    };
    assert!(status.contains("signal"), "{status}");
    assert!(restarting);
    // A client that comes back at once waits at the gate until the login is done.
    let url = rig.session.url().to_owned();
    let token = rig.session.token().expose().to_owned();
    let reconnect = tokio::spawn(async move {
        let mut client = WsClient::connect(&url, &token).await;
        client.initialize(json!("initialize")).await;
        client
    });
    let event = wait_event(&mut rig.events, "the restart", |e| {
        matches!(e, ProxyEvent::AppServerRestarted { .. })
    })
    .await;
    let ProxyEvent::AppServerRestarted { account, .. } = event else {
        unreachable!()
    };
    assert_eq!(account.name, "alice");
    assert_ne!(rig.session.app_server_pgid(), Some(killed));
    let mut client = tokio::time::timeout(WAIT, reconnect)
        .await
        .expect("the reconnecting client got through")
        .unwrap();
    let read = client.request("account/read", json!({})).await.unwrap();
    assert_eq!(
        read["account"]["email"], "alice@example.com",
        "logged in before the client attached: {read}"
    );
    client
        .request("thread/resume", json!({"threadId": thread}))
        .await
        .expect("the thread resumes on the new app-server");
    let done = run_turn(&mut client, &thread, "after the crash").await;
    assert_eq!(done["params"]["turn"]["status"], "completed");
    assert_eq!(
        served_by(&rig.mock, "after the crash").0.as_deref(),
        Some("acct-alice")
    );

    rig.session.shutdown().await;
    // SIGKILL gave the app-server no chance to remove its socket; the session did.
    assert!(!socket.exists(), "{} is left", socket.display());
    assert!(!runtime.exists(), "the runtime directory is removed");
}

/// An app-server that keeps dying is not restarted for ever: after three restarts in ten
/// minutes the next exit ends the session, and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_server_that_keeps_dying_ends_the_session() {
    let mut rig = rig(&["alice"]).await;
    for _ in 0..3 {
        kill_app_server(&rig);
        wait_event(&mut rig.events, "a restart", |e| {
            matches!(e, ProxyEvent::AppServerRestarted { .. })
        })
        .await;
    }
    kill_app_server(&rig);
    wait_event(&mut rig.events, "the end", |e| {
        matches!(
            e,
            ProxyEvent::AppServerExited {
                restarting: false,
                ..
            }
        )
    })
    .await;
    wait_event(&mut rig.events, "the proxy down", |e| {
        matches!(
            e,
            ProxyEvent::Connection {
                state: cs_tui::proxy::events::ConnectionState::Down,
                ..
            }
        )
    })
    .await;
    assert_eq!(rig.session.app_server_pgid(), None);
    let runtime = rig.session.runtime_dir().to_owned();
    rig.session.shutdown().await;
    assert!(!runtime.exists());
}

/// An account added to the store while the session runs (`cs-tui accounts import` tells the
/// session over its socket) takes over at the next limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_added_during_the_session_takes_over_at_the_next_limit() {
    let mut rig = rig(&["alice"]).await;
    let mut client = rig.tui_client().await;
    let thread = start_thread(&mut client, rig.home.work_dir()).await;
    run_turn(&mut client, &thread, "alone").await;

    let (bob, refresh) = rig.mock.add_account("bob");
    import(rig.store.path(), "bob", &bob.auth_json(3600, &refresh));
    cs_tui::ipc::announce(rig.store.path(), &ProxyCommand::AccountsChanged).await;
    // Its usage is read at once.
    wait_event(
        &mut rig.events,
        "bob's usage",
        |e| matches!(e, ProxyEvent::RateLimitsUpdated { account, .. } if account.name == "bob"),
    )
    .await;

    rig.mock.set_mode("acct-alice", AccountMode::UsageLimit);
    run_turn(&mut client, &thread, "at the limit").await;
    wait_event(
        &mut rig.events,
        "the switch to bob",
        |e| matches!(e, ProxyEvent::SwitchDone { to, .. } if to.name == "bob"),
    )
    .await;
    run_turn(&mut client, &thread, "on bob").await;
    assert_eq!(
        served_by(&rig.mock, "on bob").0.as_deref(),
        Some("acct-bob")
    );
    rig.session.shutdown().await;
}
