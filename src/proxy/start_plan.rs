//! Which account a session starts on (placed among the pool's sessions), and its first login.

use std::collections::HashMap;

use color_eyre::eyre::{Result, bail, eyre};

use crate::account_id::AccountId;
use crate::errors::with_hint;
use crate::proxy::core::{self, fetch_usages};
use crate::proxy::directory::{AccountDirectory, DirAccount};
use crate::proxy::placement::{LOCK_WAIT, Peers, PlacementLock, PlanContext, occupancy, place};
use crate::proxy::policy::{self, Candidate, Choice, PolicyConfig};
use crate::proxy::pool::wire::{KnownLimits, PoolSnapshot};
use crate::proxy::pool::{PoolFact, PoolHandle, SessionState, StatusCell};
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
/// With the pool on, the other sessions are asked where they are. With none, `accounts use`
/// (the preferred account) decides, as for a session alone, unless its quota is spent. With
/// peers, [`place`] chooses on the pool's numbers (one peer's snapshot; what it lacks or knows
/// only from long ago is read here) counting the sessions on each account, and the preferred
/// account only breaks ties.
///
/// The numbers are gathered first (a read waits for the app-server's start); then, under
/// `<store>/locks/placement.lock`, the peers are asked again, the account chosen, and the
/// choice published in our status before the lock goes, so the next session to choose
/// counts it.
pub(crate) async fn plan_start<D: AccountDirectory>(
    dir: &D,
    config: &PolicyConfig,
    context: &PlanContext,
) -> Result<StartPlan> {
    let accounts = dir.list().await?;
    let switchable: Vec<&DirAccount> = accounts.iter().filter(|a| a.switchable()).collect();
    if switchable.is_empty() {
        let hint = if accounts.is_empty() {
            "add one with `cs-tui accounts import` (reads ~/.codex/auth.json) or `cs-tui accounts add NAME`; `cs-tui demo` shows cs-tui at work without a login"
        } else {
            "log in again with `cs-tui accounts add NAME`; API-key accounts, and sign-in kinds only a newer cs-tui knows, cannot be switched in a session"
        };
        return Err(with_hint(
            eyre!("no stored ChatGPT account can start a session"),
            hint,
        ));
    }
    let preferred = dir.preferred().await.ok().flatten();
    let first = default_first(&switchable, preferred.as_ref());

    // The numbers, without the lock.
    let first_look = Peers::ask(context, true, &[]).await;
    let mut numbers = if first_look.statuses.is_empty() {
        alone_numbers(dir, config, &switchable, &first).await
    } else {
        pool_numbers(dir, config, &switchable, first_look.snapshot.as_ref()).await
    };

    // The choice, under the lock.
    let lock = if context.pool {
        PlacementLock::acquire(&context.store_dir, LOCK_WAIT).await
    } else {
        None
    };
    // A session that did not answer the first look is not asked again.
    let peers = Peers::ask(context, false, &first_look.failed).await;
    let chosen = if peers.statuses.is_empty() {
        alone(config, &accounts, &first, &numbers)
    } else {
        // A peer appeared since the first look: read what the placement needs.
        let missing: Vec<AccountId> = switchable
            .iter()
            .filter(|a| !numbers.contains_key(&a.id))
            .map(|a| a.id.clone())
            .collect();
        read_into(dir, &missing, &mut numbers).await;
        let candidates: Vec<Candidate> = accounts
            .iter()
            .map(|a| candidate(a, numbers.get(&a.id).cloned()))
            .collect();
        match place(
            &candidates,
            &occupancy(&peers.statuses),
            context.placement,
            None,
            preferred.as_ref(),
            chrono::Utc::now().timestamp(),
            config,
        ) {
            Choice::Switch { to } => to,
            // Nobody can serve: start where a session alone would, and show the real error.
            Choice::NoneAvailable { .. } => first.clone(),
        }
    };
    let mut order = vec![chosen];
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

type Numbers = HashMap<AccountId, RateLimitSnapshot>;

/// Whether these numbers keep a session from starting there.
fn spent(snapshot: &RateLimitSnapshot, config: &PolicyConfig) -> bool {
    snapshot.is_exhausted() || policy::trigger_for_snapshot(snapshot, config).is_some()
}

/// Reads these accounts' usage, all at once, into `numbers` (a failed read leaves what was
/// known).
async fn read_into<D: AccountDirectory>(dir: &D, ids: &[AccountId], numbers: &mut Numbers) {
    for (id, read) in fetch_usages(dir, ids).await {
        if let Some(quota) = read.ok().and_then(|l| l.quota().cloned()) {
            numbers.insert(id, quota);
        }
    }
}

/// What a session alone needs: the preferred account's usage, and the others' only when it
/// is spent.
async fn alone_numbers<D: AccountDirectory>(
    dir: &D,
    config: &PolicyConfig,
    switchable: &[&DirAccount],
    first: &AccountId,
) -> Numbers {
    let mut numbers = Numbers::new();
    read_into(dir, std::slice::from_ref(first), &mut numbers).await;
    if numbers.get(first).is_some_and(|s| spent(s, config)) {
        let others: Vec<AccountId> = switchable
            .iter()
            .filter(|a| &a.id != first)
            .map(|a| a.id.clone())
            .collect();
        read_into(dir, &others, &mut numbers).await;
    }
    numbers
}

/// A session alone: the preferred account, unless its quota is spent; then the best other.
fn alone(
    config: &PolicyConfig,
    accounts: &[DirAccount],
    first: &AccountId,
    numbers: &Numbers,
) -> AccountId {
    if !numbers.get(first).is_some_and(|s| spent(s, config)) {
        return first.clone();
    }
    let candidates: Vec<Candidate> = accounts
        .iter()
        .filter(|a| a.switchable())
        .map(|a| candidate(a, numbers.get(&a.id).cloned()))
        .collect();
    match policy::choose_best(
        &candidates,
        Some(first),
        chrono::Utc::now().timestamp(),
        config,
    ) {
        Choice::Switch { to } => to,
        Choice::NoneAvailable { .. } => first.clone(),
    }
}

/// The pool's numbers: one peer's snapshot, and a read of what it lacks or knows only from
/// longer ago than `usage_stale_secs`.
async fn pool_numbers<D: AccountDirectory>(
    dir: &D,
    config: &PolicyConfig,
    switchable: &[&DirAccount],
    snapshot: Option<&PoolSnapshot>,
) -> Numbers {
    let now = chrono::Utc::now();
    let stale_after = chrono::Duration::seconds(config.usage_stale_secs);
    let known: HashMap<&AccountId, &KnownLimits> = snapshot
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
    let to_read: Vec<AccountId> = switchable
        .iter()
        .filter(|a| known.get(&a.id).is_none_or(|k| !fresh(k)))
        .map(|a| a.id.clone())
        .collect();
    let mut numbers = Numbers::new();
    read_into(dir, &to_read, &mut numbers).await;
    for (id, k) in known {
        if numbers.contains_key(id) {
            continue;
        }
        let mut quota = k.quota.clone();
        // A limit hit the numbers do not show yet (a turn failed there): the account is out.
        if k.limit_hit && !quota.is_exhausted() {
            quota.rate_limit_reached_type = Some("usage_limit_reached".to_owned());
        }
        numbers.insert(id.clone(), quota);
    }
    numbers
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

/// Logs the app-server into the first account of the plan's order that will, falling back
/// down the order. Each login that fails is a first-hand fact the pool hears at once through
/// `pool` ([`login_failed`]), as a failed switch's is.
pub(crate) async fn login_first_usable<D: AccountDirectory>(
    dir: &D,
    control: &ControlConnection,
    plan: &StartPlan,
    pool: &PoolHandle,
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
                pool.broadcast(login_failed(dir, &account.id).await);
                failures.push(format!("{}: {err:#}", account.name));
            }
        }
    }
    bail!(
        "no stored account could be logged in ({})",
        failures.join("; ")
    )
}

/// What the pool hears of a login of `account` that failed: that it failed, not why (an
/// error can quote the backend), and whether the store now says it must log in again (a
/// rejected refresh token), so the peers read the store again.
async fn login_failed<D: AccountDirectory>(dir: &D, account: &AccountId) -> PoolFact {
    let needs_login = dir
        .list()
        .await
        .ok()
        .and_then(|accounts| accounts.into_iter().find(|a| &a.id == account))
        .is_some_and(|a| a.needs_login);
    PoolFact::LoginFailed {
        account: account.clone(),
        needs_login,
    }
}
