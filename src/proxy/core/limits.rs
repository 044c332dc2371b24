//! Limits and what they trigger. Rules: one limit, one report and one switch (a limit can
//! raise two errors and a withheld re-run); a limit hit holds the account exhausted until
//! numbers read after it say otherwise; a hard limit always arms a switch, a soft threshold
//! not while "no account available" was said less than [`NONE_AVAILABLE_BACKOFF`] ago; a
//! manual request already pending is not overridden.

use std::time::{Duration, Instant};

use crate::account_id::AccountId;
use crate::proxy::events::{ProxyEvent, SwitchReason};
use crate::proxy::policy::{self, Mode};
use crate::proxy::pool::PoolFact;
use crate::quota::{AccountLimits, RateLimitSnapshot};

use super::effects::{Effect, Effects};
use super::state::{CoreState, Now};
use super::switching::Target;

/// After "no account available", automatic triggers other than a real limit error are not
/// re-evaluated for this long (every turn would otherwise ask again).
pub(super) const NONE_AVAILABLE_BACKOFF: Duration = Duration::from_secs(60);

impl CoreState {
    /// The active account's turn failed with `usageLimitExceeded`.
    pub(super) fn usage_limit_error(&mut self, now: Now, fx: &mut Effects) {
        if let Some(active) = self.active.clone() {
            self.report_limit(&active, now, fx);
        }
        match self.pending.as_mut() {
            // The 100 % update that precedes the error already armed a switch; the error is
            // the more telling reason. A second error (the title thread's duplicate of the
            // same limit) changes nothing.
            Some(p) if p.mode == Mode::Automatic => p.reason = SwitchReason::UsageLimit,
            Some(_) => {}
            None if self.switching => {}
            None => self.arm(
                Target::Best,
                SwitchReason::UsageLimit,
                Mode::Automatic,
                now,
                fx,
            ),
        }
    }

    /// Says once that `account` hit its usage limit, and takes it as exhausted until its
    /// numbers say otherwise (the 100 % update may not have come, or not yet).
    pub(super) fn report_limit(&mut self, account: &AccountId, now: Now, fx: &mut Effects) {
        self.record_limit(account, None, now.mono, now, fx);
    }

    /// A limit of `account`: hit here (`session: None`, told to the pool) or by the peer
    /// `session` at `heard`. Returns whether it is news.
    pub(super) fn record_limit(
        &mut self,
        account: &AccountId,
        session: Option<String>,
        heard: Instant,
        now: Now,
        fx: &mut Effects,
    ) -> bool {
        let live = self.heard_live.entry(account.clone()).or_insert(heard);
        *live = (*live).max(heard);
        if !self.limit_reported.insert(account.clone()) {
            return false;
        }
        let snapshot = self
            .snapshots
            .entry(account.clone())
            .or_default()
            .quota_mut();
        if !snapshot.is_exhausted() {
            snapshot.rate_limit_reached_type = Some("usage_limit_reached".to_owned());
        }
        if session.is_none() {
            fx.push(Effect::Broadcast(PoolFact::LimitHit {
                account: account.clone(),
            }));
        }
        fx.emit(ProxyEvent::UsageLimitHit {
            account: self.account_ref(account),
            session,
            at: now.wall,
        });
        true
    }

    /// Numbers that show room mean a later limit of `id` is a new one.
    pub(super) fn forget_limit_unless_exhausted(&mut self, id: &AccountId, limits: &AccountLimits) {
        if !limits.quota().is_some_and(RateLimitSnapshot::is_exhausted) {
            self.limit_reported.remove(id);
        }
    }

    /// Arms a switch when the active account's quota asks for one (a hard limit, or a soft
    /// threshold unless "no account available" was said a moment ago).
    pub(super) fn check_active_quota(&mut self, now: Now, fx: &mut Effects) {
        self.check_active_quota_from(None, now, fx);
    }

    /// [`Self::check_active_quota`], for numbers the peer `session` told (or our own, `None`).
    pub(super) fn check_active_quota_from(
        &mut self,
        session: Option<&str>,
        now: Now,
        fx: &mut Effects,
    ) {
        let Some(active) = self.active.clone() else {
            return;
        };
        let snapshot = self.quota(&active).cloned().unwrap_or_default();
        if let Some(reason) = policy::trigger_for_snapshot(&snapshot, &self.config.policy) {
            let hard = matches!(reason, SwitchReason::HardLimit { .. });
            let backing_off = self
                .none_available_until
                .is_some_and(|until| now.mono < until);
            if hard || !backing_off {
                let reason = match session {
                    Some(session) => SwitchReason::Peer {
                        session: session.to_owned(),
                        detail: reason.describe(),
                    },
                    None => reason,
                };
                self.arm(Target::Best, reason, Mode::Automatic, now, fx);
            }
        }
    }
}
