//! The websocket relay: a loopback listener that requires the proxy's bearer token and gives
//! every client its own upstream connection to the app-server. Frames pass unchanged and in
//! order in both directions; only the few server messages the proxy acts on are parsed
//! (found by a substring search first, so large messages cost a memchr scan, not a parse).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::{FutureExt, Sink, SinkExt, Stream, StreamExt};
use subtle::ConstantTimeEq;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::proxy::rpc::{
    self, Envelope, ErrorParams, RELAY_WATCHED, RateLimitsUpdatedParams, TurnParams, method,
};
use crate::proxy::upstream;
use crate::quota::RateLimitSnapshot;
use crate::secret::Secret;

/// Identifies one client connection for the lifetime of the proxy.
pub type ConnId = u64;

/// What the relay saw on a client's upstream connection.
#[derive(Debug, Clone, PartialEq)]
pub enum Observation {
    RateLimits(RateLimitSnapshot),
    UsageLimitError {
        thread_id: Option<String>,
        turn_id: Option<String>,
    },
    TurnStarted {
        thread_id: String,
        turn_id: String,
    },
    TurnCompleted {
        thread_id: String,
        turn_id: String,
        status: Option<String>,
    },
}

/// What the relay tells the session core.
#[derive(Debug)]
pub enum RelayEvent {
    Connected(ConnId),
    Disconnected(ConnId),
    Observed(ConnId, Observation),
}

/// What every client connection shares.
pub struct RelayShared {
    pub upstream_url: String,
    pub upstream_token: Secret,
    /// The bearer token clients must present.
    pub client_token: Secret,
    /// Clients wait here until the starting account is logged in: a TUI that attaches to an
    /// app-server without auth shows its sign-in screen for good (PROTOCOL.md §2).
    pub ready: watch::Receiver<bool>,
    pub events: mpsc::UnboundedSender<RelayEvent>,
}

static NEXT_CONN: AtomicU64 = AtomicU64::new(1);

/// Accepts clients forever.
pub async fn serve(listener: TcpListener, shared: Arc<RelayShared>) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                let shared = shared.clone();
                tokio::spawn(async move {
                    let conn = NEXT_CONN.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(conn, %peer, "client connecting");
                    handle_client(conn, stream, shared).await;
                });
            }
            Err(err) => {
                tracing::warn!(%err, "accepting a proxy client failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

fn bearer_matches(request: &Request, expected: &Secret) -> bool {
    let Some(value) = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some(token) = value.strip_prefix("Bearer ") else {
        return false;
    };
    token.as_bytes().ct_eq(expected.expose().as_bytes()).into()
}

fn unauthorized() -> ErrorResponse {
    let mut response = ErrorResponse::new(Some("missing or wrong bearer token".to_owned()));
    *response.status_mut() = StatusCode::UNAUTHORIZED;
    response
}

async fn handle_client(conn: ConnId, stream: TcpStream, shared: Arc<RelayShared>) {
    let mut ready = shared.ready.clone();
    if ready.wait_for(|r| *r).await.is_err() {
        return;
    }
    let expected = shared.client_token.clone();
    // The handshake callback's error type is tungstenite's (a whole HTTP response).
    #[allow(clippy::result_large_err)]
    let callback = move |request: &Request, response: Response| {
        if bearer_matches(request, &expected) {
            Ok(response)
        } else {
            Err(unauthorized())
        }
    };
    let client = match tokio_tungstenite::accept_hdr_async_with_config(
        stream,
        callback,
        Some(upstream::ws_config()),
    )
    .await
    {
        Ok(ws) => ws,
        Err(err) => {
            tracing::info!(conn, %err, "refused a proxy client");
            return;
        }
    };
    // A fresh upstream per client: a reconnecting TUI starts clean.
    let upstream = match upstream::dial(&shared.upstream_url, &shared.upstream_token).await {
        Ok(ws) => ws,
        Err(err) => {
            tracing::error!(conn, "upstream connection failed: {err:#}");
            let mut client = client;
            let _ = client.close(None).await;
            return;
        }
    };
    let _ = shared.events.send(RelayEvent::Connected(conn));
    let (client_tx, client_rx) = client.split();
    let (upstream_tx, upstream_rx) = upstream.split();
    let events = shared.events.clone();
    let mut to_upstream = tokio::spawn(pump(client_rx, upstream_tx, move |_| true, "client"));
    let mut to_client = tokio::spawn(pump(
        upstream_rx,
        client_tx,
        move |message| inspect_server_message(conn, message, &events),
        "app-server",
    ));
    tokio::select! {
        _ = &mut to_upstream => {
            // Let the app-server's reply to a forwarded Close reach the client.
            if tokio::time::timeout(std::time::Duration::from_millis(500), &mut to_client).await.is_err() {
                to_client.abort();
            }
        }
        _ = &mut to_client => to_upstream.abort(),
    }
    tracing::debug!(conn, "client disconnected");
    let _ = shared.events.send(RelayEvent::Disconnected(conn));
}

/// Moves frames from `from` to `to` in order, asking `keep` about each one. Writes are
/// batched: every frame already received is queued before one flush.
async fn pump<R, W>(mut from: R, mut to: W, mut keep: impl FnMut(&Message) -> bool, side: &str)
where
    R: Stream<Item = Result<Message, WsError>> + Unpin,
    W: Sink<Message, Error = WsError> + Unpin,
{
    'outer: while let Some(next) = from.next().await {
        let mut next = Some(next);
        while let Some(item) = next.take() {
            let message = match item {
                Ok(m) => m,
                Err(err) => {
                    tracing::debug!(side, %err, "websocket read ended");
                    break 'outer;
                }
            };
            let closing = matches!(message, Message::Close(_));
            if let Message::Text(text) = &message
                && !looks_like_json_object(text.as_str())
            {
                tracing::warn!(
                    side,
                    len = text.len(),
                    "forwarding a text frame that is not a JSON object"
                );
            }
            if keep(&message) && to.feed(message).await.is_err() {
                break 'outer;
            }
            if closing {
                let _ = to.flush().await;
                break 'outer;
            }
            next = from.next().now_or_never().flatten();
        }
        if to.flush().await.is_err() {
            break;
        }
    }
    let _ = to.close().await;
}

/// A cheap check for logging only: every app-server message is a JSON object.
fn looks_like_json_object(text: &str) -> bool {
    let t = text.trim_ascii();
    t.starts_with('{') && t.ends_with('}')
}

/// Decides whether a server→client frame is forwarded, and reports what the core cares about.
fn inspect_server_message(
    conn: ConnId,
    message: &Message,
    events: &mpsc::UnboundedSender<RelayEvent>,
) -> bool {
    let Message::Text(text) = message else {
        return true;
    };
    let text = text.as_str();
    let Some(watched) = rpc::sniff_method(text, RELAY_WATCHED) else {
        return true;
    };
    let Some(envelope) = Envelope::parse(text) else {
        tracing::warn!(
            conn,
            watched,
            "a watched message did not parse; forwarding it unchanged"
        );
        return true;
    };
    if envelope.method != Some(watched) {
        return true; // the key belonged to a nested object
    }
    let observe = |o: Observation| {
        let _ = events.send(RelayEvent::Observed(conn, o));
    };
    match watched {
        // Sent to every connection; the proxy answers it once on its control connection, and
        // the TUI must never answer it (it would hand the app-server the wrong tokens).
        method::TOKENS_REFRESH if envelope.is_request() => return false,
        method::RATE_LIMITS_UPDATED => {
            if let Some(p) = envelope.params::<RateLimitsUpdatedParams>() {
                observe(Observation::RateLimits(p.rate_limits));
            }
        }
        method::ERROR => {
            if let Some(p) = envelope.params::<ErrorParams>()
                && p.error.is_usage_limit()
            {
                observe(Observation::UsageLimitError {
                    thread_id: p.thread_id,
                    turn_id: p.turn_id,
                });
            }
        }
        method::TURN_STARTED => {
            if let Some(p) = envelope.params::<TurnParams>() {
                observe(Observation::TurnStarted {
                    thread_id: p.thread_id,
                    turn_id: p.turn.id,
                });
            }
        }
        method::TURN_COMPLETED => {
            if let Some(p) = envelope.params::<TurnParams>() {
                observe(Observation::TurnCompleted {
                    thread_id: p.thread_id,
                    turn_id: p.turn.id,
                    status: p.turn.status,
                });
            }
        }
        _ => {}
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Message {
        Message::Text(s.to_owned().into())
    }

    #[test]
    fn refresh_requests_are_never_forwarded_and_the_rest_is() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let refresh = text(
            r#"{"id":0,"method":"account/chatgptAuthTokens/refresh","params":{"previousAccountId":"a","reason":"unauthorized"}}"#,
        );
        assert!(!inspect_server_message(1, &refresh, &tx));
        assert!(inspect_server_message(
            1,
            &text(r#"{"method":"item/started","params":{}}"#),
            &tx
        ));
        assert!(inspect_server_message(1, &text("{not json"), &tx));
        assert!(inspect_server_message(
            1,
            &Message::Binary(vec![1, 2, 3].into()),
            &tx
        ));
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn watched_messages_become_observations() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let messages = [
            r#"{"method":"turn/started","params":{"threadId":"t1","turn":{"id":"u1","items":[],"status":"inProgress"}}}"#,
            r#"{"method":"account/rateLimits/updated","params":{"rateLimits":{"primary":{"usedPercent":97,"windowDurationMins":300,"resetsAt":5}}}}"#,
            r#"{"method":"error","params":{"error":{"message":"limit","codexErrorInfo":"usageLimitExceeded"},"willRetry":false,"threadId":"t1","turnId":"u1"}}"#,
            r#"{"method":"error","params":{"error":{"message":"other","codexErrorInfo":"other"},"willRetry":false,"threadId":"t1","turnId":"u1"}}"#,
            r#"{"method":"turn/completed","params":{"threadId":"t1","turn":{"id":"u1","items":[],"status":"failed"}}}"#,
        ];
        for m in messages {
            assert!(inspect_server_message(7, &text(m), &tx));
        }
        let got: Vec<Observation> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(|e| match e {
                RelayEvent::Observed(7, o) => o,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(got.len(), 4, "{got:?}");
        assert!(matches!(&got[0], Observation::TurnStarted { turn_id, .. } if turn_id == "u1"));
        assert!(
            matches!(&got[1], Observation::RateLimits(s) if s.five_hour().unwrap().used_percent == 97.0)
        );
        assert!(matches!(&got[2], Observation::UsageLimitError { .. }));
        assert!(
            matches!(&got[3], Observation::TurnCompleted { status: Some(s), .. } if s == "failed")
        );
    }
}
