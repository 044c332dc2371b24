//! The account store: `accounts.json` in the store directory, changed only by
//! read-modify-write under a cross-process lock, written atomically, with the previous version
//! kept as `accounts.json.bak`.
//!
//! The lock is an OS advisory lock (`flock`) on a separate file, `accounts.lock`, which is never
//! renamed or deleted: the kernel drops the lock when its holder exits, however it exits, so a
//! crashed process cannot leave the store stuck. The lock cannot live on `accounts.json` itself,
//! because every write replaces that file with a new inode.

use std::fs::{self, File};
use std::io::{ErrorKind, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use color_eyre::eyre::{Report, Result, WrapErr, eyre};
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::account_id::AccountId;
use crate::errors::with_hint;
use crate::secret::Secret;

/// The store file.
pub(crate) const ACCOUNTS_FILE: &str = "accounts.json";
/// The previous version of the store file, replaced on every write.
pub(crate) const BACKUP_FILE: &str = "accounts.json.bak";
/// The file the store lock is taken on.
const LOCK_FILE: &str = "accounts.lock";
/// Per-account locks held while a refresh is in flight (see `tokens`).
const REFRESH_LOCK_DIR: &str = "locks";
/// Marks a JSON file as ours, so that a foreign file put in our place is never overwritten.
const FORMAT_MARKER: &str = "cs-tui-accounts";
/// The store format this build reads and writes.
pub(crate) const CURRENT_VERSION: u32 = 1;
/// The shortest id prefix accepted in place of a name: a single typed character selecting an
/// account to remove by accident is worse than typing four.
pub(crate) const MIN_ID_PREFIX: usize = 4;

/// A handle on the store directory. Opening it does no I/O.
#[derive(Clone, Debug)]
pub struct Store {
    dir: PathBuf,
}

/// The whole store.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AccountsFile {
    pub version: u32,
    /// The id of the account the next session starts on.
    #[serde(default)]
    pub active: Option<AccountId>,
    #[serde(default)]
    pub accounts: Vec<Account>,
    /// Fields a newer cs-tui wrote: kept, and written back unchanged.
    #[serde(flatten)]
    pub unknown: UnknownFields,
}

/// Fields of the store this version does not know, kept so that writing the store back does
/// not drop what a newer version put there. `Debug` shows only their names: one could hold a
/// token.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UnknownFields(pub serde_json::Map<String, serde_json::Value>);

impl std::fmt::Debug for UnknownFields {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

/// One stored account. `Debug` never shows a token (they are [`Secret`]s).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Account {
    /// cs-tui's own id (32 hex digits); never changes.
    pub id: AccountId,
    /// The user's name for it; unique in the store.
    pub name: String,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub plan: Option<String>,
    /// The `chatgpt-account-id` the backend wants (a workspace for team plans).
    #[serde(default)]
    pub chatgpt_account_id: Option<String>,
    /// The ChatGPT user: with the account id it tells two seats of one workspace apart.
    #[serde(default)]
    pub user_id: Option<String>,
    pub auth: AccountAuth,
    pub created_at: DateTime<Utc>,
    #[serde(default)]
    pub last_used_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub last_refreshed_at: Option<DateTime<Utc>>,
    /// Whether automatic switching may pick this account.
    #[serde(default = "enabled_by_default")]
    pub enabled: bool,
    #[serde(default)]
    pub status: AccountStatus,
    /// Fields a newer cs-tui wrote: kept, and written back unchanged.
    #[serde(flatten)]
    pub unknown: UnknownFields,
}

fn enabled_by_default() -> bool {
    true
}

/// How an account signs in.
#[derive(Clone, Debug, PartialEq)]
pub enum AccountAuth {
    ChatGpt {
        id_token: Secret,
        access_token: Secret,
        refresh_token: Secret,
    },
    ApiKey {
        key: Secret,
    },
    /// A kind a newer cs-tui wrote (`{"type": "device_code", …}`): kept exactly as written and
    /// written back unchanged, but never used (see [`Account::unsupported_sign_in`]).
    Unknown(UnknownAuth),
}

/// A sign-in kind this version does not know: its `type` and the whole object as written.
/// `Debug` shows the kind and the field names only: every value may be a secret.
#[derive(Clone, PartialEq)]
pub struct UnknownAuth {
    kind: String,
    fields: UnknownFields,
}

impl UnknownAuth {
    /// The `type` as written, e.g. `device_code`.
    pub fn kind(&self) -> &str {
        &self.kind
    }
}

impl std::fmt::Debug for UnknownAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnknownAuth")
            .field("kind", &self.kind)
            .field("fields", &self.fields)
            .finish()
    }
}

/// How the kinds this version knows are stored: `{"type": "chatgpt", "id_token": …}`,
/// `{"type": "api_key", "key": …}`.
#[derive(Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum KnownAuth {
    #[serde(rename = "chatgpt")]
    ChatGpt {
        id_token: Secret,
        access_token: Secret,
        refresh_token: Secret,
    },
    ApiKey {
        key: Secret,
    },
}

/// The `type`s [`KnownAuth`] reads: an entry of one of them that does not parse is damage,
/// not a newer kind.
const KNOWN_AUTH_TYPES: [&str; 2] = ["chatgpt", "api_key"];

impl Serialize for AccountAuth {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::ChatGpt {
                id_token,
                access_token,
                refresh_token,
            } => KnownAuth::ChatGpt {
                id_token: id_token.clone(),
                access_token: access_token.clone(),
                refresh_token: refresh_token.clone(),
            }
            .serialize(serializer),
            Self::ApiKey { key } => KnownAuth::ApiKey { key: key.clone() }.serialize(serializer),
            Self::Unknown(unknown) => unknown.fields.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for AccountAuth {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let fields = serde_json::Map::<String, serde_json::Value>::deserialize(deserializer)?;
        let kind = match fields.get("type") {
            Some(serde_json::Value::String(kind)) => kind.clone(),
            Some(_) => return Err(serde::de::Error::custom("the auth `type` is not a string")),
            None => return Err(serde::de::Error::missing_field("type")),
        };
        if KNOWN_AUTH_TYPES.contains(&kind.as_str()) {
            // The error names the field at fault, never a value.
            return match serde_json::from_value(serde_json::Value::Object(fields)) {
                Ok(KnownAuth::ChatGpt {
                    id_token,
                    access_token,
                    refresh_token,
                }) => Ok(Self::ChatGpt {
                    id_token,
                    access_token,
                    refresh_token,
                }),
                Ok(KnownAuth::ApiKey { key }) => Ok(Self::ApiKey { key }),
                Err(err) => Err(serde::de::Error::custom(err)),
            };
        }
        Ok(Self::Unknown(UnknownAuth {
            kind,
            fields: UnknownFields(fields),
        }))
    }
}

/// Whether the stored tokens still work.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum AccountStatus {
    #[default]
    Ok,
    /// The refresh token was rejected; only a new login helps.
    NeedsLogin { reason: String },
    /// A state a newer cs-tui wrote; kept as written (the account is used as if `ok`).
    /// `Debug` shows only the names of its fields, as for [`UnknownFields`].
    Unknown {
        state: String,
        fields: UnknownFields,
    },
}

/// How [`AccountStatus`] is stored: `{"state": "ok"}`, `{"state": "needs_login", "reason": …}`.
#[derive(Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
enum KnownStatus {
    Ok,
    NeedsLogin { reason: String },
}

impl Serialize for AccountStatus {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Ok => KnownStatus::Ok.serialize(serializer),
            Self::NeedsLogin { reason } => KnownStatus::NeedsLogin {
                reason: reason.clone(),
            }
            .serialize(serializer),
            Self::Unknown { fields, .. } => fields.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for AccountStatus {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let fields = serde_json::Map::<String, serde_json::Value>::deserialize(deserializer)?;
        let state = match fields.get("state") {
            Some(serde_json::Value::String(state)) => state.clone(),
            _ => return Err(serde::de::Error::missing_field("state")),
        };
        if matches!(state.as_str(), "ok" | "needs_login") {
            return match serde_json::from_value(serde_json::Value::Object(fields)) {
                Ok(KnownStatus::Ok) => Ok(Self::Ok),
                Ok(KnownStatus::NeedsLogin { reason }) => Ok(Self::NeedsLogin { reason }),
                Err(err) => Err(serde::de::Error::custom(err)),
            };
        }
        Ok(Self::Unknown {
            state,
            fields: UnknownFields(fields),
        })
    }
}

impl Account {
    /// A new account signing in with `auth`: enabled, created now, never used or refreshed,
    /// nothing yet known of its e-mail, plan or workspace.
    pub(crate) fn new(id: AccountId, name: String, auth: AccountAuth) -> Self {
        Self {
            id,
            name,
            email: None,
            plan: None,
            chatgpt_account_id: None,
            user_id: None,
            auth,
            created_at: Utc::now(),
            last_used_at: None,
            last_refreshed_at: None,
            enabled: true,
            status: AccountStatus::Ok,
            unknown: UnknownFields::default(),
        }
    }

    pub fn is_chatgpt(&self) -> bool {
        matches!(self.auth, AccountAuth::ChatGpt { .. })
    }

    /// The sign-in kind as stored: `chatgpt`, `api_key`, or a newer cs-tui's.
    pub fn sign_in_kind(&self) -> &str {
        match &self.auth {
            AccountAuth::ChatGpt { .. } => "chatgpt",
            AccountAuth::ApiKey { .. } => "api_key",
            AccountAuth::Unknown(unknown) => unknown.kind(),
        }
    }

    /// The sign-in kind, when a newer cs-tui wrote one this version does not know. Such an
    /// account is listed, kept and can be removed, but nothing uses it: it is never switched
    /// to, refreshed, read for usage, written to a Codex `auth.json` nor imported over.
    pub fn unsupported_sign_in(&self) -> Option<&str> {
        match &self.auth {
            AccountAuth::Unknown(unknown) => Some(unknown.kind()),
            AccountAuth::ChatGpt { .. } | AccountAuth::ApiKey { .. } => None,
        }
    }

    /// Fails, naming the kind, when the account signs in in a way this version cannot use.
    pub fn ensure_supported(&self) -> Result<()> {
        match self.unsupported_sign_in() {
            Some(kind) => Err(unsupported_sign_in_error(&self.name, kind)),
            None => Ok(()),
        }
    }

    pub fn needs_login(&self) -> bool {
        matches!(self.status, AccountStatus::NeedsLogin { .. })
    }

    /// The first 8 digits of the id, enough to tell accounts apart in a table.
    pub fn short_id(&self) -> &str {
        // (Hand-edited ids need not be ASCII: cut at a character boundary.)
        let end = self
            .id
            .char_indices()
            .nth(8)
            .map_or(self.id.len(), |(i, _)| i);
        &self.id[..end]
    }

    /// Claims of the access token, if it is a readable JWT.
    pub fn access_claims(&self) -> Option<super::claims::TokenClaims> {
        match &self.auth {
            AccountAuth::ChatGpt { access_token, .. } => {
                super::claims::parse(access_token.expose()).ok()
            }
            AccountAuth::ApiKey { .. } | AccountAuth::Unknown(_) => None,
        }
    }

    /// Claims of the id token, if it is a readable JWT.
    pub fn id_claims(&self) -> Option<super::claims::TokenClaims> {
        match &self.auth {
            AccountAuth::ChatGpt { id_token, .. } => super::claims::parse(id_token.expose()).ok(),
            AccountAuth::ApiKey { .. } | AccountAuth::Unknown(_) => None,
        }
    }
}

impl Default for AccountsFile {
    fn default() -> Self {
        Self {
            version: CURRENT_VERSION,
            active: None,
            accounts: Vec::new(),
            unknown: UnknownFields::default(),
        }
    }
}

impl AccountsFile {
    pub fn get(&self, id: &AccountId) -> Option<&Account> {
        self.accounts.iter().find(|a| a.id == *id)
    }

    pub fn get_mut(&mut self, id: &AccountId) -> Option<&mut Account> {
        self.accounts.iter_mut().find(|a| a.id == *id)
    }

    /// The account the next session starts on, if it is still stored.
    pub fn active_account(&self) -> Option<&Account> {
        self.active.as_ref().and_then(|id| self.get(id))
    }

    /// Finds an account by name, full id, or a unique id prefix of at least
    /// [`MIN_ID_PREFIX`] characters, in that order.
    pub fn resolve(&self, query: &str) -> Result<&Account> {
        let id = self.resolve_id(query)?;
        Ok(self.get(&id).expect("resolve_id returns a stored id"))
    }

    pub fn resolve_mut(&mut self, query: &str) -> Result<&mut Account> {
        let id = self.resolve_id(query)?;
        Ok(self.get_mut(&id).expect("resolve_id returns a stored id"))
    }

    fn resolve_id(&self, query: &str) -> Result<AccountId> {
        if let Some(a) = self.accounts.iter().find(|a| a.name == query) {
            return Ok(a.id.clone());
        }
        let lowered = query.to_ascii_lowercase();
        if let Some(a) = self.accounts.iter().find(|a| a.id == lowered) {
            return Ok(a.id.clone());
        }
        let matches: Vec<&Account> = if lowered.len() >= MIN_ID_PREFIX {
            self.accounts
                .iter()
                .filter(|a| a.id.starts_with(&lowered))
                .collect()
        } else {
            Vec::new()
        };
        match matches.as_slice() {
            [one] => Ok(one.id.clone()),
            [] if self.accounts.is_empty() => Err(with_hint(
                eyre!("no account named {query:?}: no accounts are stored yet"),
                "add one with `cs-tui accounts add NAME` or `cs-tui accounts import`",
            )),
            [] => Err(with_hint(
                eyre!("no account named {query:?} and no account id starts with it"),
                format!(
                    "stored accounts: {}; see `cs-tui accounts list`",
                    self.names().join(", ")
                ),
            )),
            several => Err(with_hint(
                eyre!(
                    "{query:?} is the start of more than one account id ({})",
                    several
                        .iter()
                        .map(|a| a.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                "use the account's name or more characters of its id",
            )),
        }
    }

    pub fn names(&self) -> Vec<&str> {
        self.accounts.iter().map(|a| a.name.as_str()).collect()
    }

    pub fn name_taken(&self, name: &str) -> bool {
        self.accounts.iter().any(|a| a.name == name)
    }

    /// `base`, or `base-2`, `base-3`, … whichever is free.
    pub fn unique_name(&self, base: &str) -> String {
        if !self.name_taken(base) {
            return base.to_owned();
        }
        (2..)
            .map(|n| format!("{base}-{n}"))
            .find(|name| !self.name_taken(name))
            .expect("an unbounded range yields a free name")
    }

    /// Removes an account and forgets it as the active one.
    pub fn remove(&mut self, id: &AccountId) -> Option<Account> {
        let index = self.accounts.iter().position(|a| a.id == *id)?;
        if self.active.as_ref() == Some(id) {
            self.active = None;
        }
        Some(self.accounts.remove(index))
    }

    /// Checks what serde cannot: ids and names are unique and the active id exists.
    fn check_consistency(&self) -> std::result::Result<(), String> {
        let mut ids = std::collections::HashSet::new();
        let mut names = std::collections::HashSet::new();
        for account in &self.accounts {
            if !ids.insert(account.id.as_str()) {
                return Err(format!("the id {} appears twice", account.id));
            }
            if !names.insert(account.name.as_str()) {
                return Err(format!("the name {:?} appears twice", account.name));
            }
        }
        Ok(())
    }
}

/// How an account of a sign-in kind this version does not know is shown, e.g.
/// "unsupported sign-in `device_code` (from a newer cs-tui)".
pub(crate) fn unsupported_sign_in_state(kind: &str) -> String {
    format!(
        "unsupported sign-in `{}` (from a newer cs-tui)",
        kind.escape_debug()
    )
}

/// The sentence that refuses to use such an account: `cs-tui switch`, the picker, `accounts
/// use`, `refresh` and `reset` all say it.
pub(crate) fn unsupported_sign_in_message(name: &str, kind: &str) -> String {
    format!(
        "{name} signs in with `{}`, a kind written by a newer cs-tui; this cs-tui cannot use it",
        kind.escape_debug()
    )
}

/// [`unsupported_sign_in_message`] as an error with a hint.
pub(crate) fn unsupported_sign_in_error(name: &str, kind: &str) -> Report {
    with_hint(
        eyre!("{}", unsupported_sign_in_message(name, kind)),
        format!(
            "use it with that newer cs-tui, or remove it here with `cs-tui accounts remove {name}`"
        ),
    )
}

/// A new random account id.
pub(crate) fn new_account_id() -> AccountId {
    AccountId::new(uuid::Uuid::new_v4().simple().to_string())
}

/// Checks that `name` can be typed on a command line and shown in a table.
pub(crate) fn validate_name(name: &str) -> Result<()> {
    let problem = if name.is_empty() {
        Some("is empty")
    } else if name.chars().count() > 64 {
        Some("is longer than 64 characters")
    } else if name.starts_with('-') {
        Some("starts with '-', which reads as an option")
    } else if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Some("contains spaces or control characters")
    } else {
        None
    };
    match problem {
        Some(problem) => Err(with_hint(
            eyre!("the account name {name:?} {problem}"),
            "use letters, digits, '.', '_', '-' or '@', like `work` or `alice-pro`",
        )),
        None => Ok(()),
    }
}

/// Why the store file cannot be used. In every case the file is left untouched.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StoreError {
    #[error("the account store {path} is damaged ({detail}); cs-tui left it unchanged")]
    Damaged { path: PathBuf, detail: String },
    #[error("{path} is not a cs-tui account store; cs-tui left it unchanged")]
    Foreign { path: PathBuf },
    #[error(
        "the account store {path} has format version {found}, but this cs-tui reads only version {CURRENT_VERSION}; cs-tui left it unchanged"
    )]
    UnknownVersion { path: PathBuf, found: u64 },
}

impl StoreError {
    fn into_report(self, backup: &Path) -> Report {
        let hint = match &self {
            StoreError::Damaged { path, .. } if backup.exists() => format!(
                "restore the previous version with `cp {} {}`, or move the file away to start an empty store",
                backup.display(),
                path.display()
            ),
            StoreError::Damaged { path, .. } => format!(
                "repair it by hand, or move {} away to start an empty store",
                path.display()
            ),
            StoreError::Foreign { path } => format!(
                "move {} away, or set CS_TUI_HOME to another directory",
                path.display()
            ),
            StoreError::UnknownVersion { .. } => {
                "use the cs-tui version that wrote it, or a newer one".to_owned()
            }
        };
        with_hint(Report::new(self), hint)
    }
}

/// The on-disk shape: the store plus the marker that identifies the file as ours.
#[derive(Serialize)]
struct OnDiskOut<'a> {
    format: &'static str,
    #[serde(flatten)]
    file: &'a AccountsFile,
}

#[derive(Deserialize)]
struct OnDiskIn {
    /// Checked before (it names the file as ours); named here so it is not an unknown field.
    #[serde(rename = "format")]
    _format: serde_json::Value,
    #[serde(flatten)]
    file: AccountsFile,
}

impl Store {
    pub fn open(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The store in `$CS_TUI_HOME`, else `~/.config/cs-tui`.
    pub fn open_default() -> Result<Self> {
        Ok(Self::open(crate::paths::store_dir()?))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn accounts_path(&self) -> PathBuf {
        self.dir.join(ACCOUNTS_FILE)
    }

    pub fn backup_path(&self) -> PathBuf {
        self.dir.join(BACKUP_FILE)
    }

    /// Whether `accounts.json` exists (a store that was never written to does not).
    pub fn exists(&self) -> bool {
        self.accounts_path().exists()
    }

    /// Reads the store under a shared lock. A missing store is an empty one.
    ///
    /// Blocks while another process writes (a few milliseconds: no network call is ever made
    /// under this lock).
    pub fn load(&self) -> Result<AccountsFile> {
        if !self.dir.exists() {
            return Ok(AccountsFile::default());
        }
        let _lock = self.lock(FlockArg::LockShared)?;
        Ok(self.read()?.unwrap_or_default())
    }

    /// Read-modify-write under the exclusive lock. `f` sees the current store; when it returns
    /// `Ok` and changed something, the result is written atomically and the previous version
    /// becomes the backup. When `f` fails nothing is written.
    pub fn update<T>(&self, f: impl FnOnce(&mut AccountsFile) -> Result<T>) -> Result<T> {
        self.update_with_presence(|file, _existed| f(file))
    }

    /// Like [`Store::update`], also telling `f` whether `accounts.json` existed before.
    pub(crate) fn update_with_presence<T>(
        &self,
        f: impl FnOnce(&mut AccountsFile, bool) -> Result<T>,
    ) -> Result<T> {
        crate::paths::ensure_private_dir(&self.dir)
            .wrap_err_with(|| format!("creating the store directory {}", self.dir.display()))?;
        let _lock = self.lock(FlockArg::LockExclusive)?;
        self.sweep_temp_files();
        let before = self.read()?;
        let existed = before.is_some();
        let before = before.unwrap_or_default();
        let mut after = before.clone();
        let out = f(&mut after, existed)?;
        if after != before {
            after.version = CURRENT_VERSION;
            // The previous version becomes the backup, less any account removed now: its
            // tokens must not outlive it there.
            let mut backup = before.clone();
            let removed: Vec<AccountId> = before
                .accounts
                .iter()
                .filter(|a| after.get(&a.id).is_none())
                .map(|a| a.id.clone())
                .collect();
            for id in &removed {
                backup.remove(id);
            }
            let scrubbed = (!removed.is_empty()).then_some(&backup);
            self.write(&after, existed, scrubbed)?;
        }
        Ok(out)
    }

    /// Removes temp files a writer that crashed left behind (they hold tokens). Only under the
    /// exclusive lock: every writer holds it from creating its temp file to renaming it.
    fn sweep_temp_files(&self) {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(".accounts.json.") && name.ends_with(".tmp") {
                tracing::info!(file = %name, "removing a temp file left by an interrupted write");
                let _ = fs::remove_file(entry.path());
            }
        }
    }

    /// Takes the store lock, blocking until it is free.
    fn lock(&self, kind: FlockArg) -> Result<Flock<File>> {
        crate::paths::lock_file(&self.dir.join(LOCK_FILE), kind)
    }

    /// Takes the refresh lock of one account, blocking until it is free.
    pub(crate) fn lock_refresh(&self, account_id: &AccountId) -> Result<Flock<File>> {
        let dir = self.dir.join(REFRESH_LOCK_DIR);
        crate::paths::ensure_private_dir(&dir)
            .wrap_err_with(|| format!("creating {}", dir.display()))?;
        crate::paths::lock_file(
            &dir.join(format!("refresh-{account_id}.lock")),
            FlockArg::LockExclusive,
        )
    }

    /// Forgets the refresh lock file of a removed account. Deleting a lock file someone waits on
    /// is harmless here: the waiter then finds the account gone and stops.
    pub(crate) fn remove_refresh_lock(&self, account_id: &AccountId) {
        let _ = fs::remove_file(
            self.dir
                .join(REFRESH_LOCK_DIR)
                .join(format!("refresh-{account_id}.lock")),
        );
    }

    /// Reads and checks `accounts.json`; `None` when it does not exist.
    fn read(&self) -> Result<Option<AccountsFile>> {
        let path = self.accounts_path();
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(Report::new(e)
                    .wrap_err(format!("reading the account store {}", path.display())));
            }
        };
        parse_store(&path, &bytes)
            .map(Some)
            .map_err(|e| e.into_report(&self.backup_path()))
    }

    /// Writes `file` to a temp file, fsyncs it, keeps the current version as the backup, and
    /// renames the temp file into place, so a crash leaves either the old or the new store.
    /// `scrubbed`: the backup to keep instead of the current version (when accounts were
    /// removed).
    fn write(
        &self,
        file: &AccountsFile,
        existed: bool,
        scrubbed: Option<&AccountsFile>,
    ) -> Result<()> {
        let path = self.accounts_path();
        let context = || format!("writing the account store {}", path.display());
        let tmp = self.temp_file_with(file).wrap_err_with(context)?;
        if existed {
            let backup = match scrubbed {
                None => self.keep_backup(&path).map_err(Report::new),
                Some(backup) => self.temp_file_with(backup).and_then(|tmp| {
                    tmp.persist(self.backup_path())
                        .map(drop)
                        .map_err(|e| Report::new(e.error))
                }),
            };
            backup.wrap_err_with(|| {
                format!(
                    "keeping the previous account store as {}",
                    self.backup_path().display()
                )
            })?;
        }
        tmp.persist(&path)
            .map_err(|e| e.error)
            .wrap_err_with(context)?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .wrap_err_with(context)?;
        Ok(())
    }

    /// A synced 0600 temp file in the store directory holding `file` as stored.
    fn temp_file_with(&self, file: &AccountsFile) -> Result<tempfile::NamedTempFile> {
        let mut bytes = serde_json::to_vec_pretty(&OnDiskOut {
            format: FORMAT_MARKER,
            file,
        })?;
        bytes.push(b'\n');
        let mut tmp = tempfile::Builder::new()
            .prefix(".accounts.json.")
            .suffix(".tmp")
            .permissions(fs::Permissions::from_mode(0o600))
            .tempfile_in(&self.dir)?;
        tmp.write_all(&bytes)?;
        tmp.as_file().sync_all()?;
        Ok(tmp)
    }

    /// Makes `accounts.json.bak` the current `accounts.json`, atomically: a hard link under a
    /// temporary name renamed over the old backup (a copy where links are not supported).
    fn keep_backup(&self, current: &Path) -> std::io::Result<()> {
        let staging = self.dir.join(".accounts.json.bak.tmp");
        let _ = fs::remove_file(&staging);
        if fs::hard_link(current, &staging).is_err() {
            fs::copy(current, &staging)?;
            fs::set_permissions(
                &staging,
                std::os::unix::fs::PermissionsExt::from_mode(0o600),
            )?;
        }
        fs::rename(&staging, self.backup_path())
    }
}

/// Parses and checks the store file. Errors never quote file content: it holds tokens.
fn parse_store(path: &Path, bytes: &[u8]) -> std::result::Result<AccountsFile, StoreError> {
    let damaged = |detail: String| StoreError::Damaged {
        path: path.to_owned(),
        detail,
    };
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
        damaged(match e.classify() {
            serde_json::error::Category::Eof => "it ends in the middle: truncated".to_owned(),
            _ => format!("not valid JSON at line {}, column {}", e.line(), e.column()),
        })
    })?;
    let object = value.as_object().ok_or_else(|| StoreError::Foreign {
        path: path.to_owned(),
    })?;
    if object.get("format").and_then(|f| f.as_str()) != Some(FORMAT_MARKER) {
        return Err(StoreError::Foreign {
            path: path.to_owned(),
        });
    }
    match object.get("version").and_then(|v| v.as_u64()) {
        Some(v) if v == u64::from(CURRENT_VERSION) => {}
        Some(found) => {
            return Err(StoreError::UnknownVersion {
                path: path.to_owned(),
                found,
            });
        }
        None => return Err(damaged("its format version is missing".to_owned())),
    }
    let file = serde_json::from_slice::<OnDiskIn>(bytes)
        .map_err(|e| {
            // serde's message may quote a value (a token, if one sits in the wrong field), so
            // it is shown only when it quotes nothing.
            let message = e.to_string();
            let what = if message.contains('"') {
                "a value has the wrong type".to_owned()
            } else {
                message
                    .split(" at line ")
                    .next()
                    .unwrap_or_default()
                    .to_owned()
            };
            damaged(format!(
                "{what}, at line {}, column {}",
                e.line(),
                e.column()
            ))
        })?
        .file;
    file.check_consistency().map_err(damaged)?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chatgpt_account(name: &str, id: &str) -> Account {
        Account {
            email: Some(format!("{name}@example.com")),
            plan: Some("plus".into()),
            chatgpt_account_id: Some(format!("acct-{name}")),
            ..Account::new(
                AccountId::from(id),
                name.to_owned(),
                AccountAuth::ChatGpt {
                    id_token: Secret::new("ID-TOKEN-SECRET"),
                    access_token: Secret::new("ACCESS-TOKEN-SECRET"),
                    refresh_token: Secret::new("REFRESH-TOKEN-SECRET"),
                },
            )
        }
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn round_trips_and_keeps_a_backup_with_private_modes() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path().join("store"));
        assert_eq!(store.load().unwrap(), AccountsFile::default());
        assert!(!store.dir().exists(), "load must not create anything");

        store
            .update(|f| {
                f.accounts.push(chatgpt_account("alice", "aaaa1111"));
                Ok(())
            })
            .unwrap();
        assert!(!store.backup_path().exists());
        store
            .update(|f| {
                f.accounts.push(chatgpt_account("bob", "bbbb2222"));
                Ok(())
            })
            .unwrap();
        let loaded = store.load().unwrap();
        assert_eq!(loaded.names(), ["alice", "bob"]);
        let backup = parse_store(
            &store.backup_path(),
            &fs::read(store.backup_path()).unwrap(),
        )
        .unwrap();
        assert_eq!(backup.names(), ["alice"]);

        assert_eq!(mode(store.dir()), 0o700);
        assert_eq!(mode(&store.accounts_path()), 0o600);
        assert_eq!(mode(&store.backup_path()), 0o600);
        assert_eq!(mode(&store.dir().join(LOCK_FILE)), 0o600);
        let leftovers: Vec<_> = fs::read_dir(store.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn a_failing_or_idle_update_writes_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path());
        let err = store
            .update(|f| -> Result<()> {
                f.accounts.push(chatgpt_account("alice", "aaaa1111"));
                Err(eyre!("changed my mind"))
            })
            .unwrap_err();
        assert_eq!(err.to_string(), "changed my mind");
        assert!(!store.exists());
        store.update(|_| Ok(())).unwrap();
        assert!(!store.exists());
    }

    #[test]
    fn bad_files_are_reported_and_left_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path());
        store
            .update(|f| {
                f.accounts.push(chatgpt_account("alice", "aaaa1111"));
                Ok(())
            })
            .unwrap();
        let good = fs::read(store.accounts_path()).unwrap();
        let newer = String::from_utf8(good.clone())
            .unwrap()
            .replace("\"version\": 1", "\"version\": 7");
        let wrong_type = String::from_utf8(good.clone())
            .unwrap()
            .replace("\"enabled\": true", "\"enabled\": \"REFRESH-TOKEN-SECRET\"");
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("truncated", good[..good.len() / 2].to_vec(), "truncated"),
            ("garbage", b"{]".to_vec(), "not valid JSON"),
            (
                "foreign",
                br#"{"auth_mode":"chatgpt"}"#.to_vec(),
                "not a cs-tui",
            ),
            ("array", b"[]".to_vec(), "not a cs-tui"),
            ("newer", newer.into_bytes(), "format version 7"),
            ("wrong type", wrong_type.into_bytes(), "wrong type"),
        ];
        for (label, bytes, needle) in cases {
            fs::write(store.accounts_path(), &bytes).unwrap();
            for result in [
                store.load().map(|_| ()),
                store.update(|f| {
                    f.active = Some("x".into());
                    Ok(())
                }),
            ] {
                let err = result.unwrap_err();
                let shown = crate::errors::render_error(&err);
                assert!(shown.contains(needle), "{label}: {shown}");
                assert!(
                    shown.contains(&store.accounts_path().display().to_string()),
                    "{label}: {shown}"
                );
                assert!(shown.contains("hint:"), "{label}: {shown}");
                assert!(!shown.contains("SECRET"), "{label}: {shown}");
            }
            assert_eq!(fs::read(store.accounts_path()).unwrap(), bytes, "{label}");
        }
    }

    #[test]
    fn resolves_names_ids_and_unique_prefixes() {
        let file = AccountsFile {
            accounts: vec![
                chatgpt_account("alice", "abcd1234aaaa"),
                chatgpt_account("bob", "abcd5678bbbb"),
                chatgpt_account("abcd", "ffff0000cccc"),
            ],
            ..Default::default()
        };
        assert_eq!(file.resolve("alice").unwrap().name, "alice");
        assert_eq!(file.resolve("abcd5678bbbb").unwrap().name, "bob");
        assert_eq!(file.resolve("ABCD5678").unwrap().name, "bob");
        // A name wins over an id prefix.
        assert_eq!(file.resolve("abcd").unwrap().name, "abcd");
        assert_eq!(file.resolve("abcd1").unwrap().name, "alice");
        let unknown = crate::errors::render_error(&file.resolve("zzzz").unwrap_err());
        assert!(
            unknown.contains("no account") && unknown.contains("alice"),
            "{unknown}"
        );
        let ambiguous = AccountsFile {
            accounts: file.accounts[..2].to_vec(),
            ..Default::default()
        };
        let err = crate::errors::render_error(&ambiguous.resolve("abcd").unwrap_err());
        assert!(
            err.contains("more than one") && err.contains("alice, bob"),
            "{err}"
        );
        // Too short to be a prefix.
        assert!(file.resolve("ffe").is_err());
        assert!(file.resolve("fff").is_err());
        assert_eq!(file.resolve("ffff").unwrap().name, "abcd");
        let empty = crate::errors::render_error(&AccountsFile::default().resolve("x").unwrap_err());
        assert!(empty.contains("cs-tui accounts add"), "{empty}");
    }

    #[test]
    fn names_are_checked_and_made_unique() {
        for bad in ["", "-x", "a b", "tab\there", &"x".repeat(65)] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
        validate_name("alice@example.com").unwrap();
        let file = AccountsFile {
            accounts: vec![
                chatgpt_account("alice", "1"),
                chatgpt_account("alice-2", "2"),
            ],
            ..Default::default()
        };
        assert_eq!(file.unique_name("alice"), "alice-3");
        assert_eq!(file.unique_name("bob"), "bob");
    }

    #[test]
    fn debug_output_holds_no_token() {
        let mut file = AccountsFile::default();
        file.accounts.push(chatgpt_account("alice", "1"));
        file.accounts.push(Account {
            auth: AccountAuth::ApiKey {
                key: Secret::new("sk-API-KEY-SECRET"),
            },
            ..chatgpt_account("key", "2")
        });
        let debug = format!("{file:?} {file:#?}");
        assert!(!debug.contains("SECRET"), "{debug}");
        assert!(debug.contains("[redacted]"));
    }

    #[test]
    fn a_symlink_in_place_of_the_store_lock_is_refused_and_nothing_written() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path());
        let victim = tmp.path().join("victim");
        std::os::unix::fs::symlink(&victim, tmp.path().join(LOCK_FILE)).unwrap();
        let err = format!("{:#}", store.update(|_| Ok(())).unwrap_err());
        assert!(err.contains("is a symbolic link"), "{err}");
        let err = format!("{:#}", store.load().unwrap_err());
        assert!(err.contains("is a symbolic link"), "{err}");
        assert!(!victim.exists(), "the link's target is not created");
        assert!(!store.accounts_path().exists());
    }

    #[test]
    fn lock_is_released_when_its_holder_goes_away() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("x.lock");
        let held = crate::paths::lock_file(&path, FlockArg::LockExclusive).unwrap();
        let other = File::open(&path).unwrap();
        let other = Flock::lock(other, FlockArg::LockExclusiveNonblock)
            .map(drop)
            .map_err(|(f, _)| f)
            .expect_err("held by the first");
        drop(held);
        Flock::lock(other, FlockArg::LockExclusiveNonblock).expect("free after the holder went");
    }
}

#[cfg(test)]
mod forward_compatibility_tests {
    use super::*;

    /// What a newer cs-tui might write: fields and a status this version does not know.
    const NEWER: &str = r#"{
      "format": "cs-tui-accounts", "version": 1, "active": "a1",
      "sync": {"peer": "laptop"},
      "accounts": [{
        "id": "a1", "name": "work", "created_at": "2026-01-01T00:00:00Z",
        "auth": {"type": "api_key", "key": "sk-SECRET-KEY"},
        "status": {"state": "paused", "until": "2027-01-01T00:00:00Z"},
        "color": "teal", "future_token": "SECRET-FUTURE"
      }, {
        "id": "ééééééééé", "name": "ünïcode", "created_at": "2026-01-01T00:00:00Z",
        "auth": {"type": "api_key", "key": "sk-OTHER"}
      }]
    }"#;

    #[test]
    fn unknown_fields_and_states_survive_a_write_by_this_version() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path());
        std::fs::write(store.accounts_path(), NEWER).unwrap();
        let file = store.load().unwrap();
        let work = file.get(&"a1".into()).unwrap();
        assert!(matches!(&work.status, AccountStatus::Unknown { state, .. } if state == "paused"));
        assert!(!work.needs_login());
        // Debug names the unknown fields, never their values.
        let debug = format!("{file:?}");
        assert!(debug.contains("future_token"), "{debug}");
        assert!(!debug.contains("SECRET"), "{debug}");
        // Non-ASCII ids and names work.
        assert_eq!(file.accounts[1].short_id(), "éééééééé");

        store
            .update(|file| {
                file.resolve_mut("work")?.enabled = false;
                Ok(())
            })
            .unwrap();
        let written: serde_json::Value =
            serde_json::from_slice(&std::fs::read(store.accounts_path()).unwrap()).unwrap();
        assert_eq!(written["sync"]["peer"], "laptop");
        assert_eq!(written["format"], "cs-tui-accounts");
        // Ids are the plain strings they were.
        assert_eq!(written["active"], "a1");
        let work = &written["accounts"][0];
        assert_eq!(work["id"], "a1");
        assert_eq!(written["accounts"][1]["id"], "ééééééééé");
        assert_eq!(work["enabled"], false);
        assert_eq!(work["color"], "teal");
        assert_eq!(work["future_token"], "SECRET-FUTURE");
        assert_eq!(work["status"]["state"], "paused");
        assert_eq!(work["status"]["until"], "2027-01-01T00:00:00Z");
        // And it reads back the same.
        assert_eq!(
            store
                .load()
                .unwrap()
                .get(&"a1".into())
                .unwrap()
                .unknown
                .0
                .len(),
            2
        );
    }
}

#[cfg(test)]
mod unknown_auth_tests {
    use super::*;
    use serde_json::{Value, json};

    /// A newer cs-tui's sign-in kind, every value of it secret, beside two accounts this
    /// version knows.
    fn device_code_auth() -> Value {
        json!({
            "type": "device_code",
            "device_token": "SECRET-DEVICE-TOKEN",
            "nested": {"refresh": "SECRET-NESTED", "scopes": ["a", "b"]},
            "expires_in": 900,
            "rotating": true,
            "note": null
        })
    }

    fn newer_store() -> Value {
        json!({
            "format": "cs-tui-accounts", "version": 1, "active": "a1",
            "accounts": [{
                "id": "a1", "name": "alice", "created_at": "2026-01-01T00:00:00Z",
                "chatgpt_account_id": "acct-alice",
                "auth": {"type": "chatgpt", "id_token": "i", "access_token": "a", "refresh_token": "r"}
            }, {
                "id": "f1", "name": "future", "created_at": "2026-01-01T00:00:00Z",
                "chatgpt_account_id": "acct-future",
                "auth": device_code_auth(),
                "status": {"state": "paused", "until": "SECRET-STATUS-VALUE"}
            }, {
                "id": "k1", "name": "key", "created_at": "2026-01-01T00:00:00Z",
                "auth": {"type": "api_key", "key": "sk-key"}
            }]
        })
    }

    fn written(store: &Store) -> Value {
        serde_json::from_slice(&fs::read(store.accounts_path()).unwrap()).unwrap()
    }

    fn auth_of<'a>(file: &'a Value, name: &str) -> &'a Value {
        &file["accounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == name)
            .unwrap_or_else(|| panic!("{name} is in {file:#}"))["auth"]
    }

    #[test]
    fn an_unknown_sign_in_kind_loads_and_is_written_back_unchanged_by_every_change() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path());
        fs::write(store.accounts_path(), newer_store().to_string()).unwrap();

        let file = store.load().unwrap();
        assert_eq!(file.accounts.len(), 3);
        let future = file.resolve("future").unwrap();
        assert_eq!(future.unsupported_sign_in(), Some("device_code"));
        assert_eq!(future.sign_in_kind(), "device_code");
        assert!(!future.is_chatgpt());
        assert!(future.access_claims().is_none() && future.id_claims().is_none());
        let err = format!("{:?}", future.ensure_supported().unwrap_err());
        assert!(err.contains("`device_code`"), "{err}");
        assert!(err.contains("written by a newer cs-tui"), "{err}");
        assert!(!err.contains("SECRET"), "{err}");
        for known in ["alice", "key"] {
            let account = file.resolve(known).unwrap();
            assert_eq!(account.unsupported_sign_in(), None);
            account.ensure_supported().unwrap();
        }

        // Another account added…
        store
            .update(|file| {
                file.accounts.push(Account::new(
                    AccountId::from("c1"),
                    "carol".into(),
                    AccountAuth::ApiKey {
                        key: Secret::new("sk-carol"),
                    },
                ));
                Ok(())
            })
            .unwrap();
        assert_eq!(auth_of(&written(&store), "future"), &device_code_auth());
        // … one removed …
        store
            .update(|file| {
                file.remove(&AccountId::from("k1")).unwrap();
                Ok(())
            })
            .unwrap();
        assert_eq!(auth_of(&written(&store), "future"), &device_code_auth());
        // … one refreshed (new tokens, a refresh time), and the unknown one renamed.
        store
            .update(|file| {
                let alice = file.resolve_mut("alice")?;
                alice.auth = AccountAuth::ChatGpt {
                    id_token: Secret::new("i2"),
                    access_token: Secret::new("a2"),
                    refresh_token: Secret::new("r2"),
                };
                alice.last_refreshed_at = Some(Utc::now());
                file.resolve_mut("future")?.name = "later".into();
                Ok(())
            })
            .unwrap();
        let after = written(&store);
        assert_eq!(auth_of(&after, "later"), &device_code_auth());
        assert_eq!(auth_of(&after, "alice")["refresh_token"], "r2");
        assert_eq!(
            auth_of(&after, "later").as_object().unwrap().len(),
            device_code_auth().as_object().unwrap().len(),
            "no field added or lost"
        );
        // The backup (the previous version) holds it too, and the file reads back the same.
        let backup: Value =
            serde_json::from_slice(&fs::read(store.backup_path()).unwrap()).unwrap();
        assert_eq!(auth_of(&backup, "future"), &device_code_auth());
        let reloaded = store.load().unwrap();
        assert_eq!(
            reloaded.resolve("later").unwrap().auth,
            file.resolve("future").unwrap().auth
        );
    }

    #[test]
    fn debug_of_an_unknown_sign_in_shows_its_kind_and_field_names_never_a_value() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path());
        fs::write(store.accounts_path(), newer_store().to_string()).unwrap();
        let file = store.load().unwrap();
        let debug = format!("{file:?} {file:#?}");
        assert!(!debug.contains("SECRET"), "{debug}");
        assert!(debug.contains("device_code"), "{debug}");
        assert!(debug.contains("device_token"), "{debug}");
        // A status this version does not know shows its field names only, too.
        assert!(debug.contains("until"), "{debug}");
    }

    #[test]
    fn a_known_kind_that_does_not_parse_or_an_auth_without_type_is_still_damage() {
        for auth in [
            json!({"type": "chatgpt", "id_token": "i"}),
            json!({"type": "api_key"}),
            json!({"key": "sk-x"}),
            json!({"type": 7, "key": "sk-x"}),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(dir.path());
            let mut file = newer_store();
            file["accounts"][0]["auth"] = auth.clone();
            let bytes = file.to_string();
            fs::write(store.accounts_path(), &bytes).unwrap();
            let err = format!("{:#}", store.load().unwrap_err());
            assert!(err.contains("damaged"), "{auth}: {err}");
            assert!(store.update(|_| Ok(())).is_err());
            assert_eq!(fs::read_to_string(store.accounts_path()).unwrap(), bytes);
        }
    }
}
