//! Usage freshness. Rules: every account's usage is read at start and when the user asks,
//! the stale ones at each poll, a new account at once; a full read replaces what was known
//! (a window it lacks is gone); a read sent before the session last heard an account live
//! (a rate-limit update, a limit hit) is older news and changes nothing; a turn that reported
//! another family's numbers instead of the quota's gets the quota read (one read at a time).
//! In a pool only the elected poller reads on the timer, a read under way is not sent again,
//! and a peer's read counts as fresh here (`pool.rs`); when no peer's read has come for
//! [`POLLER_OVERDUE_INTERVALS`] intervals (the poller's process stopped with `kill -STOP`
//! keeps the lock; or its reads fail), a non-poller reads on its own timer as the poller
//! would, until a peer's read comes again.

use std::time::{Duration, Instant};

use crate::account_id::AccountId;
use crate::proxy::directory::DirAccount;
use crate::proxy::events::{AccountRef, ProxyEvent};
use crate::quota::{AccountLimits, RateLimitSnapshot};

use super::effects::{Effect, Effects};
use super::state::{CoreState, Now};

/// A usage read sent this long ago and not answered is taken as lost (each read gives up
/// after [`super::tasks::USAGE_TIMEOUT`]): the poll may send it again.
pub(super) const READ_IN_FLIGHT: Duration = Duration::from_secs(30);

/// A non-poller reads on its own timer once no peer's read came for this many polling
/// intervals: the poller missed a whole tick. A healthy poller reads every account once per
/// interval, so this costs no request then.
pub(super) const POLLER_OVERDUE_INTERVALS: u32 = 2;

impl CoreState {
    /// A rate-limit update heard on a turn of the active account.
    pub(super) fn rate_limits_heard(
        &mut self,
        update: &RateLimitSnapshot,
        now: Now,
        fx: &mut Effects,
    ) {
        let Some(active) = self.active.clone() else {
            return;
        };
        let before = self.quota(&active).cloned();
        let limits = self.snapshots.entry(active.clone()).or_default();
        let quota = limits.apply_update(update);
        self.emit_limits(&active, now, fx);
        self.stream_heard(&active, before.as_ref(), now, fx);
        // Another family (a model-specific limit) is shown, never switched on: the account's
        // quota is the `codex` family. A turn refused on such a limit still ends in a
        // usage-limit error, which switches.
        if !quota {
            // Codex sends one update per response, of the last header family (docs/protocol.md
            // §9): this turn's quota numbers did not come. Read them.
            self.read_active_quota(&active, now, fx);
            return;
        }
        self.heard_live.insert(active.clone(), now.mono);
        self.check_active_quota(now, fx);
    }

    /// Reads the active account's usage (one read at a time), when a turn reported the
    /// numbers of another limit family instead of the quota's.
    fn read_active_quota(&mut self, active: &AccountId, now: Now, fx: &mut Effects) {
        if self.quota_read.is_some() {
            return;
        }
        self.quota_read = Some(active.clone());
        self.reading.insert(active.clone(), now.mono);
        fx.push(Effect::FetchUsage {
            ids: vec![active.clone()],
            started: now.mono,
        });
    }

    /// Reads the reset credits of every ChatGPT account (or of `only`) and announces them
    /// (they change rarely: at each usage poll is often enough).
    fn poll_reset_credits(&self, only: Option<&AccountId>, fx: &mut Effects) {
        let accounts: Vec<AccountRef> = self
            .accounts
            .iter()
            .filter(|a| a.switchable() && only.is_none_or(|id| a.id == *id))
            .map(DirAccount::to_ref)
            .collect();
        fx.push(Effect::ReadResetCredits(accounts));
    }

    /// Reads `/wham/usage` of every account (`all`) or of the stale ones, and the store's
    /// accounts again.
    ///
    /// In a pool, only the elected poller reads on the timer: another session's `PollTick`
    /// only lists the accounts (its numbers come from the poller's read facts), unless the
    /// poller's reads are overdue ([`Self::standing_in`]).
    pub(super) fn poll_usage(&mut self, all: bool, now: Now, fx: &mut Effects) {
        if !all && !self.poller && !self.standing_in(now) {
            fx.push(Effect::ListAccounts);
            return;
        }
        self.poll_reset_credits(None, fx);
        // A read older than the policy's limit is stale; on a timer shorter than that limit,
        // so is one from the last tick (the timer's promise: every account read once per
        // interval). The slack lets a tick that fires a little early still read.
        let stale = Duration::from_secs(self.config.policy.usage_stale_secs as u64)
            .min(self.config.usage_poll.mul_f64(0.8));
        let ids: Vec<AccountId> = self
            .accounts
            .iter()
            .filter(|a| a.switchable())
            // The active account too: its live updates are sparse, and only a full read
            // tells that a window is gone (a plan that stopped sending its 5-hour window).
            .filter(|a| {
                all || (self
                    .usage_at
                    .get(&a.id)
                    .is_none_or(|t| now.mono.saturating_duration_since(*t) >= stale)
                    // A read under way is not sent again (the poller's role can arrive
                    // right after the start's reads went out).
                    && self
                        .reading
                        .get(&a.id)
                        .is_none_or(|t| now.mono.saturating_duration_since(*t) >= READ_IN_FLIGHT))
            })
            .map(|a| a.id.clone())
            .collect();
        for id in &ids {
            self.reading.insert(id.clone(), now.mono);
        }
        // Pick up accounts added, removed or re-enabled since the session started.
        fx.push(Effect::ListAccounts);
        if !ids.is_empty() {
            fx.push(Effect::FetchUsage {
                ids,
                started: now.mono,
            });
        }
    }

    /// Whether this non-poller reads on its timer in the poller's stead: no peer's read has
    /// come for [`POLLER_OVERDUE_INTERVALS`] intervals (since the start, or since the last
    /// one). The poller's process may be stopped (`kill -STOP`: it keeps the lock and says
    /// nothing) or its reads fail; rather than wait for it, this session then reads what is
    /// stale as the poller would, until a peer's read comes again. Said in the log when it
    /// starts and when it ends.
    fn standing_in(&mut self, now: Now) -> bool {
        let expected_since = *self.reads_expected_since.get_or_insert(now.mono);
        let last = self
            .peer_read_at
            .map_or(expected_since, |at| at.max(expected_since));
        let overdue_after = self.config.usage_poll * POLLER_OVERDUE_INTERVALS;
        let overdue = now.mono.saturating_duration_since(last) >= overdue_after;
        if overdue != self.poller_overdue {
            self.poller_overdue = overdue;
            if overdue {
                tracing::warn!(
                    "no usage read from the pool's poller for {}s (its session may be stopped, \
                     or its reads fail): this session reads the accounts on its own timer until \
                     one comes again",
                    overdue_after.as_secs()
                );
            } else {
                tracing::info!(
                    "a usage read came from the pool again: this session stops reading on its timer"
                );
            }
        }
        overdue
    }

    /// The store's accounts, read again: an account new to the session gets its usage read
    /// at once, so it can take over at the next limit.
    pub(super) fn accounts_listed(
        &mut self,
        accounts: Vec<DirAccount>,
        now: Now,
        fx: &mut Effects,
    ) {
        let new: Vec<AccountId> = accounts
            .iter()
            .filter(|a| a.switchable() && !self.accounts.iter().any(|known| known.id == a.id))
            .map(|a| a.id.clone())
            .collect();
        for account in accounts.iter().filter(|a| new.contains(&a.id)) {
            tracing::info!(account = %account.name, "an account was added to the store");
        }
        // The panel follows the store: one event when what it shows changed.
        let summaries: Vec<_> = accounts.iter().map(DirAccount::summary).collect();
        if !self
            .accounts
            .iter()
            .map(DirAccount::summary)
            .eq(summaries.iter().cloned())
        {
            fx.emit(ProxyEvent::AccountsListed {
                accounts: summaries,
                at: now.wall,
            });
        }
        self.accounts = accounts;
        self.update_alternative(now, fx);
        for id in &new {
            self.reading.insert(id.clone(), now.mono);
        }
        if !new.is_empty() {
            fx.push(Effect::FetchUsage {
                ids: new,
                started: now.mono,
            });
        }
    }

    pub(super) fn usage_fetched(
        &mut self,
        started: Instant,
        results: Vec<(AccountId, Result<AccountLimits, String>)>,
        now: Now,
        fx: &mut Effects,
    ) {
        let mut active_read = false;
        let mut failed = false;
        let read_started = now.wall_of(started);
        for (id, result) in results {
            if self.quota_read.as_ref() == Some(&id) {
                self.quota_read = None;
            }
            if self.reading.get(&id).is_some_and(|at| *at <= started) {
                self.reading.remove(&id);
            }
            match result {
                Ok(limits) => {
                    // Our own read: every session may count it (peers weigh it by when it
                    // was sent, as below).
                    self.broadcast_read(&id, &limits, read_started, fx);
                    self.usage_at.insert(id.clone(), now.mono);
                    // A read sent before the session last heard of this account live (a
                    // rate-limit update, a limit hit) is older news: a slow read of an
                    // account's usage must not undo the limit it hit meanwhile.
                    if self
                        .heard_live
                        .get(&id)
                        .is_some_and(|heard| *heard > started)
                    {
                        continue;
                    }
                    self.forget_limit_unless_exhausted(&id, &limits);
                    // A full read: windows and families it lacks are gone.
                    self.snapshots.insert(id.clone(), limits);
                    self.emit_limits(&id, now, fx);
                    active_read |= Some(&id) == self.active.as_ref();
                }
                Err(err) => {
                    tracing::warn!(account = %id, "usage fetch failed: {err}");
                    failed = true;
                }
            }
        }
        // A read that failed on a rejected refresh token marked the account in the store:
        // the panel shows it needing a login now, not at the next poll.
        if failed {
            fx.push(Effect::ListAccounts);
        }
        fx.push(Effect::ReportUnsavedTokens);
        self.update_alternative(now, fx);
        // The active account's quota as the backend has it now may ask for a switch.
        if active_read {
            self.check_active_quota(now, fx);
        }
    }

    /// A reset credit cleared `account`'s limits; `limits`: its numbers read since.
    pub(super) fn reset_redeemed(
        &mut self,
        account: AccountId,
        limits: AccountLimits,
        now: Now,
        fx: &mut Effects,
    ) {
        // Newer than anything heard before the reset, live numbers included.
        self.heard_live.insert(account.clone(), now.mono);
        self.broadcast_read(&account, &limits, now.wall, fx);
        self.forget_limit_unless_exhausted(&account, &limits);
        self.snapshots.insert(account.clone(), limits);
        self.emit_limits(&account, now, fx);
        self.update_alternative(now, fx);
        self.poll_reset_credits(Some(&account), fx);
    }
}
