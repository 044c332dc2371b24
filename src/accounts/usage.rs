//! The quota of any stored account: `GET {chatgpt_base_url}/wham/usage` (docs/protocol.md §4),
//! converted into the shared [`crate::quota`] types.

use std::path::Path;

use chrono::{DateTime, Utc};
use color_eyre::eyre::{Report, Result, WrapErr, eyre};
use serde::Deserialize;
use serde_json::Value;

use super::store::{Account, AccountAuth, Store};
use super::tokens::{Backend, RefreshPolicy, ensure_fresh_with, is_html_page};
use crate::account_id::AccountId;
use crate::errors::with_hint;
use crate::quota::{AccountLimits, Credits, RateLimitSnapshot, RateLimitWindow, SpendLimit};

/// Codex's default `chatgpt_base_url`.
pub(crate) const DEFAULT_CHATGPT_BASE_URL: &str = "https://chatgpt.com/backend-api/";

/// One account's usage as the backend reported it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct UsageReport {
    /// The main Codex limit: the 5-hour and weekly windows, credits, the limit-reached type.
    pub snapshot: RateLimitSnapshot,
    /// Further metered limits, by name.
    pub additional: Vec<(String, RateLimitSnapshot)>,
    pub plan: Option<String>,
    /// `rate_limit.limit_reached` (or `allowed: false`): the backend refuses this account now.
    pub limit_reached: bool,
    pub fetched_at: DateTime<Utc>,
}

impl UsageReport {
    /// Whether the account cannot be used now, by the backend's word or by its numbers.
    pub(crate) fn is_exhausted(&self) -> bool {
        self.limit_reached || self.snapshot.is_exhausted()
    }

    /// Every limit family: the main quota (`codex`) and the additional ones by `limitId`.
    pub(crate) fn limits(&self) -> AccountLimits {
        AccountLimits::full(
            std::iter::once(self.snapshot.clone())
                .chain(self.additional.iter().map(|(_, s)| s.clone())),
        )
    }
}

/// The ChatGPT base URL Codex uses: `chatgpt_base_url` of the selected profile, else the
/// top-level one, in `$CODEX_HOME/config.toml`; else the default.
pub(crate) fn chatgpt_base_url(codex_home: &Path) -> Result<String> {
    let path = codex_home.join("config.toml");
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(DEFAULT_CHATGPT_BASE_URL.to_owned());
        }
        Err(e) => return Err(Report::new(e).wrap_err(format!("reading {}", path.display()))),
    };
    let config: toml::Table = toml::from_str(&text).map_err(|e| {
        with_hint(
            eyre!("{} is not valid TOML: {}", path.display(), e.message()),
            "fix the file (Codex reads it too) or move it away",
        )
    })?;
    let profile_url = config
        .get("profile")
        .and_then(toml::Value::as_str)
        .and_then(|profile| {
            config
                .get("profiles")?
                .get(profile)?
                .get("chatgpt_base_url")
        })
        .and_then(toml::Value::as_str);
    let url = profile_url
        .or_else(|| config.get("chatgpt_base_url").and_then(toml::Value::as_str))
        .filter(|url| !url.trim().is_empty())
        .unwrap_or(DEFAULT_CHATGPT_BASE_URL);
    Ok(url.to_owned())
}

/// The usage endpoint under `base`, as Codex's backend client builds it: bases on the ChatGPT
/// host gain `/backend-api`; a `/backend-api` base has `wham/usage`, any other the Codex API path.
pub(crate) fn usage_url(base: &str) -> String {
    let mut base = base.trim_end_matches('/').to_owned();
    let chatgpt_host = ["https://chatgpt.com", "https://chat.openai.com"]
        .iter()
        .any(|host| base.starts_with(host));
    if chatgpt_host && !base.contains("/backend-api") {
        base.push_str("/backend-api");
    }
    if base.contains("/backend-api") {
        format!("{base}/wham/usage")
    } else {
        format!("{base}/api/codex/usage")
    }
}

/// Fetches the usage of one stored account from `backend`. The token is refreshed first when
/// it is due, and a 401 leads to one forced refresh and one retry.
pub(crate) async fn fetch_usage_with(
    store: &Store,
    http: &reqwest::Client,
    backend: &Backend,
    account_id: &AccountId,
) -> Result<UsageReport> {
    let url = usage_url(&backend.chatgpt_base_url);
    let (account, response) = get_fresh(store, http, backend, account_id, &url).await?;
    let status = response.status();
    // The backend answers JSON, its errors too: an HTML page (a block page, a captive portal's
    // sign-in) came from something in front of it, and logging in again would not help.
    if is_html_page(&response) && !status.is_server_error() {
        return Err(with_hint(
            eyre!(
                "the usage endpoint {url} answered HTTP {} with an HTML page for account {:?}: \
                 not ChatGPT's answer but a proxy's, a firewall's or a captive portal's",
                status.as_u16(),
                account.name
            ),
            "check the network between you and ChatGPT (a proxy or firewall that blocks it, \
             a Wi-Fi sign-in page); the login itself is not at fault",
        ));
    }
    if !status.is_success() {
        return Err(with_hint(
            eyre!(
                "the usage endpoint {url} answered HTTP {} for account {:?}",
                status.as_u16(),
                account.name
            ),
            match status.as_u16() {
                401 | 403 => format!(
                    "log in to it again with `{}`",
                    super::tokens::relogin_command(&account.name)
                ),
                _ => "try again later".to_owned(),
            },
        ));
    }
    let body = response
        .bytes()
        .await
        .wrap_err_with(|| format!("reading the usage of account {:?}", account.name))?;
    parse_usage(&body, Utc::now()).map_err(|why| {
        eyre!(
            "the usage of account {:?} could not be read: {why}",
            account.name
        )
    })
}

/// A GET of a backend endpoint with an account's token and account header.
/// GETs `url` as a stored account: its token refreshed first when due, and a 401 answered by
/// one forced refresh and one retry. Returns the account as the request used it.
pub(crate) async fn get_fresh(
    store: &Store,
    http: &reqwest::Client,
    backend: &Backend,
    account_id: &AccountId,
    url: &str,
) -> Result<(Account, reqwest::Response)> {
    let account = ensure_fresh_with(store, http, backend, account_id, RefreshPolicy::IfDue).await?;
    let response = get_with_token(http, url, &account).await?;
    if response.status() != reqwest::StatusCode::UNAUTHORIZED {
        return Ok((account, response));
    }
    tracing::info!(account = %account.name, url, "answered 401; refreshing and retrying");
    let account = ensure_fresh_with(
        store,
        http,
        backend,
        account_id,
        RefreshPolicy::AfterUnauthorized,
    )
    .await?;
    let response = get_with_token(http, url, &account).await?;
    Ok((account, response))
}

pub(crate) async fn get_with_token(
    http: &reqwest::Client,
    url: &str,
    account: &Account,
) -> Result<reqwest::Response> {
    let access_token = match &account.auth {
        AccountAuth::ChatGpt { access_token, .. } => access_token,
        AccountAuth::ApiKey { .. } => {
            return Err(with_hint(
                eyre!(
                    "account {:?} signs in with an API key, which has no ChatGPT usage limits",
                    account.name
                ),
                "usage is shown for ChatGPT logins only",
            ));
        }
        AccountAuth::Unknown(unknown) => {
            return Err(super::store::unsupported_sign_in_error(
                &account.name,
                unknown.kind(),
            ));
        }
    };
    let mut request = http.get(url).bearer_auth(access_token.expose());
    if let Some(id) = &account.chatgpt_account_id {
        request = request.header("chatgpt-account-id", id);
    }
    request.send().await.map_err(|e| {
        // reqwest's message names the URL, never the headers.
        with_hint(
            Report::new(e).wrap_err(format!(
                "could not fetch the usage of account {:?}",
                account.name
            )),
            "check the network; the backend address is chatgpt_base_url in $CODEX_HOME/config.toml",
        )
    })
}

#[derive(Deserialize)]
struct UsageJson {
    #[serde(default)]
    plan_type: Option<String>,
    #[serde(default)]
    rate_limit: Option<RateLimitJson>,
    #[serde(default)]
    credits: Option<CreditsJson>,
    #[serde(default)]
    /// Kept raw: one model's limit of a shape we do not know is left out, not an error that
    /// would lose the account's quota.
    additional_rate_limits: Option<Vec<Value>>,
    #[serde(default)]
    rate_limit_reached_type: Option<Value>,
    #[serde(default)]
    spend_control: Option<SpendControlJson>,
}

#[derive(Deserialize)]
struct SpendControlJson {
    /// Kept raw: a spend control of a shape we do not know is left out, not an error that
    /// would lose the account's whole usage.
    #[serde(default)]
    individual_limit: Option<Value>,
}

#[derive(Deserialize)]
struct SpendLimitJson {
    limit: Value,
    used: Value,
    remaining_percent: f64,
    #[serde(default)]
    reset_after_seconds: Option<i64>,
    #[serde(default)]
    reset_at: Option<i64>,
}

/// An amount the backend sends as a string (or, leniently, a number).
fn amount(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => "?".to_owned(),
    }
}

#[derive(Deserialize)]
struct RateLimitJson {
    #[serde(default)]
    allowed: Option<bool>,
    #[serde(default)]
    limit_reached: Option<bool>,
    #[serde(default)]
    primary_window: Option<WindowJson>,
    #[serde(default)]
    secondary_window: Option<WindowJson>,
}

#[derive(Deserialize)]
struct WindowJson {
    used_percent: f64,
    #[serde(default)]
    limit_window_seconds: Option<i64>,
    #[serde(default)]
    reset_after_seconds: Option<i64>,
    #[serde(default)]
    reset_at: Option<i64>,
}

#[derive(Deserialize)]
struct CreditsJson {
    #[serde(default)]
    has_credits: bool,
    #[serde(default)]
    unlimited: bool,
    #[serde(default)]
    balance: Option<Value>,
}

#[derive(Deserialize)]
struct AdditionalJson {
    #[serde(default)]
    limit_name: Option<String>,
    #[serde(default)]
    metered_feature: Option<String>,
    #[serde(default)]
    rate_limit: Option<RateLimitJson>,
}

impl WindowJson {
    fn to_window(&self, now: DateTime<Utc>) -> RateLimitWindow {
        RateLimitWindow {
            used_percent: self.used_percent,
            // Rounded up, as Codex does: a 299.5-minute window is still the 5-hour one.
            window_duration_mins: self
                .limit_window_seconds
                .filter(|s| *s > 0)
                .and_then(|s| u32::try_from(s.saturating_add(59) / 60).ok()),
            resets_at: self.reset_at.or_else(|| {
                self.reset_after_seconds
                    .map(|after| now.timestamp().saturating_add(after.max(0)))
            }),
        }
    }
}

impl RateLimitJson {
    fn is_reached(&self) -> bool {
        self.limit_reached == Some(true) || self.allowed == Some(false)
    }
}

fn snapshot(
    rate_limit: Option<&RateLimitJson>,
    now: DateTime<Utc>,
) -> (Option<RateLimitWindow>, Option<RateLimitWindow>) {
    let window = |w: Option<&WindowJson>| w.map(|w| w.to_window(now));
    match rate_limit {
        Some(r) => (
            window(r.primary_window.as_ref()),
            window(r.secondary_window.as_ref()),
        ),
        None => (None, None),
    }
}

/// Parses a `/wham/usage` answer. Errors describe the problem without quoting the body.
pub(crate) fn parse_usage(
    body: &[u8],
    now: DateTime<Utc>,
) -> std::result::Result<UsageReport, String> {
    let usage: UsageJson =
        serde_json::from_slice(body).map_err(|e| super::codex_auth::describe_json_error(&e))?;
    let (primary, secondary) = snapshot(usage.rate_limit.as_ref(), now);
    let reached_type = usage
        .rate_limit_reached_type
        .as_ref()
        .and_then(|v| match v {
            Value::String(s) => Some(s.clone()),
            Value::Object(o) => o.get("type").and_then(Value::as_str).map(str::to_owned),
            _ => None,
        });
    let main = RateLimitSnapshot {
        limit_id: Some("codex".to_owned()),
        limit_name: None,
        primary,
        secondary,
        credits: usage.credits.as_ref().map(|c| Credits {
            has_credits: c.has_credits,
            unlimited: c.unlimited,
            balance: c.balance.as_ref().and_then(|b| match b {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            }),
        }),
        plan_type: usage.plan_type.clone(),
        rate_limit_reached_type: reached_type,
        individual_limit: usage
            .spend_control
            .and_then(|s| s.individual_limit)
            .and_then(|v| serde_json::from_value::<SpendLimitJson>(v).ok())
            .map(|l| SpendLimit {
                limit: amount(&l.limit),
                used: amount(&l.used),
                remaining_percent: l.remaining_percent,
                resets_at: l.reset_at.or_else(|| {
                    l.reset_after_seconds
                        .map(|after| now.timestamp() + after.max(0))
                }),
            }),
    };
    let additional = usage
        .additional_rate_limits
        .unwrap_or_default()
        .into_iter()
        .filter_map(|extra| {
            serde_json::from_value::<AdditionalJson>(extra)
                // The error would quote the body: say only that it was left out.
                .inspect_err(|_| tracing::warn!("an unreadable additional rate limit left out"))
                .ok()
        })
        .map(|extra| {
            let (primary, secondary) = snapshot(extra.rate_limit.as_ref(), now);
            let name = extra
                .limit_name
                .clone()
                .or_else(|| extra.metered_feature.clone())
                .unwrap_or_else(|| "additional".to_owned());
            let snapshot = RateLimitSnapshot {
                limit_id: extra.metered_feature.or(extra.limit_name),
                limit_name: Some(name.clone()),
                primary,
                secondary,
                plan_type: usage.plan_type.clone(),
                ..Default::default()
            };
            (name, snapshot)
        })
        .collect();
    Ok(UsageReport {
        limit_reached: usage
            .rate_limit
            .as_ref()
            .is_some_and(RateLimitJson::is_reached),
        snapshot: main,
        additional,
        plan: usage.plan_type,
        fetched_at: now,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quota::WindowKind;
    use serde_json::json;

    /// A 403 with an HTML page is a proxy's or a firewall's, not ChatGPT's: the error says so
    /// and does not send the user to log in again; the backend's own 403 (JSON) still does.
    /// Neither marks the account, and neither spends its token.
    #[tokio::test]
    async fn an_html_403_is_blamed_on_the_network_not_the_login() {
        use cs_tui_testkit::MockBackend;
        use cs_tui_testkit::mock_backend::UsageFault;
        let mock = MockBackend::start().await;
        let (fake, rt) = mock.add_account("alice");
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path());
        let auth = crate::accounts::codex_auth::parse_auth_json(
            fake.auth_json(3600, &rt).to_string().as_bytes(),
        )
        .unwrap();
        let account = crate::accounts::import_auth(&store, &auth, None)
            .unwrap()
            .account;
        let backend = Backend {
            codex_home: None,
            refresh_url: mock.refresh_url(),
            chatgpt_base_url: mock.chatgpt_base_url(),
        };
        let http = reqwest::Client::new();
        let fetch = || fetch_usage_with(&store, &http, &backend, &account.id);

        mock.push_usage_fault(UsageFault::Html403);
        let shown = crate::errors::render_error(&fetch().await.unwrap_err());
        assert!(shown.contains("HTTP 403 with an HTML page"), "{shown}");
        assert!(shown.contains("proxy"), "{shown}");
        assert!(shown.contains("hint: check the network"), "{shown}");
        assert!(!shown.contains("log in"), "{shown}");

        mock.push_usage_fault(UsageFault::CaptivePortal);
        let shown = crate::errors::render_error(&fetch().await.unwrap_err());
        assert!(shown.contains("HTTP 200 with an HTML page"), "{shown}");
        assert!(shown.contains("captive portal"), "{shown}");

        mock.push_usage_fault(UsageFault::Json403);
        let shown = crate::errors::render_error(&fetch().await.unwrap_err());
        assert!(shown.contains("answered HTTP 403 for account"), "{shown}");
        assert!(shown.contains("hint: log in to it again"), "{shown}");
        assert!(!shown.contains("proxy"), "{shown}");

        // Neither touched the account; the next read works.
        assert_eq!(store.load().unwrap().accounts[0], account);
        let report = fetch().await.unwrap();
        assert_eq!(report.snapshot.five_hour().unwrap().used_percent, 10.0);
    }

    #[test]
    fn extreme_numbers_saturate_instead_of_overflowing() {
        let now = DateTime::from_timestamp(1_000_000, 0).unwrap();
        for (seconds, after) in [(i64::MAX, i64::MAX), (i64::MIN, i64::MIN), (-1, 0)] {
            let body = json!({"rate_limit": {
                "primary_window": {"used_percent": 1e308, "limit_window_seconds": seconds,
                                   "reset_after_seconds": after},
                "secondary_window": {"used_percent": -1e308, "limit_window_seconds": seconds,
                                     "reset_at": i64::MIN},
            }});
            let report = parse_usage(body.to_string().as_bytes(), now).unwrap();
            for window in report.snapshot.windows() {
                assert!(window.headroom() >= 0.0);
                if let Some(reset) = window.resets_at {
                    // What the panel does with it.
                    let _ = crate::pace::pace(window, now.timestamp());
                    let _ = crate::pace::time_to_exhaustion(window, Some(1e-300), i64::MAX);
                    let _ = crate::pace::format_duration(reset.saturating_sub(i64::MIN));
                }
            }
        }
        let body = json!({"rate_limit": {"primary_window": {"used_percent": 5,
            "limit_window_seconds": i64::MAX, "reset_after_seconds": i64::MAX}}});
        let report = parse_usage(body.to_string().as_bytes(), now).unwrap();
        let window = report.snapshot.windows().next().unwrap();
        assert_eq!(
            window.window_duration_mins, None,
            "too long for minutes in a u32"
        );
        assert_eq!(window.resets_at, Some(i64::MAX));
        // A number that is not an i64 at all is a clear error.
        let body = br#"{"rate_limit": {"primary_window": {"used_percent": 5, "reset_at": 1e400}}}"#;
        assert!(parse_usage(body, now).is_err());
    }

    #[test]
    fn parses_every_part_of_wham_usage() {
        let body = json!({
            "plan_type": "pro",
            "rate_limit": {
                "allowed": false, "limit_reached": true,
                // Weekly first: classification must go by duration, not slot.
                "primary_window": {"used_percent": 100, "limit_window_seconds": 604800,
                                   "reset_after_seconds": 50, "reset_at": 2_000_000_000},
                "secondary_window": {"used_percent": 42.5, "limit_window_seconds": 18000,
                                     "reset_after_seconds": 600},
            },
            "credits": {"has_credits": true, "unlimited": false, "balance": 12.5},
            "additional_rate_limits": [{"limit_name": "GPT-5 Codex Spark",
                "metered_feature": "codex_spark",
                "rate_limit": {"primary_window": {"used_percent": 7, "limit_window_seconds": 18000,
                    "reset_at": 1_900_000_000}, "secondary_window": null}}],
            "rate_limit_reached_type": {"type": "workspace_member_usage_limit_reached"},
            "spend_control": {"reached": false, "individual_limit": {"limit": "50.00",
                "used": "12.50", "remaining": "37.50", "used_percent": 25,
                "remaining_percent": 75, "reset_after_seconds": 100}},
            "something_new": true,
        });
        let now = DateTime::from_timestamp(1_000_000, 0).unwrap();
        let report = parse_usage(body.to_string().as_bytes(), now).unwrap();
        let weekly = report.snapshot.weekly().unwrap();
        assert_eq!(weekly.used_percent, 100.0);
        assert_eq!(weekly.resets_at, Some(2_000_000_000));
        let five = report.snapshot.five_hour().unwrap();
        assert_eq!(five.used_percent, 42.5);
        assert_eq!(
            five.resets_at,
            Some(1_000_600),
            "reset_after_seconds is used without reset_at"
        );
        assert_eq!(
            report.snapshot.credits.as_ref().unwrap().balance.as_deref(),
            Some("12.5")
        );
        assert_eq!(
            report.snapshot.rate_limit_reached_type.as_deref(),
            Some("workspace_member_usage_limit_reached")
        );
        assert_eq!(report.plan.as_deref(), Some("pro"));
        assert!(report.limit_reached && report.is_exhausted());
        let (name, spark) = &report.additional[0];
        assert_eq!(name, "GPT-5 Codex Spark");
        assert_eq!(spark.limit_id.as_deref(), Some("codex_spark"));
        assert_eq!(spark.primary.unwrap().kind(), WindowKind::FiveHour);
        let spend = report.snapshot.individual_limit.as_ref().unwrap();
        assert_eq!(
            (spend.limit.as_str(), spend.used.as_str()),
            ("50.00", "12.50")
        );
        assert_eq!(spend.used_percent(), 25.0);
        assert_eq!(spend.resets_at, Some(1_000_100));
        let limits = report.limits();
        assert_eq!(limits.quota(), Some(&report.snapshot));
        assert_eq!(
            limits.others().map(|s| s.family_name()).collect::<Vec<_>>(),
            ["GPT-5 Codex Spark"]
        );
    }

    #[test]
    fn a_spend_control_of_an_unknown_shape_loses_nothing_else() {
        let body = json!({
            "rate_limit": {"primary_window": {"used_percent": 7, "limit_window_seconds": 604800}},
            "spend_control": {"reached": false, "individual_limit": {"cap": "SECRET?"}},
            "additional_rate_limits": [{"limit_name": "odd", "rate_limit":
                {"primary_window": {"used_percent": "SECRET?"}}}, 7],
        });
        let report = parse_usage(body.to_string().as_bytes(), Utc::now()).unwrap();
        assert_eq!(report.snapshot.weekly().unwrap().used_percent, 7.0);
        assert!(report.snapshot.individual_limit.is_none());
        assert!(report.additional.is_empty());
    }

    #[test]
    fn tolerates_a_sparse_answer_and_rejects_a_broken_one() {
        let report = parse_usage(br#"{"rate_limit": null}"#, Utc::now()).unwrap();
        assert!(report.snapshot.primary.is_none() && !report.is_exhausted());
        let err = parse_usage(
            br#"{"rate_limit": {"primary_window": {"used_percent": "SECRET"}}}"#,
            Utc::now(),
        )
        .unwrap_err();
        assert!(!err.contains("SECRET"), "{err}");
    }

    #[test]
    fn usage_url_follows_codex() {
        let cases = [
            (
                "https://chatgpt.com/backend-api/",
                "https://chatgpt.com/backend-api/wham/usage",
            ),
            (
                "https://chatgpt.com",
                "https://chatgpt.com/backend-api/wham/usage",
            ),
            (
                "http://127.0.0.1:9/backend-api/",
                "http://127.0.0.1:9/backend-api/wham/usage",
            ),
            ("http://127.0.0.1:9", "http://127.0.0.1:9/api/codex/usage"),
        ];
        for (base, want) in cases {
            assert_eq!(usage_url(base), want, "{base}");
        }
    }

    #[test]
    fn base_url_comes_from_config_toml_and_its_profile() {
        let home = tempfile::tempdir().unwrap();
        assert_eq!(
            chatgpt_base_url(home.path()).unwrap(),
            DEFAULT_CHATGPT_BASE_URL
        );
        let config = home.path().join("config.toml");
        std::fs::write(&config, "model = \"x\"\n").unwrap();
        assert_eq!(
            chatgpt_base_url(home.path()).unwrap(),
            DEFAULT_CHATGPT_BASE_URL
        );
        std::fs::write(&config, "chatgpt_base_url = \"http://a/backend-api/\"\n").unwrap();
        assert_eq!(
            chatgpt_base_url(home.path()).unwrap(),
            "http://a/backend-api/"
        );
        std::fs::write(
            &config,
            "profile = \"p\"\nchatgpt_base_url = \"http://a/\"\n[profiles.p]\nchatgpt_base_url = \"http://b/\"\n",
        )
        .unwrap();
        assert_eq!(chatgpt_base_url(home.path()).unwrap(), "http://b/");
        std::fs::write(&config, "chatgpt_base_url = ").unwrap();
        let err = crate::errors::render_error(&chatgpt_base_url(home.path()).unwrap_err());
        assert!(
            err.contains("config.toml") && err.contains("hint:"),
            "{err}"
        );
    }
}
