//! The hub over real unix sockets in a temporary store (no codex): fan-out, skipping dead and
//! silent peers, the pool view, the status and the poller election.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;

use super::*;
use crate::ipc::{SOCKET_NAME, Timeouts};
use crate::proxy::core::{CoreMsg, Input};
use crate::proxy::events::{AccountRef, SwitchReason};
use crate::proxy::ipc::{IpcLimits, Serving, listen_with};
use crate::proxy::pool::SessionKind;

/// Every wait in these tests: long, since the machine is shared; reached only on failure.
const WAIT: Duration = Duration::from_secs(20);

fn account(name: &str) -> AccountRef {
    AccountRef {
        id: format!("id-{name}").as_str().into(),
        name: name.to_owned(),
    }
}

fn runtime_dir(store: &Path, name: &str) -> PathBuf {
    let dir = store.join("runtime").join(name);
    crate::paths::ensure_private_dir(&dir).unwrap();
    dir
}

/// A peer session as far as the pool sees it: its control socket, a status, and what reached
/// its core and its hub.
struct FakePeer {
    dir: PathBuf,
    status: StatusCell,
    core: mpsc::UnboundedReceiver<CoreMsg>,
    notes: mpsc::UnboundedReceiver<NoteFrom>,
    socket: JoinHandle<()>,
}

impl FakePeer {
    fn start(store: &Path, name: &str, on: Option<&str>) -> Self {
        let dir = runtime_dir(store, name);
        let mut initial = starting_status(&dir, SessionKind::Serve, "/src".into(), None);
        initial.account = on.map(account);
        initial.state = SessionState::Ready;
        let status = StatusCell::new(initial);
        let (core_tx, core) = mpsc::unbounded_channel();
        let (notes_tx, notes) = mpsc::unbounded_channel();
        let serving = Serving {
            core: core_tx,
            core_running: Arc::new(AtomicBool::new(true)),
            status: status.clone(),
            id: name.to_owned(),
            hub: Some(notes_tx),
        };
        let socket = listen_with(&dir.join(SOCKET_NAME), serving, IpcLimits::default()).unwrap();
        Self {
            dir,
            status,
            core,
            notes,
            socket,
        }
    }

    /// The next pool fact that reached its core.
    async fn next_fact(&mut self) -> PeerMessage {
        loop {
            let msg = tokio::time::timeout(WAIT, self.core.recv())
                .await
                .expect("a fact in time")
                .expect("the channel is open");
            if let CoreMsg::Input(input) = msg
                && let Input::PeerFact(message) = *input
            {
                return message;
            }
        }
    }

    async fn next_note(&mut self) -> PeerNote {
        tokio::time::timeout(WAIT, self.notes.recv())
            .await
            .expect("a note in time")
            .expect("the channel is open")
            .1
    }
}

/// The session under test: its hub, served on its own control socket like a session's.
struct Ours {
    dir: PathBuf,
    hub: Option<Hub>,
    pool: PoolHandle,
    status: StatusCell,
    events: broadcast::Sender<ProxyEvent>,
    seen: broadcast::Receiver<ProxyEvent>,
    core: mpsc::UnboundedReceiver<CoreMsg>,
    _socket: JoinHandle<()>,
}

impl Ours {
    fn start(store: &Path, name: &str, on: Option<&str>) -> Self {
        let dir = runtime_dir(store, name);
        let status = StatusCell::new(starting_status(
            &dir,
            SessionKind::Dashboard,
            "/src".into(),
            None,
        ));
        status.update(|s| s.account = on.map(account));
        let (events, seen) = broadcast::channel(256);
        let (core_tx, core) = mpsc::unbounded_channel();
        let config = HubConfig {
            store_dir: store.to_owned(),
            runtime_dir: dir.clone(),
        };
        let roles = core_tx.clone();
        let role = RoleSink::new(move |poller| {
            let _ = roles.send(Input::PollerRole(poller).into());
        });
        let (hub, pool) = Hub::start(config, status.clone(), events.clone(), role);
        let serving = Serving {
            core: core_tx,
            core_running: Arc::new(AtomicBool::new(true)),
            status: status.clone(),
            id: name.to_owned(),
            hub: Some(hub.notes()),
        };
        let socket = listen_with(&dir.join(SOCKET_NAME), serving, IpcLimits::default()).unwrap();
        Self {
            dir,
            hub: Some(hub),
            pool,
            status,
            events,
            seen,
            core,
            _socket: socket,
        }
    }

    /// Waits for a `PoolChanged` with these counts (earlier ones are passed over).
    async fn pool_becomes(&mut self, sessions: usize, by: &[(&str, usize)]) {
        let want: Vec<PoolShare> = by
            .iter()
            .map(|(name, n)| PoolShare {
                account: account(name),
                sessions: *n,
            })
            .collect();
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut last = None;
        loop {
            let event = tokio::time::timeout_at(deadline, self.seen.recv())
                .await
                .unwrap_or_else(|_| panic!("no PoolChanged to {sessions} {by:?}; last {last:?}"))
                .unwrap();
            if let ProxyEvent::PoolChanged {
                sessions: n,
                by_account,
                ..
            } = event
            {
                if n == sessions && by_account == want {
                    return;
                }
                last = Some((n, by_account));
            }
        }
    }

    /// The next poller role the core was told.
    async fn next_role(&mut self) -> bool {
        loop {
            let msg = tokio::time::timeout(WAIT, self.core.recv())
                .await
                .expect("a role in time")
                .unwrap();
            if let CoreMsg::Input(input) = msg
                && let Input::PollerRole(role) = *input
            {
                return role;
            }
        }
    }
}

#[tokio::test]
async fn a_fact_reaches_every_peer_and_not_us() {
    let store = tempfile::tempdir().unwrap();
    let mut b = FakePeer::start(store.path(), "2-b", Some("bob"));
    let mut c = FakePeer::start(store.path(), "3-c", Some("carol"));
    let ours = Ours::start(store.path(), "1-a", Some("alice"));
    ours.pool.broadcast(PoolFact::LimitHit {
        account: "id-alice".into(),
    });
    for peer in [&mut b, &mut c] {
        let message = peer.next_fact().await;
        assert_eq!(message.from, "1-a");
        assert_eq!(message.v, POOL_WIRE_VERSION);
        assert_eq!(
            message.fact,
            PoolFact::LimitHit {
                account: "id-alice".into()
            }
        );
    }
    // Our own socket is no peer: our core never hears our own fact.
    let peers = Peers::new(store.path(), &ours.dir);
    let mut listed = peers.listed();
    listed.sort();
    assert_eq!(listed, [b.dir.join(SOCKET_NAME), c.dir.join(SOCKET_NAME)]);
    let mut ours = ours;
    while let Ok(msg) = ours.core.try_recv() {
        assert!(
            !matches!(&msg, CoreMsg::Input(input) if matches!(**input, Input::PeerFact(_))),
            "{msg:?}"
        );
    }
}

/// A fact handed over just before the session gives up (a start whose every login failed)
/// still reaches the peers: closing sends what the hub holds before it says goodbye.
#[tokio::test]
async fn a_fact_handed_over_right_before_close_still_goes_out() {
    let store = tempfile::tempdir().unwrap();
    let mut peer = FakePeer::start(store.path(), "2-b", Some("bob"));
    let mut ours = Ours::start(store.path(), "1-a", None);
    let failed = PoolFact::LoginFailed {
        account: "id-alice".into(),
        needs_login: true,
    };
    ours.pool.broadcast(failed.clone());
    // No await between the two: the hub's task has not run since.
    ours.hub.take().unwrap().close().await;
    assert_eq!(peer.next_fact().await.fact, failed);
    // Then it ends (beside `PollerReleased`, in either order: it held the poller lock).
    while peer.next_note().await != PeerNote::Changed {}
}

#[tokio::test]
async fn a_refused_or_missing_peer_is_skipped_and_the_others_still_hear() {
    let store = tempfile::tempdir().unwrap();
    let mut live = FakePeer::start(store.path(), "2-live", None);
    // A killed session: its socket is there, nobody listens.
    let dead = runtime_dir(store.path(), "3-dead");
    drop(std::os::unix::net::UnixListener::bind(dead.join(SOCKET_NAME)).unwrap());
    // A socket that is listed, then removed before it is asked.
    let gone = FakePeer::start(store.path(), "4-gone", None);
    let own = runtime_dir(store.path(), "1-own");
    let peers = Peers::new(store.path(), &own);
    let listed = peers.listed();
    assert_eq!(listed.len(), 3);
    gone.socket.abort();
    std::fs::remove_dir_all(&gone.dir).unwrap();

    let request = PeerRequest::Pool(Box::new(PeerMessage {
        v: POOL_WIRE_VERSION,
        from: "1-own".into(),
        at: Utc::now(),
        fact: PoolFact::SessionChanged,
    }));
    let outcomes = peers.ask_these(listed, &request).await;
    for (socket, outcome) in &outcomes {
        if socket.starts_with(&live.dir) {
            assert!(
                matches!(outcome, Outcome::Answered(a) if a.ok),
                "{outcome:?}"
            );
        } else {
            assert!(matches!(outcome, Outcome::Gone), "{socket:?}: {outcome:?}");
        }
    }
    assert_eq!(live.next_note().await, PeerNote::Changed);
    let dead_socket = dead.join(SOCKET_NAME);
    assert!(peers.is_skipped(&dead_socket));
    assert!(!peers.is_skipped(&live.dir.join(SOCKET_NAME)));
    // The next fact goes to the live peer only.
    let outcomes = peers.ask(&request).await;
    assert_eq!(outcomes.len(), 1, "{outcomes:?}");
    assert!(outcomes[0].0.starts_with(&live.dir));
    assert_eq!(live.next_note().await, PeerNote::Changed);
    // A peer left out that speaks to us again is asked again; a path is not an id.
    peers.heard_from("../3-dead");
    assert!(peers.is_skipped(&dead_socket));
    peers.heard_from("3-dead");
    assert!(!peers.is_skipped(&dead_socket));
    assert_eq!(peers.ask(&request).await.len(), 2);
}

#[tokio::test]
async fn a_silent_peer_costs_at_most_the_timeout_and_delays_no_other() {
    let store = tempfile::tempdir().unwrap();
    let mut live = FakePeer::start(store.path(), "2-live", None);
    // Accepts, reads nothing, never answers (a stopped session's backlog, or a hung one).
    let silent_dir = runtime_dir(store.path(), "3-silent");
    let silent = tokio::net::UnixListener::bind(silent_dir.join(SOCKET_NAME)).unwrap();
    let (accepted_tx, mut accepted) = mpsc::unbounded_channel();
    let hold = tokio::spawn(async move {
        let mut kept = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            kept.push(stream);
            let _ = accepted_tx.send(());
        }
    });
    let own = runtime_dir(store.path(), "1-own");
    let request = PeerRequest::Pool(Box::new(PeerMessage {
        v: POOL_WIRE_VERSION,
        from: "1-own".into(),
        at: Utc::now(),
        fact: PoolFact::LimitHit {
            account: "id-alice".into(),
        },
    }));

    // With a long answer timeout, the live peer hears the fact while the silent one is
    // still being waited for: it is not delayed by it.
    let slow = Arc::new(Peers::with(
        store.path(),
        &own,
        Timeouts {
            connect: Duration::from_secs(60),
            answer: Duration::from_secs(60),
        },
        Duration::from_secs(60),
    ));
    let asking = {
        let slow = slow.clone();
        let request = request.clone();
        tokio::spawn(async move { slow.ask(&request).await })
    };
    assert_eq!(live.next_fact().await.from, "1-own");
    tokio::time::timeout(WAIT, accepted.recv()).await.unwrap();
    assert!(!asking.is_finished(), "still waiting for the silent peer");
    asking.abort();

    // With the peer timeouts, the silent peer costs at most them, then is left out.
    let peers = Peers::new(store.path(), &own);
    let started = std::time::Instant::now();
    let outcomes = peers.ask(&request).await;
    let took = started.elapsed();
    let budget = Timeouts::PEER.connect + Timeouts::PEER.answer;
    assert!(took >= Timeouts::PEER.answer, "{took:?}");
    assert!(
        took < budget + Duration::from_secs(2),
        "{took:?} is far over {budget:?}"
    );
    for (socket, outcome) in &outcomes {
        if socket.starts_with(&silent_dir) {
            assert!(matches!(outcome, Outcome::Unresponsive), "{outcome:?}");
        } else {
            assert!(
                matches!(outcome, Outcome::Answered(a) if a.ok),
                "{outcome:?}"
            );
        }
    }
    assert_eq!(live.next_fact().await.from, "1-own");
    assert!(peers.is_skipped(&silent_dir.join(SOCKET_NAME)));
    let outcomes = peers.ask(&request).await;
    assert_eq!(
        outcomes.len(),
        1,
        "the silent peer is skipped: {outcomes:?}"
    );
    assert!(outcomes[0].0.starts_with(&live.dir));
    hold.abort();
}

#[tokio::test]
async fn the_pool_view_follows_peers_appearing_and_vanishing() {
    let store = tempfile::tempdir().unwrap();
    let mut ours = Ours::start(store.path(), "1-a", Some("alice"));
    ours.pool_becomes(1, &[("alice", 1)]).await;

    // A peer starts and says so.
    let b = FakePeer::start(store.path(), "2-b", Some("bob"));
    let our_socket = ours.dir.join(SOCKET_NAME);
    let say = |from: &str, fact: PoolFact| {
        let socket = our_socket.clone();
        let request = PeerRequest::Pool(Box::new(PeerMessage {
            v: POOL_WIRE_VERSION,
            from: from.to_owned(),
            at: Utc::now(),
            fact,
        }));
        async move {
            let answer = crate::ipc::send(&socket, &request).await.unwrap();
            assert!(answer.ok, "{answer:?}");
        }
    };
    say("2-b", PoolFact::SessionChanged).await;
    ours.pool_becomes(2, &[("alice", 1), ("bob", 1)]).await;

    // Another one, switching to alice: it counts for alice.
    let c = FakePeer::start(store.path(), "3-c", Some("bob"));
    c.status.update(|s| s.switching_to = Some(account("alice")));
    say("3-c", PoolFact::SessionChanged).await;
    ours.pool_becomes(3, &[("alice", 2), ("bob", 1)]).await;

    // b ends cleanly: its directory goes, then it says so.
    b.socket.abort();
    std::fs::remove_dir_all(&b.dir).unwrap();
    say("2-b", PoolFact::SessionEnded).await;
    ours.pool_becomes(2, &[("alice", 2)]).await;

    // c is killed: nothing is said, its socket stays and refuses. The sweep finds it.
    c.socket.abort();
    ours.pool_becomes(1, &[("alice", 1)]).await;

    // Our own switch changes the counts too.
    ours.status.update(|s| s.account = Some(account("bob")));
    ours.pool_becomes(1, &[("bob", 1)]).await;
}

#[test]
fn the_status_follows_the_sessions_events() {
    let at = Utc::now();
    let mut status = starting_status(Path::new("/x/9-s"), SessionKind::Serve, "/".into(), None);
    assert_eq!(status.id, "9-s");
    type Holds = fn(&SessionStatus) -> bool;
    let steps: Vec<(ProxyEvent, Holds)> = vec![
        (
            ProxyEvent::ActiveAccount {
                account: account("alice"),
                at,
            },
            |s| s.account == Some(account("alice")) && s.state == SessionState::Starting,
        ),
        (
            ProxyEvent::Connection {
                state: ConnectionState::Ready { clients: 2 },
                at,
            },
            |s| s.clients == 2 && s.state == SessionState::Ready,
        ),
        (
            ProxyEvent::TurnsRunning {
                running: 3,
                title_turns: 0,
                at,
            },
            |s| s.turns_running == 3,
        ),
        (
            ProxyEvent::SwitchStarted {
                from: Some(account("alice")),
                to: account("bob"),
                reason: SwitchReason::Manual,
                at,
            },
            |s| {
                s.switching_to == Some(account("bob"))
                    && s.account == Some(account("alice"))
                    && s.state == SessionState::Switching
            },
        ),
        (
            ProxyEvent::Connection {
                state: ConnectionState::Ready { clients: 1 },
                at,
            },
            |s| s.clients == 1 && s.state == SessionState::Switching,
        ),
        (
            ProxyEvent::SwitchFailed {
                from: Some(account("alice")),
                to: account("bob"),
                reason: SwitchReason::Manual,
                error: "no".into(),
                at,
            },
            |s| {
                s.switching_to.is_none()
                    && s.account == Some(account("alice"))
                    && s.state == SessionState::Ready
            },
        ),
        (
            ProxyEvent::SwitchStarted {
                from: Some(account("alice")),
                to: account("carol"),
                reason: SwitchReason::Manual,
                at,
            },
            |s| s.switching_to == Some(account("carol")),
        ),
        (
            ProxyEvent::SwitchDone {
                from: Some(account("alice")),
                to: account("carol"),
                reason: SwitchReason::Manual,
                elapsed_ms: 5,
                at,
            },
            |s| {
                s.switching_to.is_none()
                    && s.account == Some(account("carol"))
                    && s.state == SessionState::Ready
            },
        ),
        (
            ProxyEvent::Connection {
                state: ConnectionState::Down,
                at,
            },
            |s| s.state == SessionState::Down,
        ),
    ];
    for (event, holds) in steps {
        follow_event(&mut status, &event);
        assert!(holds(&status), "after {event:?}: {status:?}");
    }
}

#[tokio::test]
async fn the_hub_keeps_the_status_and_tells_the_peers_it_changed() {
    let store = tempfile::tempdir().unwrap();
    let mut peer = FakePeer::start(store.path(), "2-b", Some("bob"));
    let ours = Ours::start(store.path(), "1-a", None);
    let mut watch = ours.status.subscribe();
    let at = Utc::now();
    for event in [
        ProxyEvent::ActiveAccount {
            account: account("alice"),
            at,
        },
        ProxyEvent::Connection {
            state: ConnectionState::Ready { clients: 1 },
            at,
        },
        ProxyEvent::TurnsRunning {
            running: 1,
            title_turns: 0,
            at,
        },
    ] {
        ours.events.send(event).unwrap();
    }
    tokio::time::timeout(
        WAIT,
        watch.wait_for(|s| {
            s.account == Some(account("alice")) && s.clients == 1 && s.turns_running == 1
        }),
    )
    .await
    .expect("the status follows in time")
    .unwrap();
    // The peer hears that we changed (the burst may come as one or more notes).
    assert_eq!(peer.next_note().await, PeerNote::Changed);
    // And asked, it sees the new status.
    let answer = crate::ipc::send(&ours.dir.join(SOCKET_NAME), &PeerRequest::SessionStatus)
        .await
        .unwrap();
    let status: SessionStatus = serde_json::from_value(answer.data.unwrap()).unwrap();
    assert_eq!(status.account, Some(account("alice")));
    assert_eq!(status.turns_running, 1);
    assert!(status.poller, "alone on the store, it polls");
}

#[tokio::test]
async fn one_poller_per_store_and_the_lock_passes_on_a_clean_exit() {
    let store = tempfile::tempdir().unwrap();
    let mut first = Ours::start(store.path(), "1-a", Some("alice"));
    assert!(first.next_role().await, "the first session polls");
    let mut second = Ours::start(store.path(), "2-b", Some("bob"));
    assert!(!second.next_role().await, "the second does not");
    assert!(first.status.get().poller);
    assert!(!second.status.get().poller);
    second.pool_becomes(2, &[("alice", 1), ("bob", 1)]).await;

    // The first exits cleanly: its socket stops, its dir goes, it says goodbye.
    first._socket.abort();
    std::fs::remove_dir_all(&first.dir).unwrap();
    first.hub.take().unwrap().close().await;
    assert!(second.next_role().await, "the lock passed to the waiter");
    assert!(second.status.get().poller);
    second.pool_becomes(1, &[("bob", 1)]).await;
}

#[tokio::test]
async fn a_dropped_hub_says_goodbye_too() {
    let store = tempfile::tempdir().unwrap();
    let mut peer = FakePeer::start(store.path(), "2-b", Some("bob"));
    let mut ours = Ours::start(store.path(), "1-a", Some("alice"));
    assert!(ours.next_role().await);
    drop(ours.hub.take());
    let mut notes = vec![peer.next_note().await, peer.next_note().await];
    notes.sort_by_key(|n| n == &PeerNote::Changed);
    assert!(notes.contains(&PeerNote::PollerReleased), "{notes:?}");
    assert!(notes.contains(&PeerNote::Changed), "{notes:?}");
    // The lock is free for the next one.
    assert!(PollerLock::new(store.path()).try_take().unwrap());
}

#[tokio::test]
async fn a_suspended_poller_hands_the_lock_over_and_rejoins_after() {
    let store = tempfile::tempdir().unwrap();
    let mut first = Ours::start(store.path(), "1-a", Some("alice"));
    assert!(first.next_role().await);
    let mut second = Ours::start(store.path(), "2-b", Some("bob"));
    assert!(!second.next_role().await);

    // Stopped (SIGTSTP): the lock goes at once, the core stops polling, the other takes it.
    let slot = PoolControlSlot::default();
    slot.suspend(); // empty: nothing happens
    slot.set(Some(first.hub.as_ref().unwrap().control()));
    slot.suspend();
    assert!(!first.status.get().poller);
    assert!(
        !first.next_role().await,
        "the core is told it no longer polls"
    );
    assert!(second.next_role().await, "the other session polls");

    // Continued: it takes part again, but the lock is held now.
    slot.resume();
    assert!(!first.status.get().poller);
    // When the other exits, the lock comes back.
    second._socket.abort();
    std::fs::remove_dir_all(&second.dir).unwrap();
    second.hub.take().unwrap().close().await;
    assert!(first.next_role().await, "back to the resumed session");
    assert!(first.status.get().poller);
}

#[test]
fn the_view_keeps_a_silent_peer_and_drops_gone_odd_and_old_ones() {
    let socket = |n: &str| PathBuf::from(format!("/s/runtime/{n}/control.sock"));
    let status = |name: &str, on: &str| {
        let mut s = starting_status(Path::new(name), SessionKind::Serve, "/".into(), None);
        s.account = Some(account(on));
        s
    };
    let answered = |s: &SessionStatus| {
        Outcome::Answered(crate::ipc::CommandAnswer {
            ok: true,
            message: String::new(),
            data: Some(serde_json::to_value(s).unwrap()),
        })
    };
    // Classified as the hub classifies a round.
    let replies = |outcomes: Vec<(PathBuf, Outcome)>| -> Vec<(PathBuf, StatusReply)> {
        outcomes
            .into_iter()
            .map(|(socket, outcome)| (socket, StatusReply::of(outcome)))
            .collect()
    };
    let own = status("0-own", "alice");
    let mut view = PoolView::default();
    let names = ["1-a", "2-b", "3-c", "4-d", "5-e"];
    let listed: Vec<PathBuf> = names.iter().map(|n| socket(n)).collect();
    view.merge(
        &listed,
        replies(
            names
                .iter()
                .map(|n| (socket(n), answered(&status(n, "bob"))))
                .collect(),
        ),
    );
    assert_eq!(pool_counts(&own, view.statuses()).0, 6);

    view.merge(
        &listed[..4],
        replies(vec![
            // Stopped: keeps its account.
            (socket("1-a"), Outcome::Unresponsive),
            (socket("2-b"), Outcome::Gone),
            // Answers, but not a status (another program, or a newer shape it cannot read).
            (
                socket("3-c"),
                Outcome::Answered(crate::ipc::CommandAnswer {
                    ok: true,
                    message: String::new(),
                    data: Some(serde_json::json!({"bogus": 1})),
                }),
            ),
            // An older cs-tui: "not a command".
            (
                socket("4-d"),
                Outcome::Answered(crate::ipc::CommandAnswer::refusal(
                    "not a command: unknown variant".into(),
                )),
            ),
        ]),
    );
    // 5-e is no longer listed: gone.
    let (sessions, by_account) = pool_counts(&own, view.statuses());
    assert_eq!(sessions, 2);
    assert_eq!(
        by_account,
        [
            PoolShare {
                account: account("alice"),
                sessions: 1
            },
            PoolShare {
                account: account("bob"),
                sessions: 1
            }
        ]
    );
    view.merge(
        &listed[..1],
        replies(vec![(socket("1-a"), Outcome::Unreadable)]),
    );
    assert_eq!(pool_counts(&own, view.statuses()).0, 1);
}
