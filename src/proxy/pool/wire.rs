//! What sessions of one pool say to each other over their control sockets: one JSON line per
//! request, answered by one [`crate::ipc::CommandAnswer`] line (with `data` for
//! [`PeerRequest::SessionStatus`] and [`PeerRequest::PoolSnapshot`]). No tokens: quotas are
//! what the `rate_limits_updated` event prints anyway, and a failed login carries no error
//! text.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::account_id::AccountId;
use crate::proxy::events::AccountRef;
use crate::quota::RateLimitSnapshot;

/// The wire version of [`PeerMessage`]; a message of another version is refused.
pub(crate) const POOL_WIRE_VERSION: u32 = 1;

/// What a session learned about an account (or about itself), first-hand.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum PoolFact {
    /// An account's rate limits: from the session's own stream (a live update, merged) or
    /// from a full `/wham/usage` read.
    Limits {
        account: AccountId,
        source: LimitsSource,
        /// For a read: when it was sent (a read sent before a live limit cannot undo it).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        read_started: Option<DateTime<Utc>>,
        /// The `codex` family, which switching follows.
        quota: Box<RateLimitSnapshot>,
        /// The other limit families.
        #[serde(default)]
        families: Vec<RateLimitSnapshot>,
    },
    /// A turn failed on this account with a usage limit.
    LimitHit { account: AccountId },
    /// A login of this account failed; `needs_login`: the store now says it must log in again.
    LoginFailed {
        account: AccountId,
        needs_login: bool,
    },
    /// The sender's status changed (account, clients, running turns): ask it again.
    SessionChanged,
    /// The sender exits.
    SessionEnded,
    /// The sender gave up the poller's lock: take it.
    PollerReleased,
}

/// Where a [`PoolFact::Limits`] comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum LimitsSource {
    Stream,
    Read,
}

/// One fact, as sent to a peer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct PeerMessage {
    pub v: u32,
    /// The sender's session id (its runtime directory's name, `<pid>-<uuid>`).
    pub from: String,
    /// When the sender learned it.
    pub at: DateTime<Utc>,
    pub fact: PoolFact,
}

/// The pool's requests on a session's control socket, beside the
/// [`ProxyCommand`](crate::proxy::events::ProxyCommand)s (same `"command"` tag).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub(crate) enum PeerRequest {
    /// A fact from a peer; answered once queued to the core.
    Pool(Box<PeerMessage>),
    /// "Who are you?": answered with a [`SessionStatus`] in `data`.
    SessionStatus,
    /// "What do you know of the accounts?": answered with a [`PoolSnapshot`] in `data`.
    PoolSnapshot,
}

/// What a session is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionKind {
    Dashboard,
    Serve,
}

/// Where a session is in its life, as `cs-tui sessions` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionState {
    /// Starting: choosing and logging in its account.
    Starting,
    /// Serving clients.
    Ready,
    /// A switch's login runs.
    Switching,
    /// Its app-server is gone.
    Down,
    /// It did not answer in time (stopped, or overloaded); set by the asker.
    Unresponsive,
    /// It answered, but not this protocol (an older cs-tui); set by the asker.
    UnknownVersion,
}

/// One running session, as its peers and `cs-tui sessions` see it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SessionStatus {
    /// Its runtime directory's name, `<pid>-<uuid>`.
    pub id: String,
    pub pid: u32,
    pub kind: SessionKind,
    /// cs-tui's version.
    pub version: String,
    /// The account it runs on (or is starting on).
    pub account: Option<AccountRef>,
    /// The account a switch under way moves it to.
    #[serde(default)]
    pub switching_to: Option<AccountRef>,
    /// The directory it was started in.
    pub cwd: PathBuf,
    /// Codex clients attached.
    pub clients: usize,
    pub turns_running: usize,
    pub started_at: DateTime<Utc>,
    /// Whether it polls the pool's usage.
    pub poller: bool,
    /// Where `serve` listens (`ws://127.0.0.1:PORT` or `unix://PATH`; never a token).
    #[serde(default)]
    pub listen: Option<String>,
    pub state: SessionState,
}

/// What a session knows of one account's limits (the answer to
/// [`PeerRequest::PoolSnapshot`], one per known account).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct KnownLimits {
    pub account: AccountId,
    pub quota: RateLimitSnapshot,
    #[serde(default)]
    pub families: Vec<RateLimitSnapshot>,
    /// When its usage was last read in full.
    #[serde(default)]
    pub read_at: Option<DateTime<Utc>>,
    /// When its numbers were last heard live.
    #[serde(default)]
    pub heard_at: Option<DateTime<Utc>>,
    /// A usage-limit hit is known and not lifted since.
    #[serde(default)]
    pub limit_hit: bool,
}

/// The answer to [`PeerRequest::PoolSnapshot`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct PoolSnapshot {
    pub accounts: Vec<KnownLimits>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fact_keeps_its_wire_form() {
        let message = PeerRequest::Pool(Box::new(PeerMessage {
            v: POOL_WIRE_VERSION,
            from: "4242-9f1c".into(),
            at: DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
            fact: PoolFact::LimitHit {
                account: AccountId::from("a1"),
            },
        }));
        let json = r#"{"command":"pool","v":1,"from":"4242-9f1c","at":"2027-01-15T08:00:00Z","fact":{"kind":"limit_hit","account":"a1"}}"#;
        assert_eq!(serde_json::to_string(&message).unwrap(), json);
        assert_eq!(serde_json::from_str::<PeerRequest>(json).unwrap(), message);
        assert_eq!(
            serde_json::to_string(&PeerRequest::SessionStatus).unwrap(),
            r#"{"command":"session_status"}"#
        );
        let limits = PoolFact::Limits {
            account: AccountId::from("a1"),
            source: LimitsSource::Stream,
            read_started: None,
            quota: Box::default(),
            families: Vec::new(),
        };
        let json = serde_json::to_value(&limits).unwrap();
        assert_eq!(json["kind"], "limits");
        assert_eq!(json["source"], "stream");
        assert!(json.get("read_started").is_none());
    }

    #[test]
    fn a_proxy_command_is_not_a_peer_request() {
        // The control socket tries `ProxyCommand` first, then `PeerRequest`: their tags differ.
        assert!(serde_json::from_str::<PeerRequest>(r#"{"command":"switch_best"}"#).is_err());
    }
}
