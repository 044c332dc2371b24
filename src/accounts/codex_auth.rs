//! Codex's `auth.json` (docs/protocol.md §5): reading a login, importing it into the store, and
//! writing refreshed tokens back when it holds the same account.

use std::fs;
use std::io::{ErrorKind, Write as _};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use color_eyre::eyre::{Report, Result, WrapErr, eyre};
use serde::Deserialize;
use serde_json::Value;

use super::claims;
use super::store::{
    Account, AccountAuth, AccountStatus, AccountsFile, Store, new_account_id, validate_name,
};
use crate::errors::with_hint;
use crate::secret::Secret;

/// The file Codex keeps its login in, inside `CODEX_HOME`.
pub(crate) const AUTH_FILE: &str = "auth.json";

/// A login read from an `auth.json`.
#[derive(Clone, Debug)]
pub(crate) struct CodexAuth {
    pub credentials: Credentials,
    pub last_refresh: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug)]
pub(crate) enum Credentials {
    ChatGpt {
        id_token: Secret,
        access_token: Secret,
        refresh_token: Secret,
        /// `tokens.account_id`, else the id token's `chatgpt_account_id`.
        chatgpt_account_id: Option<String>,
        email: Option<String>,
        plan: Option<String>,
        user_id: Option<String>,
    },
    ApiKey(Secret),
}

#[derive(Deserialize)]
struct AuthJson {
    #[serde(default)]
    auth_mode: Option<String>,
    #[serde(default, rename = "OPENAI_API_KEY")]
    openai_api_key: Option<Secret>,
    #[serde(default)]
    tokens: Option<TokensJson>,
    #[serde(default)]
    last_refresh: Option<Value>,
}

#[derive(Deserialize)]
struct TokensJson {
    id_token: Secret,
    access_token: Secret,
    refresh_token: Secret,
    #[serde(default)]
    account_id: Option<String>,
}

/// A serde_json error as a sentence that never quotes the input (which holds tokens).
pub(crate) fn describe_json_error(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    match e.classify() {
        Category::Eof => "it ends in the middle (truncated)".to_owned(),
        Category::Syntax => format!("not valid JSON at line {}, column {}", e.line(), e.column()),
        Category::Data | Category::Io => {
            let message = e.to_string();
            if message.contains('"') {
                format!("a value has the wrong type at line {}", e.line())
            } else {
                message
            }
        }
    }
}

/// `$CODEX_HOME/auth.json`.
pub(crate) fn auth_json_path(codex_home: &Path) -> PathBuf {
    codex_home.join(AUTH_FILE)
}

/// Reads a Codex login from `path`; `None` when the file does not exist.
pub(crate) fn read_auth_json(path: &Path) -> Result<Option<CodexAuth>> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(Report::new(e).wrap_err(format!("reading {}", path.display())));
        }
    };
    parse_auth_json(&bytes).map(Some).map_err(|why| {
        with_hint(
            eyre!("{} is not a Codex login file: {why}", path.display()),
            "log in with `codex login` (or `cs-tui accounts add NAME`) to write a fresh one",
        )
    })
}

pub(crate) fn parse_auth_json(bytes: &[u8]) -> std::result::Result<CodexAuth, String> {
    let raw: AuthJson = serde_json::from_slice(bytes).map_err(|e| describe_json_error(&e))?;
    let last_refresh = raw.last_refresh.as_ref().and_then(|v| match v {
        Value::String(s) => DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|t| t.with_timezone(&Utc)),
        _ => None,
    });
    let api_key = raw.openai_api_key.filter(|k| !k.is_empty());
    let wants_api_key = raw.auth_mode.as_deref() == Some("apikey");
    let credentials = match (raw.tokens, api_key) {
        (Some(tokens), _) if !wants_api_key => chatgpt_credentials(tokens)?,
        (_, Some(key)) => Credentials::ApiKey(key),
        (Some(_), None) => return Err("its auth_mode is apikey but it holds no API key".into()),
        (None, None) => return Err("it holds neither ChatGPT tokens nor an API key".into()),
    };
    Ok(CodexAuth {
        credentials,
        last_refresh,
    })
}

fn chatgpt_credentials(tokens: TokensJson) -> std::result::Result<Credentials, String> {
    if tokens.refresh_token.is_empty() || tokens.access_token.is_empty() {
        return Err("its ChatGPT tokens are empty".into());
    }
    let id = claims::parse(tokens.id_token.expose()).map_err(|e| format!("its id_token {e}"))?;
    let access = claims::parse(tokens.access_token.expose()).ok();
    let access_claim = |f: fn(&claims::TokenClaims) -> Option<String>| access.as_ref().and_then(f);
    Ok(Credentials::ChatGpt {
        chatgpt_account_id: tokens
            .account_id
            .filter(|id| !id.is_empty())
            .or_else(|| id.chatgpt_account_id.clone())
            .or_else(|| access_claim(|c| c.chatgpt_account_id.clone())),
        email: id.email.or_else(|| access_claim(|c| c.email.clone())),
        plan: id.plan.or_else(|| access_claim(|c| c.plan.clone())),
        user_id: id.user_id.or_else(|| access_claim(|c| c.user_id.clone())),
        id_token: tokens.id_token,
        access_token: tokens.access_token,
        refresh_token: tokens.refresh_token,
    })
}

impl CodexAuth {
    /// A readable label for messages: the e-mail, or the kind of login.
    pub(crate) fn describe(&self) -> String {
        match &self.credentials {
            Credentials::ChatGpt { email, .. } => email
                .clone()
                .unwrap_or_else(|| "a ChatGPT account".to_owned()),
            Credentials::ApiKey(_) => "an API key".to_owned(),
        }
    }

    /// Whether `account` is the account this login is for.
    pub(crate) fn is_for(&self, account: &Account) -> bool {
        match (&self.credentials, &account.auth) {
            (
                Credentials::ChatGpt {
                    chatgpt_account_id: Some(incoming),
                    user_id,
                    ..
                },
                AccountAuth::ChatGpt { .. },
            ) => {
                account.chatgpt_account_id.as_deref() == Some(incoming.as_str())
                    // Two seats of one workspace share the account id; the user tells them apart.
                    && match (user_id, &account.user_id) {
                        (Some(a), Some(b)) => a == b,
                        _ => true,
                    }
            }
            (Credentials::ApiKey(incoming), AccountAuth::ApiKey { key }) => incoming == key,
            // A kind a newer cs-tui wrote is never the account a login is for: no import
            // replaces it, and no refreshed token is written for it to an `auth.json`.
            (_, AccountAuth::Unknown(_))
            | (Credentials::ChatGpt { .. }, _)
            | (Credentials::ApiKey(_), _) => false,
        }
    }

    /// Whether this login's tokens should replace `account`'s: they differ and are newer (a
    /// later access-token expiry, else a later refresh time), or the stored ones are dead.
    pub(crate) fn is_newer_than(&self, account: &Account) -> bool {
        match (&self.credentials, &account.auth) {
            (
                Credentials::ChatGpt {
                    access_token,
                    refresh_token,
                    ..
                },
                AccountAuth::ChatGpt {
                    access_token: stored_access,
                    refresh_token: stored_refresh,
                    ..
                },
            ) => {
                if access_token == stored_access && refresh_token == stored_refresh {
                    return false;
                }
                if account.needs_login() && refresh_token != stored_refresh {
                    return true;
                }
                let incoming_exp = claims::parse(access_token.expose())
                    .ok()
                    .and_then(|c| c.expires_at);
                let stored_exp = account.access_claims().and_then(|c| c.expires_at);
                match (incoming_exp, stored_exp) {
                    (Some(incoming), Some(stored)) if incoming != stored => incoming > stored,
                    _ => match (self.last_refresh, account.last_refreshed_at) {
                        (Some(incoming), Some(stored)) => incoming > stored,
                        (Some(_), None) => true,
                        _ => false,
                    },
                }
            }
            (Credentials::ApiKey(incoming), AccountAuth::ApiKey { key }) => incoming != key,
            (_, AccountAuth::Unknown(_))
            | (Credentials::ChatGpt { .. }, _)
            | (Credentials::ApiKey(_), _) => false,
        }
    }

    fn default_name(&self) -> String {
        match &self.credentials {
            Credentials::ChatGpt { email, .. } => email
                .as_deref()
                .and_then(|e| e.split('@').next())
                .map(|local| {
                    local
                        .chars()
                        .filter(|c| !c.is_whitespace() && !c.is_control())
                        .collect::<String>()
                        .trim_start_matches('-')
                        .to_owned()
                })
                .filter(|name| validate_name(name).is_ok())
                .unwrap_or_else(|| "chatgpt".to_owned()),
            Credentials::ApiKey(_) => "api-key".to_owned(),
        }
    }

    /// Copies this login's tokens and what they say about the account into `account`.
    pub(crate) fn apply_to(&self, account: &mut Account) {
        match &self.credentials {
            Credentials::ChatGpt {
                id_token,
                access_token,
                refresh_token,
                chatgpt_account_id,
                email,
                plan,
                user_id,
            } => {
                account.auth = AccountAuth::ChatGpt {
                    id_token: id_token.clone(),
                    access_token: access_token.clone(),
                    refresh_token: refresh_token.clone(),
                };
                account.chatgpt_account_id = chatgpt_account_id
                    .clone()
                    .or(account.chatgpt_account_id.take());
                account.email = email.clone().or(account.email.take());
                account.plan = plan.clone().or(account.plan.take());
                account.user_id = user_id.clone().or(account.user_id.take());
            }
            Credentials::ApiKey(key) => {
                account.auth = AccountAuth::ApiKey { key: key.clone() };
            }
        }
        if let Some(at) = self.last_refresh {
            account.last_refreshed_at = Some(at);
        }
        account.status = AccountStatus::Ok;
    }
}

/// What an import did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImportOutcome {
    /// A new account was stored.
    Added,
    /// The account was stored already; its tokens (or name) were updated.
    Updated,
    /// The account was stored already with the same or newer tokens.
    Unchanged,
}

#[derive(Clone, Debug)]
pub struct Imported {
    pub account: Account,
    pub outcome: ImportOutcome,
}

/// Stores the login `auth`: updates the account it belongs to, or adds it (named `name`, else
/// after its e-mail). `name` also renames an account that is stored already. The first
/// account stored becomes the active one.
pub(crate) fn import_auth(store: &Store, auth: &CodexAuth, name: Option<&str>) -> Result<Imported> {
    if let Some(name) = name {
        validate_name(name)?;
    }
    store.update(|file| import_into(file, auth, name))
}

/// Reads `path` and imports it (see [`import_auth`]).
pub fn import_auth_file(store: &Store, path: &Path, name: Option<&str>) -> Result<Imported> {
    let auth = read_auth_json(path)?.ok_or_else(|| {
        with_hint(
            eyre!("there is no Codex login at {}", path.display()),
            "log in with `codex login` first, pass another file with --file, or use `cs-tui accounts add NAME`",
        )
    })?;
    import_auth(store, &auth, name)
}

fn import_into(file: &mut AccountsFile, auth: &CodexAuth, name: Option<&str>) -> Result<Imported> {
    let existing = file.accounts.iter().position(|a| auth.is_for(a));
    let taken_by_other = |file: &AccountsFile, name: &str, except: Option<usize>| {
        file.accounts
            .iter()
            .enumerate()
            .find(|(i, a)| a.name == name && Some(*i) != except)
            .map(|(_, a)| a.clone())
    };
    if let Some(name) = name
        && let Some(other) = taken_by_other(file, name, existing)
    {
        return Err(with_hint(
            eyre!(
                "the name {name:?} belongs to another account ({}), not to {}",
                other.email.as_deref().unwrap_or(other.short_id()),
                auth.describe()
            ),
            "choose another name, or log in with that account's own credentials",
        ));
    }
    let outcome;
    let index = match existing {
        Some(index) => {
            let account = &mut file.accounts[index];
            let mut changed = false;
            if let Some(name) = name
                && account.name != name
            {
                account.name = name.to_owned();
                changed = true;
            }
            if auth.is_newer_than(account) {
                auth.apply_to(account);
                changed = true;
            }
            outcome = if changed {
                ImportOutcome::Updated
            } else {
                ImportOutcome::Unchanged
            };
            index
        }
        None => {
            let name = match name {
                Some(name) => name.to_owned(),
                None => file.unique_name(&auth.default_name()),
            };
            let mut account = Account::new(
                new_account_id(),
                name,
                AccountAuth::ApiKey {
                    key: Secret::default(),
                },
            );
            auth.apply_to(&mut account);
            file.accounts.push(account);
            outcome = ImportOutcome::Added;
            file.accounts.len() - 1
        }
    };
    if file.active_account().is_none() {
        file.active = Some(file.accounts[index].id.clone());
    }
    Ok(Imported {
        account: file.accounts[index].clone(),
        outcome,
    })
}

/// On first run (no store file yet) imports `$CODEX_HOME/auth.json`, if there is one.
///
/// Only a store that was never written counts: one the user emptied with `accounts remove`
/// stays empty, rather than having the login come back on every run.
pub(crate) fn import_codex_auth_if_empty(store: &Store) -> Result<Option<Account>> {
    if store.exists() {
        return Ok(None);
    }
    let path = auth_json_path(&crate::paths::codex_home()?);
    let Some(auth) = read_auth_json(&path)? else {
        return Ok(None);
    };
    store.update_with_presence(|file, existed| {
        // Checked again under the lock: another process may have got here first.
        if existed || !file.accounts.is_empty() {
            return Ok(None);
        }
        import_into(file, &auth, None).map(|imported| Some(imported.account))
    })
}

/// When the `auth.json` in `codex_home` holds `account`, writes its current tokens there, so
/// plain `codex` keeps working after cs-tui rotated the refresh token. Other fields of the
/// file are kept. Returns whether the file was written.
pub(crate) fn write_tokens_to_codex_auth(codex_home: &Path, account: &Account) -> Result<bool> {
    let AccountAuth::ChatGpt {
        id_token,
        access_token,
        refresh_token,
    } = &account.auth
    else {
        return Ok(false);
    };
    let path = auth_json_path(codex_home);
    let Some(current) = read_auth_json(&path).ok().flatten() else {
        return Ok(false);
    };
    if !current.is_for(account) {
        return Ok(false);
    }
    if let Credentials::ChatGpt {
        access_token: a,
        refresh_token: r,
        ..
    } = &current.credentials
        && a == access_token
        && r == refresh_token
    {
        return Ok(false);
    }
    let context = || format!("writing the refreshed tokens to {}", path.display());
    let mut json: Value =
        serde_json::from_slice(&fs::read(&path).wrap_err_with(context)?).wrap_err_with(context)?;
    let tokens = json
        .as_object_mut()
        .and_then(|o| o.get_mut("tokens"))
        .and_then(Value::as_object_mut)
        .ok_or_else(|| eyre!("it has no tokens object"))
        .wrap_err_with(context)?;
    tokens.insert("id_token".into(), id_token.expose().into());
    tokens.insert("access_token".into(), access_token.expose().into());
    tokens.insert("refresh_token".into(), refresh_token.expose().into());
    if let Some(at) = account.last_refreshed_at {
        json["last_refresh"] =
            Value::String(at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true));
    }
    let mut bytes = serde_json::to_vec_pretty(&json).wrap_err_with(context)?;
    bytes.push(b'\n');
    write_private_file(&path, &bytes).wrap_err_with(context)?;
    Ok(true)
}

/// Replaces `path` atomically with a 0600 file holding `bytes`.
fn write_private_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".auth.json.")
        .suffix(".tmp")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use cs_tui_testkit::FakeAccount;
    use std::os::unix::fs::PermissionsExt as _;

    fn auth_from(json: &Value) -> CodexAuth {
        parse_auth_json(json.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn reads_chatgpt_and_api_key_logins() {
        let fake = FakeAccount::new("alice").with_plan("team");
        let auth = auth_from(&fake.auth_json(3600, "rt-1"));
        let Credentials::ChatGpt {
            chatgpt_account_id,
            email,
            plan,
            user_id,
            refresh_token,
            ..
        } = &auth.credentials
        else {
            panic!("not chatgpt: {auth:?}");
        };
        assert_eq!(chatgpt_account_id.as_deref(), Some("acct-alice"));
        assert_eq!(email.as_deref(), Some("alice@example.com"));
        assert_eq!(plan.as_deref(), Some("team"));
        assert_eq!(user_id.as_deref(), Some("user-alice"));
        assert_eq!(refresh_token.expose(), "rt-1");
        assert!(auth.last_refresh.is_some());
        assert_eq!(auth.default_name(), "alice");

        let key = auth_from(&serde_json::json!({"auth_mode": "apikey", "OPENAI_API_KEY": "sk-x"}));
        assert!(matches!(key.credentials, Credentials::ApiKey(ref k) if k.expose() == "sk-x"));
        // Older files have no auth_mode.
        let key = auth_from(&serde_json::json!({"OPENAI_API_KEY": "sk-x", "tokens": null}));
        assert!(matches!(key.credentials, Credentials::ApiKey(_)));
        assert_eq!(key.default_name(), "api-key");
    }

    #[test]
    fn bad_login_files_say_why_without_quoting_them() {
        let cases = [
            (
                r#"{"tokens": {"id_token": "SECRET-ID", "access_token": "SECRET-A", "refresh_token": "SECRET-R"}}"#,
                "id_token",
            ),
            (r#"{"OPENAI_API_KEY": null}"#, "neither"),
            (r#"{"tokens": 7}"#, "invalid type"),
            (r#"{"tokens": {"id_token": "SECRET"#, "truncated"),
            (
                r#"{"OPENAI_API_KEY": 5, "x": "SECRET-KEY"}"#,
                "invalid type",
            ),
            (r#"{"tokens": "SECRET-TOKEN"}"#, "wrong type"),
        ];
        for (json, needle) in cases {
            let why = parse_auth_json(json.as_bytes()).unwrap_err();
            assert!(why.contains(needle), "{json}: {why}");
            assert!(!why.contains("SECRET"), "{json}: {why}");
        }
    }

    #[test]
    fn import_adds_then_updates_instead_of_duplicating() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path());
        let fake = FakeAccount::new("alice");
        // One token pair, imported twice: building it twice could straddle a second boundary
        // and give two expiries.
        let original = auth_from(&fake.auth_json(600, "rt-1"));
        let first = import_auth(&store, &original, None).unwrap();
        assert_eq!(first.outcome, ImportOutcome::Added);
        assert_eq!(first.account.name, "alice");
        assert_eq!(
            store.load().unwrap().active.as_deref(),
            Some(first.account.id.as_str())
        );

        let again = import_auth(&store, &original, None).unwrap();
        assert_eq!(again.outcome, ImportOutcome::Unchanged);

        // Newer tokens (a later expiry) replace the stored ones, and a name renames.
        let newer = auth_from(&fake.auth_json(7200, "rt-2"));
        let updated = import_auth(&store, &newer, Some("work")).unwrap();
        assert_eq!(updated.outcome, ImportOutcome::Updated);
        assert_eq!(updated.account.id, first.account.id);
        assert_eq!(updated.account.name, "work");
        let file = store.load().unwrap();
        assert_eq!(file.accounts.len(), 1);
        let AccountAuth::ChatGpt { refresh_token, .. } = &file.accounts[0].auth else {
            panic!()
        };
        assert_eq!(refresh_token.expose(), "rt-2");

        // Older tokens never overwrite newer ones: the old refresh token is dead.
        let stale = import_auth(&store, &auth_from(&fake.auth_json(60, "rt-1")), None).unwrap();
        assert_eq!(stale.outcome, ImportOutcome::Unchanged);

        // Another account with the same e-mail local part gets a distinct name.
        let mut other = FakeAccount::new("alice");
        other.chatgpt_account_id = "acct-alice-team".into();
        let team = import_auth(&store, &auth_from(&other.auth_json(600, "rt-t")), None).unwrap();
        assert_eq!(team.outcome, ImportOutcome::Added);
        assert_eq!(team.account.name, "alice");
        let clash = import_auth(
            &store,
            &auth_from(&other.auth_json(900, "rt-t2")),
            Some("work"),
        );
        assert!(crate::errors::render_error(&clash.unwrap_err()).contains("another account"));
    }

    #[test]
    fn first_run_import_happens_once() {
        // Uses the same logic as import_codex_auth_if_empty without touching CODEX_HOME.
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path());
        let auth = auth_from(&FakeAccount::new("bob").auth_json(600, "rt"));
        let run = || {
            store.update_with_presence(|file, existed| {
                if existed || !file.accounts.is_empty() {
                    return Ok(None);
                }
                import_into(file, &auth, None).map(|i| Some(i.account))
            })
        };
        assert!(run().unwrap().is_some());
        store
            .update(|f| {
                f.accounts.clear();
                Ok(())
            })
            .unwrap();
        assert!(run().unwrap().is_none(), "an emptied store stays empty");
    }

    #[test]
    fn writes_tokens_only_into_the_same_accounts_auth_json() {
        let home = tempfile::tempdir().unwrap();
        let path = auth_json_path(home.path());
        let alice = FakeAccount::new("alice");
        let mut json = alice.auth_json(60, "rt-old");
        json["custom"] = "kept".into();
        fs::write(&path, json.to_string()).unwrap();

        let store = Store::open(home.path().join("store"));
        let mut account = import_auth(&store, &auth_from(&json), None)
            .unwrap()
            .account;
        account.auth = AccountAuth::ChatGpt {
            id_token: alice.id_token(3600).into(),
            access_token: alice.access_token(3600, 9).into(),
            refresh_token: "rt-new".into(),
        };
        account.last_refreshed_at = Some(Utc::now());
        assert!(write_tokens_to_codex_auth(home.path(), &account).unwrap());
        let written: Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        assert_eq!(written["tokens"]["refresh_token"], "rt-new");
        assert_eq!(written["tokens"]["account_id"], "acct-alice");
        assert_eq!(written["custom"], "kept");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(
            !write_tokens_to_codex_auth(home.path(), &account).unwrap(),
            "no change"
        );

        let bob = FakeAccount::new("bob");
        fs::write(&path, bob.auth_json(60, "rt-bob").to_string()).unwrap();
        assert!(!write_tokens_to_codex_auth(home.path(), &account).unwrap());
        let untouched: Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        assert_eq!(untouched["tokens"]["refresh_token"], "rt-bob");
    }
}
