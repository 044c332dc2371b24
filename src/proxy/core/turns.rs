//! Turn tracking. Rule: a login kills a running turn (docs/protocol.md §2), so the core knows which
//! turns run, and which were asked for and have not started yet (they count as running until
//! [`REQUESTED_TURN_TIMEOUT`]); a turn is attributed to the account it started on. It also keeps
//! the bookkeeping of hidden re-runs: which connection waits for a switch, and which re-run is
//! under way.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::account_id::AccountId;
use crate::proxy::events::{ProxyEvent, SwitchReason};
use crate::proxy::ledger::TurnRecord;
use crate::proxy::policy::Mode;
use crate::proxy::relay::{ConnId, Observation};
use crate::proxy::rpc::{TokenBreakdown, TurnPurpose};
use crate::proxy::turn_guard::{GuardCommand, GuardEvent};

use super::effects::{Effect, Effects};
use super::state::{CoreState, Now};
use super::switching::Target;

/// A requested turn that has not started after this long is taken to have failed (its
/// `turn/start` got an error, which the relay does not look at).
pub(super) const REQUESTED_TURN_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether a turn runs or is about to: then a login would kill it. Forgets requests that never
/// turned into a turn.
pub(super) fn busy(
    running: &HashMap<String, (ConnId, Option<AccountId>)>,
    requested: &mut HashMap<(ConnId, String), Instant>,
    now: Instant,
) -> bool {
    requested.retain(|(conn, thread), at| {
        let fresh = now.saturating_duration_since(*at) < REQUESTED_TURN_TIMEOUT;
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

/// The ledger's view of the turns (`proxy::ledger`): what each running turn has used so far.
#[derive(Debug, Default)]
pub(crate) struct TurnBook {
    /// Turn id → the turn so far.
    turns: HashMap<String, BookTurn>,
    /// (connection, thread) → the thread's model, from `thread/started`, then from each
    /// `thread/settings/updated` (a `turn/start` that overrides the model).
    models: HashMap<(ConnId, String), String>,
    /// (connection, thread) → the thread's last `total.totalTokens`: a notification that
    /// repeats it adds nothing.
    totals: HashMap<(ConnId, String), u64>,
    /// Re-run turns (the guard's `Rerunning`) whose `turn/started` has not come yet.
    reruns: HashSet<(ConnId, String)>,
    /// (connection, thread) of the TUI's title generation (a `turn/start` with a title request
    /// id, as the guard reports it): every turn started on that thread is a title turn.
    title_threads: HashSet<(ConnId, String)>,
}

#[derive(Debug)]
struct BookTurn {
    conn: ConnId,
    thread_id: String,
    at: DateTime<Utc>,
    started: Instant,
    account: Option<AccountId>,
    /// The thread's model when the turn started, or the one a `model/rerouted` named.
    model: Option<String>,
    tokens: TokenBreakdown,
    rerun: bool,
    purpose: TurnPurpose,
}

impl TurnBook {
    fn started(
        &mut self,
        conn: ConnId,
        thread_id: String,
        turn_id: String,
        account: Option<AccountId>,
        now: Now,
    ) {
        let rerun = self.reruns.remove(&(conn, turn_id.clone()));
        let key = (conn, thread_id);
        let model = self.models.get(&key).cloned();
        let purpose = if self.title_threads.contains(&key) {
            TurnPurpose::Title
        } else {
            TurnPurpose::User
        };
        let (conn, thread_id) = key;
        self.turns.insert(
            turn_id,
            BookTurn {
                conn,
                thread_id,
                at: now.wall,
                started: now.mono,
                account,
                model,
                tokens: TokenBreakdown::default(),
                rerun,
                purpose,
            },
        );
    }

    fn usage(
        &mut self,
        conn: ConnId,
        thread_id: String,
        turn_id: &str,
        last: TokenBreakdown,
        total: TokenBreakdown,
    ) {
        let previous = self.totals.insert((conn, thread_id), total.total_tokens);
        if previous == Some(total.total_tokens) {
            return;
        }
        if let Some(turn) = self.turns.get_mut(turn_id) {
            turn.tokens.input_tokens += last.input_tokens;
            turn.tokens.cached_input_tokens += last.cached_input_tokens;
            turn.tokens.output_tokens += last.output_tokens;
            turn.tokens.total_tokens += last.total_tokens;
        }
    }

    fn rerunning(&mut self, conn: ConnId, turn_id: String) {
        match self.turns.get_mut(&turn_id) {
            Some(turn) => turn.rerun = true,
            None => {
                self.reruns.insert((conn, turn_id));
            }
        }
    }
}

impl CoreState {
    /// A turn is over (or its connection is gone): its ledger line.
    fn turn_ended(&mut self, turn_id: String, status: Option<String>, now: Now, fx: &mut Effects) {
        let Some(turn) = self.book.turns.remove(&turn_id) else {
            return;
        };
        let model = turn.model;
        let account = turn.account.as_ref().map(|a| self.account_ref(a));
        fx.push(Effect::AppendLedger(Box::new(TurnRecord {
            at: turn.at,
            session: self.config.session_id.clone(),
            account,
            model,
            thread_id: turn.thread_id,
            turn_id,
            input_tokens: turn.tokens.input_tokens,
            cached_input_tokens: turn.tokens.cached_input_tokens,
            output_tokens: turn.tokens.output_tokens,
            duration_ms: u64::try_from(
                now.mono.saturating_duration_since(turn.started).as_millis(),
            )
            .unwrap_or(u64::MAX),
            rerun: turn.rerun,
            status,
            purpose: turn.purpose,
        })));
    }

    pub(super) fn is_busy(&mut self, now: Now) -> bool {
        busy(&self.running, &mut self.requested, now.mono)
    }

    pub(super) fn disconnected(&mut self, conn: ConnId, now: Now, fx: &mut Effects) {
        self.clients.remove(&conn);
        self.reruns.remove(&conn);
        self.rerun_started.remove(&conn);
        // Turns seen only on that connection can no longer be tracked.
        self.running.retain(|_, (c, _)| *c != conn);
        self.requested.retain(|(c, _), _| *c != conn);
        self.held_requests.retain(|(c, _), _| *c != conn);
        let mut gone: Vec<String> = self
            .book
            .turns
            .iter()
            .filter(|(_, t)| t.conn == conn)
            .map(|(id, _)| id.clone())
            .collect();
        gone.sort_unstable();
        for turn_id in gone {
            self.turn_ended(turn_id, Some("disconnected".to_owned()), now, fx);
        }
        self.book.models.retain(|(c, _), _| *c != conn);
        self.book.totals.retain(|(c, _), _| *c != conn);
        self.book.reruns.retain(|(c, _)| *c != conn);
        self.book.title_threads.retain(|(c, _)| *c != conn);
        self.emit_connection(now, fx);
        self.emit_turns(now, fx);
        self.maybe_execute(now, fx);
    }

    /// Says how many turns are held when that changed (after every input: a turn is held by
    /// its guard's report, released by a switch's end or a hold's, gone with its client).
    pub(super) fn emit_held(&mut self, now: Now, fx: &mut Effects) {
        let held = self.held_requests.len();
        if held != self.held_told {
            self.held_told = held;
            fx.emit(ProxyEvent::TurnsHeld { held, at: now.wall });
        }
    }

    pub(super) fn emit_turns(&self, now: Now, fx: &mut Effects) {
        let title_turns = self
            .running
            .keys()
            .filter(|id| {
                self.book
                    .turns
                    .get(*id)
                    .is_some_and(|t| t.purpose.is_title())
            })
            .count();
        fx.emit(ProxyEvent::TurnsRunning {
            running: self.running.len(),
            title_turns,
            at: now.wall,
        });
    }

    pub(super) fn observe(
        &mut self,
        conn: ConnId,
        observation: Observation,
        now: Now,
        fx: &mut Effects,
    ) {
        match observation {
            Observation::TurnStarted { turn_id, thread_id } => {
                // (A held request's release can cross its report on the way here.)
                self.held_requests.remove(&(conn, thread_id.clone()));
                self.requested.remove(&(conn, thread_id.clone()));
                self.book
                    .started(conn, thread_id, turn_id.clone(), self.active.clone(), now);
                self.running.insert(turn_id, (conn, self.active.clone()));
                self.emit_turns(now, fx);
            }
            Observation::TurnCompleted {
                turn_id,
                thread_id,
                status,
            } => {
                self.held_requests.remove(&(conn, thread_id.clone()));
                self.requested.remove(&(conn, thread_id));
                self.turn_ended(turn_id.clone(), status, now, fx);
                if self.running.remove(&turn_id).is_some() {
                    self.emit_turns(now, fx);
                }
                self.maybe_execute(now, fx);
            }
            Observation::RateLimits(update) => self.rate_limits_heard(&update, now, fx),
            Observation::TokenUsage {
                thread_id,
                turn_id,
                last,
                total,
            } => self.book.usage(conn, thread_id, &turn_id, last, total),
            Observation::ThreadStarted { thread_id, model }
            | Observation::ThreadSettings { thread_id, model } => {
                if let Some(model) = model {
                    self.book.models.insert((conn, thread_id), model);
                }
            }
            Observation::ModelRerouted {
                thread_id,
                turn_id,
                model,
            } => {
                if let Some(turn) = self
                    .book
                    .turns
                    .get_mut(&turn_id)
                    .filter(|t| t.conn == conn && t.thread_id == thread_id)
                {
                    turn.model = Some(model);
                }
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
                self.usage_limit_error(now, fx);
            }
        }
    }

    pub(super) fn guard_event(&mut self, event: GuardEvent, now: Now, fx: &mut Effects) {
        tracing::info!(?event, "turn guard");
        if let GuardEvent::TurnRequested {
            conn,
            thread_id,
            purpose: TurnPurpose::Title,
            ..
        } = &event
        {
            // The TUI's title generation: the turns of that thread are marked in the ledger
            // (its `turn/started` comes after this report).
            self.book.title_threads.insert((*conn, thread_id.clone()));
        }
        match event {
            GuardEvent::RerunWanted { conn, at, .. } => {
                // The guard saw the active account's turn fail on its limit.
                if let Some(active) = self.active.clone() {
                    self.report_limit(&active, now, fx);
                }
                self.reruns.insert(conn, (at, self.active.clone()));
                // The limit error's observation arms the switch too; this makes sure.
                if !self.switching {
                    self.arm(
                        Target::Best,
                        SwitchReason::UsageLimit,
                        Mode::Automatic,
                        now,
                        fx,
                    );
                }
            }
            GuardEvent::TurnRequested {
                conn,
                thread_id,
                held: true,
                ..
            } => {
                // It waits for a switch; counted busy, it would hold that switch back.
                self.held_requests.insert((conn, thread_id), now.mono);
            }
            GuardEvent::TurnRequested {
                conn,
                thread_id,
                held: false,
                ..
            } => {
                self.requested.insert((conn, thread_id), now.mono);
                // Should the turn never start (the request failed), look again then.
                fx.push(Effect::RecheckAfter(REQUESTED_TURN_TIMEOUT));
            }
            GuardEvent::RerunCancelled { conn } => {
                self.reruns.remove(&conn);
                self.rerun_started.remove(&conn);
            }
            GuardEvent::Rerunning { conn, turn_id } => {
                self.book.rerunning(conn, turn_id);
                if let Some((at, from, to)) = self.rerun_started.remove(&conn) {
                    let waited = now.mono.saturating_duration_since(at);
                    let from = from.map(|f| self.account_ref(&f));
                    let to = self.account_ref(&to);
                    fx.emit(ProxyEvent::Notice {
                        message: format!(
                            "limit hit on {} — continued on {}, {:.1} s",
                            from.as_ref()
                                .map_or("the previous account", |f| f.name.as_str()),
                            to.name,
                            waited.as_secs_f64()
                        ),
                        at: now.wall,
                    });
                    fx.emit(ProxyEvent::TurnRerun {
                        from,
                        to,
                        waited_ms: u64::try_from(waited.as_millis()).unwrap_or(u64::MAX),
                        at: now.wall,
                    });
                }
            }
        }
    }

    /// The switch is done: every re-run waiting for it goes, on the new account `to`.
    pub(super) fn start_reruns(&mut self, to: &AccountId, fx: &mut Effects) {
        let mut waiting: Vec<_> = std::mem::take(&mut self.reruns).into_iter().collect();
        waiting.sort_by_key(|(conn, _)| *conn);
        for (conn, (at, from)) in waiting {
            if self.clients.contains(&conn) {
                fx.push(Effect::Guard {
                    conn,
                    command: GuardCommand::Rerun,
                });
                self.rerun_started.insert(conn, (at, from, to.clone()));
            }
        }
    }

    /// Hidden re-runs wait for the switch; when there is none, the real error shows.
    pub(super) fn give_up_reruns(&mut self, fx: &mut Effects) {
        let mut waiting: Vec<ConnId> = std::mem::take(&mut self.reruns).into_keys().collect();
        waiting.sort_unstable();
        for conn in waiting {
            if self.clients.contains(&conn) {
                fx.push(Effect::Guard {
                    conn,
                    command: GuardCommand::GiveUp,
                });
            }
        }
    }

    /// A switch's login is over (or a hold ends): turns held meanwhile go to the app-server
    /// now, and count as requested from now on.
    pub(super) fn release_held_turns(&mut self, now: Now, fx: &mut Effects) {
        if !self.held_requests.is_empty() {
            for (key, _) in std::mem::take(&mut self.held_requests) {
                self.requested.insert(key, now.mono);
            }
            fx.push(Effect::RecheckAfter(REQUESTED_TURN_TIMEOUT));
        }
        let mut clients: Vec<ConnId> = self.clients.iter().copied().collect();
        clients.sort_unstable();
        for conn in clients {
            fx.push(Effect::Guard {
                conn,
                command: GuardCommand::SwitchOver,
            });
        }
    }
}
