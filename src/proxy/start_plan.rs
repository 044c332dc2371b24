//! Which account a session starts on (placed among the pool's sessions), and its first login.

use std::collections::HashMap;

use color_eyre::eyre::{Result, bail, eyre};

use crate::account_id::AccountId;
use crate::errors::with_hint;
use crate::proxy::core::{self, fetch_usages};
use crate::proxy::directory::{AccountDirectory, DirAccount};
use crate::proxy::placement::{LOCK_WAIT, Peers, PlacementLock, PlanContext, occupancy, place};
use crate::proxy::policy::{self, Candidate, Choice, PolicyConfig};
use crate::proxy::pool::wire::KnownLimits;
use crate::proxy::pool::{SessionState, StatusCell};
use crate::proxy::upstream::ControlConnection;
use crate::quota::{AccountLimits, RateLimitSnapshot};

/// Which account to start on, decided from the store, the pool's other sessions and
/// `/wham/usage`.
pub(crate) struct StartPlan {
    pub(crate) accounts: Vec<DirAccount>,
    /// Accounts to try, best first.
    pub(crate) order: Vec<AccountId>,
    /// Where the account being logged in is published for the pool's other sessions.
    pub(crate) status: Option<StatusCell>,
}

/// Chooses the account a session starts on, and the ones to fall back on.
///
/// With the pool on, under `<store>/locks/placement.lock`: the other sessions are asked where
/// they are; with none, `accounts use` (the preferred account) decides, as for a session
/// alone, unless its quota is spent. With peers, [`place`] chooses on the pool's numbers
/// (one peer's snapshot, stale or missing accounts read here) counting the sessions on each
/// account, and the preferred account only breaks ties. The choice is published in our status
/// before the lock goes, so the next session to choose counts it.
pub(crate) async fn plan_start<D: AccountDirectory>(
    dir: &D,
    config: &PolicyConfig,
    context: &PlanContext,
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
    let lock = if context.pool {
        PlacementLock::acquire(&context.store_dir, LOCK_WAIT).await
    } else {
        None
    };
    let peers = Peers::ask(context, true).await;
    let first = if peers.statuses.is_empty() {
        alone(dir, config, &accounts, &switchable, preferred.as_ref()).await
    } else {
        among_peers(dir, config, context, &accounts, &peers, preferred.as_ref())
            .await
            .unwrap_or_else(|| default_first(&switchable, preferred.as_ref()))
    };
    let mut order = vec![first];
    for account in &switchable {
        if !order.contains(&account.id) {
            order.push(account.id.clone());
        }
    }
    if let Some(status) = &context.status
        && let Some(account) = accounts.iter().find(|a| a.id == order[0])
    {
        status.update(|s| {
            s.account = Some(account.to_ref());
            s.state = SessionState::Starting;
        });
    }
    drop(lock);
    Ok(StartPlan {
        accounts: accounts.clone(),
        order,
        status: context.status.clone(),
    })
}

/// The preferred account (`accounts use`), else the first enabled one, else the first.
fn default_first(switchable: &[&DirAccount], preferred: Option<&AccountId>) -> AccountId {
    switchable
        .iter()
        .find(|a| preferred == Some(&a.id))
        .or_else(|| switchable.iter().find(|a| a.enabled))
        .unwrap_or(&switchable[0])
        .id
        .clone()
}

/// A session alone: the preferred account, unless its quota is spent; then the best other.
async fn alone<D: AccountDirectory>(
    dir: &D,
    config: &PolicyConfig,
    accounts: &[DirAccount],
    switchable: &[&DirAccount],
    preferred: Option<&AccountId>,
) -> AccountId {
    let first = default_first(switchable, preferred);
    // Start on an account that can serve: check the preferred one's quota first.
    let usage = fetch_usages(dir, std::slice::from_ref(&first))
        .await
        .into_iter()
        .next()
        .and_then(|(_, read)| read.ok());
    let exhausted = usage
        .as_ref()
        .and_then(AccountLimits::quota)
        .is_some_and(|s| s.is_exhausted() || policy::trigger_for_snapshot(s, config).is_some());
    if !exhausted {
        return first;
    }
    let ids: Vec<AccountId> = switchable
        .iter()
        .filter(|a| a.id != first)
        .map(|a| a.id.clone())
        .collect();
    let snapshots: HashMap<AccountId, RateLimitSnapshot> = fetch_usages(dir, &ids)
        .await
        .into_iter()
        .filter_map(|(id, read)| Some((id, read.ok()?.quota()?.clone())))
        .collect();
    let candidates: Vec<Candidate> = accounts
        .iter()
        .filter(|a| ids.contains(&a.id))
        .map(|a| candidate(a, snapshots.get(&a.id).cloned()))
        .collect();
    match policy::choose_best(
        &candidates,
        Some(&first),
        chrono::Utc::now().timestamp(),
        config,
    ) {
        Choice::Switch { to } => to,
        Choice::NoneAvailable { .. } => first,
    }
}

/// A session among others: [`place`] on the pool's numbers, counting their sessions. `None`
/// when no account is eligible (the caller falls back on the preferred one, as alone).
async fn among_peers<D: AccountDirectory>(
    dir: &D,
    config: &PolicyConfig,
    context: &PlanContext,
    accounts: &[DirAccount],
    peers: &Peers,
    preferred: Option<&AccountId>,
) -> Option<AccountId> {
    let now = chrono::Utc::now();
    let stale_after = chrono::Duration::seconds(config.usage_stale_secs);
    let known: HashMap<&AccountId, &KnownLimits> = peers
        .snapshot
        .iter()
        .flat_map(|s| &s.accounts)
        .map(|k| (&k.account, k))
        .collect();
    let fresh = |k: &KnownLimits| {
        k.read_at
            .into_iter()
            .chain(k.heard_at)
            .max()
            .is_some_and(|at| now - at < stale_after)
    };
    // Read what the pool lacks or knows only from long ago, all at once.
    let to_read: Vec<AccountId> = accounts
        .iter()
        .filter(|a| a.switchable())
        .filter(|a| known.get(&a.id).is_none_or(|k| !fresh(k)))
        .map(|a| a.id.clone())
        .collect();
    let mut snapshots: HashMap<AccountId, RateLimitSnapshot> = fetch_usages(dir, &to_read)
        .await
        .into_iter()
        .filter_map(|(id, read)| Some((id, read.ok()?.quota()?.clone())))
        .collect();
    for (id, k) in known {
        if snapshots.contains_key(id) {
            continue;
        }
        let mut quota = k.quota.clone();
        // A limit hit the numbers do not show yet (a turn failed there): the account is out.
        if k.limit_hit && !quota.is_exhausted() {
            quota.rate_limit_reached_type = Some("usage_limit_reached".to_owned());
        }
        snapshots.insert(id.clone(), quota);
    }
    let candidates: Vec<Candidate> = accounts
        .iter()
        .map(|a| candidate(a, snapshots.get(&a.id).cloned()))
        .collect();
    let occupancy = occupancy(&peers.statuses);
    match place(
        &candidates,
        &occupancy,
        context.placement,
        None,
        preferred,
        now.timestamp(),
        config,
    ) {
        Choice::Switch { to } => Some(to),
        Choice::NoneAvailable { .. } => None,
    }
}

fn candidate(account: &DirAccount, snapshot: Option<RateLimitSnapshot>) -> Candidate {
    Candidate {
        id: account.id.clone(),
        name: account.name.clone(),
        enabled: account.enabled,
        needs_login: !account.switchable(),
        snapshot,
        switched_away_at: None,
        workspace: account.chatgpt_account_id.clone(),
    }
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
        // Falling back down the order: the peers count us where we try now.
        if let Some(status) = &plan.status {
            status.update(|s| s.account = Some(account.to_ref()));
        }
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
