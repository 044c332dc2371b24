//! `cs-tui accounts …` and `cs-tui status`.
//!
//! Human output is an aligned table with relative times; `--json` output is stable (fields are
//! only ever added) and documented in README.md. No output, error or log line holds a token.

use std::ffi::OsString;
use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use chrono::{DateTime, Utc};
use color_eyre::eyre::{Result, WrapErr, eyre};
use serde::Serialize;

use super::codex_auth::{
    ImportOutcome, Imported, auth_json_path, import_auth, import_auth_file,
    import_codex_auth_if_empty,
};
use super::reset_credits::{ResetCredits, fetch_reset_credits_with};
use super::store::{Account, AccountAuth, AccountStatus, AccountsFile, Store, validate_name};
use super::tokens::{
    Backend, RefreshPolicy, ensure_fresh_with, needs_login, relogin_command, settle_refreshes,
    stop_retrying_refreshes,
};
use super::usage::{UsageReport, fetch_usage_with};
use crate::cli::GlobalArgs;
use crate::errors::{render_error, with_hint};
use crate::quota::{RateLimitSnapshot, RateLimitWindow, WindowKind};

#[derive(Debug, clap::Subcommand)]
pub enum AccountsCommand {
    /// Import a Codex login (auth.json with ChatGPT tokens or an API key).
    ///
    /// An account that is stored already (same ChatGPT account) gets the newer tokens instead
    /// of a duplicate.
    Import(ImportArgs),
    /// Log in with `codex login` and store the account as NAME.
    ///
    /// Codex runs with a temporary CODEX_HOME that is removed afterwards. Also the way to log
    /// in again to an account that needs it.
    Add(AddArgs),
    /// List stored accounts.
    #[command(visible_alias = "ls")]
    List(ListArgs),
    /// Rename an account.
    Rename {
        /// The account: its name, id, or a unique id prefix (4+ characters).
        old: String,
        /// The new name.
        new: String,
    },
    /// Remove an account and its tokens (asks first unless --yes).
    #[command(visible_alias = "rm")]
    Remove {
        /// The account: its name, id, or a unique id prefix (4+ characters).
        name: String,
        /// Do not ask for confirmation (required when stdin is not a terminal).
        #[arg(long, short = 'y')]
        yes: bool,
    },
    /// Let automatic switching pick this account (the default).
    Enable {
        /// The account: its name, id, or a unique id prefix (4+ characters).
        name: String,
    },
    /// Keep automatic switching away from this account (switching to it by hand still works).
    Disable {
        /// The account: its name, id, or a unique id prefix (4+ characters).
        name: String,
    },
    /// Start the next session on this account.
    Use {
        /// The account: its name, id, or a unique id prefix (4+ characters).
        name: String,
    },
    /// Refresh the tokens of one account, or of every ChatGPT account.
    Refresh {
        /// The account: its name, id, or a unique id prefix (4+ characters).
        name: Option<String>,
    },
    /// Redeem one of an exhausted account's rate-limit reset credits (asks first unless --yes).
    ///
    /// Refused when the account is not exhausted: a credit only clears an exhausted window.
    Reset {
        /// The account: its name, id, or a unique id prefix (4+ characters).
        name: String,
        /// Do not ask for confirmation (required when stdin is not a terminal).
        #[arg(long, short = 'y')]
        yes: bool,
    },
}

#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// Name for the account (default: the e-mail's local part). Renames it if it is stored.
    #[arg(long)]
    pub name: Option<String>,
    /// The auth.json to read [default: $CODEX_HOME/auth.json, CODEX_HOME defaulting to ~/.codex].
    #[arg(long, value_name = "PATH")]
    pub file: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct AddArgs {
    /// Name for the account.
    pub name: String,
    /// Log in with a device code instead of a browser (`codex login --device-auth`).
    #[arg(long)]
    pub device_auth: bool,
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Seconds to wait for each account's usage before showing it as timed out.
    #[arg(long, value_name = "SECS", default_value_t = 15)]
    pub timeout: u64,
}

/// What every command needs: the store, a logger, and a way to run async work.
struct Context {
    store: Store,
    _log: tracing_appender::non_blocking::WorkerGuard,
}

impl Context {
    fn new(global: &GlobalArgs) -> Result<Self> {
        let store = Store::open_default()?;
        let log_dir = crate::paths::log_dir()?;
        crate::paths::ensure_private_dir(&log_dir)
            .wrap_err_with(|| format!("creating log directory {}", log_dir.display()))?;
        // Created 0600 up front: the appender would create it with the umask's mode.
        std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(log_dir.join("accounts.log"))
            .wrap_err_with(|| format!("creating the log file in {}", log_dir.display()))?;
        let (log, _) = crate::logging::init(&log_dir, "accounts", global.log_level.as_deref())?;
        Ok(Self { store, _log: log })
    }

    /// On first run, imports the current Codex login and says so. A problem with it is a
    /// warning: it must not stop the command the user asked for.
    fn first_run_import(&self) {
        match import_codex_auth_if_empty(&self.store) {
            Ok(Some(account)) => {
                let from = crate::paths::codex_home()
                    .map(|home| auth_json_path(&home).display().to_string())
                    .unwrap_or_else(|_| "auth.json".to_owned());
                eprintln!(
                    "First run: imported your current Codex login{} from {from} as {:?}.",
                    account
                        .email
                        .as_deref()
                        .map(|e| format!(" ({e})"))
                        .unwrap_or_default(),
                    account.name
                );
            }
            Ok(None) => {}
            Err(err) => eprintln!(
                "warning: the current Codex login was not imported: {}",
                render_error(&err).trim_start_matches("error: ")
            ),
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .wrap_err("starting the async runtime")
}

/// The exit code of a command stopped by Ctrl-C.
const INTERRUPTED: u8 = 130;

/// Runs `work` until it ends or Ctrl-C comes (`None`). A token refresh under way is not
/// cancelled by that: it runs on its own task, and [`finish_refreshes`] waits for it.
fn until_interrupted<T>(
    runtime: &tokio::runtime::Runtime,
    work: impl std::future::Future<Output = T>,
) -> Option<T> {
    let out = runtime.block_on(async {
        tokio::select! {
            out = work => Some(out),
            Ok(()) = tokio::signal::ctrl_c() => None,
        }
    });
    if out.is_none() {
        eprintln!("Interrupted.");
    }
    out
}

/// Before a command that refreshed tokens exits: lets a refresh under way store its answer
/// (see [`settle_refreshes`]); a second Ctrl-C stops waiting. Returns whether every rotated
/// token was stored.
fn finish_refreshes(runtime: &tokio::runtime::Runtime, store: &Store) -> bool {
    stop_retrying_refreshes();
    runtime.block_on(async {
        tokio::select! {
            saved = settle_refreshes(store) => saved,
            Ok(()) = tokio::signal::ctrl_c() => {
                eprintln!("Interrupted again: not waiting for the token refresh under way.");
                false
            }
        }
    })
}

/// The client for backend requests. It says what Codex's app-server says (the `User-Agent`
/// the last session learned, [`super::user_agent`]), and nothing when that is unknown: the
/// backend is not told of cs-tui.
fn http_client(store: &Store) -> Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder().connect_timeout(Duration::from_secs(10));
    if let Some(user_agent) = super::user_agent::load(store.dir()) {
        builder = builder.user_agent(user_agent);
    }
    builder.build().wrap_err("creating the HTTP client")
}

/// Writes to stdout; a closed pipe (`| head`) is not an error.
fn emit(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.wrap_err("writing to stdout"),
    }
}

fn emit_json(value: &impl Serialize) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value).wrap_err("formatting JSON")?;
    text.push('\n');
    emit(&text)
}

pub fn run_accounts(global: &GlobalArgs, cmd: AccountsCommand) -> Result<ExitCode> {
    let ctx = Context::new(global)?;
    // A running session learns of accounts added, removed or switched on and off at once, so
    // an account added during a session can take over at its next limit.
    let changes_the_set = matches!(
        cmd,
        AccountsCommand::Import(_)
            | AccountsCommand::Add(_)
            | AccountsCommand::Rename { .. }
            | AccountsCommand::Remove { .. }
            | AccountsCommand::Enable { .. }
            | AccountsCommand::Disable { .. }
    );
    let result = run_accounts_command(&ctx, global, cmd);
    if changes_the_set && matches!(result, Ok(ExitCode::SUCCESS)) {
        crate::proxy::ipc::announce_accounts_changed(ctx.store.dir());
    }
    result
}

fn run_accounts_command(
    ctx: &Context,
    global: &GlobalArgs,
    cmd: AccountsCommand,
) -> Result<ExitCode> {
    match cmd {
        AccountsCommand::Import(args) => import(ctx, args),
        AccountsCommand::Add(args) => add(ctx, &global.codex_bin, args),
        AccountsCommand::List(args) => {
            ctx.first_run_import();
            list(ctx, args)
        }
        AccountsCommand::Rename { old, new } => {
            ctx.first_run_import();
            rename(ctx, &old, &new)
        }
        AccountsCommand::Remove { name, yes } => {
            ctx.first_run_import();
            remove(ctx, &name, yes)
        }
        AccountsCommand::Enable { name } => {
            ctx.first_run_import();
            set_enabled(ctx, &name, true)
        }
        AccountsCommand::Disable { name } => {
            ctx.first_run_import();
            set_enabled(ctx, &name, false)
        }
        AccountsCommand::Use { name } => {
            ctx.first_run_import();
            use_account(ctx, &name)
        }
        AccountsCommand::Refresh { name } => {
            ctx.first_run_import();
            refresh(ctx, name.as_deref())
        }
        AccountsCommand::Reset { name, yes } => reset(ctx, &global.codex_bin, &name, yes),
    }
}

/// "5-hour 100 %, weekly 40 %".
fn windows_summary(snapshot: &RateLimitSnapshot) -> String {
    let parts: Vec<String> = [
        ("5-hour", snapshot.five_hour()),
        ("weekly", snapshot.weekly()),
    ]
    .into_iter()
    .filter_map(|(name, w)| w.map(|w| format!("{name} {:.0} %", w.used_percent)))
    .collect();
    if parts.is_empty() {
        "no window reported".to_owned()
    } else {
        parts.join(", ")
    }
}

fn reset(ctx: &Context, codex_bin: &std::ffi::OsStr, query: &str, yes: bool) -> Result<ExitCode> {
    let target = ctx.store.load()?.resolve(query)?.clone();
    if !target.is_chatgpt() {
        return Err(with_hint(
            eyre!(
                "{:?} signs in with an API key, which has no reset credits",
                target.name
            ),
            "reset credits belong to ChatGPT logins",
        ));
    }
    let backend = Backend::from_env()?;
    let http = http_client(&ctx.store)?;
    let runtime = runtime()?;
    // One after the other: a token the first read refreshes serves the second.
    let (usage, credits) = runtime.block_on(async {
        let usage = fetch_usage_with(&ctx.store, &http, &backend, &target.id).await;
        let credits = fetch_reset_credits_with(&ctx.store, &http, &backend, &target.id).await;
        (usage, credits)
    });
    let usage = usage.wrap_err_with(|| {
        format!(
            "could not check whether {:?} is exhausted; nothing was redeemed",
            target.name
        )
    })?;
    if !usage.is_exhausted() {
        return Err(with_hint(
            eyre!(
                "{:?} is not exhausted ({}): a reset credit only clears an exhausted window, so none was redeemed",
                target.name,
                windows_summary(&usage.snapshot)
            ),
            format!(
                "redeem one once {} hits its limit; `cs-tui status` shows every account's windows",
                target.name
            ),
        ));
    }
    let credits = match credits {
        Ok(credits) if credits.available == 0 => {
            return Err(with_hint(
                eyre!(
                    "{:?} has no reset credit; nothing was redeemed",
                    target.name
                ),
                "`cs-tui status` shows which accounts have one",
            ));
        }
        Ok(credits) => Some(credits),
        Err(err) => {
            // The redemption itself says `noCredit` if there is none.
            tracing::warn!(account = %target.name, "reset credits: {err:#}");
            None
        }
    };
    if !yes {
        if !std::io::stdin().is_terminal() {
            return Err(with_hint(
                eyre!(
                    "not redeeming a reset credit of {:?} without confirmation: stdin is not a terminal",
                    target.name
                ),
                format!("run `cs-tui accounts reset {} --yes`", target.name),
            ));
        }
        let which = match &credits {
            Some(c) => {
                let expiry = c
                    .nearest_expires_at
                    .map(|at| format!(", the first expires {}", relative_time(at, Utc::now())))
                    .unwrap_or_default();
                format!("one of its {} reset credits{expiry}", c.available)
            }
            None => "one of its reset credits".to_owned(),
        };
        eprint!(
            "{} is exhausted ({}). Redeem {which} to clear its limits now? [y/N] ",
            target.name,
            windows_summary(&usage.snapshot)
        );
        let mut answer = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut answer)
            .wrap_err("reading the answer")?;
        if !matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes") {
            eprintln!("Nothing redeemed.");
            return Ok(ExitCode::FAILURE);
        }
    }
    // One key for this action, reused by every retry of it.
    let key = uuid::Uuid::new_v4().to_string();
    tracing::info!(account = %target.name, idempotency_key = %key, "redeeming a reset credit");
    let (outcome, via) = runtime.block_on(super::reset::redeem(
        &ctx.store, &http, &backend, codex_bin, &target, &key,
    ))?;
    let via = match via {
        super::reset::Via::Session => " (through the running session)",
        super::reset::Via::OwnAppServer => "",
    };
    use super::reset::Outcome;
    match outcome {
        Outcome::Reset => {
            let left = credits
                .map(|c| format!(" {} left.", c.available.saturating_sub(1)))
                .unwrap_or_default();
            emit(&format!(
                "Reset {}'s usage limits with a reset credit{via}.{left}\n",
                target.name
            ))?;
            // Running sessions show the cleared windows at once.
            crate::proxy::ipc::announce(
                ctx.store.dir(),
                &crate::proxy::events::ProxyCommand::RefreshUsage,
            );
            Ok(ExitCode::SUCCESS)
        }
        Outcome::NothingToReset => Err(eyre!(
            "the backend found nothing to reset on {:?}{via}",
            target.name
        )),
        Outcome::NoCredit => Err(eyre!("{:?} has no reset credit left{via}", target.name)),
        Outcome::AlreadyRedeemed => Err(eyre!(
            "that reset credit of {:?} was redeemed already{via}",
            target.name
        )),
        Outcome::Other(other) => Err(eyre!(
            "redeeming a reset credit of {:?} ended with {other:?}{via}",
            target.name
        )),
    }
}

/// "alice (alice@example.com, plus)".
fn describe(account: &Account) -> String {
    let details: Vec<&str> = [account.email.as_deref(), account.plan.as_deref()]
        .into_iter()
        .flatten()
        .collect();
    let details = match (&account.auth, details.is_empty()) {
        (AccountAuth::ApiKey { .. }, _) => "API key".to_owned(),
        (_, true) => return account.name.clone(),
        (_, false) => details.join(", "),
    };
    format!("{} ({details})", account.name)
}

fn import(ctx: &Context, args: ImportArgs) -> Result<ExitCode> {
    let file = match args.file {
        Some(file) => file,
        None => auth_json_path(&crate::paths::codex_home()?),
    };
    let imported = import_auth_file(&ctx.store, &file, args.name.as_deref())?;
    emit(&format!("{}\n", import_message(&imported)))?;
    Ok(ExitCode::SUCCESS)
}

fn import_message(imported: &Imported) -> String {
    let account = describe(&imported.account);
    match imported.outcome {
        ImportOutcome::Added => format!("Stored {account} as a new account."),
        ImportOutcome::Updated => format!("Updated {account}: it was stored already."),
        ImportOutcome::Unchanged => {
            format!("{account} is stored already, with the same or newer tokens; nothing changed.")
        }
    }
}

fn add(ctx: &Context, codex_bin: &OsString, args: AddArgs) -> Result<ExitCode> {
    validate_name(&args.name)?;
    let auth = runtime()?.block_on(super::login::login_with_codex(
        &ctx.store,
        codex_bin,
        args.device_auth,
    ))?;
    let imported = import_auth(&ctx.store, &auth, Some(&args.name))?;
    let message = match imported.outcome {
        ImportOutcome::Added => format!("Logged in and stored {}.", describe(&imported.account)),
        ImportOutcome::Updated => format!(
            "Logged in to {} again; it was stored already and now has the new tokens.",
            describe(&imported.account)
        ),
        ImportOutcome::Unchanged => format!(
            "Logged in to {} again; it was stored already with the same or newer tokens.",
            describe(&imported.account)
        ),
    };
    emit(&format!("{message}\n"))?;
    Ok(ExitCode::SUCCESS)
}

/// One account in `accounts list --json`.
#[derive(Serialize)]
struct AccountJson<'a> {
    id: &'a str,
    name: &'a str,
    email: Option<&'a str>,
    plan: Option<&'a str>,
    /// `chatgpt` or `api_key`.
    kind: &'static str,
    chatgpt_account_id: Option<&'a str>,
    enabled: bool,
    active: bool,
    /// `ok` or `needs_login`.
    status: &'a str,
    status_reason: Option<&'a str>,
    created_at: DateTime<Utc>,
    last_used_at: Option<DateTime<Utc>>,
    last_refreshed_at: Option<DateTime<Utc>>,
    access_token_expires_at: Option<DateTime<Utc>>,
    subscription_active_until: Option<DateTime<Utc>>,
}

#[derive(Serialize)]
struct ListJson<'a> {
    active: Option<&'a str>,
    accounts: Vec<AccountJson<'a>>,
}

fn kind(account: &Account) -> &'static str {
    match account.auth {
        AccountAuth::ChatGpt { .. } => "chatgpt",
        AccountAuth::ApiKey { .. } => "api_key",
    }
}

fn account_json<'a>(file: &'a AccountsFile, account: &'a Account) -> AccountJson<'a> {
    let (status, status_reason) = match &account.status {
        AccountStatus::Ok => ("ok", None),
        AccountStatus::NeedsLogin { reason } => ("needs_login", Some(reason.as_str())),
        AccountStatus::Unknown { state, .. } => (state.as_str(), None),
    };
    AccountJson {
        id: &account.id,
        name: &account.name,
        email: account.email.as_deref(),
        plan: account.plan.as_deref(),
        kind: kind(account),
        chatgpt_account_id: account.chatgpt_account_id.as_deref(),
        enabled: account.enabled,
        active: file.active.as_deref() == Some(account.id.as_str()),
        status,
        status_reason,
        created_at: account.created_at,
        last_used_at: account.last_used_at,
        last_refreshed_at: account.last_refreshed_at,
        access_token_expires_at: account.access_claims().and_then(|c| c.expires_at),
        subscription_active_until: account
            .id_claims()
            .and_then(|c| c.subscription_active_until),
    }
}

fn list(ctx: &Context, args: ListArgs) -> Result<ExitCode> {
    let file = ctx.store.load()?;
    if args.json {
        emit_json(&ListJson {
            active: file.active_account().map(|a| a.id.as_str()),
            accounts: file
                .accounts
                .iter()
                .map(|a| account_json(&file, a))
                .collect(),
        })?;
        return Ok(ExitCode::SUCCESS);
    }
    if file.accounts.is_empty() {
        eprintln!(
            "No accounts stored in {}.\nhint: add one with `cs-tui accounts add NAME` or `cs-tui accounts import`",
            ctx.store.dir().display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let now = Utc::now();
    let rows = file
        .accounts
        .iter()
        .map(|a| {
            let status = match (&a.status, &a.auth) {
                (AccountStatus::NeedsLogin { .. }, _) => "needs login".to_owned(),
                (_, AccountAuth::ApiKey { .. }) => "api key".to_owned(),
                _ => match a.access_claims().and_then(|c| c.expires_at) {
                    Some(exp) if exp <= now => "ok (token expired, refreshes on use)".to_owned(),
                    _ => "ok".to_owned(),
                },
            };
            vec![
                active_marker(&file, a),
                a.name.clone(),
                a.email.clone().unwrap_or_else(|| "-".into()),
                a.plan.clone().unwrap_or_else(|| "-".into()),
                yes_no(a.enabled),
                a.last_used_at
                    .map(|t| relative_time(t, now))
                    .unwrap_or_else(|| "never".into()),
                a.short_id().to_owned(),
                status,
            ]
        })
        .collect();
    let mut text = table(
        &[
            "",
            "NAME",
            "EMAIL",
            "PLAN",
            "AUTO",
            "LAST USED",
            "ID",
            "STATUS",
        ],
        rows,
    );
    text.push_str(
        "\n* = the account the next session starts on; AUTO = automatic switching may pick it\n",
    );
    emit(&text)?;
    Ok(ExitCode::SUCCESS)
}

fn active_marker(file: &AccountsFile, account: &Account) -> String {
    if file.active.as_deref() == Some(account.id.as_str()) {
        "*".into()
    } else {
        String::new()
    }
}

fn yes_no(value: bool) -> String {
    if value { "yes" } else { "no" }.to_owned()
}

fn rename(ctx: &Context, old: &str, new: &str) -> Result<ExitCode> {
    validate_name(new)?;
    let previous = ctx.store.update(|file| {
        let id = file.resolve(old)?.id.clone();
        if let Some(other) = file.accounts.iter().find(|a| a.name == new && a.id != id) {
            return Err(with_hint(
                eyre!(
                    "the name {new:?} is taken by another account ({})",
                    describe(other)
                ),
                "choose another name, or rename that account first",
            ));
        }
        let account = file.get_mut(&id).expect("resolved above");
        Ok(std::mem::replace(&mut account.name, new.to_owned()))
    })?;
    emit(&format!("Renamed {previous:?} to {new:?}.\n"))?;
    Ok(ExitCode::SUCCESS)
}

fn remove(ctx: &Context, query: &str, yes: bool) -> Result<ExitCode> {
    let target = ctx.store.load()?.resolve(query)?.clone();
    if !yes {
        if !std::io::stdin().is_terminal() {
            return Err(with_hint(
                eyre!(
                    "not removing account {:?} without confirmation: stdin is not a terminal",
                    target.name
                ),
                format!("run `cs-tui accounts remove {} --yes`", target.name),
            ));
        }
        eprint!(
            "Remove {} and its tokens from the store? [y/N] ",
            describe(&target)
        );
        let mut answer = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut answer)
            .wrap_err("reading the answer")?;
        if !matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes") {
            eprintln!("Nothing removed.");
            return Ok(ExitCode::FAILURE);
        }
    }
    let (removed, was_active) = ctx.store.update(|file| {
        let was_active = file.active.as_deref() == Some(target.id.as_str());
        let removed = file.remove(&target.id).ok_or_else(|| {
            eyre!(
                "account {:?} was removed by another process meanwhile",
                target.name
            )
        })?;
        Ok((removed, was_active))
    })?;
    ctx.store.remove_refresh_lock(&removed.id);
    let mut message = format!(
        "Removed {}. The backup {} keeps the previous store until the next change.\n",
        describe(&removed),
        ctx.store.backup_path().display()
    );
    if was_active {
        message.push_str(
            "It was the account the next session starts on; choose another with `cs-tui accounts use NAME`.\n",
        );
    }
    emit(&message)?;
    Ok(ExitCode::SUCCESS)
}

fn set_enabled(ctx: &Context, query: &str, enabled: bool) -> Result<ExitCode> {
    let (name, changed) = ctx.store.update(|file| {
        let account = file.resolve_mut(query)?;
        let changed = account.enabled != enabled;
        account.enabled = enabled;
        Ok((account.name.clone(), changed))
    })?;
    let message = match (enabled, changed) {
        (true, true) => format!("Enabled {name:?}: automatic switching may pick it."),
        (false, true) => format!(
            "Disabled {name:?}: automatic switching will not pick it (switching by hand still works)."
        ),
        (true, false) => format!("{name:?} is enabled already."),
        (false, false) => format!("{name:?} is disabled already."),
    };
    emit(&format!("{message}\n"))?;
    Ok(ExitCode::SUCCESS)
}

fn use_account(ctx: &Context, query: &str) -> Result<ExitCode> {
    let account = ctx.store.update(|file| {
        let account = file.resolve(query)?.clone();
        file.active = Some(account.id.clone());
        Ok(account)
    })?;
    let mut message = format!("The next session starts on {}.\n", describe(&account));
    if account.needs_login() {
        message.push_str(&format!(
            "It needs a new login first: run `{}`.\n",
            relogin_command(&account.name)
        ));
    }
    emit(&message)?;
    Ok(ExitCode::SUCCESS)
}

fn refresh(ctx: &Context, query: Option<&str>) -> Result<ExitCode> {
    let file = ctx.store.load()?;
    let targets: Vec<Account> = match query {
        Some(query) => vec![file.resolve(query)?.clone()],
        None => file
            .accounts
            .iter()
            .filter(|a| a.is_chatgpt())
            .cloned()
            .collect(),
    };
    if targets.is_empty() {
        eprintln!("No ChatGPT accounts to refresh.");
        return Ok(ExitCode::SUCCESS);
    }
    let backend = Backend::from_env()?;
    let http = http_client(&ctx.store)?;
    let runtime = runtime()?;
    let mut failed = false;
    let mut interrupted = false;
    for target in targets {
        if !target.is_chatgpt() {
            emit(&format!(
                "{}: signs in with an API key; there is nothing to refresh.\n",
                target.name
            ))?;
            continue;
        }
        let Some(result) = until_interrupted(
            &runtime,
            ensure_fresh_with(&ctx.store, &http, &backend, &target.id, RefreshPolicy::Now),
        ) else {
            interrupted = true;
            break;
        };
        match result {
            Ok(account) => {
                let until = account
                    .access_claims()
                    .and_then(|c| c.expires_at)
                    .map(|exp| {
                        format!(
                            "; the access token is valid {}",
                            relative_time(exp, Utc::now())
                        )
                    })
                    .unwrap_or_default();
                emit(&format!("{}: refreshed{until}.\n", account.name))?;
            }
            Err(err) => {
                failed = true;
                eprintln!("{}", render_error(&err));
            }
        }
    }
    if !finish_refreshes(&runtime, &ctx.store) {
        failed = true;
    }
    Ok(if interrupted {
        ExitCode::from(INTERRUPTED)
    } else if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// One window in `status --json`.
#[derive(Serialize)]
struct WindowJson {
    used_percent: f64,
    window_minutes: Option<u32>,
    resets_at: Option<DateTime<Utc>>,
    /// The window named by its length: `5h`, `weekly`, `30d`, …
    label: String,
}

impl From<&RateLimitWindow> for WindowJson {
    fn from(w: &RateLimitWindow) -> Self {
        Self {
            used_percent: w.used_percent,
            window_minutes: w.window_duration_mins,
            resets_at: w.resets_at.and_then(|s| DateTime::from_timestamp(s, 0)),
            label: w.kind().label(),
        }
    }
}

/// One limit family in `status --json` (`codex` first: the account's quota).
#[derive(Serialize)]
struct FamilyJson<'a> {
    limit_id: Option<&'a str>,
    limit_name: Option<&'a str>,
    /// The windows the family has, shortest first.
    windows: Vec<WindowJson>,
    limit_reached_type: Option<&'a str>,
}

impl<'a> From<&'a RateLimitSnapshot> for FamilyJson<'a> {
    fn from(s: &'a RateLimitSnapshot) -> Self {
        Self {
            limit_id: s.limit_id.as_deref(),
            limit_name: s.limit_name.as_deref(),
            windows: s
                .windows_by_length()
                .into_iter()
                .map(WindowJson::from)
                .collect(),
            limit_reached_type: s.rate_limit_reached_type.as_deref(),
        }
    }
}

/// A seat's own spend control (`individual_limit`) in `status --json`.
#[derive(Serialize)]
struct SpendLimitJson<'a> {
    limit: &'a str,
    used: &'a str,
    remaining_percent: f64,
    resets_at: Option<DateTime<Utc>>,
}

#[derive(Serialize)]
struct CreditsJson<'a> {
    has_credits: bool,
    unlimited: bool,
    balance: Option<&'a str>,
}

#[derive(Serialize)]
struct LimitJson<'a> {
    name: &'a str,
    five_hour: Option<WindowJson>,
    weekly: Option<WindowJson>,
    other_windows: Vec<WindowJson>,
}

/// One account in `status --json`.
#[derive(Serialize)]
struct StatusJson<'a> {
    id: &'a str,
    name: &'a str,
    email: Option<&'a str>,
    plan: Option<&'a str>,
    active: bool,
    enabled: bool,
    /// `ok`, `limited`, `needs_login`, `error` or `api_key`.
    state: &'static str,
    error: Option<String>,
    hint: Option<String>,
    five_hour: Option<WindowJson>,
    weekly: Option<WindowJson>,
    other_windows: Vec<WindowJson>,
    credits: Option<CreditsJson<'a>>,
    limit_reached_type: Option<&'a str>,
    additional: Vec<LimitJson<'a>>,
    /// Every limit family by `limit_id`, the account's quota (`codex`) first.
    families: Vec<FamilyJson<'a>>,
    individual_limit: Option<SpendLimitJson<'a>>,
    /// Rate-limit reset credits; `null` when they could not be read.
    reset_credits: Option<&'a ResetCredits>,
}

#[derive(Serialize)]
struct StatusListJson<'a> {
    fetched_at: DateTime<Utc>,
    accounts: Vec<StatusJson<'a>>,
}

/// What `status` found for one account.
enum Outcome {
    Usage(Box<UsageReport>),
    ApiKey,
    Failed {
        needs_login: bool,
        message: String,
        hint: Option<String>,
    },
}

impl Outcome {
    fn state(&self) -> &'static str {
        match self {
            Outcome::Usage(report) if report.is_exhausted() => "limited",
            Outcome::Usage(_) => "ok",
            Outcome::ApiKey => "api_key",
            Outcome::Failed {
                needs_login: true, ..
            } => "needs_login",
            Outcome::Failed { .. } => "error",
        }
    }
}

fn failed(err: &color_eyre::eyre::Report) -> Outcome {
    let hints = crate::errors::hints(err);
    let rendered = render_error(err);
    let message = rendered
        .lines()
        .next()
        .unwrap_or_default()
        .trim_start_matches("error: ")
        .to_owned();
    Outcome::Failed {
        needs_login: needs_login(err).is_some(),
        message,
        hint: hints.into_iter().next(),
    }
}

pub fn run_status(global: &GlobalArgs, args: StatusArgs) -> Result<ExitCode> {
    let ctx = Context::new(global)?;
    ctx.first_run_import();
    let file = ctx.store.load()?;
    if file.accounts.is_empty() {
        if args.json {
            emit_json(&StatusListJson {
                fetched_at: Utc::now(),
                accounts: Vec::new(),
            })?;
        } else {
            eprintln!(
                "No accounts stored.\nhint: add one with `cs-tui accounts add NAME` or `cs-tui accounts import`"
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let backend = Backend::from_env()?;
    let http = http_client(&ctx.store)?;
    let timeout = Duration::from_secs(args.timeout.max(1));
    let runtime = runtime()?;
    let fetched: Option<Vec<(Outcome, Option<ResetCredits>)>> =
        until_interrupted(&runtime, async {
            let fetches = file.accounts.iter().map(|account| {
                let (store, http, backend) = (&ctx.store, &http, &backend);
                async move {
                    if !account.is_chatgpt() {
                        return (Outcome::ApiKey, None);
                    }
                    let usage = tokio::time::timeout(
                        timeout,
                        fetch_usage_with(store, http, backend, &account.id),
                    )
                    .await;
                    // The reset credits are read after the usage, with the tokens its read may
                    // have refreshed (one refresh per account, never two racing); an old backend
                    // without the endpoint leaves them unknown and fails nothing.
                    let credits = match &usage {
                        Ok(Ok(_)) => match tokio::time::timeout(
                            timeout,
                            fetch_reset_credits_with(store, http, backend, &account.id),
                        )
                        .await
                        {
                            Ok(Ok(credits)) => Some(credits),
                            Ok(Err(err)) => {
                                tracing::info!(account = %account.name, "reset credits: {err:#}");
                                None
                            }
                            Err(_) => None,
                        },
                        _ => None,
                    };
                    let outcome = match usage {
                        Ok(Ok(report)) => Outcome::Usage(Box::new(report)),
                        Ok(Err(err)) => {
                            tracing::warn!(account = %account.name, "usage: {err:#}");
                            failed(&err)
                        }
                        Err(_) => Outcome::Failed {
                            needs_login: false,
                            message: format!(
                                "no answer within {}s for account {:?}",
                                timeout.as_secs(),
                                account.name
                            ),
                            hint: Some("try again, or raise --timeout".into()),
                        },
                    };
                    (outcome, credits)
                }
            });
            futures_util::future::join_all(fetches).await
        });
    // A fetch that timed out may have left a refresh under way whose server already rotated
    // the refresh token: its answer must reach the store before the process ends.
    let saved = finish_refreshes(&runtime, &ctx.store);
    let Some(fetched) = fetched else {
        return Ok(ExitCode::from(INTERRUPTED));
    };
    let (outcomes, credits): (Vec<Outcome>, Vec<Option<ResetCredits>>) =
        fetched.into_iter().unzip();
    // Reload: refreshes during the fetch may have changed plans and statuses.
    let file = ctx.store.load().unwrap_or(file);
    let any_failed = !saved || outcomes.iter().any(|o| matches!(o, Outcome::Failed { .. }));
    if args.json {
        emit_json(&status_json(&file, &outcomes, &credits))?;
    } else {
        emit(&status_table(&file, &outcomes, &credits, Utc::now()))?;
    }
    Ok(if any_failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn windows_json(
    snapshot: &RateLimitSnapshot,
) -> (Option<WindowJson>, Option<WindowJson>, Vec<WindowJson>) {
    (
        snapshot.five_hour().map(WindowJson::from),
        snapshot.weekly().map(WindowJson::from),
        snapshot
            .windows()
            .filter(|w| matches!(w.kind(), WindowKind::Other(_)))
            .map(WindowJson::from)
            .collect(),
    )
}

fn status_json<'a>(
    file: &'a AccountsFile,
    outcomes: &'a [Outcome],
    credits: &'a [Option<ResetCredits>],
) -> StatusListJson<'a> {
    let accounts = file
        .accounts
        .iter()
        .zip(outcomes)
        .zip(credits)
        .map(|((account, outcome), reset_credits)| {
            let mut entry = StatusJson {
                id: &account.id,
                name: &account.name,
                email: account.email.as_deref(),
                plan: account.plan.as_deref(),
                active: file.active.as_deref() == Some(account.id.as_str()),
                enabled: account.enabled,
                state: outcome.state(),
                error: None,
                hint: None,
                five_hour: None,
                weekly: None,
                other_windows: Vec::new(),
                credits: None,
                limit_reached_type: None,
                additional: Vec::new(),
                families: Vec::new(),
                individual_limit: None,
                reset_credits: reset_credits.as_ref(),
            };
            match outcome {
                Outcome::Usage(report) => {
                    let snapshot = &report.snapshot;
                    (entry.five_hour, entry.weekly, entry.other_windows) = windows_json(snapshot);
                    entry.plan = report.plan.as_deref().or(entry.plan);
                    entry.credits = snapshot.credits.as_ref().map(|c| CreditsJson {
                        has_credits: c.has_credits,
                        unlimited: c.unlimited,
                        balance: c.balance.as_deref(),
                    });
                    entry.limit_reached_type = snapshot.rate_limit_reached_type.as_deref();
                    entry.families = std::iter::once(snapshot)
                        .chain(report.additional.iter().map(|(_, s)| s))
                        .map(FamilyJson::from)
                        .collect();
                    entry.individual_limit =
                        snapshot.individual_limit.as_ref().map(|l| SpendLimitJson {
                            limit: &l.limit,
                            used: &l.used,
                            remaining_percent: l.remaining_percent,
                            resets_at: l.resets_at.and_then(|s| DateTime::from_timestamp(s, 0)),
                        });
                    entry.additional = report
                        .additional
                        .iter()
                        .map(|(name, snapshot)| {
                            let (five_hour, weekly, other_windows) = windows_json(snapshot);
                            LimitJson {
                                name,
                                five_hour,
                                weekly,
                                other_windows,
                            }
                        })
                        .collect();
                }
                Outcome::Failed { message, hint, .. } => {
                    entry.error = Some(message.clone());
                    entry.hint = hint.clone();
                }
                Outcome::ApiKey => {}
            }
            entry
        })
        .collect();
    StatusListJson {
        fetched_at: Utc::now(),
        accounts,
    }
}

fn percent(window: Option<&RateLimitWindow>) -> String {
    window
        .map(|w| format!("{:.0}%", w.used_percent))
        .unwrap_or_else(|| "-".into())
}

fn resets(window: Option<&RateLimitWindow>, now: DateTime<Utc>) -> String {
    window
        .and_then(|w| w.resets_at)
        .and_then(|s| DateTime::from_timestamp(s, 0))
        .map(|t| relative_time(t, now))
        .unwrap_or_else(|| "-".into())
}

/// "2, first expires in 3d", "-" when none or unknown.
fn reset_credits_cell(credits: Option<&ResetCredits>, now: DateTime<Utc>) -> String {
    match credits {
        Some(c) if c.available > 0 => match c.nearest_expires_at {
            Some(at) => format!("{}, first expires {}", c.available, relative_time(at, now)),
            None => c.available.to_string(),
        },
        Some(_) => "0".to_owned(),
        None => "-".to_owned(),
    }
}

fn status_table(
    file: &AccountsFile,
    outcomes: &[Outcome],
    credits: &[Option<ResetCredits>],
    now: DateTime<Utc>,
) -> String {
    let mut problems = Vec::new();
    let exhausted_with_credit: Vec<&str> = file
        .accounts
        .iter()
        .zip(outcomes)
        .zip(credits)
        .filter(|((_, outcome), credits)| {
            matches!(outcome, Outcome::Usage(r) if r.is_exhausted())
                && credits.as_ref().is_some_and(|c| c.available > 0)
        })
        .map(|((account, _), _)| account.name.as_str())
        .collect();
    let rows = file
        .accounts
        .iter()
        .zip(outcomes)
        .zip(credits)
        .map(|((account, outcome), reset_credits)| {
            let (five, weekly, state) = match outcome {
                Outcome::Usage(report) => {
                    let s = &report.snapshot;
                    let state = if report.is_exhausted() {
                        match s
                            .available_again_at()
                            .and_then(|t| DateTime::from_timestamp(t, 0))
                        {
                            Some(t) => format!("limit reached, back {}", relative_time(t, now)),
                            None => "limit reached".to_owned(),
                        }
                    } else {
                        "ok".to_owned()
                    };
                    (Some(s.five_hour()), Some(s.weekly()), state)
                }
                Outcome::ApiKey => (None, None, "api key (no ChatGPT limits)".to_owned()),
                Outcome::Failed {
                    needs_login,
                    message,
                    hint,
                } => {
                    problems.push(format!(
                        "{}: {message}{}",
                        account.name,
                        hint.as_deref()
                            .map(|h| format!("\n  hint: {h}"))
                            .unwrap_or_default()
                    ));
                    let state = if *needs_login {
                        format!("needs login: run `{}`", relogin_command(&account.name))
                    } else {
                        "error (see below)".to_owned()
                    };
                    (None, None, state)
                }
            };
            vec![
                active_marker(file, account),
                account.name.clone(),
                percent(five.flatten()),
                resets(five.flatten(), now),
                percent(weekly.flatten()),
                resets(weekly.flatten(), now),
                yes_no(account.enabled),
                reset_credits_cell(reset_credits.as_ref(), now),
                state,
            ]
        })
        .collect();
    let mut text = table(
        &[
            "",
            "NAME",
            "5H",
            "RESETS",
            "WEEKLY",
            "RESETS",
            "AUTO",
            "RESET CREDITS",
            "STATE",
        ],
        rows,
    );
    // Windows the columns do not hold (a 30-day window), and the limits of particular
    // models (other limit families): one line each under the table.
    let mut extra = Vec::new();
    for (account, outcome) in file.accounts.iter().zip(outcomes) {
        let Outcome::Usage(report) = outcome else {
            continue;
        };
        let describe = |s: &RateLimitSnapshot, only_other: bool| -> String {
            s.windows()
                .filter(|w| !only_other || matches!(w.kind(), WindowKind::Other(_)))
                .map(|w| format!("{} {:.0}%", w.kind().label(), w.used_percent))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let other = describe(&report.snapshot, true);
        if !other.is_empty() {
            extra.push(format!("{}: {other}", account.name));
        }
        if let Some(spend) = &report.snapshot.individual_limit {
            extra.push(format!(
                "{}: spend {} of {}",
                account.name, spend.used, spend.limit
            ));
        }
        for (name, family) in &report.additional {
            extra.push(format!(
                "{} · {name}: {}",
                account.name,
                describe(family, false)
            ));
        }
    }
    if !extra.is_empty() {
        text.push('\n');
        for line in extra {
            text.push_str(&line);
            text.push('\n');
        }
    }
    if let Some(name) = exhausted_with_credit.first() {
        text.push_str(&format!(
            "\n{} exhausted and can be reset with a credit: `cs-tui accounts reset {name}`\n",
            exhausted_with_credit.join(", ")
        ));
    }
    if !problems.is_empty() {
        text.push('\n');
        for problem in problems {
            text.push_str(&problem);
            text.push('\n');
        }
    }
    text
}

/// An aligned table; the last column is not padded.
fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        let last = cells.len().saturating_sub(1);
        for (i, (cell, width)) in cells.iter().zip(&widths).enumerate() {
            if *width == 0 {
                continue;
            }
            out.push_str(cell);
            if i < last {
                out.push_str(&" ".repeat(width - cell.chars().count() + 2));
            }
        }
        out.trim_end().to_owned() + "\n"
    };
    let mut text = line(headers.to_vec());
    for row in &rows {
        text.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    text
}

/// "in 2h 13m", "3d ago", "just now".
fn relative_time(at: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let delta = at - now;
    let secs = delta.num_seconds();
    if secs.abs() < 60 {
        return if secs >= 0 { "in <1m" } else { "just now" }.to_owned();
    }
    let total_minutes = secs.unsigned_abs() / 60;
    let (days, hours, minutes) = (
        total_minutes / 1440,
        total_minutes / 60 % 24,
        total_minutes % 60,
    );
    let span = match (days, hours) {
        (0, 0) => format!("{minutes}m"),
        (0, h) if minutes == 0 => format!("{h}h"),
        (0, h) => format!("{h}h {minutes}m"),
        (d, 0) => format!("{d}d"),
        (d, h) => format!("{d}d {h}h"),
    };
    if secs > 0 {
        format!("in {span}")
    } else {
        format!("{span} ago")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;

    #[test]
    fn relative_times_read_naturally() {
        let now = Utc::now();
        let cases = [
            (TimeDelta::seconds(20), "in <1m"),
            (TimeDelta::seconds(-20), "just now"),
            (TimeDelta::minutes(5), "in 5m"),
            (TimeDelta::minutes(-125), "2h 5m ago"),
            (TimeDelta::hours(3), "in 3h"),
            (TimeDelta::days(3) + TimeDelta::hours(4), "in 3d 4h"),
            (TimeDelta::days(-2), "2d ago"),
        ];
        for (delta, want) in cases {
            assert_eq!(relative_time(now + delta, now), want, "{delta:?}");
        }
    }

    #[test]
    fn tables_align_and_skip_empty_columns() {
        let text = table(
            &["", "NAME", "STATE"],
            vec![
                vec!["*".into(), "alice".into(), "ok".into()],
                vec![String::new(), "bo".into(), "needs login".into()],
            ],
        );
        assert_eq!(
            text,
            "   NAME   STATE\n*  alice  ok\n   bo     needs login\n"
        );
        let no_marker = table(&["", "A"], vec![vec![String::new(), "x".into()]]);
        assert_eq!(no_marker, "A\nx\n");
    }
}
