//! What the core's decisions ask the world to do. The state machine only returns these; the
//! actor ([`super::Core`]) carries them out, in order, like the relay runs a guard's
//! [`Actions`](crate::proxy::relay::Actions).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::account_id::AccountId;

use crate::proxy::directory::DirAccount;
use crate::proxy::events::{AccountRef, ProxyEvent};
use crate::proxy::history::SwitchRecord;
use crate::proxy::policy::PolicyConfig;
use crate::proxy::pool::PoolFact;
use crate::proxy::relay::ConnId;
use crate::proxy::turn_guard::GuardCommand;
use crate::quota::AccountLimits;

use super::switching::PendingSwitch;

/// One thing to do.
#[derive(Debug)]
pub(crate) enum Effect {
    /// Tell the rest of cs-tui (dashboard, `serve`'s JSON lines).
    Emit(ProxyEvent),
    /// Answer the command being handled.
    Reply(Result<String, String>),
    /// Tell one connection's turn guard.
    Guard { conn: ConnId, command: GuardCommand },
    /// Tell every guard that a switch's login runs (hold new turns) or is over.
    SetSwitching(bool),
    /// Tell every guard whether another account could take over now.
    SetAlternative(bool),
    /// Open (`true`) or close the relay's gate for attaching clients.
    SetReady(bool),
    /// Run a switch: choose, log in on the control connection, confirm; the outcome comes
    /// back as [`super::Input::SwitchFinished`].
    StartSwitch(Box<SwitchPlan>),
    /// Read these accounts' `/wham/usage`; answered by [`super::Input::UsageFetched`] with
    /// `started`.
    FetchUsage {
        ids: Vec<AccountId>,
        started: Instant,
    },
    /// Read these accounts' reset credits and announce them.
    ReadResetCredits(Vec<AccountRef>),
    /// Read the store's accounts again; answered by [`super::Input::AccountsListed`].
    ListAccounts,
    /// Append a line to the switch history.
    AppendHistory(SwitchRecord),
    /// Append a turn's line to the ledger.
    AppendLedger(Box<crate::proxy::ledger::TurnRecord>),
    /// Record in the store that the session now runs on this account.
    MarkActive(AccountId),
    /// Log this account into the restarted app-server; answered by
    /// [`super::Input::Relogged`].
    Relogin(DirAccount),
    /// Redeem a reset credit of the active account; the command's reply goes with it, and a
    /// reset is reported by [`super::Input::ResetRedeemed`].
    RedeemResetCredit {
        account: AccountId,
        idempotency_key: String,
    },
    /// Answer an `account/chatgptAuthTokens/refresh` request with this account's freshly
    /// refreshed tokens (`None`: no stored account matches).
    AnswerRefresh {
        id: Value,
        account: Option<DirAccount>,
    },
    /// Answer a server request on the control connection with an error.
    RespondError { id: Value, error: String },
    /// Send [`super::Input::Recheck`] after this long.
    RecheckAfter(Duration),
    /// Tell the user if the store refused refreshed tokens (they live in memory only).
    ReportUnsavedTokens,
    /// Tell the pool's other sessions what this one learned first-hand.
    Broadcast(PoolFact),
    /// Tell every guard to hold new turns (`true`: the active account is known exhausted and a
    /// switch away from it is pending) or to let them go.
    SetHoldTurns(bool),
}

/// Everything a switch task needs to know, copied out of the state when it starts.
#[derive(Debug)]
pub(crate) struct SwitchPlan {
    pub policy: PolicyConfig,
    pub accounts: Vec<DirAccount>,
    pub from: Option<AccountId>,
    pub snapshots: HashMap<AccountId, AccountLimits>,
    /// Accounts whose usage was read recently enough to choose on.
    pub fresh: HashSet<AccountId>,
    /// Accounts left by an automatic switch, and when (the cooldown).
    pub switched_away: HashMap<AccountId, i64>,
    pub pending: PendingSwitch,
}

/// The effects of one decision, in order.
#[derive(Debug, Default)]
pub(super) struct Effects(Vec<Effect>);

impl Effects {
    pub(super) fn push(&mut self, effect: Effect) {
        self.0.push(effect);
    }

    pub(super) fn emit(&mut self, event: ProxyEvent) {
        self.push(Effect::Emit(event));
    }

    pub(super) fn into_vec(self) -> Vec<Effect> {
        self.0
    }
}
