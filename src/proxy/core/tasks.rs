//! The I/O behind the core's effects, run by the actor: a switch in flight (choose on fresh
//! numbers, log in on the control connection, confirm, restore the old account when the login
//! fails), the login itself, usage and reset-credit reads with a timeout, a reset credit's
//! redemption, and the answer to a token refresh request. What they learn comes back to the
//! core as messages.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::Utc;
use color_eyre::eyre::{Result, eyre};
use futures_util::future::join_all;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};

use crate::account_id::AccountId;
use crate::proxy::directory::{AccountDirectory, DirAccount};
use crate::proxy::events::{AccountRef, ProxyEvent};
use crate::proxy::placement::{LOCK_WAIT, Peers, PlacementLock, PlanContext, occupancy, place};
use crate::proxy::policy::{self, Candidate, Choice, Mode};
use crate::proxy::upstream::{self, ControlConnection};
use crate::quota::{AccountLimits, RateLimitSnapshot};

use super::effects::SwitchPlan;
use super::state::candidate_of;
use super::switching::{SwitchFailure, SwitchOutcome, Target};
use super::{CommandReply, CoreMsg, Input};

/// How long one `/wham/usage` fetch may take before the account counts as unknown.
pub(super) const USAGE_TIMEOUT: Duration = Duration::from_secs(8);

/// A switch in flight: choose, log in on the control connection, confirm.
pub(super) struct SwitchTask<D: AccountDirectory> {
    pub dir: D,
    pub control: ControlConnection,
    pub events: broadcast::Sender<ProxyEvent>,
    pub plan: SwitchPlan,
    /// Where the session is among the pool's: an automatic choice counts the sessions on
    /// each account. `None`: the session chooses alone.
    pub placement: Option<PlanContext>,
}

impl<D: AccountDirectory> SwitchTask<D> {
    pub(super) async fn run(mut self) -> SwitchOutcome {
        let started = Instant::now();
        let mut fetched = Vec::new();
        let result = self.choose_and_login(&mut fetched).await;
        SwitchOutcome {
            pending_reason: self.plan.pending.reason.clone(),
            mode: self.plan.pending.mode,
            from: self.plan.from.clone(),
            fetched,
            result,
            started,
        }
    }

    fn name(&self, id: &AccountId) -> String {
        self.plan
            .accounts
            .iter()
            .find(|a| a.id == *id)
            .map(|a| a.name.clone())
            .unwrap_or_else(|| id.to_string())
    }

    async fn choose_and_login(
        &mut self,
        fetched: &mut Vec<(AccountId, AccountLimits)>,
    ) -> Result<(AccountId, Option<AccountLimits>), SwitchFailure> {
        let plan = &mut self.plan;
        let to = match plan.pending.target.clone() {
            Target::Account(id) => {
                // The user named it: check it on fresh numbers, a reset may have passed.
                let mut snapshot = plan
                    .snapshots
                    .get(&id)
                    .and_then(AccountLimits::quota)
                    .cloned();
                if let Some((_, Ok(fresh))) = fetch_usages(&self.dir, std::slice::from_ref(&id))
                    .await
                    .into_iter()
                    .next()
                {
                    snapshot = fresh.quota().cloned();
                    fetched.push((id.clone(), fresh));
                }
                if let Some(snapshot) = snapshot.filter(RateLimitSnapshot::is_exhausted) {
                    let until = snapshot
                        .available_again_at()
                        .and_then(|t| chrono::DateTime::from_timestamp(t, 0))
                        .map(|t| {
                            format!(" until {}", t.with_timezone(&chrono::Local).format("%H:%M"))
                        })
                        .unwrap_or_default();
                    return Err(SwitchFailure::Refused(format!(
                        "cannot switch to {}: it has hit its usage limit{until}",
                        self.name(&id)
                    )));
                }
                id
            }
            Target::Best => {
                // Fetch the usage of candidates whose numbers are stale, so the choice is
                // made on what the backend says now. Asked for by hand (`n`), every other
                // account is read again: a limit may have been lifted since the last read.
                let manual = plan.pending.mode == Mode::Manual;
                let stale: Vec<AccountId> = plan
                    .accounts
                    .iter()
                    .filter(|a| a.switchable() && Some(&a.id) != plan.from.as_ref())
                    .filter(|a| manual || !plan.fresh.contains(&a.id))
                    .map(|a| a.id.clone())
                    .collect();
                for (id, result) in fetch_usages(&self.dir, &stale).await {
                    if let Ok(limits) = result {
                        plan.snapshots.insert(id.clone(), limits.clone());
                        fetched.push((id, limits));
                    }
                }
                // The cooldown keeps automatic switches from ping-ponging; a switch the
                // user asks for is not held back by it.
                let no_cooldown = HashMap::new();
                let switched_away = if manual {
                    &no_cooldown
                } else {
                    &plan.switched_away
                };
                let candidates: Vec<Candidate> = plan
                    .accounts
                    .iter()
                    .map(|a| candidate_of(a, &plan.snapshots, switched_away))
                    .collect();
                match choose_placed(
                    &candidates,
                    plan.from.as_ref(),
                    &plan.policy,
                    self.placement.as_ref(),
                )
                .await
                {
                    Choice::Switch { to } => to,
                    Choice::NoneAvailable { earliest_reset } => {
                        return Err(SwitchFailure::NoneAvailable { earliest_reset });
                    }
                }
            }
        };
        let Some(account) = self.plan.accounts.iter().find(|a| a.id == to).cloned() else {
            return Err(SwitchFailure::Refused(format!("unknown account {to}")));
        };
        let _ = self.events.send(ProxyEvent::SwitchStarted {
            from: self.plan.from.as_ref().map(|f| AccountRef {
                id: f.clone(),
                name: self.name(f),
            }),
            to: account.to_ref(),
            reason: self.plan.pending.reason.clone(),
            at: Utc::now(),
        });
        match login_and_confirm(&self.dir, &self.control, &account).await {
            Ok(snapshot) => Ok((to, snapshot)),
            Err(err) => {
                let error = format!("{err:#}");
                // The peers count us on the old account again.
                if let Some(status) = self.placement.as_ref().and_then(|p| p.status.as_ref()) {
                    status.update(|s| s.switching_to = None);
                }
                // Stay on the old account: make sure the app-server still serves it.
                if let Some(from) = self.plan.from.clone()
                    && let Some(old) = self.plan.accounts.iter().find(|a| a.id == from).cloned()
                    && let Err(restore) = login_and_confirm(&self.dir, &self.control, &old).await
                {
                    tracing::error!(
                        "restoring {} after a failed switch failed: {restore:#}",
                        old.name
                    );
                }
                Err(SwitchFailure::Failed { to, error })
            }
        }
    }
}

/// The best account to move to, `from` aside. Alone (the pool off, or no other session
/// answering): the policy's best. Among others: [`place`] counts the sessions on each
/// account, under the placement lock, and the choice is published as our `switching_to`
/// before the lock goes, so the next session to choose counts it.
async fn choose_placed(
    candidates: &[Candidate],
    from: Option<&AccountId>,
    config: &policy::PolicyConfig,
    placement: Option<&PlanContext>,
) -> Choice {
    let now = Utc::now().timestamp();
    let Some(context) = placement.filter(|p| p.pool) else {
        return policy::choose_best(candidates, from, now, config);
    };
    let lock = PlacementLock::acquire(&context.store_dir, LOCK_WAIT).await;
    let peers = Peers::ask(context, false, &[]).await;
    if peers.statuses.is_empty() {
        return policy::choose_best(candidates, from, now, config);
    }
    let choice = place(
        candidates,
        &occupancy(&peers.statuses),
        context.placement,
        from,
        None,
        now,
        config,
    );
    if let (Choice::Switch { to }, Some(status)) = (&choice, &context.status)
        && let Some(account) = candidates.iter().find(|c| &c.id == to)
    {
        status.update(|s| {
            s.switching_to = Some(AccountRef {
                id: account.id.clone(),
                name: account.name.clone(),
            })
        });
    }
    drop(lock);
    choice
}

/// Reads `/wham/usage` of these accounts, each within [`USAGE_TIMEOUT`].
pub(crate) async fn fetch_usages<D: AccountDirectory>(
    dir: &D,
    ids: &[AccountId],
) -> Vec<(AccountId, Result<AccountLimits, String>)> {
    join_all(ids.iter().map(|id| async move {
        let result = match tokio::time::timeout(USAGE_TIMEOUT, dir.fetch_usage(id)).await {
            Ok(Ok(snapshot)) => Ok(snapshot),
            Ok(Err(err)) => Err(format!("{err:#}")),
            Err(_) => Err(format!("no answer within {USAGE_TIMEOUT:?}")),
        };
        (id.clone(), result)
    }))
    .await
}

/// Logs the app-server into `account`, confirms it with `account/read`, and reads its rate
/// limits. Used for the starting account and for every switch.
pub(crate) async fn login_and_confirm<D: AccountDirectory>(
    dir: &D,
    control: &ControlConnection,
    account: &DirAccount,
) -> Result<Option<AccountLimits>> {
    let tokens = dir.login_tokens(&account.id, false).await?;
    control
        .login_with_tokens(
            &tokens.access_token,
            &tokens.chatgpt_account_id,
            tokens.plan.as_deref(),
        )
        .await?;
    let (email, _plan) = upstream::read_account(control).await?;
    if let (Some(want), Some(got)) = (&account.email, &email)
        && !want.eq_ignore_ascii_case(got)
    {
        return Err(eyre!(
            "the app-server reports {got} after logging in {} ({want})",
            account.name
        ));
    }
    match upstream::read_rate_limits(control).await {
        Ok(snapshot) => Ok(Some(snapshot)),
        Err(err) => {
            tracing::warn!("reading rate limits after login failed: {err:#}");
            Ok(None)
        }
    }
}

/// Reads the accounts' reset credits and announces them.
pub(super) fn read_reset_credits<D: AccountDirectory>(
    dir: D,
    events: broadcast::Sender<ProxyEvent>,
    accounts: Vec<AccountRef>,
) {
    tokio::spawn(async move {
        let reads = accounts.into_iter().map(|account| {
            let dir = &dir;
            async move {
                let read =
                    tokio::time::timeout(USAGE_TIMEOUT, dir.fetch_reset_credits(&account.id)).await;
                (account, read)
            }
        });
        for (account, read) in join_all(reads).await {
            match read {
                Ok(Ok(Some(credits))) => {
                    let _ = events.send(ProxyEvent::ResetCredits {
                        account,
                        credits,
                        at: Utc::now(),
                    });
                }
                Ok(Ok(None)) => {}
                Ok(Err(err)) => {
                    tracing::debug!(account = %account.name, "reset credits: {err:#}")
                }
                Err(_) => tracing::debug!(account = %account.name, "reset credits: timed out"),
            }
        }
    });
}

/// Redeems a reset credit on the control connection (the app-server's auth is the active
/// account's), answers, and after a reset reads the account's limits again.
pub(super) fn redeem_reset_credit(
    control: ControlConnection,
    inbox: mpsc::UnboundedSender<CoreMsg>,
    account: AccountId,
    idempotency_key: String,
    reply: Option<CommandReply>,
) {
    tokio::spawn(async move {
        let result = upstream::consume_reset_credit(&control, &idempotency_key).await;
        let reset = result.as_deref().is_ok_and(|outcome| outcome == "reset");
        if let Some(reply) = reply {
            let _ = reply.send(result.map_err(|err| format!("{err:#}")));
        }
        // The numbers the session holds are of before the reset: read them again.
        if reset {
            match upstream::read_rate_limits(&control).await {
                Ok(limits) => {
                    let _ = inbox.send(Input::ResetRedeemed { account, limits }.into());
                }
                Err(err) => tracing::warn!("reading the limits after a reset: {err:#}"),
            }
        }
    });
}

/// Answers a token refresh request with `account`'s freshly refreshed tokens.
pub(super) fn answer_refresh<D: AccountDirectory>(
    dir: D,
    control: ControlConnection,
    events: broadcast::Sender<ProxyEvent>,
    id: Value,
    account: Option<DirAccount>,
) {
    tokio::spawn(async move {
        let Some(account) = account else {
            control.respond(
                id,
                Err("no stored account matches previousAccountId".into()),
            );
            return;
        };
        match dir.login_tokens(&account.id, true).await {
            Ok(tokens) => {
                tracing::info!(account = %account.name, "answered a token refresh request");
                control.respond(
                    id,
                    Ok(json!({
                        "accessToken": tokens.access_token.expose(),
                        "chatgptAccountId": tokens.chatgpt_account_id,
                        "chatgptPlanType": tokens.plan,
                    })),
                );
            }
            Err(err) => {
                tracing::error!(account = %account.name, "token refresh failed: {err:#}");
                control.respond(id, Err(format!("refreshing {} failed", account.name)));
            }
        }
        if let Some(notice) = unsaved_tokens_notice(&dir) {
            let _ = events.send(notice);
        }
    });
}

/// A refresh whose new tokens the store refused (a full disk) keeps them in memory only: the
/// user must hear of it before quitting.
pub(super) fn unsaved_tokens_notice<D: AccountDirectory>(dir: &D) -> Option<ProxyEvent> {
    let names = dir.unsaved_tokens();
    (!names.is_empty()).then(|| ProxyEvent::Notice {
        message: format!(
            "the account store refused the refreshed tokens of {}: they are kept in memory \
             (and in Codex's auth.json when it holds the account) and saved once the store can \
             be written; check the disk before quitting",
            names.join(", ")
        ),
        at: Utc::now(),
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Placement;
    use crate::proxy::placement::tests::{cand, serve_peer, status};
    use crate::proxy::pool::StatusCell;

    fn context(store: &Path, pool: bool, own: &StatusCell) -> PlanContext {
        PlanContext {
            store_dir: store.to_owned(),
            own_dir: Some(store.join("runtime").join("0-me")),
            placement: Placement::Spread,
            status: Some(own.clone()),
            pool,
        }
    }

    #[tokio::test]
    async fn an_automatic_switch_counts_the_sessions_on_each_account() {
        let store = tempfile::tempdir().unwrap();
        let config = policy::PolicyConfig::default();
        let candidates = [
            cand("alice", 0.0, 500),
            cand("bob", 10.0, 500),
            cand("carol", 30.0, 500),
        ];
        let from = AccountId::from("alice");
        let me = StatusCell::new(status("0-me", Some("alice"), None));
        // Our own socket is no peer.
        let _me = serve_peer(store.path(), "0-me", me.clone(), None);
        // Alone: the policy's best, bob (90 > 70).
        assert_eq!(
            choose_placed(&candidates, Some(&from), &config, None).await,
            Choice::Switch { to: "bob".into() }
        );
        assert_eq!(
            choose_placed(
                &candidates,
                Some(&from),
                &config,
                Some(&context(store.path(), true, &me))
            )
            .await,
            Choice::Switch { to: "bob".into() },
            "no other session: as alone"
        );
        assert_eq!(me.get().switching_to, None);
        // Two sessions on bob: 90/3 = 30 < carol's 70.
        let _one = serve_peer(
            store.path(),
            "1-one",
            StatusCell::new(status("1-one", Some("bob"), None)),
            None,
        );
        let _two = serve_peer(
            store.path(),
            "2-two",
            StatusCell::new(status("2-two", Some("alice"), Some("bob"))),
            None,
        );
        assert_eq!(
            choose_placed(
                &candidates,
                Some(&from),
                &config,
                Some(&context(store.path(), false, &me))
            )
            .await,
            Choice::Switch { to: "bob".into() },
            "the pool off: alone"
        );
        assert_eq!(
            choose_placed(
                &candidates,
                Some(&from),
                &config,
                Some(&context(store.path(), true, &me))
            )
            .await,
            Choice::Switch { to: "carol".into() }
        );
        // Published before the lock went, for the next chooser.
        assert_eq!(
            me.get().switching_to.map(|a| a.name).as_deref(),
            Some("carol")
        );
    }
}
