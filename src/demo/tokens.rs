//! The demo accounts' logins: unsigned JWTs (`alg: none`, a non-empty signature segment, which
//! the app-server accepts, docs/protocol.md §5) carrying the claims Codex and cs-tui read, and
//! the `auth.json` a `codex login` would leave for them. They open nothing but the simulated
//! backend.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

/// How long a demo token lives: longer than any demo, so nothing needs refreshing (the refresh
/// endpoint answers anyway).
pub(super) const TOKEN_TTL_SECS: i64 = 12 * 3600;

/// Who a demo account is, as its tokens say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Identity {
    /// The short name the store gives it (`alice`).
    pub name: &'static str,
    /// `chatgpt_plan_type`.
    pub plan: &'static str,
}

impl Identity {
    pub(super) fn account_id(&self) -> String {
        format!("demo-acct-{}", self.name)
    }

    pub(super) fn user_id(&self) -> String {
        format!("demo-user-{}", self.name)
    }

    pub(super) fn email(&self) -> String {
        format!("{}@demo.invalid", self.name)
    }

    fn auth_claims(&self) -> Value {
        json!({
            "chatgpt_account_id": self.account_id(),
            "chatgpt_plan_type": self.plan,
            "chatgpt_user_id": self.user_id(),
            "user_id": self.user_id(),
        })
    }

    /// An access token; `serial` tells successive ones apart, and `key` (the demo's own random
    /// key) is what the simulated backend checks: nobody else on the machine can mint one.
    pub(super) fn access_token(&self, now: i64, serial: u64, key: &str) -> String {
        unsigned_jwt(&json!({
            "exp": now + TOKEN_TTL_SECS,
            "iat": now,
            "jti": format!("{}-{serial}-{key}", self.account_id()),
            "https://api.openai.com/auth": self.auth_claims(),
            "https://api.openai.com/profile": {"email": self.email()},
        }))
    }

    pub(super) fn id_token(&self, now: i64) -> String {
        unsigned_jwt(&json!({
            "exp": now + TOKEN_TTL_SECS,
            "iat": now,
            "email": self.email(),
            "email_verified": true,
            "https://api.openai.com/auth": self.auth_claims(),
        }))
    }

    /// The refresh token the simulated backend hands out with its `serial`-th tokens.
    pub(super) fn refresh_token(&self, serial: u64, key: &str) -> String {
        format!("demo-refresh-{}-{serial}-{key}", self.name)
    }

    /// The `auth.json` of a fresh login (docs/protocol.md §5).
    pub(super) fn auth_json(&self, now: i64, key: &str) -> Value {
        json!({
            "auth_mode": "chatgpt",
            "OPENAI_API_KEY": null,
            "tokens": {
                "id_token": self.id_token(now),
                "access_token": self.access_token(now, 0, key),
                "refresh_token": self.refresh_token(0, key),
                "account_id": self.account_id(),
            },
            "last_refresh": chrono::DateTime::from_timestamp(now, 0)
                .map(|t| t.to_rfc3339())
                .unwrap_or_default(),
        })
    }
}

fn unsigned_jwt(claims: &Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    format!("{header}.{payload}.ZGVtbw")
}

/// The `jti` claim of a bearer token, unchecked.
pub(super) fn token_id(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
    claims.get("jti")?.as_str().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cs_tui_reads_a_demo_login_as_that_account() {
        let alice = Identity {
            name: "alice",
            plan: "plus",
        };
        let bytes = serde_json::to_vec(&alice.auth_json(1_800_000_000, "k")).unwrap();
        let auth = crate::accounts::codex_auth::parse_auth_json(&bytes).unwrap();
        let described = auth.describe();
        assert!(described.contains("alice@demo.invalid"), "{described}");
        let claims =
            crate::accounts::claims::parse(&alice.access_token(1_800_000_000, 3, "k")).unwrap();
        assert_eq!(
            claims.chatgpt_account_id.as_deref(),
            Some("demo-acct-alice")
        );
        assert_eq!(claims.plan.as_deref(), Some("plus"));
        assert_eq!(
            claims.expires_at.map(|t| t.timestamp()),
            Some(1_800_000_000 + TOKEN_TTL_SECS)
        );
    }
}
