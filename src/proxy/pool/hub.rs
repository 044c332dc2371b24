//! The pool hub, one per session: sends the core's facts to every peer, keeps this session's
//! [`SessionStatus`] current from its own events (and tells the peers when it changes), keeps
//! a view of the peers' statuses (emitting [`ProxyEvent::PoolChanged`] when the counts
//! change), and runs the poller election. Nothing here waits on a peer on the core's behalf:
//! every exchange runs in a task of its own, with the peer timeouts.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::Utc;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::peers::{Outcome, Peers, StatusReply};
use super::poller::PollerLock;
use super::wire::{POOL_WIRE_VERSION, PeerRequest};
use super::{PeerMessage, PoolFact, PoolHandle, SessionState, SessionStatus, StatusCell};
use crate::proxy::events::{ConnectionState, PoolShare, ProxyEvent};

/// How often the peers are asked again, and a lost poller election retried.
pub(crate) const SWEEP: Duration = Duration::from_secs(5);
/// A burst of status changes goes out as one `SessionChanged`.
const COALESCE: Duration = Duration::from_millis(100);
/// How long a closing hub may take to send the facts it still holds (each peer is asked
/// within the peer timeouts, all at once).
const FLUSH_WAIT: Duration = Duration::from_secs(2);

/// A [`PeerNote`] and the id of the peer that sent it.
pub(crate) type NoteFrom = (String, PeerNote);

/// What a peer told this session about itself (routed here by the control socket).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum PeerNote {
    /// Its status changed, or it ended: ask again.
    Changed,
    /// It gave the poller lock up: try to take it.
    PollerReleased,
}

impl PeerNote {
    /// The note a session fact makes; `None` for an account fact (the core's).
    pub(crate) fn of(fact: &PoolFact) -> Option<Self> {
        match fact {
            PoolFact::SessionChanged | PoolFact::SessionEnded => Some(PeerNote::Changed),
            PoolFact::PollerReleased => Some(PeerNote::PollerReleased),
            PoolFact::Limits { .. } | PoolFact::LimitHit { .. } | PoolFact::LoginFailed { .. } => {
                None
            }
        }
    }
}

/// Keeps `status` current with one of the session's own events.
pub(crate) fn follow_event(status: &mut SessionStatus, event: &ProxyEvent) {
    match event {
        ProxyEvent::ActiveAccount { account, .. } => status.account = Some(account.clone()),
        ProxyEvent::SwitchStarted { to, .. } => {
            status.switching_to = Some(to.clone());
            status.state = SessionState::Switching;
        }
        ProxyEvent::SwitchDone { to, .. } => {
            status.account = Some(to.clone());
            status.switching_to = None;
            status.state = SessionState::Ready;
        }
        ProxyEvent::SwitchFailed { .. } => {
            status.switching_to = None;
            if status.state == SessionState::Switching {
                status.state = SessionState::Ready;
            }
        }
        ProxyEvent::TurnsRunning { running, .. } => status.turns_running = *running,
        ProxyEvent::Connection { state, .. } => match state {
            ConnectionState::Starting => status.state = SessionState::Starting,
            ConnectionState::Ready { clients } => {
                status.clients = *clients;
                if status.switching_to.is_none() {
                    status.state = SessionState::Ready;
                }
            }
            ConnectionState::Down => status.state = SessionState::Down,
        },
        ProxyEvent::SessionFailed { .. } => status.state = SessionState::Down,
        _ => {}
    }
}

/// The counts a [`ProxyEvent::PoolChanged`] carries: the sessions (ours included), and how
/// many run on each account (a switch under way counts for the account it moves to).
pub(crate) fn pool_counts<'a>(
    own: &'a SessionStatus,
    peers: impl IntoIterator<Item = &'a SessionStatus>,
) -> (usize, Vec<PoolShare>) {
    let mut sessions = 0;
    let mut by_account: BTreeMap<(String, String), PoolShare> = BTreeMap::new();
    for status in std::iter::once(own).chain(peers) {
        sessions += 1;
        if let Some(account) = status.switching_to.as_ref().or(status.account.as_ref()) {
            by_account
                .entry((account.name.clone(), account.id.to_string()))
                .or_insert_with(|| PoolShare {
                    account: account.clone(),
                    sessions: 0,
                })
                .sessions += 1;
        }
    }
    (sessions, by_account.into_values().collect())
}

/// The peers' statuses as last heard, by socket.
#[derive(Debug, Default)]
pub(crate) struct PoolView {
    peers: HashMap<PathBuf, SessionStatus>,
}

impl PoolView {
    /// Takes in one round of asks: `listed` are the peer sockets that exist now (a peer not
    /// among them is gone); `outcomes` what each asked one answered. A peer that did not
    /// answer in time keeps its last status (a stopped session still holds its account); one
    /// left out of the round keeps it while its process lives.
    pub(crate) fn merge(&mut self, listed: &[PathBuf], replies: Vec<(PathBuf, StatusReply)>) {
        self.peers.retain(|socket, _| listed.contains(socket));
        let mut asked = Vec::new();
        for (socket, reply) in replies {
            asked.push(socket.clone());
            match reply {
                StatusReply::Status(status) => {
                    self.peers.insert(socket, *status);
                }
                // Gone; or an older cs-tui, or not one: its account is unknown.
                StatusReply::Gone | StatusReply::OlderVersion => {
                    self.peers.remove(&socket);
                }
                StatusReply::Unresponsive => {}
            }
        }
        self.peers
            .retain(|socket, status| asked.contains(socket) || process_alive(status.pid));
    }

    pub(crate) fn statuses(&self) -> impl Iterator<Item = &SessionStatus> {
        self.peers.values()
    }
}

fn process_alive(pid: u32) -> bool {
    i32::try_from(pid)
        .is_ok_and(|pid| nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok())
}

/// Where a hub runs.
#[derive(Clone, Debug)]
pub(crate) struct HubConfig {
    pub store_dir: PathBuf,
    /// This session's runtime directory; its name is the session id.
    pub runtime_dir: PathBuf,
}

impl HubConfig {
    pub(crate) fn session_id(&self) -> String {
        session_id(&self.runtime_dir)
    }
}

/// A session's id: its runtime directory's name.
pub(crate) fn session_id(runtime_dir: &Path) -> String {
    runtime_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Where the hub tells the session's core its poller role (the session wires it to the core's
/// inbox: the pool knows nothing of the core).
#[derive(Clone)]
pub(crate) struct RoleSink(Arc<dyn Fn(bool) + Send + Sync>);

impl RoleSink {
    pub(crate) fn new(tell: impl Fn(bool) + Send + Sync + 'static) -> Self {
        Self(Arc::new(tell))
    }
}

impl std::fmt::Debug for RoleSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RoleSink")
    }
}

/// The poller election of one session: the lock, and the role the core was told.
#[derive(Debug)]
struct Election {
    lock: PollerLock,
    /// The role the core was told (`None`: not yet; the core starts as the poller).
    told: Option<bool>,
    /// Given up while the process is stopped (SIGTSTP): no retry until resumed.
    suspended: bool,
    status: StatusCell,
    core: RoleSink,
}

impl Election {
    /// Tries to become the poller; tells the core and the status when the role changes (and
    /// always the first time).
    fn elect(&mut self) {
        let won = !self.suspended
            && self.lock.try_take().unwrap_or_else(|err| {
                tracing::warn!("the poller election failed: {err:#}");
                false
            });
        self.tell(won);
    }

    fn tell(&mut self, poller: bool) {
        if self.told != Some(poller) {
            self.told = Some(poller);
            self.status.update(|s| s.poller = poller);
            (self.core.0)(poller);
            tracing::debug!(poller, "poller election");
        }
    }
}

type SharedElection = Arc<Mutex<Election>>;

fn lock_election(election: &SharedElection) -> std::sync::MutexGuard<'_, Election> {
    election.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Gives the poller's lock up while the process is stopped, and takes part again after:
/// the dashboard's job control (a stopped poller would stall every session's numbers).
#[derive(Clone, Debug)]
pub(crate) struct PoolControl {
    id: String,
    peers: Arc<Peers>,
    election: SharedElection,
}

impl PoolControl {
    /// Gives the lock up at once (before the process stops) and tells the peers, best effort.
    pub(crate) fn suspend(&self) {
        let released = {
            let mut election = lock_election(&self.election);
            election.suspended = true;
            let released = election.lock.release();
            election.tell(false);
            released
        };
        if released {
            let (peers, id) = (self.peers.clone(), self.id.clone());
            tokio::spawn(async move { send_fact(&peers, &id, PoolFact::PollerReleased).await });
        }
    }

    /// Takes part in the election again.
    pub(crate) fn resume(&self) {
        let mut election = lock_election(&self.election);
        election.suspended = false;
        election.elect();
    }
}

/// Where the dashboard finds its session's [`PoolControl`] once the session has started
/// (empty before, and with the pool off: suspending then does nothing).
#[derive(Clone, Debug, Default)]
pub(crate) struct PoolControlSlot(Arc<Mutex<Option<PoolControl>>>);

impl PoolControlSlot {
    pub(crate) fn set(&self, control: Option<PoolControl>) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = control;
    }

    fn get(&self) -> Option<PoolControl> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn suspend(&self) {
        if let Some(control) = self.get() {
            control.suspend();
        }
    }

    pub(crate) fn resume(&self) {
        if let Some(control) = self.get() {
            control.resume();
        }
    }
}

/// A running hub. Closing it (or dropping it) tells the peers this session ends and gives
/// the poller lock up.
pub(crate) struct Hub {
    id: String,
    peers: Arc<Peers>,
    notes: mpsc::UnboundedSender<NoteFrom>,
    election: SharedElection,
    /// Tells the task to send the facts it still holds and end.
    closing: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Hub {
    /// Starts the hub: takes part in the poller election at once (the core hears its role
    /// before it starts), then runs until closed. Returns the handle the core broadcasts on.
    pub(crate) fn start(
        config: HubConfig,
        status: StatusCell,
        events: broadcast::Sender<ProxyEvent>,
        core: RoleSink,
    ) -> (Self, PoolHandle) {
        let id = config.session_id();
        let peers = Arc::new(Peers::new(&config.store_dir, &config.runtime_dir));
        let election = Arc::new(Mutex::new(Election {
            lock: PollerLock::new(&config.store_dir),
            told: None,
            suspended: false,
            status: status.clone(),
            core,
        }));
        let (facts_tx, facts) = mpsc::unbounded_channel();
        let (notes_tx, notes) = mpsc::unbounded_channel();
        let (closing_tx, closing) = oneshot::channel();
        let task = HubTask {
            id: id.clone(),
            peers: peers.clone(),
            election: election.clone(),
            status,
            events_tx: events.clone(),
            events: events.subscribe(),
            facts,
            notes,
            closing,
            view: PoolView::default(),
            last_counts: None,
        };
        lock_election(&election).elect();
        let task = tokio::spawn(task.run());
        (
            Self {
                id,
                peers,
                notes: notes_tx,
                election,
                closing: Some(closing_tx),
                task: Some(task),
            },
            PoolHandle::new(facts_tx),
        )
    }

    /// Job control's handle on the poller election.
    pub(crate) fn control(&self) -> PoolControl {
        PoolControl {
            id: self.id.clone(),
            peers: self.peers.clone(),
            election: self.election.clone(),
        }
    }

    /// Where the control socket sends what peers say about themselves.
    pub(crate) fn notes(&self) -> mpsc::UnboundedSender<NoteFrom> {
        self.notes.clone()
    }

    /// Stops the hub, gives the poller lock up and tells the peers (`SessionEnded`, and
    /// `PollerReleased` if it held the lock). The facts handed to it before (a login that
    /// failed just before a session gives up) go out first. Waits at most [`FLUSH_WAIT`] and
    /// the peer timeouts.
    pub(crate) async fn close(mut self) {
        if let (Some(closing), Some(task)) = (self.closing.take(), self.task.as_mut()) {
            let _ = closing.send(());
            if tokio::time::timeout(FLUSH_WAIT, task).await.is_err() {
                tracing::debug!("the pool hub did not send its last facts in time");
            }
        }
        if let Some(farewell) = self.stop() {
            farewell.send().await;
        }
    }

    /// Stops the task and releases the lock; returns what is left to tell the peers.
    fn stop(&mut self) -> Option<Farewell> {
        let task = self.task.take()?;
        task.abort();
        // Released before the peers hear of it, so the one that tries at once wins.
        let released = lock_election(&self.election).lock.release();
        Some(Farewell {
            id: self.id.clone(),
            peers: self.peers.clone(),
            released,
        })
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        let Some(farewell) = self.stop() else { return };
        // No runtime to await on here (or one that is shutting down): a thread of its own,
        // bounded by the peer timeouts.
        let sent = std::thread::spawn(move || {
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime.block_on(farewell.send()),
                Err(err) => tracing::debug!(%err, "no runtime to say goodbye to the pool"),
            }
        });
        let _ = sent.join();
    }
}

/// What a closing hub tells its peers.
struct Farewell {
    id: String,
    peers: Arc<Peers>,
    released: bool,
}

impl Farewell {
    async fn send(self) {
        let ended = send_fact(&self.peers, &self.id, PoolFact::SessionEnded);
        if self.released {
            let released = send_fact(&self.peers, &self.id, PoolFact::PollerReleased);
            tokio::join!(ended, released);
        } else {
            ended.await;
        }
    }
}

/// Sends one fact to every peer, all at once.
async fn send_fact(peers: &Peers, from: &str, fact: PoolFact) {
    let request = PeerRequest::Pool(Box::new(PeerMessage {
        v: POOL_WIRE_VERSION,
        from: from.to_owned(),
        at: Utc::now(),
        fact,
    }));
    for (socket, outcome) in peers.ask(&request).await {
        if let Outcome::Answered(answer) = &outcome
            && !answer.ok
        {
            tracing::debug!(socket = %socket.display(), message = %answer.message, "a peer refused a fact");
        }
    }
}

struct HubTask {
    id: String,
    peers: Arc<Peers>,
    election: SharedElection,
    status: StatusCell,
    events_tx: broadcast::Sender<ProxyEvent>,
    events: broadcast::Receiver<ProxyEvent>,
    facts: mpsc::UnboundedReceiver<PoolFact>,
    notes: mpsc::UnboundedReceiver<NoteFrom>,
    closing: oneshot::Receiver<()>,
    view: PoolView,
    last_counts: Option<(usize, Vec<PoolShare>)>,
}

/// One round of status asks: the sockets listed, and what the asked ones said.
type Round = (Vec<PathBuf>, Vec<(PathBuf, StatusReply)>);

impl HubTask {
    fn elect(&self) {
        lock_election(&self.election).elect();
    }

    async fn run(mut self) {
        let (rounds_tx, mut rounds) = mpsc::unbounded_channel::<Round>();
        let mut asking = false;
        let mut ask_again = false;
        let mut own = self.status.subscribe();
        own.mark_unchanged();
        let mut announce_at: Option<Instant> = None;
        let mut events_open = true;
        let mut sweep = tokio::time::interval(SWEEP);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let mut refresh = false;
            tokio::select! {
                _ = &mut self.closing => {
                    self.flush().await;
                    return;
                }
                Some(fact) = self.facts.recv() => {
                    let peers = self.peers.clone();
                    let id = self.id.clone();
                    tokio::spawn(async move { send_fact(&peers, &id, fact).await });
                }
                event = self.events.recv(), if events_open => match event {
                    Ok(event) => self.status.update(|s| follow_event(s, &event)),
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => events_open = false,
                },
                Ok(()) = own.changed() => {
                    own.mark_unchanged();
                    announce_at.get_or_insert_with(|| Instant::now() + COALESCE);
                    self.emit_if_changed();
                }
                () = sleep_until(announce_at), if announce_at.is_some() => {
                    announce_at = None;
                    let peers = self.peers.clone();
                    let id = self.id.clone();
                    tokio::spawn(async move {
                        send_fact(&peers, &id, PoolFact::SessionChanged).await
                    });
                }
                Some((from, note)) = self.notes.recv() => {
                    // It speaks: it is no longer left out (a peer that was slow once).
                    self.peers.heard_from(&from);
                    match note {
                        PeerNote::Changed => refresh = true,
                        PeerNote::PollerReleased => self.elect(),
                    }
                }
                _ = sweep.tick() => {
                    refresh = true;
                    self.elect();
                }
                Some((listed, replies)) = rounds.recv() => {
                    asking = false;
                    self.view.merge(&listed, replies);
                    self.emit_if_changed();
                    refresh = std::mem::take(&mut ask_again);
                }
            }
            if refresh {
                if asking {
                    ask_again = true;
                } else {
                    asking = true;
                    let peers = self.peers.clone();
                    let tx = rounds_tx.clone();
                    tokio::spawn(async move {
                        let listed = peers.listed();
                        let replies = peers.statuses().await;
                        let _ = tx.send((listed, replies));
                    });
                }
            }
        }
    }

    /// Sends the facts still queued, all at once, and takes no more.
    async fn flush(&mut self) {
        self.facts.close();
        let mut pending = Vec::new();
        while let Ok(fact) = self.facts.try_recv() {
            pending.push(send_fact(&self.peers, &self.id, fact));
        }
        futures_util::future::join_all(pending).await;
    }

    fn emit_if_changed(&mut self) {
        let counts = pool_counts(&self.status.get(), self.view.statuses());
        if self.last_counts.as_ref() == Some(&counts) {
            return;
        }
        let (sessions, by_account) = counts.clone();
        self.last_counts = Some(counts);
        let _ = self.events_tx.send(ProxyEvent::PoolChanged {
            sessions,
            by_account,
            at: Utc::now(),
        });
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// A status for a session that is starting.
pub(crate) fn starting_status(
    runtime_dir: &Path,
    kind: super::SessionKind,
    cwd: PathBuf,
    listen: Option<String>,
) -> SessionStatus {
    SessionStatus {
        id: session_id(runtime_dir),
        pid: std::process::id(),
        kind,
        version: env!("CARGO_PKG_VERSION").to_owned(),
        account: None,
        switching_to: None,
        cwd,
        clients: 0,
        turns_running: 0,
        started_at: Utc::now(),
        poller: false,
        listen,
        state: SessionState::Starting,
    }
}

#[cfg(test)]
#[path = "hub_tests.rs"]
mod tests;
