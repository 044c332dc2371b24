//! Which account a session takes, counting the sessions already on each: at start, and on an
//! automatic switch. [`place`] is pure; [`Peers::ask`] asks the store's other sessions where
//! they are (through [`peers::ask_statuses`], as the hub and `cs-tui sessions` do);
//! [`PlacementLock`] makes two sessions choosing at once choose one after the other, so the
//! second counts the first.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg};

use crate::account_id::AccountId;
use crate::config::Placement;
use crate::ipc::{CommandAnswer, Timeouts};
use crate::proxy::policy::{self, Candidate, Choice, PolicyConfig};
use crate::proxy::pool::peers::{self, Outcome, StatusReply};
use crate::proxy::pool::wire::{PeerRequest, PoolSnapshot};
use crate::proxy::pool::{SessionStatus, StatusCell};

/// How long a chooser waits for another to finish choosing before it goes on without the
/// lock (a stopped session may hold it).
pub(crate) const LOCK_WAIT: Duration = Duration::from_secs(2);

/// The placement lock's file, under `<store>/locks/`.
const LOCK_FILE: &str = "placement.lock";

/// What a session needs to place itself among its peers.
#[derive(Clone, Debug)]
pub(crate) struct PlanContext {
    /// The store directory: peers are found under `<store>/runtime/`, the lock under
    /// `<store>/locks/`.
    pub store_dir: PathBuf,
    /// Our own runtime directory, whose control socket is not a peer.
    pub own_dir: Option<PathBuf>,
    pub placement: Placement,
    /// Our status as peers see it: a choice is published there before the lock is let go.
    pub status: Option<StatusCell>,
    /// `false`: the pool is off (`CS_TUI_POOL=off`); the session chooses alone, as before.
    pub pool: bool,
}

/// Chooses an account for a session among `candidates`, `exclude` aside (the account a
/// switch leaves). `occupancy` counts the other live sessions on each account, not the one
/// choosing.
///
/// - [`Placement::Spread`]: score = bottleneck headroom / (sessions + 1), the highest wins.
///   Scores within the policy's `headroom_tie_points` of the best go to the earlier reset, then
///   to fewer sessions, then to `preferred` (`accounts use`), then to the lower id.
/// - [`Placement::Fill`]: among the eligible accounts that have sessions, the one with the most
///   (then the earlier reset, then `preferred`, then the id); none occupied: as spread. An
///   account near its limit is not eligible, so everyone leaves it then.
///
/// Eligibility is [`policy::eligible`]'s: enabled, logged in, not exhausted, under the soft
/// thresholds, out of cooldown, workspace not limited.
pub(crate) fn place(
    candidates: &[Candidate],
    occupancy: &HashMap<AccountId, usize>,
    mode: Placement,
    exclude: Option<&AccountId>,
    preferred: Option<&AccountId>,
    now: i64,
    config: &PolicyConfig,
) -> Choice {
    let eligible = policy::eligible(candidates, exclude, now, config);
    let sessions = |c: &Candidate| occupancy.get(&c.id).copied().unwrap_or(0);
    let not_preferred = |c: &Candidate| Some(&c.id) != preferred;
    let occupied: Vec<&Candidate> = eligible
        .iter()
        .copied()
        .filter(|c| sessions(c) > 0)
        .collect();
    let winner = match mode {
        Placement::Fill if !occupied.is_empty() => occupied.into_iter().min_by(|a, b| {
            sessions(b)
                .cmp(&sessions(a))
                .then_with(|| policy::reset_order(a).cmp(&policy::reset_order(b)))
                .then_with(|| not_preferred(a).cmp(&not_preferred(b)))
                .then_with(|| a.id.cmp(&b.id))
        }),
        Placement::Fill | Placement::Spread => {
            let score = |c: &Candidate| {
                policy::bottleneck_headroom(c.snapshot.as_ref()) / (sessions(c) + 1) as f64
            };
            eligible
                .iter()
                .map(|c| score(c))
                .max_by(f64::total_cmp)
                .and_then(|best| {
                    eligible
                        .iter()
                        .copied()
                        .filter(|c| best - score(c) <= config.headroom_tie_points)
                        .min_by(|a, b| {
                            policy::reset_order(a)
                                .cmp(&policy::reset_order(b))
                                .then_with(|| sessions(a).cmp(&sessions(b)))
                                .then_with(|| not_preferred(a).cmp(&not_preferred(b)))
                                .then_with(|| a.id.cmp(&b.id))
                        })
                })
        }
    };
    match winner {
        Some(winner) => Choice::Switch {
            to: winner.id.clone(),
        },
        None => Choice::NoneAvailable {
            earliest_reset: policy::earliest_reset(candidates, exclude),
        },
    }
}

/// How many sessions each account has: a session counts on the account a switch under way
/// moves it to, else on its account.
pub(crate) fn occupancy(statuses: &[SessionStatus]) -> HashMap<AccountId, usize> {
    let mut counts = HashMap::new();
    for status in statuses {
        if let Some(account) = status.switching_to.as_ref().or(status.account.as_ref()) {
            *counts.entry(account.id.clone()).or_insert(0) += 1;
        }
    }
    counts
}

/// The other sessions' statuses, each with its socket, skipping the sockets in `skip`; the
/// second list holds the sockets that gave no status (gone, silent, older).
async fn peers(
    store_dir: &Path,
    own_dir: Option<&Path>,
    skip: &[PathBuf],
) -> (Vec<(PathBuf, SessionStatus)>, Vec<PathBuf>) {
    let sockets = peers::sockets(store_dir, own_dir)
        .into_iter()
        .filter(|s| !skip.contains(s))
        .collect();
    let mut statuses = Vec::new();
    let mut failed = Vec::new();
    for (socket, reply) in peers::ask_statuses(sockets, Timeouts::PEER).await {
        match reply {
            StatusReply::Status(status) => statuses.push((socket, *status)),
            StatusReply::Gone | StatusReply::Unresponsive | StatusReply::OlderVersion => {
                tracing::debug!(socket = %socket.display(), ?reply, "no session status");
                failed.push(socket);
            }
        }
    }
    statuses.sort_by(|a, b| a.1.id.cmp(&b.1.id));
    (statuses, failed)
}

/// What the pool knows of the accounts, asked of one peer (the poller first: its numbers are
/// the freshest). `None` when no peer answers with one.
async fn pool_snapshot(peers: &[(PathBuf, SessionStatus)]) -> Option<PoolSnapshot> {
    let mut order: Vec<&(PathBuf, SessionStatus)> = peers.iter().collect();
    order.sort_by_key(|(_, status)| !status.poller);
    for (socket, _) in order {
        match peers::ask_one(socket, &PeerRequest::PoolSnapshot, Timeouts::PEER).await {
            Outcome::Answered(CommandAnswer {
                ok: true,
                data: Some(data),
                ..
            }) => {
                if let Ok(snapshot) = serde_json::from_value::<PoolSnapshot>(data) {
                    return Some(snapshot);
                }
            }
            outcome => {
                tracing::debug!(socket = %socket.display(), ?outcome, "no pool snapshot");
            }
        }
    }
    None
}

/// The other sessions of a session that chooses, and what they know.
pub(crate) struct Peers {
    pub statuses: Vec<SessionStatus>,
    /// One peer's view of the accounts' limits (none without peers, or from older ones).
    pub snapshot: Option<PoolSnapshot>,
    /// Sockets that gave no status (gone, silent, older): asking them again in the same
    /// choice would only cost another timeout.
    pub failed: Vec<PathBuf>,
}

impl Peers {
    /// Asks the store's other sessions (but those in `skip`) for their status and, with
    /// `with_snapshot` and any peer, one of them for what it knows of the accounts. Nobody
    /// with the pool off.
    pub(crate) async fn ask(context: &PlanContext, with_snapshot: bool, skip: &[PathBuf]) -> Self {
        if !context.pool {
            return Self {
                statuses: Vec::new(),
                snapshot: None,
                failed: Vec::new(),
            };
        }
        let (peers, failed) = peers(&context.store_dir, context.own_dir.as_deref(), skip).await;
        let snapshot = if with_snapshot && !peers.is_empty() {
            pool_snapshot(&peers).await
        } else {
            None
        };
        Self {
            statuses: peers.into_iter().map(|(_, status)| status).collect(),
            snapshot,
            failed,
        }
    }
}

/// `<store>/locks/placement.lock`, held while a session chooses its account and publishes
/// the choice.
pub(crate) struct PlacementLock {
    _lock: Flock<std::fs::File>,
}

impl PlacementLock {
    /// Takes the lock, waiting at most `wait`. `None` when it could not be had in time (the
    /// holder may be stopped) or at all: placement then goes on without it, at worst two
    /// sessions choosing at once pick the same account.
    pub(crate) async fn acquire(store_dir: &Path, wait: Duration) -> Option<Self> {
        let dir = store_dir.join("locks");
        // flock blocks, so it waits on a thread of its own, not on the runtime's blocking
        // pool: a runtime waits for its blocking tasks when it shuts down, so a holder
        // stopped for good would keep this process from exiting. Should the wait time out,
        // the lock taken later is dropped at once, its receiver gone.
        let (tx, rx) = tokio::sync::oneshot::channel();
        let waiter = std::thread::Builder::new()
            .name("placement-lock".to_owned())
            .spawn(move || {
                let _ = tx.send(lock_file(&dir));
            });
        if let Err(err) = waiter {
            tracing::warn!("placing without the placement lock: {err}");
            return None;
        }
        match tokio::time::timeout(wait, rx).await {
            Ok(Ok(Ok(lock))) => Some(Self { _lock: lock }),
            Ok(Ok(Err(err))) => {
                tracing::warn!("placing without the placement lock: {err:#}");
                None
            }
            Ok(Err(_)) => {
                tracing::warn!("placing without the placement lock: its waiter ended");
                None
            }
            Err(_) => {
                tracing::warn!(
                    "another session held the placement lock for {wait:?}: placing without it"
                );
                None
            }
        }
    }
}

fn lock_file(dir: &Path) -> color_eyre::Result<Flock<std::fs::File>> {
    use color_eyre::eyre::WrapErr;
    crate::paths::ensure_private_dir(dir)
        .wrap_err_with(|| format!("creating {}", dir.display()))?;
    crate::paths::lock_file(&dir.join(LOCK_FILE), FlockArg::LockExclusive)
}

#[cfg(test)]
pub(crate) mod tests;
