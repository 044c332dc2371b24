//! Token refresh requests from the real `codex app-server` (PROTOCOL.md §2), answered by the
//! proxy, when several stored accounts are seats of one workspace.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{run_turn, start_thread};
use cs_tui::accounts::{AccountAuth, Backend, Store};
use cs_tui::proxy::policy::PolicyConfig;
use cs_tui::proxy::session::{ProxyListener, Session, SessionOptions};
use cs_tui::proxy::store_directory::StoreDirectory;
use cs_tui_testkit::mock_backend::AccountMode;
use cs_tui_testkit::{CodexHome, MockBackend, WsClient, codex_bin};
use serde_json::json;

fn refresh_token(store: &Store, name: &str) -> String {
    match &store.load().unwrap().resolve(name).unwrap().auth {
        AccountAuth::ChatGpt { refresh_token, .. } => refresh_token.expose().to_owned(),
        AccountAuth::ApiKey { .. } => panic!("not a ChatGPT account"),
    }
}

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
    let (ben, ben_rt) = mock.add_seat("ben", &ann);
    assert_eq!(ann.chatgpt_account_id, ben.chatgpt_account_id);
    for (name, fake, rt) in [("ann", &ann, &ann_rt), ("ben", &ben, &ben_rt)] {
        let file = store_dir.path().join(format!("{name}.auth.json"));
        std::fs::write(&file, fake.auth_json(3600, rt).to_string()).unwrap();
        cs_tui::accounts::import_auth_file(&store, &file, Some(name)).unwrap();
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

    let dir = StoreDirectory::new(
        store_dir.path(),
        Backend {
            codex_home: Some(home.path().to_owned()),
            refresh_url: mock.refresh_url(),
            chatgpt_base_url: mock.chatgpt_base_url(),
        },
    )
    .unwrap();
    let listener = ProxyListener::bind("127.0.0.1:0".parse::<SocketAddr>().unwrap())
        .await
        .unwrap();
    let options = SessionOptions {
        codex_bin: codex_bin().into_os_string(),
        codex_home: home.path().to_owned(),
        store_dir: store_dir.path().to_owned(),
        policy: PolicyConfig::default(),
        usage_poll: Duration::from_secs(300),
        listen: "127.0.0.1:0".parse().unwrap(),
        token_file: None,
        hidden_rerun: false,
    };
    let session = Session::start(listener, options, dir).await.unwrap();
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
