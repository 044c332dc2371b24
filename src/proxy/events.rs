//! What the proxy tells the rest of cs-tui (the dashboard, `cs-tui serve`'s JSON lines).
//!
//! Events are plain data: account references are the store's account ids plus a display name,
//! never tokens.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::account_id::AccountId;
use crate::quota::RateLimitSnapshot;

/// A stored account as events name it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountRef {
    /// The store's id of the account.
    pub id: AccountId,
    /// Its display name.
    pub name: String,
}

/// A stored account as the session's listing of the store has it: what the panel and the
/// picker show. Never a token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountSummary {
    /// The store's id of the account.
    pub id: AccountId,
    /// Its display name.
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
    /// Included in automatic switching.
    pub enabled: bool,
    /// Its refresh token was rejected: `cs-tui accounts add` again.
    pub needs_login: bool,
    /// The sign-in kind a newer cs-tui wrote that this version cannot use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unsupported_sign_in: Option<String>,
}

/// How many sessions of the pool run on an account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolShare {
    pub account: AccountRef,
    pub sessions: usize,
}

/// Why a switch happened (or was wanted).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SwitchReason {
    /// The backend refused a turn with `usageLimitExceeded`.
    UsageLimit,
    /// A rate-limit update reported a hard limit (100 %, a limit-reached type, no credits).
    HardLimit { detail: String },
    /// A window crossed the configured soft threshold.
    SoftThreshold {
        window: String,
        used_percent: f64,
        threshold: f64,
    },
    /// The user asked (hotkey, picker, or `cs-tui switch`).
    Manual,
    /// Another session of the pool learned that the active account is at a limit (`detail`
    /// says which); `session` is that session's id.
    Peer { session: String, detail: String },
}

impl SwitchReason {
    /// A short human sentence for the panel and the history.
    pub fn describe(&self) -> String {
        match self {
            Self::UsageLimit => "usage limit reached".to_owned(),
            Self::HardLimit { detail } => format!("hard limit: {detail}"),
            Self::SoftThreshold {
                window,
                used_percent,
                threshold,
            } => format!("{window} at {used_percent:.0}% (threshold {threshold:.0}%)"),
            Self::Manual => "manual switch".to_owned(),
            Self::Peer { session, detail } => {
                let pid = session.split('-').next().unwrap_or(session);
                format!("{detail} (seen by session {pid})")
            }
        }
    }
}

/// The proxy's connections as the panel shows them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionState {
    /// App-server starting, control connection not yet logged in.
    Starting,
    /// Logged in and accepting clients; `clients` Codex connections attached.
    Ready { clients: usize },
    /// The app-server is gone.
    Down,
}

/// Something the proxy did or saw.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ProxyEvent {
    /// An account's rate-limit reset credits, read from the backend.
    ResetCredits {
        account: AccountRef,
        credits: crate::accounts::reset_credits::ResetCredits,
        at: DateTime<Utc>,
    },
    /// The session read the store again (its periodic listing, or an `accounts` command
    /// announced a change) and what it lists changed: every stored account, in the store's
    /// order. Said only when something shown changed (an account added, removed, renamed,
    /// enabled, disabled, needing a login or logged in again).
    AccountsListed {
        accounts: Vec<AccountSummary>,
        at: DateTime<Utc>,
    },
    /// The session's active account changed or was first logged in.
    ActiveAccount {
        account: AccountRef,
        at: DateTime<Utc>,
    },
    /// New rate-limit numbers for an account (merged: a full picture, not the sparse update).
    /// `snapshot` is the account's quota (the `codex` family, which switching follows; empty
    /// when not known yet); `families` are its other limit families (model-specific limits,
    /// by `limitId`), shown only.
    RateLimitsUpdated {
        account: AccountRef,
        snapshot: RateLimitSnapshot,
        #[serde(default)]
        families: Vec<RateLimitSnapshot>,
        at: DateTime<Utc>,
    },
    /// A turn failed with a usage limit on this account: in this session, or in the pool's
    /// session `session` (its id).
    UsageLimitHit {
        account: AccountRef,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        session: Option<String>,
        at: DateTime<Utc>,
    },
    /// A turn started or ended; `running` is the number of turns in progress, `title_turns`
    /// how many of them are the TUI's title generation (docs/protocol.md §8).
    TurnsRunning {
        running: usize,
        #[serde(default)]
        title_turns: usize,
        at: DateTime<Utc>,
    },
    /// Turns asked for (`turn/start`) that the proxy holds back because a switch is under way
    /// or waits to start (a login mid-turn would kill them; the active account is known
    /// exhausted): `held` of them now. Said when the number changes: above 0, a turn was
    /// held; back to 0, the held turns went to the app-server (on the new account, or on the
    /// old one when no switch followed) or their client went away.
    TurnsHeld { held: usize, at: DateTime<Utc> },
    /// A turn refused at `from`'s usage limit was withheld from Codex and re-run on `to`
    /// (`waited_ms` after the limit was hit).
    TurnRerun {
        from: Option<AccountRef>,
        to: AccountRef,
        waited_ms: u64,
        at: DateTime<Utc>,
    },
    /// A switch is under way.
    SwitchStarted {
        from: Option<AccountRef>,
        to: AccountRef,
        reason: SwitchReason,
        at: DateTime<Utc>,
    },
    /// A switch waits for the running turn to end (a login mid-turn kills the turn).
    SwitchDeferred {
        to: Option<AccountRef>,
        reason: SwitchReason,
        at: DateTime<Utc>,
    },
    /// A switch completed and was confirmed by `account/read`.
    SwitchDone {
        from: Option<AccountRef>,
        to: AccountRef,
        reason: SwitchReason,
        elapsed_ms: u64,
        at: DateTime<Utc>,
    },
    /// A switch failed; the session stays on `from`.
    SwitchFailed {
        from: Option<AccountRef>,
        to: AccountRef,
        reason: SwitchReason,
        error: String,
        at: DateTime<Utc>,
    },
    /// A switch was wanted but no account is usable.
    NoAccountAvailable {
        reason: SwitchReason,
        /// When the first account becomes usable again, if known.
        earliest_reset: Option<DateTime<Utc>>,
        at: DateTime<Utc>,
    },
    /// The proxy's connection state changed.
    Connection {
        state: ConnectionState,
        at: DateTime<Utc>,
    },
    /// The pool of sessions on this store changed: `sessions` running (this one included),
    /// and how many run on each account.
    PoolChanged {
        sessions: usize,
        by_account: Vec<PoolShare>,
        at: DateTime<Utc>,
    },
    /// Something worth a line in the panel: the answer to a command, a first-run import.
    Notice { message: String, at: DateTime<Utc> },
    /// The app-server process exited. `restarting`: the session starts it again (the Codex
    /// TUI reconnects by itself); otherwise the session is over.
    AppServerExited {
        status: String,
        stderr_tail: String,
        restarting: bool,
        at: DateTime<Utc>,
    },
    /// A new app-server took the place of one that exited, logged in to `account`; clients
    /// can attach again.
    AppServerRestarted {
        account: AccountRef,
        at: DateTime<Utc>,
    },
    /// The session's core (switching, token refresh answers) stopped working: the session is
    /// over.
    SessionFailed { message: String, at: DateTime<Utc> },
}

/// What the rest of cs-tui asks of the proxy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum ProxyCommand {
    /// Switch to this stored account (store id) at the next turn boundary.
    SwitchTo { account_id: AccountId },
    /// Switch to the best other usable account at the next turn boundary.
    SwitchBest,
    /// Re-read every account's usage now.
    RefreshUsage,
    /// The store changed (an account added, removed, renamed, enabled or disabled by the
    /// `accounts` commands): read it again, and the usage of accounts new to the session.
    AccountsChanged,
    /// Redeem one reset credit of the session's active account on its control connection
    /// (`cs-tui accounts reset`). Answers the outcome (`reset`, `nothingToReset`, `noCredit`,
    /// `alreadyRedeemed`), or [`NOT_THE_ACTIVE_ACCOUNT`] when the session runs on another.
    ConsumeResetCredit {
        account_id: AccountId,
        idempotency_key: String,
    },
}

/// A session's answer to [`ProxyCommand::ConsumeResetCredit`] for an account it does not run
/// on: the caller asks the next session, or redeems outside any.
pub const NOT_THE_ACTIVE_ACCOUNT: &str = "that account is not the active account of this session";
#[cfg(test)]
mod tests {
    use super::*;

    /// The IPC wire and the event lines carry account ids as plain strings.
    #[test]
    fn account_ids_keep_their_wire_form() {
        let id = AccountId::from("0123abcd");
        let wire = [
            (
                ProxyCommand::SwitchTo {
                    account_id: id.clone(),
                },
                r#"{"command":"switch_to","account_id":"0123abcd"}"#,
            ),
            (
                ProxyCommand::ConsumeResetCredit {
                    account_id: id.clone(),
                    idempotency_key: "k1".into(),
                },
                r#"{"command":"consume_reset_credit","account_id":"0123abcd","idempotency_key":"k1"}"#,
            ),
        ];
        for (command, json) in wire {
            assert_eq!(serde_json::to_string(&command).unwrap(), json);
            assert_eq!(serde_json::from_str::<ProxyCommand>(json).unwrap(), command);
        }
        let account = AccountRef {
            id,
            name: "alice".into(),
        };
        let json = r#"{"id":"0123abcd","name":"alice"}"#;
        assert_eq!(serde_json::to_string(&account).unwrap(), json);
        assert_eq!(serde_json::from_str::<AccountRef>(json).unwrap(), account);
    }

    #[test]
    fn rate_limits_updated_carries_the_quota_and_the_other_families_apart() {
        let event = ProxyEvent::RateLimitsUpdated {
            account: AccountRef {
                id: "a".into(),
                name: "alice".into(),
            },
            snapshot: RateLimitSnapshot {
                limit_id: Some("codex".into()),
                ..Default::default()
            },
            families: vec![RateLimitSnapshot {
                limit_id: Some("codex_bengalfox".into()),
                limit_name: Some("GPT-5.3-Codex-Spark".into()),
                ..Default::default()
            }],
            at: DateTime::from_timestamp(0, 0).unwrap(),
        };
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["snapshot"]["limitId"], "codex");
        assert_eq!(json["families"][0]["limitName"], "GPT-5.3-Codex-Spark");
        // A line written before `families` existed still reads.
        let old = r#"{"event":"rate_limits_updated","account":{"id":"a","name":"alice"},
            "snapshot":{"primary":null},"at":"2026-01-01T00:00:00Z"}"#;
        let ProxyEvent::RateLimitsUpdated { families, .. } = serde_json::from_str(old).unwrap()
        else {
            panic!("wrong variant")
        };
        assert!(families.is_empty());
    }
}
