//! cs-tui: a terminal dashboard that hosts the real Codex TUI in a PTY pane behind a switching
//! websocket proxy, and shows live quota for every ChatGPT account.
//!
//! Where things live:
//! - [`pty`]: the child process, key encoding, terminal-query replies, the screen model;
//! - [`proxy`]: app-server lifecycle, websocket relay, protocol types, switch policy;
//! - [`process`]: PATH lookup, running `codex`, children that die with cs-tui, the reaper;
//! - [`accounts`]: the account store, tokens, usage of every account;
//! - [`app`]: events, key routing, the loop; [`state`]: what the screen shows (written by
//!   `app`); [`ui`]: pure render functions that read it; [`pace`]: burn-rate arithmetic;
//! - [`cli`]: the command line's types; [`commands`]: one handler per command, and the one
//!   [`commands::Env`] they share; [`ipc`]: the client of a running session's socket.

pub mod account_id;
pub mod accounts;
pub mod app;
#[cfg(test)]
mod architecture_tests;
pub(crate) mod cli;
pub mod commands;
pub mod config;
pub(crate) mod conn_cap;
pub(crate) mod demo;
pub(crate) mod doctor;
pub(crate) mod errors;
pub mod ipc;
pub(crate) mod logging;
pub(crate) mod notify;
pub(crate) mod pace;
pub(crate) mod paths;
pub mod process;
#[cfg(test)]
mod properties;
pub mod proxy;
pub mod pty;
pub mod quota;
pub mod secret;
pub mod state;
pub mod ui;
