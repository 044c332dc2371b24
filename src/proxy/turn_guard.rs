//! Zero retyped prompts: the per-connection turn guard.
//!
//! When a user turn fails with `usageLimitExceeded`, the guard withholds that turn's failure
//! messages from the TUI (the `systemError` status, the error, the failed completion, the
//! 100 % rate-limit update, and the title thread's duplicates), asks the core to switch, and
//! once the new account is logged in starts the turn again on the TUI's own connection with a
//! proxy-owned id (docs/protocol.md §8): `input: []` when the failed turn already produced
//! something, so it continues where it stopped; otherwise it reverts the failed turn and
//! sends the original input, so the saved history holds the prompt once. The TUI renders the
//! re-run as the same turn; the user sees their prompt once, then the answer.
//!
//! The re-run is a new turn on the server, with an id of its own; the client knows the turn by
//! the id its `turn/start` was answered with. From the re-run's `turn/started` until the next
//! turn of its thread starts, the guard rewrites one id to the other in every message of the
//! connection that carries it as a value (the relay shows it those through
//! [`Interceptor::watched_text`]): the re-run's id toward the client, the client's toward the
//! server, so any client — not only the Codex TUI, which adopts a new id by itself — hears its
//! turn complete and can interrupt or steer it. The relay's observations, and so the core and
//! the ledger, see the server's ids.
//!
//! Guards: at most one re-run per turn; when the new account fails too, or no account is
//! usable, the withheld messages are released so the real error shows; Esc during the gap is
//! answered here (the server has no turn to interrupt) with a clean `interrupted` completion.
//!
//! Before the limit, a rate-limit update at or above the soft threshold is not shown to the
//! TUI when another account will take over (no "less than 5 % left" warning for an account
//! that is about to be left); the core still records it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::proxy::policy::{self, PolicyConfig};
use crate::proxy::relay::{Actions, ConnId, Direction, Inspected, Interceptor, Verdict};
use crate::proxy::rpc::{
    ErrorParams, OWN_ID_PREFIX, RateLimitsUpdatedParams, TurnParams, TurnPurpose,
};

const CLIENT_WATCHED: &[&str] = &["turn/start", "turn/interrupt"];
const SERVER_WATCHED: &[&str] = &[
    "account/rateLimits/updated",
    "thread/status/changed",
    "error",
    "turn/started",
    "turn/completed",
    "item/started",
    "thread/reverted",
];

/// What every guard shares with the core.
#[derive(Debug)]
pub(crate) struct GuardShared {
    /// The user's setting (`[switch] hidden_rerun`).
    pub hidden_rerun: bool,
    pub policy: PolicyConfig,
    /// Whether the core knows another usable account (kept current by the core).
    alternative: AtomicBool,
    /// A login is under way: a turn started now would run into it (and be killed).
    switching: AtomicBool,
    /// The active account is known exhausted (another session of the pool hit its limit) and
    /// a switch away waits for the turn boundary: a turn started now would fail there.
    hold: AtomicBool,
}

impl GuardShared {
    pub(crate) fn new(hidden_rerun: bool, policy: PolicyConfig) -> Arc<Self> {
        Arc::new(Self {
            hidden_rerun,
            policy,
            alternative: AtomicBool::new(false),
            switching: AtomicBool::new(false),
            hold: AtomicBool::new(false),
        })
    }

    /// Set by the core while a switch's login runs; guards hold new turns meanwhile and let
    /// them go on [`GuardCommand::SwitchOver`].
    pub(crate) fn set_switching(&self, switching: bool) {
        self.switching.store(switching, Ordering::SeqCst);
    }

    /// Set by the core while new turns must wait for a switch that has not started yet.
    pub(crate) fn set_hold(&self, hold: bool) {
        self.hold.store(hold, Ordering::SeqCst);
    }

    fn switching(&self) -> bool {
        self.switching.load(Ordering::SeqCst)
    }

    fn holding_turns(&self) -> bool {
        self.hold.load(Ordering::SeqCst)
    }

    pub(crate) fn set_alternative(&self, available: bool) {
        self.alternative.store(available, Ordering::Relaxed);
    }

    pub(crate) fn alternative(&self) -> bool {
        self.alternative.load(Ordering::Relaxed)
    }
}

/// What a guard tells the core. The thread and turn ids are there for the log (the core logs
/// every event with `Debug`), which dead-code analysis does not count as a read.
#[derive(Debug)]
#[allow(dead_code)]
pub(crate) enum GuardEvent {
    /// A user turn failed on a usage limit and its failure is withheld: switch, then say
    /// [`GuardCommand::Rerun`] (or [`GuardCommand::GiveUp`]).
    RerunWanted {
        conn: ConnId,
        thread_id: String,
        turn_id: String,
        at: Instant,
    },
    /// The user pressed Esc during the gap; nothing is to be re-run.
    RerunCancelled { conn: ConnId },
    /// The re-run turn started on the new account.
    Rerunning { conn: ConnId, turn_id: String },
    /// The client asked for a turn on this thread; it runs from now on as far as switching
    /// is concerned (a login before its `turn/started` would kill it just the same).
    /// `held`: the guard withholds it until [`GuardCommand::SwitchOver`] (a switch's login
    /// runs, or the core holds turns); it does not run until then. `purpose`: the user's, or
    /// the TUI's title generation (the ledger marks the turns of that thread).
    TurnRequested {
        conn: ConnId,
        thread_id: String,
        purpose: TurnPurpose,
        held: bool,
    },
}

/// Where a guard's events go (the session sends them to the core), like the relay's
/// [`EventSink`](crate::proxy::relay::EventSink): the guard does not know who listens.
#[derive(Clone)]
pub(crate) struct GuardSink(Arc<dyn Fn(GuardEvent) + Send + Sync>);

impl GuardSink {
    pub(crate) fn new(send: impl Fn(GuardEvent) + Send + Sync + 'static) -> Self {
        Self(Arc::new(send))
    }

    pub(crate) fn send(&self, event: GuardEvent) {
        (self.0)(event);
    }
}

impl std::fmt::Debug for GuardSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GuardSink")
    }
}

/// Events into a channel (tests); a closed receiver just stops hearing them.
impl From<mpsc::UnboundedSender<GuardEvent>> for GuardSink {
    fn from(tx: mpsc::UnboundedSender<GuardEvent>) -> Self {
        Self::new(move |event| {
            let _ = tx.send(event);
        })
    }
}

/// What the core tells a guard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GuardCommand {
    /// The new account is logged in: run the turn again.
    Rerun,
    /// No switch happened: show the real error.
    GiveUp,
    /// The switch's login is over: turns asked for meanwhile go to the app-server now.
    SwitchOver,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// The limit error was seen; the failed completion has not arrived yet.
    Gathering,
    /// The failed turn is over; waiting for the core's switch.
    AwaitingSwitch,
    /// `thread/revert` sent; the re-run follows its answer.
    Reverting,
    /// `turn/start` sent; waiting for the new turn to start.
    Rerunning,
    /// The user pressed Esc before the re-run started.
    Cancelled,
}

#[derive(Debug)]
struct Episode {
    thread_id: String,
    turn_id: String,
    /// The TUI's `turn/start` params for the failed turn.
    params: Value,
    /// The failed turn already produced items beyond the user message.
    produced: bool,
    phase: Phase,
    revert_id: Option<String>,
    rerun_turn: Option<String>,
}

/// The two ids of a hidden re-run: the server runs it as `server`, the client knows it as
/// `client` (the id of its own `turn/start`, whose failure was withheld).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Alias {
    thread_id: String,
    server: String,
    client: String,
}

impl Alias {
    /// The id to find and the id to put in its place, for messages travelling `direction`.
    fn rewrite(&self, direction: Direction) -> (&str, &str) {
        match direction {
            Direction::ToClient => (&self.server, &self.client),
            Direction::ToUpstream => (&self.client, &self.server),
        }
    }
}

/// Replaces every string value equal to `from` (object keys aside) with `to`; says whether
/// there was one. Turn ids are UUIDs, so a whole string value equal to one is that turn.
fn replace_strings(value: &mut Value, from: &str, to: &str) -> bool {
    match value {
        Value::String(s) if s == from => {
            to.clone_into(s);
            true
        }
        Value::Array(items) => items
            .iter_mut()
            .fold(false, |hit, item| replace_strings(item, from, to) | hit),
        Value::Object(map) => map
            .values_mut()
            .fold(false, |hit, item| replace_strings(item, from, to) | hit),
        _ => false,
    }
}

#[derive(Debug)]
struct TurnInfo {
    thread_id: String,
    title: bool,
    produced: bool,
}

/// One connection's turn guard (an [`Interceptor`]).
pub(crate) struct TurnGuard {
    conn: ConnId,
    shared: Arc<GuardShared>,
    events: GuardSink,
    /// The TUI's last `turn/start` params per thread.
    params_by_thread: HashMap<String, Value>,
    title_threads: HashSet<String>,
    turns: HashMap<String, TurnInfo>,
    /// Something is withheld toward the client.
    holding: bool,
    episode: Option<Episode>,
    /// Turns already re-run once.
    rerun_done: HashSet<String>,
    next_id: u64,
    /// A `turn/start` is withheld until the running switch is over.
    held_turn_start: bool,
    /// The client is shown a hidden re-run under its own turn's id (docs/protocol.md §8).
    rewrite_ids: bool,
    /// The re-run whose id is rewritten, from its `turn/started` until the next turn of its
    /// thread starts.
    alias: Option<Alias>,
    /// The client's `turn/interrupt` of its turn, sent after the re-run's `turn/start` and
    /// before its `turn/started` (the server has no id for it yet): its request id.
    pending_interrupt: Option<Value>,
}

impl TurnGuard {
    pub(crate) fn new(conn: ConnId, shared: Arc<GuardShared>, events: GuardSink) -> Self {
        Self {
            conn,
            shared,
            events,
            params_by_thread: HashMap::new(),
            title_threads: HashSet::new(),
            turns: HashMap::new(),
            holding: false,
            episode: None,
            rerun_done: HashSet::new(),
            next_id: 1,
            held_turn_start: false,
            rewrite_ids: true,
            alias: None,
            pending_interrupt: None,
        }
    }

    /// Rewrites a message to be forwarded that carries the re-run's id (toward the client) or
    /// the client's id for it (toward the server): dropped, and the rewritten text injected
    /// in its place. Only messages that contain the id reach here (see `watched_text`).
    fn translate(
        &self,
        message: &Inspected<'_>,
        verdict: Verdict,
        actions: &mut Actions,
    ) -> Verdict {
        let Some(alias) = &self.alias else {
            return verdict;
        };
        let (from, to) = alias.rewrite(message.direction);
        if !message.text.contains(from) {
            return verdict;
        }
        if verdict != Verdict::Forward {
            // Nothing the guard holds or drops carries the re-run's id; say so if it ever does.
            tracing::debug!(
                conn = self.conn,
                ?verdict,
                "a message with the re-run's turn id was not forwarded; not rewritten"
            );
            return verdict;
        }
        let Ok(mut value) = serde_json::from_str::<Value>(message.text) else {
            return verdict;
        };
        if !replace_strings(&mut value, from, to) {
            // The id only inside a longer string (a message's text): nothing to rewrite.
            return verdict;
        }
        actions.inject(message.direction, value.to_string());
        Verdict::Drop
    }

    fn can_hide(&self) -> bool {
        self.shared.hidden_rerun && self.shared.alternative()
    }

    fn own_id(&mut self, what: &str) -> String {
        let id = format!("{OWN_ID_PREFIX}{what}/{}/{}", self.conn, self.next_id);
        self.next_id += 1;
        id
    }

    fn tell_core(&self, event: GuardEvent) {
        self.events.send(event);
    }

    fn user_turn_running(&self) -> bool {
        self.turns.values().any(|t| !t.title)
    }

    fn hold(&mut self) -> Verdict {
        self.holding = true;
        Verdict::Hold
    }

    /// Lets everything withheld through, in order, behind this message.
    fn release(&mut self, actions: &mut Actions) -> Verdict {
        self.holding = false;
        actions.release_held(Direction::ToClient);
        Verdict::Hold
    }

    fn client_message(&mut self, message: &Inspected<'_>, actions: &mut Actions) -> Verdict {
        let params: Value = message.envelope.params().unwrap_or(Value::Null);
        let thread = params["threadId"].as_str().unwrap_or_default().to_owned();
        match message.method() {
            Some("turn/start") => {
                // A login is under way and would kill this turn, or the active account is
                // known exhausted and a switch waits: it starts once the switch is over, on
                // the new account (in order, behind any turn already held).
                let held =
                    self.shared.switching() || self.shared.holding_turns() || self.held_turn_start;
                let purpose = TurnPurpose::of_request(message.envelope.id.as_ref());
                self.tell_core(GuardEvent::TurnRequested {
                    conn: self.conn,
                    thread_id: thread.clone(),
                    purpose,
                    held,
                });
                if purpose.is_title() {
                    self.title_threads.insert(thread);
                } else {
                    self.params_by_thread.insert(thread, params);
                }
                if held {
                    self.held_turn_start = true;
                    return Verdict::Hold;
                }
                Verdict::Forward
            }
            Some("turn/interrupt") => {
                let turn = params["turnId"].as_str().unwrap_or_default();
                let Some(episode) = self.episode.as_mut() else {
                    return Verdict::Forward;
                };
                let in_gap = matches!(
                    episode.phase,
                    Phase::Gathering | Phase::AwaitingSwitch | Phase::Reverting
                );
                if episode.turn_id == turn
                    && episode.phase == Phase::Rerunning
                    && episode.rerun_turn.is_none()
                    && self.rewrite_ids
                {
                    // The re-run is asked for but has no id yet: interrupt it as it starts.
                    self.pending_interrupt =
                        Some(message.envelope.id.clone().unwrap_or(Value::Null));
                    return Verdict::Drop;
                }
                if episode.turn_id != turn || !in_gap {
                    return Verdict::Forward;
                }
                // The server has no running turn to interrupt ("no active turn"): answer the
                // TUI here, forget the withheld failure, and end the turn as interrupted.
                let id = message.envelope.id.clone().unwrap_or(Value::Null);
                actions.inject(
                    Direction::ToClient,
                    json!({"id": id, "result": {}}).to_string(),
                );
                actions.drop_held(Direction::ToClient);
                self.holding = false;
                let completion = json!({
                    "method": "turn/completed",
                    "params": {
                        "threadId": episode.thread_id,
                        "turn": {"id": episode.turn_id, "items": [], "status": "interrupted", "error": null},
                    },
                });
                if episode.phase == Phase::Gathering {
                    // The failed completion is still to come; it is rewritten when it does.
                    episode.phase = Phase::Cancelled;
                } else {
                    actions.inject(Direction::ToClient, completion.to_string());
                    self.episode = None;
                }
                self.tell_core(GuardEvent::RerunCancelled { conn: self.conn });
                Verdict::Drop
            }
            _ => Verdict::Forward,
        }
    }

    fn server_message(&mut self, message: &Inspected<'_>, actions: &mut Actions) -> Verdict {
        if message.is_own_response() {
            return self.own_response(message, actions);
        }
        match message.method() {
            Some("turn/started") => self.turn_started(message, actions),
            Some("item/started") => {
                let params: Value = message.envelope.params().unwrap_or(Value::Null);
                let kind = params["item"]["type"].as_str().unwrap_or_default();
                if kind != "userMessage"
                    && let Some(turn) = params["turnId"]
                        .as_str()
                        .and_then(|t| self.turns.get_mut(t))
                {
                    turn.produced = true;
                }
                Verdict::Forward
            }
            Some("account/rateLimits/updated") => {
                let Some(p) = message.envelope.params::<RateLimitsUpdatedParams>() else {
                    return Verdict::Forward;
                };
                let snapshot = p.rate_limits;
                // Only the account's quota (the `codex` family) decides switches; another
                // family's numbers (a model-specific limit) pass through untouched.
                if !crate::quota::is_main_family(snapshot.limit_id.as_deref()) {
                    return Verdict::Forward;
                }
                if snapshot.is_exhausted() {
                    // The limit's first sign: withhold it while a user turn runs, in case that
                    // turn is about to fail on it.
                    if self.can_hide() && (self.user_turn_running() || self.episode.is_some()) {
                        return self.hold();
                    }
                } else if policy::trigger_for_snapshot(&snapshot, &self.shared.policy).is_some()
                    && self.shared.alternative()
                {
                    // A switch is armed for the end of this turn: no warning about an account
                    // that is about to be left.
                    return Verdict::Drop;
                }
                Verdict::Forward
            }
            Some("thread/status/changed") => {
                let params: Value = message.envelope.params().unwrap_or(Value::Null);
                let system_error = params["status"]["type"] == "systemError";
                let thread = params["threadId"].as_str().unwrap_or_default();
                let ours = self.turns.values().any(|t| t.thread_id == thread)
                    || self.episode.as_ref().is_some_and(|e| e.thread_id == thread);
                if system_error && ours && self.can_hide() {
                    return self.hold();
                }
                Verdict::Forward
            }
            Some("error") => self.error(message, actions),
            Some("turn/completed") => self.turn_completed(message, actions),
            Some("thread/reverted") => {
                let reverting = self
                    .episode
                    .as_ref()
                    .is_some_and(|e| matches!(e.phase, Phase::Reverting | Phase::Rerunning));
                if reverting {
                    Verdict::Drop
                } else {
                    Verdict::Forward
                }
            }
            _ => Verdict::Forward,
        }
    }

    fn turn_started(&mut self, message: &Inspected<'_>, actions: &mut Actions) -> Verdict {
        let Some(p) = message.envelope.params::<TurnParams>() else {
            return Verdict::Forward;
        };
        let title = self.title_threads.contains(&p.thread_id);
        if self
            .alias
            .as_ref()
            .is_some_and(|a| a.thread_id == p.thread_id && a.server != p.turn.id)
        {
            // The next turn of the thread: the re-run and its stragglers are over.
            self.alias = None;
        }
        if let Some(episode) = self.episode.as_mut()
            && episode.phase == Phase::Rerunning
            && episode.thread_id == p.thread_id
            && !title
        {
            // The re-run is under way on the new account: the withheld failure is history.
            episode.rerun_turn = Some(p.turn.id.clone());
            actions.drop_held(Direction::ToClient);
            self.holding = false;
            if self.rewrite_ids {
                self.alias = Some(Alias {
                    thread_id: p.thread_id.clone(),
                    server: p.turn.id.clone(),
                    client: episode.turn_id.clone(),
                });
            }
            if let Some(id) = self.pending_interrupt.take() {
                actions.inject(
                    Direction::ToUpstream,
                    json!({
                        "id": id,
                        "method": "turn/interrupt",
                        "params": {"threadId": p.thread_id, "turnId": p.turn.id},
                    })
                    .to_string(),
                );
            }
            self.tell_core(GuardEvent::Rerunning {
                conn: self.conn,
                turn_id: p.turn.id.clone(),
            });
        }
        self.turns.insert(
            p.turn.id,
            TurnInfo {
                thread_id: p.thread_id,
                title,
                produced: false,
            },
        );
        Verdict::Forward
    }

    fn error(&mut self, message: &Inspected<'_>, actions: &mut Actions) -> Verdict {
        let Some(p) = message.envelope.params::<ErrorParams>() else {
            return Verdict::Forward;
        };
        let turn_id = p.turn_id.clone().unwrap_or_default();
        if !p.error.is_usage_limit() || !self.can_hide() {
            if self.holding && self.episode.is_none() {
                return self.release(actions);
            }
            return Verdict::Forward;
        }
        if let Some(episode) = &self.episode {
            if episode.rerun_turn.as_deref() == Some(turn_id.as_str()) {
                // The new account failed too: at most one re-run per turn. Its own error is the
                // real one; the withheld failure of the first account is stale.
                actions.drop_held(Direction::ToClient);
                self.holding = false;
                self.episode = None;
                return Verdict::Forward;
            }
            // The same limit seen again (the title thread's duplicate).
            return self.hold();
        }
        let Some(turn) = self.turns.get(&turn_id) else {
            return self.hold_if_title_or_forward(&turn_id);
        };
        if turn.title {
            return self.hold();
        }
        let Some(params) = self.params_by_thread.get(&turn.thread_id).cloned() else {
            // We never saw this turn's request (a reconnect): nothing to re-run.
            return self.release_or_forward(actions);
        };
        if !self.rerun_done.insert(turn_id.clone()) {
            return self.release_or_forward(actions);
        }
        let thread_id = turn.thread_id.clone();
        self.episode = Some(Episode {
            thread_id: thread_id.clone(),
            turn_id: turn_id.clone(),
            params,
            produced: turn.produced,
            phase: Phase::Gathering,
            revert_id: None,
            rerun_turn: None,
        });
        self.tell_core(GuardEvent::RerunWanted {
            conn: self.conn,
            thread_id,
            turn_id,
            at: Instant::now(),
        });
        self.hold()
    }

    fn hold_if_title_or_forward(&mut self, _turn_id: &str) -> Verdict {
        if self.holding {
            self.hold()
        } else {
            Verdict::Forward
        }
    }

    fn release_or_forward(&mut self, actions: &mut Actions) -> Verdict {
        if self.holding {
            self.release(actions)
        } else {
            Verdict::Forward
        }
    }

    fn turn_completed(&mut self, message: &Inspected<'_>, actions: &mut Actions) -> Verdict {
        let Some(p) = message.envelope.params::<TurnParams>() else {
            return Verdict::Forward;
        };
        let info = self.turns.remove(&p.turn.id);
        let failed = p.turn.status.as_deref() == Some("failed");
        if let Some(episode) = self.episode.as_mut() {
            if episode.turn_id == p.turn.id {
                if episode.phase == Phase::Cancelled {
                    let mut rewritten: Value =
                        serde_json::from_str(message.text).unwrap_or(Value::Null);
                    rewritten["params"]["turn"]["status"] = json!("interrupted");
                    rewritten["params"]["turn"]["error"] = Value::Null;
                    actions.inject(Direction::ToClient, rewritten.to_string());
                    actions.drop_held(Direction::ToClient);
                    self.holding = false;
                    self.episode = None;
                    return Verdict::Drop;
                }
                episode.phase = Phase::AwaitingSwitch;
                return self.hold();
            }
            if episode.rerun_turn.as_deref() == Some(p.turn.id.as_str()) {
                self.episode = None;
                return Verdict::Forward;
            }
            if info.as_ref().is_some_and(|t| t.title) && failed {
                return self.hold();
            }
            return Verdict::Forward;
        }
        if self.holding && info.as_ref().is_some_and(|t| !t.title) {
            // Withheld on suspicion, but this turn did not fail on a limit: show it all.
            return self.release(actions);
        }
        if self.holding && failed && !self.user_turn_running() {
            // Only the title generation ran into the limit: nothing of it is for the user,
            // and the core switches away from that account anyway.
            actions.drop_held(Direction::ToClient);
            self.holding = false;
            return Verdict::Drop;
        }
        Verdict::Forward
    }

    fn own_response(&mut self, message: &Inspected<'_>, actions: &mut Actions) -> Verdict {
        let id = match &message.envelope.id {
            Some(Value::String(id)) => id.clone(),
            _ => return Verdict::Drop,
        };
        let Some(episode) = self.episode.as_mut() else {
            return Verdict::Drop;
        };
        if episode.revert_id.as_deref() == Some(id.as_str()) {
            // Reverted (or not: then continue the failed turn rather than give up).
            let input = if message.envelope.error.is_some() {
                tracing::warn!("thread/revert failed; continuing the failed turn instead");
                json!([])
            } else {
                episode.params["input"].clone()
            };
            self.start_rerun(input, actions);
        } else if message.envelope.error.is_some() && episode.phase == Phase::Rerunning {
            tracing::warn!("the re-run turn/start failed; showing the original error");
            self.episode = None;
            if let Some(id) = self.pending_interrupt.take() {
                // Nothing runs to interrupt; the released failure ends the turn.
                actions.inject(
                    Direction::ToClient,
                    json!({"id": id, "result": {}}).to_string(),
                );
            }
            self.release(actions);
        }
        Verdict::Drop
    }

    fn start_rerun(&mut self, input: Value, actions: &mut Actions) {
        let id = self.own_id("rerun");
        let Some(episode) = self.episode.as_mut() else {
            return;
        };
        let mut params = episode.params.clone();
        params["input"] = input;
        episode.phase = Phase::Rerunning;
        actions.inject(
            Direction::ToUpstream,
            json!({"id": id, "method": "turn/start", "params": params}).to_string(),
        );
    }
}

impl Interceptor for TurnGuard {
    type Command = GuardCommand;

    fn watched(&self, direction: Direction) -> &[&'static str] {
        match direction {
            Direction::ToUpstream => CLIENT_WATCHED,
            Direction::ToClient => SERVER_WATCHED,
        }
    }

    fn watched_text(&self, direction: Direction) -> Option<&str> {
        self.alias.as_ref().map(|alias| alias.rewrite(direction).0)
    }

    fn inspect(&mut self, message: &Inspected<'_>, actions: &mut Actions) -> Verdict {
        let verdict = match message.direction {
            Direction::ToUpstream => self.client_message(message, actions),
            Direction::ToClient => self.server_message(message, actions),
        };
        self.translate(message, verdict, actions)
    }

    fn command(&mut self, command: GuardCommand, actions: &mut Actions) {
        if command == GuardCommand::SwitchOver {
            if std::mem::take(&mut self.held_turn_start) {
                actions.release_held(Direction::ToUpstream);
            }
        } else {
            self.rerun_command(command, actions);
        }
    }
}

impl TurnGuard {
    /// The core's answer to [`GuardEvent::RerunWanted`].
    fn rerun_command(&mut self, command: GuardCommand, actions: &mut Actions) {
        let Some(episode) = self.episode.as_mut() else {
            return;
        };
        if !matches!(episode.phase, Phase::Gathering | Phase::AwaitingSwitch) {
            return;
        }
        match command {
            GuardCommand::SwitchOver => {}
            GuardCommand::GiveUp => {
                self.episode = None;
                self.release(actions);
            }
            GuardCommand::Rerun if episode.produced => self.start_rerun(json!([]), actions),
            GuardCommand::Rerun => {
                // Nothing beyond the prompt was produced: drop the failed turn from the saved
                // history, then send the original input, so the prompt is there once.
                let revert_id = format!("{OWN_ID_PREFIX}revert/{}/{}", self.conn, self.next_id);
                self.next_id += 1;
                let episode = self.episode.as_mut().expect("checked above");
                episode.revert_id = Some(revert_id.clone());
                episode.phase = Phase::Reverting;
                actions.inject(
                    Direction::ToUpstream,
                    json!({
                        "id": revert_id,
                        "method": "thread/revert",
                        "params": {"threadId": episode.thread_id, "beforeTurnId": episode.turn_id},
                    })
                    .to_string(),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::rpc::Envelope;

    struct Harness {
        guard: TurnGuard,
        core: mpsc::UnboundedReceiver<GuardEvent>,
    }

    impl Harness {
        fn new(alternative: bool) -> Self {
            let shared = GuardShared::new(true, PolicyConfig::default());
            shared.set_alternative(alternative);
            let (tx, core) = mpsc::unbounded_channel();
            Self {
                guard: TurnGuard::new(7, shared, tx.into()),
                core,
            }
        }

        fn feed(&mut self, direction: Direction, text: &str) -> (Verdict, Vec<String>) {
            let envelope = Envelope::parse(text).expect("test messages are JSON");
            let message = Inspected {
                conn: 7,
                direction,
                text,
                envelope: &envelope,
            };
            let mut actions = Actions::default();
            let verdict = self.guard.inspect(&message, &mut actions);
            (verdict, actions.describe())
        }

        fn server(&mut self, text: &str) -> (Verdict, Vec<String>) {
            self.feed(Direction::ToClient, text)
        }

        fn client(&mut self, text: &str) -> (Verdict, Vec<String>) {
            self.feed(Direction::ToUpstream, text)
        }

        fn command(&mut self, command: GuardCommand) -> Vec<String> {
            let mut actions = Actions::default();
            self.guard.command(command, &mut actions);
            actions.describe()
        }

        fn core_events(&mut self) -> Vec<String> {
            std::iter::from_fn(|| self.core.try_recv().ok())
                .map(|m| match m {
                    GuardEvent::RerunWanted { turn_id, .. } => format!("wanted {turn_id}"),
                    GuardEvent::RerunCancelled { .. } => "cancelled".into(),
                    GuardEvent::Rerunning { turn_id, .. } => format!("rerunning {turn_id}"),
                    GuardEvent::TurnRequested {
                        thread_id,
                        purpose,
                        held,
                        ..
                    } => format!(
                        "{} {thread_id}{}",
                        if held { "held" } else { "requested" },
                        if purpose.is_title() {
                            " for a title"
                        } else {
                            ""
                        }
                    ),
                })
                .collect()
        }

        /// A user turn `u1` on thread `t1`, optionally having produced a tool call.
        fn user_turn(&mut self, produced: bool) {
            self.client(r#"{"id":5,"method":"turn/start","params":{"threadId":"t1","input":[{"type":"text","text":"hi"}]}}"#);
            assert_eq!(self.core_events(), vec!["requested t1"]);
            self.server(r#"{"method":"turn/started","params":{"threadId":"t1","turn":{"id":"u1","items":[],"status":"inProgress"}}}"#);
            self.server(r#"{"method":"item/started","params":{"threadId":"t1","turnId":"u1","item":{"type":"userMessage","id":"m"}}}"#);
            if produced {
                self.server(r#"{"method":"item/started","params":{"threadId":"t1","turnId":"u1","item":{"type":"commandExecution","id":"c"}}}"#);
            }
        }

        /// The limit failure sequence of docs/protocol.md §3 for turn `u1`.
        fn limit_failure(&mut self) -> Vec<Verdict> {
            [
                r#"{"method":"account/rateLimits/updated","params":{"rateLimits":{"primary":{"usedPercent":100,"windowDurationMins":300,"resetsAt":9}}}}"#,
                r#"{"method":"thread/status/changed","params":{"threadId":"t1","status":{"type":"systemError"}}}"#,
                r#"{"method":"error","params":{"error":{"message":"limit","codexErrorInfo":"usageLimitExceeded"},"willRetry":false,"threadId":"t1","turnId":"u1"}}"#,
                r#"{"method":"turn/completed","params":{"threadId":"t1","turn":{"id":"u1","items":[],"status":"failed"}}}"#,
            ]
            .iter()
            .map(|m| self.server(m).0)
            .collect()
        }
    }

    #[test]
    fn a_limit_failure_is_withheld_and_rerun_with_empty_input_after_tool_work() {
        let mut h = Harness::new(true);
        h.user_turn(true);
        assert_eq!(h.limit_failure(), vec![Verdict::Hold; 4]);
        assert_eq!(h.core_events(), vec!["wanted u1"]);
        let actions = h.command(GuardCommand::Rerun);
        assert_eq!(actions.len(), 1, "{actions:?}");
        assert!(actions[0].starts_with("inject→upstream"), "{actions:?}");
        assert!(
            actions[0].contains(r#""method":"turn/start""#),
            "{actions:?}"
        );
        assert!(actions[0].contains(r#""input":[]"#), "{actions:?}");
        assert!(
            actions[0].contains(r#""id":"cs-tui/rerun/7/"#),
            "{actions:?}"
        );
        let (verdict, actions) = h.server(r#"{"method":"turn/started","params":{"threadId":"t1","turn":{"id":"u2","items":[],"status":"inProgress"}}}"#);
        assert_eq!(verdict, Verdict::Drop, "shown rewritten, as u1");
        assert_eq!(actions[0], "drop-held→client");
        assert!(actions[1].contains(r#""id":"u1""#), "{actions:?}");
        assert_eq!(h.core_events(), vec!["rerunning u2"]);
    }

    /// The re-run (`u2` on the server) is `u1` for the client in every message that carries
    /// its id, both ways, until the thread's next turn starts.
    #[test]
    fn a_rerun_is_shown_to_the_client_under_its_own_turn_id() {
        let mut h = Harness::new(true);
        h.user_turn(true);
        h.limit_failure();
        h.core_events();
        h.command(GuardCommand::Rerun);
        assert_eq!(h.guard.watched_text(Direction::ToClient), None, "no id yet");
        let (verdict, actions) = h.server(r#"{"method":"turn/started","params":{"threadId":"t1","turn":{"id":"u2","items":[],"status":"inProgress"}}}"#);
        assert_eq!(verdict, Verdict::Drop, "replaced by its rewrite");
        assert_eq!(actions[0], "drop-held→client");
        assert!(actions[1].starts_with("inject→client"), "{actions:?}");
        assert!(actions[1].contains(r#""turn":{"id":"u1""#), "{actions:?}");
        assert!(!actions[1].contains("u2"), "{actions:?}");
        assert_eq!(
            h.core_events(),
            vec!["rerunning u2"],
            "the core sees the real id"
        );
        assert_eq!(h.guard.watched_text(Direction::ToClient), Some("u2"));
        assert_eq!(h.guard.watched_text(Direction::ToUpstream), Some("u1"));

        // Any message, watched or not, whose values carry the id.
        let (verdict, actions) = h.server(r#"{"method":"item/agentMessage/delta","params":{"threadId":"t1","turnId":"u2","itemId":"m2","delta":"menu2"}}"#);
        assert_eq!(verdict, Verdict::Drop);
        assert_eq!(actions.len(), 1, "{actions:?}");
        assert!(actions[0].contains(r#""turnId":"u1""#), "{actions:?}");
        assert!(
            actions[0].contains(r#""delta":"menu2""#),
            "text is not touched: {actions:?}"
        );
        let (verdict, actions) = h.server(r#"{"method":"item/agentMessage/delta","params":{"threadId":"t1","turnId":"u9","itemId":"m2","delta":"menu2"}}"#);
        assert_eq!(
            (verdict, actions.len()),
            (Verdict::Forward, 0),
            "only inside a text"
        );

        // The client's requests for its turn reach the server with the re-run's id.
        let (verdict, actions) = h.client(r#"{"id":12,"method":"turn/steer","params":{"threadId":"t1","expectedTurnId":"u1","input":[]}}"#);
        assert_eq!(verdict, Verdict::Drop);
        assert!(actions[0].starts_with("inject→upstream"), "{actions:?}");
        assert!(
            actions[0].contains(r#""expectedTurnId":"u2""#),
            "{actions:?}"
        );
        assert!(
            actions[0].contains(r#""id":12"#),
            "the client's own id: {actions:?}"
        );
        let (verdict, actions) = h.client(
            r#"{"id":13,"method":"turn/interrupt","params":{"threadId":"t1","turnId":"u1"}}"#,
        );
        assert_eq!(verdict, Verdict::Drop);
        assert!(actions[0].contains(r#""turnId":"u2""#), "{actions:?}");

        let (verdict, actions) = h.server(r#"{"method":"turn/completed","params":{"threadId":"t1","turn":{"id":"u2","items":[],"status":"interrupted"}}}"#);
        assert_eq!(verdict, Verdict::Drop);
        assert!(actions[0].contains(r#""id":"u1""#), "{actions:?}");
        // A straggler after the completion is still the client's turn…
        let (verdict, _) = h.server(
            r#"{"method":"thread/tokenUsage/updated","params":{"threadId":"t1","turnId":"u2"}}"#,
        );
        assert_eq!(verdict, Verdict::Drop);
        // …until the next turn of the thread starts: then nothing is rewritten any more.
        h.client(r#"{"id":14,"method":"turn/start","params":{"threadId":"t1","input":[]}}"#);
        let (verdict, actions) = h.server(r#"{"method":"turn/started","params":{"threadId":"t1","turn":{"id":"u3","items":[],"status":"inProgress"}}}"#);
        assert_eq!((verdict, actions.len()), (Verdict::Forward, 0));
        assert_eq!(h.guard.watched_text(Direction::ToClient), None);
        assert_eq!(h.guard.watched_text(Direction::ToUpstream), None);
    }

    #[test]
    fn an_interrupt_before_the_rerun_has_an_id_interrupts_it_as_it_starts() {
        let mut h = Harness::new(true);
        h.user_turn(true);
        h.limit_failure();
        h.command(GuardCommand::Rerun);
        let (verdict, actions) = h.client(
            r#"{"id":21,"method":"turn/interrupt","params":{"threadId":"t1","turnId":"u1"}}"#,
        );
        assert_eq!(
            (verdict, actions.len()),
            (Verdict::Drop, 0),
            "kept for the start"
        );
        let (_, actions) = h.server(r#"{"method":"turn/started","params":{"threadId":"t1","turn":{"id":"u2","items":[],"status":"inProgress"}}}"#);
        let interrupt = actions
            .iter()
            .find(|a| a.starts_with("inject→upstream"))
            .expect("the interrupt goes on");
        assert!(interrupt.contains(r#""turnId":"u2""#), "{actions:?}");
        assert!(interrupt.contains(r#""id":21"#), "{actions:?}");
    }

    #[test]
    fn an_interrupt_waiting_for_a_rerun_that_fails_to_start_is_answered() {
        let mut h = Harness::new(true);
        h.user_turn(true);
        h.limit_failure();
        h.command(GuardCommand::Rerun);
        h.client(r#"{"id":22,"method":"turn/interrupt","params":{"threadId":"t1","turnId":"u1"}}"#);
        let (_, actions) =
            h.server(r#"{"id":"cs-tui/rerun/7/1","error":{"code":-32600,"message":"no"}}"#);
        assert!(actions[0].contains(r#""id":22"#), "{actions:?}");
        assert_eq!(actions[1], "release-held→client");
    }

    #[test]
    fn without_output_the_failed_turn_is_reverted_before_the_original_input_is_sent() {
        let mut h = Harness::new(true);
        h.user_turn(false);
        h.limit_failure();
        let actions = h.command(GuardCommand::Rerun);
        assert!(
            actions[0].contains(r#""method":"thread/revert""#),
            "{actions:?}"
        );
        assert!(actions[0].contains(r#""beforeTurnId":"u1""#), "{actions:?}");
        let (verdict, actions) = h.server(r#"{"id":"cs-tui/revert/7/1","result":{"thread":{}}}"#);
        assert_eq!(verdict, Verdict::Drop);
        assert!(
            actions[0].contains(r#""input":[{"text":"hi","type":"text"}]"#),
            "{actions:?}"
        );
        let (verdict, _) = h.server(r#"{"method":"thread/reverted","params":{"threadId":"t1"}}"#);
        assert_eq!(verdict, Verdict::Drop, "the revert is not shown");
    }

    #[test]
    fn a_title_turn_that_alone_hits_the_limit_leaves_nothing_held() {
        let mut h = Harness::new(true);
        h.client(r#"{"id":"temporary-structured-1","method":"turn/start","params":{"threadId":"title","input":[]}}"#);
        assert_eq!(h.core_events(), vec!["requested title for a title"]);
        h.server(r#"{"method":"turn/started","params":{"threadId":"title","turn":{"id":"x1","items":[],"status":"inProgress"}}}"#);
        let update = r#"{"method":"account/rateLimits/updated","params":{"rateLimits":{"primary":{"usedPercent":100,"windowDurationMins":300,"resetsAt":9}}}}"#;
        assert_eq!(h.server(update).0, Verdict::Forward, "no user turn runs");
        let (v, _) = h.server(r#"{"method":"thread/status/changed","params":{"threadId":"title","status":{"type":"systemError"}}}"#);
        assert_eq!(v, Verdict::Hold);
        let (v, actions) = h.server(r#"{"method":"turn/completed","params":{"threadId":"title","turn":{"id":"x1","items":[],"status":"failed"}}}"#);
        assert_eq!(
            (v, actions),
            (Verdict::Drop, vec!["drop-held→client".to_owned()])
        );
        assert!(h.core_events().is_empty());
    }

    #[test]
    fn with_no_alternative_nothing_is_withheld() {
        let mut h = Harness::new(false);
        h.user_turn(false);
        assert_eq!(h.limit_failure(), vec![Verdict::Forward; 4]);
        assert!(h.core_events().is_empty());
    }

    #[test]
    fn giving_up_releases_the_real_error() {
        let mut h = Harness::new(true);
        h.user_turn(false);
        h.limit_failure();
        assert_eq!(h.command(GuardCommand::GiveUp), vec!["release-held→client"]);
        assert!(
            h.command(GuardCommand::Rerun).is_empty(),
            "nothing left to re-run"
        );
    }

    #[test]
    fn esc_in_the_gap_is_answered_here_with_an_interrupted_completion() {
        let mut h = Harness::new(true);
        h.user_turn(false);
        h.limit_failure();
        h.core_events();
        let (verdict, actions) = h.client(
            r#"{"id":9,"method":"turn/interrupt","params":{"threadId":"t1","turnId":"u1"}}"#,
        );
        assert_eq!(
            verdict,
            Verdict::Drop,
            "the server has no turn to interrupt"
        );
        assert!(actions[0].contains(r#""id":9"#), "{actions:?}");
        assert_eq!(actions[1], "drop-held→client");
        assert!(
            actions[2].contains(r#""status":"interrupted""#),
            "{actions:?}"
        );
        assert_eq!(h.core_events(), vec!["cancelled"]);
        assert!(
            h.command(GuardCommand::Rerun).is_empty(),
            "the re-run is cancelled"
        );
    }

    #[test]
    fn a_second_failure_on_the_new_account_shows_the_real_error() {
        let mut h = Harness::new(true);
        h.user_turn(true);
        h.limit_failure();
        h.command(GuardCommand::Rerun);
        h.server(r#"{"method":"turn/started","params":{"threadId":"t1","turn":{"id":"u2","items":[],"status":"inProgress"}}}"#);
        // Shown (as the client's turn u1), not withheld.
        let (verdict, actions) = h.server(r#"{"method":"error","params":{"error":{"message":"limit","codexErrorInfo":"usageLimitExceeded"},"willRetry":false,"threadId":"t1","turnId":"u2"}}"#);
        assert_eq!(verdict, Verdict::Drop);
        assert_eq!(actions[0], "drop-held→client");
        assert!(actions[1].contains(r#""turnId":"u1""#), "{actions:?}");
        let (verdict, actions) = h.server(r#"{"method":"turn/completed","params":{"threadId":"t1","turn":{"id":"u2","items":[],"status":"failed"}}}"#);
        assert_eq!(verdict, Verdict::Drop);
        assert!(actions[0].contains(r#""status":"failed""#), "{actions:?}");
        assert!(actions[0].contains(r#""id":"u1""#), "{actions:?}");
    }

    #[test]
    fn a_soft_threshold_update_is_not_shown_when_another_account_takes_over() {
        let mut h = Harness::new(true);
        let update = r#"{"method":"account/rateLimits/updated","params":{"rateLimits":{"primary":{"usedPercent":96,"windowDurationMins":300,"resetsAt":9}}}}"#;
        assert_eq!(h.server(update).0, Verdict::Drop);
        let mut alone = Harness::new(false);
        assert_eq!(alone.server(update).0, Verdict::Forward);
        let calm = r#"{"method":"account/rateLimits/updated","params":{"rateLimits":{"primary":{"usedPercent":50,"windowDurationMins":300,"resetsAt":9}}}}"#;
        assert_eq!(h.server(calm).0, Verdict::Forward);
    }

    #[test]
    fn another_limit_family_is_neither_withheld_nor_dropped() {
        let mut h = Harness::new(true);
        h.user_turn(false);
        let spark = r#"{"method":"account/rateLimits/updated","params":{"rateLimits":{"limitId":"codex_bengalfox","limitName":"GPT-5.3-Codex-Spark","primary":{"usedPercent":100,"windowDurationMins":300,"resetsAt":9}}}}"#;
        assert_eq!(
            h.server(spark).0,
            Verdict::Forward,
            "a Spark limit is not ours"
        );
        let hot = r#"{"method":"account/rateLimits/updated","params":{"rateLimits":{"limitId":"codex_bengalfox","primary":{"usedPercent":96,"windowDurationMins":300,"resetsAt":9}}}}"#;
        assert_eq!(h.server(hot).0, Verdict::Forward);
        let codex = r#"{"method":"account/rateLimits/updated","params":{"rateLimits":{"limitId":"codex","primary":{"usedPercent":100,"windowDurationMins":300,"resetsAt":9}}}}"#;
        assert_eq!(
            h.server(codex).0,
            Verdict::Hold,
            "the quota's limit still is"
        );
    }

    #[test]
    fn a_turn_start_tells_the_core_at_once() {
        let mut h = Harness::new(true);
        let (verdict, _) =
            h.client(r#"{"id":5,"method":"turn/start","params":{"threadId":"t1","input":[]}}"#);
        assert_eq!(verdict, Verdict::Forward);
        assert_eq!(h.core_events(), vec!["requested t1"]);
    }

    #[test]
    fn a_turn_asked_for_during_a_switch_waits_for_its_login() {
        let mut h = Harness::new(true);
        h.guard.shared.set_switching(true);
        let start = r#"{"id":5,"method":"turn/start","params":{"threadId":"t1","input":[]}}"#;
        assert_eq!(h.client(start).0, Verdict::Hold);
        // A second one queues behind the first, in order.
        h.guard.shared.set_switching(false);
        assert_eq!(h.client(start).0, Verdict::Hold);
        assert_eq!(
            h.command(GuardCommand::SwitchOver),
            vec!["release-held→upstream"]
        );
        assert_eq!(h.client(start).0, Verdict::Forward);
        // Nothing held: nothing to release.
        assert!(h.command(GuardCommand::SwitchOver).is_empty());
    }

    #[test]
    fn a_turn_asked_for_while_the_core_holds_turns_waits_for_the_switch() {
        let mut h = Harness::new(true);
        let start = r#"{"id":5,"method":"turn/start","params":{"threadId":"t1","input":[]}}"#;
        h.guard.shared.set_hold(true);
        assert_eq!(h.client(start).0, Verdict::Hold);
        assert_eq!(h.core_events(), vec!["held t1"], "held turns are not busy");
        // The hold lifts as the switch's login starts: later turns queue behind the first.
        h.guard.shared.set_hold(false);
        h.guard.shared.set_switching(true);
        assert_eq!(h.client(start).0, Verdict::Hold);
        assert_eq!(h.core_events(), vec!["held t1"]);
        h.guard.shared.set_switching(false);
        assert_eq!(
            h.command(GuardCommand::SwitchOver),
            vec!["release-held→upstream"]
        );
        assert_eq!(h.client(start).0, Verdict::Forward);
        assert_eq!(h.core_events(), vec!["requested t1"]);
    }

    #[test]
    fn a_hold_let_go_with_no_switch_releases_the_turn_to_the_old_account() {
        let mut h = Harness::new(true);
        let start = r#"{"id":5,"method":"turn/start","params":{"threadId":"t1","input":[]}}"#;
        h.guard.shared.set_hold(true);
        assert_eq!(h.client(start).0, Verdict::Hold);
        // The core lets go (its timeout, or the switch failed): SwitchOver releases it.
        h.guard.shared.set_hold(false);
        assert_eq!(
            h.command(GuardCommand::SwitchOver),
            vec!["release-held→upstream"]
        );
        assert_eq!(h.client(start).0, Verdict::Forward);
        // A rerun command meanwhile does not release held turns.
        h.guard.shared.set_hold(true);
        assert_eq!(h.client(start).0, Verdict::Hold);
        assert!(h.command(GuardCommand::GiveUp).is_empty());
    }
}
