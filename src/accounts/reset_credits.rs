//! Rate-limit reset credits of any stored account: `GET {chatgpt_base_url}/wham/rate-limit-reset-credits`
//! (docs/protocol.md §9), read the way [`super::usage`] reads `/wham/usage`.
//!
//! A credit clears an account's exhausted windows; redeeming one on an account with room
//! wastes it, so cs-tui only shows them and redeems one when asked (`cs-tui accounts reset`).

use chrono::{DateTime, Utc};
use color_eyre::eyre::{Result, WrapErr, eyre};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::store::Store;
use super::tokens::Backend;
use super::usage::get_fresh;
use crate::account_id::AccountId;
use crate::errors::with_hint;

/// What an account has in reset credits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResetCredits {
    /// Credits that can be redeemed now.
    pub available: u32,
    /// When the first of them expires (`null` when none expires or none is available).
    pub nearest_expires_at: Option<DateTime<Utc>>,
}

/// The reset-credit endpoint under `base`, as Codex's backend client builds it (beside
/// [`super::usage::usage_url`]).
pub(crate) fn reset_credits_url(base: &str) -> String {
    let usage = super::usage::usage_url(base);
    match usage.strip_suffix("/wham/usage") {
        Some(root) => format!("{root}/wham/rate-limit-reset-credits"),
        None => format!(
            "{}/rate-limit-reset-credits",
            usage.trim_end_matches("/usage")
        ),
    }
}

#[derive(Deserialize)]
struct CreditsListJson {
    #[serde(default)]
    available_count: Option<u32>,
    #[serde(default)]
    credits: Option<Vec<CreditJson>>,
}

#[derive(Deserialize)]
struct CreditJson {
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    expires_at: Option<Value>,
}

/// A credit's time: the backend writes ISO 8601; unix seconds are accepted too.
fn timestamp(value: &Value) -> Option<DateTime<Utc>> {
    match value {
        Value::String(text) => DateTime::parse_from_rfc3339(text)
            .ok()
            .map(|t| t.with_timezone(&Utc)),
        Value::Number(n) => n.as_i64().and_then(|s| DateTime::from_timestamp(s, 0)),
        _ => None,
    }
}

/// Parses a `/wham/rate-limit-reset-credits` answer. Expired credits do not count; errors
/// describe the problem without quoting the body.
pub(crate) fn parse_reset_credits(
    body: &[u8],
    now: DateTime<Utc>,
) -> std::result::Result<ResetCredits, String> {
    let list: CreditsListJson =
        serde_json::from_slice(body).map_err(|e| super::codex_auth::describe_json_error(&e))?;
    let Some(credits) = list.credits else {
        // Only the count is known.
        return Ok(ResetCredits {
            available: list.available_count.unwrap_or(0),
            nearest_expires_at: None,
        });
    };
    let available: Vec<Option<DateTime<Utc>>> = credits
        .iter()
        // Codex counts a credit without a status as available.
        .filter(|c| {
            c.status
                .as_deref()
                .is_none_or(|s| s.eq_ignore_ascii_case("available"))
        })
        .map(|c| c.expires_at.as_ref().and_then(timestamp))
        .filter(|expiry| expiry.is_none_or(|e| e > now))
        .collect();
    let listed = u32::try_from(available.len()).unwrap_or(u32::MAX);
    Ok(ResetCredits {
        // The backend may cap the list; the count is then the larger.
        available: list.available_count.unwrap_or(listed).max(listed),
        nearest_expires_at: available.into_iter().flatten().min(),
    })
}

/// Reads one stored account's reset credits. The token is refreshed first when it is due, and
/// a 401 leads to one forced refresh and one retry.
pub(crate) async fn fetch_reset_credits_with(
    store: &Store,
    http: &reqwest::Client,
    backend: &Backend,
    account_id: &AccountId,
) -> Result<ResetCredits> {
    let url = reset_credits_url(&backend.chatgpt_base_url);
    let (account, response) = get_fresh(store, http, backend, account_id, &url).await?;
    let status = response.status();
    if !status.is_success() {
        return Err(with_hint(
            eyre!(
                "the reset-credit endpoint {url} answered HTTP {} for account {:?}",
                status.as_u16(),
                account.name
            ),
            "try again later",
        ));
    }
    let body = response
        .bytes()
        .await
        .wrap_err_with(|| format!("reading the reset credits of account {:?}", account.name))?;
    parse_reset_credits(&body, Utc::now()).map_err(|why| {
        eyre!(
            "the reset credits of account {:?} could not be read: {why}",
            account.name
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn the_nearest_expiry_of_available_credits_counts() {
        let now = at("2026-12-02T12:00:00Z");
        let body = br#"{"available_count": 2, "credits": [
            {"id": "a", "status": "available", "expires_at": "2026-12-20T00:00:00Z"},
            {"id": "b", "status": "available", "expires_at": "2026-12-05T08:00:00Z"},
            {"id": "c", "status": "redeemed", "expires_at": "2026-12-03T00:00:00Z"},
            {"id": "d", "status": "available", "expires_at": "2026-12-01T00:00:00Z"}
        ]}"#;
        assert_eq!(
            parse_reset_credits(body, now).unwrap(),
            ResetCredits {
                available: 2,
                nearest_expires_at: Some(at("2026-12-05T08:00:00Z")),
            }
        );
    }

    #[test]
    fn counts_unix_times_and_bare_counts_are_understood() {
        let now = at("2026-12-02T12:00:00Z");
        let unix = br#"{"credits": [{"expires_at": 1800000000}, {"expires_at": null}]}"#;
        assert_eq!(
            parse_reset_credits(unix, now).unwrap(),
            ResetCredits {
                available: 2,
                nearest_expires_at: DateTime::from_timestamp(1_800_000_000, 0),
            }
        );
        let count_only = br#"{"available_count": 3}"#;
        assert_eq!(parse_reset_credits(count_only, now).unwrap().available, 3);
        let none = br#"{"available_count": 0, "credits": []}"#;
        assert_eq!(
            parse_reset_credits(none, now).unwrap(),
            ResetCredits {
                available: 0,
                nearest_expires_at: None
            }
        );
    }

    #[test]
    fn bad_bodies_are_reported_without_their_content() {
        let err = parse_reset_credits(b"<html>secret-ish</html>", Utc::now()).unwrap_err();
        assert!(!err.contains("secret-ish"), "{err}");
    }

    #[test]
    fn the_endpoint_sits_beside_usage() {
        assert_eq!(
            reset_credits_url("http://127.0.0.1:9/backend-api/"),
            "http://127.0.0.1:9/backend-api/wham/rate-limit-reset-credits"
        );
        assert_eq!(
            reset_credits_url("https://chatgpt.com"),
            "https://chatgpt.com/backend-api/wham/rate-limit-reset-credits"
        );
        assert_eq!(
            reset_credits_url("https://api.example/"),
            "https://api.example/api/codex/rate-limit-reset-credits"
        );
    }
}
