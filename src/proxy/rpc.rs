//! The app-server's JSON-RPC messages: cheap classification of relayed frames, and typed
//! parameters for the few messages the proxy acts on. Everything else is forwarded as bytes.

use std::sync::LazyLock;

use memchr::memmem;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::quota::RateLimitSnapshot;

/// Prefix of every request id the proxy itself sends, so its ids can never collide with the
/// TUI's (integers, prefixed strings and UUIDs, docs/protocol.md §1).
pub const OWN_ID_PREFIX: &str = "cs-tui/";

/// Prefix of the request ids of the TUI's title generation (`thread/start` and `turn/start` on
/// a temporary thread, docs/protocol.md §8).
const TITLE_REQUEST_PREFIX: &str = "temporary-structured-";

/// What a turn was for, told by its `turn/start`: the user's prompt, or the TUI's own title
/// generation. A title turn spends quota like any other but is never the user's, so it is
/// never re-run and the ledger marks it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TurnPurpose {
    /// A turn the user asked for (and anything not known to be the TUI's own).
    #[default]
    User,
    /// The TUI's title generation.
    Title,
}

impl TurnPurpose {
    /// The purpose of the turn a `turn/start` request with this id starts.
    pub fn of_request(id: Option<&Value>) -> Self {
        match id {
            Some(Value::String(id)) if id.starts_with(TITLE_REQUEST_PREFIX) => Self::Title,
            _ => Self::User,
        }
    }

    pub fn is_title(self) -> bool {
        self == Self::Title
    }

    /// The name in the ledger, `--json` and `--csv`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Title => "title",
        }
    }
}

pub mod method {
    pub const RATE_LIMITS_UPDATED: &str = "account/rateLimits/updated";
    pub const ERROR: &str = "error";
    pub const TURN_STARTED: &str = "turn/started";
    pub const TURN_COMPLETED: &str = "turn/completed";
    pub const TOKEN_USAGE_UPDATED: &str = "thread/tokenUsage/updated";
    pub const THREAD_STARTED: &str = "thread/started";
    pub const THREAD_SETTINGS_UPDATED: &str = "thread/settings/updated";
    pub const MODEL_REROUTED: &str = "model/rerouted";
    pub const TOKENS_REFRESH: &str = "account/chatgptAuthTokens/refresh";
    pub const LOGIN_COMPLETED: &str = "account/login/completed";
}

/// Server→client messages the relay acts on.
pub const RELAY_WATCHED: &[&str] = &[
    method::RATE_LIMITS_UPDATED,
    method::ERROR,
    method::TURN_STARTED,
    method::TURN_COMPLETED,
    method::TOKENS_REFRESH,
    method::TOKEN_USAGE_UPDATED,
    method::THREAD_STARTED,
    method::THREAD_SETTINGS_UPDATED,
    method::MODEL_REROUTED,
];

static METHOD_KEY: LazyLock<memmem::Finder<'static>> =
    LazyLock::new(|| memmem::Finder::new(b"\"method\""));
static OWN_ID: LazyLock<memmem::Finder<'static>> =
    LazyLock::new(|| memmem::Finder::new(b"\"cs-tui/"));

/// Finds whether `text` may be a message whose top-level `method` is one of `wanted`, without
/// parsing it: a SIMD substring search for `"method"` followed by `:"name"`. A hit must still
/// be confirmed by parsing (the key could belong to a nested object); a miss is certain for
/// names written without escapes (serde never escapes `/` or letters), because a top-level
/// `"method":"x"` always appears literally (quotes inside JSON strings are escaped).
pub fn sniff_method<'a>(text: &str, wanted: &[&'a str]) -> Option<&'a str> {
    method_candidates(text.as_bytes())
        .find_map(|name| wanted.iter().find(|w| w.as_bytes() == name))
        .copied()
}

/// Every `"method":"NAME"` in `bytes`, in order, as the raw NAME bytes up to the next quote.
/// The top-level method of a message, if it has one, is among them; so may be nested ones.
pub fn method_candidates(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    METHOD_KEY.find_iter(bytes).filter_map(move |start| {
        let rest = skip_ws(&bytes[start + 8..]);
        let rest = skip_ws(rest.strip_prefix(b":")?);
        let rest = rest.strip_prefix(b"\"")?;
        let end = memchr::memchr(b'"', rest)?;
        Some(&rest[..end])
    })
}

/// Whether `text` may be a response to one of the proxy's own requests (ids `cs-tui/…`).
pub fn sniff_own_id(text: &str) -> bool {
    sniff_own_id_bytes(text.as_bytes())
}

/// [`sniff_own_id`] on bytes that may not be UTF-8 yet.
pub fn sniff_own_id_bytes(bytes: &[u8]) -> bool {
    OWN_ID.find(bytes).is_some()
}

/// What the first bytes of a message say about it, read in O(1) instead of scanning it.
///
/// serde writes keys in declaration order, so the app-server's and the Codex TUI's messages
/// start `{"method":"…"` (notifications), `{"id":…,"method":"…"` (requests) or
/// `{"id":…,"result"…` (responses). Anything else — other key orders, whitespace, escapes —
/// is [`Lead::Unknown`] and must be scanned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lead<'a> {
    /// The top-level method is certainly this name: the message starts `{"method":"NAME"` or
    /// `{"id":ID,"method":"NAME"`.
    Method(&'a [u8]),
    /// The message starts `{"id":ID,` followed by a key other than `method`; the id as
    /// written (without quotes) when it is a string, `None` when it is a number. Where its
    /// method is (if it has one) is not known.
    Id(Option<&'a [u8]>),
    /// The first bytes do not tell.
    Unknown,
}

impl Lead<'_> {
    /// Whether the message may be a response to one of the proxy's own requests. A message
    /// with a method is not a response; a leading id settles it; otherwise `bytes` is scanned.
    pub fn may_be_own_response(&self, bytes: &[u8]) -> bool {
        match self {
            Lead::Method(_) => false,
            Lead::Id(Some(id)) => id.starts_with(OWN_ID_PREFIX.as_bytes()),
            Lead::Id(None) => false,
            Lead::Unknown => sniff_own_id_bytes(bytes),
        }
    }
}

/// Reads the [`Lead`] of a message (or of its first bytes).
pub fn lead(bytes: &[u8]) -> Lead<'_> {
    if let Some(rest) = bytes.strip_prefix(b"{\"method\":\"") {
        return plain_string(rest).map_or(Lead::Unknown, Lead::Method);
    }
    let Some(rest) = bytes.strip_prefix(b"{\"id\":") else {
        return Lead::Unknown;
    };
    let (id, rest) = if let Some(quoted) = rest.strip_prefix(b"\"") {
        let Some(id) = plain_string(quoted) else {
            return Lead::Unknown;
        };
        (Some(id), &quoted[id.len() + 1..])
    } else {
        let digits = rest
            .iter()
            .take_while(|b| b.is_ascii_digit() || **b == b'-')
            .count();
        if digits == 0 {
            return Lead::Unknown;
        }
        (None, &rest[digits..])
    };
    let Some(rest) = rest.strip_prefix(b",\"") else {
        return Lead::Unknown;
    };
    match rest.strip_prefix(b"method\":\"") {
        Some(method) => plain_string(method).map_or(Lead::Unknown, Lead::Method),
        None => Lead::Id(id),
    }
}

/// The bytes of a JSON string body up to its closing quote, when no escape comes first (an
/// escaped name's raw bytes differ from its value, so it cannot be compared as bytes).
fn plain_string(bytes: &[u8]) -> Option<&[u8]> {
    let end = memchr::memchr2(b'"', b'\\', bytes)?;
    (bytes[end] == b'"').then(|| &bytes[..end])
}

fn skip_ws(bytes: &[u8]) -> &[u8] {
    let n = bytes.iter().take_while(|b| b.is_ascii_whitespace()).count();
    &bytes[n..]
}

/// The envelope of any message; `params` stays raw until we know we want it.
#[derive(Debug, Deserialize)]
pub struct Envelope<'a> {
    #[serde(default, borrow)]
    pub method: Option<&'a str>,
    #[serde(default)]
    pub id: Option<Value>,
    #[serde(default, borrow)]
    pub params: Option<&'a RawValue>,
    #[serde(default, borrow)]
    pub result: Option<&'a RawValue>,
    #[serde(default)]
    pub error: Option<Value>,
}

impl<'a> Envelope<'a> {
    pub fn parse(text: &'a str) -> Option<Self> {
        serde_json::from_str(text).ok()
    }

    pub fn params<T: Deserialize<'a>>(&self) -> Option<T> {
        serde_json::from_str(self.params?.get()).ok()
    }

    pub fn is_request(&self) -> bool {
        self.method.is_some() && self.id.is_some()
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RateLimitsUpdatedParams {
    pub rate_limits: RateLimitSnapshot,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorParams {
    pub error: TurnErrorBody,
    #[serde(default)]
    pub will_retry: bool,
    #[serde(default)]
    pub thread_id: Option<String>,
    #[serde(default)]
    pub turn_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TurnErrorBody {
    #[serde(default)]
    pub message: String,
    /// A string (`"usageLimitExceeded"`) or, for some variants, an object keyed by the variant.
    #[serde(default)]
    pub codex_error_info: Option<Value>,
}

impl TurnErrorBody {
    pub fn is_usage_limit(&self) -> bool {
        match &self.codex_error_info {
            Some(Value::String(s)) => s == "usageLimitExceeded",
            Some(Value::Object(map)) => map.contains_key("usageLimitExceeded"),
            _ => false,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TurnParams {
    pub thread_id: String,
    pub turn: TurnInfo,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TurnInfo {
    pub id: String,
    #[serde(default)]
    pub status: Option<String>,
}

/// `thread/tokenUsage/updated`: `{threadId, turnId, tokenUsage: {total, last,
/// modelContextWindow}}` (docs/protocol.md §3). `last` is the model response just finished,
/// `total` the thread's running sum.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenUsageParams {
    pub thread_id: String,
    pub turn_id: String,
    pub token_usage: ThreadTokenUsage,
}

#[derive(Debug, Deserialize)]
pub struct ThreadTokenUsage {
    pub total: TokenBreakdown,
    pub last: TokenBreakdown,
}

/// One `TokenUsageBreakdown` (more fields exist; these are the ones the ledger keeps).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenBreakdown {
    #[serde(default)]
    pub total_tokens: u64,
    #[serde(default)]
    pub input_tokens: u64,
    #[serde(default)]
    pub cached_input_tokens: u64,
    #[serde(default)]
    pub output_tokens: u64,
}

/// `thread/started`: `{thread: {id, model, …}}`.
#[derive(Debug, Deserialize)]
pub struct ThreadStartedParams {
    pub thread: ThreadInfo,
}

#[derive(Debug, Deserialize)]
pub struct ThreadInfo {
    pub id: String,
    #[serde(default)]
    pub model: Option<String>,
}

/// `thread/settings/updated`: `{threadId, threadSettings: {model, …}}`, sent before the
/// `turn/started` of a `turn/start` that changed a setting (its `model` overrides the model
/// for that turn and the ones after it; measured on 0.169.0).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ThreadSettingsUpdatedParams {
    pub thread_id: String,
    pub thread_settings: ThreadSettings,
}

#[derive(Debug, Deserialize)]
pub struct ThreadSettings {
    #[serde(default)]
    pub model: Option<String>,
}

/// `model/rerouted`: `{threadId, turnId, fromModel, toModel, reason}`: the backend served
/// this turn with another model.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelReroutedParams {
    pub thread_id: String,
    pub turn_id: String,
    pub to_model: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RefreshParams {
    #[serde(default)]
    pub previous_account_id: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoginCompletedParams {
    pub success: bool,
    #[serde(default)]
    pub error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_temporary_structured_string_id_starts_a_title_turn() {
        use serde_json::json;
        let of = |id: Value| TurnPurpose::of_request(Some(&id));
        assert_eq!(of(json!("temporary-structured-7")), TurnPurpose::Title);
        assert_eq!(of(json!("temporary-structured-")), TurnPurpose::Title);
        assert_eq!(of(json!(7)), TurnPurpose::User);
        assert_eq!(of(json!("7e0b-temporary-structured-1")), TurnPurpose::User);
        assert_eq!(of(json!("cs-tui/rerun/1/2")), TurnPurpose::User);
        assert_eq!(TurnPurpose::of_request(None), TurnPurpose::User);
    }

    #[test]
    fn sniffs_only_watched_top_level_methods() {
        let w = RELAY_WATCHED;
        assert_eq!(
            sniff_method(r#"{"method":"turn/started","params":{}}"#, w),
            Some("turn/started")
        );
        assert_eq!(
            sniff_method(
                r#"{ "id": 3, "method" : "account/chatgptAuthTokens/refresh" }"#,
                w
            ),
            Some("account/chatgptAuthTokens/refresh")
        );
        assert_eq!(
            sniff_method(r#"{"method":"item/started","params":{}}"#, w),
            None
        );
        // A prefix of a watched name is not a hit.
        assert_eq!(sniff_method(r#"{"method":"error/other"}"#, w), None);
        // A watched name inside a string value is escaped, so it cannot match.
        assert_eq!(
            sniff_method(
                r#"{"method":"item/delta","params":{"text":"\"method\":\"error\""}}"#,
                w
            ),
            None
        );
        assert_eq!(sniff_method("not json at all", w), None);
        assert_eq!(sniff_method("", w), None);
    }

    #[test]
    fn usage_limit_is_recognised_in_both_shapes() {
        let s: ErrorParams = serde_json::from_str(
            r#"{"error":{"message":"x","codexErrorInfo":"usageLimitExceeded"},"willRetry":false,"threadId":"t","turnId":"u"}"#,
        )
        .unwrap();
        assert!(s.error.is_usage_limit());
        let o: ErrorParams = serde_json::from_str(
            r#"{"error":{"message":"x","codexErrorInfo":{"usageLimitExceeded":{}}},"willRetry":false}"#,
        )
        .unwrap();
        assert!(o.error.is_usage_limit());
        let other: ErrorParams = serde_json::from_str(
            r#"{"error":{"message":"x","codexErrorInfo":"other"},"willRetry":false}"#,
        )
        .unwrap();
        assert!(!other.error.is_usage_limit());
    }

    #[test]
    fn the_lead_names_the_method_without_scanning() {
        assert_eq!(
            lead(br#"{"method":"turn/started","params":{}}"#),
            Lead::Method(b"turn/started")
        );
        assert_eq!(
            lead(br#"{"id":12,"method":"account/read","params":{}}"#),
            Lead::Method(b"account/read")
        );
        assert_eq!(lead(br#"{"id":"a-b","method":"x"}"#), Lead::Method(b"x"));
        assert_eq!(lead(br#"{"id":-3,"result":{}}"#), Lead::Id(None));
        assert_eq!(
            lead(br#"{"id":"cs-tui/u/1","result":{}}"#),
            Lead::Id(Some(b"cs-tui/u/1"))
        );
        // An escape, whitespace, another key order or a cut-off name: scan instead.
        assert_eq!(lead(br#"{"method":"turn\/started"}"#), Lead::Unknown);
        assert_eq!(lead(br#"{ "method":"x"}"#), Lead::Unknown);
        assert_eq!(lead(br#"{"params":{},"method":"x"}"#), Lead::Unknown);
        assert_eq!(lead(br#"{"method":"turn/sta"#), Lead::Unknown);
        assert_eq!(lead(br#"{"id":null,"result":{}}"#), Lead::Unknown);
        assert_eq!(lead(br#"{"id":"a\"b","result":{}}"#), Lead::Unknown);
        assert_eq!(lead(b""), Lead::Unknown);
    }

    #[test]
    fn own_responses_are_recognised_from_the_lead_or_a_scan() {
        let own = |m: &str| lead(m.as_bytes()).may_be_own_response(m.as_bytes());
        assert!(own(r#"{"id":"cs-tui/u/1","result":{}}"#));
        assert!(own(r#"{"result":{},"id":"cs-tui/u/1"}"#));
        assert!(!own(r#"{"id":"other","result":{"x":"cs-tui/"}}"#));
        assert!(!own(r#"{"id":7,"result":{}}"#));
        assert!(!own(r#"{"method":"x","params":{"id":"cs-tui/u/1"}}"#));
    }

    #[test]
    fn candidates_list_every_method_key() {
        let text = br#"{"id":1,"result":{"a":{"method" : "inner"}},"method":"outer"}"#;
        let names: Vec<&[u8]> = method_candidates(text).collect();
        assert_eq!(names, [&b"inner"[..], &b"outer"[..]]);
    }

    #[test]
    fn own_ids_are_sniffed() {
        assert!(sniff_own_id(r#"{"id":"cs-tui/abc/1","result":{}}"#));
        assert!(!sniff_own_id(r#"{"id":1,"result":{}}"#));
    }
}
