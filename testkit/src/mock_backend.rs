//! A mock of the ChatGPT backend on 127.0.0.1, speaking the wire format recorded in
//! docs/protocol.md §4: `/wham/accounts/check`, `/wham/usage`, the `/codex/responses` SSE stream
//! with `x-codex-*` rate-limit headers, `/wham/rate-limit-reset-credits` (list, and `/consume`
//! with idempotency), and `/oauth/token` with rotating refresh tokens.
//!
//! Behaviour is set per account (keyed by the `chatgpt-account-id` header) and can be changed
//! while it runs. Every request is logged so tests can assert who was served with which token.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot, watch};

use crate::jwt::{FakeAccount, decode_claims, unix_now};

/// How an account's backend answers model requests.
#[derive(Clone, Debug, PartialEq)]
pub enum AccountMode {
    /// Answers normally.
    Normal,
    /// HTTP 429 `usage_limit_reached`, the usage-limit error of docs/protocol.md §4.
    UsageLimit,
    /// HTTP 401 for the next request of this account (Codex's background fetches aside), then
    /// normal.
    UnauthorizedOnce,
    /// HTTP 500 on every model request.
    ServerError,
    /// Normal, but the stream pauses this long after `response.created`.
    Slow(Duration),
}

/// How the refresh endpoint misbehaves for one request ([`MockBackend::push_refresh_fault`]).
#[derive(Clone, Debug, PartialEq)]
pub enum RefreshFault {
    /// Rotates the refresh token as usual (the old one is spent), then answers only after
    /// this long: a slow sign-in server.
    RotateThenDelay(Duration),
    /// Rotates, then sends a 200 whose JSON body breaks off mid-way (the connection drops).
    RotateThenCutBody,
    /// A proxy or firewall's HTML 403 page; nothing reaches the sign-in server.
    Html403,
    /// A gateway's 5xx with an HTML body; nothing is rotated.
    ServerError(u16),
    /// A captive portal: 200 with its HTML sign-in page; nothing is rotated.
    CaptivePortal,
}

/// How `GET /wham/usage` misbehaves for one request ([`MockBackend::push_usage_fault`]).
#[derive(Clone, Debug, PartialEq)]
pub enum UsageFault {
    /// A proxy or firewall's HTML 403 page (as [`RefreshFault::Html403`]); nothing reaches
    /// the backend.
    Html403,
    /// The backend's own 403: JSON with a `detail`.
    Json403,
    /// A captive portal: 200 with its HTML sign-in page (as [`RefreshFault::CaptivePortal`]).
    CaptivePortal,
}

/// One rate-limit window as the mock reports it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct UsageWindow {
    pub used_percent: u8,
    pub window_minutes: u32,
    /// Unix seconds.
    pub resets_at: i64,
}

impl UsageWindow {
    /// A 30-day window, as some workspace plans have.
    pub fn monthly(used_percent: u8) -> Self {
        Self {
            used_percent,
            window_minutes: 43_200,
            resets_at: unix_now() + 20 * 24 * 3600,
        }
    }

    pub fn five_hour(used_percent: u8) -> Self {
        Self {
            used_percent,
            window_minutes: 300,
            resets_at: unix_now() + 2 * 3600,
        }
    }

    pub fn weekly(used_percent: u8) -> Self {
        Self {
            used_percent,
            window_minutes: 10080,
            resets_at: unix_now() + 3 * 24 * 3600,
        }
    }
}

/// What the backend says about an account's quota (headers, `/wham/usage`, 429 bodies).
#[derive(Clone, Debug, PartialEq)]
pub struct Usage {
    pub primary: Option<UsageWindow>,
    pub secondary: Option<UsageWindow>,
    /// `(has_credits, unlimited, balance)`.
    pub credits: Option<(bool, bool, Option<String>)>,
    pub limit_reached_type: Option<String>,
}

impl Default for Usage {
    fn default() -> Self {
        Self {
            primary: Some(UsageWindow::five_hour(10)),
            secondary: Some(UsageWindow::weekly(20)),
            credits: None,
            limit_reached_type: None,
        }
    }
}

impl Usage {
    /// The shape of plans with no 5-hour window (docs/protocol.md §9): the weekly window in
    /// `primary`, no `secondary`.
    pub fn weekly_only(used_percent: u8) -> Self {
        Self {
            primary: Some(UsageWindow::weekly(used_percent)),
            secondary: None,
            ..Self::default()
        }
    }

    /// A workspace plan with one 30-day window.
    pub fn monthly_only(used_percent: u8) -> Self {
        Self {
            primary: Some(UsageWindow::monthly(used_percent)),
            secondary: None,
            ..Self::default()
        }
    }
}

/// A further limit family of an account (a model-specific limit, docs/protocol.md §9): sent as
/// its own header family `x-<family>-*` with `x-<family>-limit-name`, and in `/wham/usage`
/// under `additional_rate_limits`.
#[derive(Clone, Debug, PartialEq)]
pub struct LimitFamily {
    /// The `limitId` Codex derives, e.g. `codex_bengalfox` (headers `x-codex-bengalfox-*`).
    pub limit_id: String,
    pub limit_name: String,
    pub primary: Option<UsageWindow>,
    pub secondary: Option<UsageWindow>,
}

impl LimitFamily {
    /// GPT-5.3-Codex-Spark's limit, `x-codex-bengalfox-*`, with a 5-hour and a weekly window.
    pub fn spark(five_hour_percent: u8) -> Self {
        Self {
            limit_id: "codex_bengalfox".to_owned(),
            limit_name: "GPT-5.3-Codex-Spark".to_owned(),
            primary: Some(UsageWindow::five_hour(five_hour_percent)),
            secondary: Some(UsageWindow::weekly(3)),
        }
    }
}

/// A seat's own spend control inside a workspace (`spend_control.individual_limit` of
/// `/wham/usage`).
#[derive(Clone, Debug, PartialEq)]
pub struct SpendControl {
    /// Amounts as the backend formats them, e.g. `"50.00"`.
    pub limit: String,
    pub used: String,
    pub used_percent: u8,
    /// Unix seconds.
    pub resets_at: i64,
}

/// What the mock reports beyond an account's main [`Usage`]: further limit families and a
/// spend control.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct UsageExtras {
    pub families: Vec<LimitFamily>,
    pub individual_limit: Option<SpendControl>,
}

/// One account the mock knows.
#[derive(Clone, Debug)]
pub struct MockAccount {
    pub fake: FakeAccount,
    /// The name the reply text uses ("served by alice").
    pub label: String,
    pub mode: AccountMode,
    pub usage: Usage,
    /// Percentage points added to the primary window after each served model request.
    pub burn_per_request: u8,
    /// How long `/wham/accounts/check` (the app-server's login discovery) takes.
    pub login_delay: Duration,
    /// Further limit families and the spend control.
    pub extras: UsageExtras,
    /// The workspace this account is a seat of (`structure: "workspace"` at login), if any.
    pub workspace: Option<String>,
    /// Rate-limit reset credits, available and redeemed.
    pub reset_credits: Vec<ResetCredit>,
    /// Answers already given to `/wham/rate-limit-reset-credits/consume`, by
    /// `redeem_request_id`: a retry with the same key gets the same answer and spends nothing.
    pub redemptions: HashMap<String, Value>,
}

/// A rate-limit reset credit (`/wham/rate-limit-reset-credits`): redeeming one clears the
/// account's exhausted windows.
#[derive(Clone, Debug, PartialEq)]
pub struct ResetCredit {
    pub id: String,
    /// Unix seconds.
    pub granted_at: i64,
    /// Unix seconds; `None` never expires.
    pub expires_at: Option<i64>,
    pub redeemed: bool,
}

impl ResetCredit {
    /// An available credit granted a day ago that expires in `days`.
    pub fn expiring_in_days(id: &str, days: i64) -> Self {
        Self {
            id: id.to_owned(),
            granted_at: unix_now() - 24 * 3600,
            expires_at: Some(unix_now() + days * 24 * 3600),
            redeemed: false,
        }
    }
}

/// A reply the next model request gets instead of the default text.
#[derive(Clone, Debug)]
pub enum ScriptedReply {
    /// A `function_call` output item (a tool call), ending the response.
    FunctionCall {
        call_id: String,
        name: String,
        arguments: String,
    },
    /// An assistant message with this text.
    Text(String),
    /// The account hits its usage limit on this request (and stays limited).
    UsageLimit,
}

/// One request the mock saw.
#[derive(Clone, Debug)]
pub struct RequestRecord {
    pub method: String,
    pub path: String,
    /// The `chatgpt-account-id` header.
    pub account_header: Option<String>,
    /// The account id inside the bearer token's claims.
    pub token_account: Option<String>,
    /// The bearer token's `jti` claim, which names the account and the token's serial.
    pub token_id: Option<String>,
    /// The refresh token presented to `/oauth/token`.
    pub refresh_token: Option<String>,
    pub status: u16,
    /// The JSON body, for POSTs.
    pub body: Option<Value>,
    /// Every request header by lower-case name (repeats joined with `, `), except
    /// `authorization` and `cookie`, which hold secrets: who the caller says it is
    /// (`originator`, `user-agent`, …).
    pub headers: BTreeMap<String, String>,
    pub at: Instant,
    /// The token usage a model response reported in its `response.completed` event (`None`
    /// for every other answer, a 429 included).
    pub token_usage: Option<TokenUsage>,
}

/// The `usage` of a `response.completed` event: `input_tokens`,
/// `input_tokens_details.cached_tokens`, `output_tokens`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TokenUsage {
    pub input: u64,
    pub cached: u64,
    pub output: u64,
}

impl TokenUsage {
    /// What every model response reports unless [`MockBackend::vary_token_usage`] is on.
    pub const FIXED: Self = Self {
        input: 12,
        cached: 0,
        output: 8,
    };
}

impl RequestRecord {
    pub fn is_model_request(&self) -> bool {
        self.method == "POST" && self.path.ends_with("/responses")
    }

    /// The texts of the `input_text` parts of user messages in a model request.
    pub fn user_input_texts(&self) -> Vec<String> {
        input_items(self.body.as_ref())
            .filter(|item| item.get("role").and_then(Value::as_str) == Some("user"))
            .filter_map(|item| item.get("content").and_then(Value::as_array))
            .flatten()
            .filter(|part| part.get("type").and_then(Value::as_str) == Some("input_text"))
            .filter_map(|part| part.get("text").and_then(Value::as_str))
            .map(str::to_owned)
            .collect()
    }

    /// The `input` items of a model request that have the given `type`.
    pub fn input_items_of_type(&self, ty: &str) -> Vec<Value> {
        input_items(self.body.as_ref())
            .filter(|item| item.get("type").and_then(Value::as_str) == Some(ty))
            .cloned()
            .collect()
    }

    /// Whether this model request is Codex's title generation rather than a user turn.
    pub fn is_title_request(&self) -> bool {
        is_structured_output_request(self.body.as_ref())
    }
}

fn input_items(body: Option<&Value>) -> impl Iterator<Item = &Value> {
    body.and_then(|b| b.get("input"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

fn is_structured_output_request(body: Option<&Value>) -> bool {
    body.and_then(|b| b.pointer("/text/format/type"))
        .and_then(Value::as_str)
        == Some("json_schema")
}

#[derive(Default)]
struct MockState {
    accounts: BTreeMap<String, MockAccount>,
    /// Refresh token → (account id, already used).
    refresh_tokens: HashMap<String, (String, bool)>,
    /// Number of `/oauth/token` requests still to fail with 500.
    refresh_failures: u32,
    /// Faults the next `/oauth/token` requests get, one each.
    refresh_faults: VecDeque<RefreshFault>,
    usage_faults: VecDeque<UsageFault>,
    /// Refresh token → the seat it belongs to, for accounts that share a workspace id.
    seats: HashMap<String, FakeAccount>,
    /// Number of reset-credit redemptions still to be carried out but answered with a 502,
    /// as if the answer were lost on the way.
    lost_consume_answers: u32,
    token_serial: u64,
    script: VecDeque<ScriptedReply>,
    log: Vec<RequestRecord>,
    /// Account id → its gate ([`MockBackend::gate`]): `false` while closed.
    gates: HashMap<String, watch::Sender<bool>>,
    /// Account id → model requests waiting at its closed gate now.
    gated: HashMap<String, usize>,
    /// With [`MockBackend::vary_token_usage`]: model responses answered so far.
    varied_tokens: Option<u64>,
}

/// The running mock. Dropping it stops the server.
pub struct MockBackend {
    addr: SocketAddr,
    state: Arc<Mutex<MockState>>,
    shutdown: Option<oneshot::Sender<()>>,
}

impl MockBackend {
    /// Starts the mock on `127.0.0.1:0`.
    pub async fn start() -> Self {
        Self::start_on("127.0.0.1:0").await
    }

    /// Starts the mock on a given loopback address (the `mock-backend` binary uses a fixed port).
    pub async fn start_on(addr: &str) -> Self {
        let state = Arc::new(Mutex::new(MockState::default()));
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .expect("bind mock backend");
        let addr = listener.local_addr().expect("mock backend address");
        let app = Router::new().fallback(handle).with_state(state.clone());
        let (shutdown, rx) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
        Self {
            addr,
            state,
            shutdown: Some(shutdown),
        }
    }

    /// `http://127.0.0.1:PORT` (no trailing slash).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The refresh endpoint, for `CODEX_REFRESH_TOKEN_URL_OVERRIDE`.
    pub fn refresh_url(&self) -> String {
        format!("{}/oauth/token", self.url())
    }

    /// The ChatGPT base URL (as in `chatgpt_base_url`).
    pub fn chatgpt_base_url(&self) -> String {
        format!("{}/backend-api/", self.url())
    }

    fn state(&self) -> MutexGuard<'_, MockState> {
        self.state.lock().expect("mock state lock")
    }

    /// Adds an account named `label` and returns it with a fresh refresh token the mock accepts.
    pub fn add_account(&self, label: &str) -> (FakeAccount, String) {
        let fake = FakeAccount::new(label);
        let key = fake.chatgpt_account_id.clone();
        self.insert_account(key, label, fake, None)
    }

    /// Adds a seat `label` of the workspace `workspace`: its ChatGPT account id is the
    /// workspace's, shared with every other seat, and its user id its own. The returned
    /// account's `chatgpt_account_id` is the workspace's; other controls take [`seat_key`].
    pub fn add_seat(&self, label: &str, workspace: &str) -> (FakeAccount, String) {
        let mut fake = FakeAccount::new(label).with_plan("team");
        fake.chatgpt_account_id = format!("acct-{workspace}");
        let key = seat_key(&fake.chatgpt_account_id, &fake.user_id);
        self.insert_account(key, label, fake, Some(workspace.to_owned()))
    }

    /// Stores `fake` under `key` with default controls and mints it a refresh token.
    fn insert_account(
        &self,
        key: String,
        label: &str,
        fake: FakeAccount,
        workspace: Option<String>,
    ) -> (FakeAccount, String) {
        let mut state = self.state();
        state.accounts.insert(
            key.clone(),
            MockAccount {
                fake: fake.clone(),
                label: label.to_owned(),
                mode: AccountMode::Normal,
                usage: Usage::default(),
                burn_per_request: 0,
                login_delay: Duration::ZERO,
                extras: UsageExtras::default(),
                workspace,
                reset_credits: Vec::new(),
                redemptions: HashMap::new(),
            },
        );
        let refresh = mint_refresh_token(&mut state, &key);
        (fake, refresh)
    }

    /// Further limit families (model-specific limits) of an account.
    pub fn set_families(&self, account_id: &str, families: Vec<LimitFamily>) {
        self.with_account(account_id, |a| a.extras.families = families);
    }

    /// The seat's own spend control, or none.
    pub fn set_individual_limit(&self, account_id: &str, limit: Option<SpendControl>) {
        self.with_account(account_id, |a| a.extras.individual_limit = limit);
    }

    /// A new valid refresh token for an account (as if the user logged in again).
    pub fn issue_refresh_token(&self, account_id: &str) -> String {
        mint_refresh_token(&mut self.state(), account_id)
    }

    fn with_account<R>(&self, account_id: &str, f: impl FnOnce(&mut MockAccount) -> R) -> R {
        let mut state = self.state();
        let account = state
            .accounts
            .get_mut(account_id)
            .unwrap_or_else(|| panic!("mock has no account {account_id}"));
        f(account)
    }

    pub fn set_mode(&self, account_id: &str, mode: AccountMode) {
        self.with_account(account_id, |a| a.mode = mode);
    }

    pub fn set_usage(&self, account_id: &str, usage: Usage) {
        self.with_account(account_id, |a| a.usage = usage);
    }

    pub fn usage(&self, account_id: &str) -> Usage {
        self.with_account(account_id, |a| a.usage.clone())
    }

    /// Makes logins into this account slow (the app-server waits on `/wham/accounts/check`).
    pub fn set_login_delay(&self, account_id: &str, delay: Duration) {
        self.with_account(account_id, |a| a.login_delay = delay);
    }

    pub fn set_burn_per_request(&self, account_id: &str, points: u8) {
        self.with_account(account_id, |a| a.burn_per_request = points);
    }

    /// Replaces an account's reset credits.
    pub fn set_reset_credits(&self, account_id: &str, credits: Vec<ResetCredit>) {
        self.with_account(account_id, |a| a.reset_credits = credits);
    }

    /// An account's reset credits, redeemed ones included.
    pub fn reset_credits(&self, account_id: &str) -> Vec<ResetCredit> {
        self.with_account(account_id, |a| a.reset_credits.clone())
    }

    /// Carries out the next `n` reset-credit redemptions but answers them with HTTP 502, as if
    /// the answer were lost: a retry with the same `redeem_request_id` must not spend more.
    pub fn lose_next_consume_answers(&self, n: u32) {
        self.state().lost_consume_answers = n;
    }

    /// Makes the next `n` refresh requests fail with HTTP 500.
    pub fn fail_next_refreshes(&self, n: u32) {
        self.state().refresh_failures = n;
    }

    /// Makes the next refresh request misbehave as `fault` says (faults queue up, one per
    /// request).
    pub fn push_refresh_fault(&self, fault: RefreshFault) {
        self.state().refresh_faults.push_back(fault);
    }

    /// Makes the next `GET /wham/usage` (of any account) misbehave as `fault`; faults queue
    /// up, one per request.
    pub fn push_usage_fault(&self, fault: UsageFault) {
        self.state().usage_faults.push_back(fault);
    }

    /// Adds a seat of `workspace`'s workspace that shares its mock state (usage, mode) instead
    /// of having its own as [`Self::add_seat`]'s do: another user (`user-{label}`,
    /// `{label}@example.com`) with the same `chatgpt_account_id`. Returns it with a refresh
    /// token whose refreshes mint this seat's tokens. The workspace's usage and mode apply.
    pub fn add_seat_sharing(&self, label: &str, workspace: &FakeAccount) -> (FakeAccount, String) {
        let seat = FakeAccount {
            chatgpt_account_id: workspace.chatgpt_account_id.clone(),
            email: format!("{label}@example.com"),
            plan: workspace.plan.clone(),
            user_id: format!("user-{label}"),
        };
        let mut state = self.state();
        let refresh = mint_refresh_token(&mut state, &seat.chatgpt_account_id);
        state.seats.insert(refresh.clone(), seat.clone());
        (seat, refresh)
    }

    /// Queues a scripted reply for the next user-turn model request (title requests skip it).
    pub fn push_script(&self, reply: ScriptedReply) {
        self.state().script.push_back(reply);
    }

    /// From now on each model response reports different token usage (the n-th: input
    /// `100 + 7n`, cached `3n`, output `10 + n`) instead of [`TokenUsage::FIXED`]; what each
    /// one reported is in its [`RequestRecord::token_usage`].
    pub fn vary_token_usage(&self) {
        self.state().varied_tokens.get_or_insert(0);
    }

    /// Every request seen so far.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.state().log.clone()
    }

    /// Model requests (`POST …/responses`) seen so far.
    pub fn model_requests(&self) -> Vec<RequestRecord> {
        self.requests()
            .into_iter()
            .filter(RequestRecord::is_model_request)
            .collect()
    }

    /// Model requests of user turns (title generation left out) whose user messages contain
    /// `text`, oldest first.
    pub fn user_turn_requests(&self, text: &str) -> Vec<RequestRecord> {
        self.model_requests()
            .into_iter()
            .filter(|r| !r.is_title_request())
            .filter(|r| r.user_input_texts().iter().any(|t| t.contains(text)))
            .collect()
    }

    /// The newest user-turn model request carrying `text`; panics when there is none.
    pub fn last_user_turn_request(&self, text: &str) -> RequestRecord {
        self.user_turn_requests(text)
            .pop()
            .unwrap_or_else(|| panic!("no model request carried {text:?}"))
    }

    /// Closes `account_id`'s gate: its model requests (`POST …/responses`, title requests
    /// included) wait, with no timer, until [`Self::open`]; then each is answered as the
    /// account's mode says at that moment. A turn held this way stays running for as long as
    /// the test needs. Requests are logged when answered, as always.
    pub fn gate(&self, account_id: &str) {
        let mut state = self.state();
        match state.gates.get(account_id) {
            Some(gate) => {
                gate.send_replace(false);
            }
            None => {
                state
                    .gates
                    .insert(account_id.to_owned(), watch::Sender::new(false));
            }
        }
    }

    /// Opens `account_id`'s gate: the requests waiting at it go on, and new ones pass.
    pub fn open(&self, account_id: &str) {
        if let Some(gate) = self.state().gates.get(account_id) {
            gate.send_replace(true);
        }
    }

    /// How many model requests of `account_id` wait at its closed gate now.
    pub fn gated(&self, account_id: &str) -> usize {
        self.state().gated.get(account_id).copied().unwrap_or(0)
    }

    /// Waits until `n` model requests of `account_id` wait at its gate, or panics after
    /// `timeout`.
    pub async fn wait_for_gated(&self, account_id: &str, n: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.gated(account_id) < n {
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {n} requests of {account_id} at its gate \
                 ({} there)",
                self.gated(account_id)
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until `pred` holds for the request log, or panics after `timeout`.
    pub async fn wait_for_request(
        &self,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&RequestRecord) -> bool,
    ) -> RequestRecord {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(r) = self.requests().into_iter().find(|r| pred(r)) {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {what}; log: {:#?}",
                self.requests()
                    .iter()
                    .map(|r| (&r.method, &r.path, r.status, &r.account_header))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for MockBackend {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// How the mock keys a workspace seat: seats share the ChatGPT account id, so the user id
/// tells them apart.
pub fn seat_key(chatgpt_account_id: &str, user_id: &str) -> String {
    format!("{chatgpt_account_id}/{user_id}")
}

fn mint_refresh_token(state: &mut MockState, account_id: &str) -> String {
    state.token_serial += 1;
    let token = format!(
        "rt-{account_id}-{}-{}",
        state.token_serial,
        uuid::Uuid::new_v4().simple()
    );
    state
        .refresh_tokens
        .insert(token.clone(), (account_id.to_owned(), false));
    token
}

/// Who a request says it is.
struct Caller {
    account_header: Option<String>,
    /// The user id inside the bearer token's claims (tells seats of a workspace apart).
    token_user: Option<String>,
    token_account: Option<String>,
    token_id: Option<String>,
    token_expired: bool,
}

fn caller(headers: &HeaderMap) -> Caller {
    let account_header = headers
        .get("chatgpt-account-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let claims = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .and_then(decode_claims);
    let token_account = claims
        .as_ref()
        .and_then(|c| c.pointer("/https:~1~1api.openai.com~1auth/chatgpt_account_id"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let token_user = claims
        .as_ref()
        .and_then(|c| c.pointer("/https:~1~1api.openai.com~1auth/chatgpt_user_id"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let token_id = claims
        .as_ref()
        .and_then(|c| c.get("jti"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let token_expired = claims
        .as_ref()
        .and_then(|c| c.get("exp"))
        .and_then(Value::as_i64)
        .is_some_and(|exp| exp <= unix_now());
    Caller {
        account_header,
        token_user,
        token_account,
        token_id,
        token_expired,
    }
}

async fn handle(
    State(state): State<Arc<Mutex<MockState>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let body_json: Option<Value> = serde_json::from_slice(&body).ok();
    let who = caller(&headers);
    let mut refresh_token = None;

    if path == "/backend-api/wham/accounts/check" {
        let delay = who.account_header.as_ref().and_then(|id| {
            let state = state.lock().expect("mock state lock");
            let key = account_key(&state, id, who.token_user.as_deref());
            state.accounts.get(&key).map(|a| a.login_delay)
        });
        if let Some(delay) = delay.filter(|d| !d.is_zero()) {
            tokio::time::sleep(delay).await;
        }
    }
    if method == Method::POST && path.ends_with("/responses") {
        pass_gate(&state, who.account_header.as_deref()).await;
    }
    let mut delay = None;
    let response = if method == Method::POST && path == "/oauth/token" {
        refresh_token = body_json
            .as_ref()
            .and_then(|b| b.get("refresh_token"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        let fault = state
            .lock()
            .expect("mock state lock")
            .refresh_faults
            .pop_front();
        match fault {
            None => oauth_token(&state, body_json.as_ref()),
            Some(RefreshFault::RotateThenDelay(d)) => {
                delay = Some(d);
                oauth_token(&state, body_json.as_ref())
            }
            Some(RefreshFault::RotateThenCutBody) => {
                cut_body(oauth_token(&state, body_json.as_ref())).await
            }
            Some(RefreshFault::Html403) => html_response(
                StatusCode::FORBIDDEN,
                "<html><head><title>403 Forbidden</title></head><body><h1>Access denied</h1>\
                 <p>Your organization's proxy blocked this site.</p></body></html>",
            ),
            Some(RefreshFault::ServerError(code)) => html_response(
                StatusCode::from_u16(code).expect("a valid status"),
                "<html><body><h1>Bad Gateway</h1></body></html>",
            ),
            Some(RefreshFault::CaptivePortal) => html_response(
                StatusCode::OK,
                "<!DOCTYPE html><html><head><title>Sign in to Airport Wi-Fi</title></head>\
                 <body><form action=\"/portal/login\"></form></body></html>",
            ),
        }
    } else if path.starts_with("/backend-api/") {
        backend(&state, &method, &path, &who, body_json.as_ref())
    } else {
        (StatusCode::NOT_FOUND, "not found").into_response()
    };

    let record = RequestRecord {
        method: method.to_string(),
        path,
        account_header: who.account_header,
        token_account: who.token_account,
        token_id: who.token_id,
        refresh_token,
        status: response.status().as_u16(),
        body: body_json,
        headers: recorded_headers(&headers),
        at: Instant::now(),
        token_usage: response.extensions().get::<TokenUsage>().copied(),
    };
    state.lock().expect("mock state lock").log.push(record);
    // Logged first: what the server did is done, however long the answer takes.
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    response
}

fn html_response(status: StatusCode, body: &'static str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body,
    )
        .into_response()
}

/// Waits while `account`'s gate is closed ([`MockBackend::gate`]), counted in `gated`. An
/// account at its usage limit refuses at once, gate or not, as the real backend answers a
/// limited account before any generation: a session can learn of the limit while another's
/// turn waits at the gate.
async fn pass_gate(state: &Arc<Mutex<MockState>>, account: Option<&str>) {
    let Some(account) = account else { return };
    let gate = {
        let mut guard = state.lock().expect("mock state lock");
        let Some(gate) = guard.gates.get(account).map(watch::Sender::subscribe) else {
            return;
        };
        let limited = guard
            .accounts
            .get(account)
            .is_some_and(|a| a.mode == AccountMode::UsageLimit);
        if *gate.borrow() || limited {
            return;
        }
        *guard.gated.entry(account.to_owned()).or_default() += 1;
        gate
    };
    /// Uncounts the request however the wait ends (the client may give up: the future drops).
    struct Waiting<'a>(&'a Arc<Mutex<MockState>>, &'a str);
    impl Drop for Waiting<'_> {
        fn drop(&mut self) {
            if let Ok(mut state) = self.0.lock()
                && let Some(n) = state.gated.get_mut(self.1)
            {
                *n = n.saturating_sub(1);
            }
        }
    }
    let _waiting = Waiting(state, account);
    let mut gate = gate;
    // The sender lives in the state as long as the mock does.
    let _ = gate.wait_for(|open| *open).await;
}

/// `response` with its body broken off after the first half: the client reads the status and
/// headers, then the connection fails.
async fn cut_body(response: Response) -> Response {
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .expect("a buffered body");
    let half = bytes.slice(..bytes.len() / 2);
    let chunks: Vec<Result<Bytes, std::io::Error>> = vec![
        Ok(half),
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "cut off",
        )),
    ];
    let mut response = Response::from_parts(parts, Body::from_stream(tokio_stream::iter(chunks)));
    response.headers_mut().remove(header::CONTENT_LENGTH);
    response
}

/// The mock's key for a caller: the seat key when that account id has seats, else the id.
fn account_key(state: &MockState, account_id: &str, user: Option<&str>) -> String {
    user.map(|user| seat_key(account_id, user))
        .filter(|key| state.accounts.contains_key(key))
        .unwrap_or_else(|| account_id.to_owned())
}

fn recorded_headers(headers: &HeaderMap) -> BTreeMap<String, String> {
    let mut recorded = BTreeMap::<String, String>::new();
    for (name, value) in headers {
        if name == header::AUTHORIZATION || name == header::COOKIE {
            continue;
        }
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        recorded
            .entry(name.as_str().to_owned())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(&value);
            })
            .or_insert(value);
    }
    recorded
}

fn json_response(status: StatusCode, body: Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn backend(
    state: &Arc<Mutex<MockState>>,
    method: &Method,
    path: &str,
    who: &Caller,
    body: Option<&Value>,
) -> Response {
    let mut guard = state.lock().expect("mock state lock");
    if method == Method::GET && path == "/backend-api/wham/usage" {
        match guard.usage_faults.pop_front() {
            None => {}
            // In front of the backend: whoever asks gets the page.
            Some(UsageFault::Html403) => {
                return html_response(
                    StatusCode::FORBIDDEN,
                    "<html><head><title>403 Forbidden</title></head><body><h1>Access denied</h1>\
                     <p>Your organization's proxy blocked this site.</p></body></html>",
                );
            }
            Some(UsageFault::CaptivePortal) => {
                return html_response(
                    StatusCode::OK,
                    "<!DOCTYPE html><html><head><title>Sign in to Airport Wi-Fi</title></head>\
                     <body><form action=\"/portal/login\"></form></body></html>",
                );
            }
            Some(UsageFault::Json403) => {
                return json_response(
                    StatusCode::FORBIDDEN,
                    json!({"detail": "You do not have access to this resource."}),
                );
            }
        }
    }
    let Some(account_id) = who.account_header.clone() else {
        return json_response(
            StatusCode::UNAUTHORIZED,
            json!({"detail": "missing chatgpt-account-id"}),
        );
    };
    let authorized = !who.token_expired && who.token_account.as_deref() == Some(&account_id);
    // A seat of a workspace is found by its user id too.
    let account_id = account_key(&guard, &account_id, who.token_user.as_deref());
    let Some(account) = guard.accounts.get_mut(&account_id) else {
        return json_response(
            StatusCode::UNAUTHORIZED,
            json!({"detail": "unknown account"}),
        );
    };
    if !authorized {
        return json_response(
            StatusCode::UNAUTHORIZED,
            json!({"detail": "Could not validate your credentials"}),
        );
    }
    // Codex ignores a 401 on its background fetches (`/codex/models`, `/wham/settings/user`),
    // so those do not consume the one 401; the next real call (a model request, a usage read)
    // gets it, as it would with a token the backend stopped accepting.
    let background = path.ends_with("/codex/models") || path.ends_with("/wham/settings/user");
    if account.mode == AccountMode::UnauthorizedOnce && !background {
        account.mode = AccountMode::Normal;
        return json_response(
            StatusCode::UNAUTHORIZED,
            json!({"detail": "Your authentication token has expired."}),
        );
    }

    match (method.as_str(), path) {
        ("GET", "/backend-api/wham/accounts/check") => {
            json_response(StatusCode::OK, accounts_check(account))
        }
        ("GET", "/backend-api/wham/usage") => json_response(StatusCode::OK, wham_usage(account)),
        ("GET", "/backend-api/codex/models") => json_response(StatusCode::OK, models_catalog()),
        ("GET", "/backend-api/wham/rate-limit-reset-credits") => {
            json_response(StatusCode::OK, reset_credits_list(account))
        }
        ("POST", "/backend-api/wham/rate-limit-reset-credits/consume") => {
            let answer = consume_reset_credit(account, body);
            if guard.lost_consume_answers > 0 && answer.status().is_success() {
                guard.lost_consume_answers -= 1;
                return json_response(
                    StatusCode::BAD_GATEWAY,
                    json!({"detail": "upstream connect error"}),
                );
            }
            answer
        }
        ("POST", p) if p.ends_with("/responses") => {
            let tokens = match guard.varied_tokens.as_mut() {
                None => TokenUsage::FIXED,
                Some(n) => {
                    *n += 1;
                    TokenUsage {
                        input: 100 + 7 * *n,
                        cached: 3 * *n,
                        output: 10 + *n,
                    }
                }
            };
            let title = is_structured_output_request(body);
            let script = if title {
                None
            } else {
                guard.script.pop_front()
            };
            let account = guard
                .accounts
                .get_mut(&account_id)
                .expect("account present");
            if matches!(script, Some(ScriptedReply::UsageLimit)) {
                account.mode = AccountMode::UsageLimit;
            }
            model_response(account, body, title, script, tokens)
        }
        _ => json_response(StatusCode::NOT_FOUND, json!({"detail": "Not Found"})),
    }
}

/// The model catalog (`GET {base}/codex/models`, a `ModelsResponse`): one entry for the model the
/// offline config names. The real backend always answers it; Codex caches a successful answer
/// (5 minutes, on disk), but retries a failed fetch on every turn while it is signed in with
/// `chatgptAuthTokens` — which made every turn through the proxy ~40 ms slower when this mock
/// answered 404.
fn models_catalog() -> Value {
    let effort =
        |effort: &str, description: &str| json!({"effort": effort, "description": description});
    json!({"models": [{
        "slug": crate::codex_home::MODEL,
        "display_name": crate::codex_home::MODEL,
        "description": "The mock backend's only model.",
        "default_reasoning_level": "medium",
        "supported_reasoning_levels": [
            effort("low", "Fast responses with lighter reasoning"),
            effort("medium", "Balances speed and reasoning depth"),
            effort("high", "Greater reasoning depth"),
        ],
        "shell_type": "unified_exec",
        "visibility": "list",
        "supported_in_api": true,
        "priority": 1,
        "upgrade": null,
        "base_instructions": "You are Codex, served by the cs-tui mock backend.",
        "supports_reasoning_summaries": true,
        "support_verbosity": false,
        "default_verbosity": null,
        "apply_patch_tool_type": "freeform",
        "truncation_policy": {"mode": "tokens", "limit": 10000},
        "supports_parallel_tool_calls": true,
        "context_window": 272000,
        "experimental_supported_tools": [],
        "input_modalities": ["text", "image"],
    }]})
}

/// Codex 0.169 refuses a login whose discovery lacks `workspace_backend_origin` (it must be an
/// HTTPS origin) or `account_routing_override`; a personal account answers as below.
fn accounts_check(account: &MockAccount) -> Value {
    let id = &account.fake.chatgpt_account_id;
    let (name, structure) = match &account.workspace {
        Some(workspace) => (workspace.as_str(), "workspace"),
        None => (account.label.as_str(), "personal"),
    };
    json!({
        "accounts": [{
            "id": id,
            "name": name,
            "structure": structure,
            "plan_type": account.fake.plan,
            "workspace_backend_origin": "https://chatgpt.com",
            "account_routing_override": "NO_CONSTRAINT",
            "is_default": true,
        }],
        "account_ordering": [id],
        "default_account_id": id,
    })
}

fn window_json(w: &UsageWindow) -> Value {
    json!({
        "used_percent": w.used_percent,
        "limit_window_seconds": i64::from(w.window_minutes) * 60,
        "reset_after_seconds": (w.resets_at - unix_now()).max(0),
        "reset_at": w.resets_at,
    })
}

/// What the backend knows of an account's usage: an account held at its usage limit reads as
/// full (its 5-hour window at 100 %, the limit reached), on every endpoint.
fn effective_usage(account: &MockAccount) -> Usage {
    let mut usage = account.usage.clone();
    if matches!(account.mode, AccountMode::UsageLimit) {
        if let Some(p) = usage.primary.as_mut() {
            p.used_percent = 100;
        }
        usage
            .limit_reached_type
            .get_or_insert_with(|| "rate_limit_reached".to_owned());
    }
    usage
}

fn rate_limit_json(
    primary: Option<&UsageWindow>,
    secondary: Option<&UsageWindow>,
    reached: bool,
) -> Value {
    let limit_reached = reached
        || [primary, secondary]
            .iter()
            .flatten()
            .any(|w| w.used_percent >= 100);
    json!({
        "allowed": !limit_reached,
        "limit_reached": limit_reached,
        "primary_window": primary.map(window_json),
        "secondary_window": secondary.map(window_json),
    })
}

fn spend_control_json(limit: Option<&SpendControl>) -> Value {
    let Some(l) = limit else {
        return Value::Null;
    };
    let as_cents = |s: &str| s.parse::<f64>().unwrap_or(0.0);
    json!({
        "reached": l.used_percent >= 100,
        "individual_limit": {
            "limit": l.limit,
            "used": l.used,
            "remaining": format!("{:.2}", as_cents(&l.limit) - as_cents(&l.used)),
            "used_percent": l.used_percent,
            "remaining_percent": 100 - i32::from(l.used_percent.min(100)),
            "reset_after_seconds": (l.resets_at - unix_now()).max(0),
            "reset_at": l.resets_at,
        },
    })
}

fn wham_usage(account: &MockAccount) -> Value {
    let usage = &effective_usage(account);
    let limit_reached = usage.limit_reached_type.is_some()
        || [usage.primary, usage.secondary]
            .iter()
            .flatten()
            .any(|w| w.used_percent >= 100);
    let additional: Vec<Value> = account
        .extras
        .families
        .iter()
        .map(|f| {
            json!({
                "limit_name": f.limit_name,
                "metered_feature": f.limit_id,
                "rate_limit": rate_limit_json(f.primary.as_ref(), f.secondary.as_ref(), false),
            })
        })
        .collect();
    json!({
        "plan_type": account.fake.plan,
        "rate_limit": {
            "allowed": !limit_reached,
            "limit_reached": limit_reached,
            "primary_window": usage.primary.as_ref().map(window_json),
            "secondary_window": usage.secondary.as_ref().map(window_json),
        },
        "credits": usage.credits.as_ref().map(|(has, unlimited, balance)| json!({
            "has_credits": has, "unlimited": unlimited, "balance": balance,
        })),
        "additional_rate_limits": additional,
        "rate_limit_reached_type": usage.limit_reached_type.as_ref().map(|t| json!({"type": t})),
        "spend_control": spend_control_json(account.extras.individual_limit.as_ref()),
        "rate_limit_reset_credits": {"available_count": available_credits(account).count()},
    })
}

/// The header families of the further limits: `codex_bengalfox` → `x-codex-bengalfox-*`,
/// with `x-codex-bengalfox-limit-name` (docs/protocol.md §9).
fn family_headers(families: &[LimitFamily]) -> Vec<(String, String)> {
    let mut headers = Vec::new();
    for family in families {
        let prefix = format!("x-{}", family.limit_id.replace('_', "-"));
        window_headers(&prefix, family.primary, family.secondary, &mut headers);
        headers.push((format!("{prefix}-limit-name"), family.limit_name.clone()));
    }
    headers
}

fn window_headers(
    prefix: &str,
    primary: Option<UsageWindow>,
    secondary: Option<UsageWindow>,
    headers: &mut Vec<(String, String)>,
) {
    for (name, window) in [("primary", primary), ("secondary", secondary)] {
        if let Some(w) = window {
            headers.push((
                format!("{prefix}-{name}-used-percent"),
                w.used_percent.to_string(),
            ));
            headers.push((
                format!("{prefix}-{name}-window-minutes"),
                w.window_minutes.to_string(),
            ));
            headers.push((format!("{prefix}-{name}-reset-at"), w.resets_at.to_string()));
        }
    }
}

fn available_credits(account: &MockAccount) -> impl Iterator<Item = &ResetCredit> {
    let now = unix_now();
    account
        .reset_credits
        .iter()
        .filter(move |c| !c.redeemed && c.expires_at.is_none_or(|e| e > now))
}

/// ISO 8601 in UTC, as the backend writes the credits' times.
fn iso_time(unix: i64) -> Value {
    chrono::DateTime::from_timestamp(unix, 0)
        .map(|t| json!(t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)))
        .unwrap_or(Value::Null)
}

fn credit_json(credit: &ResetCredit) -> Value {
    json!({
        "id": credit.id,
        "reset_type": "codex_rate_limits",
        "status": if credit.redeemed { "redeemed" } else { "available" },
        "granted_at": iso_time(credit.granted_at),
        "expires_at": credit.expires_at.map_or(Value::Null, iso_time),
        "title": "Full reset (Weekly + 5 hr)",
        "description": "Resets your Codex usage limits.",
    })
}

/// `GET {base}/wham/rate-limit-reset-credits`: the available credits, soonest expiry first.
fn reset_credits_list(account: &MockAccount) -> Value {
    let mut credits: Vec<&ResetCredit> = available_credits(account).collect();
    credits.sort_by_key(|c| c.expires_at.unwrap_or(i64::MAX));
    json!({
        "available_count": credits.len(),
        "credits": credits.into_iter().map(credit_json).collect::<Vec<_>>(),
    })
}

/// `POST {base}/wham/rate-limit-reset-credits/consume` `{redeem_request_id, credit_id?}` →
/// `{code, windows_reset, credit}`. A credit clears every window of an exhausted account; on an
/// account with room it is spent for nothing (`nothing_to_reset`, docs/protocol.md §9). The same
/// `redeem_request_id` again gets the first answer and spends nothing more.
fn consume_reset_credit(account: &mut MockAccount, body: Option<&Value>) -> Response {
    let Some(key) = body
        .and_then(|b| b.get("redeem_request_id"))
        .and_then(Value::as_str)
        .filter(|k| !k.is_empty())
        .map(str::to_owned)
    else {
        return json_response(
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({"detail": "redeem_request_id is required"}),
        );
    };
    if let Some(answer) = account.redemptions.get(&key) {
        return json_response(StatusCode::OK, answer.clone());
    }
    let wanted = body
        .and_then(|b| b.get("credit_id"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let now = unix_now();
    let candidate = account
        .reset_credits
        .iter_mut()
        // Without a credit id the backend picks the available credit that expires first.
        .filter(|c| wanted.as_ref().map_or(!c.redeemed, |w| &c.id == w))
        .filter(|c| c.expires_at.is_none_or(|e| e > now))
        .min_by_key(|c| (c.redeemed, c.expires_at.unwrap_or(i64::MAX)));
    let answer = match candidate {
        None => json!({"code": "no_credit", "windows_reset": 0, "credit": null}),
        Some(credit) if credit.redeemed => {
            json!({"code": "already_redeemed", "windows_reset": 0, "credit": credit_json(credit)})
        }
        Some(credit) => {
            credit.redeemed = true;
            let credit = credit_json(credit);
            let usage = effective_usage(account);
            let exhausted = usage.limit_reached_type.is_some()
                || [usage.primary, usage.secondary]
                    .iter()
                    .flatten()
                    .any(|w| w.used_percent >= 100);
            if exhausted {
                let mut windows_reset = 0;
                for window in [&mut account.usage.primary, &mut account.usage.secondary]
                    .into_iter()
                    .flatten()
                {
                    window.used_percent = 0;
                    windows_reset += 1;
                }
                account.usage.limit_reached_type = None;
                if account.mode == AccountMode::UsageLimit {
                    account.mode = AccountMode::Normal;
                }
                json!({"code": "reset", "windows_reset": windows_reset, "credit": credit})
            } else {
                json!({"code": "nothing_to_reset", "windows_reset": 0, "credit": credit})
            }
        }
    };
    account.redemptions.insert(key, answer.clone());
    json_response(StatusCode::OK, answer)
}

/// The `x-codex-*` headers Codex reads its rate limits from.
fn rate_limit_headers(usage: &Usage) -> Vec<(String, String)> {
    let mut headers = Vec::new();
    window_headers("x-codex", usage.primary, usage.secondary, &mut headers);
    if let Some(kind) = &usage.limit_reached_type {
        headers.push(("x-codex-rate-limit-reached-type".into(), kind.clone()));
    }
    if let Some((has, unlimited, balance)) = &usage.credits {
        headers.push(("x-codex-credits-has-credits".into(), has.to_string()));
        headers.push(("x-codex-credits-unlimited".into(), unlimited.to_string()));
        if let Some(balance) = balance {
            headers.push(("x-codex-credits-balance".into(), balance.clone()));
        }
    }
    headers
}

fn model_response(
    account: &mut MockAccount,
    body: Option<&Value>,
    title: bool,
    script: Option<ScriptedReply>,
    tokens: TokenUsage,
) -> Response {
    match account.mode.clone() {
        AccountMode::UsageLimit => {
            let usage = effective_usage(account);
            let resets_at = usage
                .primary
                .map(|w| w.resets_at)
                .unwrap_or(unix_now() + 3600);
            let mut response = json_response(
                StatusCode::TOO_MANY_REQUESTS,
                json!({"error": {
                    "type": "usage_limit_reached",
                    "message": "The usage limit has been reached",
                    "plan_type": account.fake.plan,
                    "resets_at": resets_at,
                }}),
            );
            append_headers(&mut response, &rate_limit_headers(&usage));
            append_headers(&mut response, &family_headers(&account.extras.families));
            response
        }
        AccountMode::ServerError => json_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"error": {"type": "server_error", "message": "mock server error"}}),
        ),
        mode => {
            let delay = match mode {
                AccountMode::Slow(d) => Some(d),
                _ => None,
            };
            let headers = rate_limit_headers(&account.usage);
            if !title && let Some(p) = account.usage.primary.as_mut() {
                p.used_percent = p
                    .used_percent
                    .saturating_add(account.burn_per_request)
                    .min(100);
            }
            let events = reply_events(account, body, title, script, tokens);
            let mut response = sse_response(events, delay);
            response.extensions_mut().insert(tokens);
            append_headers(&mut response, &headers);
            append_headers(&mut response, &family_headers(&account.extras.families));
            response
        }
    }
}

fn append_headers(response: &mut Response, headers: &[(String, String)]) {
    for (name, value) in headers {
        if let (Ok(name), Ok(value)) = (
            header::HeaderName::from_bytes(name.as_bytes()),
            header::HeaderValue::from_str(value),
        ) {
            response.headers_mut().insert(name, value);
        }
    }
}

/// The text of the last user message in a model request.
fn last_user_text(body: Option<&Value>) -> String {
    input_items(body)
        .filter(|item| item.get("role").and_then(Value::as_str) == Some("user"))
        .filter_map(|item| item.get("content").and_then(Value::as_array))
        .flatten()
        .filter_map(|part| part.get("text").and_then(Value::as_str))
        .filter(|text| !text.trim_start().starts_with('<'))
        .last()
        .unwrap_or_default()
        .to_owned()
}

fn reply_events(
    account: &MockAccount,
    body: Option<&Value>,
    title: bool,
    script: Option<ScriptedReply>,
    tokens: TokenUsage,
) -> Vec<Value> {
    let response_id = format!("resp_{}", uuid::Uuid::new_v4().simple());
    let mut events = vec![json!({"type": "response.created", "response": {"id": response_id}})];
    let item_id = format!("msg_{}", uuid::Uuid::new_v4().simple());
    let text = match script {
        Some(ScriptedReply::FunctionCall {
            call_id,
            name,
            arguments,
        }) => {
            events.push(json!({"type": "response.output_item.done", "item": {
                "type": "function_call", "call_id": call_id, "name": name, "arguments": arguments,
            }}));
            None
        }
        Some(ScriptedReply::Text(text)) => Some(text),
        // Answered with a 429 before any event is built.
        Some(ScriptedReply::UsageLimit) => None,
        None if title => Some(json!({"title": format!("Chat with {}", account.label)}).to_string()),
        None => {
            let prompt: String = last_user_text(body).chars().take(60).collect();
            Some(format!(
                "Served by {}: you said \"{prompt}\"",
                account.label
            ))
        }
    };
    if let Some(text) = text {
        events.push(json!({"type": "response.output_item.added", "item": {
            "type": "message", "role": "assistant", "id": item_id, "content": [],
        }}));
        events.push(
            json!({"type": "response.output_text.delta", "item_id": item_id,
            "output_index": 0, "content_index": 0, "delta": text}),
        );
        events.push(json!({"type": "response.output_item.done", "item": {
            "type": "message", "role": "assistant", "id": item_id,
            "content": [{"type": "output_text", "text": text}],
        }}));
    }
    events.push(json!({"type": "response.completed", "response": {
        "id": response_id,
        "usage": {"input_tokens": tokens.input,
                  "input_tokens_details": (tokens.cached > 0)
                      .then(|| json!({"cached_tokens": tokens.cached})),
                  "output_tokens": tokens.output,
                  "output_tokens_details": null, "total_tokens": tokens.input + tokens.output},
    }}));
    events
}

fn sse_frame(event: &Value) -> Bytes {
    let kind = event
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("message");
    Bytes::from(format!("event: {kind}\ndata: {event}\n\n"))
}

fn sse_response(events: Vec<Value>, delay: Option<Duration>) -> Response {
    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(events.len().max(1));
    tokio::spawn(async move {
        for (i, event) in events.iter().enumerate() {
            if tx.send(Ok(sse_frame(event))).await.is_err() {
                return;
            }
            if i == 0
                && let Some(d) = delay
            {
                tokio::time::sleep(d).await;
            }
        }
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream")
        .body(Body::from_stream(stream))
        .expect("valid SSE response")
}

fn oauth_token(state: &Arc<Mutex<MockState>>, body: Option<&Value>) -> Response {
    let mut guard = state.lock().expect("mock state lock");
    if guard.refresh_failures > 0 {
        guard.refresh_failures -= 1;
        return json_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"error": {"message": "mock refresh failure"}}),
        );
    }
    let presented = body
        .and_then(|b| b.get("refresh_token"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    let grant_ok = body
        .and_then(|b| b.get("grant_type"))
        .and_then(Value::as_str)
        == Some("refresh_token");
    let Some((account_id, used)) = guard.refresh_tokens.get(presented).cloned() else {
        return json_response(
            StatusCode::UNAUTHORIZED,
            json!({"error": {"code": "refresh_token_invalidated",
                "message": "Your refresh token is invalid. Please log in again."}}),
        );
    };
    if used || !grant_ok {
        return json_response(
            StatusCode::UNAUTHORIZED,
            json!({"error": {"code": "refresh_token_reused",
                "message": "Your refresh token has already been used to generate a new access token. Please try signing in again."}}),
        );
    }
    let seat = guard.seats.get(presented).cloned();
    let Some(fake) = seat
        .clone()
        .or_else(|| guard.accounts.get(&account_id).map(|a| a.fake.clone()))
    else {
        return json_response(
            StatusCode::UNAUTHORIZED,
            json!({"error": {"code": "unknown"}}),
        );
    };
    guard
        .refresh_tokens
        .insert(presented.to_owned(), (account_id.clone(), true));
    let new_refresh = mint_refresh_token(&mut guard, &account_id);
    if let Some(seat) = seat {
        guard.seats.insert(new_refresh.clone(), seat);
    }
    let serial = guard.token_serial;
    json_response(
        StatusCode::OK,
        json!({
            "id_token": fake.id_token(3600),
            "access_token": fake.access_token(3600, serial),
            "refresh_token": new_refresh,
            "expires_in": 3600,
        }),
    )
}
