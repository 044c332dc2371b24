//! Keeping tokens fresh (PROTOCOL.md §5).
//!
//! Refresh tokens rotate: once one copy is used, every other copy is dead. So a refresh holds
//! the account's refresh lock (no two processes of ours refresh one account at once), writes the
//! new tokens to the store the moment they arrive, mirrors them into `$CODEX_HOME/auth.json`
//! when that file holds the same account, and before refreshing adopts newer tokens that plain
//! `codex` left there.

use std::path::{Path, PathBuf};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable as _};
use chrono::{DateTime, Utc};
use color_eyre::eyre::{Report, Result, WrapErr, eyre};
use serde::Deserialize;
use serde_json::json;

use super::codex_auth::{auth_json_path, read_auth_json, write_tokens_to_codex_auth};
use super::store::{Account, AccountAuth, AccountStatus, Store};
use crate::errors::with_hint;
use crate::secret::Secret;

/// Codex's OAuth client id.
pub const CLIENT_ID: &str = "app_EMoamEEZ73f0CkXaXp7hrann";
/// The real refresh endpoint.
pub const DEFAULT_REFRESH_URL: &str = "https://auth.openai.com/oauth/token";
/// Codex honours this variable for the refresh endpoint; so does cs-tui.
pub const REFRESH_URL_ENV: &str = "CODEX_REFRESH_TOKEN_URL_OVERRIDE";

/// Refresh this long before the access token expires, so a request never leaves with a token
/// that dies on the way.
const EXPIRY_MARGIN: chrono::TimeDelta = chrono::TimeDelta::minutes(5);
/// Codex refreshes tokens older than this; used when the access token has no readable expiry.
const MAX_TOKEN_AGE: chrono::TimeDelta = chrono::TimeDelta::days(8);
/// A forced refresh (after a 401) is skipped when the account was refreshed this recently: it
/// means another task answered the same 401 while this one waited for the lock.
const RECENT_REFRESH: chrono::TimeDelta = chrono::TimeDelta::seconds(10);
/// One refresh attempt may take this long.
const REFRESH_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(20);

/// The refresh endpoint: `CODEX_REFRESH_TOKEN_URL_OVERRIDE`, else the real one.
pub fn refresh_url() -> String {
    std::env::var(REFRESH_URL_ENV)
        .ok()
        .filter(|url| !url.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_REFRESH_URL.to_owned())
}

/// Where the account layer talks to and which `CODEX_HOME` it shares tokens with.
#[derive(Clone, Debug)]
pub struct Backend {
    /// `None` when no home directory can be found: then no `auth.json` is read or written.
    pub codex_home: Option<PathBuf>,
    pub refresh_url: String,
    pub chatgpt_base_url: String,
}

impl Backend {
    /// From the environment: `CODEX_HOME`, its `config.toml`, and the refresh override.
    pub fn from_env() -> Result<Self> {
        let codex_home = crate::paths::codex_home().ok();
        let chatgpt_base_url = match &codex_home {
            Some(home) => super::usage::chatgpt_base_url(home)?,
            None => super::usage::DEFAULT_CHATGPT_BASE_URL.to_owned(),
        };
        Ok(Self {
            codex_home,
            refresh_url: refresh_url(),
            chatgpt_base_url,
        })
    }
}

/// An account whose refresh token was rejected: only a new login helps. Find it in an error
/// with [`needs_login`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("account {name:?} needs a new login")]
pub struct NeedsLogin {
    pub account_id: String,
    pub name: String,
    pub reason: String,
}

/// The [`NeedsLogin`] an error carries, if any.
pub fn needs_login(err: &Report) -> Option<&NeedsLogin> {
    err.downcast_ref::<NeedsLogin>()
}

/// The command that gets a dead account working again.
pub fn relogin_command(name: &str) -> String {
    format!("cs-tui accounts add {name}")
}

fn needs_login_report(account: &Account, reason: &str) -> Report {
    with_hint(
        eyre!("{reason}"),
        format!(
            "run `{}` to log in to it again",
            relogin_command(&account.name)
        ),
    )
    .wrap_err(NeedsLogin {
        account_id: account.id.clone(),
        name: account.name.clone(),
        reason: reason.to_owned(),
    })
}

/// Whether `account`'s access token is expired or about to be.
pub fn needs_refresh(account: &Account, now: DateTime<Utc>) -> bool {
    if !account.is_chatgpt() {
        return false;
    }
    match account.access_claims().and_then(|c| c.expires_at) {
        Some(exp) => exp - now <= EXPIRY_MARGIN,
        None => {
            let since = account.last_refreshed_at.unwrap_or(account.created_at);
            now - since >= MAX_TOKEN_AGE
        }
    }
}

/// When to refresh.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefreshPolicy {
    /// When the access token is expired or close to it.
    IfDue,
    /// The backend answered 401 to the current token: refresh, unless the token was refreshed
    /// moments ago (another task answered the same 401) or new ones were just adopted.
    AfterUnauthorized,
    /// Always (`cs-tui accounts refresh`).
    Now,
}

/// Returns the account with a usable access token: refreshed when it is expired or close to it,
/// or when `force` is set (after the backend answered 401). See the module docs for how
/// rotation is handled. A rejected refresh token marks the account "needs login" and fails with
/// [`NeedsLogin`].
pub async fn ensure_fresh(
    store: &Store,
    http: &reqwest::Client,
    account_id: &str,
    force: bool,
) -> Result<Account> {
    let policy = if force {
        RefreshPolicy::AfterUnauthorized
    } else {
        RefreshPolicy::IfDue
    };
    ensure_fresh_with(store, http, &Backend::from_env()?, account_id, policy).await
}

/// [`ensure_fresh`] with an explicit [`Backend`] and [`RefreshPolicy`].
pub async fn ensure_fresh_with(
    store: &Store,
    http: &reqwest::Client,
    backend: &Backend,
    account_id: &str,
    policy: RefreshPolicy,
) -> Result<Account> {
    let lock_store = store.clone();
    let lock_id = account_id.to_owned();
    // flock blocks, so it waits on the blocking pool rather than on a runtime thread.
    let _refresh_lock = tokio::task::spawn_blocking(move || lock_store.lock_refresh(&lock_id))
        .await
        .wrap_err("waiting for the refresh lock")??;

    let (account, adopted) = adopt_codex_tokens(store, backend.codex_home.as_deref(), account_id)?;
    let AccountAuth::ChatGpt { refresh_token, .. } = &account.auth else {
        return Ok(account);
    };
    if let AccountStatus::NeedsLogin { reason } = &account.status {
        return Err(needs_login_report(&account, reason));
    }
    let now = Utc::now();
    let due = needs_refresh(&account, now);
    let refresh = match policy {
        RefreshPolicy::IfDue => due,
        RefreshPolicy::AfterUnauthorized => {
            due || !(adopted
                || account
                    .last_refreshed_at
                    .is_some_and(|at| now - at < RECENT_REFRESH))
        }
        RefreshPolicy::Now => true,
    };
    if !refresh {
        return Ok(account);
    }

    tracing::info!(account = %account.name, ?policy, due, "refreshing tokens");
    let used = refresh_token.clone();
    match request_refresh(http, &backend.refresh_url, &used).await {
        Ok(fresh) => {
            let account = store.update(|file| {
                let stored = file.get_mut(account_id).ok_or_else(|| removed(&account))?;
                fresh.apply_to(stored);
                Ok(stored.clone())
            })?;
            tracing::info!(account = %account.name, "stored refreshed tokens");
            if let Some(home) = &backend.codex_home {
                match write_tokens_to_codex_auth(home, &account) {
                    Ok(true) => tracing::info!(
                        account = %account.name,
                        "wrote refreshed tokens to {}",
                        auth_json_path(home).display()
                    ),
                    Ok(false) => {}
                    // The store has the tokens; plain codex will ask for a login at worst.
                    Err(err) => tracing::warn!(account = %account.name, "{err:#}"),
                }
            }
            Ok(account)
        }
        Err(RefreshError::Rejected(reason)) => {
            tracing::warn!(account = %account.name, %reason, "refresh token rejected");
            store.update(|file| {
                if let Some(stored) = file.get_mut(account_id)
                    // Someone may have stored a new login meanwhile; that one is not dead.
                    && matches!(&stored.auth, AccountAuth::ChatGpt { refresh_token, .. } if *refresh_token == used)
                {
                    stored.status = AccountStatus::NeedsLogin {
                        reason: reason.clone(),
                    };
                }
                Ok(())
            })?;
            Err(needs_login_report(&account, &reason))
        }
        Err(err) => Err(with_hint(
            Report::new(err).wrap_err(format!(
                "could not refresh the tokens of account {:?}",
                account.name
            )),
            format!(
                "check the network and try again with `cs-tui accounts refresh {}`",
                account.name
            ),
        )),
    }
}

fn removed(account: &Account) -> Report {
    eyre!(
        "account {:?} was removed while its tokens were being refreshed",
        account.name
    )
}

/// Adopts the tokens in `$CODEX_HOME/auth.json` when they belong to this account and are newer
/// than the stored ones (plain `codex` refreshed them, which killed ours). Returns the current
/// account and whether it adopted anything.
fn adopt_codex_tokens(
    store: &Store,
    codex_home: Option<&Path>,
    account_id: &str,
) -> Result<(Account, bool)> {
    let file = store.load()?;
    let account = file.get(account_id).cloned().ok_or_else(|| {
        with_hint(
            eyre!("no stored account has the id {account_id}"),
            "see `cs-tui accounts list`",
        )
    })?;
    // A broken auth.json is Codex's business; it must not stop cs-tui from using its own copy.
    let codex = codex_home
        .map(auth_json_path)
        .and_then(|path| read_auth_json(&path).ok().flatten());
    let Some(codex) = codex.filter(|c| c.is_for(&account) && c.is_newer_than(&account)) else {
        return Ok((account, false));
    };
    let adopted = store.update(|file| {
        let stored = file.get_mut(account_id).ok_or_else(|| removed(&account))?;
        if !codex.is_newer_than(stored) {
            return Ok(stored.clone());
        }
        codex.apply_to(stored);
        tracing::info!(account = %stored.name, "adopted newer tokens from Codex's auth.json");
        Ok(stored.clone())
    })?;
    Ok((adopted, true))
}

/// The token endpoint's answer; fields it leaves out keep their old values.
#[derive(Deserialize)]
struct RefreshResponse {
    #[serde(default)]
    id_token: Option<Secret>,
    #[serde(default)]
    access_token: Option<Secret>,
    #[serde(default)]
    refresh_token: Option<Secret>,
}

/// New tokens from a refresh.
struct FreshTokens {
    id_token: Option<Secret>,
    access_token: Secret,
    refresh_token: Option<Secret>,
}

impl FreshTokens {
    fn apply_to(self, account: &mut Account) {
        let AccountAuth::ChatGpt {
            id_token,
            access_token,
            refresh_token,
        } = &mut account.auth
        else {
            return;
        };
        if let Some(new) = self.id_token {
            *id_token = new;
        }
        *access_token = self.access_token;
        if let Some(new) = self.refresh_token {
            *refresh_token = new;
        }
        // The plan changes with an upgrade; the new id token says so.
        if let Some(claims) = account.id_claims() {
            account.plan = claims.plan.or(account.plan.take());
            account.email = claims.email.or(account.email.take());
        }
        account.last_refreshed_at = Some(Utc::now());
        account.status = AccountStatus::Ok;
    }
}

/// Why a refresh failed. Never holds a token or the server's answer (which may hold one).
#[derive(Debug, thiserror::Error)]
enum RefreshError {
    /// The refresh token is dead; the reason is a sentence for the user.
    #[error("{0}")]
    Rejected(String),
    /// A 5xx, 429, timeout or connection failure: worth another try.
    #[error("the sign-in server is unavailable ({0})")]
    Transient(String),
    #[error("the sign-in server answered HTTP {0}")]
    Status(u16),
    #[error("the sign-in server's answer could not be read")]
    Malformed,
}

impl RefreshError {
    fn is_transient(&self) -> bool {
        matches!(self, Self::Transient(_))
    }
}

/// POSTs the refresh, retrying transient failures with exponential backoff.
async fn request_refresh(
    http: &reqwest::Client,
    url: &str,
    refresh_token: &Secret,
) -> std::result::Result<FreshTokens, RefreshError> {
    let attempt = || refresh_once(http, url, refresh_token);
    attempt
        .retry(
            ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(250))
                .with_max_delay(Duration::from_secs(4))
                .with_max_times(4)
                .with_jitter(),
        )
        .when(RefreshError::is_transient)
        .notify(|err, wait| tracing::warn!("refresh failed ({err}); retrying in {wait:?}"))
        .await
}

async fn refresh_once(
    http: &reqwest::Client,
    url: &str,
    refresh_token: &Secret,
) -> std::result::Result<FreshTokens, RefreshError> {
    let response = http
        .post(url)
        .timeout(REFRESH_ATTEMPT_TIMEOUT)
        .json(&json!({
            "client_id": CLIENT_ID,
            "grant_type": "refresh_token",
            "refresh_token": refresh_token.expose(),
            "scope": "openid profile email",
        }))
        .send()
        .await
        .map_err(|e| RefreshError::Transient(describe_reqwest_error(&e)))?;
    let status = response.status();
    let body = response
        .bytes()
        .await
        .map_err(|e| RefreshError::Transient(describe_reqwest_error(&e)))?;
    if status.is_server_error() || status.as_u16() == 429 {
        return Err(RefreshError::Transient(format!("HTTP {}", status.as_u16())));
    }
    if matches!(status.as_u16(), 400 | 401 | 403) {
        return Err(RefreshError::Rejected(rejection_reason(
            status.as_u16(),
            &body,
        )));
    }
    if !status.is_success() {
        return Err(RefreshError::Status(status.as_u16()));
    }
    let parsed: RefreshResponse =
        serde_json::from_slice(&body).map_err(|_| RefreshError::Malformed)?;
    let access_token = parsed
        .access_token
        .filter(|t| !t.is_empty())
        .ok_or(RefreshError::Malformed)?;
    Ok(FreshTokens {
        id_token: parsed.id_token.filter(|t| !t.is_empty()),
        access_token,
        refresh_token: parsed.refresh_token.filter(|t| !t.is_empty()),
    })
}

/// reqwest's message without its source chain (which could echo a body).
fn describe_reqwest_error(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".to_owned()
    } else if e.is_connect() {
        "could not connect".to_owned()
    } else {
        "the connection failed".to_owned()
    }
}

/// Why the token endpoint refused, from the error codes Codex knows.
fn rejection_reason(status: u16, body: &[u8]) -> String {
    let code = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            let error = v.get("error")?;
            error
                .get("code")
                .or(Some(error))
                .and_then(|c| c.as_str())
                .map(str::to_owned)
        });
    match code.as_deref() {
        Some("refresh_token_expired") => "its refresh token has expired".to_owned(),
        Some("refresh_token_reused") => {
            "its refresh token was already used (another program refreshed this login)".to_owned()
        }
        Some("refresh_token_invalidated") => "its refresh token was revoked".to_owned(),
        Some("invalid_grant") => "its refresh token is no longer valid".to_owned(),
        _ => format!("the sign-in server rejected its refresh token (HTTP {status})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounts::codex_auth::{CodexAuth, import_auth};
    use cs_tui_testkit::{FakeAccount, MockBackend};

    fn backend(mock: &MockBackend, codex_home: Option<&Path>) -> Backend {
        Backend {
            codex_home: codex_home.map(Path::to_owned),
            refresh_url: mock.refresh_url(),
            chatgpt_base_url: mock.chatgpt_base_url(),
        }
    }

    fn store_with(
        dir: &Path,
        fake: &FakeAccount,
        ttl: i64,
        refresh_token: &str,
    ) -> (Store, Account) {
        let store = Store::open(dir);
        let auth: CodexAuth = crate::accounts::codex_auth::parse_auth_json(
            fake.auth_json(ttl, refresh_token).to_string().as_bytes(),
        )
        .unwrap();
        let account = import_auth(&store, &auth, None).unwrap().account;
        (store, account)
    }

    fn refresh_token_of(account: &Account) -> String {
        match &account.auth {
            AccountAuth::ChatGpt { refresh_token, .. } => refresh_token.expose().to_owned(),
            AccountAuth::ApiKey { .. } => panic!("api key"),
        }
    }

    #[tokio::test]
    async fn fresh_tokens_are_left_alone_and_expired_ones_refreshed_once() {
        let mock = MockBackend::start().await;
        let (fake, rt) = mock.add_account("alice");
        let tmp = tempfile::tempdir().unwrap();
        let (store, account) = store_with(tmp.path(), &fake, 3600, &rt);
        let http = reqwest::Client::new();
        let b = backend(&mock, None);

        let same = ensure_fresh_with(&store, &http, &b, &account.id, RefreshPolicy::IfDue)
            .await
            .unwrap();
        assert_eq!(same, account);
        assert!(mock.requests().is_empty());

        let forced = ensure_fresh_with(
            &store,
            &http,
            &b,
            &account.id,
            RefreshPolicy::AfterUnauthorized,
        )
        .await
        .unwrap();
        assert_ne!(refresh_token_of(&forced), rt);
        assert!(forced.last_refreshed_at.is_some());
        // A second force right after is the same 401 answered twice: no second refresh.
        ensure_fresh_with(
            &store,
            &http,
            &b,
            &account.id,
            RefreshPolicy::AfterUnauthorized,
        )
        .await
        .unwrap();
        let refreshes: Vec<_> = mock
            .requests()
            .into_iter()
            .filter_map(|r| r.refresh_token)
            .collect();
        assert_eq!(refreshes, vec![rt.clone()]);
        assert_eq!(store.load().unwrap().accounts[0], forced);
    }

    #[tokio::test]
    async fn transient_failures_are_retried_and_rejections_mark_the_account() {
        let mock = MockBackend::start().await;
        let (fake, rt) = mock.add_account("alice");
        let tmp = tempfile::tempdir().unwrap();
        let (store, account) = store_with(tmp.path(), &fake, -60, &rt);
        let http = reqwest::Client::new();
        let b = backend(&mock, None);

        mock.fail_next_refreshes(2);
        let fresh = ensure_fresh_with(&store, &http, &b, &account.id, RefreshPolicy::IfDue)
            .await
            .unwrap();
        assert!(!needs_refresh(&fresh, Utc::now()));
        assert_eq!(mock.requests().len(), 3);

        // Put the used (dead) token back, as a stale copy would.
        store
            .update(|f| {
                f.accounts[0] = account.clone();
                Ok(())
            })
            .unwrap();
        let err = ensure_fresh_with(&store, &http, &b, &account.id, RefreshPolicy::IfDue)
            .await
            .unwrap_err();
        let found = needs_login(&err).expect("a NeedsLogin error");
        assert_eq!(found.name, "alice");
        let shown = crate::errors::render_error(&err);
        assert!(shown.contains("already used"), "{shown}");
        assert!(shown.contains("cs-tui accounts add alice"), "{shown}");
        assert!(store.load().unwrap().accounts[0].needs_login());
        // A dead account is not tried again.
        let before = mock.requests().len();
        assert!(
            ensure_fresh_with(
                &store,
                &http,
                &b,
                &account.id,
                RefreshPolicy::AfterUnauthorized
            )
            .await
            .is_err()
        );
        assert_eq!(mock.requests().len(), before);
    }

    #[tokio::test]
    async fn newer_tokens_in_codex_auth_json_are_adopted_and_ours_are_written_back() {
        let mock = MockBackend::start().await;
        let (fake, rt) = mock.add_account("alice");
        let home = tempfile::tempdir().unwrap();
        let auth_path = auth_json_path(home.path());
        std::fs::write(&auth_path, fake.auth_json(-60, &rt).to_string()).unwrap();
        let (store, account) = store_with(&home.path().join("store"), &fake, -60, &rt);
        let http = reqwest::Client::new();
        let b = backend(&mock, Some(home.path()));

        let fresh = ensure_fresh_with(&store, &http, &b, &account.id, RefreshPolicy::IfDue)
            .await
            .unwrap();
        let written: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&auth_path).unwrap()).unwrap();
        assert_eq!(written["tokens"]["refresh_token"], refresh_token_of(&fresh));

        // Plain codex refreshes on its own (its tokens expire later than ours): they must be
        // adopted, and the next refresh must use its refresh token, never our dead one.
        let codex_rt = mock.issue_refresh_token(&fake.chatgpt_account_id);
        let mut newer = fake.auth_json(7200, &codex_rt);
        newer["tokens"]["access_token"] = fake.access_token(7200, 77).into();
        std::fs::write(&auth_path, newer.to_string()).unwrap();
        let adopted = ensure_fresh_with(&store, &http, &b, &account.id, RefreshPolicy::IfDue)
            .await
            .unwrap();
        assert_eq!(refresh_token_of(&adopted), codex_rt);
        ensure_fresh_with(&store, &http, &b, &account.id, RefreshPolicy::Now)
            .await
            .unwrap();
        let refreshes: Vec<_> = mock
            .requests()
            .into_iter()
            .filter_map(|r| r.refresh_token)
            .collect();
        assert_eq!(refreshes, vec![rt, codex_rt]);
    }

    #[test]
    fn refresh_is_due_near_expiry() {
        let fake = FakeAccount::new("a");
        let mut account = Account {
            id: "1".into(),
            name: "a".into(),
            email: None,
            plan: None,
            chatgpt_account_id: None,
            user_id: None,
            auth: AccountAuth::ChatGpt {
                id_token: fake.id_token(3600).into(),
                access_token: fake.access_token(3600, 0).into(),
                refresh_token: "rt".into(),
            },
            created_at: Utc::now(),
            last_used_at: None,
            last_refreshed_at: None,
            enabled: true,
            status: AccountStatus::Ok,
            unknown: Default::default(),
        };
        let now = Utc::now();
        assert!(!needs_refresh(&account, now));
        assert!(needs_refresh(
            &account,
            now + chrono::TimeDelta::minutes(56)
        ));
        account.auth = AccountAuth::ChatGpt {
            id_token: "x".into(),
            access_token: "not-a-jwt".into(),
            refresh_token: "rt".into(),
        };
        assert!(!needs_refresh(&account, now));
        assert!(needs_refresh(&account, now + chrono::TimeDelta::days(9)));
    }

    #[test]
    fn rejection_reasons_name_the_cause() {
        let reused = br#"{"error":{"code":"refresh_token_reused","message":"x"}}"#;
        assert!(rejection_reason(401, reused).contains("already used"));
        assert!(rejection_reason(400, br#"{"error":"invalid_grant"}"#).contains("no longer valid"));
        assert!(rejection_reason(401, b"<html>").contains("HTTP 401"));
    }
}
