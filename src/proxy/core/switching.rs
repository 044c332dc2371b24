//! The switch state machine. Rules: a switch is armed, then runs at the next turn boundary
//! (never while a turn runs or is about to, never while the app-server restarts); one switch
//! at a time, and one pending request, where a manual request is not overridden by an
//! automatic trigger; a switch that fails keeps the old account; an automatic switch puts
//! the account it left on cooldown; "no account available" gives up hidden re-runs.

use std::time::{Duration, Instant};

use crate::account_id::AccountId;
use crate::proxy::directory::DirAccount;
use crate::proxy::events::{ProxyEvent, SwitchReason};
use crate::proxy::history::{SwitchRecord, UsageNumbers};
use crate::proxy::policy::{self, Candidate, Choice, Mode};
use crate::proxy::pool::PoolFact;
use crate::quota::AccountLimits;

use super::effects::{Effect, Effects, SwitchPlan};
use super::lifecycle::AppServerState;
use super::limits::NONE_AVAILABLE_BACKOFF;
use super::state::{CoreState, Now, candidate_of};

/// Whom a switch goes to.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Target {
    /// The best other account, as the policy chooses at the time of the switch.
    Best,
    Account(AccountId),
}

/// A switch asked for and not started yet.
#[derive(Clone, Debug)]
pub(crate) struct PendingSwitch {
    pub target: Target,
    pub reason: SwitchReason,
    pub mode: Mode,
    pub(super) announced_deferral: bool,
}

/// The result of a switch task.
#[derive(Debug)]
pub(crate) struct SwitchOutcome {
    pub pending_reason: SwitchReason,
    pub mode: Mode,
    pub from: Option<AccountId>,
    /// Usage the task read on its way.
    pub fetched: Vec<(AccountId, AccountLimits)>,
    /// The account now logged in, and its limits as read after the login.
    pub result: Result<(AccountId, Option<AccountLimits>), SwitchFailure>,
    pub started: Instant,
}

/// Why a switch did not happen.
#[derive(Debug)]
pub(crate) enum SwitchFailure {
    NoneAvailable { earliest_reset: Option<i64> },
    Refused(String),
    Failed { to: AccountId, error: String },
}

impl CoreState {
    /// Records that a switch is wanted; it runs at the next turn boundary.
    pub(super) fn arm(
        &mut self,
        target: Target,
        reason: SwitchReason,
        mode: Mode,
        now: Now,
        fx: &mut Effects,
    ) {
        // An automatic trigger during a switch is about the account being left: the switch under
        // way answers it. A request of the user's waits for that switch to end.
        if self.switching && mode == Mode::Automatic {
            return;
        }
        match &self.pending {
            // A manual request is not overridden by an automatic trigger.
            Some(p) if p.mode == Mode::Manual && mode == Mode::Automatic => return,
            Some(p) if p.mode == mode && p.target == target => return,
            _ => {}
        }
        tracing::info!(?target, reason = %reason.describe(), "switch armed");
        self.pending = Some(PendingSwitch {
            target,
            reason,
            mode,
            announced_deferral: false,
        });
        self.maybe_execute(now, fx);
    }

    /// Starts the pending switch if no turn is running (a login during a turn kills the turn,
    /// docs/protocol.md §2), or says (once) that it waits.
    pub(super) fn maybe_execute(&mut self, now: Now, fx: &mut Effects) {
        // A switch needs a live, logged-in app-server; it waits for the restart otherwise.
        if self.switching || self.app_server != AppServerState::Up || self.pending.is_none() {
            return;
        }
        if self.is_busy(now) {
            let pending = self.pending.as_mut().expect("pending checked above");
            if !pending.announced_deferral {
                pending.announced_deferral = true;
                let to = match &pending.target {
                    Target::Account(id) => Some(id.clone()),
                    Target::Best => None,
                };
                let reason = pending.reason.clone();
                fx.emit(ProxyEvent::SwitchDeferred {
                    to: to.map(|id| self.account_ref(&id)),
                    reason,
                    at: now.wall,
                });
            }
            return;
        }
        let pending = self.pending.take().expect("pending checked above");
        self.switching = true;
        fx.push(Effect::SetSwitching(true));
        let stale_after = Duration::from_secs(self.config.policy.usage_stale_secs as u64);
        let mut accounts = self.accounts.clone();
        if pending.target == Target::Best {
            // An account a peer just failed to log in is not chosen (nor read) for a minute.
            for account in &mut accounts {
                account.needs_login |= self.login_failed(&account.id, now);
            }
        }
        fx.push(Effect::StartSwitch(Box::new(SwitchPlan {
            policy: self.config.policy.clone(),
            accounts,
            from: self.active.clone(),
            snapshots: self.snapshots.clone(),
            fresh: self
                .usage_at
                .iter()
                .filter(|(_, at)| now.mono.saturating_duration_since(**at) < stale_after)
                .map(|(id, _)| id.clone())
                .collect(),
            switched_away: self.switched_away.clone(),
            pending,
        })));
    }

    pub(super) fn switch_finished(&mut self, outcome: SwitchOutcome, now: Now, fx: &mut Effects) {
        self.switching = false;
        fx.push(Effect::SetSwitching(false));
        self.release_held_turns(now, fx);
        let read_started = now.wall_of(outcome.started);
        for (id, limits) in outcome.fetched {
            self.broadcast_read(&id, &limits, read_started, fx);
            self.usage_at.insert(id.clone(), now.mono);
            if Some(&id) != self.active.as_ref() {
                // A fresh read that shows room lifts "exhausted" everywhere.
                self.forget_limit_unless_exhausted(&id, &limits);
                self.snapshots.insert(id.clone(), limits);
                self.emit_limits(&id, now, fx);
            }
        }
        let at = now.wall;
        match outcome.result {
            Ok((to, snapshot)) => {
                self.none_available_until = None;
                let from = outcome.from;
                if let (Some(from), Mode::Automatic) = (&from, outcome.mode) {
                    self.switched_away.insert(from.clone(), now.unix());
                }
                if let Some(snapshot) = snapshot {
                    self.broadcast_read(&to, &snapshot, read_started, fx);
                    self.snapshots.insert(to.clone(), snapshot);
                    self.usage_at.insert(to.clone(), now.mono);
                }
                // Logged in and serving: a later limit of this account is a new one.
                self.limit_reported.remove(&to);
                // A request that arrived during the switch for the account now active is met.
                if self
                    .pending
                    .as_ref()
                    .is_some_and(|p| p.target == Target::Account(to.clone()))
                {
                    self.pending = None;
                }
                self.active = Some(to.clone());
                let elapsed_ms = now
                    .mono
                    .saturating_duration_since(outcome.started)
                    .as_millis() as u64;
                let record = SwitchRecord {
                    at,
                    from: from.as_ref().map(|f| self.account_ref(f)),
                    to: self.account_ref(&to),
                    reason: outcome.pending_reason,
                    from_usage: from
                        .as_ref()
                        .and_then(|f| self.quota(f))
                        .map(UsageNumbers::from_snapshot),
                    to_usage: self.quota(&to).map(UsageNumbers::from_snapshot),
                    elapsed_ms,
                    error: None,
                };
                tracing::info!(from = ?record.from, to = ?record.to, reason = %record.reason.describe(), elapsed_ms, "switched");
                fx.push(Effect::AppendHistory(record.clone()));
                fx.push(Effect::MarkActive(to.clone()));
                self.start_reruns(&to, fx);
                fx.emit(ProxyEvent::SwitchDone {
                    from: record.from.clone(),
                    to: record.to.clone(),
                    reason: record.reason.clone(),
                    elapsed_ms,
                    at,
                });
                fx.emit(ProxyEvent::ActiveAccount {
                    account: record.to,
                    at,
                });
                self.emit_limits(&to, now, fx);
            }
            Err(SwitchFailure::NoneAvailable { earliest_reset }) => {
                self.give_up_reruns(fx);
                self.none_available_until = Some(now.mono + NONE_AVAILABLE_BACKOFF);
                tracing::warn!(?earliest_reset, "no account available to switch to");
                if let Some(message) = self.workspace_note() {
                    fx.emit(ProxyEvent::Notice { message, at });
                }
                fx.emit(ProxyEvent::NoAccountAvailable {
                    reason: outcome.pending_reason,
                    earliest_reset: earliest_reset
                        .and_then(|t| chrono::DateTime::from_timestamp(t, 0)),
                    at,
                });
            }
            Err(SwitchFailure::Refused(why)) => {
                self.give_up_reruns(fx);
                tracing::info!(%why, "switch refused");
                fx.emit(ProxyEvent::Notice { message: why, at });
            }
            Err(SwitchFailure::Failed { to, error }) => {
                self.give_up_reruns(fx);
                tracing::error!(%error, "switch failed");
                // The pool hears that it failed, not why (an error can quote the backend).
                fx.push(Effect::Broadcast(PoolFact::LoginFailed {
                    account: to.clone(),
                    needs_login: false,
                }));
                // A rejected refresh token marked the account in the store: the panel shows
                // it needing a login now, not at the next poll.
                fx.push(Effect::ListAccounts);
                fx.emit(ProxyEvent::SwitchFailed {
                    from: outcome.from.as_ref().map(|f| self.account_ref(f)),
                    to: self.account_ref(&to),
                    reason: outcome.pending_reason,
                    error,
                    at,
                });
            }
        }
        self.update_alternative(now, fx);
        // A request that arrived during the switch runs now.
        self.maybe_execute(now, fx);
    }

    /// A switch the user asked for (a named account, or the best other one): checked now,
    /// armed, and answered in a sentence.
    pub(super) fn request_manual(
        &mut self,
        target: Target,
        now: Now,
        fx: &mut Effects,
    ) -> Result<String, String> {
        if let Target::Account(id) = &target {
            let account = self
                .accounts
                .iter()
                .find(|a| &a.id == id)
                .ok_or_else(|| format!("no stored account has id {id}"))?;
            if let Some(kind) = &account.unsupported_sign_in {
                return Err(crate::accounts::store::unsupported_sign_in_message(
                    &account.name,
                    kind,
                ));
            }
            if account.chatgpt_account_id.is_none() {
                return Err(format!(
                    "{} is not a ChatGPT login; only ChatGPT accounts can be switched to",
                    account.name
                ));
            }
            // The user named it: a peer's failed login of it does not stand in the way.
            let candidate = candidate_of(account, &self.snapshots, &self.switched_away);
            policy::check_manual(&candidate, self.active.as_ref())?;
            let candidates: Vec<Candidate> = self
                .accounts
                .iter()
                .map(|a| candidate_of(a, &self.snapshots, &self.switched_away))
                .collect();
            if let Some(limited) = policy::shared_workspace_limit(&candidate, &candidates) {
                return Err(format!(
                    "{} is a seat of the same workspace as {}, whose workspace limit it shares; \
                     not switching to it",
                    candidate.name, limited.name
                ));
            }
        }
        let switching = self.switching;
        let busy = self.is_busy(now);
        let what = match &target {
            Target::Account(id) => self.account_ref(id).name,
            Target::Best => "the best other account".to_owned(),
        };
        self.arm(target, SwitchReason::Manual, Mode::Manual, now, fx);
        Ok(if switching {
            format!("switching to {what} once the switch under way ends")
        } else if busy {
            format!("switching to {what} when the running turn ends")
        } else {
            format!("switching to {what}")
        })
    }

    /// Tells the guards whether another account could take over now.
    pub(super) fn update_alternative(&self, now: Now, fx: &mut Effects) {
        let candidates: Vec<Candidate> = self
            .accounts
            .iter()
            .map(|a| self.candidate(a, now))
            .collect();
        let available = matches!(
            policy::choose_best(
                &candidates,
                self.active.as_ref(),
                now.unix(),
                &self.config.policy
            ),
            Choice::Switch { .. }
        );
        fx.push(Effect::SetAlternative(available));
    }

    /// When the active account hit its workspace's limit and other seats of that workspace
    /// are stored: a sentence saying why they are not switched to.
    fn workspace_note(&self) -> Option<String> {
        let active = self.active.as_ref()?;
        let account: &DirAccount = self.accounts.iter().find(|a| a.id == *active)?;
        self.quota(active)?.workspace_limit()?;
        let seats: Vec<&str> = self
            .accounts
            .iter()
            .filter(|a| a.id != *active && a.chatgpt_account_id == account.chatgpt_account_id)
            .map(|a| a.name.as_str())
            .collect();
        if seats.is_empty() {
            return None;
        }
        Some(format!(
            "{} hit its workspace's limit, which every seat shares: not switching to {}",
            account.name,
            seats.join(", ")
        ))
    }
}
