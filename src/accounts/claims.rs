//! Reading the claims of ChatGPT JWTs (docs/protocol.md §5).
//!
//! Nothing here checks a signature: cs-tui only reads what its own tokens say about themselves
//! (expiry, e-mail, plan, account), and the backend is the one that validates them.

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use chrono::{DateTime, Utc};
use serde_json::Value;

/// The namespace OpenAI puts its own claims under.
const AUTH_CLAIMS: &str = "https://api.openai.com/auth";
/// Access tokens carry the e-mail here rather than at the top level.
const PROFILE_CLAIMS: &str = "https://api.openai.com/profile";

/// JWT segments are base64url without padding, but accept padded ones too rather than
/// failing on a harmless variation.
const JWT_BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// What cs-tui reads from an id or access token.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TokenClaims {
    pub expires_at: Option<DateTime<Utc>>,
    pub issued_at: Option<DateTime<Utc>>,
    pub email: Option<String>,
    pub plan: Option<String>,
    pub chatgpt_account_id: Option<String>,
    pub user_id: Option<String>,
    pub subscription_active_until: Option<DateTime<Utc>>,
}

/// Why a token could not be read. Never holds any part of the token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ClaimsError {
    #[error("is not a JWT (expected three dot-separated parts)")]
    NotAJwt,
    #[error("has a payload that is not base64url")]
    BadBase64,
    #[error("has a payload that is not a JSON object")]
    BadJson,
}

/// Reads the claims of `token`.
pub(crate) fn parse(token: &str) -> Result<TokenClaims, ClaimsError> {
    let mut parts = token.split('.');
    let (Some(_header), Some(payload), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ClaimsError::NotAJwt);
    };
    let bytes = JWT_BASE64
        .decode(payload)
        .map_err(|_| ClaimsError::BadBase64)?;
    let claims: Value = serde_json::from_slice(&bytes).map_err(|_| ClaimsError::BadJson)?;
    if !claims.is_object() {
        return Err(ClaimsError::BadJson);
    }
    Ok(from_value(&claims))
}

fn from_value(claims: &Value) -> TokenClaims {
    let auth = claims.get(AUTH_CLAIMS);
    let auth_str = |key: &str| {
        auth.and_then(|a| a.get(key))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    let email = claims
        .get("email")
        .and_then(Value::as_str)
        .or_else(|| {
            claims
                .get(PROFILE_CLAIMS)
                .and_then(|p| p.get("email"))
                .and_then(Value::as_str)
        })
        .filter(|s| !s.is_empty())
        .map(str::to_owned);
    TokenClaims {
        expires_at: claims.get("exp").and_then(timestamp),
        issued_at: claims.get("iat").and_then(timestamp),
        email,
        plan: auth_str("chatgpt_plan_type"),
        chatgpt_account_id: auth_str("chatgpt_account_id"),
        user_id: auth_str("chatgpt_user_id").or_else(|| auth_str("user_id")),
        subscription_active_until: auth
            .and_then(|a| a.get("chatgpt_subscription_active_until"))
            .and_then(timestamp),
    }
}

/// A time claim: unix seconds (`exp`, `iat`), or an RFC 3339 string (the subscription end has
/// been seen as both).
fn timestamp(value: &Value) -> Option<DateTime<Utc>> {
    match value {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().map(|f| f as i64))
            .and_then(|secs| DateTime::from_timestamp(secs, 0)),
        Value::String(s) => DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .ok()
            .or_else(|| {
                s.parse::<i64>()
                    .ok()
                    .and_then(|secs| DateTime::from_timestamp(secs, 0))
            }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cs_tui_testkit::FakeAccount;
    use cs_tui_testkit::jwt::{encode_unsigned, unix_now};
    use serde_json::json;

    #[test]
    fn reads_what_codex_reads_from_both_tokens() {
        let fake = FakeAccount::new("alice").with_plan("pro");
        let id = parse(&fake.id_token(3600)).unwrap();
        assert_eq!(id.email.as_deref(), Some("alice@example.com"));
        assert_eq!(id.plan.as_deref(), Some("pro"));
        assert_eq!(id.chatgpt_account_id.as_deref(), Some("acct-alice"));
        assert_eq!(id.user_id.as_deref(), Some("user-alice"));
        assert_eq!(
            id.subscription_active_until.unwrap().to_rfc3339(),
            "2099-01-01T00:00:00+00:00"
        );

        // The access token has the e-mail only under the profile claim.
        let access = parse(&fake.access_token(-60, 3)).unwrap();
        assert_eq!(access.email.as_deref(), Some("alice@example.com"));
        let exp = access.expires_at.unwrap().timestamp();
        assert!((exp - (unix_now() - 60)).abs() <= 2, "exp {exp}");
    }

    #[test]
    fn tolerates_missing_claims_and_padding() {
        let token = encode_unsigned(&json!({"sub": "x"}));
        assert_eq!(parse(&token).unwrap(), TokenClaims::default());
        let (h, rest) = token.split_once('.').unwrap();
        let (p, s) = rest.split_once('.').unwrap();
        let padded = format!("{h}.{p}{}.{s}", "=".repeat((4 - p.len() % 4) % 4));
        assert!(parse(&padded).is_ok());
    }

    #[test]
    fn rejects_what_is_not_a_jwt_without_echoing_it() {
        let cases = [
            ("sk-not-a-jwt", ClaimsError::NotAJwt),
            ("a.b.c.d", ClaimsError::NotAJwt),
            ("a.!!!.c", ClaimsError::BadBase64),
            ("a.WzFd.c", ClaimsError::BadJson), // `[1]`
        ];
        for (token, want) in cases {
            let err = parse(token).unwrap_err();
            assert_eq!(err, want, "{token}");
            assert!(!err.to_string().contains(token));
        }
    }
}
