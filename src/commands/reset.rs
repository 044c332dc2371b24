//! `cs-tui accounts reset NAME`: redeem one rate-limit reset credit of an exhausted account.
//!
//! A credit only clears an exhausted window (docs/protocol.md §9), so the account's usage is read
//! first and the command refuses when it has room. It asks before redeeming, and nothing is
//! ever redeemed automatically. The redemption goes through Codex's own protocol method
//! (`account/rateLimitResetCredit/consume`), so the backend sees Codex do it: on the control
//! connection of the running session whose active account it is, else on a short-lived
//! app-server logged into that account. One idempotency key (a fresh UUID) names the action
//! and is reused by every retry of it, so a lost answer never spends a second credit.

use std::process::ExitCode;
use std::time::Duration;

use chrono::Utc;
use color_eyre::eyre::{Result, WrapErr, bail, eyre};
use tokio::sync::mpsc;

use super::accounts::Context;
use super::output::{confirm, emit, relative_time};
use crate::accounts::reset::Outcome;
use crate::accounts::reset_credits::fetch_reset_credits_with;
use crate::accounts::{
    Account, AccountAuth, Backend, RefreshPolicy, Store, ensure_fresh_with, fetch_usage_with,
};
use crate::errors::with_hint;
use crate::proxy::app_server::{AppServer, AppServerOptions};
use crate::proxy::events::{NOT_THE_ACTIVE_ACCOUNT, ProxyCommand};
use crate::proxy::upstream::{self, ClientIdentity, ControlConnection};
use crate::quota::RateLimitSnapshot;

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

pub(super) fn run(ctx: &Context, query: &str, yes: bool) -> Result<ExitCode> {
    let target = ctx.store.load()?.resolve(query)?.clone();
    target.ensure_supported()?;
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
    let http = ctx.env.http()?;
    let runtime = ctx.env.runtime();
    // One after the other: a token the first read refreshes serves the second.
    let (usage, credits) = runtime.block_on(async {
        let usage = fetch_usage_with(&ctx.store, http, &backend, &target.id).await;
        let credits = fetch_reset_credits_with(&ctx.store, http, &backend, &target.id).await;
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
    if !yes
        && !confirm(
            &format!(
                "{} is exhausted ({}). Redeem {which} to clear its limits now?",
                target.name,
                windows_summary(&usage.snapshot)
            ),
            &format!("redeeming a reset credit of {:?}", target.name),
            &format!("cs-tui accounts reset {}", target.name),
        )?
    {
        eprintln!("Nothing redeemed.");
        return Ok(ExitCode::FAILURE);
    }
    // One key for this action, reused by every retry of it.
    let key = uuid::Uuid::new_v4().to_string();
    tracing::info!(account = %target.name, idempotency_key = %key, "redeeming a reset credit");
    let (outcome, via) = runtime.block_on(redeem(
        &ctx.store,
        http,
        &backend,
        ctx.env.codex_bin(),
        &target,
        &key,
    ))?;
    let via = match via {
        Via::Session => " (through the running session)",
        Via::OwnAppServer => "",
    };
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
            ctx.env.announce(&ProxyCommand::RefreshUsage);
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

/// Where the redemption ran.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Via {
    /// The running session whose active account it is.
    Session,
    /// A short-lived app-server of our own.
    OwnAppServer,
}

/// How long the short-lived app-server may take for the whole redemption.
const OWN_APP_SERVER_BUDGET: Duration = Duration::from_secs(60);

/// Redeems one credit of `account` with `idempotency_key`: through the session that runs on
/// it, else on an app-server of our own.
async fn redeem(
    store: &Store,
    http: &reqwest::Client,
    backend: &Backend,
    codex_bin: &std::ffi::OsStr,
    account: &Account,
    idempotency_key: &str,
) -> Result<(Outcome, Via)> {
    let command = ProxyCommand::ConsumeResetCredit {
        account_id: account.id.clone(),
        idempotency_key: idempotency_key.to_owned(),
    };
    for socket in crate::ipc::session_sockets(store.dir()) {
        match crate::ipc::send(&socket, &command).await {
            Ok(answer) if answer.ok => return Ok((Outcome::parse(&answer.message), Via::Session)),
            Ok(answer) if answer.message == NOT_THE_ACTIVE_ACCOUNT => continue,
            Ok(answer) => {
                return Err(with_hint(
                    eyre!(
                        "the running session could not redeem a reset credit of {:?}: {}",
                        account.name,
                        answer.message
                    ),
                    "try again; a credit whose redemption went through is not spent twice",
                ));
            }
            Err(err) => tracing::debug!("stale session socket {}: {err:#}", socket.display()),
        }
    }
    let outcome = tokio::time::timeout(
        OWN_APP_SERVER_BUDGET,
        redeem_on_own_app_server(store, http, backend, codex_bin, account, idempotency_key),
    )
    .await
    .map_err(|_| eyre!("redeeming took longer than {OWN_APP_SERVER_BUDGET:?}"))??;
    Ok((outcome, Via::OwnAppServer))
}

async fn redeem_on_own_app_server(
    store: &Store,
    http: &reqwest::Client,
    backend: &Backend,
    codex_bin: &std::ffi::OsStr,
    account: &Account,
    idempotency_key: &str,
) -> Result<Outcome> {
    let fresh = ensure_fresh_with(store, http, backend, &account.id, RefreshPolicy::IfDue).await?;
    let access_token = match &fresh.auth {
        AccountAuth::ChatGpt { access_token, .. } => access_token,
        AccountAuth::ApiKey { .. } => bail!(
            "{:?} is an API-key login, which has no reset credits",
            account.name
        ),
        // `ensure_fresh_with` refuses these first.
        AccountAuth::Unknown(unknown) => {
            return Err(crate::accounts::store::unsupported_sign_in_error(
                &fresh.name,
                unknown.kind(),
            ));
        }
    };
    let chatgpt_account_id = fresh
        .chatgpt_account_id
        .clone()
        .ok_or_else(|| eyre!("{:?} has no ChatGPT account id", account.name))?;
    let codex_home = backend
        .codex_home
        .clone()
        .map(Ok)
        .unwrap_or_else(crate::paths::codex_home)?;
    // A private runtime directory named like a session's, so that a crashed run is cleaned
    // up by the next session (`<pid>-…`).
    let runtime_dir = store.dir().join("runtime").join(format!(
        "{}-reset-{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ));
    crate::paths::ensure_private_dir(store.dir().join("runtime").as_path())
        .wrap_err("creating the runtime directory")?;
    let server = AppServer::start(AppServerOptions {
        codex_bin: codex_bin.to_owned(),
        codex_home,
        runtime_dir: runtime_dir.join("app-server"),
        stderr_log: store
            .dir()
            .join("logs")
            .join(format!("app-server-reset-{}.log", std::process::id())),
        env: Vec::new(),
    })
    .await
    .wrap_err("starting `codex app-server` to redeem the credit")?;
    let result = async {
        let (events, _ignored) = mpsc::unbounded_channel();
        let identity = ClientIdentity::codex_tui(server.codex_version());
        let control = ControlConnection::connect(&server.addr(), &identity, events).await?;
        if let Some(user_agent) = control.user_agent() {
            crate::accounts::user_agent::save(store.dir(), user_agent);
        }
        control
            .login_with_tokens(access_token, &chatgpt_account_id, fresh.plan.as_deref())
            .await
            .wrap_err_with(|| format!("logging the app-server into {:?}", account.name))?;
        upstream::consume_reset_credit(&control, idempotency_key).await
    }
    .await;
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&runtime_dir);
    Ok(Outcome::parse(&result?))
}
