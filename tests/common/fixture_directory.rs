//! An in-memory `AccountDirectory` over the mock backend, for proxy tests that do not need the
//! on-disk store. Tokens come from the mock's own refresh endpoint.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use color_eyre::eyre::{Result, eyre};
use cs_tui::proxy::directory::{AccountDirectory, DirAccount, LoginTokens};
use cs_tui::quota::RateLimitSnapshot;
use cs_tui::secret::Secret;
use cs_tui_testkit::FakeAccount;
use serde_json::Value;

#[derive(Clone)]
pub struct FixtureDirectory {
    inner: Arc<Mutex<Inner>>,
    mock_url: String,
}

struct Inner {
    accounts: Vec<(DirAccount, FakeAccount, String)>,
    active: Option<String>,
    serial: u64,
    access: HashMap<String, String>,
}

impl FixtureDirectory {
    pub fn new(mock_url: &str) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner {
                accounts: Vec::new(),
                active: None,
                serial: 100,
                access: HashMap::new(),
            })),
            mock_url: mock_url.to_owned(),
        }
    }

    pub fn add(&self, fake: &FakeAccount, refresh_token: &str, label: &str) {
        let mut inner = self.inner.lock().unwrap();
        inner.accounts.push((
            DirAccount {
                id: format!("id-{label}"),
                name: label.to_owned(),
                email: Some(fake.email.clone()),
                plan: Some(fake.plan.clone()),
                chatgpt_account_id: Some(fake.chatgpt_account_id.clone()),
                enabled: true,
                needs_login: false,
            },
            fake.clone(),
            refresh_token.to_owned(),
        ));
        if inner.active.is_none() {
            inner.active = Some(format!("id-{label}"));
        }
    }

    pub fn refresh_token(&self, label: &str) -> String {
        let inner = self.inner.lock().unwrap();
        inner
            .accounts
            .iter()
            .find(|(d, _, _)| d.name == label)
            .map(|(_, _, r)| r.clone())
            .unwrap()
    }

    pub fn active(&self) -> Option<String> {
        self.inner.lock().unwrap().active.clone()
    }

    async fn refresh(&self, id: &str) -> Result<String> {
        let refresh = {
            let inner = self.inner.lock().unwrap();
            inner
                .accounts
                .iter()
                .find(|(d, _, _)| d.id == id)
                .map(|(_, _, r)| r.clone())
                .ok_or_else(|| eyre!("no account {id}"))?
        };
        let resp: Value = reqwest::Client::new()
            .post(format!("{}/oauth/token", self.mock_url))
            .json(&serde_json::json!({"client_id": "x", "grant_type": "refresh_token", "refresh_token": refresh}))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let access = resp["access_token"].as_str().unwrap().to_owned();
        let mut inner = self.inner.lock().unwrap();
        for entry in inner.accounts.iter_mut() {
            if entry.0.id == id {
                entry.2 = resp["refresh_token"].as_str().unwrap().to_owned();
            }
        }
        inner.access.insert(id.to_owned(), access.clone());
        Ok(access)
    }
}

impl AccountDirectory for FixtureDirectory {
    async fn list(&self) -> Result<Vec<DirAccount>> {
        Ok(self
            .inner
            .lock()
            .unwrap()
            .accounts
            .iter()
            .map(|(d, _, _)| d.clone())
            .collect())
    }

    async fn preferred(&self) -> Result<Option<String>> {
        Ok(self.active())
    }

    async fn login_tokens(&self, id: &str, force_refresh: bool) -> Result<LoginTokens> {
        let (dir, fake, cached) = {
            let mut inner = self.inner.lock().unwrap();
            inner.serial += 1;
            let (d, f, _) = inner
                .accounts
                .iter()
                .find(|(d, _, _)| d.id == id)
                .cloned()
                .ok_or_else(|| eyre!("no account {id}"))?;
            (d, f, inner.access.get(id).cloned())
        };
        let access = match (force_refresh, cached) {
            (false, Some(token)) => token,
            (false, None) => {
                let token = fake.access_token(3600, 1);
                self.inner
                    .lock()
                    .unwrap()
                    .access
                    .insert(id.to_owned(), token.clone());
                token
            }
            (true, _) => self.refresh(id).await?,
        };
        Ok(LoginTokens {
            access_token: Secret::new(access),
            chatgpt_account_id: dir.chatgpt_account_id.unwrap(),
            plan: dir.plan,
        })
    }

    async fn fetch_usage(&self, id: &str) -> Result<RateLimitSnapshot> {
        let tokens = self.login_tokens(id, false).await?;
        let body: Value = reqwest::Client::new()
            .get(format!("{}/backend-api/wham/usage", self.mock_url))
            .bearer_auth(tokens.access_token.expose())
            .header("chatgpt-account-id", &tokens.chatgpt_account_id)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let window = |w: &Value| {
            (!w.is_null()).then(|| cs_tui::quota::RateLimitWindow {
                used_percent: w["used_percent"].as_f64().unwrap_or(0.0),
                window_duration_mins: w["limit_window_seconds"].as_u64().map(|s| (s / 60) as u32),
                resets_at: w["reset_at"].as_i64(),
            })
        };
        Ok(RateLimitSnapshot {
            primary: window(&body["rate_limit"]["primary_window"]),
            secondary: window(&body["rate_limit"]["secondary_window"]),
            rate_limit_reached_type: body["rate_limit_reached_type"]["type"]
                .as_str()
                .map(str::to_owned),
            ..Default::default()
        })
    }

    async fn mark_active(&self, id: &str) -> Result<()> {
        self.inner.lock().unwrap().active = Some(id.to_owned());
        Ok(())
    }
}
