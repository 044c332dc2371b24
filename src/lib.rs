//! cs-tui: a terminal dashboard that hosts the real Codex TUI in a PTY pane behind a switching
//! websocket proxy, and shows live quota for every ChatGPT account.
//!
//! Where things live:
//! - [`pty`]: the child process, key encoding, terminal-query replies, the screen model;
//! - [`proxy`]: app-server lifecycle, websocket relay, protocol types, switch policy;
//! - [`accounts`]: the account store, tokens, usage of every account;
//! - [`app`]: state, events, key routing, the loop; [`ui`]: pure render functions.

pub mod account_id;
pub mod accounts;
pub mod app;
pub mod cli;
pub mod codex_bin;
pub mod config;
pub mod doctor;
pub mod errors;
pub mod logging;
pub mod paths;
#[cfg(test)]
mod properties;
pub mod proxy;
pub mod pty;
pub mod quota;
pub mod secret;
pub mod ui;
