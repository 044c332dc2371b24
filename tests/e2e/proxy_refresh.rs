//! Token refresh requests from the real `codex app-server` (docs/protocol.md §2), answered by the
//! proxy, when several stored accounts are seats of one workspace.

use crate::support::product::cs_tui_command;
use std::process::Stdio;
use std::time::Duration;

use crate::support::session::{import, refresh_token, start_session};
use crate::support::wait_event;
use cs_tui::accounts::Store;
use cs_tui::proxy::events::{ProxyCommand, ProxyEvent};
use cs_tui_testkit::WAIT;
use cs_tui_testkit::mock_backend::{AccountMode, RefreshFault};
use cs_tui_testkit::turns::{run_turn, start_thread};
use cs_tui_testkit::{CodexHome, MockBackend, WsClient};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::json;

/// Two seats of one workspace share its `chatgpt_account_id`; the app-server's refresh request
/// names only that. It must be answered with the active seat's tokens, refreshed with the
/// active seat's refresh token, and the other seat's login must be left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_request_is_answered_for_the_active_seat_of_a_workspace() {
    let mock = MockBackend::start().await;
    let home = CodexHome::offline(&mock.url());
    let store_dir = tempfile::tempdir().unwrap();
    let store = Store::open(store_dir.path());
    let (ann, ann_rt) = mock.add_account("team");
    let (ben, ben_rt) = mock.add_seat_sharing("ben", &ann);
    assert_eq!(ann.chatgpt_account_id, ben.chatgpt_account_id);
    for (name, fake, rt) in [("ann", &ann, &ann_rt), ("ben", &ben, &ben_rt)] {
        import(store_dir.path(), name, &fake.auth_json(3600, rt));
    }
    // Two accounts, ann stored first; the session starts on ben.
    let ben_id = store.load().unwrap().resolve("ben").unwrap().id.clone();
    store
        .update(|file| {
            assert_eq!(file.accounts.len(), 2, "seats are separate accounts");
            file.active = Some(ben_id.clone());
            Ok(())
        })
        .unwrap();

    let session = start_session(&mock, &home, store_dir.path()).await;
    assert_eq!(session.starting_account().name, "ben");
    let mut client = WsClient::connect(session.url(), session.token().expose()).await;
    client.initialize(json!("initialize")).await;
    let thread = start_thread(&mut client, home.work_dir()).await;

    mock.set_mode(&ann.chatgpt_account_id, AccountMode::UnauthorizedOnce);
    let done = run_turn(&mut client, &thread, "after a 401").await;
    assert_eq!(done["params"]["turn"]["status"], "completed", "{done}");

    let requests = mock.requests();
    let refreshes: Vec<_> = requests
        .iter()
        .filter(|r| r.path == "/oauth/token")
        .map(|r| (r.refresh_token.clone().unwrap(), r.status))
        .collect();
    assert_eq!(
        refreshes,
        vec![(ben_rt.clone(), 200)],
        "refreshed with the active seat's token (ann's is {ann_rt})"
    );
    assert_ne!(
        refresh_token(&store, "ben"),
        ben_rt,
        "ben's rotated token is kept"
    );
    assert_eq!(
        refresh_token(&store, "ann"),
        ann_rt,
        "ann's login is untouched"
    );
    let retried = mock.last_user_turn_request("after a 401");
    assert_eq!(retried.status, 200);
    session.shutdown().await;
}

/// `cs-tui serve` stopped while a usage poll's refresh is under way (the server has rotated the
/// token and not answered yet) waits for it, so the rotated token is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_stopped_during_a_refresh_keeps_the_rotated_token() {
    let mock = MockBackend::start().await;
    let home = CodexHome::offline(&mock.url());
    let store_dir = tempfile::tempdir().unwrap();
    let store = Store::open(store_dir.path());
    // alice is active; bob's access token has expired, so the first usage poll refreshes it.
    for (label, ttl) in [("alice", 3600), ("bob", -60)] {
        let (fake, rt) = mock.add_account(label);
        let auth = fake.auth_json(ttl, &rt);
        crate::support::product::import(store_dir.path(), &home, &mock, label, &auth);
    }
    let bob_rt = refresh_token(&store, "bob");
    mock.push_refresh_fault(RefreshFault::RotateThenDelay(Duration::from_secs(3)));

    let mut serve = cs_tui_command(store_dir.path(), &home, &mock)
        .arg("serve")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let refresh = mock
        .wait_for_request(WAIT, "bob's refresh", |r| r.path == "/oauth/token")
        .await;
    assert_eq!(refresh.refresh_token.as_deref(), Some(bob_rt.as_str()));
    // The server has rotated bob's token and answers in 3 s; stop serve now.
    kill(Pid::from_raw(serve.id() as i32), Signal::SIGTERM).unwrap();
    let exit = tokio::task::spawn_blocking(move || {
        let status = serve.wait().unwrap();
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut serve.stderr.take().unwrap(), &mut stderr).unwrap();
        (status, stderr)
    });
    let (status, stderr) = tokio::time::timeout(WAIT, exit)
        .await
        .expect("serve exits")
        .unwrap();
    assert!(status.success(), "{status:?} {stderr}");

    let stored = refresh_token(&store, "bob");
    assert_ne!(
        stored, bob_rt,
        "the rotated refresh token was lost at shutdown"
    );
    let out = cs_tui_command(store_dir.path(), &home, &mock)
        .args(["accounts", "refresh", "bob"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

/// A session whose store refuses the tokens a usage poll's refresh brought keeps them in
/// memory, says so in the panel, and stores them once the store takes writes again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_whose_store_refuses_new_tokens_says_so_and_saves_them_later() {
    let mock = MockBackend::start().await;
    let home = CodexHome::offline(&mock.url());
    let store_dir = tempfile::tempdir().unwrap();
    let store = Store::open(store_dir.path());
    for (label, ttl) in [("alice", 3600), ("bob", -60)] {
        let (fake, rt) = mock.add_account(label);
        import(store_dir.path(), label, &fake.auth_json(ttl, &rt));
    }
    let bob_rt = refresh_token(&store, "bob");
    // Every store write keeps the previous version as accounts.json.bak: a directory there
    // makes every write fail, as a full disk would.
    let blocker = store_dir.path().join("accounts.json.bak");
    let _ = std::fs::remove_file(&blocker);
    std::fs::create_dir_all(blocker.join("in-the-way")).unwrap();

    let session = start_session(&mock, &home, store_dir.path()).await;
    let mut events = session.subscribe();
    let notice = wait_event(
        &mut events,
        "a notice about bob's tokens",
        |e| matches!(e, ProxyEvent::Notice { message, .. } if message.contains("bob")),
    )
    .await;
    let ProxyEvent::Notice { message, .. } = notice else {
        unreachable!()
    };
    assert!(
        message.contains("refused the refreshed tokens"),
        "{message}"
    );
    assert_eq!(
        refresh_token(&store, "bob"),
        bob_rt,
        "the store refused them"
    );

    // The store takes writes again: the next use of bob stores the tokens memory kept.
    std::fs::remove_dir_all(&blocker).unwrap();
    let answer = session.commands().send(ProxyCommand::RefreshUsage);
    tokio::time::timeout(cs_tui_testkit::WAIT, answer)
        .await
        .expect("the session answers")
        .unwrap()
        .expect("a usage refresh is accepted");
    let deadline = tokio::time::Instant::now() + cs_tui_testkit::WAIT;
    while refresh_token(&store, "bob") == bob_rt {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the kept tokens never reached the store"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Refreshed once: the token kept in memory was never spent again.
    let refreshes: Vec<_> = mock
        .requests()
        .into_iter()
        .filter(|r| r.path == "/oauth/token")
        .map(|r| (r.refresh_token.unwrap(), r.status))
        .collect();
    assert_eq!(refreshes, vec![(bob_rt, 200)]);
    session.shutdown().await;
}
