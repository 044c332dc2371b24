//! The pool's rules (`pool.rs`) as plain functions: facts from peers in, effects out, on the
//! `Sim` of `tests.rs` (a session on alice, with bob and carol stored).

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::effects::Effect;
use super::pool::{HOLD_MAX, HOLD_TIMEOUT, LOGIN_FAILED_EXCLUSION, MAX_FACT_AGE, STREAM_COALESCE};
use super::state::Input;
use super::switching::{SwitchFailure, Target};
use super::tests::{
    Sim, count, events, guard_commands, is_deferred, is_start, limits, quota, started,
};
use super::turns::REQUESTED_TURN_TIMEOUT;
use crate::account_id::AccountId;
use crate::proxy::events::{ProxyCommand, ProxyEvent, SwitchReason};
use crate::proxy::policy::Mode;
use crate::proxy::pool::wire::{LimitsSource, POOL_WIRE_VERSION};
use crate::proxy::pool::{PeerMessage, PoolFact};
use crate::proxy::rpc::TurnPurpose;
use crate::proxy::turn_guard::{GuardCommand, GuardEvent};
use crate::quota::RateLimitSnapshot;

const PEER: &str = "4242-9f1c";

fn id(name: &str) -> AccountId {
    AccountId::from(name)
}

/// A fact from [`PEER`], learned at `at`.
fn peer_at(sim: &mut Sim, at: DateTime<Utc>, fact: PoolFact) -> Vec<Effect> {
    sim.feed(Input::PeerFact(PeerMessage {
        v: POOL_WIRE_VERSION,
        from: PEER.to_owned(),
        at,
        fact,
    }))
}

/// A fact from [`PEER`], learned just now.
fn peer(sim: &mut Sim, fact: PoolFact) -> Vec<Effect> {
    let at = sim.now.wall;
    peer_at(sim, at, fact)
}

fn limit_hit(account: &str) -> PoolFact {
    PoolFact::LimitHit {
        account: id(account),
    }
}

fn stream_fact(account: &str, quota: RateLimitSnapshot) -> PoolFact {
    PoolFact::Limits {
        account: id(account),
        source: LimitsSource::Stream,
        read_started: None,
        quota: Box::new(quota),
        families: Vec::new(),
    }
}

fn read_fact(account: &str, read_started: DateTime<Utc>, quota: RateLimitSnapshot) -> PoolFact {
    PoolFact::Limits {
        account: id(account),
        source: LimitsSource::Read,
        read_started: Some(read_started),
        quota: Box::new(quota),
        families: Vec::new(),
    }
}

fn broadcasts(fx: &[Effect]) -> Vec<&PoolFact> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Broadcast(fact) => Some(fact),
            _ => None,
        })
        .collect()
}

fn holds(fx: &[Effect]) -> Vec<bool> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::SetHoldTurns(hold) => Some(*hold),
            _ => None,
        })
        .collect()
}

fn alternative(fx: &[Effect]) -> Option<bool> {
    fx.iter().rev().find_map(|e| match e {
        Effect::SetAlternative(available) => Some(*available),
        _ => None,
    })
}

fn fetched_ids(fx: &[Effect]) -> Vec<Vec<AccountId>> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::FetchUsage { ids, .. } => Some(ids.clone()),
            _ => None,
        })
        .collect()
}

fn limit_hit_sessions(fx: &[Effect]) -> Vec<(String, Option<String>)> {
    events(fx)
        .into_iter()
        .filter_map(|e| match e {
            ProxyEvent::UsageLimitHit {
                account, session, ..
            } => Some((account.name.clone(), session.clone())),
            _ => None,
        })
        .collect()
}

fn exhausted(sim: &Sim, account: &str) -> bool {
    sim.state
        .quota(&id(account))
        .is_some_and(RateLimitSnapshot::is_exhausted)
}

fn five_hour(sim: &Sim, account: &str) -> f64 {
    sim.state
        .quota(&id(account))
        .unwrap()
        .five_hour()
        .unwrap()
        .used_percent
}

/// The held-turn counts the effects tell (`turns_held` events).
fn held_counts(fx: &[Effect]) -> Vec<usize> {
    events(fx)
        .into_iter()
        .filter_map(|e| match e {
            ProxyEvent::TurnsHeld { held, .. } => Some(*held),
            _ => None,
        })
        .collect()
}

fn held_turn(conn: u64, thread: &str) -> Input {
    Input::Guard(GuardEvent::TurnRequested {
        conn,
        thread_id: thread.into(),
        purpose: TurnPurpose::User,
        held: true,
    })
}

#[test]
fn a_peer_limit_on_the_idle_active_account_switches_at_once_for_the_peer() {
    let mut sim = Sim::new();
    sim.connect(1);
    let fx = peer(&mut sim, limit_hit("alice"));
    assert_eq!(
        limit_hit_sessions(&fx),
        vec![("alice".to_owned(), Some(PEER.to_owned()))]
    );
    assert!(broadcasts(&fx).is_empty(), "a peer's fact is not sent on");
    assert!(
        holds(&fx).is_empty(),
        "idle: nothing to hold, the switch goes now"
    );
    let plan = started(fx).expect("idle: the switch starts at once");
    assert_eq!(plan.pending.target, Target::Best);
    assert_eq!(plan.pending.mode, Mode::Automatic);
    match &plan.pending.reason {
        SwitchReason::Peer { session, detail } => {
            assert_eq!(session, PEER);
            assert!(detail.contains("usage_limit_reached"), "{detail}");
        }
        other => panic!("reason {other:?}"),
    }
}

#[test]
fn a_peer_limit_while_busy_holds_new_turns_until_the_switch_is_over() {
    let mut sim = Sim::new();
    sim.connect(1);
    sim.connect(2);
    sim.turn_started(1, "u1");
    let fx = peer(&mut sim, limit_hit("alice"));
    assert_eq!(count(&fx, is_start), 0, "a running turn defers it");
    assert_eq!(count(&fx, is_deferred), 1);
    assert_eq!(holds(&fx), vec![true]);
    assert!(
        fx.iter()
            .any(|e| matches!(e, Effect::RecheckAfter(d) if *d == HOLD_TIMEOUT))
    );
    // A turn the guard holds is not busy, and changes nothing but what is told of it.
    let fx = sim.feed(held_turn(2, "thread-h"));
    assert_eq!(held_counts(&fx), vec![1], "{fx:?}");
    assert_eq!(fx.len(), 1, "{fx:?}");
    assert!(sim.state.requested.is_empty());
    // Told once per change: nothing new, nothing said.
    assert!(held_counts(&sim.feed(Input::Recheck)).is_empty());
    // At the running turn's end the switch starts (the held one does not block it); the
    // hold gives way to the switch, whose end lets the held turn go.
    let fx = sim.turn_completed(1, "u1");
    assert!(held_counts(&fx).is_empty(), "held until the login is over");
    assert_eq!(holds(&fx), vec![false]);
    assert!(
        guard_commands(&fx).is_empty(),
        "the held turn waits for the login"
    );
    let plan = started(fx).expect("the switch goes at the turn boundary");
    let t0 = sim.now.mono;
    let fx = sim.finished(&plan, Ok((id("bob"), Some(limits(5.0, sim.now.wall)))), t0);
    assert_eq!(
        guard_commands(&fx),
        vec![(1, GuardCommand::SwitchOver), (2, GuardCommand::SwitchOver)]
    );
    assert_eq!(held_counts(&fx), vec![0], "released with the switch's end");
    assert_eq!(sim.state.active.as_deref(), Some("bob"));
    assert!(holds(&fx).is_empty(), "no hold left to lift");
    // Released, the turn counts as requested: a switch waits for it.
    assert!(
        sim.state
            .requested
            .contains_key(&(2, "thread-h".to_owned()))
    );
    assert!(sim.state.held_requests.is_empty());
}

#[test]
fn a_hold_lasts_while_the_switch_waits_for_a_long_turn_and_no_longer_than_its_cap() {
    let mut sim = Sim::new();
    sim.connect(1);
    sim.connect(2);
    sim.turn_started(1, "u1");
    let fx = peer(&mut sim, limit_hit("alice"));
    assert_eq!(holds(&fx), vec![true]);
    assert!(
        fx.iter()
            .any(|e| matches!(e, Effect::RecheckAfter(d) if *d == HOLD_MAX))
    );
    sim.feed(held_turn(2, "thread-h"));
    // A real turn runs for minutes: the switch waits for its end, and so do new turns.
    for _ in 0..3 {
        sim.advance(HOLD_TIMEOUT);
        let fx = sim.feed(Input::Recheck);
        assert!(holds(&fx).is_empty(), "still held while the turn runs");
        assert!(guard_commands(&fx).is_empty());
    }
    // A turn whose end is never seen does not freeze new turns for good.
    sim.advance(HOLD_MAX - 3 * HOLD_TIMEOUT);
    let fx = sim.feed(Input::Recheck);
    assert_eq!(holds(&fx), vec![false]);
    assert_eq!(
        guard_commands(&fx),
        vec![(1, GuardCommand::SwitchOver), (2, GuardCommand::SwitchOver)],
        "the held turn goes to the old account and meets the real error"
    );
    assert_eq!(held_counts(&fx), vec![0]);
    // It stays let go while the same switch waits.
    let fx = sim.feed(Input::Recheck);
    assert!(holds(&fx).is_empty());
}

/// Two held turns are two; a held turn whose client goes away is no longer held.
#[test]
fn held_turns_are_counted_and_a_client_that_goes_takes_its_held_turn_with_it() {
    let mut sim = Sim::new();
    sim.connect(1);
    sim.connect(2);
    sim.connect(3);
    sim.turn_started(1, "u1");
    peer(&mut sim, limit_hit("alice"));
    assert_eq!(held_counts(&sim.feed(held_turn(2, "thread-a"))), vec![1]);
    assert_eq!(held_counts(&sim.feed(held_turn(3, "thread-b"))), vec![2]);
    assert_eq!(held_counts(&sim.feed(Input::Disconnected(3))), vec![1]);
    assert_eq!(held_counts(&sim.feed(Input::Disconnected(2))), vec![0]);
}

#[test]
fn a_failed_or_impossible_switch_releases_the_held_turns_to_the_old_account() {
    for result in [
        Err(SwitchFailure::NoneAvailable {
            earliest_reset: None,
        }),
        Err(SwitchFailure::Failed {
            to: id("bob"),
            error: "refresh_token_reused: secret-ish detail".into(),
        }),
    ] {
        let failed = matches!(result, Err(SwitchFailure::Failed { .. }));
        let mut sim = Sim::new();
        sim.connect(1);
        sim.turn_started(1, "u1");
        peer(&mut sim, limit_hit("alice"));
        sim.feed(held_turn(1, "thread-h"));
        let plan = started(sim.turn_completed(1, "u1")).expect("the switch starts");
        let t0 = sim.now.mono;
        let fx = sim.finished(&plan, result, t0);
        assert_eq!(guard_commands(&fx)[0], (1, GuardCommand::SwitchOver));
        assert_eq!(sim.state.active.as_deref(), Some("alice"));
        // Our own failed login is told to the pool, without its error text.
        let sent = broadcasts(&fx);
        if failed {
            assert_eq!(
                sent,
                vec![&PoolFact::LoginFailed {
                    account: id("bob"),
                    needs_login: false
                }]
            );
        } else {
            assert!(sent.is_empty());
        }
    }
}

#[test]
fn a_peer_limit_on_another_account_is_reported_and_weighed_but_moves_nothing() {
    let mut sim = Sim::new();
    sim.connect(1);
    let fx = peer(&mut sim, limit_hit("bob"));
    assert_eq!(count(&fx, is_start), 0);
    assert_eq!(
        limit_hit_sessions(&fx),
        vec![("bob".to_owned(), Some(PEER.to_owned()))]
    );
    assert!(exhausted(&sim, "bob"));
    assert_eq!(alternative(&fx), Some(true), "carol can still take over");
    assert!(holds(&fx).is_empty());
    let fx = peer(&mut sim, limit_hit("carol"));
    assert_eq!(alternative(&fx), Some(false), "nobody left to take over");
    // The same limit told twice is reported once.
    let fx = peer(&mut sim, limit_hit("carol"));
    assert!(limit_hit_sessions(&fx).is_empty());
    assert!(broadcasts(&fx).is_empty());
}

#[test]
fn a_peer_read_sent_before_our_live_limit_cannot_undo_it_and_a_later_one_lifts_it() {
    let mut sim = Sim::new();
    sim.connect(1);
    sim.turn_started(1, "u1");
    let before = sim.now.wall - chrono::Duration::seconds(5);
    sim.limit_error(1, "u1");
    assert!(exhausted(&sim, "alice"));
    sim.advance(Duration::from_secs(1));
    let wall = sim.now.wall;
    let fx = peer(&mut sim, read_fact("alice", before, quota(30.0, wall)));
    assert!(exhausted(&sim, "alice"), "older news changes nothing");
    assert!(
        events(&fx)
            .iter()
            .all(|e| !matches!(e, ProxyEvent::RateLimitsUpdated { .. }))
    );
    // A read the peer sent after our limit says the account has room again.
    let after = sim.now.wall;
    sim.advance(Duration::from_millis(300));
    let wall = sim.now.wall;
    let fx = peer(&mut sim, read_fact("alice", after, quota(30.0, wall)));
    assert!(!exhausted(&sim, "alice"));
    assert!(!sim.state.limit_reported.contains("alice"));
    assert!(events(&fx).iter().any(|e| matches!(
        e,
        ProxyEvent::RateLimitsUpdated { account, .. } if account.id == "alice"
    )));
    assert!(broadcasts(&fx).is_empty());
}

#[test]
fn a_peer_stream_fact_older_than_our_live_numbers_is_ignored() {
    let mut sim = Sim::new();
    let earlier = sim.now.wall - chrono::Duration::milliseconds(200);
    sim.rate_limits(50.0);
    let fx = peer_at(
        &mut sim,
        earlier,
        stream_fact("alice", quota(99.0, earlier)),
    );
    assert!(fx.is_empty(), "{fx:?}");
    assert_eq!(five_hour(&sim, "alice"), 50.0);
    // A newer one is merged, shown, and weighed: 96 % crosses the soft threshold.
    sim.advance(Duration::from_millis(100));
    let wall = sim.now.wall;
    let fx = peer(&mut sim, stream_fact("alice", quota(96.0, wall)));
    assert_eq!(five_hour(&sim, "alice"), 96.0);
    let plan = started(fx).expect("a soft threshold a peer saw moves us too");
    assert!(matches!(plan.pending.reason, SwitchReason::Peer { .. }));
}

#[test]
fn a_pending_manual_switch_survives_a_peer_fact_and_nothing_is_held() {
    let mut sim = Sim::new();
    sim.connect(1);
    sim.turn_started(1, "u1");
    sim.command(ProxyCommand::SwitchTo {
        account_id: "carol".into(),
    });
    let fx = peer(&mut sim, limit_hit("alice"));
    let pending = sim.state.pending.as_ref().expect("still pending");
    assert_eq!(pending.mode, Mode::Manual);
    assert_eq!(pending.target, Target::Account(id("carol")));
    assert!(
        holds(&fx).is_empty(),
        "only an automatic switch holds turns"
    );
}

#[test]
fn no_fact_from_a_peer_is_ever_sent_on() {
    let wall = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    let facts = [
        limit_hit("alice"),
        limit_hit("bob"),
        stream_fact("alice", quota(100.0, wall)),
        stream_fact("alice", quota(97.0, wall)),
        stream_fact("bob", quota(40.0, wall)),
        read_fact("alice", wall, quota(100.0, wall)),
        read_fact("carol", wall, quota(10.0, wall)),
        PoolFact::LoginFailed {
            account: id("bob"),
            needs_login: true,
        },
        PoolFact::LoginFailed {
            account: id("bob"),
            needs_login: false,
        },
        PoolFact::SessionChanged,
        PoolFact::SessionEnded,
        PoolFact::PollerReleased,
    ];
    for fact in facts {
        for busy in [false, true] {
            let mut sim = Sim::new();
            sim.connect(1);
            if busy {
                sim.turn_started(1, "u1");
            }
            let fx = peer(&mut sim, fact.clone());
            assert!(
                broadcasts(&fx).is_empty(),
                "{fact:?} (busy: {busy}) → {fx:?}"
            );
        }
    }
}

#[test]
fn our_own_limit_and_reads_are_told_to_the_pool() {
    let mut sim = Sim::new();
    sim.connect(1);
    sim.turn_started(1, "u1");
    let fx = sim.limit_error(1, "u1");
    assert_eq!(broadcasts(&fx), vec![&limit_hit("alice")]);
    // Once per limit, though one limit raises two errors.
    assert!(broadcasts(&sim.limit_error(1, "u1")).is_empty());
    // A usage read, stamped with the wall time it was sent.
    let sent = sim.now.mono;
    let sent_wall = sim.now.wall;
    sim.advance(Duration::from_millis(700));
    let fx = sim.feed(Input::UsageFetched {
        started: sent,
        results: vec![
            (id("bob"), Ok(limits(12.0, sim.now.wall))),
            (id("carol"), Err("timed out".into())),
        ],
    });
    match broadcasts(&fx)[..] {
        [
            PoolFact::Limits {
                account,
                source: LimitsSource::Read,
                read_started: Some(at),
                quota,
                ..
            },
        ] => {
            assert_eq!(account, "bob");
            assert_eq!(*at, sent_wall);
            assert_eq!(quota.five_hour().unwrap().used_percent, 12.0);
        }
        ref other => panic!("{other:?}"),
    }
}

#[test]
fn our_stream_is_coalesced_to_one_fact_per_account_per_250_ms_but_a_limit_goes_at_once() {
    let mut sim = Sim::new();
    let fx = sim.rate_limits(30.0);
    assert_eq!(broadcasts(&fx).len(), 1, "the first goes at once");
    sim.advance(Duration::from_millis(100));
    let fx = sim.rate_limits(31.0);
    assert!(broadcasts(&fx).is_empty());
    assert!(
        fx.iter()
            .any(|e| matches!(e, Effect::RecheckAfter(d) if *d == STREAM_COALESCE - Duration::from_millis(100)))
    );
    sim.advance(Duration::from_millis(50));
    let fx = sim.rate_limits(32.0);
    assert!(broadcasts(&fx).is_empty());
    assert!(
        !fx.iter().any(|e| matches!(e, Effect::RecheckAfter(_))),
        "one timer per held-back update"
    );
    // The timer fires: the latest numbers go.
    sim.advance(Duration::from_millis(100));
    let fx = sim.feed(Input::Recheck);
    match broadcasts(&fx)[..] {
        [PoolFact::Limits { quota, source, .. }] => {
            assert_eq!(*source, LimitsSource::Stream);
            assert_eq!(quota.five_hour().unwrap().used_percent, 32.0);
        }
        ref other => panic!("{other:?}"),
    }
    assert!(
        broadcasts(&sim.feed(Input::Recheck)).is_empty(),
        "sent once"
    );
    // Within 250 ms of that, a crossing of the soft threshold goes at once, and so does the
    // limit itself.
    sim.advance(Duration::from_millis(10));
    let fx = sim.rate_limits(96.0);
    assert_eq!(broadcasts(&fx).len(), 1);
    sim.advance(Duration::from_millis(10));
    let fx = sim.rate_limits(100.0);
    assert_eq!(broadcasts(&fx).len(), 1);
}

const INTERVAL: Duration = Duration::from_secs(300);

/// Every stored ChatGPT account, as the poller reads them.
const READ: [&str; 3] = ["alice", "bob", "carol"];

/// The poller's reads of every account, heard now.
fn poller_reads(sim: &mut Sim) {
    let wall = sim.now.wall;
    for name in READ {
        peer(sim, read_fact(name, wall, quota(10.0, wall)));
    }
}

#[test]
fn a_non_poller_reads_no_usage_on_the_timer_while_the_pollers_reads_come() {
    let mut sim = Sim::new();
    sim.state.poller = false;
    sim.feed(Input::Start);
    for _ in 0..6 {
        sim.advance(INTERVAL);
        poller_reads(&mut sim);
        let fx = sim.feed(Input::PollTick);
        assert!(
            matches!(fx[..], [Effect::ListAccounts]),
            "only the store's accounts are listed: {fx:?}"
        );
    }
    assert!(!sim.state.poller_overdue);
}

/// The poller is stopped (`kill -STOP`: it keeps the lock, and its reads stop coming). A
/// non-poller waits two intervals, then reads on its own timer as the poller would, until a
/// peer's read comes again.
#[test]
fn a_non_poller_stands_in_when_the_pollers_reads_stop_and_steps_back_when_they_come() {
    let all = || vec![READ.iter().map(|n| id(n)).collect::<Vec<_>>()];
    let mut sim = Sim::new();
    sim.state.poller = false;
    sim.feed(Input::Start);
    sim.advance(Duration::from_secs(10));
    poller_reads(&mut sim);
    // Then nothing: one interval late is not overdue, nor a second less than two.
    sim.advance(INTERVAL);
    assert!(fetched_ids(&sim.feed(Input::PollTick)).is_empty());
    sim.advance(INTERVAL - Duration::from_secs(1));
    assert!(fetched_ids(&sim.feed(Input::PollTick)).is_empty());
    assert!(!sim.state.poller_overdue);
    sim.advance(Duration::from_secs(1));
    let fx = sim.feed(Input::PollTick);
    assert_eq!(fetched_ids(&fx), all(), "two intervals without a read");
    assert!(sim.state.poller_overdue);
    // Its reads are answered (and told to the pool, as the poller's are); it keeps reading
    // at every tick while no peer's read comes.
    let started = sim.now.mono;
    let wall = sim.now.wall;
    let fx = sim.feed(Input::UsageFetched {
        started,
        results: READ
            .iter()
            .map(|n| (id(n), Ok(limits(12.0, wall))))
            .collect(),
    });
    assert_eq!(broadcasts(&fx).len(), 3);
    sim.advance(INTERVAL);
    assert_eq!(fetched_ids(&sim.feed(Input::PollTick)), all());
    // The poller runs again: its read comes, and the next tick reads nothing.
    sim.advance(Duration::from_secs(100));
    let wall = sim.now.wall;
    peer(&mut sim, read_fact("bob", wall, quota(10.0, wall)));
    sim.advance(INTERVAL - Duration::from_secs(100));
    let fx = sim.feed(Input::PollTick);
    assert!(matches!(fx[..], [Effect::ListAccounts]), "{fx:?}");
    assert!(!sim.state.poller_overdue);
}

/// A non-poller that started before any peer read anything (a poller stopped from the
/// start) stands in after two intervals of its own.
#[test]
fn a_non_poller_that_never_heard_the_poller_stands_in_after_two_intervals() {
    let mut sim = Sim::new();
    sim.state.poller = false;
    sim.feed(Input::Start);
    sim.advance(INTERVAL);
    assert!(fetched_ids(&sim.feed(Input::PollTick)).is_empty());
    sim.advance(INTERVAL);
    assert_eq!(fetched_ids(&sim.feed(Input::PollTick)).len(), 1);
}

#[test]
fn a_new_poller_reads_only_what_no_session_read_lately() {
    let mut sim = Sim::new();
    sim.state.poller = false;
    // A peer's read of bob counts as fresh here.
    let wall = sim.now.wall;
    peer(&mut sim, read_fact("bob", wall, quota(10.0, wall)));
    sim.advance(Duration::from_secs(5));
    let fx = sim.feed(Input::PollerRole(true));
    assert_eq!(fetched_ids(&fx), vec![vec![id("alice"), id("carol")]]);
    assert!(sim.state.poller);
    // Told again, it reads nothing new (those reads are under way).
    assert!(fetched_ids(&sim.feed(Input::PollerRole(true))).is_empty());
    // Its timer now reads what went stale.
    sim.advance(Duration::from_secs(200));
    let fx = sim.feed(Input::PollTick);
    assert_eq!(
        fetched_ids(&fx),
        vec![vec![id("alice"), id("bob"), id("carol")]]
    );
}

#[test]
fn the_role_right_after_the_start_does_not_read_again() {
    let mut sim = Sim::new();
    sim.state.poller = false;
    let fx = sim.feed(Input::Start);
    assert_eq!(
        fetched_ids(&fx),
        vec![vec![id("alice"), id("bob"), id("carol")]],
        "the start reads every account, as alone"
    );
    let fx = sim.feed(Input::PollerRole(true));
    assert!(fetched_ids(&fx).is_empty(), "{fx:?}");
    // A read that failed is tried again at the next tick.
    let sent = sim.now.mono;
    sim.feed(Input::UsageFetched {
        started: sent,
        results: vec![(id("carol"), Err("timed out".into()))],
    });
    let fx = sim.feed(Input::PollTick);
    assert_eq!(fetched_ids(&fx), vec![vec![id("carol")]]);
}

#[test]
fn a_peer_failed_login_keeps_the_account_out_for_a_minute() {
    let mut sim = Sim::new();
    sim.connect(1);
    peer(&mut sim, limit_hit("carol"));
    let fx = peer(
        &mut sim,
        PoolFact::LoginFailed {
            account: id("bob"),
            needs_login: false,
        },
    );
    assert_eq!(alternative(&fx), Some(false));
    // An automatic switch now neither chooses nor reads bob.
    sim.turn_started(1, "u1");
    let plan = started(sim.limit_error(1, "u1")).unwrap_or_else(|| {
        started(sim.turn_completed(1, "u1")).expect("the switch goes at the boundary")
    });
    assert!(plan.accounts.iter().any(|a| a.id == "bob" && a.needs_login));
    // A manual switch to it is the user's call.
    let mut sim2 = Sim::new();
    peer(
        &mut sim2,
        PoolFact::LoginFailed {
            account: id("bob"),
            needs_login: false,
        },
    );
    let fx = sim2.command(ProxyCommand::SwitchTo {
        account_id: "bob".into(),
    });
    let plan = started(fx).expect("the user may still try bob");
    assert!(plan.accounts.iter().all(|a| !a.needs_login));
    // After a minute it counts again.
    let mut sim3 = Sim::new();
    peer(
        &mut sim3,
        PoolFact::LoginFailed {
            account: id("bob"),
            needs_login: false,
        },
    );
    sim3.advance(LOGIN_FAILED_EXCLUSION);
    let bob = sim3.state.accounts[1].clone();
    assert!(!sim3.state.candidate(&bob, sim3.now).needs_login);
    // `needs_login`: the store is read again.
    let fx = peer(
        &mut sim3,
        PoolFact::LoginFailed {
            account: id("bob"),
            needs_login: true,
        },
    );
    assert!(matches!(fx[..], [Effect::ListAccounts]));
}

#[test]
fn a_requested_turn_released_from_a_hold_counts_as_requested_until_it_starts() {
    let mut sim = Sim::new();
    sim.connect(1);
    sim.turn_started(1, "u1");
    peer(&mut sim, limit_hit("alice"));
    sim.feed(held_turn(1, "thread-h"));
    let plan = started(sim.turn_completed(1, "u1")).expect("the switch starts");
    let t0 = sim.now.mono;
    sim.finished(&plan, Ok((id("bob"), Some(limits(5.0, sim.now.wall)))), t0);
    // A manual switch asked now waits for the released turn.
    let fx = sim.command(ProxyCommand::SwitchTo {
        account_id: "carol".into(),
    });
    assert_eq!(count(&fx, is_start), 0);
    sim.advance(REQUESTED_TURN_TIMEOUT);
    assert!(started(sim.feed(Input::Recheck)).is_some());
}

#[test]
fn a_fact_of_another_wire_version_changes_nothing() {
    let mut sim = Sim::new();
    let at = sim.now.wall;
    let fx = sim.feed(Input::PeerFact(PeerMessage {
        v: POOL_WIRE_VERSION + 1,
        from: PEER.into(),
        at,
        fact: limit_hit("alice"),
    }));
    assert!(fx.is_empty());
    assert!(!exhausted(&sim, "alice"));
}

#[test]
fn the_pool_snapshot_tells_what_is_known_and_since_when() {
    let mut sim = Sim::new();
    let t0 = sim.now.wall;
    peer(&mut sim, limit_hit("bob"));
    sim.advance(Duration::from_secs(2));
    let sent = sim.now.mono;
    let t1 = sim.now.wall;
    sim.advance(Duration::from_secs(1));
    sim.feed(Input::UsageFetched {
        started: sent,
        results: vec![(id("carol"), Ok(limits(12.0, t1)))],
    });
    let t2 = sim.now.wall;
    let snapshot = sim.state.pool_snapshot(sim.now);
    let rows: Vec<_> = snapshot
        .accounts
        .iter()
        .map(|k| (k.account.to_string(), k.read_at, k.heard_at, k.limit_hit))
        .collect();
    assert_eq!(
        rows,
        vec![
            ("alice".to_owned(), None, None, false),
            ("bob".to_owned(), None, Some(t0), true),
            ("carol".to_owned(), Some(t2), None, false),
        ]
    );
    assert!(snapshot.accounts[1].quota.is_exhausted());
    assert_eq!(
        snapshot.accounts[2].quota.five_hour().unwrap().used_percent,
        12.0
    );
}

#[test]
fn a_fact_stamped_in_the_future_counts_as_now_and_one_over_a_minute_old_is_dropped() {
    let mut sim = Sim::new();
    // A clock an hour ahead must not make its fact outrank every later one for an hour.
    let ahead = sim.now.wall + chrono::Duration::hours(1);
    peer_at(&mut sim, ahead, stream_fact("bob", quota(40.0, ahead)));
    assert_eq!(five_hour(&sim, "bob"), 40.0);
    sim.advance(Duration::from_millis(10));
    let wall = sim.now.wall;
    peer(&mut sim, stream_fact("bob", quota(41.0, wall)));
    assert_eq!(five_hour(&sim, "bob"), 41.0);
    // A fact learned more than a minute ago is no news (a clock gone wrong, or a sender
    // stopped mid-send): dropped, whatever it says.
    for age in [
        MAX_FACT_AGE + Duration::from_secs(1),
        Duration::from_secs(86_400 * 3650),
    ] {
        let old = sim.now.wall - chrono::Duration::from_std(age).unwrap();
        assert!(peer_at(&mut sim, old, limit_hit("carol")).is_empty());
        assert!(!exhausted(&sim, "carol"));
        assert!(peer_at(&mut sim, old, read_fact("bob", old, quota(5.0, wall))).is_empty());
        assert_eq!(five_hour(&sim, "bob"), 41.0);
    }
    // Within the minute, it counts.
    let recent = sim.now.wall - chrono::Duration::seconds(30);
    let fx = peer_at(&mut sim, recent, limit_hit("carol"));
    assert_eq!(limit_hit_sessions(&fx).len(), 1);
}

#[test]
fn a_held_turn_whose_report_crossed_its_release_is_forgotten_when_it_starts() {
    let mut sim = Sim::new();
    sim.connect(1);
    // The guard held it during a switch, the switch ended and released it, and only then
    // did its report reach the core; the turn then starts.
    sim.feed(held_turn(1, "thread-u2"));
    sim.turn_started(1, "u2");
    assert!(sim.state.held_requests.is_empty());
    sim.turn_completed(1, "u2");
    // A later release does not make it a request that holds switches back.
    let plan = started(peer(&mut sim, limit_hit("alice"))).expect("idle: the switch starts");
    let t0 = sim.now.mono;
    sim.finished(&plan, Ok((id("bob"), None)), t0);
    assert!(sim.state.requested.is_empty());
}
