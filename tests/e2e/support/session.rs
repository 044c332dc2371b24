//! `cs-tui serve`'s switching session in process: stored accounts, the real app-server (Codex
//! from `codex_bin()`) behind the proxy, the mock backend, and the session's events.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use cs_tui::account_id::AccountId;
use cs_tui::accounts::{AccountAuth, Backend, Store};
use cs_tui::proxy::events::ProxyEvent;
use cs_tui::proxy::policy::PolicyConfig;
use cs_tui::proxy::session::{ProxyListener, Session, SessionOptions};
use cs_tui::proxy::store_directory::StoreDirectory;
use cs_tui_testkit::{CodexHome, MockBackend, WsClient, codex_bin};
use serde_json::{Value, json};
use tokio::sync::broadcast;

/// Stores `auth` (an auth.json value) as account `label`, as `cs-tui accounts import` does.
pub(crate) fn import(store_dir: &Path, label: &str, auth: &Value) {
    let file = store_dir.join(format!("{label}.auth.json"));
    std::fs::write(&file, auth.to_string()).unwrap();
    cs_tui::accounts::import_auth_file(&Store::open(store_dir), &file, Some(label)).unwrap();
}

/// Starts the session over the accounts stored in `store_dir`.
pub(crate) async fn start_session(
    mock: &MockBackend,
    home: &CodexHome,
    store_dir: &Path,
) -> Session {
    let dir = StoreDirectory::new(
        store_dir,
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
        store_dir: store_dir.to_owned(),
        policy: PolicyConfig::default(),
        usage_poll: Duration::from_secs(300),
        listen: "127.0.0.1:0".parse().unwrap(),
        token_file: None,
        hidden_rerun: false,
        kind: cs_tui::proxy::pool::SessionKind::Serve,
        cwd: store_dir.to_owned(),
        placement: Default::default(),
        // These rigs run one session each, in parallel on separate stores.
        pool: true,
    };
    Session::start(listener, options, dir).await.unwrap()
}

/// The stored refresh token of account `name` (test-side: it is a secret).
pub(crate) fn refresh_token(store: &Store, name: &str) -> String {
    match &store.load().unwrap().resolve(name).unwrap().auth {
        AccountAuth::ChatGpt { refresh_token, .. } => refresh_token.expose().to_owned(),
        AccountAuth::ApiKey { .. } | AccountAuth::Unknown(_) => panic!("not a ChatGPT account"),
    }
}

/// A running session with its mock, Codex home, store and event stream.
pub(crate) struct Rig {
    pub mock: MockBackend,
    pub home: CodexHome,
    pub store: tempfile::TempDir,
    pub session: Session,
    pub events: broadcast::Receiver<ProxyEvent>,
}

impl Rig {
    /// A session over stored accounts `(name, workspace)`: a seat of that workspace, or a
    /// personal account. `setup` runs after the accounts exist and before the session starts:
    /// the session reads every account's usage at start, so a change made after it would race
    /// that first read.
    pub(crate) async fn start(
        accounts: &[(&str, Option<&str>)],
        setup: impl FnOnce(&MockBackend),
    ) -> Self {
        let mock = MockBackend::start().await;
        let home = CodexHome::offline(&mock.url());
        let store = tempfile::tempdir().unwrap();
        for (label, workspace) in accounts {
            let (fake, refresh) = match workspace {
                Some(workspace) => mock.add_seat(label, workspace),
                None => mock.add_account(label),
            };
            import(store.path(), label, &fake.auth_json(3600, &refresh));
        }
        setup(&mock);
        let session = start_session(&mock, &home, store.path()).await;
        let events = session.subscribe();
        Self {
            mock,
            home,
            store,
            session,
            events,
        }
    }

    /// The accounts store.
    pub(crate) fn stored(&self) -> Store {
        Store::open(self.store.path())
    }

    /// The id of stored account `name`.
    pub(crate) fn account_id(&self, name: &str) -> AccountId {
        self.stored()
            .load()
            .unwrap()
            .resolve(name)
            .unwrap()
            .id
            .clone()
    }

    /// A client as the Codex TUI connects: the session's URL and token, then `initialize`.
    pub(crate) async fn tui_client(&self) -> WsClient {
        let mut client = WsClient::connect(self.session.url(), self.session.token().expose()).await;
        client.initialize(json!("initialize")).await;
        client
    }
}
