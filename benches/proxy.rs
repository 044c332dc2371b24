//! Proxy overhead, measured against the same upstream reached directly, in one run.
//!
//! `cargo bench --bench proxy` prints round-trip latency (p50/p99) of a small JSON request and
//! one-way throughput (upstream → client, the direction the relay inspects, and client →
//! upstream) for pipelined 300-byte messages and for 1 MiB messages, direct vs through the
//! relay, as ratios. A byte-copy TCP forwarder measured alongside shows the floor any relay
//! pays on this machine for the extra hop.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cs_tui::proxy::relay::{self, RelayShared};
use cs_tui::secret::Secret;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(256 << 20))
        .max_frame_size(Some(256 << 20))
}

/// An upstream that echoes requests, pushes `push N SIZE` messages on demand, and counts
/// `sink N` messages before answering "sunk".
async fn start_upstream() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
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
            });
        }
    });
    url
}

/// A notification shaped like the app-server's streaming deltas, `size` bytes long.
fn app_server_like(size: usize) -> String {
    let head = r#"{"method":"item/agentMessage/delta","params":{"threadId":"019a","turnId":"019b","itemId":"msg_1","delta":""#;
    let tail = r#""}}"#;
    let fill = size.saturating_sub(head.len() + tail.len());
    format!("{head}{}{tail}", "x".repeat(fill))
}

async fn start_relay(upstream: &str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    // A sink that ignores events: the bench measures the relay, not a consumer.
    let events = relay::EventSink::new(|_| {});
    let (ready_tx, ready) = watch::channel(true);
    std::mem::forget(ready_tx);
    tokio::spawn(relay::serve(
        listener,
        Arc::new(RelayShared {
            upstream_url: upstream.to_owned(),
            upstream_token: Secret::new("t"),
            client_token: Secret::new("bench"),
            ready,
            events,
            interceptor: Box::new(|_| relay::NoInterceptor),
        }),
    ));
    url
}

/// A forwarder that copies bytes and knows nothing of websockets (tokio's
/// `copy_bidirectional`, with the relay's read size): the floor of any relay on this machine,
/// since it pays the same extra loopback hop and the same two extra reads and writes per
/// round trip, and nothing else.
async fn start_byte_forwarder(upstream: &str) -> String {
    let upstream = upstream.trim_start_matches("ws://").to_owned();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let upstream = upstream.clone();
            tokio::spawn(async move {
                let _ = client.set_nodelay(true);
                let mut server = tokio::net::TcpStream::connect(&upstream).await.unwrap();
                let _ = server.set_nodelay(true);
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

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(url: &str) -> Ws {
    let mut request = url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("authorization", "Bearer bench".parse().unwrap());
    tokio_tungstenite::connect_async_with_config(request, Some(config()), true)
        .await
        .unwrap()
        .0
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

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let upstream = start_upstream().await;
        let relay = start_relay(&upstream).await;
        let forwarder = start_byte_forwarder(&upstream).await;
        let mut direct = connect(&upstream).await;
        let mut proxied = connect(&relay).await;
        let mut copied = connect(&forwarder).await;

        // Warm up, then interleave blocks so every path sees the same machine state.
        latencies(&mut direct, 2000).await;
        latencies(&mut proxied, 2000).await;
        latencies(&mut copied, 2000).await;
        let (mut d, mut p, mut c) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..10 {
            d.extend(latencies(&mut direct, 2000).await);
            p.extend(latencies(&mut proxied, 2000).await);
            c.extend(latencies(&mut copied, 2000).await);
        }
        let (d50, d99) = (percentile(&mut d, 0.5), percentile(&mut d, 0.99));
        let (p50, p99) = (percentile(&mut p, 0.5), percentile(&mut p, 0.99));
        let (c50, c99) = (percentile(&mut c, 0.5), percentile(&mut c, 0.99));
        println!("round trip of a small JSON request ({} samples each)", d.len());
        println!("  direct   p50 {:>7.1} µs   p99 {:>7.1} µs", us(d50), us(d99));
        println!("  proxied  p50 {:>7.1} µs   p99 {:>7.1} µs", us(p50), us(p99));
        println!("  bytecopy p50 {:>7.1} µs   p99 {:>7.1} µs", us(c50), us(c99));
        println!(
            "  added    p50 {:>7.1} µs   p99 {:>7.1} µs   (ratio p50 {:.2}×, p99 {:.2}×)",
            us(p50) - us(d50),
            us(p99) - us(d99),
            us(p50) / us(d50),
            us(p99) / us(d99)
        );
        println!(
            "  floor    p50 {:>7.1} µs   p99 {:>7.1} µs   added by the byte-copy forwarder",
            us(c50) - us(d50),
            us(c99) - us(d99),
        );

        for (label, n, size, rounds) in [("300 B", 50_000, 300, 5), ("1 MiB", 200, 1 << 20, 5)] {
            for (direction, push) in [("upstream → client", true), ("client → upstream", false)] {
                let (mut dr, mut pr, mut cr) = (Vec::new(), Vec::new(), Vec::new());
                for _ in 0..rounds {
                    if push {
                        dr.push(push_rate(&mut direct, n, size).await);
                        pr.push(push_rate(&mut proxied, n, size).await);
                        cr.push(push_rate(&mut copied, n, size).await);
                    } else {
                        dr.push(sink_rate(&mut direct, n, size).await);
                        pr.push(sink_rate(&mut proxied, n, size).await);
                        cr.push(sink_rate(&mut copied, n, size).await);
                    }
                }
                let dm = median(&mut dr);
                let pm = median(&mut pr);
                let cm = median(&mut cr);
                println!(
                    "throughput {label} {direction}: direct {:>9.0} msg/s ({:>7.1} MB/s), proxied {:>9.0} msg/s ({:>7.1} MB/s) = {:>5.1} % of direct (byte-copy floor {:>5.1} %)",
                    dm,
                    dm * size as f64 / 1e6,
                    pm,
                    pm * size as f64 / 1e6,
                    100.0 * pm / dm,
                    100.0 * cm / dm
                );
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
