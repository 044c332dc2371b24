//! The account store as the proxy's [`AccountDirectory`].

use std::path::PathBuf;

use chrono::Utc;
use color_eyre::eyre::{Result, eyre};

use crate::accounts::{self, Account, AccountAuth, AccountStatus, Backend, RefreshPolicy, Store};
use crate::proxy::directory::{AccountDirectory, DirAccount, LoginTokens};
use crate::quota::AccountLimits;

/// The on-disk store, with an HTTP client for refreshes and usage reads.
#[derive(Clone)]
pub struct StoreDirectory {
    store: Store,
    http: reqwest::Client,
    backend: std::sync::Arc<Backend>,
}

impl StoreDirectory {
    /// The store at `store_dir`, with the backend URLs of the environment (`CODEX_HOME`'s
    /// config, `CODEX_REFRESH_TOKEN_URL_OVERRIDE`).
    pub fn from_env(store_dir: impl Into<PathBuf>) -> Result<Self> {
        Self::new(store_dir, Backend::from_env()?)
    }

    pub fn new(store_dir: impl Into<PathBuf>, backend: Backend) -> Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(20))
            .build()?;
        Ok(Self {
            store: Store::open(store_dir),
            http,
            backend: std::sync::Arc::new(backend),
        })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }
}

fn dir_account(account: &Account) -> DirAccount {
    DirAccount {
        id: account.id.clone(),
        name: account.name.clone(),
        email: account.email.clone(),
        plan: account.plan.clone(),
        chatgpt_account_id: match account.auth {
            AccountAuth::ChatGpt { .. } => account.chatgpt_account_id.clone(),
            AccountAuth::ApiKey { .. } => None,
        },
        user_id: account.user_id.clone(),
        enabled: account.enabled,
        needs_login: matches!(account.status, AccountStatus::NeedsLogin { .. }),
    }
}

impl AccountDirectory for StoreDirectory {
    async fn list(&self) -> Result<Vec<DirAccount>> {
        let store = self.store.clone();
        let file = tokio::task::spawn_blocking(move || store.load()).await??;
        Ok(file.accounts.iter().map(dir_account).collect())
    }

    async fn preferred(&self) -> Result<Option<String>> {
        let store = self.store.clone();
        Ok(tokio::task::spawn_blocking(move || store.load())
            .await??
            .active)
    }

    async fn login_tokens(&self, id: &str, force_refresh: bool) -> Result<LoginTokens> {
        let policy = if force_refresh {
            RefreshPolicy::AfterUnauthorized
        } else {
            RefreshPolicy::IfDue
        };
        let account =
            accounts::ensure_fresh_with(&self.store, &self.http, &self.backend, id, policy).await?;
        match &account.auth {
            AccountAuth::ChatGpt { access_token, .. } => Ok(LoginTokens {
                access_token: access_token.clone(),
                chatgpt_account_id: account
                    .chatgpt_account_id
                    .clone()
                    .ok_or_else(|| eyre!("{} has no ChatGPT account id", account.name))?,
                plan: account.plan.clone(),
            }),
            AccountAuth::ApiKey { .. } => Err(eyre!(
                "{} is an API-key login; only ChatGPT accounts can be switched to",
                account.name
            )),
        }
    }

    async fn fetch_usage(&self, id: &str) -> Result<AccountLimits> {
        Ok(
            accounts::fetch_usage_with(&self.store, &self.http, &self.backend, id)
                .await?
                .limits(),
        )
    }

    fn unsaved_tokens(&self) -> Vec<String> {
        accounts::unsaved_token_accounts(&self.store)
    }

    async fn mark_active(&self, id: &str) -> Result<()> {
        let store = self.store.clone();
        let id = id.to_owned();
        tokio::task::spawn_blocking(move || {
            store.update(|file| {
                file.active = Some(id.clone());
                if let Some(account) = file.accounts.iter_mut().find(|a| a.id == id) {
                    account.last_used_at = Some(Utc::now());
                }
                Ok(())
            })
        })
        .await?
    }
}
