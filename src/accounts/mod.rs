//! Accounts: the store, tokens, and the usage of every account.
//!
//! - [`store`]: `accounts.json` under a cross-process lock, atomic writes, a backup;
//! - [`claims`]: what the JWTs say (expiry, e-mail, plan, account);
//! - [`codex_auth`]: Codex's `auth.json`: import, first-run import, writing refreshed tokens back;
//! - [`tokens`]: refresh with rotation, retries, and "needs login";
//! - [`usage`]: `/wham/usage` of any account, as [`crate::quota`] snapshots;
//! - [`reset_credits`]: the rate-limit reset credits of any account; [`reset`]: what redeeming
//!   one did;
//! - [`login`]: `codex login` in a temporary `CODEX_HOME`.
//!
//! The commands that use them (`cs-tui accounts …`, `cs-tui status`) are in `crate::commands`.

pub mod claims;
pub mod codex_auth;
pub mod login;
pub mod reset;
pub mod reset_credits;
pub mod store;
pub mod tokens;
pub mod usage;
pub mod user_agent;

pub use codex_auth::{
    CodexAuth, ImportOutcome, Imported, import_auth, import_auth_file, import_codex_auth_if_empty,
};
pub use store::{Account, AccountAuth, AccountStatus, AccountsFile, Store, StoreError};
pub use tokens::{
    Backend, NeedsLogin, RefreshPolicy, SETTLE_LIMIT, ensure_fresh, ensure_fresh_with, needs_login,
    refresh_url, settle_refreshes, stop_retrying_refreshes, unsaved_token_accounts,
    wait_for_refreshes,
};
pub use usage::{UsageReport, chatgpt_base_url, fetch_usage, fetch_usage_with};
