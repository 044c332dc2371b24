//! The session core: one task that owns the proxy's state (active account, live rate limits,
//! running turns, the pending switch) and decides when to switch. Everything else talks to it
//! through messages.
//!
//! The core is split in two. [`CoreState::handle`] decides: it takes an [`Input`] and the
//! time and returns [`Effect`]s, with no I/O, task, channel or clock inside (its rules are
//! tested as plain functions, `tests.rs`). [`Core`] is the actor that turns messages into
//! inputs and carries the effects out: it spawns the slow work (logins, usage reads, token
//! refreshes), which reports back as messages.
//!
//! | file | rule |
//! | --- | --- |
//! | `state.rs` | the state, [`Input`], [`Now`], the dispatch |
//! | `effects.rs` | what a decision asks for |
//! | `turns.rs` | which turns run (a login kills them); re-run bookkeeping |
//! | `limits.rs` | one limit, one report, one switch; hard vs. soft triggers, the backoff |
//! | `switching.rs` | arm, defer to the turn boundary, run, finish (or keep the old account) |
//! | `freshness.rs` | usage reads: when, and which reads are too old to count |
//! | `refresh.rs` | whose tokens answer `account/chatgptAuthTokens/refresh` |
//! | `lifecycle.rs` | app-server exit and restart, re-login, the relay's gate |
//! | `pool.rs` | the pool: facts told to and taken from other sessions, held turns, the poller |
//! | `commands.rs` | the user's commands |
//! | `tasks.rs` | the I/O the actor runs: a switch, a login, usage reads, refresh answers |

mod commands;
mod effects;
mod freshness;
mod lifecycle;
mod limits;
mod pool;
mod refresh;
mod state;
mod switching;
mod tasks;
mod turns;

#[cfg(test)]
mod pool_tests;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::account_id::AccountId;
use crate::proxy::directory::{AccountDirectory, DirAccount};
use crate::proxy::events::{ProxyCommand, ProxyEvent};
use crate::proxy::history;
use crate::proxy::policy::PolicyConfig;
use crate::proxy::pool::PoolHandle;
use crate::proxy::pool::wire::PoolSnapshot;
use crate::proxy::relay::{ConnId, ConnectionHandle, RelayEvent};
use crate::proxy::turn_guard::{GuardEvent, GuardShared, TurnGuard};
use crate::proxy::upstream::{ControlConnection, ControlEvent};
use crate::quota::AccountLimits;

pub(crate) use effects::Effect;
pub(crate) use state::{CoreState, Input, Now};
pub(crate) use tasks::{fetch_usages, login_and_confirm};

use tasks::SwitchTask;

/// The core's settings.
#[derive(Clone, Debug)]
pub(crate) struct CoreConfig {
    pub policy: PolicyConfig,
    /// How often every account's `/wham/usage` is polled.
    pub usage_poll: Duration,
    /// `<store>/switch-history.jsonl`.
    pub history_path: PathBuf,
    /// `<store>/ledger.jsonl` (`None`: no ledger).
    pub ledger: Option<crate::proxy::ledger::Ledger>,
    /// The session's id, for the ledger's lines.
    pub session_id: String,
}

/// A reply to a command: what happened, in a sentence.
pub(crate) type CommandReply = oneshot::Sender<Result<String, String>>;

/// Everything the core reacts to.
#[derive(Debug)]
pub(crate) enum CoreMsg {
    Relay(RelayEvent<TurnGuard>),
    Guard(GuardEvent),
    Control(ControlEvent),
    Command(ProxyCommand, Option<CommandReply>),
    /// An input the state takes as it comes: a task's result, the app-server's exit, a
    /// timer (boxed: some are large and all are rare).
    Input(Box<Input>),
    /// A new app-server is up; this is the control connection to it. The active account is
    /// logged in again before clients may attach.
    AppServerRestarted(ControlConnection),
    /// What the core knows of the accounts, for a peer (`pool_snapshot`).
    PoolSnapshot(oneshot::Sender<PoolSnapshot>),
    Shutdown,
}

impl From<Input> for CoreMsg {
    fn from(input: Input) -> Self {
        CoreMsg::Input(Box::new(input))
    }
}

/// What the core starts from: the session has already logged in `active`.
pub(crate) struct CoreInit<D: AccountDirectory> {
    pub guards: Arc<GuardShared>,
    pub dir: D,
    pub control: ControlConnection,
    pub events: broadcast::Sender<ProxyEvent>,
    pub inbox: mpsc::UnboundedSender<CoreMsg>,
    pub config: CoreConfig,
    pub accounts: Vec<DirAccount>,
    pub active: AccountId,
    pub active_snapshot: Option<AccountLimits>,
    /// The relay's gate: clients wait while it is `false` (a TUI that attaches to an
    /// app-server without a login stays on its sign-in screen, docs/protocol.md §2).
    pub ready: watch::Sender<bool>,
    /// Where facts for the pool's other sessions go.
    pub pool: PoolHandle,
    /// How an automatic switch places the session among the pool's (`None`: alone).
    pub placement: Option<crate::proxy::placement::PlanContext>,
}

/// The actor: the state, and what carries its effects out.
pub(crate) struct Core<D: AccountDirectory> {
    state: CoreState,
    dir: D,
    control: ControlConnection,
    events: broadcast::Sender<ProxyEvent>,
    inbox: mpsc::UnboundedSender<CoreMsg>,
    guards: Arc<GuardShared>,
    handles: HashMap<ConnId, ConnectionHandle<TurnGuard>>,
    ready: watch::Sender<bool>,
    history_path: PathBuf,
    usage_poll: Duration,
    pool: PoolHandle,
    placement: Option<crate::proxy::placement::PlanContext>,
    /// The store's listings asked for so far: each is numbered, so that the state can drop
    /// one that finishes after a later one ([`Input::AccountsListed`]).
    listings_asked: u64,
}

impl<D: AccountDirectory> Core<D> {
    pub(crate) fn new(init: CoreInit<D>) -> Self {
        let history_path = init.config.history_path.clone();
        let usage_poll = init.config.usage_poll;
        let mut state = CoreState::new(
            init.config,
            init.accounts,
            init.active,
            init.active_snapshot,
        );
        // In a pool, the timed reads are the elected poller's: the hub says when this
        // session is it (`Input::PollerRole`). Alone, it always is.
        state.poller = !init.pool.is_on();
        Self {
            state,
            dir: init.dir,
            control: init.control,
            events: init.events,
            inbox: init.inbox,
            guards: init.guards,
            handles: HashMap::new(),
            ready: init.ready,
            history_path,
            usage_poll,
            pool: init.pool,
            placement: init.placement,
            listings_asked: 0,
        }
    }

    /// Runs until shutdown or until the app-server is gone for good.
    pub(crate) async fn run(mut self, mut inbox: mpsc::UnboundedReceiver<CoreMsg>) {
        self.decide(Input::Start, None);
        let mut poll = tokio::time::interval(self.usage_poll);
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
                _ = poll.tick() => self.decide(Input::PollTick, None),
            }
        }
    }

    /// Turns a message into an input (keeping what the state has no use for: connection
    /// handles, the control connection, the reply channel).
    fn handle(&mut self, msg: CoreMsg) {
        let mut reply = None;
        let input = match msg {
            CoreMsg::Relay(RelayEvent::Connected(conn, handle)) => {
                self.handles.insert(conn, handle);
                Input::Connected(conn)
            }
            CoreMsg::Relay(RelayEvent::Disconnected(conn)) => {
                self.handles.remove(&conn);
                Input::Disconnected(conn)
            }
            CoreMsg::Relay(RelayEvent::Observed(conn, observation)) => {
                Input::Observed(conn, observation)
            }
            CoreMsg::Guard(event) => Input::Guard(event),
            CoreMsg::Control(ControlEvent::ServerRequest { id, method, params }) => {
                Input::ServerRequest { id, method, params }
            }
            CoreMsg::Control(ControlEvent::Notification { method, .. }) => {
                tracing::trace!(%method, "control notification");
                return;
            }
            CoreMsg::Control(ControlEvent::Closed) => Input::ControlClosed,
            CoreMsg::Command(command, r) => {
                reply = r;
                Input::Command(command)
            }
            CoreMsg::Input(input) => *input,
            CoreMsg::AppServerRestarted(control) => {
                self.control = control;
                Input::AppServerRestarted
            }
            CoreMsg::PoolSnapshot(reply) => {
                let _ = reply.send(self.state.pool_snapshot(Now::read()));
                return;
            }
            CoreMsg::Shutdown => return,
        };
        self.decide(input, reply);
    }

    fn decide(&mut self, input: Input, mut reply: Option<CommandReply>) {
        for effect in self.state.handle(input, Now::read()) {
            self.execute(effect, &mut reply);
        }
    }

    /// Carries one effect out. Slow work runs in a task that reports back to the inbox.
    fn execute(&mut self, effect: Effect, reply: &mut Option<CommandReply>) {
        match effect {
            Effect::Emit(event) => {
                let _ = self.events.send(event);
            }
            Effect::Reply(answer) => {
                if let Some(reply) = reply.take() {
                    let _ = reply.send(answer);
                }
            }
            Effect::Guard { conn, command } => {
                if let Some(handle) = self.handles.get(&conn) {
                    let _ = handle.command(command);
                }
            }
            Effect::SetSwitching(switching) => self.guards.set_switching(switching),
            Effect::SetAlternative(available) => self.guards.set_alternative(available),
            Effect::SetReady(ready) => {
                self.ready.send_replace(ready);
            }
            Effect::StartSwitch(plan) => {
                let task = SwitchTask {
                    dir: self.dir.clone(),
                    control: self.control.clone(),
                    events: self.events.clone(),
                    plan: *plan,
                    placement: self.placement.clone(),
                };
                let inbox = self.inbox.clone();
                tokio::spawn(async move {
                    let outcome = task.run().await;
                    let _ = inbox.send(Input::SwitchFinished(outcome).into());
                });
            }
            Effect::FetchUsage { ids, started } => {
                let dir = self.dir.clone();
                let inbox = self.inbox.clone();
                tokio::spawn(async move {
                    let results = fetch_usages(&dir, &ids).await;
                    let _ = inbox.send(Input::UsageFetched { started, results }.into());
                });
            }
            Effect::ReadResetCredits(accounts) => {
                tasks::read_reset_credits(self.dir.clone(), self.events.clone(), accounts)
            }
            Effect::ListAccounts => {
                let dir = self.dir.clone();
                let inbox = self.inbox.clone();
                self.listings_asked += 1;
                let number = self.listings_asked;
                tokio::spawn(async move {
                    match dir.list().await {
                        Ok(accounts) => {
                            let _ = inbox.send(Input::AccountsListed { number, accounts }.into());
                        }
                        Err(err) => tracing::warn!("reading the stored accounts failed: {err:#}"),
                    }
                });
            }
            Effect::AppendHistory(record) => {
                if let Err(err) = history::append(&self.history_path, &record) {
                    tracing::warn!("could not record the switch: {err:#}");
                }
            }
            Effect::AppendLedger(record) => {
                if let Some(ledger) = &self.state.config.ledger
                    && let Err(err) = ledger.append(&record)
                {
                    tracing::warn!("could not record the turn in the ledger: {err:#}");
                }
            }
            Effect::MarkActive(id) => {
                let dir = self.dir.clone();
                tokio::spawn(async move {
                    if let Err(err) = dir.mark_active(&id).await {
                        tracing::warn!("could not record the active account: {err:#}");
                    }
                });
            }
            Effect::Relogin(account) => {
                let dir = self.dir.clone();
                let control = self.control.clone();
                let inbox = self.inbox.clone();
                tokio::spawn(async move {
                    let result = login_and_confirm(&dir, &control, &account)
                        .await
                        .map_err(|err| format!("{err:#}"));
                    let _ = inbox.send(
                        Input::Relogged {
                            account: account.id,
                            result,
                        }
                        .into(),
                    );
                });
            }
            Effect::RedeemResetCredit {
                account,
                idempotency_key,
            } => tasks::redeem_reset_credit(
                self.control.clone(),
                self.inbox.clone(),
                account,
                idempotency_key,
                reply.take(),
            ),
            Effect::AnswerRefresh { id, account } => tasks::answer_refresh(
                self.dir.clone(),
                self.control.clone(),
                self.events.clone(),
                id,
                account,
            ),
            Effect::RespondError { id, error } => self.control.respond(id, Err(error)),
            Effect::RecheckAfter(delay) => {
                let inbox = self.inbox.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let _ = inbox.send(Input::Recheck.into());
                });
            }
            Effect::Broadcast(fact) => self.pool.broadcast(fact),
            Effect::SetHoldTurns(hold) => self.guards.set_hold(hold),
            Effect::ReportUnsavedTokens => {
                if let Some(notice) = tasks::unsaved_tokens_notice(&self.dir) {
                    let _ = self.events.send(notice);
                }
            }
        }
    }
}
