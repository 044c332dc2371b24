//! The pool's rules: what this session tells the others, what a fact from another session
//! changes here, when new turns are held, and whether this session polls the usage of the
//! accounts.
//!
//! 1. **Send first-hand facts only.** Our own stream's numbers (coalesced to one per account
//!    per [`STREAM_COALESCE`], except a change of exhaustion or of the switch trigger, which
//!    goes at once), our own reads, our own limit hits, our own failed logins. A fact heard
//!    from a peer is never sent on (no loops).
//! 2. **Take peer facts as our own, by their time.** A stream fact is merged if it is newer
//!    than what we heard live of that account; a read replaces what is known unless we heard
//!    the account live after the read was sent (a slow read cannot undo a limit); a limit hit
//!    is reported (`usage_limit_hit` with the peer's session).
//! 3. **Move off an account a peer saw exhausted**, as if we had seen it: automatically, at
//!    the turn boundary, without overriding a pending manual switch.
//! 4. **Hold new turns** while an automatic switch waits and the active account is known
//!    exhausted: they would fail there. Held turns are not busy (they would block their own
//!    switch); they go when the switch is over, or after [`HOLD_TIMEOUT`] when none came
//!    (after [`HOLD_MAX`] while the switch waits for a running turn).
//! 5. **A peer's failed login**: `needs_login` re-reads the store; otherwise the account is
//!    left out of automatic choices for [`LOGIN_FAILED_EXCLUSION`].
//! 6. **One poller**: only the elected session reads usage on the timer; when no peer's read
//!    has come for [`super::freshness::POLLER_OVERDUE_INTERVALS`] intervals (a poller stopped
//!    with `kill -STOP` keeps its lock), a non-poller reads on its timer in its stead until
//!    one comes again.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::account_id::AccountId;
use crate::proxy::policy::{self, Mode};
use crate::proxy::pool::wire::{KnownLimits, LimitsSource, POOL_WIRE_VERSION, PoolSnapshot};
use crate::proxy::pool::{PeerMessage, PoolFact};
use crate::quota::{AccountLimits, RateLimitSnapshot};

use super::effects::{Effect, Effects};
use super::state::{CoreState, Hold, Now};

/// Our own stream's numbers go to the pool at most this often per account.
pub(super) const STREAM_COALESCE: Duration = Duration::from_millis(250);

/// A hold that no switch followed is let go after this long (the turns then meet the real
/// error, and the hidden re-run covers them).
pub(super) const HOLD_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest a hold lasts while the switch waits for running turns (a turn whose end was
/// never seen must not freeze the session's new turns for good); real turns can run for
/// many minutes, and the hidden re-run covers a turn let go to the exhausted account.
pub(super) const HOLD_MAX: Duration = Duration::from_secs(600);

/// A peer's fact learned longer ago than this is dropped.
pub(super) const MAX_FACT_AGE: Duration = Duration::from_secs(60);

/// An account a peer failed to log in stays out of automatic choices this long.
pub(super) const LOGIN_FAILED_EXCLUSION: Duration = Duration::from_secs(60);

/// What a quota asks of switching: nothing, a soft threshold, a hard limit.
fn trigger_level(snapshot: Option<&RateLimitSnapshot>, policy: &policy::PolicyConfig) -> u8 {
    match snapshot.and_then(|s| policy::trigger_for_snapshot(s, policy)) {
        None => 0,
        Some(crate::proxy::events::SwitchReason::HardLimit { .. }) => 2,
        Some(_) => 1,
    }
}

fn limits_fact(
    account: &AccountId,
    limits: &AccountLimits,
    source: LimitsSource,
    read_started: Option<DateTime<Utc>>,
) -> PoolFact {
    PoolFact::Limits {
        account: account.clone(),
        source,
        read_started,
        quota: Box::new(limits.quota().cloned().unwrap_or_default()),
        families: limits.others().cloned().collect(),
    }
}

impl CoreState {
    /// Tells the pool what our own read of `id` returned; `read_started`: when it was sent.
    pub(super) fn broadcast_read(
        &self,
        id: &AccountId,
        limits: &AccountLimits,
        read_started: DateTime<Utc>,
        fx: &mut Effects,
    ) {
        fx.push(Effect::Broadcast(limits_fact(
            id,
            limits,
            LimitsSource::Read,
            Some(read_started),
        )));
    }

    /// Our own stream updated `id`'s numbers (its quota was `before`): tell the pool now if
    /// exhaustion or the switch trigger changed or nothing went out lately, else soon.
    pub(super) fn stream_heard(
        &mut self,
        id: &AccountId,
        before: Option<&RateLimitSnapshot>,
        now: Now,
        fx: &mut Effects,
    ) {
        let after = self.quota(id);
        let urgent = before.is_some_and(RateLimitSnapshot::is_exhausted)
            != after.is_some_and(RateLimitSnapshot::is_exhausted)
            || trigger_level(before, &self.config.policy)
                != trigger_level(after, &self.config.policy);
        let since = self
            .stream_sent
            .get(id)
            .map(|sent| now.mono.saturating_duration_since(*sent));
        match since {
            Some(since) if !urgent && since < STREAM_COALESCE => {
                // The first update held back sets the timer; later ones ride along.
                if self.stream_unsent.insert(id.clone()) {
                    fx.push(Effect::RecheckAfter(STREAM_COALESCE - since));
                }
            }
            _ => self.send_stream_fact(id, now, fx),
        }
    }

    fn send_stream_fact(&mut self, id: &AccountId, now: Now, fx: &mut Effects) {
        self.stream_unsent.remove(id);
        let Some(limits) = self.snapshots.get(id) else {
            return;
        };
        fx.push(Effect::Broadcast(limits_fact(
            id,
            limits,
            LimitsSource::Stream,
            None,
        )));
        self.stream_sent.insert(id.clone(), now.mono);
    }

    /// Sends the stream numbers held back whose time has come.
    pub(super) fn flush_stream_facts(&mut self, now: Now, fx: &mut Effects) {
        let mut due: Vec<AccountId> = self
            .stream_unsent
            .iter()
            .filter(|id| {
                self.stream_sent
                    .get(*id)
                    .is_none_or(|sent| now.mono.saturating_duration_since(*sent) >= STREAM_COALESCE)
            })
            .cloned()
            .collect();
        due.sort();
        for id in due {
            self.send_stream_fact(&id, now, fx);
        }
    }

    /// A fact another session learned first-hand. Nothing here is sent on.
    pub(super) fn peer_fact(&mut self, message: PeerMessage, now: Now, fx: &mut Effects) {
        if message.v != POOL_WIRE_VERSION {
            tracing::debug!(v = message.v, from = %message.from, "pool fact of another version");
            return;
        }
        // Sent as learned and delivered within a second: a fact this old is a clock gone
        // wrong or a sender stopped mid-send, and news no longer.
        let Some(heard) = now
            .instant_of(message.at)
            .filter(|heard| now.mono.saturating_duration_since(*heard) <= MAX_FACT_AGE)
        else {
            tracing::debug!(at = %message.at, from = %message.from, "pool fact too old; dropped");
            return;
        };
        let session = message.from;
        match message.fact {
            PoolFact::Limits {
                account,
                source: LimitsSource::Stream,
                quota,
                families,
                ..
            } => {
                if self.heard_live.get(&account).is_some_and(|h| *h >= heard) {
                    tracing::debug!(%account, from = %session, "peer's live numbers older than ours");
                    return;
                }
                self.heard_live.insert(account.clone(), heard);
                let limits = self.snapshots.entry(account.clone()).or_default();
                limits.apply_update(&quota);
                for family in &families {
                    limits.apply_update(family);
                }
                self.emit_limits(&account, now, fx);
                self.peer_changed(&account, &session, now, fx);
            }
            PoolFact::Limits {
                account,
                source: LimitsSource::Read,
                read_started,
                quota,
                families,
            } => {
                // Fresh for the poll, whatever it says; and the pool's reads still come.
                let read_at = self.usage_at.entry(account.clone()).or_insert(heard);
                *read_at = (*read_at).max(heard);
                self.peer_read_at = Some(self.peer_read_at.map_or(heard, |at| at.max(heard)));
                // A read sent before the clock began is older than anything heard.
                let started = match read_started {
                    Some(at) => now.instant_of(at),
                    None => Some(heard),
                };
                let live = self.heard_live.get(&account);
                if live.is_some_and(|h| started.is_none_or(|started| *h > started)) {
                    tracing::debug!(%account, from = %session, "peer's read older than a live hearing");
                    return;
                }
                let limits = AccountLimits::full(std::iter::once(*quota).chain(families));
                self.forget_limit_unless_exhausted(&account, &limits);
                self.snapshots.insert(account.clone(), limits);
                self.emit_limits(&account, now, fx);
                self.peer_changed(&account, &session, now, fx);
            }
            PoolFact::LimitHit { account } => {
                if self.record_limit(&account, Some(session.clone()), heard, now, fx) {
                    self.emit_limits(&account, now, fx);
                }
                self.peer_changed(&account, &session, now, fx);
            }
            PoolFact::LoginFailed {
                account,
                needs_login,
            } => {
                if needs_login {
                    // The store holds the truth: read it again.
                    fx.push(Effect::ListAccounts);
                } else {
                    self.login_failed_until
                        .insert(account, now.mono + LOGIN_FAILED_EXCLUSION);
                    self.update_alternative(now, fx);
                }
            }
            // The hub's business (session table, election).
            PoolFact::SessionChanged | PoolFact::SessionEnded | PoolFact::PollerReleased => {}
        }
    }

    /// A peer changed what we know of `account`: whether another account could take over,
    /// and, on the active account, whether to move.
    fn peer_changed(&mut self, account: &AccountId, session: &str, now: Now, fx: &mut Effects) {
        self.update_alternative(now, fx);
        if self.active.as_ref() == Some(account) {
            self.check_active_quota_from(Some(session), now, fx);
        }
    }

    /// What this session knows of every account's limits, for a peer that asks
    /// (`pool_snapshot`): the numbers, when they were last read in full and heard live, and
    /// whether a limit hit stands.
    pub(crate) fn pool_snapshot(&self, now: Now) -> PoolSnapshot {
        let mut accounts: Vec<KnownLimits> = self
            .snapshots
            .iter()
            .map(|(id, limits)| KnownLimits {
                account: id.clone(),
                quota: limits.quota().cloned().unwrap_or_default(),
                families: limits.others().cloned().collect(),
                read_at: self.usage_at.get(id).map(|at| now.wall_of(*at)),
                heard_at: self.heard_live.get(id).map(|at| now.wall_of(*at)),
                limit_hit: self.limit_reported.contains(id),
            })
            .collect();
        accounts.sort_by(|a, b| a.account.cmp(&b.account));
        PoolSnapshot { accounts }
    }

    /// This session became (or stopped being) the pool's usage poller. A new poller reads
    /// at once what no session read lately.
    pub(super) fn poller_role(&mut self, poller: bool, now: Now, fx: &mut Effects) {
        let became = poller && !self.poller;
        self.poller = poller;
        if became {
            self.poll_usage(false, now, fx);
        }
    }

    /// Rule 4, after every decision: hold new turns while an automatic switch waits and the
    /// active account is known exhausted; tell the guards only of a change.
    pub(super) fn update_hold(&mut self, now: Now, fx: &mut Effects) {
        let want = self
            .pending
            .as_ref()
            .is_some_and(|p| p.mode == Mode::Automatic)
            && self
                .active
                .as_ref()
                .and_then(|a| self.quota(a))
                .is_some_and(RateLimitSnapshot::is_exhausted);
        match (self.hold, want) {
            (Hold::Off, true) => {
                self.hold = Hold::On(now.mono);
                fx.push(Effect::SetHoldTurns(true));
                fx.push(Effect::RecheckAfter(HOLD_TIMEOUT));
                fx.push(Effect::RecheckAfter(HOLD_MAX));
            }
            (Hold::On(since), true) if self.hold_expired(since, now) => {
                tracing::warn!("no switch followed the hold; new turns go to the old account");
                self.hold = Hold::Expired;
                self.let_go(now, fx);
            }
            (Hold::On(_), false) => {
                self.hold = Hold::Off;
                self.let_go(now, fx);
            }
            (Hold::Expired, false) => self.hold = Hold::Off,
            _ => {}
        }
    }

    /// A hold ends with no switch after [`HOLD_TIMEOUT`] — unless the switch waits for a
    /// running turn's end, which may take minutes: then only after [`HOLD_MAX`].
    fn hold_expired(&mut self, since: Instant, now: Now) -> bool {
        let held = now.mono.saturating_duration_since(since);
        held >= HOLD_MAX || (held >= HOLD_TIMEOUT && !self.is_busy(now))
    }

    fn let_go(&mut self, now: Now, fx: &mut Effects) {
        fx.push(Effect::SetHoldTurns(false));
        // A switch that just started keeps them: its end releases them, on the new account.
        if !self.switching {
            self.release_held_turns(now, fx);
        }
    }
}
