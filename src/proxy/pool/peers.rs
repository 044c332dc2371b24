//! Asking the store's sessions, in one place: the hub (facts and statuses to its peers), the
//! placement (where the others are) and `cs-tui sessions` (the listing) all go through
//! [`ask_one`] and classify what came back with [`Outcome`] and, for `session_status`,
//! [`StatusReply`]: gone, unresponsive, older (or not a cs-tui), or a status.
//!
//! [`Peers`] is the hub's view of the other sessions: every `<store>/runtime/*/control.sock`
//! but its own, asked all at once with the peer timeouts. A peer that is gone or does not
//! answer in time is skipped for a while, so a stopped or dead session costs the others one
//! timeout, not one per fact.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::SessionStatus;
use super::wire::PeerRequest;
use crate::ipc::{self, CommandAnswer, Timeouts};

/// How long a peer that failed is left out.
pub(crate) const SKIP_FOR: Duration = Duration::from_secs(60);

/// How one session took a request.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// It answered (perhaps with a refusal).
    Answered(CommandAnswer),
    /// Its socket is missing or nobody listens on it: the session is gone.
    Gone,
    /// It did not answer in time, or the connection broke: stopped, or overloaded.
    Unresponsive,
    /// It answered something that is not an answer (not a cs-tui of this kind).
    Unreadable,
}

impl Outcome {
    fn of(result: color_eyre::Result<CommandAnswer>) -> Self {
        let err = match result {
            Ok(answer) => return Outcome::Answered(answer),
            Err(err) => err,
        };
        if err.chain().any(|e| e.is::<serde_json::Error>()) {
            return Outcome::Unreadable;
        }
        let gone = err
            .chain()
            .filter_map(|e| e.downcast_ref::<std::io::Error>())
            .any(|e| {
                matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                )
            });
        if gone {
            Outcome::Gone
        } else {
            tracing::debug!("a session did not answer: {err:#}");
            Outcome::Unresponsive
        }
    }
}

/// What a session said when asked for its status: the one classification the hub, the
/// placement and `cs-tui sessions` share.
#[derive(Debug)]
pub(crate) enum StatusReply {
    /// Its status.
    Status(Box<SessionStatus>),
    /// There is no session behind the socket (missing, or nobody listens).
    Gone,
    /// No answer in time, or the connection broke: a stopped (`kill -STOP`, Ctrl-Z) or
    /// overloaded session. It may still hold its account.
    Unresponsive,
    /// It answered, but not with a status it can be read as: an older cs-tui ("not a
    /// command"), a status of another shape, or not a cs-tui at all.
    OlderVersion,
}

impl StatusReply {
    pub(crate) fn of(outcome: Outcome) -> Self {
        match outcome {
            Outcome::Answered(CommandAnswer {
                ok: true,
                data: Some(data),
                ..
            }) => match serde_json::from_value::<SessionStatus>(data) {
                Ok(status) => StatusReply::Status(Box::new(status)),
                Err(err) => {
                    tracing::debug!("a session status of another shape: {err}");
                    StatusReply::OlderVersion
                }
            },
            Outcome::Answered(answer) => {
                tracing::debug!(message = %answer.message, "no session status");
                StatusReply::OlderVersion
            }
            Outcome::Unreadable => StatusReply::OlderVersion,
            Outcome::Gone => StatusReply::Gone,
            Outcome::Unresponsive => StatusReply::Unresponsive,
        }
    }
}

/// Every session socket on the store (`<store>/runtime/*/control.sock`) but the one under
/// `own_dir`.
pub(crate) fn sockets(store_dir: &Path, own_dir: Option<&Path>) -> Vec<PathBuf> {
    ipc::session_sockets(store_dir)
        .into_iter()
        .filter(|socket| own_dir.is_none_or(|own| !socket.starts_with(own)))
        .collect()
}

/// Sends `request` to one session and classifies what came back.
pub(crate) async fn ask_one(
    socket: &Path,
    request: &impl Serialize,
    timeouts: Timeouts,
) -> Outcome {
    Outcome::of(ipc::send_with(socket, request, timeouts).await)
}

/// Sends `request` to these sockets, all at once: a silent session costs at most `timeouts`
/// and delays no other.
pub(crate) async fn ask_all(
    sockets: Vec<PathBuf>,
    request: &impl Serialize,
    timeouts: Timeouts,
) -> Vec<(PathBuf, Outcome)> {
    let asks = sockets.into_iter().map(|socket| async move {
        let outcome = ask_one(&socket, request, timeouts).await;
        (socket, outcome)
    });
    futures_util::future::join_all(asks).await
}

/// Asks these sockets for their status, all at once.
pub(crate) async fn ask_statuses(
    sockets: Vec<PathBuf>,
    timeouts: Timeouts,
) -> Vec<(PathBuf, StatusReply)> {
    ask_all(sockets, &PeerRequest::SessionStatus, timeouts)
        .await
        .into_iter()
        .map(|(socket, outcome)| (socket, StatusReply::of(outcome)))
        .collect()
}

/// The peers of one session.
#[derive(Debug)]
pub(crate) struct Peers {
    store_dir: PathBuf,
    /// Our own runtime directory: its socket is not a peer.
    own_dir: PathBuf,
    timeouts: Timeouts,
    skip_for: Duration,
    /// Peers left out, and until when.
    skipped: Mutex<HashMap<PathBuf, Instant>>,
}

impl Peers {
    pub(crate) fn new(store_dir: &Path, own_dir: &Path) -> Self {
        Self::with(store_dir, own_dir, Timeouts::PEER, SKIP_FOR)
    }

    pub(crate) fn with(
        store_dir: &Path,
        own_dir: &Path,
        timeouts: Timeouts,
        skip_for: Duration,
    ) -> Self {
        Self {
            store_dir: store_dir.to_owned(),
            own_dir: own_dir.to_owned(),
            timeouts,
            skip_for,
            skipped: Mutex::new(HashMap::new()),
        }
    }

    /// Every peer socket there is now, skipped ones included.
    pub(crate) fn listed(&self) -> Vec<PathBuf> {
        sockets(&self.store_dir, Some(&self.own_dir))
    }

    /// Whether a peer is left out now.
    pub(crate) fn is_skipped(&self, socket: &Path) -> bool {
        let mut skipped = self.skipped.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        skipped.retain(|_, until| *until > now);
        skipped.contains_key(socket)
    }

    /// A peer spoke to us: it is not left out any more. `id` is its session id (its runtime
    /// directory's name); anything else is ignored.
    pub(crate) fn heard_from(&self, id: &str) {
        let plain = !id.is_empty() && id != "." && id != ".." && !id.contains('/');
        if plain {
            let socket = self
                .store_dir
                .join("runtime")
                .join(id)
                .join(ipc::SOCKET_NAME);
            self.skipped
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&socket);
        }
    }

    /// Sends `request` to every peer not left out, all at once, and returns each one's
    /// outcome. A peer that is gone or silent is left out for [`SKIP_FOR`].
    pub(crate) async fn ask(&self, request: &impl Serialize) -> Vec<(PathBuf, Outcome)> {
        let sockets: Vec<PathBuf> = self
            .listed()
            .into_iter()
            .filter(|socket| !self.is_skipped(socket))
            .collect();
        self.ask_these(sockets, request).await
    }

    /// Sends `request` to these sockets, all at once.
    pub(crate) async fn ask_these(
        &self,
        sockets: Vec<PathBuf>,
        request: &impl Serialize,
    ) -> Vec<(PathBuf, Outcome)> {
        let outcomes = ask_all(sockets, request, self.timeouts).await;
        let until = Instant::now() + self.skip_for;
        let mut skipped = self.skipped.lock().unwrap_or_else(PoisonError::into_inner);
        for (socket, outcome) in &outcomes {
            match outcome {
                Outcome::Gone | Outcome::Unresponsive => {
                    tracing::debug!(socket = %socket.display(), ?outcome, "a peer is left out for a while");
                    skipped.insert(socket.clone(), until);
                }
                Outcome::Answered(_) | Outcome::Unreadable => {
                    skipped.remove(socket);
                }
            }
        }
        outcomes
    }

    /// Asks every peer not left out for its status.
    pub(crate) async fn statuses(&self) -> Vec<(PathBuf, StatusReply)> {
        self.ask(&PeerRequest::SessionStatus)
            .await
            .into_iter()
            .map(|(socket, outcome)| (socket, StatusReply::of(outcome)))
            .collect()
    }
}
