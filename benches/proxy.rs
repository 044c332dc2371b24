//! Proxy overhead, measured against the same upstream reached directly, in one run.
//!
//! `cargo bench --bench proxy` prints round-trip latency (p50/p99) of a small JSON request and
//! one-way throughput (upstream → client, the direction the relay inspects, and client →
//! upstream) for pipelined 300-byte messages and for 1 MiB messages, as ratios against the
//! client talking to the upstream directly over a loopback websocket (what `codex --remote
//! ws://` does without cs-tui). The upstream listens on a loopback port and on a unix socket,
//! like the two ways an app-server can listen. Measured alongside:
//!
//! - the relay as cs-tui runs it: client → relay over TCP, relay → upstream over the unix
//!   socket;
//! - a baseline relay built the obvious way with tokio-tungstenite (what `src/proxy/relay/`
//!   replaced): accept the client's websocket and open the upstream's (unix socket), forward
//!   `Message`s both ways with `StreamExt::forward`, and parse every server message's JSON to
//!   find the methods the relay watches, acting on them as ours does; it shows what the
//!   hand-written frame splicer buys; and the same relay finding watched methods with our
//!   sniffer (`rpc::sniff_method`) before parsing, which splits that gain into what comes from
//!   not parsing and what from not re-framing;
//! - the relay with a TCP upstream (how cs-tui reached its app-server before), which shows why
//!   the unix socket was chosen;
//! - a byte-copy forwarder (TCP in, unix out) that knows nothing of websockets: the floor any
//!   relay pays for the extra hop on this machine;
//! - the client straight to the unix socket.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cs_tui::proxy::relay::{self, RelayShared};
use cs_tui::proxy::rpc::{
    Envelope, ErrorParams, RELAY_WATCHED, RateLimitsUpdatedParams, TurnParams, method, sniff_method,
};
use cs_tui::proxy::socket::{AppServerAddr, Stream};
use cs_tui::secret::Secret;
use futures_util::{SinkExt, StreamExt, TryStreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(256 << 20))
        .max_frame_size(Some(256 << 20))
}

/// An upstream that echoes requests, pushes `push N SIZE` messages on demand, and counts
/// `sink N` messages before answering "sunk". Listens on a loopback port and on a unix socket
/// in `dir`; returns both addresses.
async fn start_upstream(dir: &Path) -> (String, PathBuf) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            tokio::spawn(upstream_connection(stream));
        }
    });
    let path = dir.join("upstream.sock");
    let unix = UnixListener::bind(&path).unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = unix.accept().await {
            tokio::spawn(upstream_connection(stream));
        }
    });
    (url, path)
}

async fn upstream_connection<S: AsyncRead + AsyncWrite + Unpin>(stream: S) {
    let ws = tokio_tungstenite::accept_async_with_config(stream, Some(config()))
        .await
        .unwrap();
    let (mut tx, mut rx) = ws.split();
    let mut sinking: Option<usize> = None;
    while let Some(Ok(message)) = rx.next().await {
        let Message::Text(text) = message else {
            continue;
        };
        if let Some(left) = sinking.as_mut() {
            *left -= 1;
            if *left == 0 {
                sinking = None;
                tx.send(Message::Text("sunk".into())).await.unwrap();
            }
            continue;
        }
        let t = text.as_str();
        if let Some(rest) = t.strip_prefix("push ") {
            let mut parts = rest.split(' ');
            let n: usize = parts.next().unwrap().parse().unwrap();
            let size: usize = parts.next().unwrap().parse().unwrap();
            let body = app_server_like(size);
            for _ in 0..n {
                tx.feed(Message::Text(body.clone().into())).await.unwrap();
            }
            tx.flush().await.unwrap();
        } else if let Some(rest) = t.strip_prefix("sink ") {
            sinking = Some(rest.parse().unwrap());
        } else {
            tx.send(Message::Text(text)).await.unwrap();
        }
    }
}

/// A notification shaped like the app-server's streaming deltas, `size` bytes long.
fn app_server_like(size: usize) -> String {
    let head = r#"{"method":"item/agentMessage/delta","params":{"threadId":"019a","turnId":"019b","itemId":"msg_1","delta":""#;
    let tail = r#""}}"#;
    let fill = size.saturating_sub(head.len() + tail.len());
    format!("{head}{}{tail}", "x".repeat(fill))
}

async fn start_relay(upstream: AppServerAddr) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    // A sink that ignores events: the bench measures the relay, not a consumer.
    let events = relay::EventSink::new(|_| {});
    let (ready_tx, ready) = watch::channel(true);
    std::mem::forget(ready_tx);
    tokio::spawn(relay::serve(
        listener,
        Arc::new(RelayShared {
            upstream,
            client_token: Secret::new(BEARER),
            ready,
            events,
            interceptor: Box::new(|_| relay::NoInterceptor),
        }),
    ));
    url
}

/// The baseline: a relay written the obvious way with tokio-tungstenite. Checks the bearer
/// token in the client's handshake, connects the upstream, then forwards whole `Message`s in
/// both directions; every server→client text message is parsed (`Envelope`, borrowed, params
/// left raw) and the watched ones are parsed further into the same typed params our relay
/// decodes, an `account/chatgptAuthTokens/refresh` request being dropped. The client's
/// messages pass unparsed, as they do through ours with no interceptor. With `sniff`, a server
/// message is parsed only when our sniffer says it may be watched, as ours does.
async fn start_tungstenite_relay(upstream: AppServerAddr, sniff: bool) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let upstream = upstream.clone();
            tokio::spawn(async move {
                let _ = client.set_nodelay(true);
                // The callback's signature is tungstenite's, large error and all.
                #[allow(clippy::result_large_err)]
                let authorize = |request: &Request, response: Response| {
                    let expected = format!("Bearer {BEARER}");
                    match request.headers().get("authorization") {
                        Some(value) if value.as_bytes() == expected.as_bytes() => Ok(response),
                        _ => {
                            let mut refusal = ErrorResponse::new(None);
                            *refusal.status_mut() = StatusCode::UNAUTHORIZED;
                            Err(refusal)
                        }
                    }
                };
                let Ok(client) = tokio_tungstenite::accept_hdr_async_with_config(
                    client,
                    authorize,
                    Some(config()),
                )
                .await
                else {
                    return;
                };
                let (stream, request) = upstream.connect().await.unwrap();
                let (server, _) =
                    tokio_tungstenite::client_async_with_config(request, stream, Some(config()))
                        .await
                        .unwrap();
                let (client_tx, client_rx) = client.split();
                let (server_tx, server_rx) = server.split();
                let up = client_rx.forward(server_tx);
                let down = server_rx
                    .try_filter_map(|message| {
                        let keep = match &message {
                            Message::Text(text) => !drop_after_inspecting(text.as_str(), sniff),
                            _ => true,
                        };
                        futures_util::future::ready(Ok(keep.then_some(message)))
                    })
                    .forward(client_tx);
                tokio::select! {
                    _ = up => {}
                    _ = down => {}
                }
            });
        }
    });
    url
}

/// What the baseline relay does with a server message: parse it, and decode the watched
/// methods as `src/proxy/relay/inspect.rs` does. True when it must not be forwarded.
fn drop_after_inspecting(text: &str, sniff: bool) -> bool {
    if sniff && sniff_method(text, RELAY_WATCHED).is_none() {
        return false;
    }
    let Some(envelope) = Envelope::parse(text) else {
        return false;
    };
    let Some(watched) = envelope.method.filter(|m| RELAY_WATCHED.contains(m)) else {
        return false;
    };
    match watched {
        method::TOKENS_REFRESH => return envelope.is_request(),
        method::RATE_LIMITS_UPDATED => {
            std::hint::black_box(envelope.params::<RateLimitsUpdatedParams>());
        }
        method::ERROR => {
            std::hint::black_box(envelope.params::<ErrorParams>());
        }
        _ => {
            std::hint::black_box(envelope.params::<TurnParams>());
        }
    }
    false
}

/// A forwarder that copies bytes from TCP clients to the unix socket and knows nothing of
/// websockets (tokio's `copy_bidirectional`, with the relay's read size): the floor of any
/// relay on this machine, since it pays the same extra hop and the same two extra reads and
/// writes per round trip, and nothing else.
async fn start_byte_forwarder(upstream: PathBuf) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let upstream = upstream.clone();
            tokio::spawn(async move {
                let _ = client.set_nodelay(true);
                let mut server = tokio::net::UnixStream::connect(&upstream).await.unwrap();
                let _ = tokio::io::copy_bidirectional_with_sizes(
                    &mut client,
                    &mut server,
                    256 << 10,
                    256 << 10,
                )
                .await;
            });
        }
    });
    url
}

const BEARER: &str = "bench";

type Ws = tokio_tungstenite::WebSocketStream<Stream>;

async fn connect(addr: AppServerAddr) -> Ws {
    let (stream, request) = addr.connect().await.unwrap();
    tokio_tungstenite::client_async_with_config(request, stream, Some(config()))
        .await
        .unwrap()
        .0
}

/// A loopback websocket URL, with the relay's bearer (the upstream ignores it).
fn tcp(url: &str) -> AppServerAddr {
    AppServerAddr::Ws {
        url: url.to_owned(),
        token: Secret::new(BEARER),
    }
}

async fn next_text(ws: &mut Ws) -> String {
    loop {
        if let Message::Text(t) = ws.next().await.unwrap().unwrap() {
            return t.as_str().to_owned();
        }
    }
}

async fn latencies(ws: &mut Ws, n: usize) -> Vec<Duration> {
    let request = r#"{"id":42,"method":"account/read","params":{"refreshToken":false}}"#;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        ws.send(Message::Text(request.into())).await.unwrap();
        next_text(ws).await;
        out.push(start.elapsed());
    }
    out
}

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    samples[((samples.len() as f64 - 1.0) * p).round() as usize]
}

/// Messages per second, upstream → client.
async fn push_rate(ws: &mut Ws, n: usize, size: usize) -> f64 {
    let start = Instant::now();
    ws.send(Message::Text(format!("push {n} {size}").into()))
        .await
        .unwrap();
    for _ in 0..n {
        next_text(ws).await;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// Messages per second, client → upstream.
async fn sink_rate(ws: &mut Ws, n: usize, size: usize) -> f64 {
    let body = app_server_like(size);
    ws.send(Message::Text(format!("sink {n}").into()))
        .await
        .unwrap();
    let start = Instant::now();
    for _ in 0..n {
        ws.feed(Message::Text(body.clone().into())).await.unwrap();
    }
    ws.flush().await.unwrap();
    assert_eq!(next_text(ws).await, "sunk");
    n as f64 / start.elapsed().as_secs_f64()
}

/// The ways the client reaches the upstream, in print order. The first is the baseline; the
/// one at [`UNIX`] is the second baseline, the same upstream over its unix socket.
const UNIX: usize = 6;
const PATHS: [&str; 7] = [
    "direct, TCP",
    "relay → unix (cs-tui)",
    "tungstenite relay → unix",
    "tungstenite + sniff → unix",
    "relay → TCP",
    "byte copy → unix",
    "direct, unix",
];

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    runtime.block_on(async {
        let (upstream_url, upstream_socket) = start_upstream(dir.path()).await;
        let relay_unix = start_relay(AppServerAddr::Unix(upstream_socket.clone())).await;
        let tungstenite_relay =
            start_tungstenite_relay(AppServerAddr::Unix(upstream_socket.clone()), false).await;
        let tungstenite_sniffing =
            start_tungstenite_relay(AppServerAddr::Unix(upstream_socket.clone()), true).await;
        let relay_tcp = start_relay(tcp(&upstream_url)).await;
        let forwarder = start_byte_forwarder(upstream_socket.clone()).await;
        let mut clients = [
            connect(tcp(&upstream_url)).await,
            connect(tcp(&relay_unix)).await,
            connect(tcp(&tungstenite_relay)).await,
            connect(tcp(&tungstenite_sniffing)).await,
            connect(tcp(&relay_tcp)).await,
            connect(tcp(&forwarder)).await,
            connect(AppServerAddr::Unix(upstream_socket)).await,
        ];

        // Warm up, then interleave blocks so every path sees the same machine state.
        for ws in clients.iter_mut() {
            latencies(ws, 2000).await;
        }
        let mut samples = vec![Vec::new(); PATHS.len()];
        for _ in 0..10 {
            for (ws, out) in clients.iter_mut().zip(samples.iter_mut()) {
                out.extend(latencies(ws, 2000).await);
            }
        }
        let stats: Vec<(f64, f64)> = samples
            .iter_mut()
            .map(|s| (us(percentile(s, 0.5)), us(percentile(s, 0.99))))
            .collect();
        let (d50, d99) = stats[0];
        let (u50, u99) = stats[UNIX];
        println!(
            "round trip of a small JSON request ({} samples per path); added = more than \
             direct over TCP (over unix)",
            samples[0].len()
        );
        for (name, (p50, p99)) in PATHS.iter().zip(&stats) {
            println!(
                "  {name:<26} p50 {p50:>6.1} µs  p99 {p99:>6.1} µs   added p50 {:>5.1} ({:>5.1}) µs  p99 {:>5.1} ({:>5.1}) µs",
                p50 - d50,
                p50 - u50,
                p99 - d99,
                p99 - u99,
            );
        }

        for (label, n, size) in [("300 B", 50_000, 300), ("1 MiB", 200, 1 << 20)] {
            for (direction, push) in [("upstream → client", true), ("client → upstream", false)] {
                let mut rates = vec![Vec::new(); PATHS.len()];
                for _ in 0..9 {
                    for (ws, out) in clients.iter_mut().zip(rates.iter_mut()) {
                        out.push(if push {
                            push_rate(ws, n, size).await
                        } else {
                            sink_rate(ws, n, size).await
                        });
                    }
                }
                let medians: Vec<f64> = rates.iter_mut().map(|r| median(r)).collect();
                println!(
                    "throughput, {label} messages, {direction} (median of 9); % of direct over \
                     TCP (over unix)"
                );
                for (name, rate) in PATHS.iter().zip(&medians) {
                    println!(
                        "  {name:<26} {:>9.0} msg/s {:>7.1} MB/s = {:>5.1} % ({:>5.1} %)",
                        rate,
                        rate * size as f64 / 1e6,
                        100.0 * rate / medians[0],
                        100.0 * rate / medians[UNIX],
                    );
                }
            }
        }
    });
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
