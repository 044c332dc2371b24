//! The account store as the proxy's [`AccountDirectory`].

use std::path::PathBuf;

use chrono::Utc;
use color_eyre::eyre::{Result, eyre};

use crate::account_id::AccountId;
use crate::accounts::{self, Account, AccountAuth, AccountStatus, Backend, RefreshPolicy, Store};
use crate::proxy::directory::{AccountDirectory, DirAccount, LoginTokens};
use crate::quota::AccountLimits;

/// The on-disk store, with an HTTP client for refreshes and usage reads.
#[derive(Clone)]
pub struct StoreDirectory {
    store: Store,
    /// The client for backend requests: `None` until the session's app-server said which
    /// `User-Agent` it sends ([`AccountDirectory::adopt_user_agent`]), so that no request of
    /// ours tells the backend another name.
    http: tokio::sync::watch::Sender<Option<reqwest::Client>>,
    backend: std::sync::Arc<Backend>,
}

/// How long a backend request waits for the app-server's `User-Agent` (its start takes
/// ~200 ms; it fails well before this).
const USER_AGENT_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

fn http_client(user_agent: Option<&str>) -> Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder().timeout(std::time::Duration::from_secs(20));
    if let Some(user_agent) = user_agent {
        builder = builder.user_agent(user_agent);
    }
    Ok(builder.build()?)
}

impl StoreDirectory {
    /// The store at `store_dir`, with the backend URLs of the environment (`CODEX_HOME`'s
    /// config, `CODEX_REFRESH_TOKEN_URL_OVERRIDE`).
    pub fn from_env(store_dir: impl Into<PathBuf>) -> Result<Self> {
        Self::new(store_dir, Backend::from_env()?)
    }

    pub fn new(store_dir: impl Into<PathBuf>, backend: Backend) -> Result<Self> {
        // Fail here, not later, if no client can be built at all.
        http_client(None)?;
        Ok(Self {
            store: Store::open(store_dir),
            http: tokio::sync::watch::Sender::new(None),
            backend: std::sync::Arc::new(backend),
        })
    }

    /// The backend client, once the app-server's `User-Agent` is known (or, should it never
    /// be, after [`USER_AGENT_WAIT`], a client that sends none).
    async fn http(&self) -> reqwest::Client {
        let mut ready = self.http.subscribe();
        match tokio::time::timeout(USER_AGENT_WAIT, ready.wait_for(Option::is_some)).await {
            Ok(Ok(client)) => client.clone().expect("waited for Some"),
            _ => {
                tracing::warn!("the app-server's User-Agent is unknown; backend reads go without");
                http_client(None).expect("built once in StoreDirectory::new")
            }
        }
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
            AccountAuth::ApiKey { .. } | AccountAuth::Unknown(_) => None,
        },
        unsupported_sign_in: account.unsupported_sign_in().map(str::to_owned),
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

    async fn preferred(&self) -> Result<Option<AccountId>> {
        let store = self.store.clone();
        Ok(tokio::task::spawn_blocking(move || store.load())
            .await??
            .active)
    }

    async fn login_tokens(&self, id: &AccountId, force_refresh: bool) -> Result<LoginTokens> {
        let policy = if force_refresh {
            RefreshPolicy::AfterUnauthorized
        } else {
            RefreshPolicy::IfDue
        };
        let http = self.http().await;
        let account =
            accounts::ensure_fresh_with(&self.store, &http, &self.backend, id, policy).await?;
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
            // `ensure_fresh_with` refuses these first; said again so no token is ever sent.
            AccountAuth::Unknown(unknown) => Err(eyre!(
                "{}",
                accounts::store::unsupported_sign_in_message(&account.name, unknown.kind())
            )),
        }
    }

    async fn fetch_usage(&self, id: &AccountId) -> Result<AccountLimits> {
        Ok(
            accounts::fetch_usage_with(&self.store, &self.http().await, &self.backend, id)
                .await?
                .limits(),
        )
    }

    fn unsaved_tokens(&self) -> Vec<String> {
        accounts::unsaved_token_accounts(&self.store)
    }

    async fn mark_active(&self, id: &AccountId) -> Result<()> {
        let store = self.store.clone();
        let id = id.clone();
        tokio::task::spawn_blocking(move || {
            store.update(|file| {
                file.active = Some(id.clone());
                if let Some(account) = file.get_mut(&id) {
                    account.last_used_at = Some(Utc::now());
                }
                Ok(())
            })
        })
        .await?
    }

    async fn fetch_reset_credits(
        &self,
        id: &AccountId,
    ) -> Result<Option<accounts::reset_credits::ResetCredits>> {
        let http = self.http().await;
        accounts::reset_credits::fetch_reset_credits_with(&self.store, &http, &self.backend, id)
            .await
            .map(Some)
    }

    fn adopt_user_agent(&self, user_agent: &str) {
        match http_client(Some(user_agent)) {
            Ok(client) => {
                self.http.send_replace(Some(client));
                accounts::user_agent::save(self.store.dir(), user_agent);
            }
            Err(err) => {
                tracing::warn!("a backend client with the app-server's User-Agent: {err:#}")
            }
        }
    }
}
