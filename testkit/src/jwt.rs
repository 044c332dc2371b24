//! Fake ChatGPT tokens. The app-server accepts an unsigned JWT (`alg: none`) as long as the
//! signature segment is non-empty (docs/protocol.md §5), which is how tests stand in for accounts.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use std::time::{SystemTime, UNIX_EPOCH};

/// One fake ChatGPT account: what goes into its tokens' claims.
#[derive(Clone, Debug)]
pub struct FakeAccount {
    pub chatgpt_account_id: String,
    pub email: String,
    pub plan: String,
    pub user_id: String,
}

impl FakeAccount {
    /// An account named `label` (used for its id, e-mail and user id) on the `plus` plan.
    pub fn new(label: &str) -> Self {
        Self {
            chatgpt_account_id: format!("acct-{label}"),
            email: format!("{label}@example.com"),
            plan: "plus".to_owned(),
            user_id: format!("user-{label}"),
        }
    }

    pub fn with_plan(mut self, plan: &str) -> Self {
        self.plan = plan.to_owned();
        self
    }

    fn auth_claims(&self) -> Value {
        json!({
            "chatgpt_account_id": self.chatgpt_account_id,
            "chatgpt_plan_type": self.plan,
            "chatgpt_user_id": self.user_id,
            "user_id": self.user_id,
            "chatgpt_subscription_active_until": "2099-01-01T00:00:00Z",
        })
    }

    /// An access token valid for `ttl_secs` from now (negative = already expired).
    /// `serial` distinguishes successive tokens of one account (the mock logs it).
    pub fn access_token(&self, ttl_secs: i64, serial: u64) -> String {
        let now = unix_now();
        encode_unsigned(&json!({
            "exp": now + ttl_secs,
            "iat": now,
            "jti": format!("{}-access-{serial}", self.chatgpt_account_id),
            "https://api.openai.com/auth": self.auth_claims(),
            "https://api.openai.com/profile": { "email": self.email },
        }))
    }

    /// An id token carrying e-mail, plan and account id, as `codex login` stores it.
    pub fn id_token(&self, ttl_secs: i64) -> String {
        let now = unix_now();
        encode_unsigned(&json!({
            "exp": now + ttl_secs,
            "iat": now,
            "email": self.email,
            "email_verified": true,
            "https://api.openai.com/auth": self.auth_claims(),
        }))
    }

    /// The `auth.json` that `codex login` would leave for this account (docs/protocol.md §5).
    pub fn auth_json(&self, access_ttl_secs: i64, refresh_token: &str) -> Value {
        json!({
            "auth_mode": "chatgpt",
            "OPENAI_API_KEY": null,
            "tokens": {
                "id_token": self.id_token(access_ttl_secs),
                "access_token": self.access_token(access_ttl_secs, 0),
                "refresh_token": refresh_token,
                "account_id": self.chatgpt_account_id,
            },
            "last_refresh": "2026-01-01T00:00:00Z",
        })
    }
}

/// Encode claims as an unsigned JWT with a non-empty signature segment.
pub fn encode_unsigned(claims: &Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    format!("{header}.{payload}.c2ln")
}

/// Decode the claims of a JWT without checking anything (test-side helper).
pub fn decode_claims(token: &str) -> Option<Value> {
    let payload = token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    serde_json::from_slice(&bytes).ok()
}

pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_carry_the_claims_codex_reads() {
        let account = FakeAccount::new("alice").with_plan("pro");
        let claims = decode_claims(&account.access_token(3600, 7)).unwrap();
        assert_eq!(
            claims["https://api.openai.com/auth"]["chatgpt_account_id"],
            "acct-alice"
        );
        assert_eq!(
            claims["https://api.openai.com/auth"]["chatgpt_plan_type"],
            "pro"
        );
        assert_eq!(claims["jti"], "acct-alice-access-7");
        let id = decode_claims(&account.id_token(60)).unwrap();
        assert_eq!(id["email"], "alice@example.com");
        assert!(account.access_token(60, 0).ends_with(".c2ln"));
    }
}
