//! What the proxy needs from the account store, as a trait: the store implements it for real
//! sessions, and tests can implement it over fixtures.

use std::future::Future;

use color_eyre::eyre::Result;

use crate::account_id::AccountId;
use crate::proxy::events::{AccountRef, AccountSummary};
use crate::quota::AccountLimits;
use crate::secret::Secret;

/// A stored account, as the proxy sees it (no tokens).
#[derive(Clone, Debug, PartialEq)]
pub struct DirAccount {
    pub id: AccountId,
    pub name: String,
    pub email: Option<String>,
    pub plan: Option<String>,
    /// Missing for API-key accounts, which cannot be logged in with `chatgptAuthTokens`.
    /// Seats of one workspace share it.
    pub chatgpt_account_id: Option<String>,
    /// The ChatGPT user: what tells seats of one workspace apart.
    pub user_id: Option<String>,
    /// Included in automatic switching.
    pub enabled: bool,
    /// The refresh token was rejected.
    pub needs_login: bool,
    /// The sign-in kind, when a newer cs-tui wrote one this version cannot use (say
    /// `device_code`): such an account is never switched to, logged in or read.
    pub unsupported_sign_in: Option<String>,
}

impl DirAccount {
    pub fn to_ref(&self) -> AccountRef {
        AccountRef {
            id: self.id.clone(),
            name: self.name.clone(),
        }
    }

    /// What the panel shows of it.
    pub fn summary(&self) -> AccountSummary {
        AccountSummary {
            id: self.id.clone(),
            name: self.name.clone(),
            email: self.email.clone(),
            plan: self.plan.clone(),
            enabled: self.enabled,
            needs_login: self.needs_login,
            unsupported_sign_in: self.unsupported_sign_in.clone(),
        }
    }

    /// Whether the proxy can log the app-server into this account at all: the one test every
    /// choice of an account (the start, automatic and manual switches, usage reads) passes.
    pub fn switchable(&self) -> bool {
        self.unsupported_sign_in.is_none() && self.chatgpt_account_id.is_some() && !self.needs_login
    }
}

/// Tokens for `account/login/start` with `chatgptAuthTokens`.
#[derive(Clone, Debug)]
pub struct LoginTokens {
    pub access_token: Secret,
    pub chatgpt_account_id: String,
    pub plan: Option<String>,
}

/// The account store as the proxy uses it.
pub trait AccountDirectory: Clone + Send + Sync + 'static {
    /// Every stored account.
    fn list(&self) -> impl Future<Output = Result<Vec<DirAccount>>> + Send;
    /// The account the user chose for the next session (`cs-tui accounts use`).
    fn preferred(&self) -> impl Future<Output = Result<Option<AccountId>>> + Send;
    /// Fresh tokens for an account; `force_refresh` after the backend rejected its token.
    fn login_tokens(
        &self,
        id: &AccountId,
        force_refresh: bool,
    ) -> impl Future<Output = Result<LoginTokens>> + Send;
    /// The account's limits (every family) from `/wham/usage`.
    fn fetch_usage(&self, id: &AccountId) -> impl Future<Output = Result<AccountLimits>> + Send;
    /// Records that the session now runs on this account.
    fn mark_active(&self, id: &AccountId) -> impl Future<Output = Result<()>> + Send;
    /// Names of accounts whose refreshed tokens the store refused: they live in memory only
    /// until a write succeeds.
    fn unsaved_tokens(&self) -> Vec<String> {
        Vec::new()
    }
    /// The `User-Agent` the session's app-server sends the backend: the directory's own
    /// backend requests send it too, so the backend sees one caller (issue 11, item 5).
    fn adopt_user_agent(&self, _user_agent: &str) {}
    /// The account's rate-limit reset credits; `None` where the directory cannot read them.
    fn fetch_reset_credits(
        &self,
        _id: &AccountId,
    ) -> impl Future<Output = Result<Option<crate::accounts::reset_credits::ResetCredits>>> + Send
    {
        async { Ok(None) }
    }
}
