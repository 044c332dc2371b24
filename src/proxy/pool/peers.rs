//! The other sessions on the store, as the hub reaches them: every
//! `<store>/runtime/*/control.sock` but our own, asked all at once with the peer timeouts. A
//! peer that refuses, is gone or does not answer in time is skipped for a while, so a stopped
//! or dead session costs the others one timeout, not one per fact.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::ipc::{self, CommandAnswer, Timeouts};

/// How long a peer that failed is left out.
pub(crate) const SKIP_FOR: Duration = Duration::from_secs(60);

/// How one peer took a request.
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
            Outcome::Unresponsive
        }
    }
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
        ipc::session_sockets(&self.store_dir)
            .into_iter()
            .filter(|socket| !socket.starts_with(&self.own_dir))
            .collect()
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
        let timeouts = self.timeouts;
        let asks = sockets.into_iter().map(|socket| async move {
            let outcome = Outcome::of(ipc::send_with(&socket, request, timeouts).await);
            (socket, outcome)
        });
        let outcomes = futures_util::future::join_all(asks).await;
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
}
