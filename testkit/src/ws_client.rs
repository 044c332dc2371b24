//! A minimal JSON-RPC client over a websocket, shaped like the Codex TUI's use of the
//! app-server protocol (no `"jsonrpc"` field, docs/protocol.md §1).

use std::collections::VecDeque;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

/// The byte stream under the websocket: a TCP connection or a unix socket (`serve --listen
/// unix://PATH`).
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

type Ws = WebSocketStream<Box<dyn Io>>;

pub struct WsClient {
    ws: Ws,
    next_id: u64,
    /// Messages read while waiting for something else, in arrival order.
    backlog: VecDeque<Value>,
    /// Everything received, for assertions.
    pub received: Vec<Value>,
}

/// The result of a refused upgrade: the HTTP status the server answered.
pub async fn connect_status(url: &str, bearer: Option<&str>) -> Result<(), u16> {
    match connect_raw(url, bearer).await {
        Ok(_) => Ok(()),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => Err(resp.status().as_u16()),
        Err(other) => panic!("websocket connect failed without an HTTP status: {other}"),
    }
}

async fn connect_raw(
    url: &str,
    bearer: Option<&str>,
) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    let mut request = url.into_client_request()?;
    if let Some(token) = bearer {
        request.headers_mut().insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {token}")).expect("header value"),
        );
    }
    let host = request.uri().host().unwrap_or("127.0.0.1").to_owned();
    let port = request.uri().port_u16().unwrap_or(80);
    let stream = TcpStream::connect((host.as_str(), port)).await?;
    handshake(request, Box::new(stream)).await
}

/// The websocket upgrade over `stream`, with the message limits the Codex TUI uses.
async fn handshake(
    request: tokio_tungstenite::tungstenite::handshake::client::Request,
    stream: Box<dyn Io>,
) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(256 << 20))
        .max_frame_size(Some(256 << 20));
    tokio_tungstenite::client_async_with_config(request, stream, Some(config))
        .await
        .map(|(ws, _)| ws)
}

impl WsClient {
    pub async fn connect(url: &str, bearer: &str) -> Self {
        let ws = connect_raw(url, Some(bearer))
            .await
            .unwrap_or_else(|e| panic!("connect {url}: {e}"));
        Self::over(ws)
    }

    /// Connects to `serve --listen unix://PATH` (`listen` is that `unix://PATH`): the socket
    /// admits a client of the same user with no token.
    pub async fn connect_unix(listen: &str) -> Self {
        let path = listen
            .strip_prefix("unix://")
            .unwrap_or_else(|| panic!("not a unix:// address: {listen}"));
        let stream = UnixStream::connect(path)
            .await
            .unwrap_or_else(|e| panic!("connect {listen}: {e}"));
        let request = "ws://localhost/rpc".into_client_request().expect("request");
        let ws = handshake(request, Box::new(stream))
            .await
            .unwrap_or_else(|e| panic!("upgrade {listen}: {e}"));
        Self::over(ws)
    }

    fn over(ws: Ws) -> Self {
        Self {
            ws,
            next_id: 1,
            backlog: VecDeque::new(),
            received: Vec::new(),
        }
    }

    /// `initialize` (with `experimentalApi`, as the Codex TUI declares) then `initialized`.
    pub async fn initialize(&mut self, id: Value) -> Value {
        let result = self
            .request_with_id(
                id,
                "initialize",
                json!({
                    "clientInfo": {"name": "codex-tui", "title": "cs-tui test", "version": "0.0.0"},
                    "capabilities": {"experimentalApi": true, "requiredHumanApproval": true},
                }),
            )
            .await
            .expect("initialize succeeds");
        self.notify("initialized", Value::Null).await;
        result
    }

    pub async fn send_json(&mut self, value: &Value) {
        self.ws
            .send(Message::Text(value.to_string().into()))
            .await
            .expect("send websocket message");
    }

    pub async fn send_raw(&mut self, message: Message) {
        self.ws.send(message).await.expect("send websocket message");
    }

    pub async fn notify(&mut self, method: &str, params: Value) {
        let mut msg = json!({ "method": method });
        if !params.is_null() {
            msg["params"] = params;
        }
        self.send_json(&msg).await;
    }

    /// Sends a request with the next integer id and waits for its response.
    /// Server→client requests that arrive meanwhile are kept in the backlog.
    pub async fn request(&mut self, method: &str, params: Value) -> Result<Value, Value> {
        let id = json!(self.next_id);
        self.next_id += 1;
        self.request_with_id(id, method, params).await
    }

    pub async fn request_with_id(
        &mut self,
        id: Value,
        method: &str,
        params: Value,
    ) -> Result<Value, Value> {
        self.send_json(&json!({"id": id, "method": method, "params": params}))
            .await;
        let response = self
            .wait_for(crate::WAIT, &format!("response to {method}"), |m| {
                m.get("id") == Some(&id) && m.get("method").is_none()
            })
            .await;
        match response.get("error") {
            Some(err) => Err(err.clone()),
            None => Ok(response.get("result").cloned().unwrap_or(Value::Null)),
        }
    }

    /// Reads the next raw websocket message (text, binary, ping…), bypassing the backlog.
    pub async fn next_raw(&mut self, timeout: Duration) -> Option<Message> {
        tokio::time::timeout(timeout, self.ws.next())
            .await
            .ok()
            .flatten()
            .map(|m| m.expect("websocket read"))
    }

    /// Waits for the first message matching `pred` (from the backlog first), keeping the others.
    pub async fn wait_for(
        &mut self,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        if let Some(pos) = self.backlog.iter().position(&pred) {
            return self.backlog.remove(pos).expect("position is valid");
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let next = tokio::time::timeout_at(deadline, self.ws.next()).await;
            let message = match next {
                Err(_) => panic!(
                    "timed out after {timeout:?} waiting for {what}; received: {}",
                    summarize(&self.received)
                ),
                Ok(None) => panic!("connection closed while waiting for {what}"),
                Ok(Some(m)) => m.expect("websocket read"),
            };
            let Message::Text(text) = message else {
                continue;
            };
            let Ok(value) = serde_json::from_str::<Value>(text.as_str()) else {
                continue;
            };
            self.received.push(value.clone());
            if pred(&value) {
                return value;
            }
            self.backlog.push_back(value);
        }
    }

    /// Waits for a notification with this method.
    pub async fn wait_notification(&mut self, method: &str, timeout: Duration) -> Value {
        self.wait_for(timeout, method, |m| {
            m.get("method").and_then(Value::as_str) == Some(method) && m.get("id").is_none()
        })
        .await
    }

    /// Every message received so far (through [`WsClient::wait_for`] and the requests).
    pub fn received(&self) -> &[Value] {
        &self.received
    }

    /// Every message received so far with this method.
    pub fn received_with_method(&self, method: &str) -> Vec<&Value> {
        self.received
            .iter()
            .filter(|m| m.get("method").and_then(Value::as_str) == Some(method))
            .collect()
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

fn summarize(received: &[Value]) -> String {
    received
        .iter()
        .map(|m| {
            m.get("method")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .unwrap_or_else(|| format!("response {}", m.get("id").unwrap_or(&Value::Null)))
        })
        .collect::<Vec<_>>()
        .join(", ")
}
