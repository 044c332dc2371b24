//! The core's state and its one entry point: [`CoreState::handle`] takes an [`Input`] and
//! the time, changes the state, and returns the [`Effect`]s to carry out. Nothing here spawns,
//! sends, sleeps, reads a clock or touches a file: every rule is a plain function of the
//! state, the input and `now`.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::account_id::AccountId;
use crate::proxy::app_server::AppServerExit;
use crate::proxy::directory::DirAccount;
use crate::proxy::events::{AccountRef, ConnectionState, ProxyCommand, ProxyEvent};
use crate::proxy::policy::Candidate;
use crate::proxy::pool::PeerMessage;
use crate::proxy::relay::{ConnId, Observation};
use crate::proxy::turn_guard::GuardEvent;
use crate::quota::{AccountLimits, RateLimitSnapshot};

use super::CoreConfig;
use super::effects::{Effect, Effects};
use super::lifecycle::AppServerState;
use super::switching::{PendingSwitch, SwitchOutcome};

/// The time a decision is made at: both clocks, read once by the actor.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Now {
    /// For durations (timeouts, freshness, backoff).
    pub mono: Instant,
    /// For events' `at` and the policy's unix times.
    pub wall: DateTime<Utc>,
}

impl Now {
    pub(crate) fn read() -> Self {
        Self {
            mono: Instant::now(),
            wall: Utc::now(),
        }
    }

    pub(crate) fn unix(&self) -> i64 {
        self.wall.timestamp()
    }

    /// The wall time of an earlier monotonic instant.
    pub(crate) fn wall_of(&self, then: Instant) -> DateTime<Utc> {
        let ago = self.mono.saturating_duration_since(then);
        self.wall - chrono::Duration::from_std(ago).unwrap_or_default()
    }

    /// The monotonic instant of a wall time another session of this machine stamped (one
    /// machine, one clock): `mono − (wall − at)`, never later than now; `None` when it is
    /// older than the monotonic clock itself (before boot: not a fact of this machine's).
    pub(crate) fn instant_of(&self, at: DateTime<Utc>) -> Option<Instant> {
        let ago = (self.wall - at).to_std().unwrap_or_default();
        self.mono.checked_sub(ago)
    }
}

/// Everything the core decides on (the actor turns its messages into these).
#[derive(Debug)]
pub(crate) enum Input {
    /// The session starts: announce the active account, read every account's usage.
    Start,
    /// The usage poll's timer fired: read the accounts whose numbers are stale.
    PollTick,
    Connected(ConnId),
    Disconnected(ConnId),
    Observed(ConnId, Observation),
    Guard(GuardEvent),
    /// A request of the app-server on the control connection.
    ServerRequest {
        id: Value,
        method: String,
        params: Value,
    },
    ControlClosed,
    Command(ProxyCommand),
    SwitchFinished(SwitchOutcome),
    /// Usage read from `/wham/usage`; `started`: when the reads were sent.
    UsageFetched {
        started: Instant,
        results: Vec<(AccountId, Result<AccountLimits, String>)>,
    },
    /// The store's accounts, from the `number`th listing asked for. Each read runs on a task
    /// of its own, so a listing may finish after a later one: it is then dropped, as the
    /// later one read the store after everything it could have seen (an older listing would
    /// undo a change the panel already shows, until the next poll).
    AccountsListed {
        number: u64,
        accounts: Vec<DirAccount>,
    },
    /// The app-server exited; `restarting`: the session is starting another.
    AppServerExited {
        exit: AppServerExit,
        restarting: bool,
    },
    /// A new app-server is up (the actor holds its control connection).
    AppServerRestarted,
    /// The login into a restarted app-server ended.
    Relogged {
        account: AccountId,
        result: Result<Option<AccountLimits>, String>,
    },
    /// A reset credit cleared the active account's limits; its numbers read since.
    ResetRedeemed {
        account: AccountId,
        limits: AccountLimits,
    },
    /// Time passed; a deferred switch may be able to go now.
    Recheck,
    /// Another session of the pool learned something.
    PeerFact(PeerMessage),
    /// This session became (`true`) or stopped being the pool's usage poller.
    PollerRole(bool),
}

/// The state the core owns.
#[derive(Debug)]
pub(crate) struct CoreState {
    pub(super) config: CoreConfig,
    pub(super) accounts: Vec<DirAccount>,
    pub(super) active: Option<AccountId>,
    /// Every limit family known of each account.
    pub(super) snapshots: HashMap<AccountId, AccountLimits>,
    /// When each account's usage was last read in full.
    pub(super) usage_at: HashMap<AccountId, Instant>,
    /// Running turns: turn id → (connection, account it started on).
    pub(super) running: HashMap<String, (ConnId, Option<AccountId>)>,
    /// Turns asked for (`turn/start` seen by a connection's guard) and not started yet:
    /// (connection, thread) → when. They hold a switch back like running turns do.
    pub(super) requested: HashMap<(ConnId, String), Instant>,
    pub(super) pending: Option<PendingSwitch>,
    pub(super) switching: bool,
    /// Accounts left by an automatic switch, and when (unix seconds).
    pub(super) switched_away: HashMap<AccountId, i64>,
    pub(super) clients: HashSet<ConnId>,
    pub(super) none_available_until: Option<Instant>,
    /// Connections whose failed turn waits for a switch: when the limit was hit, and on whom.
    pub(super) reruns: HashMap<ConnId, (Instant, Option<AccountId>)>,
    /// Re-runs under way: connection → (limit hit at, from, to).
    pub(super) rerun_started: HashMap<ConnId, (Instant, Option<AccountId>, AccountId)>,
    pub(super) app_server: AppServerState,
    /// When the session last heard an account's numbers live (from the stream or a limit).
    pub(super) heard_live: HashMap<AccountId, Instant>,
    /// Accounts whose usage-limit hit was reported (once per limit, though one limit can
    /// raise two errors and a withheld re-run).
    pub(super) limit_reported: HashSet<AccountId>,
    /// A read of the active account's quota in flight.
    pub(super) quota_read: Option<AccountId>,
    /// Whether this session reads the usage of the accounts on the poll's timer (the pool's
    /// elected poller; alone, always).
    pub(super) poller: bool,
    /// Since when a non-poller expects the poller's reads (the start; else its first tick).
    pub(super) reads_expected_since: Option<Instant>,
    /// When a peer's usage read last came (the poller's, as a rule).
    pub(super) peer_read_at: Option<Instant>,
    /// No peer's read came for too long: this non-poller reads on its timer in the poller's
    /// stead (said in the log when it starts and when it ends).
    pub(super) poller_overdue: bool,
    /// Usage reads sent and not answered yet, and when (a poll does not read them again).
    pub(super) reading: HashMap<AccountId, Instant>,
    /// Turns a guard holds (`TurnRequested { held: true }`): not busy, since they wait for
    /// the switch that their being busy would hold back. Released into `requested`.
    pub(super) held_requests: HashMap<(ConnId, String), Instant>,
    /// The number of held turns last told ([`ProxyEvent::TurnsHeld`]).
    pub(super) held_told: usize,
    /// The newest store listing taken ([`Input::AccountsListed`]).
    pub(super) newest_listing: u64,
    /// Whether the guards hold new turns (rule 4 of the pool, `pool.rs`).
    pub(super) hold: Hold,
    /// Accounts a peer failed to log in, kept out of the candidates until then.
    pub(super) login_failed_until: HashMap<AccountId, Instant>,
    /// When each account's own stream numbers were last sent to the pool.
    pub(super) stream_sent: HashMap<AccountId, Instant>,
    /// Accounts whose stream numbers changed since they were last sent (coalesced).
    pub(super) stream_unsent: HashSet<AccountId>,
    /// The running turns' tokens, for the ledger.
    pub(super) book: super::turns::TurnBook,
}

/// Whether the guards hold new turns for a switch away from an exhausted account.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Hold {
    Off,
    /// Holding since then.
    On(Instant),
    /// Held too long with no switch: let go until the reason goes away.
    Expired,
}

impl CoreState {
    /// The session has already logged in `active`; the app-server is up.
    pub(crate) fn new(
        config: CoreConfig,
        accounts: Vec<DirAccount>,
        active: AccountId,
        active_snapshot: Option<AccountLimits>,
    ) -> Self {
        let mut snapshots = HashMap::new();
        if let Some(s) = active_snapshot {
            snapshots.insert(active.clone(), s);
        }
        Self {
            config,
            accounts,
            active: Some(active),
            snapshots,
            usage_at: HashMap::new(),
            running: HashMap::new(),
            requested: HashMap::new(),
            pending: None,
            switching: false,
            switched_away: HashMap::new(),
            clients: HashSet::new(),
            none_available_until: None,
            reruns: HashMap::new(),
            rerun_started: HashMap::new(),
            app_server: AppServerState::Up,
            heard_live: HashMap::new(),
            limit_reported: HashSet::new(),
            quota_read: None,
            poller: true,
            reads_expected_since: None,
            peer_read_at: None,
            poller_overdue: false,
            reading: HashMap::new(),
            held_requests: HashMap::new(),
            held_told: 0,
            newest_listing: 0,
            hold: Hold::Off,
            login_failed_until: HashMap::new(),
            book: Default::default(),
            stream_sent: HashMap::new(),
            stream_unsent: HashSet::new(),
        }
    }

    /// Decides what `input` changes and what is to be done about it.
    pub(crate) fn handle(&mut self, input: Input, now: Now) -> Vec<Effect> {
        let mut fx = Effects::default();
        match input {
            Input::Start => {
                self.reads_expected_since = Some(now.mono);
                self.announce_start(now, &mut fx);
                self.poll_usage(true, now, &mut fx);
            }
            Input::PollTick => self.poll_usage(false, now, &mut fx),
            Input::Connected(conn) => {
                self.clients.insert(conn);
                self.emit_connection(now, &mut fx);
            }
            Input::Disconnected(conn) => self.disconnected(conn, now, &mut fx),
            Input::Observed(conn, observation) => self.observe(conn, observation, now, &mut fx),
            Input::Guard(event) => self.guard_event(event, now, &mut fx),
            Input::ServerRequest { id, method, params } => {
                self.server_request(id, &method, params, &mut fx)
            }
            Input::ControlClosed => {
                tracing::warn!("control connection closed");
                fx.emit(ProxyEvent::Connection {
                    state: ConnectionState::Down,
                    at: now.wall,
                });
            }
            Input::Command(command) => self.command(command, now, &mut fx),
            Input::SwitchFinished(outcome) => self.switch_finished(outcome, now, &mut fx),
            Input::UsageFetched { started, results } => {
                self.usage_fetched(started, results, now, &mut fx)
            }
            Input::AccountsListed { number, accounts } => {
                if number > self.newest_listing {
                    self.newest_listing = number;
                    self.accounts_listed(accounts, now, &mut fx);
                }
            }
            Input::ResetRedeemed { account, limits } => {
                self.reset_redeemed(account, limits, now, &mut fx)
            }
            Input::AppServerExited { exit, restarting } => {
                self.app_server_exited(exit, restarting, now, &mut fx)
            }
            Input::AppServerRestarted => self.relogin(now, &mut fx),
            Input::Relogged { account, result } => self.relogged(account, result, now, &mut fx),
            Input::Recheck => {
                self.flush_stream_facts(now, &mut fx);
                self.maybe_execute(now, &mut fx);
            }
            Input::PeerFact(message) => self.peer_fact(message, now, &mut fx),
            Input::PollerRole(poller) => self.poller_role(poller, now, &mut fx),
        }
        self.update_hold(now, &mut fx);
        self.emit_held(now, &mut fx);
        fx.into_vec()
    }

    fn announce_start(&self, now: Now, fx: &mut Effects) {
        if let Some(active) = &self.active {
            fx.emit(ProxyEvent::ActiveAccount {
                account: self.account_ref(active),
                at: now.wall,
            });
            self.emit_limits(active, now, fx);
        }
        fx.emit(ProxyEvent::Connection {
            state: ConnectionState::Ready { clients: 0 },
            at: now.wall,
        });
    }

    pub(super) fn account_ref(&self, id: &AccountId) -> AccountRef {
        self.accounts
            .iter()
            .find(|a| a.id == *id)
            .map(DirAccount::to_ref)
            .unwrap_or_else(|| AccountRef {
                id: id.clone(),
                name: id.to_string(),
            })
    }

    /// Tells what is known of an account's limits: its quota and its other families.
    pub(super) fn emit_limits(&self, id: &AccountId, now: Now, fx: &mut Effects) {
        let Some(limits) = self.snapshots.get(id) else {
            return;
        };
        fx.emit(ProxyEvent::RateLimitsUpdated {
            account: self.account_ref(id),
            snapshot: limits.quota().cloned().unwrap_or_default(),
            families: limits.others().cloned().collect(),
            at: now.wall,
        });
    }

    /// An account's quota (the `codex` family), if known.
    pub(super) fn quota(&self, id: &AccountId) -> Option<&RateLimitSnapshot> {
        self.snapshots.get(id).and_then(AccountLimits::quota)
    }

    /// An account as automatic choices weigh it: one a peer just failed to log in is out.
    pub(super) fn candidate(&self, account: &DirAccount, now: Now) -> Candidate {
        let mut candidate = candidate_of(account, &self.snapshots, &self.switched_away);
        candidate.needs_login |= self.login_failed(&account.id, now);
        candidate
    }

    /// Whether a peer failed to log `id` in less than a minute ago.
    pub(super) fn login_failed(&self, id: &AccountId, now: Now) -> bool {
        self.login_failed_until
            .get(id)
            .is_some_and(|until| now.mono < *until)
    }
}

/// An account as the policy weighs it.
pub(super) fn candidate_of(
    account: &DirAccount,
    snapshots: &HashMap<AccountId, AccountLimits>,
    switched_away: &HashMap<AccountId, i64>,
) -> Candidate {
    Candidate {
        id: account.id.clone(),
        name: account.name.clone(),
        enabled: account.enabled,
        needs_login: !account.switchable(),
        snapshot: snapshots
            .get(&account.id)
            .and_then(AccountLimits::quota)
            .cloned(),
        switched_away_at: switched_away.get(&account.id).copied(),
        workspace: account.chatgpt_account_id.clone(),
    }
}
