//! Which account a session starts on, and its first login.

use color_eyre::eyre::{Result, bail, eyre};

use crate::account_id::AccountId;
use crate::errors::with_hint;
use crate::proxy::core;
use crate::proxy::directory::{AccountDirectory, DirAccount};
use crate::proxy::policy::{self, Candidate, Choice, PolicyConfig};
use crate::proxy::upstream::ControlConnection;
use crate::quota::AccountLimits;

/// Which account to start on, decided from the store and `/wham/usage`.
pub(crate) struct StartPlan {
    pub(crate) accounts: Vec<DirAccount>,
    /// Accounts to try, best first.
    pub(crate) order: Vec<AccountId>,
}

pub(crate) async fn plan_start<D: AccountDirectory>(
    dir: &D,
    config: &PolicyConfig,
) -> Result<StartPlan> {
    let accounts = dir.list().await?;
    let switchable: Vec<&DirAccount> = accounts.iter().filter(|a| a.switchable()).collect();
    if switchable.is_empty() {
        let hint = if accounts.is_empty() {
            "add one with `cs-tui accounts import` (reads ~/.codex/auth.json) or `cs-tui accounts add NAME`"
        } else {
            "log in again with `cs-tui accounts add NAME`; API-key accounts cannot be switched in a session"
        };
        return Err(with_hint(
            eyre!("no stored ChatGPT account can start a session"),
            hint,
        ));
    }
    let preferred = dir.preferred().await.ok().flatten();
    let first = switchable
        .iter()
        .find(|a| preferred.as_ref() == Some(&a.id))
        .or_else(|| switchable.iter().find(|a| a.enabled))
        .unwrap_or(&switchable[0]);
    let mut order = vec![first.id.clone()];
    // Start on an account that can serve: check the preferred one's quota first.
    let usage = dir.fetch_usage(&first.id).await.ok();
    let exhausted = usage
        .as_ref()
        .and_then(AccountLimits::quota)
        .is_some_and(|s| s.is_exhausted() || policy::trigger_for_snapshot(s, config).is_some());
    if exhausted {
        let ids: Vec<AccountId> = switchable
            .iter()
            .filter(|a| a.id != first.id)
            .map(|a| a.id.clone())
            .collect();
        let mut candidates: Vec<Candidate> = Vec::new();
        for id in ids {
            let snapshot = dir
                .fetch_usage(&id)
                .await
                .ok()
                .and_then(|l| l.quota().cloned());
            let account = accounts.iter().find(|a| a.id == id).expect("listed");
            candidates.push(Candidate {
                id: id.clone(),
                name: account.name.clone(),
                enabled: account.enabled,
                needs_login: false,
                snapshot,
                switched_away_at: None,
                workspace: account.chatgpt_account_id.clone(),
            });
        }
        if let Choice::Switch { to } = policy::choose_best(
            &candidates,
            Some(&first.id),
            chrono::Utc::now().timestamp(),
            config,
        ) {
            order.insert(0, to);
        }
    }
    for account in &switchable {
        if !order.contains(&account.id) {
            order.push(account.id.clone());
        }
    }
    Ok(StartPlan {
        accounts: accounts.clone(),
        order,
    })
}

pub(crate) async fn login_first_usable<D: AccountDirectory>(
    dir: &D,
    control: &ControlConnection,
    plan: &StartPlan,
) -> Result<(DirAccount, Option<AccountLimits>)> {
    let mut failures = Vec::new();
    for id in &plan.order {
        let account = plan
            .accounts
            .iter()
            .find(|a| &a.id == id)
            .expect("plan order holds listed ids");
        match core::login_and_confirm(dir, control, account).await {
            Ok(snapshot) => {
                if let Err(err) = dir.mark_active(&account.id).await {
                    tracing::warn!("recording the active account failed: {err:#}");
                }
                return Ok((account.clone(), snapshot));
            }
            Err(err) => {
                tracing::warn!(account = %account.name, "starting login failed: {err:#}");
                failures.push(format!("{}: {err:#}", account.name));
            }
        }
    }
    bail!(
        "no stored account could be logged in ({})",
        failures.join("; ")
    )
}
