//! Limits and what they trigger. Rules: one limit, one report and one switch (a limit can
//! raise two errors and a withheld re-run); a limit hit holds the account exhausted until
//! numbers read after it say otherwise; a hard limit always arms a switch, a soft threshold
//! not while "no account available" was said less than [`NONE_AVAILABLE_BACKOFF`] ago; a
//! manual request already pending is not overridden.

use std::time::Duration;

use crate::account_id::AccountId;
use crate::proxy::events::{ProxyEvent, SwitchReason};
use crate::proxy::policy::{self, Mode};
use crate::quota::{AccountLimits, RateLimitSnapshot};

use super::effects::Effects;
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
        self.heard_live.insert(account.clone(), now.mono);
        if !self.limit_reported.insert(account.clone()) {
            return;
        }
        let snapshot = self
            .snapshots
            .entry(account.clone())
            .or_default()
            .quota_mut();
        if !snapshot.is_exhausted() {
            snapshot.rate_limit_reached_type = Some("usage_limit_reached".to_owned());
        }
        fx.emit(ProxyEvent::UsageLimitHit {
            account: self.account_ref(account),
            session: None,
            at: now.wall,
        });
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
                self.arm(Target::Best, reason, Mode::Automatic, now, fx);
            }
        }
    }
}
