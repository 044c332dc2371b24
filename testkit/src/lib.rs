//! The offline test rig for cs-tui.
//!
//! Everything here exists so that tests can run the **real** `codex` binary with no network:
//! a mock of the ChatGPT backend that speaks the real wire format (PROTOCOL.md §4), fake JWTs
//! the app-server accepts (§5), an offline `CODEX_HOME` (§6), a fixture that runs
//! `codex app-server`, and a minimal JSON-RPC websocket client.

pub mod app_server;
pub mod codex_bin;
pub mod codex_home;
pub mod jwt;
pub mod mock_backend;
pub mod ws_client;

pub use app_server::AppServer;
pub use codex_bin::codex_bin;
pub use codex_home::CodexHome;
pub use jwt::FakeAccount;
pub use mock_backend::{
    AccountMode, MockAccount, MockBackend, RequestRecord, ResetCredit, Usage, UsageWindow,
};
pub use mock_backend::{LimitFamily, SpendControl, UsageExtras, seat_key};
pub use ws_client::WsClient;
