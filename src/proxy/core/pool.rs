//! The pool's rules: what a fact from another session changes here, and whether this
//! session polls the usage of the accounts.

use crate::proxy::pool::PeerMessage;

use super::effects::Effects;
use super::state::{CoreState, Now};

impl CoreState {
    /// A fact another session learned first-hand.
    pub(super) fn peer_fact(&mut self, message: PeerMessage, now: Now, fx: &mut Effects) {
        // Issue 14 part B: merge limits, report limit hits, move off an exhausted account.
        tracing::debug!(from = %message.from, "pool fact (not acted on yet)");
        let _ = (now, fx);
    }

    /// This session became (or stopped being) the pool's usage poller.
    pub(super) fn poller_role(&mut self, poller: bool, now: Now, fx: &mut Effects) {
        self.poller = poller;
        let _ = (now, fx);
    }
}
