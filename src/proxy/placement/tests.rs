use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use color_eyre::eyre::{Result, bail};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;

use super::*;
use crate::ipc::{self, CommandAnswer};
use crate::proxy::directory::{AccountDirectory, DirAccount, LoginTokens};
use crate::proxy::events::AccountRef;
use crate::proxy::pool::wire::KnownLimits;
use crate::proxy::pool::{SessionKind, SessionState};
use crate::proxy::start_plan::plan_start;
use crate::quota::{AccountLimits, RateLimitSnapshot, RateLimitWindow};

// ---- placement tables -------------------------------------------------------------------

fn snap(used: f64, reset: i64) -> RateLimitSnapshot {
    RateLimitSnapshot {
        primary: Some(RateLimitWindow {
            used_percent: used,
            window_duration_mins: Some(300),
            resets_at: Some(reset),
        }),
        ..Default::default()
    }
}

pub(crate) fn cand(id: &str, used: f64, reset: i64) -> Candidate {
    Candidate {
        id: id.into(),
        name: id.to_owned(),
        enabled: true,
        needs_login: false,
        snapshot: Some(snap(used, reset)),
        switched_away_at: None,
        workspace: Some(format!("ws-{id}")),
    }
}

fn occ(pairs: &[(&str, usize)]) -> HashMap<AccountId, usize> {
    pairs
        .iter()
        .map(|(id, n)| (AccountId::from(*id), *n))
        .collect()
}

fn to(id: &str) -> Choice {
    Choice::Switch { to: id.into() }
}

const NOW: i64 = 1_000;

/// [`place`] at [`NOW`] with the default policy.
fn place_now(
    candidates: &[Candidate],
    occupancy: &[(&str, usize)],
    mode: Placement,
    from: Option<&str>,
    preferred: Option<&str>,
) -> Choice {
    place(
        candidates,
        &occ(occupancy),
        mode,
        from.map(AccountId::from).as_ref(),
        preferred.map(AccountId::from).as_ref(),
        NOW,
        &PolicyConfig::default(),
    )
}

#[test]
fn spread_table() {
    #[allow(clippy::type_complexity, reason = "a table")]
    let cases: Vec<(
        &str,
        Vec<Candidate>,
        Vec<(&str, usize)>,
        Option<&str>,
        Choice,
    )> = vec![
        (
            "alice 90 % with one session scores 45, bob 80 % with none 80: bob",
            vec![cand("alice", 10.0, 500), cand("bob", 20.0, 500)],
            vec![("alice", 1)],
            None,
            to("bob"),
        ),
        (
            "no sessions anywhere: the largest headroom, as the policy",
            vec![cand("alice", 10.0, 500), cand("bob", 20.0, 500)],
            vec![],
            None,
            to("alice"),
        ),
        (
            "two sessions on bob (90/3 = 30) lose to carol (70/1)",
            vec![cand("bob", 10.0, 500), cand("carol", 30.0, 500)],
            vec![("bob", 2)],
            None,
            to("carol"),
        ),
        (
            "scores within the tie band: the earlier reset",
            vec![cand("late", 20.0, 9_000), cand("soon", 23.0, 3_000)],
            vec![],
            None,
            to("soon"),
        ),
        (
            "tie and the same reset: fewer sessions",
            // 80/2 = 40 vs 40/1 = 40.
            vec![cand("a", 20.0, 500), cand("b", 60.0, 500)],
            vec![("a", 1)],
            None,
            to("b"),
        ),
        (
            "tie, same reset, same sessions: the preferred account",
            vec![cand("a", 20.0, 500), cand("b", 20.0, 500)],
            vec![],
            Some("b"),
            to("b"),
        ),
        (
            "then the id",
            vec![cand("b", 20.0, 500), cand("a", 20.0, 500)],
            vec![],
            None,
            to("a"),
        ),
        (
            "nobody eligible: the earliest reset",
            vec![cand("a", 100.0, 700), cand("b", 96.0, 600)],
            vec![],
            None,
            Choice::NoneAvailable {
                earliest_reset: Some(600),
            },
        ),
    ];
    for (name, candidates, occupancy, preferred, want) in cases {
        let chosen = place_now(&candidates, &occupancy, Placement::Spread, None, preferred);
        assert_eq!(chosen, want, "{name}");
    }
}

#[test]
fn the_account_a_switch_leaves_is_not_counted_nor_chosen() {
    // The switching session is on alice: the occupancy holds only the others (one on bob).
    let candidates = [
        cand("alice", 0.0, 500),
        cand("bob", 10.0, 500),
        cand("carol", 30.0, 500),
    ];
    let from = Some("alice");
    assert_eq!(
        place_now(&candidates, &[("bob", 1)], Placement::Spread, from, None),
        to("carol"),
        "bob 90/2 = 45 < carol 70"
    );
    assert_eq!(
        place_now(&candidates, &[], Placement::Spread, from, None),
        to("bob")
    );
}

#[test]
fn fill_table() {
    let mut hot = cand("alice", 96.0, 500);
    hot.snapshot = Some(snap(96.0, 500));
    #[allow(clippy::type_complexity, reason = "a table")]
    let cases: Vec<(&str, Vec<Candidate>, Vec<(&str, usize)>, Choice)> = vec![
        (
            "the most sessions win, whatever the headroom",
            vec![
                cand("alice", 50.0, 500),
                cand("bob", 10.0, 500),
                cand("carol", 0.0, 500),
            ],
            vec![("alice", 2), ("bob", 1)],
            to("alice"),
        ),
        (
            "equal sessions: the earlier reset",
            vec![cand("alice", 50.0, 900), cand("bob", 10.0, 500)],
            vec![("alice", 1), ("bob", 1)],
            to("bob"),
        ),
        (
            "nobody anywhere: as spread",
            vec![cand("alice", 50.0, 500), cand("bob", 10.0, 500)],
            vec![],
            to("bob"),
        ),
        (
            "the full account nears its limit: everyone moves, to the next occupied",
            vec![hot.clone(), cand("bob", 60.0, 500), cand("carol", 0.0, 500)],
            vec![("alice", 3), ("bob", 1)],
            to("bob"),
        ),
        (
            "near its limit and nobody else occupied: as spread",
            vec![hot, cand("bob", 60.0, 500), cand("carol", 0.0, 500)],
            vec![("alice", 3)],
            to("carol"),
        ),
    ];
    for (name, candidates, occupancy, want) in cases {
        let chosen = place_now(&candidates, &occupancy, Placement::Fill, None, None);
        assert_eq!(chosen, want, "{name}");
    }
}

#[test]
fn workspace_limits_cooldown_and_flags_go_through_eligible() {
    let config = PolicyConfig::default();
    let mut hit = cand("alice", 40.0, 500);
    hit.workspace = Some("ws-team".into());
    hit.snapshot.as_mut().unwrap().rate_limit_reached_type =
        Some("workspace_member_usage_limit_reached".into());
    // Bob's own numbers are the best, but his workspace's limit is hit (by alice's seat).
    let mut bob = cand("bob", 0.0, 500);
    bob.workspace = Some("ws-team".into());
    let mut cooling = cand("cooling", 0.0, 500);
    cooling.switched_away_at = Some(NOW - 10);
    let mut disabled = cand("disabled", 0.0, 500);
    disabled.enabled = false;
    let mut locked = cand("locked", 0.0, 500);
    locked.needs_login = true;
    let candidates = [
        hit,
        bob,
        cooling,
        disabled,
        locked,
        cand("carol", 70.0, 500),
    ];
    for mode in [Placement::Spread, Placement::Fill] {
        // Even with every session on bob, fill may not take him.
        let occupancy = occ(&[("bob", 3), ("cooling", 2), ("disabled", 1)]);
        assert_eq!(
            place(&candidates, &occupancy, mode, None, None, NOW, &config),
            to("carol"),
            "{mode:?}"
        );
    }
    let ids = |v: Vec<&Candidate>| v.iter().map(|c| c.id.to_string()).collect::<Vec<_>>();
    assert_eq!(
        ids(policy::eligible(&candidates, None, NOW, &config)),
        ["carol"]
    );
    assert_eq!(
        ids(policy::eligible(&candidates, None, NOW + 600, &config)),
        ["cooling", "carol"],
        "the cooldown ends"
    );
}

pub(crate) fn status(id: &str, account: Option<&str>, switching_to: Option<&str>) -> SessionStatus {
    let r = |name: &str| AccountRef {
        id: name.into(),
        name: name.to_owned(),
    };
    SessionStatus {
        id: id.to_owned(),
        pid: 1,
        kind: SessionKind::Serve,
        version: "test".into(),
        account: account.map(r),
        switching_to: switching_to.map(r),
        cwd: PathBuf::from("/"),
        clients: 0,
        turns_running: 0,
        started_at: Utc::now(),
        poller: false,
        listen: None,
        state: SessionState::Ready,
    }
}

#[test]
fn occupancy_counts_where_a_session_is_going() {
    let counts = occupancy(&[
        status("1", Some("alice"), None),
        status("2", Some("alice"), Some("bob")),
        status("3", Some("bob"), None),
        status("4", None, None),
    ]);
    assert_eq!(counts, occ(&[("alice", 1), ("bob", 2)]));
}

// ---- peers, the lock, and the start plan ---------------------------------------------------

/// A session's control socket as the pool sees it: answers `session_status` from `cell`,
/// `pool_snapshot` from `snapshot` (refused without one, as an older session would), and
/// nothing else.
pub(crate) fn serve_peer(
    store: &Path,
    id: &str,
    cell: StatusCell,
    snapshot: Option<PoolSnapshot>,
) -> (PathBuf, tokio::task::JoinHandle<()>) {
    let (dir, task, _) = serve_counted(store, id, cell, snapshot);
    (dir, task)
}

/// [`serve_peer`], counting the `session_status` questions it answered.
fn serve_counted(
    store: &Path,
    id: &str,
    cell: StatusCell,
    snapshot: Option<PoolSnapshot>,
) -> (PathBuf, tokio::task::JoinHandle<()>, Arc<AtomicUsize>) {
    let asked = Arc::new(AtomicUsize::new(0));
    let counter = asked.clone();
    let dir = store.join("runtime").join(id);
    crate::paths::ensure_private_dir(&dir).unwrap();
    let listener = UnixListener::bind(dir.join(ipc::SOCKET_NAME)).unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let cell = cell.clone();
            let snapshot = snapshot.clone();
            let counter = counter.clone();
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut line = String::new();
                if BufReader::new(read).read_line(&mut line).await.is_err() {
                    return;
                }
                let answer = match serde_json::from_str::<PeerRequest>(&line) {
                    Ok(PeerRequest::SessionStatus) => {
                        counter.fetch_add(1, Ordering::SeqCst);
                        CommandAnswer {
                            ok: true,
                            message: String::new(),
                            data: Some(serde_json::to_value(cell.get()).unwrap()),
                        }
                    }
                    Ok(PeerRequest::PoolSnapshot) if snapshot.is_some() => CommandAnswer {
                        ok: true,
                        message: String::new(),
                        data: Some(serde_json::to_value(&snapshot).unwrap()),
                    },
                    _ => CommandAnswer::refusal("not a command".into()),
                };
                let mut reply = serde_json::to_string(&answer).unwrap();
                reply.push('\n');
                let _ = write.write_all(reply.as_bytes()).await;
            });
        }
    });
    (dir, task, asked)
}

/// A session that accepts connections and never answers (stopped, or hung).
fn serve_silent(store: &Path, id: &str) -> tokio::task::JoinHandle<()> {
    let dir = store.join("runtime").join(id);
    crate::paths::ensure_private_dir(&dir).unwrap();
    let listener = UnixListener::bind(dir.join(ipc::SOCKET_NAME)).unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    })
}

fn starting(id: &str) -> StatusCell {
    let mut s = status(id, None, None);
    s.state = SessionState::Starting;
    StatusCell::new(s)
}

/// An account store in memory: its accounts, their usage, and which were read.
#[derive(Clone)]
struct FakeDir {
    accounts: Vec<DirAccount>,
    usage: HashMap<AccountId, RateLimitSnapshot>,
    preferred: Option<AccountId>,
    reads: Arc<Mutex<Vec<AccountId>>>,
}

impl FakeDir {
    fn new(accounts: &[(&str, f64)]) -> Self {
        Self {
            accounts: accounts
                .iter()
                .map(|(name, _)| DirAccount {
                    id: (*name).into(),
                    name: (*name).to_owned(),
                    email: None,
                    plan: None,
                    chatgpt_account_id: Some(format!("ws-{name}")),
                    user_id: None,
                    enabled: true,
                    needs_login: false,
                    unsupported_sign_in: None,
                })
                .collect(),
            usage: accounts
                .iter()
                .map(|(name, used)| ((*name).into(), snap(*used, 4_000_000_000)))
                .collect(),
            preferred: None,
            reads: Arc::default(),
        }
    }
}

impl AccountDirectory for FakeDir {
    async fn list(&self) -> Result<Vec<DirAccount>> {
        Ok(self.accounts.clone())
    }
    async fn preferred(&self) -> Result<Option<AccountId>> {
        Ok(self.preferred.clone())
    }
    async fn login_tokens(&self, _id: &AccountId, _force: bool) -> Result<LoginTokens> {
        bail!("the plan logs nobody in")
    }
    async fn fetch_usage(&self, id: &AccountId) -> Result<AccountLimits> {
        self.reads.lock().unwrap().push(id.clone());
        match self.usage.get(id) {
            Some(s) => Ok(AccountLimits::full([s.clone()])),
            None => bail!("no such account"),
        }
    }
    async fn mark_active(&self, _id: &AccountId) -> Result<()> {
        Ok(())
    }
}

fn account_of(cell: &StatusCell) -> Option<String> {
    cell.get().account.map(|a| a.name)
}

/// A store where sessions start: the account store in memory, and the peers answering on
/// their control sockets under `<store>/runtime/` (stopped when it goes).
struct Pool {
    store: tempfile::TempDir,
    dir: FakeDir,
    peers: Vec<tokio::task::JoinHandle<()>>,
}

impl Pool {
    fn new(accounts: &[(&str, f64)]) -> Self {
        Self {
            store: tempfile::tempdir().unwrap(),
            dir: FakeDir::new(accounts),
            peers: Vec::new(),
        }
    }

    fn path(&self) -> &Path {
        self.store.path()
    }

    /// Keeps a peer's task until the pool goes.
    fn keep(&mut self, peer: tokio::task::JoinHandle<()>) {
        self.peers.push(peer);
    }

    /// A starting session that answers on its socket: its status and runtime directory.
    fn starting_peer(&mut self, id: &str) -> (StatusCell, PathBuf) {
        let cell = starting(id);
        let (dir, task) = serve_peer(self.path(), id, cell.clone(), None);
        self.keep(task);
        (cell, dir)
    }

    /// A session on `account` that answers on its socket.
    fn peer_on(&mut self, id: &str, account: &str) {
        let cell = StatusCell::new(status(id, Some(account), None));
        let (_, task) = serve_peer(self.path(), id, cell, None);
        self.keep(task);
    }

    /// A starting session with no socket: its status and runtime directory.
    fn newcomer(&self, id: &str) -> (StatusCell, PathBuf) {
        (starting(id), self.path().join("runtime").join(id))
    }

    fn context(&self, own: &Path, cell: &StatusCell) -> PlanContext {
        PlanContext {
            store_dir: self.path().to_owned(),
            own_dir: Some(own.to_owned()),
            placement: Placement::Spread,
            status: Some(cell.clone()),
            pool: true,
        }
    }

    /// The start plan of the session at `own` with status `cell`, under the default policy.
    async fn plan(&self, own: &Path, cell: &StatusCell) -> crate::proxy::start_plan::StartPlan {
        let context = self.context(own, cell);
        plan_start(&self.dir, &PolicyConfig::default(), &context)
            .await
            .unwrap()
    }

    /// [`Pool::plan`] on a task of its own, to watch it wait.
    fn spawn_plan(
        &self,
        own: &Path,
        cell: &StatusCell,
    ) -> tokio::task::JoinHandle<Result<crate::proxy::start_plan::StartPlan>> {
        let (dir, context) = (self.dir.clone(), self.context(own, cell));
        tokio::spawn(async move { plan_start(&dir, &PolicyConfig::default(), &context).await })
    }

    /// Takes the placement lock as a session choosing would: the lock, and its file's inode.
    fn hold_lock(&self) -> (Flock<std::fs::File>, u64) {
        use std::os::unix::fs::MetadataExt;
        let held = lock_file(&self.path().join("locks")).unwrap();
        let inode = std::fs::metadata(self.path().join("locks").join(LOCK_FILE))
            .unwrap()
            .ino();
        (held, inode)
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.peers.iter().for_each(tokio::task::JoinHandle::abort);
    }
}

#[tokio::test]
async fn two_sequential_starts_spread_over_two_accounts() {
    let mut pool = Pool::new(&[("alice", 10.0), ("bob", 20.0)]);
    let (one, one_dir) = pool.starting_peer("1-one");
    let plan = pool.plan(&one_dir, &one).await;
    // Alone (its own socket is no peer): today's choice, and it is published.
    assert_eq!(
        plan.order,
        [AccountId::from("alice"), AccountId::from("bob")]
    );
    assert_eq!(account_of(&one).as_deref(), Some("alice"));

    let (two, two_dir) = pool.starting_peer("2-two");
    let plan = pool.plan(&two_dir, &two).await;
    assert_eq!(
        plan.order,
        [AccountId::from("bob"), AccountId::from("alice")],
        "alice 90/2 = 45 < bob 80"
    );
    assert_eq!(account_of(&two).as_deref(), Some("bob"));
    assert_eq!(
        Peers::ask(&pool.context(&two_dir, &two), false, &[])
            .await
            .statuses
            .into_iter()
            .map(|s| s.id)
            .collect::<Vec<_>>(),
        ["1-one"]
    );

    // With the pool off, a third session chooses alone, as before: alice.
    let (three, three_dir) = pool.newcomer("3-three");
    let mut off = pool.context(&three_dir, &three);
    off.pool = false;
    let plan = plan_start(&pool.dir, &PolicyConfig::default(), &off)
        .await
        .unwrap();
    assert_eq!(plan.order[0], AccountId::from("alice"));
}

#[tokio::test]
async fn the_preferred_account_decides_alone_and_only_breaks_ties_among_peers() {
    let mut pool = Pool::new(&[("alice", 10.0), ("bob", 40.0), ("carol", 10.0)]);
    pool.dir.preferred = Some(AccountId::from("bob"));
    let (one, one_dir) = pool.starting_peer("1-one");
    let plan = pool.plan(&one_dir, &one).await;
    assert_eq!(
        plan.order[0],
        AccountId::from("bob"),
        "alone: `accounts use` decides"
    );

    // Bob is taken (60/2 = 30); alice and carol tie at 90: carol is preferred.
    pool.dir.preferred = Some(AccountId::from("carol"));
    let (two, two_dir) = pool.starting_peer("2-two");
    let plan = pool.plan(&two_dir, &two).await;
    assert_eq!(plan.order[0], AccountId::from("carol"));
}

#[tokio::test]
async fn a_silent_peer_costs_at_most_the_peer_timeout() {
    let mut pool = Pool::new(&[("alice", 10.0), ("bob", 20.0)]);
    pool.keep(serve_silent(pool.path(), "7-stopped"));
    pool.peer_on("1-one", "alice");
    let (two, own) = pool.newcomer("2-two");
    let started = Instant::now();
    let plan = pool.plan(&own, &two).await;
    let took = started.elapsed();
    assert_eq!(
        plan.order[0],
        AccountId::from("bob"),
        "the live peer is counted"
    );
    // The silent peer is asked once (not again under the lock), and given up after its
    // answer timeout; the rest (a few local reads) takes milliseconds. Asked twice, it would
    // cost two timeouts.
    let bound = Timeouts::PEER.answer * 2;
    assert!(took < bound, "took {took:?}");
}

#[tokio::test]
async fn a_peer_snapshot_spares_the_reads_of_what_it_knows_fresh() {
    let mut pool = Pool::new(&[("alice", 10.0), ("bob", 20.0), ("carol", 5.0)]);
    let known = |account: &str, used: f64, read_at, limit_hit| KnownLimits {
        account: account.into(),
        quota: snap(used, 4_000_000_000),
        families: Vec::new(),
        read_at,
        heard_at: None,
        limit_hit,
    };
    let long_ago = Utc::now() - chrono::Duration::hours(1);
    let snapshot = PoolSnapshot {
        accounts: vec![
            // Fresh, and a limit was hit there since the numbers: out.
            known("carol", 5.0, Some(Utc::now()), true),
            // Fresh: not read again.
            known("bob", 20.0, Some(Utc::now()), false),
            // Stale: read again (the store says 10 %).
            known("alice", 70.0, Some(long_ago), false),
        ],
    };
    let mut peer = status("1-one", Some("carol"), None);
    peer.poller = true;
    let (_, task) = serve_peer(pool.path(), "1-one", StatusCell::new(peer), Some(snapshot));
    pool.keep(task);
    let (two, own) = pool.newcomer("2-two");
    let plan = pool.plan(&own, &two).await;
    assert_eq!(*pool.dir.reads.lock().unwrap(), [AccountId::from("alice")]);
    assert_eq!(
        plan.order[0],
        AccountId::from("alice"),
        "alice 90 (read) > bob 80; carol hit"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lock_makes_two_concurrent_starts_choose_different_accounts() {
    let mut pool = Pool::new(&[("alice", 10.0), ("bob", 20.0)]);
    // Both are visible from the start, neither has chosen yet.
    let (one, one_dir) = pool.starting_peer("1-one");
    let (two, two_dir) = pool.starting_peer("2-two");
    let (p1, p2) = tokio::join!(pool.plan(&one_dir, &one), pool.plan(&two_dir, &two));
    assert_ne!(p1.order[0], p2.order[0]);
    let mut chosen = [account_of(&one).unwrap(), account_of(&two).unwrap()];
    chosen.sort();
    assert_eq!(chosen, ["alice", "bob"]);
}

#[tokio::test]
async fn a_held_lock_is_waited_for_only_so_long() {
    let store = tempfile::tempdir().unwrap();
    let held = lock_file(&store.path().join("locks")).unwrap();
    let started = Instant::now();
    let wait = Duration::from_millis(200);
    assert!(PlacementLock::acquire(store.path(), wait).await.is_none());
    assert!(started.elapsed() >= wait);
    drop(held);
    let lock = PlacementLock::acquire(store.path(), LOCK_WAIT).await;
    assert!(lock.is_some(), "free once the holder lets go");
    // The lock file is private.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(store.path().join("locks").join(LOCK_FILE))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

/// A symbolic link in place of the lock file is not followed: the chooser places without the
/// lock, and the link's target is neither created nor locked.
#[tokio::test]
async fn a_symlink_in_place_of_the_lock_is_refused() {
    let store = tempfile::tempdir().unwrap();
    let locks = store.path().join("locks");
    std::fs::create_dir(&locks).unwrap();
    let target = store.path().join("elsewhere");
    std::os::unix::fs::symlink(&target, locks.join(LOCK_FILE)).unwrap();
    let err = lock_file(&locks).unwrap_err().to_string();
    assert!(err.contains("is a symbolic link"), "{err}");
    assert!(
        PlacementLock::acquire(store.path(), LOCK_WAIT)
            .await
            .is_none()
    );
    assert!(!target.exists());
}

/// A holder that never lets go (a stopped session) costs a chooser its wait, and does not
/// keep the chooser's process from exiting: the runtime shuts down while the lock is still
/// held (a wait on the runtime's blocking pool would hold its shutdown until the holder
/// went).
#[test]
fn a_lock_held_for_good_does_not_hold_the_runtime_at_shutdown() {
    let store = tempfile::tempdir().unwrap();
    let held = lock_file(&store.path().join("locks")).unwrap();
    let path = store.path().to_owned();
    let (done_tx, done) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let lock = runtime.block_on(PlacementLock::acquire(&path, Duration::from_millis(50)));
        assert!(lock.is_none());
        drop(runtime);
        let _ = done_tx.send(());
    });
    let shut_down = done.recv_timeout(Duration::from_secs(20));
    drop(held);
    assert!(
        shut_down.is_ok(),
        "the runtime waited for the placement lock's holder"
    );
}

/// Whether some process waits for the flock on the file with this inode (`/proc/locks`
/// lists waiters as `N: -> FLOCK ...`).
fn flock_waited_for(inode: u64) -> bool {
    std::fs::read_to_string("/proc/locks").is_ok_and(|locks| {
        locks.lines().any(|line| {
            line.contains("->")
                && line.contains("FLOCK")
                && line
                    .split_whitespace()
                    .any(|field| field.rsplit(':').next() == Some(&inode.to_string()))
        })
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chooser_waits_for_the_one_choosing_and_counts_its_choice() {
    let mut pool = Pool::new(&[("alice", 10.0), ("bob", 20.0)]);
    // Session one is choosing: it holds the lock and has not published its choice yet.
    let (held, inode) = pool.hold_lock();
    let one = starting("1-one");
    let (_one_dir, one_task, asked) = serve_counted(pool.path(), "1-one", one.clone(), None);
    pool.keep(one_task);
    let (two, two_dir) = pool.starting_peer("2-two");
    let planner = pool.spawn_plan(&two_dir, &two);
    // Session two either waits on the lock (right) or asks session one at once (wrong).
    let deadline = Instant::now() + Duration::from_secs(10);
    // (It asks once before the lock, for the numbers, and once under it.)
    while !flock_waited_for(inode) && asked.load(Ordering::SeqCst) < 2 {
        assert!(
            Instant::now() < deadline,
            "session two neither waited nor asked"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Session one publishes its choice and lets go.
    one.update(|s| {
        s.account = Some(AccountRef {
            id: "alice".into(),
            name: "alice".into(),
        })
    });
    drop(held);
    let plan = planner.await.unwrap().unwrap();
    assert_eq!(
        plan.order[0],
        AccountId::from("bob"),
        "it counted alice's session"
    );
    assert_eq!(asked.load(Ordering::SeqCst), 2);
}

/// A socket that answers every question with this line.
fn serve_line(store: &Path, id: &str, line: &'static str) -> tokio::task::JoinHandle<()> {
    let dir = store.join("runtime").join(id);
    crate::paths::ensure_private_dir(&dir).unwrap();
    let listener = UnixListener::bind(dir.join(ipc::SOCKET_NAME)).unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut question = String::new();
                let _ = BufReader::new(read).read_line(&mut question).await;
                let _ = write.write_all(line.as_bytes()).await;
            });
        }
    })
}

#[tokio::test]
async fn peers_that_are_gone_old_or_garbled_are_left_out() {
    let mut pool = Pool::new(&[("alice", 10.0), ("bob", 20.0)]);
    // A crashed session's socket file: nobody listens (ECONNREFUSED).
    let dead = pool.path().join("runtime").join("9-dead");
    crate::paths::ensure_private_dir(&dead).unwrap();
    drop(std::os::unix::net::UnixListener::bind(dead.join(ipc::SOCKET_NAME)).unwrap());
    // An older cs-tui: it does not know the question; garbage; a status that is not one.
    for (id, line) in [
        ("8-old", "{\"ok\":false,\"message\":\"unknown command\"}\n"),
        ("7-junk", "\u{1}not json\n"),
        (
            "6-odd",
            "{\"ok\":true,\"message\":\"\",\"data\":{\"id\":1}}\n",
        ),
    ] {
        pool.keep(serve_line(pool.path(), id, line));
    }
    pool.peer_on("1-one", "alice");
    let everyone = PlanContext {
        own_dir: None,
        ..pool.context(pool.path(), &starting("0-none"))
    };
    let peers = Peers::ask(&everyone, false, &[]).await;
    assert_eq!(
        peers
            .statuses
            .iter()
            .map(|s| s.id.as_str())
            .collect::<Vec<_>>(),
        ["1-one"]
    );
    let mut failed = peers.failed.clone();
    failed.sort();
    assert_eq!(
        failed,
        ["6-odd", "7-junk", "8-old", "9-dead"].map(|id| pool
            .path()
            .join("runtime")
            .join(id)
            .join(ipc::SOCKET_NAME)),
        "each gave no status, and is not asked twice in one choice"
    );
    // The start plan goes on with the live one counted.
    let (me, own) = pool.newcomer("2-me");
    let plan = pool.plan(&own, &me).await;
    assert_eq!(plan.order[0], AccountId::from("bob"));
    assert_eq!(plan.order.len(), 2, "every account stays in the order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_appears_while_the_chooser_waits_is_counted() {
    let mut pool = Pool::new(&[("alice", 10.0), ("bob", 20.0)]);
    let (held, inode) = pool.hold_lock();
    let (me, own) = pool.newcomer("2-me");
    let planner = pool.spawn_plan(&own, &me);
    let reads = pool.dir.reads.clone();
    // It looked, saw nobody, read only alice's numbers (as alone), and waits for the lock.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !flock_waited_for(inode) {
        assert!(
            Instant::now() < deadline,
            "the chooser never waited for the lock"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(*reads.lock().unwrap(), [AccountId::from("alice")]);
    // Meanwhile a session took alice.
    pool.peer_on("1-one", "alice");
    drop(held);
    let plan = planner.await.unwrap().unwrap();
    assert_eq!(plan.order[0], AccountId::from("bob"), "alice 45 < bob 80");
    assert_eq!(
        *reads.lock().unwrap(),
        [AccountId::from("alice"), AccountId::from("bob")],
        "bob's numbers were read for the placement"
    );
}
