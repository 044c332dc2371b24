//! The offline test rig for cs-tui.
//!
//! Everything here exists so that tests can run the **real** `codex` binary with no network:
//! a mock of the ChatGPT backend that speaks the real wire format (docs/protocol.md §4), fake JWTs
//! the app-server accepts (§5), an offline `CODEX_HOME` (§6), a fixture that runs
//! `codex app-server`, and a minimal JSON-RPC websocket client; and the rigs the end-to-end
//! tests share: a private tmux server to drive a program as a person at a terminal would, raw
//! websocket peers, an echo upstream, and Codex turns over a websocket.

pub mod app_server;
pub mod codex_bin;
pub mod codex_home;
pub mod echo_upstream;
pub mod jwt;
pub mod mock_backend;
pub mod raw;
pub mod tmux;
pub mod turns;
pub mod ws_client;

use std::time::Duration;

/// How long any test waits for a condition before it fails: one limit for every wait.
///
/// A wait returns as soon as its condition holds, so the limit costs nothing when things work;
/// it only decides how long a broken test takes to say so. The slowest condition waited for is
/// a Codex turn through cs-tui in tmux (Node start-up, the app-server, the proxy, a reply) on a
/// 2-core machine shared with other builds: that took up to ~15 s under load, and the old
/// product-level limit of 40 s never fired on a healthy run. 60 s keeps that margin 4x with a
/// debug build competing with four others for the cores.
pub const WAIT: Duration = Duration::from_secs(60);

pub use app_server::AppServer;
pub use codex_bin::codex_bin;
pub use codex_home::CodexHome;
pub use jwt::FakeAccount;
pub use mock_backend::{
    AccountMode, MockAccount, MockBackend, RequestRecord, ResetCredit, Usage, UsageWindow,
};
pub use mock_backend::{LimitFamily, SpendControl, UsageExtras, seat_key};
pub use tmux::Tmux;
pub use ws_client::WsClient;
