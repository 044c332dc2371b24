//! Connections to the app-server: the websocket dial shared by the relay and the proxy's own
//! control connection, over which it logs accounts in and reads rate limits.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use color_eyre::eyre::{Result, WrapErr, bail, eyre};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::proxy::rpc::{Envelope, LoginCompletedParams, OWN_ID_PREFIX, method};
use crate::proxy::socket::{AppServerAddr, Stream};
use crate::secret::Secret;

pub(crate) type UpstreamStream = WebSocketStream<Stream>;

/// The largest message either side may send through us. Codex sends whole thread histories in
/// one message; 64 MiB must pass (the bar), so we allow well beyond it.
pub(crate) const MAX_MESSAGE: usize = 256 << 20;

pub(crate) fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE))
}

/// Opens a websocket to the app-server.
pub(crate) async fn dial(addr: &AppServerAddr) -> Result<UpstreamStream> {
    let (stream, request) = addr.connect().await?;
    let (ws, _) = tokio_tungstenite::client_async_with_config(request, stream, Some(ws_config()))
        .await
        .map_err(|err| {
            // The error may quote the request's headers; name only what failed.
            eyre!(
                "the websocket upgrade to the app-server at {} failed: {}",
                addr.describe(),
                handshake_failure(&err)
            )
        })?;
    Ok(ws)
}

/// What went wrong in a websocket handshake, without any header value.
fn handshake_failure(err: &tokio_tungstenite::tungstenite::Error) -> String {
    use tokio_tungstenite::tungstenite::Error;
    match err {
        Error::Http(response) => format!("HTTP {}", response.status()),
        Error::Io(io) => io.to_string(),
        Error::ConnectionClosed | Error::AlreadyClosed => "the connection closed".to_owned(),
        _ => "protocol error".to_owned(),
    }
}

/// A JSON-RPC error from the app-server.
#[derive(Debug, Clone, thiserror::Error)]
#[error("app-server refused {method}: {message} (code {code})")]
pub(crate) struct RpcError {
    pub method: String,
    pub code: i64,
    pub message: String,
}

/// What the control connection hears that is not a response to its own requests.
#[derive(Debug)]
pub(crate) enum ControlEvent {
    /// A server→client request (`account/chatgptAuthTokens/refresh`, …) to answer.
    ServerRequest {
        id: Value,
        method: String,
        params: Value,
    },
    /// A notification.
    Notification { method: String },
    /// The connection ended.
    Closed,
}

type Pending = Arc<Mutex<HashMap<String, (String, oneshot::Sender<Result<Value, RpcError>>)>>>;

/// The proxy's own initialized connection to the app-server (`experimentalApi`, which
/// `chatgptAuthTokens` logins require, docs/protocol.md §1).
#[derive(Clone)]
pub(crate) struct ControlConnection {
    outgoing: mpsc::UnboundedSender<Message>,
    pending: Pending,
    login_waiter: Arc<Mutex<Option<oneshot::Sender<LoginCompletedParams>>>>,
    prefix: Arc<str>,
    counter: Arc<AtomicU64>,
    /// The `User-Agent` the app-server sends the backend (its `initialize` result).
    user_agent: Option<Arc<str>>,
}

impl std::fmt::Debug for ControlConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlConnection")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// What the control connection says of itself in `initialize`.
///
/// The first `initialize` an app-server receives sets the originator and `User-Agent` of all
/// its backend requests (docs/protocol.md §9), and the control connection is always first: it logs
/// the account in before any client may attach. So it introduces itself exactly as the Codex
/// TUI does (captured from `codex --remote` 0.169.0: name `codex-tui`, no title, Codex's own
/// version), and the backend sees what a plain `codex --remote` session sends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ClientIdentity {
    pub name: &'static str,
    pub version: String,
}

impl ClientIdentity {
    /// The Codex TUI of the given Codex version (`codex --version`); an unknown version is
    /// sent as `unknown` rather than cs-tui's own.
    pub(crate) fn codex_tui(codex_version: Option<&str>) -> Self {
        Self {
            name: "codex-tui",
            version: codex_version.unwrap_or("unknown").to_owned(),
        }
    }

    fn initialize_params(&self) -> Value {
        json!({
            "clientInfo": {"name": self.name, "title": null, "version": self.version},
            // `chatgptAuthTokens` logins need the experimental API (docs/protocol.md §1).
            "capabilities": {"experimentalApi": true},
        })
    }
}

/// How long one control request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

impl ControlConnection {
    /// Connects, initializes, and starts the reader. Events go to `events`.
    pub(crate) async fn connect(
        addr: &AppServerAddr,
        identity: &ClientIdentity,
        events: mpsc::UnboundedSender<ControlEvent>,
    ) -> Result<Self> {
        let ws = dial(addr).await?;
        let (mut sink, mut stream) = ws.split();
        let (outgoing, mut outgoing_rx) = mpsc::unbounded_channel::<Message>();
        tokio::spawn(async move {
            while let Some(message) = outgoing_rx.recv().await {
                if sink.send(message).await.is_err() {
                    break;
                }
            }
        });
        let mut control = Self {
            outgoing,
            pending: Arc::default(),
            login_waiter: Arc::default(),
            prefix: format!("{OWN_ID_PREFIX}{}/", uuid::Uuid::new_v4().simple()).into(),
            counter: Arc::new(AtomicU64::new(1)),
            user_agent: None,
        };
        let reader = control.clone();
        tokio::spawn(async move {
            while let Some(Ok(message)) = stream.next().await {
                match message {
                    Message::Text(text) => reader.dispatch(text.as_str(), &events),
                    Message::Close(_) => break,
                    _ => {}
                }
            }
            reader.fail_all("the app-server closed the control connection");
            let _ = events.send(ControlEvent::Closed);
        });
        let initialized = control
            .request("initialize", identity.initialize_params())
            .await
            .wrap_err("initializing the control connection")?;
        control.user_agent = initialized
            .get("userAgent")
            .and_then(Value::as_str)
            .map(Arc::from);
        control.notify("initialized", None);
        Ok(control)
    }

    /// The `User-Agent` the app-server sends the backend, from its `initialize` result:
    /// cs-tui's own backend reads send the same.
    pub(crate) fn user_agent(&self) -> Option<&str> {
        self.user_agent.as_deref()
    }

    fn dispatch(&self, text: &str, events: &mpsc::UnboundedSender<ControlEvent>) {
        let Some(envelope) = Envelope::parse(text) else {
            tracing::warn!(
                len = text.len(),
                "unparseable message on the control connection"
            );
            return;
        };
        match (envelope.method, &envelope.id) {
            (None, Some(Value::String(id))) => {
                let waiter = self.pending.lock().ok().and_then(|mut p| p.remove(id));
                if let Some((method, waiter)) = waiter {
                    let outcome = match &envelope.error {
                        Some(error) => Err(RpcError {
                            method,
                            code: error.get("code").and_then(Value::as_i64).unwrap_or(0),
                            message: error
                                .get("message")
                                .and_then(Value::as_str)
                                .unwrap_or("unknown error")
                                .to_owned(),
                        }),
                        None => Ok(envelope
                            .result
                            .and_then(|r| serde_json::from_str(r.get()).ok())
                            .unwrap_or(Value::Null)),
                    };
                    let _ = waiter.send(outcome);
                }
            }
            (Some(method), Some(id)) => {
                let params = envelope
                    .params
                    .and_then(|p| serde_json::from_str(p.get()).ok())
                    .unwrap_or(Value::Null);
                let _ = events.send(ControlEvent::ServerRequest {
                    id: id.clone(),
                    method: method.to_owned(),
                    params,
                });
            }
            (Some(method), None) => {
                if method == method::LOGIN_COMPLETED
                    && let Some(params) = envelope.params::<LoginCompletedParams>()
                    && let Some(waiter) = self.login_waiter.lock().ok().and_then(|mut w| w.take())
                {
                    let _ = waiter.send(params);
                    return;
                }
                let _ = events.send(ControlEvent::Notification {
                    method: method.to_owned(),
                });
            }
            _ => {}
        }
    }

    fn fail_all(&self, why: &str) {
        if let Ok(mut pending) = self.pending.lock() {
            for (_, (method, waiter)) in pending.drain() {
                let _ = waiter.send(Err(RpcError {
                    method,
                    code: -1,
                    message: why.to_owned(),
                }));
            }
        }
    }

    fn send_json(&self, value: &Value) -> Result<()> {
        self.outgoing
            .send(Message::Text(value.to_string().into()))
            .map_err(|_| eyre!("the control connection to the app-server is closed"))
    }

    pub(crate) fn notify(&self, method: &str, params: Option<Value>) {
        let mut message = json!({ "method": method });
        if let Some(params) = params {
            message["params"] = params;
        }
        let _ = self.send_json(&message);
    }

    /// Sends a request with a proxy-owned id and waits for its response.
    pub(crate) async fn request(&self, method: &str, params: Value) -> Result<Value> {
        let id = format!(
            "{}{}",
            self.prefix,
            self.counter.fetch_add(1, Ordering::Relaxed)
        );
        let (tx, rx) = oneshot::channel();
        if let Ok(mut pending) = self.pending.lock() {
            pending.insert(id.clone(), (method.to_owned(), tx));
        }
        self.send_json(&json!({"id": id, "method": method, "params": params}))?;
        match tokio::time::timeout(REQUEST_TIMEOUT, rx).await {
            Ok(Ok(Ok(value))) => Ok(value),
            Ok(Ok(Err(rpc))) => Err(rpc.into()),
            Ok(Err(_)) => bail!("the control connection closed during {method}"),
            Err(_) => {
                if let Ok(mut pending) = self.pending.lock() {
                    pending.remove(&id);
                }
                bail!("the app-server did not answer {method} within {REQUEST_TIMEOUT:?}")
            }
        }
    }

    /// Answers a server→client request.
    pub(crate) fn respond(&self, id: Value, result: Result<Value, String>) {
        let message = match result {
            Ok(result) => json!({"id": id, "result": result}),
            Err(message) => json!({"id": id, "error": {"code": -32000, "message": message}}),
        };
        let _ = self.send_json(&message);
    }

    /// Logs the app-server in with an account's tokens and waits for
    /// `account/login/completed`. The login serves every connection (auth is per process).
    pub(crate) async fn login_with_tokens(
        &self,
        access_token: &Secret,
        chatgpt_account_id: &str,
        plan: Option<&str>,
    ) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        if let Ok(mut waiter) = self.login_waiter.lock() {
            *waiter = Some(tx);
        }
        let result = self
            .request(
                "account/login/start",
                json!({
                    "type": "chatgptAuthTokens",
                    "accessToken": access_token.expose(),
                    "chatgptAccountId": chatgpt_account_id,
                    "chatgptPlanType": plan,
                }),
            )
            .await;
        if let Err(err) = result {
            if let Ok(mut waiter) = self.login_waiter.lock() {
                waiter.take();
            }
            return Err(err);
        }
        let completed = tokio::time::timeout(REQUEST_TIMEOUT, rx)
            .await
            .map_err(|_| eyre!("the app-server did not complete the login in time"))?
            .map_err(|_| eyre!("the control connection closed during login"))?;
        if !completed.success {
            bail!(
                "the app-server rejected the login: {}",
                completed
                    .error
                    .unwrap_or_else(|| "no reason given".to_owned())
            );
        }
        Ok(())
    }
}

/// Reads `account/read` into (email, plan), or an error when no ChatGPT account is logged in.
pub(crate) async fn read_account(
    control: &ControlConnection,
) -> Result<(Option<String>, Option<String>)> {
    let account = control.request("account/read", json!({})).await?;
    let account = account
        .get("account")
        .filter(|a| !a.is_null())
        .ok_or_else(|| eyre!("the app-server reports no logged-in account"))?;
    let field = |name: &str| account.get(name).and_then(Value::as_str).map(str::to_owned);
    Ok((field("email"), field("planType")))
}

/// The parameters the Codex TUI sends with `account/rateLimits/read`: the control
/// connection's reads are the same session's reads, so the backend sees the same request
/// (`/wham/usage` with `x-openai-codex-luna-reserve`).
pub(crate) fn rate_limits_read_params() -> Value {
    json!({"supportsLunaReserve": true})
}

/// Reads the active account's rate limits (`account/rateLimits/read`): every limit family,
/// from `rateLimitsByLimitId` when the server sends it, else the single `rateLimits`.
pub(crate) async fn read_rate_limits(
    control: &ControlConnection,
) -> Result<crate::quota::AccountLimits> {
    let value = control
        .request("account/rateLimits/read", rate_limits_read_params())
        .await?;
    parse_rate_limits_read(value)
}

fn parse_rate_limits_read(value: Value) -> Result<crate::quota::AccountLimits> {
    use crate::quota::{AccountLimits, RateLimitSnapshot};
    let single = value
        .get("rateLimits")
        .cloned()
        .ok_or_else(|| eyre!("account/rateLimits/read returned no rateLimits"))?;
    let single: RateLimitSnapshot =
        serde_json::from_value(single).wrap_err("parsing account/rateLimits/read")?;
    let by_id = match value.get("rateLimitsByLimitId") {
        // A family we cannot read is left out (and said so), never the whole read.
        Some(Value::Object(map)) => map
            .iter()
            .filter_map(|(id, snapshot)| {
                match serde_json::from_value::<RateLimitSnapshot>(snapshot.clone()) {
                    Ok(mut snapshot) => {
                        snapshot.limit_id.get_or_insert_with(|| id.clone());
                        Some(snapshot)
                    }
                    Err(_) => {
                        tracing::warn!(limit_id = %id, "an unreadable limit family left out");
                        None
                    }
                }
            })
            .collect::<Vec<_>>(),
        _ => Vec::new(),
    };
    if by_id.is_empty() {
        return Ok(AccountLimits::full([single]));
    }
    // The single view mirrors one of the families; the map holds them all.
    let has_main = by_id
        .iter()
        .any(|s| crate::quota::is_main_family(s.limit_id.as_deref()));
    let main = (!has_main).then_some(single);
    Ok(AccountLimits::full(by_id.into_iter().chain(main)))
}

/// How often a reset-credit redemption is tried when its answer is lost.
const CONSUME_ATTEMPTS: usize = 3;

/// Redeems one reset credit of the logged-in account (`account/rateLimitResetCredit/consume`)
/// and returns the outcome (`reset`, `nothingToReset`, `noCredit`, `alreadyRedeemed`).
///
/// The idempotency key names this one user action: an attempt whose answer was lost (the
/// backend or the connection failed) is tried again with the same key, which the backend
/// answers without spending a second credit. A request the app-server refuses as malformed is
/// not retried.
pub(crate) async fn consume_reset_credit(
    control: &ControlConnection,
    idempotency_key: &str,
) -> Result<String> {
    let mut last = None;
    for attempt in 1..=CONSUME_ATTEMPTS {
        let result = control
            .request(
                "account/rateLimitResetCredit/consume",
                json!({"idempotencyKey": idempotency_key}),
            )
            .await;
        match result {
            Ok(value) => {
                return value
                    .get("outcome")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .ok_or_else(|| eyre!("the app-server's consume answer has no outcome"));
            }
            Err(err) => {
                let refused = err
                    .downcast_ref::<RpcError>()
                    .is_some_and(|rpc| matches!(rpc.code, -32602..=-32600));
                tracing::warn!(attempt, refused, "redeeming a reset credit failed: {err:#}");
                if refused {
                    return Err(err);
                }
                last = Some(err);
            }
        }
    }
    Err(last.expect("at least one attempt").wrap_err(format!(
        "redeeming a reset credit failed {CONSUME_ATTEMPTS} times"
    )))
}

#[cfg(test)]
mod rate_limits_read_tests {
    use super::*;

    #[test]
    fn every_family_of_a_read_is_kept_and_codex_is_the_quota() {
        let read = json!({
            "rateLimits": {"limitId": "codex", "primary": {"usedPercent": 42,
                "windowDurationMins": 300, "resetsAt": 9}},
            "rateLimitsByLimitId": {
                "codex": {"limitId": "codex", "primary": {"usedPercent": 42,
                    "windowDurationMins": 300, "resetsAt": 9}},
                "codex_bengalfox": {"limitName": "GPT-5.3-Codex-Spark",
                    "primary": {"usedPercent": 100, "windowDurationMins": 300, "resetsAt": 9}},
            },
        });
        let limits = parse_rate_limits_read(read).unwrap();
        assert_eq!(
            limits.quota().unwrap().five_hour().unwrap().used_percent,
            42.0
        );
        let others: Vec<_> = limits.others().collect();
        assert_eq!(others.len(), 1);
        assert_eq!(others[0].limit_id.as_deref(), Some("codex_bengalfox"));
        assert_eq!(others[0].family_name(), "GPT-5.3-Codex-Spark");

        let odd = json!({
            "rateLimits": {"limitId": "codex", "primary": {"usedPercent": 5,
                "windowDurationMins": 300}},
            "rateLimitsByLimitId": {
                "codex": {"limitId": "codex", "primary": {"usedPercent": 5,
                    "windowDurationMins": 300}},
                "broken": {"primary": {"usedPercent": "lots"}},
            },
        });
        let limits = parse_rate_limits_read(odd).unwrap();
        assert_eq!(
            limits.quota().unwrap().five_hour().unwrap().used_percent,
            5.0
        );
        assert_eq!(
            limits.others().count(),
            0,
            "the unreadable family is left out"
        );

        let old_server = json!({"rateLimits": {"primary": {"usedPercent": 7,
            "windowDurationMins": 10080, "resetsAt": 9}}});
        let limits = parse_rate_limits_read(old_server).unwrap();
        assert_eq!(limits.quota().unwrap().weekly().unwrap().used_percent, 7.0);
        assert!(parse_rate_limits_read(json!({})).is_err());
    }
}
