//! The core's rules as plain functions: inputs and a clock in, effects out. No tokio runtime,
//! no app-server, no backend.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::json;

use super::CoreConfig;
use super::effects::{Effect, SwitchPlan};
use super::refresh::refresh_target;
use super::state::{CoreState, Input, Now};
use super::switching::{SwitchFailure, SwitchOutcome, Target};
use super::turns::{REQUESTED_TURN_TIMEOUT, busy};
use crate::account_id::AccountId;
use crate::proxy::app_server::AppServerExit;
use crate::proxy::directory::DirAccount;
use crate::proxy::events::{ConnectionState, ProxyCommand, ProxyEvent, SwitchReason};
use crate::proxy::policy::{Mode, PolicyConfig};
use crate::proxy::relay::Observation;
use crate::proxy::rpc::{TurnPurpose, method};
use crate::proxy::turn_guard::{GuardCommand, GuardEvent};
use crate::quota::{AccountLimits, RateLimitSnapshot, RateLimitWindow};

pub(super) fn seat(id: &str, workspace: &str, user: &str) -> DirAccount {
    DirAccount {
        id: id.into(),
        name: id.to_owned(),
        email: None,
        plan: None,
        chatgpt_account_id: Some(workspace.to_owned()),
        user_id: Some(user.to_owned()),
        enabled: true,
        needs_login: false,
        unsupported_sign_in: None,
    }
}

/// An API-key account: cannot be logged in with ChatGPT tokens.
pub(super) fn api_key(id: &str) -> DirAccount {
    DirAccount {
        chatgpt_account_id: None,
        user_id: None,
        ..seat(id, "", "")
    }
}

/// A quota whose 5-hour window is `used` % full (resetting in an hour) and weekly 10 %.
pub(super) fn quota(used: f64, wall: DateTime<Utc>) -> RateLimitSnapshot {
    RateLimitSnapshot {
        primary: Some(RateLimitWindow {
            used_percent: used,
            window_duration_mins: Some(300),
            resets_at: Some(wall.timestamp() + 3600),
        }),
        secondary: Some(RateLimitWindow {
            used_percent: 10.0,
            window_duration_mins: Some(10080),
            resets_at: Some(wall.timestamp() + 86_400),
        }),
        ..RateLimitSnapshot::default()
    }
}

pub(super) fn limits(used: f64, wall: DateTime<Utc>) -> AccountLimits {
    AccountLimits::full([quota(used, wall)])
}

/// A session on `alice` with `bob` and `carol` stored (and an API-key account), at a clock
/// the test moves by hand.
pub(super) struct Sim {
    pub(super) state: CoreState,
    pub(super) now: Now,
}

impl Sim {
    pub(super) fn new() -> Self {
        let now = Now {
            mono: Instant::now(),
            wall: DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
        };
        let config = CoreConfig {
            policy: PolicyConfig::default(),
            usage_poll: Duration::from_secs(300),
            history_path: PathBuf::from("/nonexistent/switch-history.jsonl"),
            ledger: None,
            session_id: "s-test".to_owned(),
        };
        let accounts = vec![
            seat("alice", "ws-a", "u-alice"),
            seat("bob", "ws-b", "u-bob"),
            seat("carol", "ws-c", "u-carol"),
            api_key("key"),
        ];
        let state = CoreState::new(
            config,
            accounts,
            "alice".into(),
            Some(limits(20.0, now.wall)),
        );
        Self { state, now }
    }

    pub(super) fn advance(&mut self, by: Duration) {
        self.now.mono += by;
        self.now.wall += chrono::Duration::from_std(by).unwrap();
    }

    pub(super) fn feed(&mut self, input: Input) -> Vec<Effect> {
        self.state.handle(input, self.now)
    }

    /// The store's accounts, as the next listing asked for reads them.
    pub(super) fn listed(&mut self, accounts: Vec<DirAccount>) -> Vec<Effect> {
        let number = self.state.newest_listing + 1;
        self.feed(Input::AccountsListed { number, accounts })
    }

    pub(super) fn connect(&mut self, conn: u64) {
        self.feed(Input::Connected(conn));
    }

    pub(super) fn turn_started(&mut self, conn: u64, turn: &str) -> Vec<Effect> {
        self.feed(Input::Observed(
            conn,
            Observation::TurnStarted {
                thread_id: format!("thread-{turn}"),
                turn_id: turn.into(),
            },
        ))
    }

    pub(super) fn turn_completed(&mut self, conn: u64, turn: &str) -> Vec<Effect> {
        self.feed(Input::Observed(
            conn,
            Observation::TurnCompleted {
                thread_id: format!("thread-{turn}"),
                turn_id: turn.into(),
                status: Some("completed".into()),
            },
        ))
    }

    pub(super) fn limit_error(&mut self, conn: u64, turn: &str) -> Vec<Effect> {
        self.feed(Input::Observed(
            conn,
            Observation::UsageLimitError {
                thread_id: Some(format!("thread-{turn}")),
                turn_id: Some(turn.into()),
            },
        ))
    }

    pub(super) fn rate_limits(&mut self, used: f64) -> Vec<Effect> {
        let update = quota(used, self.now.wall);
        self.feed(Input::Observed(
            1,
            Observation::RateLimits(Box::new(update)),
        ))
    }

    pub(super) fn command(&mut self, command: ProxyCommand) -> Vec<Effect> {
        self.feed(Input::Command(command))
    }

    /// The switch task's report: it went to `to` (or failed as `result` says).
    pub(super) fn finished(
        &mut self,
        plan: &SwitchPlan,
        result: Result<(AccountId, Option<AccountLimits>), SwitchFailure>,
        started: Instant,
    ) -> Vec<Effect> {
        self.feed(Input::SwitchFinished(SwitchOutcome {
            pending_reason: plan.pending.reason.clone(),
            mode: plan.pending.mode,
            from: plan.from.clone(),
            fetched: Vec::new(),
            result,
            started,
        }))
    }
}

/// The switch a decision started, if any.
pub(super) fn started(effects: Vec<Effect>) -> Option<SwitchPlan> {
    effects.into_iter().find_map(|e| match e {
        Effect::StartSwitch(plan) => Some(*plan),
        _ => None,
    })
}

pub(super) fn events(effects: &[Effect]) -> Vec<&ProxyEvent> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Emit(event) => Some(event),
            _ => None,
        })
        .collect()
}

pub(super) fn count(effects: &[Effect], what: fn(&Effect) -> bool) -> usize {
    effects.iter().filter(|e| what(e)).count()
}

pub(super) fn reply(effects: &[Effect]) -> Result<String, String> {
    effects
        .iter()
        .find_map(|e| match e {
            Effect::Reply(answer) => Some(answer.clone()),
            _ => None,
        })
        .expect("the command is answered")
}

pub(super) fn guard_commands(effects: &[Effect]) -> Vec<(u64, GuardCommand)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Guard { conn, command } => Some((*conn, *command)),
            _ => None,
        })
        .collect()
}

pub(super) fn is_start(e: &Effect) -> bool {
    matches!(e, Effect::StartSwitch(_))
}

pub(super) fn is_deferred(e: &Effect) -> bool {
    matches!(e, Effect::Emit(ProxyEvent::SwitchDeferred { .. }))
}

pub(super) fn is_limit_hit(e: &Effect) -> bool {
    matches!(e, Effect::Emit(ProxyEvent::UsageLimitHit { .. }))
}

#[test]
fn a_refresh_request_is_answered_for_the_active_seat() {
    let accounts = [
        seat("ann", "team", "user-ann"),
        seat("ben", "team", "user-ben"),
        seat("ben-solo", "solo", "user-ben"),
        seat("cat", "other", "user-cat"),
    ];
    let target = |active: Option<&str>, previous| {
        let active = active.map(AccountId::from);
        refresh_target(&accounts, active.as_ref(), previous).map(|a| &a.id)
    };
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
    let now = Instant::now();
    let mut running = HashMap::new();
    let mut requested = HashMap::new();
    assert!(!busy(&running, &mut requested, now));

    requested.insert((1, "t1".to_owned()), now);
    assert!(
        busy(&running, &mut requested, now),
        "asked for, not started yet"
    );

    running.insert("u1".to_owned(), (1, None));
    requested.clear();
    assert!(busy(&running, &mut requested, now), "running");

    running.clear();
    requested.insert((1, "t2".to_owned()), now);
    let later = now + REQUESTED_TURN_TIMEOUT + Duration::from_secs(1);
    assert!(
        !busy(&running, &mut requested, later),
        "a request that never became a turn stops counting"
    );
    assert!(requested.is_empty(), "and is forgotten");
}

#[test]
fn a_limit_during_a_turn_defers_the_switch_to_the_turn_boundary_and_says_so_once() {
    let mut sim = Sim::new();
    sim.connect(1);
    sim.turn_started(1, "u1");
    let fx = sim.rate_limits(100.0);
    assert_eq!(count(&fx, is_start), 0, "a login now would kill the turn");
    assert_eq!(count(&fx, is_deferred), 1);
    let fx = sim.limit_error(1, "u1");
    assert_eq!(
        count(&fx, is_start) + count(&fx, is_deferred),
        0,
        "said once"
    );

    let plan = started(sim.turn_completed(1, "u1")).expect("the switch goes at the boundary");
    assert_eq!(plan.pending.target, Target::Best);
    assert_eq!(plan.pending.mode, Mode::Automatic);
    assert_eq!(plan.from.as_deref(), Some("alice"));
}

#[test]
fn a_requested_turn_defers_a_manual_switch_until_it_starts_and_ends_or_goes_stale() {
    let mut sim = Sim::new();
    sim.connect(1);
    let fx = sim.feed(Input::Guard(GuardEvent::TurnRequested {
        conn: 1,
        thread_id: "thread-u1".into(),
        purpose: TurnPurpose::User,
        held: false,
    }));
    assert!(matches!(fx[..], [Effect::RecheckAfter(d)] if d == REQUESTED_TURN_TIMEOUT));
    let fx = sim.command(ProxyCommand::SwitchTo {
        account_id: "bob".into(),
    });
    assert_eq!(
        reply(&fx).unwrap(),
        "switching to bob when the running turn ends"
    );
    assert_eq!(count(&fx, is_start), 0);
    // The recheck before the timeout still waits; after it, the request no longer counts.
    sim.advance(REQUESTED_TURN_TIMEOUT - Duration::from_secs(1));
    assert!(started(sim.feed(Input::Recheck)).is_none());
    sim.advance(Duration::from_secs(2));
    let plan = started(sim.feed(Input::Recheck)).expect("a request that never started");
    assert_eq!(plan.pending.target, Target::Account("bob".into()));
}

#[test]
fn a_manual_request_is_not_overridden_by_an_automatic_trigger() {
    let mut sim = Sim::new();
    sim.connect(1);
    sim.turn_started(1, "u1");
    sim.command(ProxyCommand::SwitchTo {
        account_id: "carol".into(),
    });
    sim.rate_limits(100.0);
    sim.limit_error(1, "u1");
    let plan = started(sim.turn_completed(1, "u1")).unwrap();
    assert_eq!(plan.pending.target, Target::Account("carol".into()));
    assert_eq!(plan.pending.mode, Mode::Manual);
    assert_eq!(plan.pending.reason, SwitchReason::Manual);
}

#[test]
fn a_manual_request_replaces_a_pending_automatic_switch() {
    let mut sim = Sim::new();
    sim.connect(1);
    sim.turn_started(1, "u1");
    sim.rate_limits(100.0);
    let fx = sim.command(ProxyCommand::SwitchBest);
    assert_eq!(
        reply(&fx).unwrap(),
        "switching to the best other account when the running turn ends"
    );
    let plan = started(sim.turn_completed(1, "u1")).unwrap();
    assert_eq!(plan.pending.mode, Mode::Manual);
}

#[test]
fn one_limit_is_reported_once_and_starts_one_switch() {
    let mut sim = Sim::new();
    sim.connect(1);
    sim.turn_started(1, "u1");
    let mut all = sim.limit_error(1, "u1");
    all.extend(sim.limit_error(1, "u1"));
    all.extend(sim.feed(Input::Guard(GuardEvent::RerunWanted {
        conn: 1,
        thread_id: "thread-u1".into(),
        turn_id: "u1".into(),
        at: sim.now.mono,
    })));
    all.extend(sim.turn_completed(1, "u1"));
    assert_eq!(count(&all, is_limit_hit), 1, "one limit, one report");
    assert_eq!(count(&all, is_start), 1, "one limit, one switch");
    // While that switch runs, the title thread's duplicate error arms nothing more.
    let mut more = sim.limit_error(1, "title");
    more.extend(sim.rate_limits(100.0));
    assert_eq!(count(&more, is_start) + count(&more, is_limit_hit), 0);
    assert!(sim.state.pending.is_none());
}

#[test]
fn the_limit_error_makes_an_armed_automatic_switch_a_usage_limit_switch() {
    let mut sim = Sim::new();
    sim.connect(1);
    sim.turn_started(1, "u1");
    sim.rate_limits(96.0);
    assert!(matches!(
        sim.state.pending.as_ref().unwrap().reason,
        SwitchReason::SoftThreshold { .. }
    ));
    sim.limit_error(1, "u1");
    let plan = started(sim.turn_completed(1, "u1")).unwrap();
    assert_eq!(plan.pending.reason, SwitchReason::UsageLimit);
}

#[test]
fn a_usage_read_sent_before_a_limit_cannot_undo_it() {
    let mut sim = Sim::new();
    sim.connect(1);
    sim.turn_started(1, "u1");
    let read_sent = sim.now.mono;
    sim.advance(Duration::from_millis(500));
    sim.limit_error(1, "u1");
    sim.advance(Duration::from_millis(500));
    // The slow read answers with the numbers of before the limit.
    let fx = sim.feed(Input::UsageFetched {
        started: read_sent,
        results: vec![("alice".into(), Ok(limits(40.0, sim.now.wall)))],
    });
    assert!(
        events(&fx)
            .iter()
            .all(|e| !matches!(e, ProxyEvent::RateLimitsUpdated { .. })),
        "older news is not shown"
    );
    assert!(sim.state.quota(&"alice".into()).unwrap().is_exhausted());
    assert!(sim.state.limit_reported.contains("alice"));
}

#[test]
fn a_usage_read_sent_after_a_limit_lifts_it() {
    let mut sim = Sim::new();
    sim.connect(1);
    sim.limit_error(1, "u1");
    sim.advance(Duration::from_secs(1));
    let read_sent = sim.now.mono;
    sim.advance(Duration::from_secs(1));
    let fx = sim.feed(Input::UsageFetched {
        started: read_sent,
        results: vec![("alice".into(), Ok(limits(40.0, sim.now.wall)))],
    });
    assert!(events(&fx).iter().any(|e| matches!(
        e,
        ProxyEvent::RateLimitsUpdated { account, snapshot, .. }
            if account.id == "alice" && !snapshot.is_exhausted()
    )));
    assert!(!sim.state.limit_reported.contains("alice"));
    // So a later limit of alice is reported again.
    let fx = sim.limit_error(1, "u2");
    assert_eq!(count(&fx, is_limit_hit), 1);
}

#[test]
fn an_error_of_an_account_already_left_is_ignored() {
    let mut sim = Sim::new();
    sim.connect(1);
    // The title thread's turn started on alice and outlives the switch to bob.
    sim.turn_started(1, "title");
    sim.feed(Input::SwitchFinished(SwitchOutcome {
        pending_reason: SwitchReason::UsageLimit,
        mode: Mode::Automatic,
        from: Some("alice".into()),
        fetched: Vec::new(),
        result: Ok(("bob".into(), None)),
        started: sim.now.mono,
    }));
    let fx = sim.limit_error(1, "title");
    assert!(fx.is_empty(), "{fx:?}");
    assert!(sim.state.pending.is_none());
    assert!(!sim.state.limit_reported.contains("bob"));
}

#[test]
fn clients_wait_at_the_gate_until_the_restarted_app_server_is_logged_in() {
    let mut sim = Sim::new();
    sim.connect(1);
    let fx = sim.feed(Input::AppServerExited {
        exit: AppServerExit {
            status: "signal 9".into(),
            stderr_tail: String::new(),
        },
        restarting: true,
    });
    assert!(matches!(fx[0], Effect::SetReady(false)));
    assert!(events(&fx).iter().any(|e| matches!(
        e,
        ProxyEvent::Connection {
            state: ConnectionState::Starting,
            ..
        }
    )));
    // A switch asked for meanwhile waits for the login.
    let fx = sim.command(ProxyCommand::SwitchBest);
    assert!(reply(&fx).is_ok());
    assert_eq!(count(&fx, is_start), 0);

    let fx = sim.feed(Input::AppServerRestarted);
    assert!(matches!(&fx[..], [Effect::Relogin(a)] if a.id == "alice"));
    let fx = sim.feed(Input::Relogged {
        account: "alice".into(),
        result: Ok(None),
    });
    let ready = fx
        .iter()
        .position(|e| matches!(e, Effect::SetReady(true)))
        .expect("the gate opens");
    let start = fx.iter().position(is_start).expect("then the switch goes");
    assert!(ready < start);
}

#[test]
fn a_failed_relogin_ends_the_session_with_the_gate_closed() {
    let mut sim = Sim::new();
    sim.feed(Input::AppServerExited {
        exit: AppServerExit {
            status: "exit 1".into(),
            stderr_tail: String::new(),
        },
        restarting: true,
    });
    sim.feed(Input::AppServerRestarted);
    let fx = sim.feed(Input::Relogged {
        account: "alice".into(),
        result: Err("token rejected".into()),
    });
    assert_eq!(count(&fx, |e| matches!(e, Effect::SetReady(true))), 0);
    assert!(events(&fx).iter().any(|e| matches!(
        e,
        ProxyEvent::AppServerExited { status, restarting: false, .. }
            if status.contains("logging in alice failed: token rejected")
    )));
    // Nothing switches on a dead app-server.
    let fx = sim.command(ProxyCommand::SwitchBest);
    assert_eq!(count(&fx, is_start), 0);
}

#[test]
fn after_none_available_soft_thresholds_back_off_but_hard_limits_do_not() {
    let mut sim = Sim::new();
    sim.connect(1);
    let plan = started(sim.rate_limits(100.0)).unwrap();
    let fx = sim.finished(
        &plan,
        Err(SwitchFailure::NoneAvailable {
            earliest_reset: Some(sim.now.wall.timestamp() + 600),
        }),
        sim.now.mono,
    );
    assert!(events(&fx).iter().any(|e| matches!(
        e,
        ProxyEvent::NoAccountAvailable {
            earliest_reset: Some(_),
            ..
        }
    )));
    sim.advance(Duration::from_secs(10));
    assert!(
        started(sim.rate_limits(96.0)).is_none(),
        "soft: backing off"
    );
    let plan = started(sim.rate_limits(100.0)).expect("hard: not held back");
    sim.finished(
        &plan,
        Err(SwitchFailure::NoneAvailable {
            earliest_reset: None,
        }),
        sim.now.mono,
    );
    sim.advance(super::limits::NONE_AVAILABLE_BACKOFF + Duration::from_secs(1));
    assert!(
        started(sim.rate_limits(96.0)).is_some(),
        "the backoff is over"
    );
}

#[test]
fn a_switch_that_fails_keeps_the_old_account_and_shows_the_real_error() {
    let mut sim = Sim::new();
    sim.connect(1);
    sim.connect(2);
    sim.turn_started(1, "u1");
    sim.feed(Input::Guard(GuardEvent::RerunWanted {
        conn: 1,
        thread_id: "thread-u1".into(),
        turn_id: "u1".into(),
        at: sim.now.mono,
    }));
    let plan = started(sim.turn_completed(1, "u1")).unwrap();
    let fx = sim.finished(
        &plan,
        Err(SwitchFailure::Failed {
            to: "bob".into(),
            error: "login refused".into(),
        }),
        sim.now.mono,
    );
    assert_eq!(sim.state.active.as_deref(), Some("alice"));
    assert!(!sim.state.switching);
    assert_eq!(
        count(&fx, |e| matches!(
            e,
            Effect::AppendHistory(_) | Effect::MarkActive(_)
        )),
        0
    );
    assert!(events(&fx).iter().any(|e| matches!(
        e,
        ProxyEvent::SwitchFailed { to, error, .. } if to.id == "bob" && error == "login refused"
    )));
    let guards = guard_commands(&fx);
    assert!(guards.contains(&(1, GuardCommand::GiveUp)), "{guards:?}");
    assert!(guards.contains(&(1, GuardCommand::SwitchOver)));
    assert!(guards.contains(&(2, GuardCommand::SwitchOver)));
    assert!(
        sim.state.switched_away.is_empty(),
        "no cooldown for a switch that did not happen"
    );
    assert_eq!(
        count(&fx, |e| matches!(e, Effect::ListAccounts)),
        1,
        "the store may say the account needs a login now"
    );
}

#[test]
fn a_failed_usage_read_lists_the_store_again() {
    let mut sim = Sim::new();
    let started = sim.now.mono;
    let fx = sim.feed(Input::UsageFetched {
        started,
        results: vec![("bob".into(), Ok(limits(30.0, sim.now.wall)))],
    });
    assert_eq!(count(&fx, |e| matches!(e, Effect::ListAccounts)), 0);
    let fx = sim.feed(Input::UsageFetched {
        started,
        results: vec![("carol".into(), Err("refresh token rejected".into()))],
    });
    assert_eq!(
        count(&fx, |e| matches!(e, Effect::ListAccounts)),
        1,
        "{fx:?}"
    );
}

#[test]
fn an_automatic_switch_records_history_marks_the_store_and_cools_the_old_account_down() {
    let mut sim = Sim::new();
    sim.connect(1);
    let switch_started = sim.now.mono;
    let plan = started(sim.rate_limits(100.0)).unwrap();
    let fx_start_flags = sim.state.switching;
    assert!(fx_start_flags);
    sim.advance(Duration::from_millis(1234));
    let fx = sim.finished(
        &plan,
        Ok(("bob".into(), Some(limits(5.0, sim.now.wall)))),
        switch_started,
    );
    assert_eq!(sim.state.active.as_deref(), Some("bob"));
    assert_eq!(
        sim.state.switched_away.get("alice"),
        Some(&sim.now.wall.timestamp())
    );
    let record = fx
        .iter()
        .find_map(|e| match e {
            Effect::AppendHistory(r) => Some(r),
            _ => None,
        })
        .expect("the switch is recorded");
    assert_eq!(record.from.as_ref().unwrap().id, "alice");
    assert_eq!(record.to.id, "bob");
    assert_eq!(record.elapsed_ms, 1234);
    assert_eq!(
        record.from_usage.as_ref().unwrap().five_hour_percent,
        Some(100.0)
    );
    assert_eq!(
        record.to_usage.as_ref().unwrap().five_hour_percent,
        Some(5.0)
    );
    assert!(
        fx.iter()
            .any(|e| matches!(e, Effect::MarkActive(id) if id == "bob"))
    );
    assert!(events(&fx).iter().any(|e| matches!(
        e,
        ProxyEvent::ActiveAccount { account, .. } if account.id == "bob"
    )));
}

#[test]
fn a_manual_switch_puts_nobody_on_cooldown() {
    let mut sim = Sim::new();
    let fx = sim.command(ProxyCommand::SwitchTo {
        account_id: "bob".into(),
    });
    assert_eq!(reply(&fx).unwrap(), "switching to bob");
    let plan = started(fx).unwrap();
    sim.finished(&plan, Ok(("bob".into(), None)), sim.now.mono);
    assert_eq!(sim.state.active.as_deref(), Some("bob"));
    assert!(sim.state.switched_away.is_empty());
}

#[test]
fn a_withheld_turn_reruns_on_the_new_account_and_the_gap_is_reported() {
    let mut sim = Sim::new();
    sim.connect(1);
    sim.turn_started(1, "u1");
    let hit = sim.now.mono;
    sim.feed(Input::Guard(GuardEvent::RerunWanted {
        conn: 1,
        thread_id: "thread-u1".into(),
        turn_id: "u1".into(),
        at: hit,
    }));
    let plan = started(sim.turn_completed(1, "u1")).unwrap();
    sim.advance(Duration::from_millis(2500));
    let fx = sim.finished(&plan, Ok(("bob".into(), None)), hit);
    assert!(guard_commands(&fx).contains(&(1, GuardCommand::Rerun)));
    let fx = sim.feed(Input::Guard(GuardEvent::Rerunning {
        conn: 1,
        turn_id: "proxy-1".into(),
    }));
    assert!(matches!(
        events(&fx)[..],
        [
            ProxyEvent::Notice { message, .. },
            ProxyEvent::TurnRerun { from: Some(from), to, waited_ms: 2500, .. },
        ] if message == "limit hit on alice — continued on bob, 2.5 s"
            && from.name == "alice" && to.name == "bob"
    ));
}

#[test]
fn a_rerun_of_a_connection_that_left_is_not_started() {
    let mut sim = Sim::new();
    sim.connect(1);
    sim.feed(Input::Guard(GuardEvent::RerunWanted {
        conn: 1,
        thread_id: "thread-u1".into(),
        turn_id: "u1".into(),
        at: sim.now.mono,
    }));
    let plan = sim.state.switching;
    assert!(plan, "the re-run's limit started a switch");
    sim.feed(Input::Disconnected(1));
    let outcome = SwitchOutcome {
        pending_reason: SwitchReason::UsageLimit,
        mode: Mode::Automatic,
        from: Some("alice".into()),
        fetched: Vec::new(),
        result: Ok(("bob".into(), None)),
        started: sim.now.mono,
    };
    let fx = sim.feed(Input::SwitchFinished(outcome));
    assert!(guard_commands(&fx).is_empty(), "{:?}", guard_commands(&fx));
}

#[test]
fn manual_switches_to_accounts_that_cannot_take_over_are_refused_at_once() {
    let mut sim = Sim::new();
    let refused = |sim: &mut Sim, id: &str| {
        let fx = sim.command(ProxyCommand::SwitchTo {
            account_id: id.into(),
        });
        assert_eq!(count(&fx, is_start), 0);
        reply(&fx).unwrap_err()
    };
    assert_eq!(
        refused(&mut sim, "nobody"),
        "no stored account has id nobody"
    );
    assert!(
        refused(&mut sim, "alice").contains("already"),
        "the active account"
    );
    assert_eq!(
        refused(&mut sim, "key"),
        "key is not a ChatGPT login; only ChatGPT accounts can be switched to",
        "an API-key account"
    );
    sim.state.accounts[1].needs_login = true;
    assert_eq!(
        refused(&mut sim, "bob"),
        "bob needs a new login (cs-tui accounts add bob)",
        "an account whose refresh token was rejected"
    );
    assert!(sim.state.pending.is_none());
}

#[test]
fn a_request_during_a_switch_waits_for_it_then_runs() {
    let mut sim = Sim::new();
    let plan = started(sim.rate_limits(100.0)).unwrap();
    let fx = sim.command(ProxyCommand::SwitchTo {
        account_id: "carol".into(),
    });
    assert_eq!(count(&fx, is_start), 0, "one switch at a time");
    assert_eq!(
        reply(&fx).unwrap(),
        "switching to carol once the switch under way ends"
    );
    // A limit seen meanwhile does not replace the user's request.
    sim.rate_limits(100.0);
    let next = started(sim.finished(&plan, Ok(("bob".into(), None)), sim.now.mono))
        .expect("the request runs once the first switch ends");
    assert_eq!(next.pending.target, Target::Account("carol".into()));
    assert_eq!(next.pending.mode, Mode::Manual);
}

#[test]
fn a_request_during_a_switch_for_the_account_it_reaches_is_met_by_it() {
    let mut sim = Sim::new();
    let plan = started(sim.rate_limits(100.0)).unwrap();
    sim.command(ProxyCommand::SwitchTo {
        account_id: "bob".into(),
    });
    let next = started(sim.finished(&plan, Ok(("bob".into(), None)), sim.now.mono));
    assert!(next.is_none(), "bob is active already");
    assert!(sim.state.pending.is_none());
}

#[test]
fn a_token_refresh_is_answered_for_the_active_seat_and_other_requests_are_refused() {
    let mut sim = Sim::new();
    // Another seat of alice's workspace, stored first; alice's user is not known.
    sim.state
        .accounts
        .insert(0, seat("alice-2", "ws-a", "u-other"));
    sim.state.accounts[1].user_id = None;
    let fx = sim.feed(Input::ServerRequest {
        id: json!(7),
        method: method::TOKENS_REFRESH.into(),
        params: json!({"previousAccountId": "ws-a", "reason": "unauthorized"}),
    });
    assert!(matches!(
        &fx[..],
        [Effect::AnswerRefresh { id, account: Some(a) }] if *id == json!(7) && a.id == "alice"
    ));
    let fx = sim.feed(Input::ServerRequest {
        id: json!(8),
        method: method::TOKENS_REFRESH.into(),
        params: json!({"previousAccountId": "ws-unknown"}),
    });
    assert!(matches!(
        &fx[..],
        [Effect::AnswerRefresh { account: None, .. }]
    ));
    // Params that do not parse are taken as naming no workspace: the active account.
    let fx = sim.feed(Input::ServerRequest {
        id: json!(10),
        method: method::TOKENS_REFRESH.into(),
        params: json!("garbage"),
    });
    assert!(matches!(
        &fx[..],
        [Effect::AnswerRefresh { account: Some(a), .. }] if a.id == "alice"
    ));
    let fx = sim.feed(Input::ServerRequest {
        id: json!(9),
        method: "item/tool/call".into(),
        params: json!({}),
    });
    assert!(
        matches!(&fx[..], [Effect::RespondError { error, .. }] if error.contains("item/tool/call"))
    );
}

#[test]
fn a_reset_credit_is_redeemed_only_for_the_active_account_and_not_mid_switch() {
    let mut sim = Sim::new();
    let redeem = |sim: &mut Sim, id: &str| {
        sim.command(ProxyCommand::ConsumeResetCredit {
            account_id: id.into(),
            idempotency_key: "k1".into(),
        })
    };
    let fx = redeem(&mut sim, "bob");
    assert_eq!(
        reply(&fx).unwrap_err(),
        crate::proxy::events::NOT_THE_ACTIVE_ACCOUNT
    );
    let fx = redeem(&mut sim, "alice");
    assert!(matches!(
        &fx[..],
        [Effect::RedeemResetCredit { account, idempotency_key }] if account == "alice" && idempotency_key == "k1"
    ));
    started(sim.rate_limits(100.0)).unwrap();
    let fx = redeem(&mut sim, "alice");
    assert!(reply(&fx).unwrap_err().contains("changing accounts"));
}

#[test]
fn the_usage_poll_reads_every_chatgpt_account_at_start_and_only_stale_ones_later() {
    let mut sim = Sim::new();
    let fetches = |fx: &[Effect]| -> Vec<Vec<AccountId>> {
        fx.iter()
            .filter_map(|e| match e {
                Effect::FetchUsage { ids, .. } => Some(ids.clone()),
                _ => None,
            })
            .collect()
    };
    let fx = sim.feed(Input::Start);
    assert_eq!(fetches(&fx), vec![vec!["alice", "bob", "carol"]]);
    assert!(fx.iter().any(|e| matches!(e, Effect::ListAccounts)));
    let sent = sim.now.mono;
    sim.feed(Input::UsageFetched {
        started: sent,
        results: vec![("bob".into(), Ok(limits(30.0, sim.now.wall)))],
    });
    sim.advance(Duration::from_secs(60));
    let fx = sim.feed(Input::PollTick);
    assert_eq!(
        fetches(&fx),
        vec![vec!["alice", "carol"]],
        "bob was read a minute ago"
    );
    sim.advance(Duration::from_secs(
        PolicyConfig::default().usage_stale_secs as u64,
    ));
    let fx = sim.feed(Input::PollTick);
    assert_eq!(fetches(&fx), vec![vec!["alice", "bob", "carol"]]);
}

#[test]
fn a_poll_interval_shorter_than_the_staleness_limit_reads_every_account_each_tick() {
    let mut sim = Sim::new();
    sim.state.config.usage_poll = Duration::from_secs(2);
    let fetched = |fx: &[Effect]| -> Vec<Vec<AccountId>> {
        fx.iter()
            .filter_map(|e| match e {
                Effect::FetchUsage { ids, .. } => Some(ids.clone()),
                _ => None,
            })
            .collect()
    };
    let fx = sim.feed(Input::Start);
    let started = sim.now.mono;
    let results = fetched(&fx)[0]
        .iter()
        .map(|id| (id.clone(), Ok(limits(30.0, sim.now.wall))))
        .collect();
    sim.feed(Input::UsageFetched { started, results });
    // A tick that fires a little early still reads: the timer promises one read per
    // interval, not one per `usage_stale_secs`.
    sim.advance(Duration::from_millis(1_900));
    let fx = sim.feed(Input::PollTick);
    assert_eq!(fetched(&fx), vec![vec!["alice", "bob", "carol"]]);
    // Right after a read, a tick reads nothing.
    let fx = sim.feed(Input::PollTick);
    assert!(fetched(&fx).is_empty(), "{fx:?}");
}

#[test]
fn an_account_added_to_the_store_is_read_at_once() {
    let mut sim = Sim::new();
    let mut accounts = sim.state.accounts.clone();
    accounts.push(seat("dave", "ws-d", "u-dave"));
    accounts.push(api_key("key-2"));
    let fx = sim.listed(accounts);
    let fetched: Vec<_> = fx
        .iter()
        .filter_map(|e| match e {
            Effect::FetchUsage { ids, .. } => Some(ids.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(fetched, vec![vec!["dave".to_owned()]]);
    assert_eq!(sim.state.accounts.len(), 6);
}

#[test]
fn a_listing_that_changes_what_the_panel_shows_is_said_once() {
    let mut sim = Sim::new();
    let listed = |fx: &[Effect]| -> Vec<Vec<crate::proxy::events::AccountSummary>> {
        events(fx)
            .into_iter()
            .filter_map(|e| match e {
                ProxyEvent::AccountsListed { accounts, .. } => Some(accounts.clone()),
                _ => None,
            })
            .collect()
    };
    // The same accounts: nothing to say.
    let same = sim.state.accounts.clone();
    let fx = sim.listed(same.clone());
    assert!(listed(&fx).is_empty(), "{fx:?}");
    // Renamed, disabled, one removed, one added: one event with the store's order.
    let mut changed = same.clone();
    changed[0].name = "alice-renamed".into();
    changed[0].email = Some("alice@example.com".into());
    changed[1].enabled = false;
    let removed = changed.remove(2);
    changed.push(seat("dave", "ws-d", "u-dave"));
    let fx = sim.listed(changed.clone());
    let lists = listed(&fx);
    assert_eq!(lists.len(), 1, "{fx:?}");
    let expected: Vec<_> = changed.iter().map(DirAccount::summary).collect();
    assert_eq!(lists[0], expected);
    assert!(!lists[0].iter().any(|a| a.id == removed.id));
    // Said before the new account's read goes out.
    let emitted = fx
        .iter()
        .position(|e| matches!(e, Effect::Emit(ProxyEvent::AccountsListed { .. })));
    let read = fx
        .iter()
        .position(|e| matches!(e, Effect::FetchUsage { .. }));
    assert!(emitted < read, "{fx:?}");
    // Listed again unchanged: nothing.
    let fx = sim.listed(changed.clone());
    assert!(listed(&fx).is_empty(), "{fx:?}");
    // A change the panel does not show (the user id) says nothing either.
    changed[0].user_id = Some("u-other".into());
    let fx = sim.listed(changed.clone());
    assert!(listed(&fx).is_empty(), "{fx:?}");
    // Needing a login again, and the order: each said.
    changed[0].needs_login = true;
    let fx = sim.listed(changed.clone());
    assert_eq!(listed(&fx).len(), 1);
    changed.swap(0, 1);
    let fx = sim.listed(changed.clone());
    assert_eq!(listed(&fx).len(), 1);
}

#[test]
fn the_listing_event_carries_no_secret() {
    let event = ProxyEvent::AccountsListed {
        accounts: vec![seat("alice", "ws-a", "u-alice").summary()],
        at: DateTime::from_timestamp(0, 0).unwrap(),
    };
    let json = serde_json::to_value(&event).unwrap();
    assert_eq!(json["event"], "accounts_listed");
    let fields: Vec<&str> = json["accounts"][0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(fields, ["enabled", "id", "name", "needs_login"]);
    let debug = format!("{event:?}");
    for secret in ["token", "ws-a", "u-alice"] {
        assert!(!debug.contains(secret), "{debug}");
        assert!(!json.to_string().contains(secret), "{json}");
    }
}

#[test]
fn another_familys_update_reads_the_quota_once_and_switches_on_nothing() {
    let mut sim = Sim::new();
    let mut spark = quota(100.0, sim.now.wall);
    spark.limit_id = Some("codex_spark".into());
    let update = |sim: &mut Sim| {
        sim.feed(Input::Observed(
            1,
            Observation::RateLimits(Box::new(spark.clone())),
        ))
    };
    let fx = update(&mut sim);
    assert_eq!(
        count(&fx, is_start),
        0,
        "another family is shown, never switched on"
    );
    assert!(fx.iter().any(|e| matches!(
        e,
        Effect::FetchUsage { ids, .. } if ids == &["alice".to_owned()]
    )));
    let fx = update(&mut sim);
    assert_eq!(
        count(&fx, |e| matches!(e, Effect::FetchUsage { .. })),
        0,
        "one read at a time"
    );
    let sent = sim.now.mono;
    sim.feed(Input::UsageFetched {
        started: sent,
        results: vec![("alice".into(), Ok(limits(30.0, sim.now.wall)))],
    });
    let fx = update(&mut sim);
    assert_eq!(count(&fx, |e| matches!(e, Effect::FetchUsage { .. })), 1);
}

#[test]
fn a_read_of_the_active_account_at_its_limit_arms_a_switch() {
    let mut sim = Sim::new();
    let sent = sim.now.mono;
    sim.advance(Duration::from_secs(1));
    let fx = sim.feed(Input::UsageFetched {
        started: sent,
        results: vec![("alice".into(), Ok(limits(100.0, sim.now.wall)))],
    });
    let plan = started(fx).expect("a switch");
    assert!(matches!(
        plan.pending.reason,
        SwitchReason::HardLimit { .. }
    ));
}

#[test]
fn the_switch_plan_names_only_recently_read_accounts_as_fresh() {
    let mut sim = Sim::new();
    let t0 = sim.now.mono;
    sim.feed(Input::UsageFetched {
        started: t0,
        results: vec![("bob".into(), Ok(limits(30.0, sim.now.wall)))],
    });
    sim.advance(Duration::from_secs(
        PolicyConfig::default().usage_stale_secs as u64 - 1,
    ));
    sim.feed(Input::UsageFetched {
        started: sim.now.mono,
        results: vec![("carol".into(), Ok(limits(30.0, sim.now.wall)))],
    });
    sim.advance(Duration::from_secs(2));
    let plan = started(sim.command(ProxyCommand::SwitchBest)).unwrap();
    assert!(plan.fresh.contains("carol"));
    assert!(!plan.fresh.contains("bob"), "read too long ago");
}

#[test]
fn a_disconnect_forgets_its_turns_and_lets_the_deferred_switch_go() {
    let mut sim = Sim::new();
    sim.connect(1);
    sim.connect(2);
    sim.turn_started(1, "u1");
    assert!(started(sim.command(ProxyCommand::SwitchBest)).is_none());
    let fx = sim.feed(Input::Disconnected(1));
    assert!(events(&fx).iter().any(|e| matches!(
        e,
        ProxyEvent::Connection {
            state: ConnectionState::Ready { clients: 1 },
            ..
        }
    )));
    assert!(
        events(&fx)
            .iter()
            .any(|e| matches!(e, ProxyEvent::TurnsRunning { running: 0, .. }))
    );
    assert!(started(fx).is_some());
}

#[test]
fn guards_hear_whether_another_account_could_take_over() {
    let mut sim = Sim::new();
    let alternative = |fx: &[Effect]| {
        fx.iter().rev().find_map(|e| match e {
            Effect::SetAlternative(a) => Some(*a),
            _ => None,
        })
    };
    let t0 = sim.now.mono;
    let fx = sim.feed(Input::UsageFetched {
        started: t0,
        results: vec![
            ("bob".into(), Ok(limits(100.0, sim.now.wall))),
            ("carol".into(), Ok(limits(100.0, sim.now.wall))),
        ],
    });
    assert_eq!(
        alternative(&fx),
        Some(false),
        "both others are at their limit"
    );
    let fx = sim.feed(Input::UsageFetched {
        started: t0,
        results: vec![("carol".into(), Ok(limits(10.0, sim.now.wall)))],
    });
    assert_eq!(alternative(&fx), Some(true));
}

fn ledger_lines(effects: &[Effect]) -> Vec<&crate::proxy::ledger::TurnRecord> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::AppendLedger(record) => Some(&**record),
            _ => None,
        })
        .collect()
}

fn tokens(sim: &mut Sim, conn: u64, turn: &str, last: (u64, u64, u64), total: u64) {
    use crate::proxy::rpc::TokenBreakdown;
    let effects = sim.feed(Input::Observed(
        conn,
        Observation::TokenUsage {
            thread_id: format!("thread-{turn}"),
            turn_id: turn.into(),
            last: TokenBreakdown {
                total_tokens: last.0 + last.2,
                input_tokens: last.0,
                cached_input_tokens: last.1,
                output_tokens: last.2,
            },
            total: TokenBreakdown {
                total_tokens: total,
                ..TokenBreakdown::default()
            },
        },
    ));
    assert!(ledger_lines(&effects).is_empty());
}

/// A `turn/start` with a `model` override is announced by `thread/settings/updated` before
/// its `turn/started` (measured on 0.169.0): that turn and the ones after it are on the new
/// model, the turns before keep theirs, and a `model/rerouted` names a turn's model.
#[test]
fn each_turn_is_recorded_with_the_model_it_ran_on() {
    let mut sim = Sim::new();
    sim.connect(1);
    let observe = |sim: &mut Sim, o: Observation| sim.feed(Input::Observed(1, o));
    let thread = || "th".to_owned();
    let start = |sim: &mut Sim, turn: &str| {
        observe(
            sim,
            Observation::TurnStarted {
                thread_id: thread(),
                turn_id: turn.into(),
            },
        )
    };
    let complete = |sim: &mut Sim, turn: &str| -> Option<String> {
        let fx = observe(
            sim,
            Observation::TurnCompleted {
                thread_id: thread(),
                turn_id: turn.into(),
                status: Some("completed".into()),
            },
        );
        let lines = ledger_lines(&fx);
        assert_eq!(lines.len(), 1, "{turn}");
        lines[0].model.clone()
    };
    let settings = |sim: &mut Sim, model: Option<&str>| {
        observe(
            sim,
            Observation::ThreadSettings {
                thread_id: thread(),
                model: model.map(str::to_owned),
            },
        )
    };
    observe(
        &mut sim,
        Observation::ThreadStarted {
            thread_id: thread(),
            model: Some("gpt-5.1-codex".into()),
        },
    );
    start(&mut sim, "u1");
    // The next turn/start overrides the model: announced while u1 still runs.
    settings(&mut sim, Some("gpt-5.1-codex-mini"));
    assert_eq!(complete(&mut sim, "u1").as_deref(), Some("gpt-5.1-codex"));
    start(&mut sim, "u2");
    assert_eq!(
        complete(&mut sim, "u2").as_deref(),
        Some("gpt-5.1-codex-mini")
    );
    // The override holds for the turns after; settings without a model change nothing.
    settings(&mut sim, None);
    start(&mut sim, "u3");
    assert_eq!(
        complete(&mut sim, "u3").as_deref(),
        Some("gpt-5.1-codex-mini")
    );
    // The backend reroutes a turn: that turn only.
    start(&mut sim, "u4");
    observe(
        &mut sim,
        Observation::ModelRerouted {
            thread_id: thread(),
            turn_id: "u4".into(),
            model: "gpt-5.1".into(),
        },
    );
    assert_eq!(complete(&mut sim, "u4").as_deref(), Some("gpt-5.1"));
    start(&mut sim, "u5");
    assert_eq!(
        complete(&mut sim, "u5").as_deref(),
        Some("gpt-5.1-codex-mini")
    );
    // Another connection's settings are its own.
    sim.connect(2);
    sim.feed(Input::Observed(
        2,
        Observation::ThreadSettings {
            thread_id: thread(),
            model: Some("other".into()),
        },
    ));
    start(&mut sim, "u6");
    assert_eq!(
        complete(&mut sim, "u6").as_deref(),
        Some("gpt-5.1-codex-mini")
    );
}

#[test]
fn a_turn_gets_one_ledger_line_with_its_account_model_summed_tokens_and_duration() {
    let mut sim = Sim::new();
    sim.connect(1);
    sim.feed(Input::Observed(
        1,
        Observation::ThreadStarted {
            thread_id: "thread-t1".into(),
            model: Some("gpt-5".into()),
        },
    ));
    assert!(ledger_lines(&sim.turn_started(1, "t1")).is_empty());
    // Two model responses (a tool call, then the answer), and a repeat of the second.
    tokens(&mut sim, 1, "t1", (100, 10, 5), 105);
    tokens(&mut sim, 1, "t1", (120, 100, 7), 232);
    tokens(&mut sim, 1, "t1", (120, 100, 7), 232);
    sim.advance(Duration::from_millis(1500));
    let fx = sim.turn_completed(1, "t1");
    let lines = ledger_lines(&fx);
    assert_eq!(lines.len(), 1);
    let line = lines[0];
    assert_eq!(line.account.as_ref().unwrap().name, "alice");
    assert_eq!(line.model.as_deref(), Some("gpt-5"));
    assert_eq!(line.session, "s-test");
    assert_eq!(
        (
            line.input_tokens,
            line.cached_input_tokens,
            line.output_tokens
        ),
        (220, 110, 12)
    );
    assert_eq!(line.duration_ms, 1500);
    assert!(!line.rerun);
    assert_eq!(line.status.as_deref(), Some("completed"));
    // Once only.
    assert!(ledger_lines(&sim.turn_completed(1, "t1")).is_empty());
}

#[test]
fn a_rerun_is_marked_whichever_of_its_start_and_the_guards_word_comes_first() {
    for guard_first in [true, false] {
        let mut sim = Sim::new();
        sim.connect(1);
        let rerunning = Input::Guard(GuardEvent::Rerunning {
            conn: 1,
            turn_id: "t2".into(),
        });
        if guard_first {
            sim.feed(rerunning);
            sim.turn_started(1, "t2");
        } else {
            sim.turn_started(1, "t2");
            sim.feed(rerunning);
        }
        let fx = sim.turn_completed(1, "t2");
        assert!(ledger_lines(&fx)[0].rerun, "guard first: {guard_first}");
        // The next turn is not one.
        sim.turn_started(1, "t3");
        assert!(!ledger_lines(&sim.turn_completed(1, "t3"))[0].rerun);
    }
}

#[test]
fn a_turn_cut_off_by_its_client_leaving_is_still_recorded() {
    let mut sim = Sim::new();
    sim.connect(1);
    sim.turn_started(1, "t1");
    tokens(&mut sim, 1, "t1", (50, 0, 5), 55);
    let fx = sim.feed(Input::Disconnected(1));
    let lines = ledger_lines(&fx);
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0].status.as_deref(), Some("disconnected"));
    assert_eq!(lines[0].input_tokens, 50);
}

/// The guard reports the TUI's title request before its turn starts: that turn, and any
/// later one on the same thread of that connection, is a title turn in the ledger; other
/// threads, and the same thread id on another connection, stay the user's. A held title
/// request marks its thread too, and a reconnected client starts afresh.
#[test]
fn turns_on_the_thread_of_a_title_request_are_recorded_as_title_turns() {
    let mut sim = Sim::new();
    sim.connect(1);
    sim.connect(2);
    let request = |sim: &mut Sim, conn: u64, turn: &str, purpose: TurnPurpose, held: bool| {
        sim.feed(Input::Guard(GuardEvent::TurnRequested {
            conn,
            thread_id: format!("thread-{turn}"),
            purpose,
            held,
        }));
    };
    let purpose = |sim: &mut Sim, conn: u64, turn: &str| {
        sim.turn_started(conn, turn);
        let fx = sim.turn_completed(conn, turn);
        let lines = ledger_lines(&fx);
        assert_eq!(lines.len(), 1, "{turn}");
        lines[0].purpose
    };
    request(&mut sim, 1, "u1", TurnPurpose::User, false);
    assert_eq!(purpose(&mut sim, 1, "u1"), TurnPurpose::User);
    request(&mut sim, 1, "title", TurnPurpose::Title, false);
    // While it runs, the session's event counts it as a title turn (the metrics' label).
    sim.turn_started(1, "u2");
    let fx = sim.turn_started(1, "title");
    assert!(
        events(&fx).iter().any(|e| matches!(
            e,
            ProxyEvent::TurnsRunning {
                running: 2,
                title_turns: 1,
                ..
            }
        )),
        "{:?}",
        events(&fx)
    );
    let fx = sim.turn_completed(1, "title");
    assert_eq!(ledger_lines(&fx)[0].purpose, TurnPurpose::Title);
    assert!(events(&fx).iter().any(|e| matches!(
        e,
        ProxyEvent::TurnsRunning {
            running: 1,
            title_turns: 0,
            ..
        }
    )));
    assert_eq!(
        ledger_lines(&sim.turn_completed(1, "u2"))[0].purpose,
        TurnPurpose::User
    );
    // Another turn on the title thread (a later title) is one too, whatever its request said.
    request(&mut sim, 1, "title", TurnPurpose::User, false);
    assert_eq!(purpose(&mut sim, 1, "title"), TurnPurpose::Title);
    // The same thread id on another connection is that connection's own.
    assert_eq!(purpose(&mut sim, 2, "title"), TurnPurpose::User);
    // A title request held for a switch marks its thread all the same.
    request(&mut sim, 2, "held", TurnPurpose::Title, true);
    assert_eq!(purpose(&mut sim, 2, "held"), TurnPurpose::Title);
    // A reconnected client's threads start afresh.
    sim.feed(Input::Disconnected(1));
    sim.connect(1);
    assert_eq!(purpose(&mut sim, 1, "title"), TurnPurpose::User);
}

/// A store entry of a sign-in kind a newer cs-tui wrote: even with a workspace id and the most
/// headroom of all, nothing reads it, chooses it or switches to it.
#[test]
fn an_account_of_an_unsupported_sign_in_kind_is_never_read_chosen_or_switched_to() {
    let mut sim = Sim::new();
    let future = DirAccount {
        unsupported_sign_in: Some("device_code".into()),
        ..seat("future", "ws-f", "u-future")
    };
    assert!(!future.switchable());
    let mut accounts = sim.state.accounts.clone();
    accounts.push(future.clone());
    let fx = sim.listed(accounts);
    assert!(
        !fx.iter().any(|e| matches!(
            e,
            Effect::FetchUsage { ids, .. } if ids.contains(&"future".into())
        )),
        "{fx:?}"
    );
    sim.advance(Duration::from_secs(3600));
    let fx = sim.feed(Input::PollTick);
    assert!(
        fx.iter().any(|e| matches!(
            e,
            Effect::FetchUsage { ids, .. } if ids.contains(&"bob".into())
        )),
        "the tick reads the others: {fx:?}"
    );
    assert!(
        !fx.iter().any(|e| matches!(
            e,
            Effect::FetchUsage { ids, .. } if ids.contains(&"future".into())
        )),
        "{fx:?}"
    );

    // Automatic: alice is at her limit, bob and carol nearly so, the unknown one empty.
    let wall = sim.now.wall;
    let snapshots: HashMap<AccountId, AccountLimits> = [
        ("alice", 100.0),
        ("bob", 90.0),
        ("carol", 90.0),
        ("future", 0.0),
    ]
    .into_iter()
    .map(|(id, used)| (id.into(), limits(used, wall)))
    .collect();
    let candidates: Vec<_> = sim
        .state
        .accounts
        .iter()
        .map(|a| super::state::candidate_of(a, &snapshots, &HashMap::new()))
        .collect();
    let choice = crate::proxy::policy::choose_best(
        &candidates,
        Some(&"alice".into()),
        wall.timestamp(),
        &PolicyConfig::default(),
    );
    assert!(
        matches!(&choice, crate::proxy::policy::Choice::Switch { to } if to.as_str() != "future"),
        "{choice:?}"
    );
    // Only the unknown one has room: none is available.
    let snapshots: HashMap<AccountId, AccountLimits> = [("bob", 100.0), ("carol", 100.0)]
        .into_iter()
        .map(|(id, used)| (id.into(), limits(used, wall)))
        .chain(std::iter::once(("future".into(), limits(0.0, wall))))
        .collect();
    let candidates: Vec<_> = sim
        .state
        .accounts
        .iter()
        .map(|a| super::state::candidate_of(a, &snapshots, &HashMap::new()))
        .collect();
    assert!(matches!(
        crate::proxy::policy::choose_best(
            &candidates,
            Some(&"alice".into()),
            wall.timestamp(),
            &PolicyConfig::default(),
        ),
        crate::proxy::policy::Choice::NoneAvailable { .. }
    ));

    // By hand (`cs-tui switch`, the picker): refused, naming the kind.
    let fx = sim.command(ProxyCommand::SwitchTo {
        account_id: "future".into(),
    });
    assert_eq!(count(&fx, is_start), 0);
    assert_eq!(
        reply(&fx).unwrap_err(),
        "future signs in with `device_code`, a kind written by a newer cs-tui; this cs-tui cannot use it"
    );
    assert!(sim.state.pending.is_none());
}

/// A listing that finishes after a later one is dropped: it would undo what the later one
/// showed.
#[test]
fn a_listing_older_than_one_taken_is_dropped() {
    let mut sim = Sim::new();
    let mut renamed = sim.state.accounts.clone();
    renamed[1].name = "robert".into();
    let fx = sim.feed(Input::AccountsListed {
        number: 2,
        accounts: renamed.clone(),
    });
    assert!(
        fx.iter()
            .any(|e| matches!(e, Effect::Emit(ProxyEvent::AccountsListed { .. })))
    );
    let fx = sim.feed(Input::AccountsListed {
        number: 1,
        accounts: renamed
            .iter()
            .cloned()
            .map(|mut a| {
                a.name = "old".into();
                a
            })
            .collect(),
    });
    assert!(fx.is_empty(), "{fx:?}");
    assert_eq!(sim.state.accounts, renamed);
    let fx = sim.feed(Input::AccountsListed {
        number: 3,
        accounts: renamed,
    });
    assert!(
        !fx.iter()
            .any(|e| matches!(e, Effect::Emit(ProxyEvent::AccountsListed { .. }))),
        "the same listing again: nothing to say"
    );
}
