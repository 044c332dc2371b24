//! Keeping tokens fresh (docs/protocol.md §5).
//!
//! Refresh tokens rotate: once one copy is used, every other copy is dead. So a refresh holds
//! the account's refresh lock (no two refreshes of one account at once, in any of our
//! processes), writes the new tokens to the store the moment they arrive, mirrors them into
//! `$CODEX_HOME/auth.json` when that file holds the same account, and before refreshing adopts
//! newer tokens that plain `codex` left there.
//!
//! The step from sending the request to storing the answer runs on a task of its own, so a
//! caller's timeout cannot cut it between the server rotating the token and the store receiving
//! it; processes wait for such tasks before they exit ([`settle_refreshes`]). A store that
//! refuses the new tokens does not lose them: they are kept in memory until a write succeeds.
//! Only the sign-in server's own error codes mark an account "needs login"; anything ambiguous
//! (a timeout after sending, a cut answer, a page from something in between) keeps the account
//! and its token.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable as _};
use chrono::{DateTime, Utc};
use color_eyre::eyre::{Report, Result, WrapErr, eyre};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::watch;

use super::codex_auth::{auth_json_path, read_auth_json, write_tokens_to_codex_auth};
use super::store::{Account, AccountAuth, AccountStatus, Store, unsupported_sign_in_error};
use crate::account_id::AccountId;
use crate::errors::with_hint;
use crate::secret::Secret;

/// Codex's OAuth client id.
pub(crate) const CLIENT_ID: &str = "app_EMoamEEZ73f0CkXaXp7hrann";
/// The real refresh endpoint.
pub(crate) const DEFAULT_REFRESH_URL: &str = "https://auth.openai.com/oauth/token";
/// Codex honours this variable for the refresh endpoint; so does cs-tui.
pub(crate) const REFRESH_URL_ENV: &str = "CODEX_REFRESH_TOKEN_URL_OVERRIDE";

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
pub(crate) fn refresh_url() -> String {
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
pub(crate) struct NeedsLogin {
    pub account_id: AccountId,
    pub name: String,
    pub reason: String,
}

/// The [`NeedsLogin`] an error carries, if any.
pub(crate) fn needs_login(err: &Report) -> Option<&NeedsLogin> {
    err.downcast_ref::<NeedsLogin>()
}

/// The command that gets a dead account working again.
pub(crate) fn relogin_command(name: &str) -> String {
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
pub(crate) fn needs_refresh(account: &Account, now: DateTime<Utc>) -> bool {
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
pub(crate) enum RefreshPolicy {
    /// When the access token is expired or close to it.
    IfDue,
    /// The backend answered 401 to the current token: refresh, unless the token was refreshed
    /// moments ago (another task answered the same 401) or new ones were just adopted.
    AfterUnauthorized,
    /// Always (`cs-tui accounts refresh`).
    Now,
}

/// Returns the account with a usable access token from `backend`: refreshed as `policy` says
/// (when it is expired or close to it, or after the backend answered 401). See the module docs
/// for how rotation is handled. A rejected refresh token marks the account "needs login" and
/// fails with [`NeedsLogin`].
///
/// Cancelling the returned future never loses a rotated refresh token: once the lock is held,
/// the request, and the storing of its answer, run on a task of their own that finishes even
/// when every caller is gone (see [`settle_refreshes`] for the end of a process).
pub(crate) async fn ensure_fresh_with(
    store: &Store,
    http: &reqwest::Client,
    backend: &Backend,
    account_id: &AccountId,
    policy: RefreshPolicy,
) -> Result<Account> {
    let lock_store = store.clone();
    let lock_id = account_id.to_owned();
    // flock blocks, so it waits on the blocking pool rather than on a runtime thread. It also
    // keeps a second refresh of this account (in this process or another) waiting until the
    // first one has stored its answer.
    let refresh_lock = tokio::task::spawn_blocking(move || lock_store.lock_refresh(&lock_id))
        .await
        .wrap_err("waiting for the refresh lock")??;

    let (account, adopted) = match save_unsaved(store, account_id) {
        // The store would not take the last rotated tokens: they are the live ones.
        Some(unsaved) => (unsaved, false),
        None => adopt_codex_tokens(store, backend.codex_home.as_deref(), account_id)?,
    };
    let refresh_token = match &account.auth {
        AccountAuth::ChatGpt { refresh_token, .. } => refresh_token,
        // An API key never expires.
        AccountAuth::ApiKey { .. } => return Ok(account),
        // A newer cs-tui's kind: nothing here can refresh it, nor may use it.
        AccountAuth::Unknown(unknown) => {
            return Err(unsupported_sign_in_error(&account.name, unknown.kind()));
        }
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
    let task = RefreshTask {
        used: refresh_token.clone(),
        account,
        store: store.clone(),
        http: http.clone(),
        backend: backend.clone(),
        _lock: refresh_lock,
        _in_flight: InFlight::start(),
    };
    // Dropping the JoinHandle (a caller's timeout) leaves the task running.
    tokio::spawn(task.run())
        .await
        .wrap_err("the token refresh task stopped")?
}

/// How long the end of a process waits for refreshes in flight: the attempt under way (or
/// about to start after its backoff) and the storing of its answer.
pub(crate) const SETTLE_LIMIT: Duration = Duration::from_secs(25);

/// The number of refreshes in flight in this process.
static IN_FLIGHT: LazyLock<watch::Sender<usize>> = LazyLock::new(|| watch::Sender::new(0));

/// Counts one refresh in flight for as long as it lives.
struct InFlight(());

impl InFlight {
    fn start() -> Self {
        IN_FLIGHT.send_modify(|n| *n += 1);
        Self(())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        IN_FLIGHT.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// Set when the process is about to exit: a refresh under way finishes its current attempt but
/// starts no other, so it ends within [`SETTLE_LIMIT`].
static EXITING: AtomicBool = AtomicBool::new(false);

/// For the end of a process, before [`settle_refreshes`]: refreshes under way make no further
/// attempts after the current one.
pub(crate) fn stop_retrying_refreshes() {
    EXITING.store(true, Ordering::SeqCst);
}

/// Waits until no refresh of this process is under way, or `limit` passes. Returns whether
/// none is.
pub(crate) async fn wait_for_refreshes(limit: Duration) -> bool {
    let mut rx = IN_FLIGHT.subscribe();
    tokio::time::timeout(limit, rx.wait_for(|n| *n == 0))
        .await
        .is_ok()
}

/// For the end of a process (after [`stop_retrying_refreshes`]): waits up to [`SETTLE_LIMIT`]
/// for refreshes in flight (a refresh token spent on the server must not die with the
/// process), saying so on stderr when it takes more than a second; then tries once more to
/// store rotated tokens the store refused, and says loudly on stderr which ones are lost.
/// Returns whether everything was stored.
pub(crate) async fn settle_refreshes(store: &Store) -> bool {
    if !wait_for_refreshes(Duration::from_secs(1)).await {
        eprintln!("Waiting for a token refresh under way to finish, so its new tokens are kept…");
        if !wait_for_refreshes(SETTLE_LIMIT).await {
            eprintln!(
                "warning: a token refresh did not finish within {}s; if the sign-in server \
                 answered it later, that account may need `cs-tui accounts refresh`",
                SETTLE_LIMIT.as_secs()
            );
        }
    }
    let mut all_saved = true;
    for key in unsaved_ids(store) {
        if save_unsaved(store, &key).is_some() {
            all_saved = false;
        }
    }
    for (name, in_codex_auth) in unsaved_names(store) {
        let kept = if in_codex_auth {
            "they are kept in $CODEX_HOME/auth.json, which `cs-tui accounts import` reads back"
        } else {
            "they are lost with this process: the account needs `cs-tui accounts add` again"
        };
        eprintln!(
            "error: the refreshed tokens of account {name:?} could not be saved to the account \
             store; {kept}"
        );
    }
    all_saved
}

/// Rotated tokens the store refused, by store directory and account id, with the refresh
/// token they replace and whether `auth.json` holds them. While here, they are the account's
/// live tokens: the stored ones are dead.
static UNSAVED: LazyLock<Mutex<UnsavedMap>> = LazyLock::new(|| Mutex::new(HashMap::new()));

type UnsavedMap = HashMap<UnsavedKey, Unsaved>;

/// Which store refused the tokens, and of which account.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct UnsavedKey {
    store: PathBuf,
    account: AccountId,
}

impl UnsavedKey {
    fn new(store: &Store, account: &AccountId) -> Self {
        Self {
            store: store.dir().to_owned(),
            account: account.clone(),
        }
    }
}

#[derive(Clone)]
struct Unsaved {
    account: Account,
    replaces: Secret,
    in_codex_auth: bool,
}

fn unsaved() -> std::sync::MutexGuard<'static, UnsavedMap> {
    UNSAVED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn unsaved_ids(store: &Store) -> Vec<AccountId> {
    unsaved()
        .keys()
        .filter(|key| key.store == store.dir())
        .map(|key| key.account.clone())
        .collect()
}

/// Names of the accounts whose refreshed tokens `store` refused and memory holds.
pub(crate) fn unsaved_token_accounts(store: &Store) -> Vec<String> {
    let mut names: Vec<String> = unsaved_names(store).into_iter().map(|(n, _)| n).collect();
    names.sort();
    names
}

fn unsaved_names(store: &Store) -> Vec<(String, bool)> {
    unsaved()
        .iter()
        .filter(|(key, _)| key.store == store.dir())
        .map(|(_, u)| (u.account.name.clone(), u.in_codex_auth))
        .collect()
}

/// Stores the rotated tokens the store refused before, if any. Returns them when the store
/// still refuses (they are the account's live tokens), `None` when there were none or they
/// are stored now.
fn save_unsaved(store: &Store, account_id: &AccountId) -> Option<Account> {
    let key = UnsavedKey::new(store, account_id);
    let pending = unsaved().get(&key).cloned()?;
    let saved = store.update(|file| {
        let Some(stored) = file.get_mut(account_id) else {
            return Ok(());
        };
        // A new login stored meanwhile (or newer tokens adopted from auth.json) wins.
        if matches!(&stored.auth, AccountAuth::ChatGpt { refresh_token, .. } if *refresh_token == pending.replaces)
        {
            stored.auth = pending.account.auth.clone();
            stored.plan = pending.account.plan.clone();
            stored.email = pending.account.email.clone();
            stored.last_refreshed_at = pending.account.last_refreshed_at;
            stored.status = AccountStatus::Ok;
        }
        Ok(())
    });
    match saved {
        Ok(()) => {
            unsaved().remove(&key);
            tracing::info!(account = %pending.account.name, "stored the refreshed tokens the store refused before");
            None
        }
        Err(err) => {
            tracing::error!(account = %pending.account.name, "the refreshed tokens still cannot be stored: {err:#}");
            Some(pending.account)
        }
    }
}

/// One refresh: request, then store the answer. Runs on its own task so that no caller can
/// cancel it between the server rotating the refresh token and the store receiving it.
struct RefreshTask {
    account: Account,
    used: Secret,
    store: Store,
    http: reqwest::Client,
    backend: Backend,
    _lock: nix::fcntl::Flock<std::fs::File>,
    _in_flight: InFlight,
}

impl RefreshTask {
    async fn run(self) -> Result<Account> {
        let account = &self.account;
        match request_refresh(&self.http, &self.backend.refresh_url, &self.used).await {
            Ok(fresh) => self.persist(fresh).await,
            Err(RefreshError::Rejected(reason)) => {
                tracing::warn!(account = %account.name, %reason, "refresh token rejected");
                let used = &self.used;
                self.store.update(|file| {
                    if let Some(stored) = file.get_mut(&account.id)
                        // Someone may have stored a new login meanwhile; that one is not dead.
                        && matches!(&stored.auth, AccountAuth::ChatGpt { refresh_token, .. } if refresh_token == used)
                    {
                        stored.status = AccountStatus::NeedsLogin {
                            reason: reason.clone(),
                        };
                    }
                    Ok(())
                })?;
                Err(needs_login_report(account, &reason))
            }
            Err(err) => {
                tracing::warn!(account = %account.name, "refresh failed: {err}");
                Err(with_hint(
                    Report::new(err).wrap_err(format!(
                        "could not refresh the tokens of account {:?}",
                        account.name
                    )),
                    format!(
                        "the account is still usable; check the network and try again with \
                         `cs-tui accounts refresh {}`",
                        account.name
                    ),
                ))
            }
        }
    }

    /// Stores the new tokens, retrying a failed write. When the store keeps refusing, the
    /// tokens stay in memory (and go to `auth.json` when it holds this account) and the next
    /// use of the account tries again.
    async fn persist(&self, fresh: FreshTokens) -> Result<Account> {
        let account = &self.account;
        let mut updated = account.clone();
        fresh.clone().apply_to(&mut updated);
        let mut failure = None;
        for backoff in [
            Duration::ZERO,
            Duration::from_millis(200),
            Duration::from_secs(1),
        ] {
            if !backoff.is_zero() {
                tokio::time::sleep(backoff).await;
            }
            let stored = self.store.update(|file| {
                Ok(file.get_mut(&account.id).map(|stored| {
                    fresh.clone().apply_to(stored);
                    stored.clone()
                }))
            });
            match stored {
                Ok(Some(stored)) => {
                    tracing::info!(account = %stored.name, "stored refreshed tokens");
                    unsaved().remove(&UnsavedKey::new(&self.store, &account.id));
                    self.mirror_to_codex_auth(&stored);
                    return Ok(stored);
                }
                Ok(None) => return Err(removed(account)),
                Err(err) => {
                    tracing::warn!(account = %account.name, "storing refreshed tokens failed: {err:#}");
                    failure = Some(err);
                }
            }
        }
        let in_codex_auth = self.mirror_to_codex_auth(&updated);
        let err = failure.map(|e| format!("{e:#}")).unwrap_or_default();
        tracing::error!(
            account = %account.name,
            in_codex_auth,
            "THE REFRESHED TOKENS COULD NOT BE STORED ({err}); they are kept in memory and \
             stored at the account's next use"
        );
        let mut unsaved = unsaved();
        let key = UnsavedKey::new(&self.store, &account.id);
        // A refresh of tokens that were themselves never stored replaces what the store holds.
        let replaces = unsaved
            .get(&key)
            .map_or_else(|| self.used.clone(), |u| u.replaces.clone());
        unsaved.insert(
            key,
            Unsaved {
                account: updated.clone(),
                replaces,
                in_codex_auth,
            },
        );
        Ok(updated)
    }

    /// Writes the tokens to `$CODEX_HOME/auth.json` when it holds this account. Returns whether
    /// it did.
    fn mirror_to_codex_auth(&self, account: &Account) -> bool {
        let Some(home) = &self.backend.codex_home else {
            return false;
        };
        match write_tokens_to_codex_auth(home, account) {
            Ok(true) => {
                tracing::info!(
                    account = %account.name,
                    "wrote refreshed tokens to {}",
                    auth_json_path(home).display()
                );
                true
            }
            Ok(false) => false,
            // The store has the tokens; plain codex will ask for a login at worst.
            Err(err) => {
                tracing::warn!(account = %account.name, "{err:#}");
                false
            }
        }
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
    account_id: &AccountId,
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
#[derive(Clone)]
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
    /// The sign-in server itself said the refresh token is dead (docs/protocol.md §5); the reason
    /// is a sentence for the user. Only this marks an account "needs login".
    #[error("{0}")]
    Rejected(String),
    /// A 5xx, 429, timeout, connection failure or an unreadable answer: worth another try.
    #[error("the sign-in server is unavailable ({0})")]
    Transient(String),
    /// Something between us and the sign-in server answered instead of it (an HTML page, a
    /// 4xx without the server's own error code): another try now would get the same.
    #[error("{0}")]
    Intercepted(String),
}

impl RefreshError {
    fn is_transient(&self) -> bool {
        matches!(self, Self::Transient(_))
    }
}

/// How far one attempt got: whether the server may have acted on it.
enum Attempt {
    /// The request never left (the connection could not be made): the token is untouched.
    NotSent(RefreshError),
    /// The request left but no definite answer came back (a timeout, a cut body, a 5xx from a
    /// gateway): the server may have rotated the token, so a later "already used" for it is
    /// our own doing, not a dead login.
    Ambiguous(RefreshError),
    /// A definite answer.
    Answered(std::result::Result<FreshTokens, RefreshError>),
}

/// POSTs the refresh, retrying transient failures with exponential backoff.
async fn request_refresh(
    http: &reqwest::Client,
    url: &str,
    refresh_token: &Secret,
) -> std::result::Result<FreshTokens, RefreshError> {
    let ambiguous = AtomicBool::new(false);
    let attempt = || async {
        if EXITING.load(Ordering::SeqCst) {
            return Err(RefreshError::Transient("cs-tui is exiting".to_owned()));
        }
        match refresh_once(http, url, refresh_token).await {
            Attempt::NotSent(err) => Err(err),
            Attempt::Ambiguous(err) => {
                ambiguous.store(true, Ordering::Relaxed);
                Err(err)
            }
            Attempt::Answered(result) => result,
        }
    };
    let result = attempt
        .retry(
            ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(250))
                .with_max_delay(Duration::from_secs(4))
                .with_max_times(4)
                .with_jitter(),
        )
        .when(|err| err.is_transient() && !EXITING.load(Ordering::SeqCst))
        .notify(|err, wait| tracing::warn!("refresh failed ({err}); retrying in {wait:?}"))
        .await;
    match result {
        // An earlier attempt may have spent the token without telling us: the login is not
        // known to be dead, and the old token stays (it may still be the live one).
        Err(RefreshError::Rejected(reason)) if ambiguous.load(Ordering::Relaxed) => {
            tracing::warn!(%reason, "refresh rejected after an unanswered attempt");
            Err(RefreshError::Transient(
                "an earlier attempt went unanswered and the retry was refused".to_owned(),
            ))
        }
        other => other,
    }
}

async fn refresh_once(http: &reqwest::Client, url: &str, refresh_token: &Secret) -> Attempt {
    let sent = http
        .post(url)
        .timeout(REFRESH_ATTEMPT_TIMEOUT)
        .json(&json!({
            "client_id": CLIENT_ID,
            "grant_type": "refresh_token",
            "refresh_token": refresh_token.expose(),
            "scope": "openid profile email",
        }))
        .send()
        .await;
    let response = match sent {
        Ok(response) => response,
        Err(e) if e.is_connect() => {
            return Attempt::NotSent(RefreshError::Transient(describe_reqwest_error(&e)));
        }
        Err(e) => return Attempt::Ambiguous(RefreshError::Transient(describe_reqwest_error(&e))),
    };
    let status = response.status();
    let html = is_html_page(&response);
    let body = match response.bytes().await {
        Ok(body) => body,
        Err(e) => {
            return Attempt::Ambiguous(RefreshError::Transient(format!(
                "the answer was cut off: {}",
                describe_reqwest_error(&e)
            )));
        }
    };
    let code = status.as_u16();
    if status.is_server_error() || code == 429 {
        return Attempt::Ambiguous(RefreshError::Transient(format!("HTTP {code}")));
    }
    if status.is_client_error() {
        return Attempt::Answered(Err(match rejection_reason(&body) {
            Some(reason) => RefreshError::Rejected(reason),
            None => RefreshError::Intercepted(intercepted(code, html)),
        }));
    }
    if !status.is_success() {
        return Attempt::Answered(Err(RefreshError::Intercepted(intercepted(code, html))));
    }
    let tokens = serde_json::from_slice::<RefreshResponse>(&body)
        .ok()
        .and_then(|parsed| {
            Some(FreshTokens {
                access_token: parsed.access_token.filter(|t| !t.is_empty())?,
                id_token: parsed.id_token.filter(|t| !t.is_empty()),
                refresh_token: parsed.refresh_token.filter(|t| !t.is_empty()),
            })
        });
    match tokens {
        Some(tokens) => Attempt::Answered(Ok(tokens)),
        // A captive portal's sign-in page: the request never reached the sign-in server.
        None if html => Attempt::Answered(Err(RefreshError::Intercepted(
            "an HTML page came back instead of tokens: a captive portal (a Wi-Fi sign-in page) \
             or a proxy is in the way"
                .to_owned(),
        ))),
        // A 2xx without readable tokens: whether the server rotated the token is unknown.
        None => Attempt::Ambiguous(RefreshError::Transient(
            "its answer held no readable tokens".to_owned(),
        )),
    }
}

/// Whether an answer is an HTML page (by its `Content-Type`). The sign-in server and the
/// ChatGPT backend answer JSON, errors included: an HTML page is a proxy's, a firewall's or a
/// captive portal's, in front of them.
pub(crate) fn is_html_page(response: &reqwest::Response) -> bool {
    response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.to_ascii_lowercase().contains("html"))
}

/// The sentence for an answer that did not come from the sign-in server's own error handling.
fn intercepted(status: u16, html: bool) -> String {
    if html {
        format!(
            "the sign-in server's address answered HTTP {status} with an HTML page, not the \
             server's own error: a proxy, firewall or captive portal may be in the way"
        )
    } else {
        format!("the sign-in server answered HTTP {status} without saying why")
    }
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

/// Why the sign-in server refused the refresh token, when its JSON answer carries one of the
/// error codes Codex knows (`{"error": {"code": …}}`, `{"error": "…"}` or `{"code": …}`).
/// Anything else (an HTML page, another code) is not the server saying the login is dead.
fn rejection_reason(body: &[u8]) -> Option<String> {
    let value = serde_json::from_slice::<serde_json::Value>(body).ok()?;
    let code = match value.get("error") {
        Some(error) => error.get("code").unwrap_or(error),
        None => value.get("code")?,
    }
    .as_str()?;
    Some(
        match code {
            "refresh_token_expired" => "its refresh token has expired",
            "refresh_token_reused" => {
                "its refresh token was already used (another program refreshed this login)"
            }
            "refresh_token_invalidated" => "its refresh token was revoked",
            "invalid_grant" => "its refresh token is no longer valid",
            _ => return None,
        }
        .to_owned(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounts::codex_auth::{CodexAuth, import_auth};
    use cs_tui_testkit::mock_backend::RefreshFault;
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
            AccountAuth::ApiKey { .. } | AccountAuth::Unknown(_) => panic!("not a ChatGPT login"),
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

    fn refresh_log(mock: &MockBackend) -> Vec<(String, u16)> {
        mock.requests()
            .into_iter()
            .filter_map(|r| Some((r.refresh_token?, r.status)))
            .collect()
    }

    #[tokio::test]
    async fn a_caller_giving_up_after_the_request_left_does_not_lose_the_rotated_token() {
        let mock = MockBackend::start().await;
        let (fake, rt) = mock.add_account("alice");
        let tmp = tempfile::tempdir().unwrap();
        let (store, account) = store_with(tmp.path(), &fake, -60, &rt);
        let http = reqwest::Client::new();
        let b = backend(&mock, None);
        mock.push_refresh_fault(RefreshFault::RotateThenDelay(Duration::from_millis(1500)));

        // The caller gives up the moment the server has rotated the token (the mock logs the
        // request before its delay), as `status --timeout` or a usage poll's timeout would.
        tokio::select! {
            result = ensure_fresh_with(&store, &http, &b, &account.id, RefreshPolicy::IfDue) => {
                panic!("answered before the server's delay: {result:?}")
            }
            _ = mock.wait_for_request(Duration::from_secs(30), "the refresh", |r| {
                r.path == "/oauth/token"
            }) => {}
        }
        assert!(wait_for_refreshes(Duration::from_secs(30)).await);
        let stored = store.load().unwrap().accounts[0].clone();
        let rotated = refresh_token_of(&stored);
        assert_ne!(
            rotated, rt,
            "the rotated refresh token must reach the store"
        );
        assert!(!needs_refresh(&stored, Utc::now()));

        // And it is the live one: the next refresh uses it.
        ensure_fresh_with(&store, &http, &b, &account.id, RefreshPolicy::Now)
            .await
            .unwrap();
        assert_eq!(refresh_log(&mock), vec![(rt, 200), (rotated, 200)]);
    }

    #[tokio::test]
    async fn ambiguous_answers_keep_the_account_and_its_token() {
        let mock = MockBackend::start().await;
        let (fake, rt) = mock.add_account("alice");
        let tmp = tempfile::tempdir().unwrap();
        let (store, account) = store_with(tmp.path(), &fake, -60, &rt);
        let http = reqwest::Client::new();
        let b = backend(&mock, None);

        // The server rotates, the answer is cut off; the retry with the old token is refused
        // as reused, which is our own doing, not a dead login.
        mock.push_refresh_fault(RefreshFault::RotateThenCutBody);
        let err = ensure_fresh_with(&store, &http, &b, &account.id, RefreshPolicy::IfDue)
            .await
            .unwrap_err();
        assert!(needs_login(&err).is_none(), "{err:#}");
        let shown = crate::errors::render_error(&err);
        assert!(shown.contains("still usable"), "{shown}");
        let stored = store.load().unwrap().accounts[0].clone();
        assert!(!stored.needs_login());
        assert_eq!(refresh_token_of(&stored), rt, "the old token is kept");
        let log = refresh_log(&mock);
        assert_eq!(log.len(), 2, "{log:?}");
        assert_eq!(log[0], (rt.clone(), 200));
        assert_eq!(log[1], (rt.clone(), 401));
    }

    #[tokio::test]
    async fn a_store_that_refuses_the_new_tokens_does_not_lose_them() {
        let mock = MockBackend::start().await;
        let (fake, rt) = mock.add_account("alice");
        let home = tempfile::tempdir().unwrap();
        let auth_path = auth_json_path(home.path());
        std::fs::write(&auth_path, fake.auth_json(-60, &rt).to_string()).unwrap();
        let (store, account) = store_with(&home.path().join("store"), &fake, -60, &rt);
        let http = reqwest::Client::new();
        let b = backend(&mock, Some(home.path()));
        // Every write keeps the previous store as accounts.json.bak; a directory there makes
        // every write fail (even for root).
        let blocker = store.dir().join("accounts.json.bak");
        std::fs::create_dir_all(blocker.join("in-the-way")).unwrap();

        let fresh = ensure_fresh_with(&store, &http, &b, &account.id, RefreshPolicy::IfDue)
            .await
            .unwrap();
        let rt1 = refresh_token_of(&fresh);
        assert_ne!(rt1, rt);
        assert_eq!(refresh_token_of(&store.load().unwrap().accounts[0]), rt);
        let written: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&auth_path).unwrap()).unwrap();
        assert_eq!(
            written["tokens"]["refresh_token"], rt1,
            "auth.json holds them"
        );
        // While the store refuses, the account is served from memory, not refreshed again
        // with the dead stored token; the end of the process says so.
        let again = ensure_fresh_with(&store, &http, &b, &account.id, RefreshPolicy::IfDue)
            .await
            .unwrap();
        assert_eq!(refresh_token_of(&again), rt1);
        assert!(!settle_refreshes(&store).await);
        // A refresh of the tokens only memory holds (auth.json gone too): memory keeps the
        // newest, and what they replace in the store.
        std::fs::remove_file(&auth_path).unwrap();
        let rt2 = refresh_token_of(
            &ensure_fresh_with(&store, &http, &b, &account.id, RefreshPolicy::Now)
                .await
                .unwrap(),
        );
        assert_eq!(refresh_token_of(&store.load().unwrap().accounts[0]), rt);

        // Once the store takes writes again, the next use stores them, then refreshes with them.
        std::fs::remove_dir_all(&blocker).unwrap();
        let stored = ensure_fresh_with(&store, &http, &b, &account.id, RefreshPolicy::IfDue)
            .await
            .unwrap();
        assert_eq!(refresh_token_of(&stored), rt2);
        assert_eq!(store.load().unwrap().accounts[0], stored);
        let next = ensure_fresh_with(&store, &http, &b, &account.id, RefreshPolicy::Now)
            .await
            .unwrap();
        assert_eq!(store.load().unwrap().accounts[0], next);
        assert_eq!(refresh_log(&mock), vec![(rt, 200), (rt1, 200), (rt2, 200)]);
        assert!(settle_refreshes(&store).await);
    }

    #[tokio::test]
    async fn only_the_sign_in_servers_own_no_marks_an_account() {
        let mock = MockBackend::start().await;
        let (fake, rt) = mock.add_account("alice");
        let tmp = tempfile::tempdir().unwrap();
        let (store, account) = store_with(tmp.path(), &fake, 3600, &rt);
        let http = reqwest::Client::new();
        let b = backend(&mock, None);

        for (fault, says) in [
            (RefreshFault::Html403, "HTTP 403 with an HTML page"),
            (RefreshFault::CaptivePortal, "captive portal"),
        ] {
            mock.push_refresh_fault(fault);
            let err = ensure_fresh_with(&store, &http, &b, &account.id, RefreshPolicy::Now)
                .await
                .unwrap_err();
            assert!(needs_login(&err).is_none(), "{err:#}");
            let shown = crate::errors::render_error(&err);
            assert!(shown.contains(says), "{shown}");
            assert!(!store.load().unwrap().accounts[0].needs_login());
        }
        // Gateway errors are retried; when they last, the account is still not marked.
        for _ in 0..5 {
            mock.push_refresh_fault(RefreshFault::ServerError(502));
        }
        let err = ensure_fresh_with(&store, &http, &b, &account.id, RefreshPolicy::Now)
            .await
            .unwrap_err();
        assert!(needs_login(&err).is_none(), "{err:#}");
        assert!(format!("{err:#}").contains("HTTP 502"), "{err:#}");
        let stored = store.load().unwrap().accounts[0].clone();
        assert!(!stored.needs_login());
        assert_eq!(refresh_token_of(&stored), rt);
        // None of them spent the token.
        ensure_fresh_with(&store, &http, &b, &account.id, RefreshPolicy::Now)
            .await
            .unwrap();
    }

    #[test]
    fn refresh_is_due_near_expiry() {
        let fake = FakeAccount::new("a");
        let mut account = Account::new(
            "1".into(),
            "a".into(),
            AccountAuth::ChatGpt {
                id_token: fake.id_token(3600).into(),
                access_token: fake.access_token(3600, 0).into(),
                refresh_token: "rt".into(),
            },
        );
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
    fn only_the_sign_in_servers_own_codes_are_rejections() {
        let reused = br#"{"error":{"code":"refresh_token_reused","message":"x"}}"#;
        assert!(rejection_reason(reused).unwrap().contains("already used"));
        let grant = br#"{"error":"invalid_grant","error_description":"x"}"#;
        assert!(rejection_reason(grant).unwrap().contains("no longer valid"));
        let expired = br#"{"code":"refresh_token_expired"}"#;
        assert!(rejection_reason(expired).unwrap().contains("expired"));
        for not_a_no in [
            &b"<html><body>Access denied</body></html>"[..],
            br#"{"error":{"code":"rate_limited"}}"#,
            br#"{"error":{"message":"forbidden"}}"#,
            br#"{"detail":"Forbidden"}"#,
            b"",
        ] {
            assert_eq!(rejection_reason(not_a_no), None, "{not_a_no:?}");
        }
    }

    #[tokio::test]
    async fn an_unknown_sign_in_kind_is_never_refreshed_nor_read_for_usage() {
        let mock = MockBackend::start().await;
        let (fake, rt) = mock.add_account("alice");
        let tmp = tempfile::tempdir().unwrap();
        // Expired tokens: anything that refreshes at all would refresh now.
        let (store, _) = store_with(tmp.path(), &fake, -60, &rt);
        store
            .update(|file| {
                let mut future = file.accounts[0].clone();
                future.id = "f1".into();
                future.name = "future".into();
                future.auth = serde_json::from_value(serde_json::json!({
                    "type": "device_code",
                    "refresh_token": rt,
                    "access_token": "SECRET-ACCESS",
                }))
                .unwrap();
                file.accounts.push(future);
                Ok(())
            })
            .unwrap();
        let before = std::fs::read(store.accounts_path()).unwrap();
        let http = reqwest::Client::new();
        let b = backend(&mock, None);
        for policy in [
            RefreshPolicy::IfDue,
            RefreshPolicy::AfterUnauthorized,
            RefreshPolicy::Now,
        ] {
            let err = ensure_fresh_with(&store, &http, &b, &"f1".into(), policy)
                .await
                .unwrap_err();
            let err = format!("{err:?}");
            assert!(
                err.contains("`device_code`") && err.contains("newer cs-tui"),
                "{err}"
            );
            assert!(!err.contains("SECRET") && !err.contains(&rt), "{err}");
        }
        let err = crate::accounts::fetch_usage_with(&store, &http, &b, &"f1".into())
            .await
            .unwrap_err();
        assert!(format!("{err:#}").contains("newer cs-tui"), "{err:#}");
        assert!(!needs_refresh(
            store.load().unwrap().resolve("future").unwrap(),
            Utc::now()
        ));
        assert!(mock.requests().is_empty(), "{:?}", mock.requests());
        assert_eq!(std::fs::read(store.accounts_path()).unwrap(), before);
    }
}
