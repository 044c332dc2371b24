//! The pool: every cs-tui session on one store (dashboards and `serve` instances) shares what
//! it learns about the accounts with the others, with no daemon. Each session already serves
//! a control socket in `<store>/runtime/<pid>-<uuid>/`; a peer is every other such socket.
//!
//! - **Facts** ([`PoolFact`]): a session's core sends what it learned first-hand (its own
//!   stream's rate limits, its own usage reads, a limit hit, a failed login) as one JSON line
//!   to every peer ([`PeerRequest::Pool`](wire::PeerRequest::Pool)); a fact heard from a peer is never sent on.
//! - **One poller** per store: the session holding `<store>/locks/poller.lock` reads the usage
//!   of accounts on a timer; the others read only on events.
//! - **Placement**: a starting session (and an automatic switch) chooses its account counting
//!   the sessions already on each ([`SessionStatus`]).
//!
//! `CS_TUI_POOL=off` turns all of it off: every session acts alone, as before.

pub(crate) mod hub;
pub(crate) mod peers;
pub(crate) mod poller;
pub mod wire;

pub(crate) use wire::{PeerMessage, PoolFact};
pub use wire::{SessionKind, SessionState, SessionStatus};

use std::sync::Arc;

use tokio::sync::{mpsc, watch};

/// The environment variable that turns the pool off (`CS_TUI_POOL=off`).
pub const POOL_ENV: &str = "CS_TUI_POOL";

/// Whether the environment turns the pool off.
pub fn disabled_by_env() -> bool {
    std::env::var(POOL_ENV).is_ok_and(|v| matches!(v.trim(), "off" | "0" | "false" | "no"))
}

/// Where the core's broadcasts go: the session's pool hub, or nowhere when the pool is off.
#[derive(Clone, Debug, Default)]
pub(crate) struct PoolHandle {
    tx: Option<mpsc::UnboundedSender<PoolFact>>,
}

impl PoolHandle {
    /// A handle whose facts go nowhere (the pool is off, or a test).
    pub(crate) fn off() -> Self {
        Self { tx: None }
    }

    pub(crate) fn new(tx: mpsc::UnboundedSender<PoolFact>) -> Self {
        Self { tx: Some(tx) }
    }

    /// Whether facts go to a hub (the pool is on).
    pub(crate) fn is_on(&self) -> bool {
        self.tx.is_some()
    }

    /// Hands a fact to the hub, which sends it to every peer; never blocks.
    pub(crate) fn broadcast(&self, fact: PoolFact) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(fact);
        }
    }
}

/// This session's status as its peers and `cs-tui sessions` see it. The hub keeps it current
/// from the session's events; placement sets the account a starting session chose before its
/// login, so the next session to choose counts it.
#[derive(Clone, Debug)]
pub(crate) struct StatusCell(Arc<watch::Sender<SessionStatus>>);

impl StatusCell {
    pub(crate) fn new(initial: SessionStatus) -> Self {
        Self(Arc::new(watch::Sender::new(initial)))
    }

    pub(crate) fn get(&self) -> SessionStatus {
        self.0.borrow().clone()
    }

    /// Changes the status; watchers hear of it only if it changed.
    pub(crate) fn update(&self, change: impl FnOnce(&mut SessionStatus)) {
        self.0.send_if_modified(|status| {
            let before = status.clone();
            change(status);
            *status != before
        });
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<SessionStatus> {
        self.0.subscribe()
    }
}
