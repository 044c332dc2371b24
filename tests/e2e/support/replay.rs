//! The dashboard on the development replay path: the real `cs-tui` in tmux with the real
//! Codex in its pane (plain, logged in to the mock as alice), no proxy (`CS_TUI_NO_PROXY`),
//! and proxy events fed in through `CS_TUI_DEV_EVENTS` while it runs.

use std::ffi::OsStr;
use std::io::Write as _;
use std::path::PathBuf;

use cs_tui::account_id::AccountId;
use cs_tui::proxy::events::{AccountRef, ProxyEvent};
use cs_tui_testkit::{CodexHome, MockBackend, Tmux, codex_bin};

/// The account `name` as the replayed events name it (id `id-NAME`).
pub(crate) fn account(name: &str) -> AccountRef {
    AccountRef {
        id: AccountId::new(format!("id-{name}")),
        name: name.to_owned(),
    }
}

pub(crate) struct Replay {
    /// Serves Codex's model requests while the replay lives.
    _mock: MockBackend,
    pub home: CodexHome,
    pub store: tempfile::TempDir,
    /// The events file cs-tui follows.
    events: PathBuf,
}

impl Replay {
    /// A mock with alice, a Codex home logged in as her, a store, and no events yet.
    pub(crate) async fn new() -> Self {
        let mock = MockBackend::start().await;
        let (alice, refresh) = mock.add_account("alice");
        let home = CodexHome::offline(&mock.url());
        home.write_auth_json(&alice.auth_json(3600, &refresh));
        let store = tempfile::tempdir().unwrap();
        let events = store.path().join("events.jsonl");
        Self {
            _mock: mock,
            home,
            store,
            events,
        }
    }

    /// Appends `events` to the file, one JSON line each.
    pub(crate) fn emit(&self, events: &[ProxyEvent]) {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.events)
            .unwrap();
        for event in events {
            writeln!(file, "{}", serde_json::to_string(event).unwrap()).unwrap();
        }
    }

    /// Starts cs-tui in a `width`×`height` tmux window, with `env` added to the replay's.
    pub(crate) fn start(&self, width: u16, height: u16, env: &[(&str, &OsStr)]) -> Tmux {
        let codex = codex_bin();
        let mut all: Vec<(&str, &OsStr)> = vec![
            ("CS_TUI_NO_PROXY", OsStr::new("1")),
            ("CS_TUI_DEV_EVENTS", self.events.as_os_str()),
            ("CS_TUI_HOME", self.store.path().as_os_str()),
            ("CS_TUI_CODEX_BIN", codex.as_os_str()),
            ("CODEX_HOME", self.home.path().as_os_str()),
        ];
        all.extend_from_slice(env);
        Tmux::start(
            width,
            height,
            self.home.work_dir(),
            &all,
            OsStr::new(env!("CARGO_BIN_EXE_cs-tui")),
            &[],
        )
    }
}
