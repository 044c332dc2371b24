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

pub(crate) mod claims;
pub(crate) mod codex_auth;
pub(crate) mod login;
pub(crate) mod reset;
pub(crate) mod reset_credits;
pub(crate) mod store;
pub(crate) mod tokens;
pub(crate) mod usage;
pub(crate) mod user_agent;

pub use codex_auth::import_auth_file;
pub(crate) use codex_auth::{ImportOutcome, Imported, import_auth, import_codex_auth_if_empty};
pub(crate) use store::{Account, AccountStatus, AccountsFile};
pub use store::{AccountAuth, Store, UnknownAuth};
pub use tokens::Backend;
pub(crate) use tokens::{
    RefreshPolicy, ensure_fresh_with, needs_login, settle_refreshes, stop_retrying_refreshes,
    unsaved_token_accounts,
};
pub(crate) use usage::{UsageReport, chatgpt_base_url, fetch_usage_with};
