//! The app-server's JSON-RPC messages: cheap classification of relayed frames, and typed
//! parameters for the few messages the proxy acts on. Everything else is forwarded as bytes.

use memchr::memmem;
use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;

use crate::quota::RateLimitSnapshot;

/// Prefix of every request id the proxy itself sends, so its ids can never collide with the
/// TUI's (integers, prefixed strings and UUIDs, PROTOCOL.md §1).
pub const OWN_ID_PREFIX: &str = "cs-tui/";

pub mod method {
    pub const RATE_LIMITS_UPDATED: &str = "account/rateLimits/updated";
    pub const ERROR: &str = "error";
    pub const TURN_STARTED: &str = "turn/started";
    pub const TURN_COMPLETED: &str = "turn/completed";
    pub const TOKENS_REFRESH: &str = "account/chatgptAuthTokens/refresh";
    pub const LOGIN_COMPLETED: &str = "account/login/completed";
    pub const ACCOUNT_UPDATED: &str = "account/updated";
}

/// Server→client messages the relay acts on.
pub const RELAY_WATCHED: &[&str] = &[
    method::RATE_LIMITS_UPDATED,
    method::ERROR,
    method::TURN_STARTED,
    method::TURN_COMPLETED,
    method::TOKENS_REFRESH,
];

/// Finds whether `text` may be a message whose top-level `method` is one of `wanted`, without
/// parsing it: a SIMD substring search for `"method"` followed by `:"name"`. A hit must still
/// be confirmed by parsing (the key could belong to a nested object); a miss is certain,
/// because a top-level `"method":"x"` always appears literally (quotes inside JSON strings are
/// escaped).
pub fn sniff_method<'a>(text: &str, wanted: &[&'a str]) -> Option<&'a str> {
    let bytes = text.as_bytes();
    let finder = memmem::Finder::new(b"\"method\"");
    for start in finder.find_iter(bytes) {
        let rest = skip_ws(&bytes[start + 8..]);
        let Some(rest) = rest.strip_prefix(b":") else {
            continue;
        };
        let rest = skip_ws(rest);
        let Some(rest) = rest.strip_prefix(b"\"") else {
            continue;
        };
        if let Some(hit) = wanted.iter().find(|w| {
            rest.strip_prefix(w.as_bytes())
                .is_some_and(|after| after.first() == Some(&b'"'))
        }) {
            return Some(hit);
        }
    }
    None
}

/// Whether `text` may be a response to one of the proxy's own requests (ids `cs-tui/…`).
pub fn sniff_own_id(text: &str) -> bool {
    memmem::find(text.as_bytes(), b"\"cs-tui/").is_some()
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

    pub fn is_notification(&self) -> bool {
        self.method.is_some() && self.id.is_none()
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
    fn own_ids_are_sniffed() {
        assert!(sniff_own_id(r#"{"id":"cs-tui/abc/1","result":{}}"#));
        assert!(!sniff_own_id(r#"{"id":1,"result":{}}"#));
    }
}
