//! What the panel shows, kept up to date from the proxy's events. The app is the only writer
//! ([`Dashboard::apply`]); `ui` only reads.

use chrono::{DateTime, Utc};

use crate::account_id::AccountId;
use crate::accounts::reset_credits::ResetCredits;
use crate::pace::{Burn, Runway, UsageSample, pool_runway};
use crate::proxy::events::{AccountRef, AccountSummary, ConnectionState, PoolShare, ProxyEvent};
use crate::proxy::history::SwitchRecord;
use crate::proxy::usage_store::StoredSample;
use crate::quota::{RateLimitSnapshot, WindowKind};

/// How many burn samples the panel keeps (14 days at 5-minute resolution of ten accounts,
/// loaded from the usage store, and this session's own).
const HISTORY_LIMIT: usize = 50_000;
/// Switch records and notices kept.
const LOG_LIMIT: usize = 50;
/// How many of the store's last switches the panel's switch list starts with.
pub const SEEDED_SWITCHES: usize = 10;

/// A stored account as the dashboard sees it (filled by the account store, then by events).
#[derive(Clone, Debug, PartialEq)]
pub struct AccountView {
    /// The store's id.
    pub id: AccountId,
    pub name: String,
    pub email: Option<String>,
    pub plan: Option<String>,
    pub stored: StoredState,
    /// The last numbers known of its quota (the `codex` family: the proxy's snapshot, or
    /// `/wham/usage`).
    pub snapshot: Option<RateLimitSnapshot>,
    /// Its other limit families (model-specific limits), shown under it.
    pub families: Vec<RateLimitSnapshot>,
}

impl AccountView {
    pub fn new(id: impl Into<AccountId>, name: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            name: name.into(),
            email: None,
            plan: None,
            stored: StoredState::Ready,
            snapshot: None,
            families: Vec::new(),
        }
    }

    /// The account as the store lists it (no numbers yet).
    pub fn listed(summary: &AccountSummary) -> Self {
        let mut view = Self::new(summary.id.clone(), summary.name.clone());
        view.update_from(summary);
        view
    }

    /// Takes the store's name, email, plan and state; keeps the numbers.
    fn update_from(&mut self, summary: &AccountSummary) {
        self.name.clone_from(&summary.name);
        self.email.clone_from(&summary.email);
        // A plan the store does not know yet may have come with the usage numbers.
        if summary.plan.is_some() {
            self.plan.clone_from(&summary.plan);
        }
        self.stored = StoredState::of(
            summary.enabled,
            summary.needs_login,
            summary.unsupported_sign_in.as_deref(),
        );
    }
}

/// What the store says about an account, before quota is considered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoredState {
    Ready,
    /// Its refresh token is dead; `cs-tui accounts add` again.
    NeedsLogin,
    /// The user turned it off.
    Disabled,
    /// It signs in with a kind a newer cs-tui wrote (`kind`, say `device_code`): listed, never
    /// used.
    Unsupported {
        kind: String,
    },
    /// Removed from the store (`cs-tui accounts remove`) while the session runs on it: shown,
    /// so marked, until the session leaves it; never offered by the picker.
    Removed,
}

impl StoredState {
    /// What the store's flags say, the unusable sign-in first.
    pub fn of(enabled: bool, needs_login: bool, unsupported_sign_in: Option<&str>) -> Self {
        if let Some(kind) = unsupported_sign_in {
            StoredState::Unsupported {
                kind: kind.to_owned(),
            }
        } else if !enabled {
            StoredState::Disabled
        } else if needs_login {
            StoredState::NeedsLogin
        } else {
            StoredState::Ready
        }
    }
}

/// The state shown next to an account.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccountState {
    Active,
    Ready,
    /// Exhausted; usable again at this unix time, if known.
    ExhaustedUntil(Option<i64>),
    /// Its workspace's limit (shared by every seat of it); usable again at this time.
    WorkspaceLimit(Option<i64>),
    NeedsLogin,
    Disabled,
    /// A sign-in kind a newer cs-tui wrote; never used.
    Unsupported,
    /// Removed from the store; the session still runs on it until the next switch.
    RemovedFromStore,
}

/// Something the user should know that is not a switch.
#[derive(Clone, Debug, PartialEq)]
pub enum Notice {
    /// A switch waits for the running turn to end (a login mid-turn kills the turn).
    SwitchDeferred {
        to: Option<String>,
        reason: String,
        at: DateTime<Utc>,
    },
    /// `held` turns asked for wait for a switch (shown while there are any).
    TurnsHeld { held: usize, at: DateTime<Utc> },
    /// No account is usable; the first comes back at `earliest_reset`.
    NoAccountAvailable {
        earliest_reset: Option<DateTime<Utc>>,
        at: DateTime<Utc>,
    },
    /// A plain message (the app-server exited, a hotkey that cannot work here, …).
    Message { text: String, at: DateTime<Utc> },
}

impl Notice {
    pub fn at(&self) -> DateTime<Utc> {
        match self {
            Notice::SwitchDeferred { at, .. }
            | Notice::TurnsHeld { at, .. }
            | Notice::NoAccountAvailable { at, .. }
            | Notice::Message { at, .. } => *at,
        }
    }
}

/// Whether this session has the proxy in front of Codex.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionMode {
    /// Codex runs with `--remote` through the switching proxy.
    Proxy,
    /// No proxy (the `CS_TUI_NO_PROXY` development path): Codex alone, no quota, no switching.
    NoProxy,
}

/// A burn sample of the active account.
#[derive(Clone, Debug, PartialEq)]
pub struct BurnSample {
    pub account_id: AccountId,
    pub at: i64,
    pub five_hour: Option<f64>,
    pub weekly: Option<f64>,
}

/// The panel's state.
#[derive(Clone, Debug, PartialEq)]
pub struct Dashboard {
    pub mode: SessionMode,
    pub connection: ConnectionState,
    /// The store id of the account the session uses.
    pub active: Option<AccountId>,
    pub accounts: Vec<AccountView>,
    pub turns_running: usize,
    /// Burn samples of every account (earlier sessions' from the usage store, then this
    /// session's), oldest first.
    pub history: Vec<BurnSample>,
    /// Newest last.
    pub switches: Vec<SwitchRecord>,
    /// Newest last.
    pub notices: Vec<Notice>,
    /// A switch is under way to this account.
    pub switching_to: Option<AccountId>,
    /// Rate-limit reset credits by account id, as last read.
    pub reset_credits: std::collections::BTreeMap<AccountId, ResetCredits>,
    /// The pool of sessions on this store, as last heard (empty: this session alone).
    pub pool: Pool,
    /// Accounts the store's last listing dropped: a late usage read of one does not bring
    /// it back.
    removed: std::collections::BTreeSet<AccountId>,
}

/// The sessions on this store (this one included) and how many run on each account.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pool {
    pub sessions: usize,
    pub by_account: Vec<PoolShare>,
}

impl Pool {
    /// "3 sessions: alice ×2, bob ×1", or nothing while this session runs alone.
    pub fn summary(&self) -> Option<String> {
        (self.sessions >= 2).then(|| {
            pool_summary(
                self.sessions,
                self.by_account
                    .iter()
                    .map(|s| (s.account.name.as_str(), s.sessions)),
            )
        })
    }

    /// How many sessions (this one included) run on `account`.
    pub fn sessions_on(&self, account: &AccountId) -> usize {
        self.by_account
            .iter()
            .filter(|s| &s.account.id == account)
            .map(|s| s.sessions)
            .sum()
    }
}

/// The pool in one line: "3 sessions: alice ×2, bob ×1", the busiest account first (then by
/// name); accounts no session uses are left out.
pub fn pool_summary<'a>(
    sessions: usize,
    shares: impl IntoIterator<Item = (&'a str, usize)>,
) -> String {
    let mut shares: Vec<(&str, usize)> = shares.into_iter().filter(|(_, n)| *n > 0).collect();
    shares.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let noun = if sessions == 1 { "session" } else { "sessions" };
    if shares.is_empty() {
        return format!("{sessions} {noun}");
    }
    let shares: Vec<String> = shares
        .iter()
        .map(|(name, n)| format!("{name} ×{n}"))
        .collect();
    format!("{sessions} {noun}: {}", shares.join(", "))
}

impl Dashboard {
    pub fn new(mode: SessionMode, accounts: Vec<AccountView>) -> Self {
        Self {
            mode,
            connection: match mode {
                SessionMode::Proxy => ConnectionState::Starting,
                SessionMode::NoProxy => ConnectionState::Ready { clients: 1 },
            },
            active: None,
            accounts,
            turns_running: 0,
            history: Vec::new(),
            switches: Vec::new(),
            notices: Vec::new(),
            switching_to: None,
            reset_credits: std::collections::BTreeMap::new(),
            pool: Pool::default(),
            removed: std::collections::BTreeSet::new(),
        }
    }

    /// The account whose reset credit would help, when every account is exhausted: the active
    /// one if it has a credit (no switch needed), else the one whose credit expires first.
    pub fn resettable_when_all_exhausted(&self) -> Option<&AccountView> {
        let usable = |a: &&AccountView| a.stored == StoredState::Ready;
        let all_exhausted = self.accounts.iter().filter(usable).count() > 0
            && self.accounts.iter().filter(usable).all(|a| {
                a.snapshot
                    .as_ref()
                    .is_some_and(RateLimitSnapshot::is_exhausted)
            });
        if !all_exhausted {
            return None;
        }
        let with_credit = |a: &&AccountView| {
            self.reset_credits
                .get(&a.id)
                .is_some_and(|c| c.available > 0)
        };
        let active = self
            .accounts
            .iter()
            .filter(usable)
            .filter(with_credit)
            .find(|a| self.active.as_ref() == Some(&a.id));
        active.or_else(|| {
            self.accounts
                .iter()
                .filter(usable)
                .filter(with_credit)
                .min_by_key(|a| {
                    self.reset_credits[&a.id]
                        .nearest_expires_at
                        .map_or(i64::MAX, |t| t.timestamp())
                })
        })
    }

    pub fn account(&self, id: &AccountId) -> Option<&AccountView> {
        self.accounts.iter().find(|a| a.id == *id)
    }

    pub fn active_account(&self) -> Option<&AccountView> {
        self.active.as_ref().and_then(|id| self.account(id))
    }

    /// The accounts the picker offers: every listed one, never one removed from the store.
    pub fn pickable(&self) -> Vec<&AccountView> {
        self.accounts
            .iter()
            .filter(|a| a.stored != StoredState::Removed)
            .collect()
    }

    /// An account the events name that the store did not list (added while running). One the
    /// store's listing removed comes back only as the session's active account, marked so.
    fn account_mut(&mut self, account: &AccountRef) -> Option<&mut AccountView> {
        let index = match self.accounts.iter().position(|a| a.id == account.id) {
            Some(index) => index,
            None if self.removed.contains(&account.id) => return None,
            None => {
                self.accounts
                    .push(AccountView::new(account.id.clone(), &account.name));
                self.accounts.len() - 1
            }
        };
        Some(&mut self.accounts[index])
    }

    /// The account the session runs on now, listed or not (one removed from the store is
    /// kept, marked, while the session runs on it).
    fn active_mut(&mut self, account: &AccountRef) {
        if self.account_mut(account).is_none() {
            let mut view = AccountView::new(account.id.clone(), &account.name);
            view.stored = StoredState::Removed;
            self.accounts.push(view);
        }
    }

    /// The store's accounts as the session listed them: the numbers known of an account are
    /// kept (by id), its name, email, plan and state follow the store, new ones come in the
    /// store's order, removed ones go, except the active one, which stays marked
    /// [`StoredState::Removed`] at its place until the session leaves it.
    fn apply_listing(&mut self, listed: &[AccountSummary]) {
        let active_at = self
            .active
            .as_ref()
            .and_then(|id| self.accounts.iter().position(|a| a.id == *id));
        let mut old = std::mem::take(&mut self.accounts);
        let mut accounts: Vec<AccountView> = listed
            .iter()
            .map(
                |summary| match old.iter().position(|a| a.id == summary.id) {
                    Some(index) => {
                        let mut view = old.remove(index);
                        view.update_from(summary);
                        view
                    }
                    None => AccountView::listed(summary),
                },
            )
            .collect();
        for summary in listed {
            self.removed.remove(&summary.id);
        }
        for mut view in old {
            self.removed.insert(view.id.clone());
            if self.active.as_ref() == Some(&view.id) {
                view.stored = StoredState::Removed;
                accounts.insert(active_at.unwrap_or(0).min(accounts.len()), view);
            } else {
                self.reset_credits.remove(&view.id);
            }
        }
        self.accounts = accounts;
    }

    fn name_of(&self, account: &AccountRef) -> String {
        self.account(&account.id)
            .map_or_else(|| account.name.clone(), |a| a.name.clone())
    }

    /// `account` under the name the panel knows it by.
    fn named(&self, account: &AccountRef) -> AccountRef {
        AccountRef {
            id: account.id.clone(),
            name: self.name_of(account),
        }
    }

    /// The state shown next to `account`.
    pub fn state_of(&self, account: &AccountView) -> AccountState {
        match account.stored {
            StoredState::Unsupported { .. } => return AccountState::Unsupported,
            StoredState::Removed => return AccountState::RemovedFromStore,
            StoredState::Disabled => return AccountState::Disabled,
            StoredState::NeedsLogin => return AccountState::NeedsLogin,
            StoredState::Ready => {}
        }
        if self.active.as_ref() == Some(&account.id) {
            return AccountState::Active;
        }
        match &account.snapshot {
            Some(s) if s.workspace_limit().is_some() => {
                AccountState::WorkspaceLimit(s.available_again_at())
            }
            Some(s) if s.is_exhausted() => AccountState::ExhaustedUntil(s.available_again_at()),
            _ => AccountState::Ready,
        }
    }

    /// Applies one proxy event.
    pub fn apply(&mut self, event: &ProxyEvent) {
        match event {
            ProxyEvent::AccountsListed { accounts, .. } => self.apply_listing(accounts),
            ProxyEvent::ResetCredits {
                account, credits, ..
            } => {
                if self.account_mut(account).is_some() {
                    self.reset_credits
                        .insert(account.id.clone(), credits.clone());
                }
            }
            ProxyEvent::ActiveAccount { account, at } => {
                self.active_mut(account);
                self.make_active(&account.id, at.timestamp());
            }
            ProxyEvent::RateLimitsUpdated {
                account,
                snapshot,
                families,
                at,
            } => {
                // The proxy sends the whole picture: a window it no longer has is gone (a
                // plan that stopped sending its 5-hour window shows no 5-hour row).
                let Some(view) = self.account_mut(account) else {
                    return;
                };
                view.snapshot =
                    (*snapshot != RateLimitSnapshot::default()).then(|| snapshot.clone());
                view.families.clone_from(families);
                if view.plan.is_none() {
                    view.plan.clone_from(&snapshot.plan_type);
                }
                let merged = view.snapshot.clone().unwrap_or_default();
                self.record_sample(&account.id, &merged, at.timestamp());
            }
            ProxyEvent::UsageLimitHit { account, .. } => {
                // The backend said so; mark the 5-hour window full if the numbers lag behind.
                let Some(view) = self.account_mut(account) else {
                    return;
                };
                let snapshot = view.snapshot.get_or_insert_with(Default::default);
                if !snapshot.is_exhausted() {
                    snapshot.rate_limit_reached_type = Some("usage_limit_reached".to_owned());
                }
            }
            ProxyEvent::TurnsRunning { running, .. } => self.turns_running = *running,
            ProxyEvent::TurnsHeld { held, at } => {
                // One line while turns wait; gone once they went on.
                self.notices
                    .retain(|n| !matches!(n, Notice::TurnsHeld { .. }));
                if *held > 0 {
                    self.push_notice(Notice::TurnsHeld {
                        held: *held,
                        at: *at,
                    });
                }
            }
            ProxyEvent::PoolChanged {
                sessions,
                by_account,
                ..
            } => {
                self.pool = Pool {
                    sessions: *sessions,
                    by_account: by_account.clone(),
                };
            }
            ProxyEvent::Notice { message, at } => self.push_message(message.clone(), *at),
            // The notice that goes with it says so.
            ProxyEvent::TurnRerun { .. } => {}
            ProxyEvent::SwitchStarted { to, .. } => {
                self.switching_to = Some(to.id.clone());
            }
            ProxyEvent::SwitchDeferred { to, reason, at } => {
                let to = to.as_ref().map(|t| self.name_of(t));
                self.push_notice(Notice::SwitchDeferred {
                    to,
                    reason: reason.describe(),
                    at: *at,
                });
            }
            ProxyEvent::SwitchDone {
                from,
                to,
                reason,
                elapsed_ms,
                at,
            } => {
                self.switching_to = None;
                self.active_mut(to);
                self.make_active(&to.id, at.timestamp());
                let record = SwitchRecord {
                    at: *at,
                    from: from.as_ref().map(|f| self.named(f)),
                    to: self.named(to),
                    reason: reason.clone(),
                    from_usage: None,
                    to_usage: None,
                    elapsed_ms: *elapsed_ms,
                    error: None,
                };
                self.push_switch(record);
                // A deferred switch that happened is no longer news.
                self.notices
                    .retain(|n| !matches!(n, Notice::SwitchDeferred { .. }));
            }
            ProxyEvent::SwitchFailed {
                from,
                to,
                reason,
                error,
                at,
            } => {
                self.switching_to = None;
                let record = SwitchRecord {
                    at: *at,
                    from: from.as_ref().map(|f| self.named(f)),
                    to: self.named(to),
                    reason: reason.clone(),
                    from_usage: None,
                    to_usage: None,
                    elapsed_ms: 0,
                    error: Some(error.clone()),
                };
                self.push_switch(record);
            }
            ProxyEvent::NoAccountAvailable {
                earliest_reset, at, ..
            } => {
                self.notices
                    .retain(|n| !matches!(n, Notice::NoAccountAvailable { .. }));
                self.push_notice(Notice::NoAccountAvailable {
                    earliest_reset: *earliest_reset,
                    at: *at,
                });
            }
            ProxyEvent::Connection { state, .. } => self.connection = *state,
            ProxyEvent::AppServerExited {
                status,
                stderr_tail,
                restarting,
                at,
            } => {
                self.connection = if *restarting {
                    ConnectionState::Starting
                } else {
                    ConnectionState::Down
                };
                let text = if *restarting {
                    format!("app-server exited ({status}); starting it again")
                } else {
                    // Its last words usually say why.
                    let said = stderr_tail
                        .lines()
                        .rev()
                        .find(|l| !l.trim().is_empty())
                        .map(|l| {
                            let clean: String = l.chars().filter(|c| !c.is_control()).collect();
                            format!(": {}", clean.trim())
                        })
                        .unwrap_or_default();
                    format!("app-server exited ({status}){said}; quit cs-tui and start it again")
                };
                self.push_notice(Notice::Message { text, at: *at });
            }
            ProxyEvent::AppServerRestarted { account, at } => {
                self.push_notice(Notice::Message {
                    text: format!("app-server restarted, {} logged in again", account.name),
                    at: *at,
                });
            }
            ProxyEvent::SessionFailed { message, at } => {
                self.connection = ConnectionState::Down;
                self.push_notice(Notice::Message {
                    text: message.clone(),
                    at: *at,
                });
            }
        }
    }

    pub fn push_message(&mut self, text: impl Into<String>, at: DateTime<Utc>) {
        self.push_notice(Notice::Message {
            text: text.into(),
            at,
        });
    }

    fn push_notice(&mut self, notice: Notice) {
        self.notices.push(notice);
        if self.notices.len() > LOG_LIMIT {
            self.notices.remove(0);
        }
    }

    /// Starts the switch list with the store's last switches (every session's, read from the
    /// switch history file), oldest first; this session's own follow as they happen.
    pub fn with_switches(mut self, records: Vec<SwitchRecord>) -> Self {
        for record in records {
            self.push_switch(record);
        }
        self
    }

    fn push_switch(&mut self, record: SwitchRecord) {
        self.switches.push(record);
        if self.switches.len() > LOG_LIMIT {
            self.switches.remove(0);
        }
    }

    /// The session now uses `id`. Its last known numbers start its burn history (unless they
    /// are its last sample already), so the chart and the rate do not wait for the next turn.
    fn make_active(&mut self, id: &AccountId, at: i64) {
        if self.active.as_ref() == Some(id) {
            return;
        }
        self.active = Some(id.clone());
        // The session left an account removed from the store: it goes now.
        self.accounts
            .retain(|a| a.stored != StoredState::Removed || a.id == *id);
        if let Some(snapshot) = self.account(id).and_then(|a| a.snapshot.clone()) {
            let last = self.history.iter().rev().find(|s| s.account_id == *id);
            let same = last.is_some_and(|s| {
                s.five_hour == snapshot.five_hour().map(|w| w.used_percent)
                    && s.weekly == snapshot.weekly().map(|w| w.used_percent)
            });
            if !same {
                self.record_sample(id, &snapshot, at);
            }
        }
    }

    fn record_sample(&mut self, account_id: &AccountId, snapshot: &RateLimitSnapshot, at: i64) {
        let (five_hour, weekly) = (
            snapshot.five_hour().map(|w| w.used_percent),
            snapshot.weekly().map(|w| w.used_percent),
        );
        if five_hour.is_none() && weekly.is_none() {
            return;
        }
        self.history.push(BurnSample {
            account_id: account_id.clone(),
            at,
            five_hour,
            weekly,
        });
        self.trim_history();
    }

    fn trim_history(&mut self) {
        // Trimmed in chunks, so a full history does not move every sample on each new one.
        if self.history.len() > HISTORY_LIMIT + HISTORY_LIMIT / 10 {
            let excess = self.history.len() - HISTORY_LIMIT;
            self.history.drain(..excess);
        }
    }

    /// Starts the burn history with what earlier sessions kept (the usage store), before
    /// this session's own samples.
    pub fn seed_history(&mut self, stored: Vec<StoredSample>) {
        let mut seeded: Vec<BurnSample> = stored
            .into_iter()
            .map(|s| BurnSample {
                account_id: s.account,
                at: s.at,
                five_hour: s.five_hour,
                weekly: s.weekly,
            })
            .collect();
        seeded.append(&mut self.history);
        seeded.sort_by_key(|s| s.at);
        self.history = seeded;
        self.trim_history();
    }

    /// One account's samples of one window, oldest first.
    pub fn account_samples(&self, account: &AccountId, kind: WindowKind) -> Vec<UsageSample> {
        self.history
            .iter()
            .filter(|s| s.account_id == *account)
            .filter_map(|s| {
                let used = match kind {
                    WindowKind::FiveHour => s.five_hour,
                    WindowKind::Weekly => s.weekly,
                    WindowKind::Other(_) => None,
                }?;
                Some(UsageSample {
                    at: s.at,
                    used_percent: used,
                })
            })
            .collect()
    }

    /// The pool's burn of one window ([`Burn::of_pool`]): every account's, from its samples
    /// (this session's and those earlier sessions kept), the active one's deciding while
    /// none rises.
    pub(crate) fn pool_burn(&self, kind: WindowKind, now: i64) -> Burn {
        let burn = |a: &AccountView| Burn::measure(&self.account_samples(&a.id, kind), now);
        let is_active = |a: &AccountView| self.active.as_ref() == Some(&a.id);
        Burn::of_pool(
            self.accounts.iter().find(|a| is_active(a)).map(burn),
            self.accounts.iter().filter(|a| !is_active(a)).map(burn),
        )
    }

    /// How long the pool's usable accounts last at the current pace (the active one serves
    /// first).
    pub(crate) fn runway(&self, now: i64) -> Runway {
        let mut usable: Vec<&AccountView> = self
            .accounts
            .iter()
            .filter(|a| a.stored == StoredState::Ready)
            .filter(|a| {
                a.snapshot
                    .as_ref()
                    .is_some_and(|s| s.workspace_limit().is_none())
            })
            .collect();
        usable.sort_by_key(|a| self.active.as_ref() != Some(&a.id));
        pool_runway(
            usable
                .into_iter()
                .filter_map(|a| Some((a.name.as_str(), a.snapshot.as_ref()?))),
            self.pool_burn(WindowKind::FiveHour, now),
            self.pool_burn(WindowKind::Weekly, now),
            now,
        )
    }

    /// The active account's samples of one window, oldest first, for the burn rate.
    pub fn samples(&self, kind: WindowKind) -> Vec<UsageSample> {
        match &self.active {
            Some(active) => self.account_samples(active, kind),
            None => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::events::SwitchReason;
    use crate::quota::RateLimitWindow;
    use chrono::TimeZone;

    fn at(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + secs, 0).unwrap()
    }

    fn account(id: &str) -> AccountRef {
        AccountRef {
            id: AccountId::from(id),
            name: id.to_owned(),
        }
    }

    fn five_hour(used: f64) -> RateLimitSnapshot {
        RateLimitSnapshot {
            primary: Some(RateLimitWindow {
                used_percent: used,
                window_duration_mins: Some(300),
                resets_at: Some(1_800_003_600),
            }),
            ..Default::default()
        }
    }

    fn summary(id: &str, name: &str) -> AccountSummary {
        AccountSummary {
            id: AccountId::from(id),
            name: name.to_owned(),
            email: None,
            plan: None,
            enabled: true,
            needs_login: false,
            unsupported_sign_in: None,
        }
    }

    fn listed(accounts: Vec<AccountSummary>) -> ProxyEvent {
        ProxyEvent::AccountsListed {
            accounts,
            at: at(0),
        }
    }

    fn ids(d: &Dashboard) -> Vec<&str> {
        d.accounts.iter().map(|a| a.id.as_str()).collect()
    }

    /// Accounts a, b and c, the session on `active`.
    fn accounts_abc(active: &str) -> Dashboard {
        let mut d = Dashboard::new(
            SessionMode::Proxy,
            ["a", "b", "c"]
                .into_iter()
                .map(|id| AccountView::new(id, id))
                .collect(),
        );
        d.apply(&ProxyEvent::ActiveAccount {
            account: account(active),
            at: at(0),
        });
        d
    }

    /// `id`'s 5-hour window at `percent`, `secs` in.
    fn used(id: &str, percent: f64, secs: i64) -> ProxyEvent {
        ProxyEvent::RateLimitsUpdated {
            account: account(id),
            snapshot: five_hour(percent),
            families: Vec::new(),
            at: at(secs),
        }
    }

    #[test]
    fn the_store_listing_updates_keeps_numbers_and_drops_removed_accounts() {
        let mut d = accounts_abc("a");
        for id in ["a", "b", "c"] {
            d.apply(&used(id, 40.0, 1));
        }
        // b renamed and disabled, c removed, d and e added (in the store's order), a needs
        // a login.
        let mut b = summary("b", "bobby");
        b.enabled = false;
        b.email = Some("bob@example.com".into());
        b.plan = Some("pro".into());
        let mut a = summary("a", "a");
        a.needs_login = true;
        d.apply(&listed(vec![
            summary("e", "eve"),
            b,
            a,
            summary("d", "dave"),
        ]));
        assert_eq!(ids(&d), ["e", "b", "a", "d"]);
        let bob = d.account(&"b".into()).unwrap();
        assert_eq!(bob.name, "bobby");
        assert_eq!(bob.email.as_deref(), Some("bob@example.com"));
        assert_eq!(bob.plan.as_deref(), Some("pro"));
        assert_eq!(bob.stored, StoredState::Disabled);
        assert_eq!(bob.snapshot, Some(five_hour(40.0)), "numbers kept by id");
        assert_eq!(
            d.account(&"a".into()).unwrap().stored,
            StoredState::NeedsLogin
        );
        assert_eq!(d.account(&"e".into()).unwrap().snapshot, None);
        // A late read of the removed account does not bring it back.
        d.apply(&used("c", 50.0, 2));
        assert!(d.account(&"c".into()).is_none());
        // Enabled and logged in again.
        d.apply(&listed(vec![
            summary("e", "eve"),
            summary("b", "bobby"),
            summary("a", "a"),
            summary("d", "dave"),
        ]));
        assert_eq!(d.account(&"b".into()).unwrap().stored, StoredState::Ready);
        assert_eq!(d.account(&"a".into()).unwrap().stored, StoredState::Ready);
        assert_eq!(d.account(&"b".into()).unwrap().plan.as_deref(), Some("pro"));
    }

    #[test]
    fn a_removed_active_account_stays_marked_until_the_session_leaves_it() {
        let mut d = accounts_abc("b");
        d.apply(&used("b", 70.0, 1));
        d.apply(&listed(vec![summary("a", "a"), summary("c", "c")]));
        // Kept at its place, marked, with its numbers; the picker does not offer it.
        assert_eq!(ids(&d), ["a", "b", "c"]);
        let b = d.account(&"b".into()).unwrap();
        assert_eq!(b.stored, StoredState::Removed);
        assert_eq!(d.state_of(b), AccountState::RemovedFromStore);
        assert_eq!(b.snapshot, Some(five_hour(70.0)));
        let pickable: Vec<&str> = d.pickable().iter().map(|a| a.id.as_str()).collect();
        assert_eq!(pickable, ["a", "c"]);
        // Its numbers still come while the session runs on it.
        d.apply(&used("b", 80.0, 2));
        assert_eq!(
            d.account(&"b".into()).unwrap().snapshot,
            Some(five_hour(80.0))
        );
        // Listed again the same way: still kept.
        d.apply(&listed(vec![summary("a", "a"), summary("c", "c")]));
        assert_eq!(ids(&d), ["a", "b", "c"]);
        // The session leaves it: it goes.
        d.apply(&ProxyEvent::SwitchDone {
            from: Some(account("b")),
            to: account("c"),
            reason: SwitchReason::Manual,
            elapsed_ms: 5,
            at: at(3),
        });
        assert_eq!(ids(&d), ["a", "c"]);
        // Added back to the store: listed again as any account.
        d.apply(&listed(vec![
            summary("a", "a"),
            summary("c", "c"),
            summary("b", "b"),
        ]));
        assert_eq!(ids(&d), ["a", "c", "b"]);
        assert_eq!(d.account(&"b".into()).unwrap().stored, StoredState::Ready);
    }

    #[test]
    fn events_build_the_picture() {
        let mut d = Dashboard::new(
            SessionMode::Proxy,
            vec![AccountView::new("a", "alice"), AccountView::new("b", "bob")],
        );
        d.apply(&ProxyEvent::ActiveAccount {
            account: account("a"),
            at: at(0),
        });
        for (i, used) in [10.0, 20.0, 30.0].into_iter().enumerate() {
            d.apply(&ProxyEvent::RateLimitsUpdated {
                account: account("a"),
                snapshot: five_hour(used),
                families: Vec::new(),
                at: at(i as i64 * 60),
            });
        }
        // Other accounts' numbers do not enter the burn history.
        d.apply(&ProxyEvent::RateLimitsUpdated {
            account: account("b"),
            snapshot: five_hour(5.0),
            families: Vec::new(),
            at: at(200),
        });
        assert_eq!(d.samples(WindowKind::FiveHour).len(), 3);
        assert_eq!(d.state_of(&d.accounts[0]), AccountState::Active);
        assert_eq!(d.state_of(&d.accounts[1]), AccountState::Ready);

        d.apply(&ProxyEvent::UsageLimitHit {
            account: account("a"),
            session: None,
            at: at(300),
        });
        d.apply(&ProxyEvent::SwitchDeferred {
            to: Some(account("b")),
            reason: SwitchReason::UsageLimit,
            at: at(300),
        });
        assert_eq!(d.notices.len(), 1);
        d.apply(&ProxyEvent::SwitchDone {
            from: Some(account("a")),
            to: account("b"),
            reason: SwitchReason::UsageLimit,
            elapsed_ms: 80,
            at: at(310),
        });
        assert_eq!(d.active.as_deref(), Some("b"));
        assert!(d.notices.is_empty(), "the deferred notice is resolved");
        assert_eq!(d.switches[0].from.as_ref().unwrap().name, "alice");
        assert_eq!(d.switches[0].reason.describe(), "usage limit reached");
        assert!(matches!(
            d.state_of(&d.accounts[0]),
            AccountState::ExhaustedUntil(_)
        ));
        // The new account's history starts from its last known numbers.
        let samples = d.samples(WindowKind::FiveHour);
        assert_eq!(samples.len(), 1);
        assert_eq!(samples[0].used_percent, 5.0);
    }

    #[test]
    fn unknown_accounts_in_events_are_added() {
        let mut d = Dashboard::new(SessionMode::Proxy, Vec::new());
        d.apply(&ProxyEvent::ActiveAccount {
            account: account("z"),
            at: at(0),
        });
        assert_eq!(d.active_account().unwrap().name, "z");
    }

    #[test]
    fn an_update_is_the_whole_picture_and_families_stay_apart() {
        let mut d = Dashboard::new(SessionMode::Proxy, vec![AccountView::new("a", "alice")]);
        let weekly = RateLimitWindow {
            used_percent: 40.0,
            window_duration_mins: Some(10_080),
            resets_at: Some(1_800_500_000),
        };
        let mut both = five_hour(10.0);
        both.secondary = Some(weekly);
        let weekly_only = RateLimitSnapshot {
            primary: Some(weekly),
            ..Default::default()
        };
        let mut spark = five_hour(100.0);
        spark.limit_id = Some("codex_bengalfox".into());
        for (snapshot, families) in [(both, vec![]), (weekly_only, vec![spark])] {
            d.apply(&ProxyEvent::RateLimitsUpdated {
                account: account("a"),
                snapshot,
                families,
                at: at(0),
            });
        }
        let view = &d.accounts[0];
        let snapshot = view.snapshot.as_ref().unwrap();
        assert!(snapshot.five_hour().is_none(), "the 5-hour window is gone");
        assert_eq!(snapshot.weekly().unwrap().used_percent, 40.0);
        assert_eq!(view.families.len(), 1);
        assert_eq!(
            d.state_of(view),
            AccountState::Ready,
            "Spark at 100 % is not the quota"
        );
    }

    #[test]
    fn an_app_server_exit_says_whether_the_session_goes_on() {
        let mut d = Dashboard::new(SessionMode::Proxy, Vec::new());
        let last = |d: &Dashboard| match d.notices.last() {
            Some(Notice::Message { text, .. }) => text.clone(),
            other => panic!("{other:?}"),
        };
        d.apply(&ProxyEvent::AppServerExited {
            status: "signal: 9 (SIGKILL)".into(),
            stderr_tail: "starting\n".into(),
            restarting: true,
            at: at(0),
        });
        assert_eq!(d.connection, ConnectionState::Starting);
        assert_eq!(
            last(&d),
            "app-server exited (signal: 9 (SIGKILL)); starting it again"
        );
        d.apply(&ProxyEvent::AppServerRestarted {
            account: account("alice"),
            at: at(1),
        });
        assert_eq!(last(&d), "app-server restarted, alice logged in again");
        d.apply(&ProxyEvent::AppServerExited {
            status: "exit status: 1".into(),
            stderr_tail: "ok\nError: config.toml is broken\r\n\n".into(),
            restarting: false,
            at: at(2),
        });
        assert_eq!(d.connection, ConnectionState::Down);
        assert_eq!(
            last(&d),
            "app-server exited (exit status: 1): Error: config.toml is broken; quit cs-tui and \
             start it again"
        );
    }

    #[test]
    fn the_pool_reads_in_one_line_busiest_account_first() {
        assert_eq!(
            pool_summary(3, [("bob", 1), ("alice", 2), ("carol", 0)]),
            "3 sessions: alice ×2, bob ×1"
        );
        assert_eq!(
            pool_summary(2, [("bob", 1), ("alice", 1)]),
            "2 sessions: alice ×1, bob ×1"
        );
        assert_eq!(pool_summary(1, [("alice", 1)]), "1 session: alice ×1");
        assert_eq!(pool_summary(2, []), "2 sessions");
        let share = |id: &str, sessions| PoolShare {
            account: AccountRef {
                id: AccountId::from(id),
                name: id.to_owned(),
            },
            sessions,
        };
        let mut pool = Pool::default();
        assert_eq!(pool.summary(), None, "no pool heard of: alone");
        pool = Pool {
            sessions: 1,
            by_account: vec![share("alice", 1)],
        };
        assert_eq!(pool.summary(), None, "alone");
        pool = Pool {
            sessions: 3,
            by_account: vec![share("alice", 2), share("bob", 1)],
        };
        assert_eq!(
            pool.summary().as_deref(),
            Some("3 sessions: alice ×2, bob ×1")
        );
        assert_eq!(pool.sessions_on(&AccountId::from("alice")), 2);
        assert_eq!(pool.sessions_on(&AccountId::from("carol")), 0);
    }

    #[test]
    fn the_switch_list_starts_with_the_stores_last_switches_and_this_sessions_follow() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(crate::proxy::history::HISTORY_FILE);
        for i in 0..(SEEDED_SWITCHES as i64 + 3) {
            crate::proxy::history::append(
                &path,
                &SwitchRecord {
                    at: at(i),
                    from: Some(account("a")),
                    to: account("b"),
                    reason: SwitchReason::Manual,
                    from_usage: None,
                    to_usage: None,
                    elapsed_ms: i as u64,
                    error: None,
                },
            )
            .unwrap();
        }
        let seeded = crate::proxy::history::read_recent(&path, SEEDED_SWITCHES);
        let mut d = Dashboard::new(SessionMode::Proxy, Vec::new()).with_switches(seeded);
        assert_eq!(d.switches.len(), SEEDED_SWITCHES);
        assert_eq!(d.switches[0].elapsed_ms, 3, "the oldest ones left out");
        d.apply(&ProxyEvent::SwitchDone {
            from: Some(account("b")),
            to: account("a"),
            reason: SwitchReason::Manual,
            elapsed_ms: 999,
            at: at(1000),
        });
        assert_eq!(d.switches.len(), SEEDED_SWITCHES + 1);
        assert_eq!(
            d.switches.last().unwrap().elapsed_ms,
            999,
            "this session's last"
        );
    }
}

#[cfg(test)]
mod runway_tests {
    use super::*;
    use crate::quota::RateLimitWindow;
    use chrono::TimeZone;

    const NOW: i64 = 1_800_000_000;

    fn snapshot(used: f64) -> RateLimitSnapshot {
        RateLimitSnapshot {
            primary: Some(RateLimitWindow {
                used_percent: used,
                window_duration_mins: Some(300),
                resets_at: Some(NOW + 4 * 3600),
            }),
            ..Default::default()
        }
    }

    fn update(d: &mut Dashboard, id: &str, used: f64, at: i64) {
        d.apply(&ProxyEvent::RateLimitsUpdated {
            account: AccountRef {
                id: AccountId::new(id),
                name: id.to_owned(),
            },
            snapshot: snapshot(used),
            families: Vec::new(),
            at: Utc.timestamp_opt(NOW + at, 0).unwrap(),
        });
    }

    #[test]
    fn the_pool_burns_at_the_sum_of_its_accounts_rates() {
        let mut d = Dashboard::new(
            SessionMode::Proxy,
            vec![AccountView::new("a", "alice"), AccountView::new("b", "bob")],
        );
        d.apply(&ProxyEvent::ActiveAccount {
            account: AccountRef {
                id: AccountId::new("a"),
                name: "alice".into(),
            },
            at: Utc.timestamp_opt(NOW - 600, 0).unwrap(),
        });
        // alice (this session) 1 point a minute; bob (another session's) 2 points a minute,
        // half of it from an earlier session's stored sample.
        update(&mut d, "a", 10.0, -600);
        update(&mut d, "a", 20.0, 0);
        d.seed_history(vec![StoredSample {
            at: NOW - 600,
            account: AccountId::new("b"),
            five_hour: Some(30.0),
            weekly: None,
        }]);
        update(&mut d, "b", 50.0, 0);
        let Burn::Rising(rate) = d.pool_burn(WindowKind::FiveHour, NOW) else {
            panic!("{:?}", d.pool_burn(WindowKind::FiveHour, NOW));
        };
        assert!((rate - 3.0 / 60.0).abs() < 1e-12, "{rate}");
        // alice's 80 % last 80 / 3 minutes, bob's 50 % then 50 / 3 more: dry at 43.3 min.
        // Both reset at 4 h.
        assert_eq!(
            d.runway(NOW),
            Runway::DryGap {
                from: NOW + 1600 + 1000,
                until: NOW + 4 * 3600,
                then: "alice".into(),
            }
        );
        assert_eq!(d.samples(WindowKind::FiveHour).len(), 2, "alice's only");
    }

    /// Minutes into a session, the runway waits for a burn: not a forecast from one read
    /// (the window's average since it opened) nor from two reads a few minutes apart, even
    /// when another account's older samples lie flat.
    #[test]
    fn no_forecast_until_the_active_account_has_ten_minutes_of_samples() {
        let mut d = Dashboard::new(
            SessionMode::Proxy,
            vec![AccountView::new("a", "alice"), AccountView::new("b", "bob")],
        );
        d.apply(&ProxyEvent::ActiveAccount {
            account: AccountRef {
                id: AccountId::new("a"),
                name: "alice".into(),
            },
            at: Utc.timestamp_opt(NOW - 600, 0).unwrap(),
        });
        // bob: idle for an hour (an earlier session's samples).
        d.seed_history(
            [-3600, -1800]
                .into_iter()
                .map(|at| StoredSample {
                    at: NOW + at,
                    account: AccountId::new("b"),
                    five_hour: Some(5.0),
                    weekly: None,
                })
                .collect(),
        );
        update(&mut d, "b", 5.0, -300);
        // alice: 20 % a first read, then a rise 3 minutes later.
        update(&mut d, "a", 20.0, -180);
        assert_eq!(d.runway(NOW - 180), Runway::TooFewSamples);
        update(&mut d, "a", 22.0, 0);
        assert_eq!(d.pool_burn(WindowKind::FiveHour, NOW), Burn::TooFewSamples);
        assert_eq!(d.runway(NOW), Runway::TooFewSamples);
        // Ten minutes after her first read: measured (2 points in 10 minutes).
        update(&mut d, "a", 24.0, 420);
        assert_eq!(
            d.pool_burn(WindowKind::FiveHour, NOW + 420),
            Burn::Rising(4.0 / 600.0)
        );
        // At 0.4 points a minute alice's 76 % and bob's 95 % outlast their 4-hour reset.
        assert_eq!(
            d.runway(NOW + 420),
            Runway::KeepsUp {
                until: NOW + 420 + crate::pace::RUNWAY_HORIZON_SECS
            }
        );
    }
}
