//! The session core: one task that owns the proxy's state (active account, live rate limits,
//! running turns, the pending switch) and decides when to switch. Everything else talks to it
//! through messages; slow work (logins, usage fetches) runs in spawned tasks that report back.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use color_eyre::eyre::{Result, eyre};
use futures_util::future::join_all;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::proxy::app_server::AppServerExit;
use crate::proxy::directory::{AccountDirectory, DirAccount};
use crate::proxy::events::{AccountRef, ConnectionState, ProxyCommand, ProxyEvent, SwitchReason};
use crate::proxy::history::{self, SwitchRecord, UsageNumbers};
use crate::proxy::policy::{self, Candidate, Choice, Mode, PolicyConfig};
use crate::proxy::relay::{ConnId, ConnectionHandle, Observation, RelayEvent};
use crate::proxy::rpc::{RefreshParams, method};
use crate::proxy::turn_guard::{GuardCommand, GuardEvent, GuardShared, TurnGuard};
use crate::proxy::upstream::{self, ControlConnection, ControlEvent};
use crate::quota::{AccountLimits, RateLimitSnapshot};

/// How long one `/wham/usage` fetch may take before the account counts as unknown.
const USAGE_TIMEOUT: Duration = Duration::from_secs(8);
/// After "no account available", automatic triggers other than a real limit error are not
/// re-evaluated for this long (every turn would otherwise ask again).
const NONE_AVAILABLE_BACKOFF: Duration = Duration::from_secs(60);

/// The core's settings.
#[derive(Clone, Debug)]
pub struct CoreConfig {
    pub policy: PolicyConfig,
    /// How often every account's `/wham/usage` is polled.
    pub usage_poll: Duration,
    /// `<store>/switch-history.jsonl`.
    pub history_path: PathBuf,
}

/// A reply to a command: what happened, in a sentence.
pub type CommandReply = oneshot::Sender<Result<String, String>>;

/// Everything the core reacts to.
#[derive(Debug)]
pub enum CoreMsg {
    Relay(RelayEvent<TurnGuard>),
    Guard(GuardEvent),
    Control(ControlEvent),
    Command(ProxyCommand, Option<CommandReply>),
    SwitchFinished(Box<SwitchOutcome>),
    /// Usage read from `/wham/usage`; `started`: when the reads were sent.
    UsageFetched {
        started: Instant,
        results: Vec<(String, Result<AccountLimits, String>)>,
    },
    AccountsListed(Vec<DirAccount>),
    /// The app-server exited; `restarting`: the session is starting another.
    AppServerExited {
        exit: AppServerExit,
        restarting: bool,
    },
    /// A new app-server is up; this is the control connection to it. The active account is
    /// logged in again before clients may attach.
    AppServerRestarted(ControlConnection),
    /// The login into a restarted app-server ended.
    Relogged {
        account: String,
        result: Result<Option<AccountLimits>, String>,
    },
    /// A reset credit cleared the active account's limits; its numbers read since.
    ResetRedeemed {
        account: String,
        limits: AccountLimits,
    },
    /// Time passed; a deferred switch may be able to go now.
    Recheck,
    Shutdown,
}

#[derive(Clone, Debug, PartialEq)]
enum Target {
    Best,
    Account(String),
}

#[derive(Clone, Debug)]
struct PendingSwitch {
    target: Target,
    reason: SwitchReason,
    mode: Mode,
    announced_deferral: bool,
}

/// The result of a switch task.
#[derive(Debug)]
pub struct SwitchOutcome {
    pending_reason: SwitchReason,
    mode: Mode,
    from: Option<String>,
    fetched: Vec<(String, AccountLimits)>,
    result: Result<(String, Option<AccountLimits>), SwitchFailure>,
    started: Instant,
}

#[derive(Debug)]
enum SwitchFailure {
    NoneAvailable { earliest_reset: Option<i64> },
    Refused(String),
    Failed { to: String, error: String },
}

/// What the core starts from: the session has already logged in `active`.
pub struct CoreInit<D: AccountDirectory> {
    pub guards: Arc<GuardShared>,
    pub dir: D,
    pub control: ControlConnection,
    pub events: broadcast::Sender<ProxyEvent>,
    pub inbox: mpsc::UnboundedSender<CoreMsg>,
    pub config: CoreConfig,
    pub accounts: Vec<DirAccount>,
    pub active: String,
    pub active_snapshot: Option<AccountLimits>,
    /// The relay's gate: clients wait while it is `false` (a TUI that attaches to an
    /// app-server without a login stays on its sign-in screen, PROTOCOL.md §2).
    pub ready: watch::Sender<bool>,
}

/// The state the core owns.
pub struct Core<D: AccountDirectory> {
    dir: D,
    control: ControlConnection,
    events: broadcast::Sender<ProxyEvent>,
    inbox: mpsc::UnboundedSender<CoreMsg>,
    config: CoreConfig,
    accounts: Vec<DirAccount>,
    active: Option<String>,
    /// Every limit family known of each account.
    snapshots: HashMap<String, AccountLimits>,
    usage_at: HashMap<String, Instant>,
    /// Running turns: turn id → (connection, account it started on).
    running: HashMap<String, (ConnId, Option<String>)>,
    /// Turns asked for (`turn/start` seen by a connection's guard) and not started yet:
    /// (connection, thread) → when. They hold a switch back like running turns do.
    requested: HashMap<(ConnId, String), Instant>,
    pending: Option<PendingSwitch>,
    switching: bool,
    switched_away: HashMap<String, i64>,
    clients: HashSet<ConnId>,
    none_available_until: Option<Instant>,
    guards: Arc<GuardShared>,
    handles: HashMap<ConnId, ConnectionHandle<TurnGuard>>,
    /// Connections whose failed turn waits for a switch: when the limit was hit, and on whom.
    reruns: HashMap<ConnId, (Instant, Option<String>)>,
    /// Re-runs under way: connection → (limit hit at, from, to).
    rerun_started: HashMap<ConnId, (Instant, Option<String>, String)>,
    ready: watch::Sender<bool>,
    app_server: AppServerState,
    /// When the session last heard an account's numbers live (from the stream or a limit).
    heard_live: HashMap<String, Instant>,
    /// Accounts whose usage-limit hit was reported (once per limit, though one limit can
    /// raise two errors and a withheld re-run).
    limit_reported: HashSet<String>,
    /// A read of the active account's quota in flight (see [`Core::read_active_quota`]).
    quota_read: Option<String>,
}

/// Where the app-server is in its life, as the core knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AppServerState {
    /// Up and logged in: switches can run.
    Up,
    /// Exited; another is being started and logged in.
    Restarting,
    /// Exited for good.
    Gone,
}

/// A requested turn that has not started after this long is taken to have failed (its
/// `turn/start` got an error, which the relay does not look at).
const REQUESTED_TURN_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether a turn runs or is about to: then a login would kill it. Forgets requests that never
/// turned into a turn.
fn busy(
    running: &HashMap<String, (ConnId, Option<String>)>,
    requested: &mut HashMap<(ConnId, String), Instant>,
) -> bool {
    requested.retain(|(conn, thread), at| {
        let fresh = at.elapsed() < REQUESTED_TURN_TIMEOUT;
        if !fresh {
            tracing::warn!(
                conn,
                thread,
                "a requested turn never started; no longer waiting for it"
            );
        }
        fresh
    });
    !running.is_empty() || !requested.is_empty()
}

fn now_unix() -> i64 {
    Utc::now().timestamp()
}

impl<D: AccountDirectory> Core<D> {
    pub fn new(init: CoreInit<D>) -> Self {
        let mut snapshots = HashMap::new();
        if let Some(s) = init.active_snapshot {
            snapshots.insert(init.active.clone(), s);
        }
        Self {
            dir: init.dir,
            control: init.control,
            events: init.events,
            inbox: init.inbox,
            config: init.config,
            accounts: init.accounts,
            active: Some(init.active),
            snapshots,
            usage_at: HashMap::new(),
            running: HashMap::new(),
            requested: HashMap::new(),
            pending: None,
            switching: false,
            switched_away: HashMap::new(),
            clients: HashSet::new(),
            none_available_until: None,
            guards: init.guards,
            handles: HashMap::new(),
            reruns: HashMap::new(),
            rerun_started: HashMap::new(),
            ready: init.ready,
            app_server: AppServerState::Up,
            heard_live: HashMap::new(),
            limit_reported: HashSet::new(),
            quota_read: None,
        }
    }

    fn emit(&self, event: ProxyEvent) {
        let _ = self.events.send(event);
    }

    fn account_ref(&self, id: &str) -> AccountRef {
        self.accounts
            .iter()
            .find(|a| a.id == id)
            .map(DirAccount::to_ref)
            .unwrap_or_else(|| AccountRef {
                id: id.to_owned(),
                name: id.to_owned(),
            })
    }

    /// Runs until shutdown or until the app-server is gone for good.
    pub async fn run(mut self, mut inbox: mpsc::UnboundedReceiver<CoreMsg>) {
        self.announce_start();
        self.poll_usage(true);
        let mut poll = tokio::time::interval(self.config.usage_poll);
        poll.tick().await;
        loop {
            tokio::select! {
                msg = inbox.recv() => {
                    let Some(msg) = msg else { break };
                    if matches!(msg, CoreMsg::Shutdown) {
                        break;
                    }
                    self.handle(msg);
                }
                _ = poll.tick() => self.poll_usage(false),
            }
        }
    }

    fn announce_start(&self) {
        let at = Utc::now();
        if let Some(active) = &self.active {
            self.emit(ProxyEvent::ActiveAccount {
                account: self.account_ref(active),
                at,
            });
            self.emit_limits(active);
        }
        self.emit(ProxyEvent::Connection {
            state: ConnectionState::Ready { clients: 0 },
            at,
        });
    }

    fn handle(&mut self, msg: CoreMsg) {
        match msg {
            // The handle will let the core drive the connection (issue 6); nothing uses it yet.
            CoreMsg::Relay(RelayEvent::Connected(conn, handle)) => {
                self.clients.insert(conn);
                self.handles.insert(conn, handle);
                self.emit_connection();
            }
            CoreMsg::Relay(RelayEvent::Disconnected(conn)) => {
                self.clients.remove(&conn);
                self.handles.remove(&conn);
                self.reruns.remove(&conn);
                self.rerun_started.remove(&conn);
                // Turns seen only on that connection can no longer be tracked.
                self.running.retain(|_, (c, _)| *c != conn);
                self.requested.retain(|(c, _), _| *c != conn);
                self.emit_connection();
                self.emit_turns();
                self.maybe_execute();
            }
            CoreMsg::Relay(RelayEvent::Observed(conn, observation)) => {
                self.observe(conn, observation)
            }
            CoreMsg::Control(event) => self.control_event(event),
            CoreMsg::Guard(event) => self.guard_event(event),
            CoreMsg::Command(command, reply) => self.command(command, reply),
            CoreMsg::SwitchFinished(outcome) => self.switch_finished(*outcome),
            CoreMsg::UsageFetched { started, results } => self.usage_fetched(started, results),
            CoreMsg::AccountsListed(accounts) => self.accounts_listed(accounts),
            CoreMsg::ResetRedeemed { account, limits } => {
                // Newer than anything heard before the reset, live numbers included.
                self.heard_live.insert(account.clone(), Instant::now());
                if !limits.quota().is_some_and(RateLimitSnapshot::is_exhausted) {
                    self.limit_reported.remove(&account);
                }
                self.snapshots.insert(account.clone(), limits);
                self.emit_limits(&account);
                self.update_alternative();
                self.poll_reset_credits(Some(&account));
            }
            CoreMsg::AppServerExited { exit, restarting } => {
                self.app_server = if restarting {
                    AppServerState::Restarting
                } else {
                    AppServerState::Gone
                };
                // Reconnecting clients wait at the gate until the next one is logged in.
                self.ready.send_replace(false);
                self.give_up_reruns();
                self.emit(ProxyEvent::AppServerExited {
                    status: exit.status,
                    stderr_tail: exit.stderr_tail,
                    restarting,
                    at: Utc::now(),
                });
                self.emit_connection();
            }
            CoreMsg::AppServerRestarted(control) => self.relogin(control),
            CoreMsg::Relogged { account, result } => self.relogged(account, result),
            CoreMsg::Recheck => self.maybe_execute(),
            CoreMsg::Shutdown => {}
        }
    }

    /// Tells what is known of an account's limits: its quota and its other families.
    fn emit_limits(&self, id: &str) {
        let Some(limits) = self.snapshots.get(id) else {
            return;
        };
        self.emit(ProxyEvent::RateLimitsUpdated {
            account: self.account_ref(id),
            snapshot: limits.quota().cloned().unwrap_or_default(),
            families: limits.others().cloned().collect(),
            at: Utc::now(),
        });
    }

    /// An account's quota (the `codex` family), if known.
    fn quota(&self, id: &str) -> Option<&RateLimitSnapshot> {
        self.snapshots.get(id).and_then(AccountLimits::quota)
    }

    fn emit_connection(&self) {
        let state = match self.app_server {
            AppServerState::Up => ConnectionState::Ready {
                clients: self.clients.len(),
            },
            AppServerState::Restarting => ConnectionState::Starting,
            AppServerState::Gone => ConnectionState::Down,
        };
        self.emit(ProxyEvent::Connection {
            state,
            at: Utc::now(),
        });
    }

    fn emit_turns(&self) {
        self.emit(ProxyEvent::TurnsRunning {
            running: self.running.len(),
            at: Utc::now(),
        });
    }

    fn observe(&mut self, conn: ConnId, observation: Observation) {
        match observation {
            Observation::TurnStarted { turn_id, thread_id } => {
                self.requested.remove(&(conn, thread_id));
                self.running.insert(turn_id, (conn, self.active.clone()));
                self.emit_turns();
            }
            Observation::TurnCompleted {
                turn_id, thread_id, ..
            } => {
                self.requested.remove(&(conn, thread_id));
                if self.running.remove(&turn_id).is_some() {
                    self.emit_turns();
                }
                self.maybe_execute();
            }
            Observation::RateLimits(update) => {
                let Some(active) = self.active.clone() else {
                    return;
                };
                let limits = self.snapshots.entry(active.clone()).or_default();
                let quota = limits.apply_update(&update);
                self.emit_limits(&active);
                // Another family (a model-specific limit) is shown, never switched on: the
                // account's quota is the `codex` family. A turn refused on such a limit still
                // ends in a usage-limit error, which switches.
                if !quota {
                    // Codex sends one update per response, of the last header family
                    // (PROTOCOL.md §9): this turn's quota numbers did not come. Read them.
                    self.read_active_quota(&active);
                    return;
                }
                self.heard_live.insert(active.clone(), Instant::now());
                self.check_active_quota();
            }
            Observation::UsageLimitError { turn_id, .. } => {
                // Attribute the error to the account its turn started on: the title thread's
                // duplicate error of an account we already left must not trigger again.
                let account = turn_id
                    .as_ref()
                    .and_then(|t| self.running.get(t))
                    .and_then(|(_, a)| a.clone())
                    .or_else(|| self.active.clone());
                if account != self.active {
                    tracing::debug!("usage-limit error from an account already left; ignored");
                    return;
                }
                if let Some(active) = self.active.clone() {
                    self.report_limit(&active);
                }
                match self.pending.as_mut() {
                    // The 100 % update that precedes the error already armed a switch; the
                    // error is the more telling reason. A second error (the title thread's
                    // duplicate of the same limit) changes nothing.
                    Some(p) if p.mode == Mode::Automatic => p.reason = SwitchReason::UsageLimit,
                    Some(_) => {}
                    None if self.switching => {}
                    None => self.arm(Target::Best, SwitchReason::UsageLimit, Mode::Automatic),
                }
            }
        }
    }

    /// Arms a switch when the active account's quota asks for one (a hard limit, or a soft
    /// threshold unless "no account available" was said a moment ago).
    fn check_active_quota(&mut self) {
        let Some(active) = self.active.clone() else {
            return;
        };
        let snapshot = self.quota(&active).cloned().unwrap_or_default();
        if let Some(reason) = policy::trigger_for_snapshot(&snapshot, &self.config.policy) {
            let hard = matches!(reason, SwitchReason::HardLimit { .. });
            let backing_off = self
                .none_available_until
                .is_some_and(|until| Instant::now() < until);
            if hard || !backing_off {
                self.arm(Target::Best, reason, Mode::Automatic);
            }
        }
    }

    /// Reads the active account's usage (one read at a time), when a turn reported the
    /// numbers of another limit family instead of the quota's.
    fn read_active_quota(&mut self, active: &str) {
        if self.quota_read.is_some() {
            return;
        }
        self.quota_read = Some(active.to_owned());
        let dir = self.dir.clone();
        let inbox = self.inbox.clone();
        let ids = vec![active.to_owned()];
        let started = Instant::now();
        tokio::spawn(async move {
            let results = fetch_usages(&dir, &ids).await;
            let _ = inbox.send(CoreMsg::UsageFetched { started, results });
        });
    }

    /// Records that a switch is wanted; it runs at the next turn boundary.
    fn arm(&mut self, target: Target, reason: SwitchReason, mode: Mode) {
        if self.switching {
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
        self.maybe_execute();
    }

    /// Starts the pending switch if no turn is running (a login during a turn kills the turn,
    /// PROTOCOL.md §2), or says that it waits.
    fn maybe_execute(&mut self) {
        // A switch needs a live, logged-in app-server; it waits for the restart otherwise.
        if self.switching || self.app_server != AppServerState::Up {
            return;
        }
        let Some(pending) = self.pending.as_mut() else {
            return;
        };
        if busy(&self.running, &mut self.requested) {
            if !pending.announced_deferral {
                pending.announced_deferral = true;
                let to = match &pending.target {
                    Target::Account(id) => Some(id.clone()),
                    Target::Best => None,
                };
                let reason = pending.reason.clone();
                self.emit(ProxyEvent::SwitchDeferred {
                    to: to.map(|id| self.account_ref(&id)),
                    reason,
                    at: Utc::now(),
                });
            }
            return;
        }
        let pending = self.pending.take().expect("pending checked above");
        self.switching = true;
        self.guards.set_switching(true);
        let task = SwitchTask {
            dir: self.dir.clone(),
            control: self.control.clone(),
            events: self.events.clone(),
            policy: self.config.policy.clone(),
            accounts: self.accounts.clone(),
            from: self.active.clone(),
            snapshots: self.snapshots.clone(),
            fresh: self
                .usage_at
                .iter()
                .filter(|(_, at)| {
                    at.elapsed().as_secs() < self.config.policy.usage_stale_secs as u64
                })
                .map(|(id, _)| id.clone())
                .collect(),
            switched_away: self.switched_away.clone(),
            pending,
        };
        let inbox = self.inbox.clone();
        tokio::spawn(async move {
            let outcome = task.run().await;
            let _ = inbox.send(CoreMsg::SwitchFinished(Box::new(outcome)));
        });
    }

    fn switch_finished(&mut self, outcome: SwitchOutcome) {
        self.switching = false;
        self.guards.set_switching(false);
        for handle in self.handles.values() {
            let _ = handle.command(GuardCommand::SwitchOver);
        }
        let now = Instant::now();
        for (id, limits) in outcome.fetched {
            self.usage_at.insert(id.clone(), now);
            if Some(&id) != self.active.as_ref() {
                // A fresh read that shows room lifts "exhausted" everywhere.
                if !limits.quota().is_some_and(RateLimitSnapshot::is_exhausted) {
                    self.limit_reported.remove(&id);
                }
                self.snapshots.insert(id.clone(), limits);
                self.emit_limits(&id);
            }
        }
        let at = Utc::now();
        match outcome.result {
            Ok((to, snapshot)) => {
                self.none_available_until = None;
                let from = outcome.from.clone();
                if let (Some(from), Mode::Automatic) = (&from, outcome.mode) {
                    self.switched_away.insert(from.clone(), now_unix());
                }
                if let Some(snapshot) = snapshot {
                    self.snapshots.insert(to.clone(), snapshot);
                    self.usage_at.insert(to.clone(), now);
                }
                // Logged in and serving: a later limit of this account is a new one.
                self.limit_reported.remove(&to);
                self.active = Some(to.clone());
                let elapsed_ms = outcome.started.elapsed().as_millis() as u64;
                let record = SwitchRecord {
                    at,
                    from: from.as_deref().map(|f| self.account_ref(f)),
                    to: self.account_ref(&to),
                    reason: outcome.pending_reason.clone(),
                    from_usage: from
                        .as_ref()
                        .and_then(|f| self.quota(f))
                        .map(UsageNumbers::from_snapshot),
                    to_usage: self.quota(&to).map(UsageNumbers::from_snapshot),
                    elapsed_ms,
                };
                if let Err(err) = history::append(&self.config.history_path, &record) {
                    tracing::warn!("could not record the switch: {err:#}");
                }
                let dir = self.dir.clone();
                let to_id = to.clone();
                tokio::spawn(async move {
                    if let Err(err) = dir.mark_active(&to_id).await {
                        tracing::warn!("could not record the active account: {err:#}");
                    }
                });
                tracing::info!(from = ?record.from, to = ?record.to, reason = %record.reason.describe(), elapsed_ms, "switched");
                for (conn, (at, from)) in std::mem::take(&mut self.reruns) {
                    if let Some(handle) = self.handles.get(&conn)
                        && handle.command(GuardCommand::Rerun).is_ok()
                    {
                        self.rerun_started.insert(conn, (at, from, to.clone()));
                    }
                }
                self.emit(ProxyEvent::SwitchDone {
                    from: record.from.clone(),
                    to: record.to.clone(),
                    reason: record.reason.clone(),
                    elapsed_ms,
                    at,
                });
                self.emit(ProxyEvent::ActiveAccount {
                    account: record.to.clone(),
                    at,
                });
                self.emit_limits(&to);
            }
            Err(SwitchFailure::NoneAvailable { earliest_reset }) => {
                self.give_up_reruns();
                self.none_available_until = Some(now + NONE_AVAILABLE_BACKOFF);
                tracing::warn!(?earliest_reset, "no account available to switch to");
                if let Some(message) = self.workspace_note() {
                    self.emit(ProxyEvent::Notice { message, at });
                }
                self.emit(ProxyEvent::NoAccountAvailable {
                    reason: outcome.pending_reason,
                    earliest_reset: earliest_reset
                        .and_then(|t| chrono::DateTime::from_timestamp(t, 0)),
                    at,
                });
            }
            Err(SwitchFailure::Refused(why)) => {
                self.give_up_reruns();
                tracing::info!(%why, "switch refused");
                self.emit(ProxyEvent::Notice { message: why, at });
            }
            Err(SwitchFailure::Failed { to, error }) => {
                self.give_up_reruns();
                tracing::error!(%error, "switch failed");
                self.emit(ProxyEvent::SwitchFailed {
                    from: outcome.from.as_deref().map(|f| self.account_ref(f)),
                    to: self.account_ref(&to),
                    reason: outcome.pending_reason,
                    error,
                    at,
                });
            }
        }
        self.update_alternative();
        // A request that arrived during the switch runs now.
        self.maybe_execute();
    }

    /// Logs the active account into a restarted app-server over its new control connection.
    fn relogin(&mut self, control: ControlConnection) {
        self.control = control.clone();
        let Some(account) = self
            .active
            .as_ref()
            .and_then(|id| self.accounts.iter().find(|a| &a.id == id))
            .cloned()
        else {
            self.app_server_gone("restarted, but no account was active to log in".to_owned());
            return;
        };
        let dir = self.dir.clone();
        let inbox = self.inbox.clone();
        tokio::spawn(async move {
            let result = login_and_confirm(&dir, &control, &account)
                .await
                .map_err(|err| format!("{err:#}"));
            let _ = inbox.send(CoreMsg::Relogged {
                account: account.id,
                result,
            });
        });
    }

    fn relogged(&mut self, account: String, result: Result<Option<AccountLimits>, String>) {
        let at = Utc::now();
        match result {
            Ok(snapshot) => {
                self.app_server = AppServerState::Up;
                if let Some(limits) = snapshot {
                    self.snapshots.insert(account.clone(), limits);
                    self.emit_limits(&account);
                }
                self.ready.send_replace(true);
                self.emit(ProxyEvent::AppServerRestarted {
                    account: self.account_ref(&account),
                    at,
                });
                self.emit_connection();
                self.maybe_execute();
            }
            Err(error) => {
                tracing::error!(%error, "logging in after the app-server restart failed");
                let name = self.account_ref(&account).name;
                self.app_server_gone(format!("restarted, but logging in {name} failed: {error}"));
            }
        }
    }

    /// A restarted app-server that cannot serve (nobody logged in): the TUI would sit on its
    /// sign-in screen, so the session is over, and says so.
    fn app_server_gone(&mut self, status: String) {
        self.app_server = AppServerState::Gone;
        self.emit(ProxyEvent::AppServerExited {
            status,
            stderr_tail: String::new(),
            restarting: false,
            at: Utc::now(),
        });
        self.emit_connection();
    }

    /// Hidden re-runs wait for the switch; when there is none, the real error shows.
    fn give_up_reruns(&mut self) {
        for (conn, _) in std::mem::take(&mut self.reruns) {
            if let Some(handle) = self.handles.get(&conn) {
                let _ = handle.command(GuardCommand::GiveUp);
            }
        }
    }

    fn guard_event(&mut self, event: GuardEvent) {
        tracing::info!(?event, "turn guard");
        match event {
            GuardEvent::RerunWanted { conn, at, .. } => {
                // The guard saw the active account's turn fail on its limit.
                if let Some(active) = self.active.clone() {
                    self.report_limit(&active);
                }
                self.reruns.insert(conn, (at, self.active.clone()));
                // The limit error's observation arms the switch too; this makes sure.
                if !self.switching {
                    self.arm(Target::Best, SwitchReason::UsageLimit, Mode::Automatic);
                }
            }
            GuardEvent::TurnRequested { conn, thread_id } => {
                self.requested.insert((conn, thread_id), Instant::now());
                // Should the turn never start (the request failed), look again then.
                let inbox = self.inbox.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(REQUESTED_TURN_TIMEOUT).await;
                    let _ = inbox.send(CoreMsg::Recheck);
                });
            }
            GuardEvent::RerunCancelled { conn } => {
                self.reruns.remove(&conn);
                self.rerun_started.remove(&conn);
            }
            GuardEvent::Rerunning { conn, .. } => {
                if let Some((at, from, to)) = self.rerun_started.remove(&conn) {
                    let from = from
                        .map(|f| self.account_ref(&f).name)
                        .unwrap_or_else(|| "the previous account".to_owned());
                    let to = self.account_ref(&to).name;
                    self.emit(ProxyEvent::Notice {
                        message: format!(
                            "limit hit on {from} — continued on {to}, {:.1} s",
                            at.elapsed().as_secs_f64()
                        ),
                        at: Utc::now(),
                    });
                }
            }
        }
    }

    /// Says once that `account` hit its usage limit, and takes it as exhausted until its
    /// numbers say otherwise (the 100 % update may not have come, or not yet).
    fn report_limit(&mut self, account: &str) {
        self.heard_live.insert(account.to_owned(), Instant::now());
        if !self.limit_reported.insert(account.to_owned()) {
            return;
        }
        let snapshot = self
            .snapshots
            .entry(account.to_owned())
            .or_default()
            .quota_mut();
        if !snapshot.is_exhausted() {
            snapshot.rate_limit_reached_type = Some("usage_limit_reached".to_owned());
        }
        self.emit(ProxyEvent::UsageLimitHit {
            account: self.account_ref(account),
            at: Utc::now(),
        });
    }

    /// Tells the guards whether another account could take over now.
    fn update_alternative(&self) {
        let candidates: Vec<Candidate> = self.accounts.iter().map(|a| self.candidate(a)).collect();
        let available = matches!(
            policy::choose_best(
                &candidates,
                self.active.as_deref(),
                now_unix(),
                &self.config.policy
            ),
            Choice::Switch { .. }
        );
        self.guards.set_alternative(available);
    }

    fn command(&mut self, command: ProxyCommand, reply: Option<CommandReply>) {
        let answer = match command {
            ProxyCommand::SwitchTo { account_id } => {
                self.request_manual(Target::Account(account_id))
            }
            ProxyCommand::SwitchBest => self.request_manual(Target::Best),
            ProxyCommand::RefreshUsage => {
                self.poll_usage(true);
                Ok("refreshing every account's usage".to_owned())
            }
            ProxyCommand::AccountsChanged => {
                self.list_accounts();
                Ok("reading the stored accounts again".to_owned())
            }
            ProxyCommand::ConsumeResetCredit {
                account_id,
                idempotency_key,
            } => {
                self.consume_reset_credit(account_id, idempotency_key, reply);
                return;
            }
        };
        if let Some(reply) = reply {
            let _ = reply.send(answer);
        }
    }

    /// Redeems a reset credit of the active account on the control connection (the
    /// app-server's auth is that account's), then re-reads every account's usage.
    fn consume_reset_credit(
        &mut self,
        account_id: String,
        idempotency_key: String,
        reply: Option<CommandReply>,
    ) {
        let answer = |result: Result<String, String>| {
            if let Some(reply) = reply {
                let _ = reply.send(result);
            }
        };
        if self.active.as_deref() != Some(account_id.as_str()) {
            return answer(Err(crate::proxy::events::NOT_THE_ACTIVE_ACCOUNT.to_owned()));
        }
        if self.switching || self.app_server != AppServerState::Up {
            return answer(Err(
                "the session is changing accounts or restarting its app-server; try again in a moment"
                    .to_owned(),
            ));
        }
        let control = self.control.clone();
        let inbox = self.inbox.clone();
        tokio::spawn(async move {
            let result = upstream::consume_reset_credit(&control, &idempotency_key).await;
            let reset = result.as_deref().is_ok_and(|outcome| outcome == "reset");
            answer(result.map_err(|err| format!("{err:#}")));
            // The numbers the session holds are of before the reset: read them again.
            if reset {
                match upstream::read_rate_limits(&control).await {
                    Ok(limits) => {
                        let _ = inbox.send(CoreMsg::ResetRedeemed {
                            account: account_id,
                            limits,
                        });
                    }
                    Err(err) => tracing::warn!("reading the limits after a reset: {err:#}"),
                }
            }
        });
    }

    fn request_manual(&mut self, target: Target) -> Result<String, String> {
        if let Target::Account(id) = &target {
            let account = self
                .accounts
                .iter()
                .find(|a| &a.id == id)
                .ok_or_else(|| format!("no stored account has id {id}"))?;
            let candidate = self.candidate(account);
            policy::check_manual(&candidate, self.active.as_deref())?;
            let candidates: Vec<Candidate> =
                self.accounts.iter().map(|a| self.candidate(a)).collect();
            if let Some(limited) = policy::shared_workspace_limit(&candidate, &candidates) {
                return Err(format!(
                    "{} is a seat of the same workspace as {}, whose workspace limit it shares; \
                     not switching to it",
                    candidate.name, limited.name
                ));
            }
            if !account.switchable() {
                return Err(format!(
                    "{} is not a ChatGPT login; only ChatGPT accounts can be switched to",
                    account.name
                ));
            }
        }
        let deferred = busy(&self.running, &mut self.requested) || self.switching;
        let what = match &target {
            Target::Account(id) => self.account_ref(id).name,
            Target::Best => "the best other account".to_owned(),
        };
        self.arm(target, SwitchReason::Manual, Mode::Manual);
        Ok(if deferred {
            format!("switching to {what} when the running turn ends")
        } else {
            format!("switching to {what}")
        })
    }

    fn candidate(&self, account: &DirAccount) -> Candidate {
        candidate_of(account, &self.snapshots, &self.switched_away)
    }

    /// When the active account hit its workspace's limit and other seats of that workspace
    /// are stored: a sentence saying why they are not switched to.
    fn workspace_note(&self) -> Option<String> {
        let active = self.active.as_deref()?;
        let account = self.accounts.iter().find(|a| a.id == active)?;
        self.quota(active)?.workspace_limit()?;
        let seats: Vec<&str> = self
            .accounts
            .iter()
            .filter(|a| a.id != active && a.chatgpt_account_id == account.chatgpt_account_id)
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

    fn control_event(&mut self, event: ControlEvent) {
        match event {
            ControlEvent::ServerRequest { id, method, params } => {
                if method == method::TOKENS_REFRESH {
                    self.answer_refresh(id, params);
                } else {
                    self.control.respond(
                        id,
                        Err(format!(
                            "cs-tui's control connection does not handle {method}"
                        )),
                    );
                }
            }
            ControlEvent::Notification { method, .. } => {
                tracing::trace!(%method, "control notification");
            }
            ControlEvent::Closed => {
                tracing::warn!("control connection closed");
                self.emit(ProxyEvent::Connection {
                    state: ConnectionState::Down,
                    at: Utc::now(),
                });
            }
        }
    }

    /// `account/chatgptAuthTokens/refresh` reaches every connection; the relay drops it on
    /// client connections and the proxy answers it here, once, with freshly refreshed tokens
    /// of the same account (another account's tokens would fail the turn, PROTOCOL.md §2).
    fn answer_refresh(&self, id: Value, params: Value) {
        let params: RefreshParams = serde_json::from_value(params).unwrap_or(RefreshParams {
            previous_account_id: None,
            reason: None,
        });
        let account = refresh_target(
            &self.accounts,
            self.active.as_deref(),
            params.previous_account_id.as_deref(),
        )
        .cloned();
        let dir = self.dir.clone();
        let control = self.control.clone();
        let events = self.events.clone();
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

    /// Fetches `/wham/usage` for every account (or only stale ones) in the background.
    /// Reads the reset credits of every ChatGPT account and announces them (they change
    /// rarely: at each usage poll is often enough).
    fn poll_reset_credits(&self, only: Option<&str>) {
        let accounts: Vec<AccountRef> = self
            .accounts
            .iter()
            .filter(|a| a.switchable() && only.is_none_or(|id| a.id == id))
            .map(DirAccount::to_ref)
            .collect();
        let dir = self.dir.clone();
        let events = self.events.clone();
        tokio::spawn(async move {
            let reads = accounts.into_iter().map(|account| {
                let dir = &dir;
                async move {
                    let read =
                        tokio::time::timeout(USAGE_TIMEOUT, dir.fetch_reset_credits(&account.id))
                            .await;
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

    fn poll_usage(&mut self, all: bool) {
        self.poll_reset_credits(None);
        let stale = Duration::from_secs(self.config.policy.usage_stale_secs as u64);
        let dir = self.dir.clone();
        let inbox = self.inbox.clone();
        let ids: Vec<String> = self
            .accounts
            .iter()
            .filter(|a| a.switchable())
            // The active account too: its live updates are sparse, and only a full read
            // tells that a window is gone (a plan that stopped sending its 5-hour window).
            .filter(|a| {
                all || self
                    .usage_at
                    .get(&a.id)
                    .is_none_or(|t| t.elapsed() >= stale)
            })
            .map(|a| a.id.clone())
            .collect();
        // Pick up accounts added, removed or re-enabled since the session started.
        self.list_accounts();
        if ids.is_empty() {
            return;
        }
        let started = Instant::now();
        tokio::spawn(async move {
            let results = fetch_usages(&dir, &ids).await;
            let _ = inbox.send(CoreMsg::UsageFetched { started, results });
        });
    }

    /// Reads the store's accounts again (answered by [`CoreMsg::AccountsListed`]).
    fn list_accounts(&self) {
        let dir = self.dir.clone();
        let inbox = self.inbox.clone();
        tokio::spawn(async move {
            match dir.list().await {
                Ok(accounts) => {
                    let _ = inbox.send(CoreMsg::AccountsListed(accounts));
                }
                Err(err) => tracing::warn!("reading the stored accounts failed: {err:#}"),
            }
        });
    }

    /// The store's accounts, read again: an account new to the session gets its usage read
    /// at once, so it can take over at the next limit.
    fn accounts_listed(&mut self, accounts: Vec<DirAccount>) {
        let new: Vec<String> = accounts
            .iter()
            .filter(|a| a.switchable() && !self.accounts.iter().any(|known| known.id == a.id))
            .map(|a| a.id.clone())
            .collect();
        for account in accounts.iter().filter(|a| new.contains(&a.id)) {
            tracing::info!(account = %account.name, "an account was added to the store");
        }
        self.accounts = accounts;
        self.update_alternative();
        if !new.is_empty() {
            let dir = self.dir.clone();
            let inbox = self.inbox.clone();
            let started = Instant::now();
            tokio::spawn(async move {
                let results = fetch_usages(&dir, &new).await;
                let _ = inbox.send(CoreMsg::UsageFetched { started, results });
            });
        }
    }

    fn usage_fetched(
        &mut self,
        started: Instant,
        results: Vec<(String, Result<AccountLimits, String>)>,
    ) {
        let mut active_read = false;
        for (id, result) in results {
            if self.quota_read.as_ref() == Some(&id) {
                self.quota_read = None;
            }
            match result {
                Ok(limits) => {
                    self.usage_at.insert(id.clone(), Instant::now());
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
                    if !limits.quota().is_some_and(RateLimitSnapshot::is_exhausted) {
                        self.limit_reported.remove(&id);
                    }
                    // A full read: windows and families it lacks are gone.
                    self.snapshots.insert(id.clone(), limits);
                    self.emit_limits(&id);
                    active_read |= Some(&id) == self.active.as_ref();
                }
                Err(err) => tracing::warn!(account = %id, "usage fetch failed: {err}"),
            }
        }
        if let Some(notice) = unsaved_tokens_notice(&self.dir) {
            self.emit(notice);
        }
        self.update_alternative();
        // The active account's quota as the backend has it now may ask for a switch.
        if active_read {
            self.check_active_quota();
        }
    }
}

/// A refresh whose new tokens the store refused (a full disk) keeps them in memory only: the
/// user must hear of it before quitting.
fn unsaved_tokens_notice<D: AccountDirectory>(dir: &D) -> Option<ProxyEvent> {
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

/// The stored account a token refresh request is for. `previousAccountId` names a workspace,
/// and several stored accounts can be seats of it (one `chatgpt_account_id`, different users):
/// the active account when it is one of them, else the seat of the active account's user, else
/// the only one. Without `previousAccountId`, the active account.
fn refresh_target<'a>(
    accounts: &'a [DirAccount],
    active: Option<&str>,
    previous_account_id: Option<&str>,
) -> Option<&'a DirAccount> {
    let active = active.and_then(|id| accounts.iter().find(|a| a.id == id));
    let Some(workspace) = previous_account_id else {
        return active;
    };
    let seats: Vec<&DirAccount> = accounts
        .iter()
        .filter(|a| a.chatgpt_account_id.as_deref() == Some(workspace))
        .collect();
    if let Some(active) = active.filter(|a| seats.iter().any(|s| s.id == a.id)) {
        return Some(active);
    }
    let user = active.and_then(|a| a.user_id.as_deref());
    if let Some(seat) = seats
        .iter()
        .find(|s| user.is_some() && s.user_id.as_deref() == user)
    {
        return Some(seat);
    }
    if seats.len() > 1 {
        tracing::warn!(
            seats = seats.len(),
            "a token refresh names a workspace with several stored seats, none of them active"
        );
    }
    seats.first().copied()
}

fn candidate_of(
    account: &DirAccount,
    snapshots: &HashMap<String, AccountLimits>,
    switched_away: &HashMap<String, i64>,
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

async fn fetch_usages<D: AccountDirectory>(
    dir: &D,
    ids: &[String],
) -> Vec<(String, Result<AccountLimits, String>)> {
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

/// A switch in flight: choose, log in on the control connection, confirm.
struct SwitchTask<D: AccountDirectory> {
    dir: D,
    control: ControlConnection,
    events: broadcast::Sender<ProxyEvent>,
    policy: PolicyConfig,
    accounts: Vec<DirAccount>,
    from: Option<String>,
    snapshots: HashMap<String, AccountLimits>,
    fresh: HashSet<String>,
    switched_away: HashMap<String, i64>,
    pending: PendingSwitch,
}

impl<D: AccountDirectory> SwitchTask<D> {
    async fn run(mut self) -> SwitchOutcome {
        let started = Instant::now();
        let mut fetched = Vec::new();
        let result = self.choose_and_login(&mut fetched).await;
        SwitchOutcome {
            pending_reason: self.pending.reason.clone(),
            mode: self.pending.mode,
            from: self.from.clone(),
            fetched,
            result,
            started,
        }
    }

    fn name(&self, id: &str) -> String {
        self.accounts
            .iter()
            .find(|a| a.id == id)
            .map(|a| a.name.clone())
            .unwrap_or_else(|| id.to_owned())
    }

    async fn choose_and_login(
        &mut self,
        fetched: &mut Vec<(String, AccountLimits)>,
    ) -> Result<(String, Option<AccountLimits>), SwitchFailure> {
        let to = match self.pending.target.clone() {
            Target::Account(id) => {
                // The user named it: check it on fresh numbers, a reset may have passed.
                let mut snapshot = self
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
                let manual = self.pending.mode == Mode::Manual;
                let stale: Vec<String> = self
                    .accounts
                    .iter()
                    .filter(|a| a.switchable() && Some(&a.id) != self.from.as_ref())
                    .filter(|a| manual || !self.fresh.contains(&a.id))
                    .map(|a| a.id.clone())
                    .collect();
                for (id, result) in fetch_usages(&self.dir, &stale).await {
                    if let Ok(limits) = result {
                        self.snapshots.insert(id.clone(), limits.clone());
                        fetched.push((id, limits));
                    }
                }
                // The cooldown keeps automatic switches from ping-ponging; a switch the
                // user asks for is not held back by it.
                let no_cooldown = HashMap::new();
                let switched_away = if manual {
                    &no_cooldown
                } else {
                    &self.switched_away
                };
                let candidates: Vec<Candidate> = self
                    .accounts
                    .iter()
                    .map(|a| candidate_of(a, &self.snapshots, switched_away))
                    .collect();
                match policy::choose_best(
                    &candidates,
                    self.from.as_deref(),
                    now_unix(),
                    &self.policy,
                ) {
                    Choice::Switch { to } => to,
                    Choice::NoneAvailable { earliest_reset } => {
                        return Err(SwitchFailure::NoneAvailable { earliest_reset });
                    }
                }
            }
        };
        let Some(account) = self.accounts.iter().find(|a| a.id == to).cloned() else {
            return Err(SwitchFailure::Refused(format!("unknown account {to}")));
        };
        let _ = self.events.send(ProxyEvent::SwitchStarted {
            from: self.from.as_deref().map(|f| AccountRef {
                id: f.to_owned(),
                name: self.name(f),
            }),
            to: account.to_ref(),
            reason: self.pending.reason.clone(),
            at: Utc::now(),
        });
        match login_and_confirm(&self.dir, &self.control, &account).await {
            Ok(snapshot) => Ok((to, snapshot)),
            Err(err) => {
                let error = format!("{err:#}");
                // Stay on the old account: make sure the app-server still serves it.
                if let Some(from) = self.from.clone()
                    && let Some(old) = self.accounts.iter().find(|a| a.id == from).cloned()
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

/// Logs the app-server into `account`, confirms it with `account/read`, and reads its rate
/// limits. Used for the starting account and for every switch.
pub async fn login_and_confirm<D: AccountDirectory>(
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

#[cfg(test)]
mod tests {
    use super::*;

    fn seat(id: &str, workspace: &str, user: &str) -> DirAccount {
        DirAccount {
            id: id.to_owned(),
            name: id.to_owned(),
            email: None,
            plan: None,
            chatgpt_account_id: Some(workspace.to_owned()),
            user_id: Some(user.to_owned()),
            enabled: true,
            needs_login: false,
        }
    }

    #[test]
    fn a_refresh_request_is_answered_for_the_active_seat() {
        let accounts = [
            seat("ann", "team", "user-ann"),
            seat("ben", "team", "user-ben"),
            seat("ben-solo", "solo", "user-ben"),
            seat("cat", "other", "user-cat"),
        ];
        let target = |active, previous| refresh_target(&accounts, active, previous).map(|a| &a.id);
        // The active seat of the workspace, wherever it is stored.
        assert_eq!(target(Some("ben"), Some("team")).unwrap(), "ben");
        assert_eq!(target(Some("ann"), Some("team")).unwrap(), "ann");
        // The active account is elsewhere: its user's seat breaks the tie.
        assert_eq!(target(Some("ben-solo"), Some("team")).unwrap(), "ben");
        // One seat only: that one.
        assert_eq!(target(Some("ann"), Some("other")).unwrap(), "cat");
        assert_eq!(target(Some("ann"), None).unwrap(), "ann");
        assert_eq!(target(Some("ann"), Some("unknown")), None);
    }

    #[test]
    fn a_requested_turn_holds_switches_back_until_it_is_stale() {
        let mut running = HashMap::new();
        let mut requested = HashMap::new();
        assert!(!busy(&running, &mut requested));

        requested.insert((1, "t1".to_owned()), Instant::now());
        assert!(busy(&running, &mut requested), "asked for, not started yet");

        running.insert("u1".to_owned(), (1, None));
        requested.clear();
        assert!(busy(&running, &mut requested), "running");

        running.clear();
        let long_ago = Instant::now() - REQUESTED_TURN_TIMEOUT - Duration::from_secs(1);
        requested.insert((1, "t2".to_owned()), long_ago);
        assert!(
            !busy(&running, &mut requested),
            "a request that never became a turn stops counting"
        );
        assert!(requested.is_empty(), "and is forgotten");
    }
}
