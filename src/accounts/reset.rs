//! `cs-tui accounts reset NAME`: redeem one rate-limit reset credit of an exhausted account.
//!
//! A credit only clears an exhausted window (PROTOCOL.md §9), so the account's usage is read
//! first and the command refuses when it has room. It asks before redeeming, and nothing is
//! ever redeemed automatically. The redemption goes through Codex's own protocol method
//! (`account/rateLimitResetCredit/consume`), so the backend sees Codex do it: on the control
//! connection of the running session whose active account it is, else on a short-lived
//! app-server logged into that account. One idempotency key (a fresh UUID) names the action
//! and is reused by every retry of it, so a lost answer never spends a second credit.

use std::time::Duration;

use color_eyre::eyre::{Result, WrapErr, bail, eyre};
use tokio::sync::mpsc;

use super::store::{Account, AccountAuth, Store};
use super::tokens::{Backend, RefreshPolicy, ensure_fresh_with};
use crate::errors::with_hint;
use crate::proxy::app_server::{AppServer, AppServerOptions};
use crate::proxy::events::{NOT_THE_ACTIVE_ACCOUNT, ProxyCommand};
use crate::proxy::ipc;
use crate::proxy::upstream::{self, ClientIdentity, ControlConnection};

/// What a redemption did, as the app-server reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The account's windows were cleared.
    Reset,
    /// The backend found no exhausted window.
    NothingToReset,
    /// The account has no credit (left).
    NoCredit,
    /// The credit was redeemed already.
    AlreadyRedeemed,
    /// An outcome this version does not know.
    Other(String),
}

impl Outcome {
    pub fn parse(outcome: &str) -> Self {
        match outcome {
            "reset" => Self::Reset,
            "nothingToReset" => Self::NothingToReset,
            "noCredit" => Self::NoCredit,
            "alreadyRedeemed" => Self::AlreadyRedeemed,
            other => Self::Other(other.to_owned()),
        }
    }
}

/// Where the redemption ran.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Via {
    /// The running session whose active account it is.
    Session,
    /// A short-lived app-server of our own.
    OwnAppServer,
}

/// How long the short-lived app-server may take for the whole redemption.
const OWN_APP_SERVER_BUDGET: Duration = Duration::from_secs(60);

/// Redeems one credit of `account` with `idempotency_key`: through the session that runs on
/// it, else on an app-server of our own.
pub async fn redeem(
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
    for socket in ipc::session_sockets(store.dir()) {
        match ipc::send(&socket, &command).await {
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
    let AccountAuth::ChatGpt { access_token, .. } = &fresh.auth else {
        bail!(
            "{:?} is an API-key login, which has no reset credits",
            account.name
        );
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
            super::user_agent::save(store.dir(), user_agent);
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
