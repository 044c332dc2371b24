//! `cs-tui accounts …`.
//!
//! Human output is an aligned table with relative times; `--json` output is stable (fields are
//! only ever added) and documented in README.md. No output, error or log line holds a token.

use std::process::ExitCode;

use chrono::{DateTime, Utc};
use color_eyre::eyre::{Result, eyre};
use serde::Serialize;

use super::Env;
use super::output::{active_marker, confirm, emit, emit_json, relative_time, table, yes_no};
use crate::account_id::AccountId;
use crate::accounts::codex_auth::auth_json_path;
use crate::accounts::store::{unsupported_sign_in_state, validate_name};
use crate::accounts::tokens::relogin_command;
use crate::accounts::{
    Account, AccountAuth, AccountStatus, AccountsFile, Backend, ImportOutcome, Imported,
    RefreshPolicy, Store, ensure_fresh_with, import_auth, import_auth_file,
};
use crate::cli::{AccountsCommand, AddArgs, ImportArgs, ListArgs};
use crate::errors::{render_error, with_hint};
use crate::proxy::events::ProxyCommand;

/// What every `accounts` command works on: the [`Env`] and its store.
pub(super) struct Context<'a> {
    pub env: &'a Env,
    pub store: Store,
}

impl<'a> Context<'a> {
    pub(super) fn new(env: &'a Env) -> Result<Self> {
        Ok(Self {
            env,
            store: env.store()?,
        })
    }

    /// On first run, imports the current Codex login and says so. A problem with it is a
    /// warning: it must not stop the command the user asked for.
    pub(super) fn first_run_import(&self) {
        match self.env.import_codex_login() {
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

pub(super) fn run(env: &Env, cmd: AccountsCommand) -> Result<ExitCode> {
    let ctx = Context::new(env)?;
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
    let result = run_accounts_command(&ctx, cmd);
    if changes_the_set && matches!(result, Ok(ExitCode::SUCCESS)) {
        env.announce(&ProxyCommand::AccountsChanged);
    }
    result
}

fn run_accounts_command(ctx: &Context, cmd: AccountsCommand) -> Result<ExitCode> {
    match cmd {
        AccountsCommand::Import(args) => {
            // Another login imported first must not keep the current Codex login out of the
            // store; importing that login itself is the first-run import.
            if args.file.is_some() {
                ctx.first_run_import();
            }
            import(ctx, args)
        }
        AccountsCommand::Add(args) => {
            ctx.first_run_import();
            add(ctx, args)
        }
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
        AccountsCommand::Reset { name, yes } => super::reset::run(ctx, &name, yes),
    }
}

/// "alice (alice@example.com, plus)".
pub(super) fn describe(account: &Account) -> String {
    let details: Vec<&str> = [account.email.as_deref(), account.plan.as_deref()]
        .into_iter()
        .flatten()
        .collect();
    let details = match (&account.auth, details.is_empty()) {
        (AccountAuth::ApiKey { .. }, _) => "API key".to_owned(),
        (AccountAuth::Unknown(unknown), _) => format!(
            "sign-in `{}` from a newer cs-tui",
            unknown.kind().escape_debug()
        ),
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

fn add(ctx: &Context, args: AddArgs) -> Result<ExitCode> {
    validate_name(&args.name)?;
    let auth = ctx
        .env
        .runtime()
        .block_on(crate::accounts::login::login_with_codex(
            &ctx.store,
            ctx.env.codex_bin(),
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
    id: &'a AccountId,
    name: &'a str,
    email: Option<&'a str>,
    plan: Option<&'a str>,
    /// `chatgpt`, `api_key`, or a newer cs-tui's kind (then `status` is `unsupported_sign_in`).
    kind: &'a str,
    chatgpt_account_id: Option<&'a str>,
    enabled: bool,
    active: bool,
    /// `ok`, `needs_login`, `unsupported_sign_in`, or a newer cs-tui's state.
    status: &'a str,
    status_reason: Option<String>,
    created_at: DateTime<Utc>,
    last_used_at: Option<DateTime<Utc>>,
    last_refreshed_at: Option<DateTime<Utc>>,
    access_token_expires_at: Option<DateTime<Utc>>,
    subscription_active_until: Option<DateTime<Utc>>,
}

#[derive(Serialize)]
struct ListJson<'a> {
    active: Option<&'a AccountId>,
    accounts: Vec<AccountJson<'a>>,
}

fn account_json<'a>(file: &'a AccountsFile, account: &'a Account) -> AccountJson<'a> {
    let (status, status_reason) = match (account.unsupported_sign_in(), &account.status) {
        // Whatever its stored state, this version cannot use it.
        (Some(kind), _) => ("unsupported_sign_in", Some(unsupported_sign_in_state(kind))),
        (None, AccountStatus::Ok) => ("ok", None),
        (None, AccountStatus::NeedsLogin { reason }) => ("needs_login", Some(reason.clone())),
        (None, AccountStatus::Unknown { state, .. }) => (state.as_str(), None),
    };
    AccountJson {
        id: &account.id,
        name: &account.name,
        email: account.email.as_deref(),
        plan: account.plan.as_deref(),
        kind: account.sign_in_kind(),
        chatgpt_account_id: account.chatgpt_account_id.as_deref(),
        enabled: account.enabled,
        active: file.active.as_ref() == Some(&account.id),
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
            active: file.active_account().map(|a| &a.id),
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
                (_, AccountAuth::Unknown(unknown)) => unsupported_sign_in_state(unknown.kind()),
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
                // Automatic switching never picks an account it cannot use.
                if a.unsupported_sign_in().is_some() {
                    "-".to_owned()
                } else {
                    yes_no(a.enabled)
                },
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
    if !yes
        && !confirm(
            &format!(
                "Remove {} and its tokens from the store?",
                describe(&target)
            ),
            &format!("removing account {:?}", target.name),
            &format!("cs-tui accounts remove {}", target.name),
        )?
    {
        eprintln!("Nothing removed.");
        return Ok(ExitCode::FAILURE);
    }
    let (removed, was_active) = ctx.store.update(|file| {
        let was_active = file.active.as_ref() == Some(&target.id);
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
    let (name, changed, unsupported) = ctx.store.update(|file| {
        let account = file.resolve_mut(query)?;
        let changed = account.enabled != enabled;
        account.enabled = enabled;
        let unsupported = account.unsupported_sign_in().map(unsupported_sign_in_state);
        Ok((account.name.clone(), changed, unsupported))
    })?;
    let message = match (enabled, changed) {
        (true, true) => format!("Enabled {name:?}: automatic switching may pick it."),
        (false, true) => format!(
            "Disabled {name:?}: automatic switching will not pick it (switching by hand still works)."
        ),
        (true, false) => format!("{name:?} is enabled already."),
        (false, false) => format!("{name:?} is disabled already."),
    };
    // The flag is kept for the newer cs-tui that can use the account; this one never does.
    let message = match unsupported {
        Some(state) => format!(
            "{message}\n{name:?} has an {state}: this cs-tui never switches to it either way."
        ),
        None => message,
    };
    emit(&format!("{message}\n"))?;
    Ok(ExitCode::SUCCESS)
}

fn use_account(ctx: &Context, query: &str) -> Result<ExitCode> {
    let account = ctx.store.update(|file| {
        let account = file.resolve(query)?.clone();
        account.ensure_supported()?;
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
    let http = ctx.env.http()?;
    let mut failed = false;
    let mut interrupted = false;
    for target in targets {
        if let Err(err) = target.ensure_supported() {
            failed = true;
            eprintln!("{}", render_error(&err));
            continue;
        }
        if !target.is_chatgpt() {
            emit(&format!(
                "{}: signs in with an API key; there is nothing to refresh.\n",
                target.name
            ))?;
            continue;
        }
        let Some(result) = ctx.env.until_interrupted(ensure_fresh_with(
            &ctx.store,
            http,
            &backend,
            &target.id,
            RefreshPolicy::Now,
        )) else {
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
    if !ctx.env.finish_refreshes(&ctx.store) {
        failed = true;
    }
    Ok(if interrupted {
        ExitCode::from(super::INTERRUPTED)
    } else if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
