//! The demo's simulated ChatGPT backend on 127.0.0.1: the endpoints Codex's app-server and
//! cs-tui call (docs/protocol.md §4), in their wire format, answering for the demo accounts of
//! [`super::script`]:
//!
//! - `POST /backend-api/codex/responses`: a streamed reply (SSE, word by word) with the
//!   `x-codex-*` rate-limit headers and the token usage in `response.completed`; a user turn
//!   costs its account [`super::script::FIVE_HOUR_BURN`] points, and one that would go over a
//!   limit is refused with the `usage_limit_reached` 429;
//! - `GET /backend-api/wham/usage`, `/wham/accounts/check`, `/codex/models`,
//!   `/wham/rate-limit-reset-credits` (none);
//! - `POST /oauth/token`: rotates the refresh token.
//!
//! Every backend call must carry a token minted with this demo's random key: another user on
//! the machine can reach the port, not the demo's accounts. Another process can still open
//! connections, so at most [`MAX_CONNECTIONS`] are served at once (the accept loop of
//! `serve --metrics`, [`crate::conn_cap`]); one more waits in the accept queue until one
//! goes, rather than being closed: the demo's own clients (the app-server's connection pool,
//! cs-tui's usage reads) then see a delay, never an error.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use color_eyre::eyre::{Result, WrapErr};
use futures_util::StreamExt;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode, header};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use super::script::{self, DemoAccount, Window};
use crate::conn_cap::{ConnectionCap, WhenFull, accept_capped};

/// The one model the demo's catalog offers.
pub(super) const MODEL: &str = "gpt-5.1-codex";
/// Request bodies larger than this are refused.
const MAX_BODY: usize = 4 << 20;
/// The pause between two words of a streamed reply.
const WORD_DELAY: Duration = Duration::from_millis(35);
/// Connections served at once; more wait to be accepted. The demo's own clients use a
/// handful (a streamed reply holds one for seconds, keep-alive connections idle in pools).
pub(super) const MAX_CONNECTIONS: usize = 64;

type Body = BoxBody<Bytes, Infallible>;

/// The accounts and the tokens handed out.
struct State {
    accounts: Vec<DemoAccount>,
    /// The demo's random key, which every token carries.
    key: String,
    /// Tokens minted so far.
    serial: u64,
    /// Refresh token → (account index, spent).
    refresh_tokens: HashMap<String, (usize, bool)>,
}

/// The running backend; stops when dropped.
pub(crate) struct SimBackend {
    task: JoinHandle<()>,
}

impl Drop for SimBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SimBackend {
    /// Serves `listener` (bound on 127.0.0.1 before the runtime started) for `accounts`, whose
    /// tokens carry `key`. Must run inside the runtime.
    pub(super) fn start(
        listener: std::net::TcpListener,
        accounts: Vec<DemoAccount>,
        key: String,
    ) -> Result<Self> {
        listener
            .set_nonblocking(true)
            .wrap_err("preparing the demo backend's socket")?;
        let listener = tokio::net::TcpListener::from_std(listener)
            .wrap_err("preparing the demo backend's socket")?;
        let refresh_tokens = accounts
            .iter()
            .enumerate()
            .map(|(i, a)| (a.identity.refresh_token(0, &key), (i, false)))
            .collect();
        let state = Arc::new(Mutex::new(State {
            accounts,
            key,
            serial: 0,
            refresh_tokens,
        }));
        let task = tokio::spawn(serve(listener, state));
        Ok(Self { task })
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // The state holds plain numbers; a panic elsewhere leaves them usable.
    state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

async fn serve(listener: tokio::net::TcpListener, state: Arc<Mutex<State>>) {
    let cap = ConnectionCap {
        name: "demo backend",
        max: MAX_CONNECTIONS,
        when_full: WhenFull::Wait,
        // A streamed reply lasts as long as it lasts, and pools keep connections open.
        lifetime: None,
    };
    accept_capped(listener, cap, move |stream| {
        let state = Arc::clone(&state);
        let service = hyper::service::service_fn(move |request| {
            let state = Arc::clone(&state);
            async move { Ok::<_, Infallible>(answer(request, &state).await) }
        });
        async move {
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(error = %e, "demo backend: connection ended");
            }
        }
    })
    .await;
}

async fn answer(request: Request<Incoming>, state: &Mutex<State>) -> Response<Body> {
    let (parts, body) = request.into_parts();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => {
            return json_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                json!({"detail": "too large"}),
            );
        }
    };
    let body: Option<Value> = serde_json::from_slice(&body).ok();
    let path = parts.uri.path();
    tracing::debug!(method = %parts.method, path, "demo backend request");
    if parts.method == Method::POST && path == "/oauth/token" {
        return refresh(state, body.as_ref());
    }
    let Some(path) = path.strip_prefix("/backend-api") else {
        return not_found();
    };
    let Some(index) = caller(state, &parts.headers) else {
        return json_response(
            StatusCode::UNAUTHORIZED,
            json!({"detail": "Could not validate your credentials"}),
        );
    };
    let mut guard = lock(state);
    let now = now();
    let account = &mut guard.accounts[index];
    match (&parts.method, path) {
        (&Method::GET, "/wham/usage") => json_response(StatusCode::OK, usage(account.current(now))),
        (&Method::GET, "/wham/accounts/check") => {
            json_response(StatusCode::OK, accounts_check(account))
        }
        (&Method::GET, "/codex/models") => json_response(StatusCode::OK, models()),
        (&Method::GET, "/wham/rate-limit-reset-credits") => {
            json_response(StatusCode::OK, json!({"available_count": 0, "credits": []}))
        }
        (&Method::POST, "/codex/responses") => model_response(account, body.as_ref(), now),
        _ => not_found(),
    }
}

/// The account the request's bearer token and `chatgpt-account-id` name, if the token is one
/// of this demo's.
fn caller(state: &Mutex<State>, headers: &hyper::HeaderMap) -> Option<usize> {
    let token = headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")?;
    let account_id = headers.get("chatgpt-account-id")?.to_str().ok()?;
    let token_id = super::tokens::token_id(token)?;
    let state = lock(state);
    let (prefix, key) = token_id.rsplit_once('-')?;
    if key != state.key {
        return None;
    }
    state.accounts.iter().position(|a| {
        a.identity.account_id() == account_id && prefix.starts_with(&format!("{account_id}-"))
    })
}

fn json_response(status: StatusCode, body: Value) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())).boxed());
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

fn not_found() -> Response<Body> {
    json_response(StatusCode::NOT_FOUND, json!({"detail": "Not Found"}))
}

/// `POST /oauth/token` with a refresh token: new tokens, the old refresh token spent.
fn refresh(state: &Mutex<State>, body: Option<&Value>) -> Response<Body> {
    let presented = body
        .and_then(|b| b.get("refresh_token"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    let mut guard = lock(state);
    let Some(&(index, spent)) = guard.refresh_tokens.get(presented) else {
        return json_response(
            StatusCode::UNAUTHORIZED,
            json!({"error": {"code": "refresh_token_invalidated",
                "message": "Your refresh token is invalid. Please log in again."}}),
        );
    };
    if spent {
        return json_response(
            StatusCode::UNAUTHORIZED,
            json!({"error": {"code": "refresh_token_reused",
                "message": "Your refresh token has already been used to generate a new access token."}}),
        );
    }
    guard.serial += 1;
    let serial = guard.serial;
    let identity = guard.accounts[index].identity.clone();
    let key = guard.key.clone();
    let new_refresh = identity.refresh_token(serial, &key);
    guard
        .refresh_tokens
        .insert(presented.to_owned(), (index, true));
    guard
        .refresh_tokens
        .insert(new_refresh.clone(), (index, false));
    let now = now();
    json_response(
        StatusCode::OK,
        json!({
            "id_token": identity.id_token(now),
            "access_token": identity.access_token(now, serial, &key),
            "refresh_token": new_refresh,
            "expires_in": super::tokens::TOKEN_TTL_SECS,
        }),
    )
}

fn window_json(w: &Window, now: i64) -> Value {
    json!({
        "used_percent": w.used_percent,
        "limit_window_seconds": i64::from(w.minutes) * 60,
        "reset_after_seconds": (w.resets_at - now).max(0),
        "reset_at": w.resets_at,
    })
}

/// `GET /wham/usage`.
fn usage(account: &DemoAccount) -> Value {
    let now = now();
    let limited = account.limited();
    json!({
        "plan_type": account.identity.plan,
        "rate_limit": {
            "allowed": !limited,
            "limit_reached": limited,
            "primary_window": window_json(&account.five_hour, now),
            "secondary_window": window_json(&account.weekly, now),
        },
        "credits": null,
        "additional_rate_limits": [],
        "rate_limit_reached_type": limited.then(|| json!({"type": "rate_limit_reached"})),
        "spend_control": null,
        "rate_limit_reset_credits": {"available_count": 0},
    })
}

/// `GET /wham/accounts/check`: a personal account (Codex 0.169 needs the HTTPS workspace
/// origin and the routing field).
fn accounts_check(account: &DemoAccount) -> Value {
    let id = account.identity.account_id();
    json!({
        "accounts": [{
            "id": id,
            "name": account.identity.name,
            "structure": "personal",
            "plan_type": account.identity.plan,
            "workspace_backend_origin": "https://chatgpt.com",
            "account_routing_override": "NO_CONSTRAINT",
            "is_default": true,
        }],
        "account_ordering": [id],
        "default_account_id": id,
    })
}

/// `GET /codex/models`: the one model the demo's config selects.
fn models() -> Value {
    let effort =
        |effort: &str, description: &str| json!({"effort": effort, "description": description});
    json!({"models": [{
        "slug": MODEL,
        "display_name": MODEL,
        "description": "The cs-tui demo's simulated model.",
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
        "base_instructions": "You are Codex, served by cs-tui's demo backend.",
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

/// The `x-codex-*` headers Codex reads the active account's windows from.
fn rate_limit_headers(account: &DemoAccount) -> Vec<(String, String)> {
    let mut headers = Vec::new();
    for (name, w) in [
        ("primary", &account.five_hour),
        ("secondary", &account.weekly),
    ] {
        headers.push((
            format!("x-codex-{name}-used-percent"),
            w.used_percent.to_string(),
        ));
        headers.push((
            format!("x-codex-{name}-window-minutes"),
            w.minutes.to_string(),
        ));
        headers.push((format!("x-codex-{name}-reset-at"), w.resets_at.to_string()));
    }
    if account.limited() {
        headers.push((
            "x-codex-rate-limit-reached-type".into(),
            "rate_limit_reached".into(),
        ));
    }
    headers
}

fn with_headers(mut response: Response<Body>, headers: &[(String, String)]) -> Response<Body> {
    for (name, value) in headers {
        if let (Ok(name), Ok(value)) = (
            header::HeaderName::from_bytes(name.as_bytes()),
            header::HeaderValue::from_str(value),
        ) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

/// A request for a structured answer (the TUI's title of a new thread), not a user turn.
fn is_title_request(body: Option<&Value>) -> bool {
    body.and_then(|b| b.pointer("/text/format/type"))
        .and_then(Value::as_str)
        == Some("json_schema")
}

/// The text of the request's last user message (Codex's own context blocks, which start with
/// `<`, aside).
fn last_user_text(body: Option<&Value>) -> String {
    body.and_then(|b| b.get("input"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .rev()
        .filter(|item| item.get("role").and_then(Value::as_str) == Some("user"))
        .filter_map(|item| item.get("content").and_then(Value::as_array))
        .flat_map(|parts| parts.iter().rev())
        .filter_map(|part| part.get("text").and_then(Value::as_str))
        .find(|text| !text.trim_start().starts_with('<'))
        .unwrap_or_default()
        .to_owned()
}

/// `POST /codex/responses`.
fn model_response(account: &mut DemoAccount, body: Option<&Value>, now: i64) -> Response<Body> {
    let title = is_title_request(body);
    let served = if title {
        !account.current(now).limited()
    } else {
        account.charge_turn(now)
    };
    if !served {
        let response = json_response(
            StatusCode::TOO_MANY_REQUESTS,
            json!({"error": {
                "type": "usage_limit_reached",
                "message": "The usage limit has been reached",
                "plan_type": account.identity.plan,
                "resets_at": account.five_hour.resets_at,
            }}),
        );
        return with_headers(response, &rate_limit_headers(account));
    }
    let text = if title {
        json!({"title": "Strict mode for the config parser"}).to_string()
    } else {
        script::reply_to(&last_user_text(body))
    };
    // Roughly what a real turn reports: the request's size in tokens, most of it cached after
    // the first turn of a thread.
    let input = body.map_or(0, |b| b.to_string().len() / 4) as u64;
    let cached = if input > 4000 { input * 7 / 10 } else { 0 };
    let output = (text.split_whitespace().count() as u64 * 4).div_ceil(3);
    let events = reply_events(&text, !title, input, cached, output);
    let stream =
        futures_util::stream::iter(events.into_iter().enumerate()).then(|(i, event)| async move {
            if i > 0 {
                tokio::time::sleep(WORD_DELAY).await;
            }
            Ok::<_, Infallible>(Frame::data(sse_frame(&event)))
        });
    let mut response = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/event-stream"),
    );
    with_headers(response, &rate_limit_headers(account))
}

/// The Responses API events of one assistant message: created, the text word by word (at
/// once for a title), done, completed with its token usage.
fn reply_events(
    text: &str,
    word_by_word: bool,
    input: u64,
    cached: u64,
    output: u64,
) -> Vec<Value> {
    let response_id = format!("resp_{}", uuid::Uuid::new_v4().simple());
    let item_id = format!("msg_{}", uuid::Uuid::new_v4().simple());
    let mut events = vec![
        json!({"type": "response.created", "response": {"id": response_id}}),
        json!({"type": "response.output_item.added", "item": {
            "type": "message", "role": "assistant", "id": item_id, "content": [],
        }}),
    ];
    let chunks: Vec<String> = if word_by_word {
        text.split_inclusive(' ').map(str::to_owned).collect()
    } else {
        vec![text.to_owned()]
    };
    for delta in chunks {
        events.push(
            json!({"type": "response.output_text.delta", "item_id": item_id,
            "output_index": 0, "content_index": 0, "delta": delta}),
        );
    }
    events.push(json!({"type": "response.output_item.done", "item": {
        "type": "message", "role": "assistant", "id": item_id,
        "content": [{"type": "output_text", "text": text}],
    }}));
    events.push(json!({"type": "response.completed", "response": {
        "id": response_id,
        "usage": {
            "input_tokens": input,
            "input_tokens_details": (cached > 0).then(|| json!({"cached_tokens": cached})),
            "output_tokens": output,
            "output_tokens_details": null,
            "total_tokens": input + output,
        },
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

#[cfg(test)]
mod tests {
    use super::*;

    struct Rig {
        _backend: SimBackend,
        base: String,
        key: String,
        client: reqwest::Client,
    }

    impl Rig {
        fn start() -> Self {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let base = format!("http://{}", listener.local_addr().unwrap());
            let key = "testkey".to_owned();
            let backend =
                SimBackend::start(listener, script::accounts(now()), key.clone()).unwrap();
            Self {
                _backend: backend,
                base,
                key,
                client: reqwest::Client::new(),
            }
        }

        /// A bearer token with `key` for `name`, and `name`'s account id.
        fn bearer(&self, name: &str, key: &str) -> (String, String) {
            let account = script::accounts(now())
                .into_iter()
                .find(|a| a.identity.name == name)
                .unwrap();
            (
                account.identity.access_token(now(), 0, key),
                account.identity.account_id(),
            )
        }

        async fn turn(&self, token: &(String, String), prompt: &str) -> reqwest::Response {
            self.client
                .post(format!("{}/backend-api/codex/responses", self.base))
                .bearer_auth(&token.0)
                .header("chatgpt-account-id", &token.1)
                .json(&json!({"input": [{"role": "user", "content": [{"type": "input_text", "text": prompt}]}]}))
                .send()
                .await
                .unwrap()
        }

        async fn usage(&self, token: &(String, String)) -> reqwest::Response {
            self.client
                .get(format!("{}/backend-api/wham/usage", self.base))
                .bearer_auth(&token.0)
                .header("chatgpt-account-id", &token.1)
                .send()
                .await
                .unwrap()
        }
    }

    #[tokio::test]
    async fn turns_stream_a_reply_burn_the_window_and_meet_the_limit() {
        let rig = Rig::start();
        let alice = rig.bearer("alice", &rig.key);
        let first = rig.turn(&alice, script::TURNS[0].prompt).await;
        assert_eq!(first.status(), 200);
        assert_eq!(first.headers()["x-codex-primary-used-percent"], "72");
        assert_eq!(first.headers()["content-type"], "text/event-stream");
        let text = first.text().await.unwrap();
        assert!(text.starts_with("event: response.created\n"), "{text}");
        assert!(text.contains("\"delta\":\"The \""), "{text}");
        assert!(text.contains("event: response.completed"), "{text}");
        assert!(text.contains("\"output_tokens\""), "{text}");

        assert_eq!(rig.turn(&alice, "again").await.status(), 200);
        let limited = rig.turn(&alice, "once more").await;
        assert_eq!(limited.status(), 429);
        assert_eq!(limited.headers()["x-codex-primary-used-percent"], "100");
        let body: Value = limited.json().await.unwrap();
        assert_eq!(body["error"]["type"], "usage_limit_reached");

        let usage: Value = rig.usage(&alice).await.json().await.unwrap();
        assert_eq!(usage["rate_limit"]["limit_reached"], true);
        assert_eq!(usage["rate_limit"]["primary_window"]["used_percent"], 100);

        let bob = rig.bearer("bob", &rig.key);
        let served = rig.turn(&bob, script::TURNS[2].prompt).await;
        assert_eq!(served.status(), 200);
        assert!(served.text().await.unwrap().contains("Added"));
    }

    #[tokio::test]
    async fn a_token_without_the_demos_key_or_for_another_account_is_refused() {
        let rig = Rig::start();
        let forged = rig.bearer("alice", "guess");
        assert_eq!(rig.turn(&forged, "hi").await.status(), 401);
        let alice = rig.bearer("alice", &rig.key);
        let bob = rig.bearer("bob", &rig.key);
        let crossed = (alice.0.clone(), bob.1.clone());
        assert_eq!(rig.turn(&crossed, "hi").await.status(), 401);
        let missing = rig
            .client
            .get(format!("{}/backend-api/wham/usage", rig.base))
            .send()
            .await
            .unwrap();
        assert_eq!(missing.status(), 401);
        // Nothing was charged by the refused calls.
        let usage: Value = rig.usage(&alice).await.json().await.unwrap();
        assert_eq!(usage["rate_limit"]["primary_window"]["used_percent"], 58);
    }

    #[tokio::test]
    async fn a_refresh_token_rotates_once() {
        let rig = Rig::start();
        let first = script::accounts(now())[1]
            .identity
            .refresh_token(0, &rig.key);
        let refresh = |token: String| {
            let request = rig
                .client
                .post(format!("{}/oauth/token", rig.base))
                .json(&json!({"grant_type": "refresh_token", "refresh_token": token}));
            async move { request.send().await.unwrap() }
        };
        let answer: Value = refresh(first.clone()).await.json().await.unwrap();
        let rotated = answer["refresh_token"].as_str().unwrap().to_owned();
        assert_ne!(rotated, first);
        let token = answer["access_token"].as_str().unwrap();
        let claims = crate::accounts::claims::parse(token).unwrap();
        assert_eq!(claims.chatgpt_account_id.as_deref(), Some("demo-acct-bob"));
        assert_eq!(refresh(first).await.status(), 401, "a spent token");
        assert_eq!(refresh(rotated).await.status(), 200);
    }

    /// Another process holds every connection the backend serves: the demo's next request
    /// waits (it is not refused: Codex would show an error), and is answered once one goes.
    #[tokio::test]
    async fn beyond_the_connection_cap_a_request_waits_until_a_connection_goes() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

        let rig = Rig::start();
        let addr = rig.base.trim_start_matches("http://").to_owned();
        // Each holder is served once (so it holds a slot), then keeps its connection open.
        let mut holders = Vec::new();
        for _ in 0..MAX_CONNECTIONS {
            let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
            s.write_all(b"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .unwrap();
            let mut head = Vec::new();
            let mut buf = [0u8; 512];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = s.read(&mut buf).await.unwrap();
                assert!(n > 0, "a holder's connection closed");
                head.extend_from_slice(&buf[..n]);
            }
            assert!(head.starts_with(b"HTTP/1.1 404"));
            holders.push(s);
        }
        let alice = rig.bearer("alice", &rig.key);
        let mut usage = tokio::spawn({
            let client = rig.client.clone();
            let url = format!("{}/backend-api/wham/usage", rig.base);
            async move {
                client
                    .get(url)
                    .bearer_auth(&alice.0)
                    .header("chatgpt-account-id", &alice.1)
                    .send()
                    .await
                    .map(|r| r.status())
            }
        });
        // (Never answered while every slot is held: a correct backend cannot fail this.)
        let early = tokio::time::timeout(Duration::from_millis(300), &mut usage).await;
        assert!(early.is_err(), "served beyond the cap: {early:?}");
        drop(holders.pop());
        let status = tokio::time::timeout(cs_tui_testkit::WAIT, usage)
            .await
            .expect("answered once a connection went")
            .unwrap()
            .expect("waited, not refused");
        assert_eq!(status, 200);
        // And the demo's client goes on working while the others still hold theirs.
        assert_eq!(rig.usage(&rig.bearer("bob", &rig.key)).await.status(), 200);
    }
}
