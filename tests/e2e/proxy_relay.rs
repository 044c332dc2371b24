//! The relay as a transport (frames pass byte for byte and in order, whatever they hold) and
//! its hooks (injecting, holding, releasing and dropping messages per connection).

use std::sync::Arc;
use std::time::Duration;

use cs_tui::proxy::relay::{
    self, Actions, ConnId, ConnectionHandle, Direction, HandshakeLimits, Inspected, Interceptor,
    NoInterceptor, Observation, RelayEvent, RelayShared, Verdict,
};
use cs_tui::proxy::socket::AppServerAddr;
use cs_tui::secret::Secret;
use cs_tui_testkit::WAIT;
use cs_tui_testkit::raw::{self, RawPeer, RawUpstream, frame, payload};
use cs_tui_testkit::ws_client::connect_status;
use cs_tui_testkit::{AppServer, CodexHome, MockBackend, WsClient, codex_bin};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Control, Data, OpCode};

struct Relay<I: Interceptor = NoInterceptor> {
    url: String,
    token: String,
    events: mpsc::UnboundedReceiver<RelayEvent<I>>,
    _ready: watch::Sender<bool>,
}

/// An upstream on a loopback port, with its token.
fn ws(url: &str, token: &str) -> AppServerAddr {
    AppServerAddr::Ws {
        url: url.to_owned(),
        token: Secret::new(token),
    }
}

async fn relay_to(upstream: AppServerAddr, ready: bool) -> Relay {
    relay_with(upstream, ready, |_| NoInterceptor).await
}

async fn relay_with<I: Interceptor>(
    upstream: AppServerAddr,
    ready: bool,
    interceptor: impl Fn(ConnId) -> I + Send + Sync + 'static,
) -> Relay<I> {
    relay_limited(upstream, ready, interceptor, HandshakeLimits::default()).await
}

async fn relay_limited<I: Interceptor>(
    upstream: AppServerAddr,
    ready: bool,
    interceptor: impl Fn(ConnId) -> I + Send + Sync + 'static,
    limits: HandshakeLimits,
) -> Relay<I> {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    let (tx, events) = mpsc::unbounded_channel();
    let (ready_tx, ready_rx) = watch::channel(ready);
    let shared = Arc::new(RelayShared {
        upstream,
        client_token: Secret::new("client-secret"),
        ready: ready_rx,
        events: tx.into(),
        interceptor: Box::new(interceptor),
    });
    tokio::spawn(relay::serve_with_limits(listener, shared, limits));
    Relay {
        url,
        token: "client-secret".to_owned(),
        events,
        _ready: ready_tx,
    }
}

impl<I: Interceptor> Relay<I> {
    /// The next event that is not an observation... or is, when `pred` says so.
    async fn event(&mut self, what: &str, pred: impl Fn(&RelayEvent<I>) -> bool) -> RelayEvent<I> {
        loop {
            let event = tokio::time::timeout(WAIT, self.events.recv())
                .await
                .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
                .expect("relay running");
            if pred(&event) {
                return event;
            }
        }
    }

    async fn connected(&mut self) -> ConnectionHandle<I> {
        match self
            .event("Connected", |e| matches!(e, RelayEvent::Connected(..)))
            .await
        {
            RelayEvent::Connected(_, handle) => handle,
            _ => unreachable!(),
        }
    }
}

async fn next_data(client: &mut WsClient) -> Message {
    loop {
        match client.next_raw(WAIT).await.expect("a frame") {
            m @ (Message::Text(_) | Message::Binary(_) | Message::Close(_)) => return m,
            _ => continue,
        }
    }
}

/// An echo upstream of each kind the relay can reach: a loopback port, and a unix socket as
/// cs-tui's own app-server listens on. The directory holds the socket.
async fn echo_upstreams() -> (tempfile::TempDir, Vec<AppServerAddr>) {
    let dir = tempfile::tempdir().unwrap();
    let tcp = ws(&cs_tui_testkit::echo_upstream::start().await, "unused");
    let unix = AppServerAddr::Unix(cs_tui_testkit::echo_upstream::start_unix(dir.path()));
    (dir, vec![tcp, unix])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_of_every_kind_pass_unchanged_and_in_order() {
    let (_dir, upstreams) = echo_upstreams().await;
    for upstream in upstreams {
        frames_of_every_kind_pass(upstream).await;
    }
}

async fn frames_of_every_kind_pass(upstream: AppServerAddr) {
    let relay = relay_to(upstream, true).await;
    let mut client = WsClient::connect(&relay.url, &relay.token).await;
    let frames = vec![
        Message::Text("{not json at all".into()),
        Message::Binary(vec![0u8, 159, 146, 150, 255].into()),
        Message::Text(r#"{"id":1,"method":"x","params":{"a":"é"}}"#.into()),
        Message::Text(r#"{"method":"account/chatgptAuthTokens/refresh"}"#.into()), // not a request: forwarded
        Message::Text("".into()),
    ];
    for frame in &frames {
        client.send_raw(frame.clone()).await;
    }
    for frame in &frames {
        assert_eq!(&next_data(&mut client).await, frame);
    }
    // A ping is answered (by the relay or through it) and the connection stays usable.
    client.send_raw(Message::Ping(vec![7, 7].into())).await;
    client.send_raw(Message::Text("after ping".into())).await;
    assert_eq!(
        next_data(&mut client).await,
        Message::Text("after ping".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_64_mib_message_passes_both_ways() {
    let big = format!(
        "{{\"method\":\"big\",\"params\":\"{}\"}}",
        "x".repeat(64 << 20)
    );
    let (_dir, upstreams) = echo_upstreams().await;
    for upstream in upstreams {
        let kind = upstream.describe();
        let relay = relay_to(upstream, true).await;
        let mut client = WsClient::connect(&relay.url, &relay.token).await;
        client.send_raw(Message::Text(big.clone().into())).await;
        let Message::Text(back) = next_data(&mut client).await else {
            panic!("not text, via {kind}")
        };
        assert_eq!(back.len(), big.len(), "via {kind}");
        assert!(back.as_str() == big, "via {kind}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnecting_client_gets_a_fresh_upstream_and_close_is_relayed() {
    let echo = cs_tui_testkit::echo_upstream::start().await;
    let mut relay = relay_to(ws(&echo, "unused"), true).await;
    let mut first = WsClient::connect(&relay.url, &relay.token).await;
    first.send_raw(Message::Text("one".into())).await;
    assert_eq!(next_data(&mut first).await, Message::Text("one".into()));
    first.send_raw(Message::Close(None)).await;
    assert!(matches!(next_data(&mut first).await, Message::Close(_)));
    let mut second = WsClient::connect(&relay.url, &relay.token).await;
    second.send_raw(Message::Text("two".into())).await;
    assert_eq!(next_data(&mut second).await, Message::Text("two".into()));
    let mut ids = Vec::new();
    while let Ok(Some(e)) =
        tokio::time::timeout(Duration::from_millis(200), relay.events.recv()).await
    {
        ids.push(format!("{e:?}"));
    }
    assert!(ids.iter().any(|e| e.starts_with("Connected")), "{ids:?}");
    assert!(ids.iter().any(|e| e.starts_with("Disconnected")), "{ids:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_wait_at_the_gate_until_the_session_is_ready() {
    let echo = cs_tui_testkit::echo_upstream::start().await;
    let relay = relay_to(ws(&echo, "unused"), false).await;
    let url = relay.url.clone();
    let token = relay.token.clone();
    let attempt = tokio::spawn(async move { WsClient::connect(&url, &token).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !attempt.is_finished(),
        "the handshake must wait for the gate"
    );
    relay._ready.send(true).unwrap();
    let mut client = tokio::time::timeout(WAIT, attempt).await.unwrap().unwrap();
    client.send_raw(Message::Text("in".into())).await;
    assert_eq!(next_data(&mut client).await, Message::Text("in".into()));
    assert_eq!(connect_status(&relay.url, Some("wrong")).await, Err(401));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_json_reaches_the_real_app_server_and_the_session_survives() {
    let mock = MockBackend::start().await;
    let home = CodexHome::offline(&mock.url());
    let server = AppServer::spawn(&codex_bin(), home.path(), &mock.refresh_url()).await;
    let relay = relay_to(ws(&server.ws_url(), server.token()), true).await;
    let mut client = WsClient::connect(&relay.url, &relay.token).await;
    client.initialize(json!("initialize")).await;
    client
        .send_raw(Message::Text("{\"id\": 5, \"method\": ".into()))
        .await;
    client.send_raw(Message::Binary(vec![1, 2, 3].into())).await;
    // Whatever the app-server makes of those, a well-formed request still works afterwards.
    let read: Value = client.request("account/read", json!({})).await.unwrap();
    assert!(read.get("account").is_some(), "{read}");
    // The app-server drops the connection on a close frame without answering it; the relay
    // answers for it, so the client's close handshake completes as it did before splicing.
    client.send_raw(Message::Close(None)).await;
    assert!(matches!(next_data(&mut client).await, Message::Close(_)));
}

const TEXT: OpCode = OpCode::Data(Data::Text);
const BINARY: OpCode = OpCode::Data(Data::Binary);
const CONTINUE: OpCode = OpCode::Data(Data::Continue);
const PING: OpCode = OpCode::Control(Control::Ping);
const PONG: OpCode = OpCode::Control(Control::Pong);
const CLOSE: OpCode = OpCode::Control(Control::Close);
const MASK: Option<[u8; 4]> = Some([0x8a, 0x01, 0xf3, 0x5c]);
const QUIET: Duration = Duration::from_millis(200);

/// A raw client and a raw upstream joined by a relay.
async fn raw_pair() -> (Relay, RawPeer, RawPeer, String) {
    let mut upstream = RawUpstream::start().await;
    let relay = relay_to(ws(&upstream.url, "upstream-secret"), true).await;
    let client = raw::connect(&relay.url, &relay.token, &[]).await;
    let (upstream, authorization) = upstream.accept().await;
    (relay, client, upstream, authorization)
}

fn concat(frames: &[Vec<u8>]) -> Vec<u8> {
    frames.concat()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_arrive_byte_identical_in_both_directions() {
    let (mut relay, mut client, mut upstream, authorization) = raw_pair().await;
    assert_eq!(authorization, "Bearer upstream-secret");

    let big = vec![b'x'; 70_000]; // a 64-bit length
    let mid = vec![b'y'; 300]; // a 16-bit length
    let from_client = concat(&[
        frame(
            TEXT,
            br#"{"id":1,"method":"turn/start","params":{"a":"\u00e9"}}"#,
            true,
            MASK,
        ),
        frame(BINARY, &[0, 159, 146, 150, 255], true, MASK),
        frame(TEXT, b"", true, MASK),
        frame(PING, &[7, 7], true, MASK),
        frame(TEXT, &big, true, MASK),
        frame(BINARY, &mid, true, MASK),
        frame(PONG, b"p", true, MASK),
        frame(TEXT, b"{not json", true, MASK),
    ]);
    // In small pieces first, so frames and headers are split across reads...
    for piece in from_client.chunks(5).take(40) {
        client.send(piece).await;
        tokio::task::yield_now().await;
    }
    // ...then the rest in one write.
    client.send(&from_client[200..]).await;
    assert_eq!(upstream.read(from_client.len()).await, from_client);

    let from_server = concat(&[
        frame(
            TEXT,
            br#"{"method":"item/started","params":{}}"#,
            true,
            None,
        ),
        frame(
            TEXT,
            br#"{"method":"turn/started","params":{"threadId":"t1","turn":{"id":"u1"}}}"#,
            true,
            None,
        ),
        frame(TEXT, br#"{"id":1,"result":{"method":"error"}}"#, true, None),
        frame(BINARY, &[1, 2, 3], true, None),
        frame(PING, b"", true, None),
        frame(TEXT, &big, true, None),
        frame(TEXT, b"", true, None),
    ]);
    upstream.send(&from_server).await;
    assert_eq!(client.read(from_server.len()).await, from_server);
    let observed = relay
        .event("TurnStarted", |e| matches!(e, RelayEvent::Observed(..)))
        .await;
    assert!(
        matches!(observed, RelayEvent::Observed(_, Observation::TurnStarted { ref turn_id, .. }) if turn_id == "u1"),
        "{observed:?}"
    );

    // The close handshake passes byte for byte; then the relay closes the client's side.
    let close = frame(CLOSE, &[0x03, 0xe8, b'b', b'y', b'e'], true, None);
    upstream.send(&close).await;
    assert_eq!(client.read(close.len()).await, close);
    let reply = frame(CLOSE, &[0x03, 0xe8], true, MASK);
    client.send(&reply).await;
    assert_eq!(upstream.read(reply.len()).await, reply);
    drop(upstream);
    assert!(client.read_to_end().await.is_empty());
    relay
        .event("Disconnected", |e| matches!(e, RelayEvent::Disconnected(_)))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fragmented_messages_pass_with_control_frames_between_their_fragments() {
    let (mut relay, mut client, mut upstream, _) = raw_pair().await;

    // Client → app-server: nothing is watched, so fragments stream through as they come.
    let from_client = concat(&[
        frame(TEXT, br#"{"id":2,"method":"x","params":""#, false, MASK),
        frame(PING, b"1", true, MASK),
        frame(CONTINUE, b"abc", false, MASK),
        frame(PONG, b"2", true, MASK),
        frame(CONTINUE, br#""}"#, true, MASK),
        frame(BINARY, &[1], false, MASK),
        frame(CONTINUE, &[2], true, MASK),
    ]);
    client.send(&from_client).await;
    assert_eq!(upstream.read(from_client.len()).await, from_client);

    // App-server → client: a watched message is gathered before it is looked at; the ping
    // between its fragments goes first, the fragments follow unchanged.
    let fragments = [
        frame(
            TEXT,
            br#"{"method":"turn/started","params":{"threadId":"t1","#,
            false,
            None,
        ),
        frame(CONTINUE, br#""turn":{"id":"u1","items":[],"#, false, None),
        frame(CONTINUE, br#""status":"inProgress"}}}"#, true, None),
    ];
    let ping = frame(PING, b"between", true, None);
    upstream
        .send(&concat(&[
            fragments[0].clone(),
            ping.clone(),
            fragments[1].clone(),
        ]))
        .await;
    assert_eq!(client.read(ping.len()).await, ping);
    client.expect_quiet(QUIET).await;
    upstream.send(&fragments[2]).await;
    assert_eq!(client.read_frame().await, fragments[0]);
    assert_eq!(client.read_frame().await, fragments[1]);
    assert_eq!(client.read_frame().await, fragments[2]);
    let observed = relay
        .event("TurnStarted", |e| matches!(e, RelayEvent::Observed(..)))
        .await;
    assert!(matches!(
        observed,
        RelayEvent::Observed(_, Observation::TurnStarted { .. })
    ));

    // A fragmented refresh request is dropped whole; the control frame inside it is not.
    upstream
        .send(&concat(&[
            frame(
                TEXT,
                br#"{"id":0,"method":"account/chatgptAuthTokens/refresh","#,
                false,
                None,
            ),
            ping.clone(),
            frame(
                CONTINUE,
                br#""params":{"reason":"unauthorized"}}"#,
                true,
                None,
            ),
        ]))
        .await;
    assert_eq!(client.read_frame().await, ping);

    // An unwatched fragmented message streams through in its original order.
    let streamed = concat(&[
        frame(
            TEXT,
            br#"{"method":"item/agentMessage/delta","params":"#,
            false,
            None,
        ),
        ping.clone(),
        frame(CONTINUE, b"{}}", true, None),
    ]);
    upstream.send(&streamed).await;
    assert_eq!(client.read(streamed.len()).await, streamed);
    client.expect_quiet(QUIET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_sent_right_behind_the_upgrade_request_are_relayed() {
    let mut upstream = RawUpstream::start().await;
    let relay = relay_to(ws(&upstream.url, "t"), true).await;
    let first = frame(TEXT, br#"{"id":1,"method":"initialize"}"#, true, MASK);
    let _client = raw::connect(&relay.url, &relay.token, &first).await;
    let (mut upstream, _) = upstream.accept().await;
    assert_eq!(upstream.read(first.len()).await, first);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_upgrade_requests_get_http_errors() {
    let echo = cs_tui_testkit::echo_upstream::start().await;
    let relay = relay_to(ws(&echo, "unused"), true).await;
    let good = String::from_utf8(raw::upgrade_request(&relay.url, Some(&relay.token))).unwrap();
    let without = |header: &str| {
        let lines: Vec<&str> = good
            .lines()
            .filter(|l| !l.is_empty() && !l.to_ascii_lowercase().starts_with(header))
            .collect();
        format!("{}\r\n\r\n", lines.join("\r\n"))
    };

    let (head, _) = raw::http_exchange(&relay.url, without("sec-websocket-key").as_bytes()).await;
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    let (head, _) = raw::http_exchange(&relay.url, without("upgrade").as_bytes()).await;
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    let wrong_version = good.replace("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 8");
    let (head, _) = raw::http_exchange(&relay.url, wrong_version.as_bytes()).await;
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    assert!(head.contains("Sec-WebSocket-Version: 13"), "{head}");
    let (head, _) = raw::http_exchange(&relay.url, without("authorization").as_bytes()).await;
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
    assert_eq!(connect_status(&relay.url, None).await, Err(401));
    let (head, _) = raw::http_exchange(&relay.url, b"GARBAGE\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 40"), "{head}");

    // The app-server is dialled before the client's upgrade is answered.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead_url = format!("ws://{}", closed.local_addr().unwrap());
    drop(closed);
    let dead = relay_to(ws(&dead_url, "unused"), true).await;
    assert_eq!(connect_status(&dead.url, Some(&dead.token)).await, Err(502));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_violations_close_both_sides_with_a_reason() {
    // An unmasked frame from a client.
    let (_relay, mut client, mut upstream, _) = raw_pair().await;
    client.send(&frame(TEXT, b"{}", true, None)).await;
    let to_client = client.read_frame().await;
    assert_eq!(
        &payload(&to_client)[..2],
        &u16::from(CloseCode::Protocol).to_be_bytes()
    );
    let to_upstream = upstream.read_frame().await;
    assert_eq!(
        &payload(&to_upstream)[..2],
        &u16::from(CloseCode::Away).to_be_bytes()
    );
    assert!(upstream.read_to_end().await.is_empty());

    // A frame beyond the size limit is refused from its header alone.
    let (_relay, mut client, mut upstream, _) = raw_pair().await;
    let mut header = vec![0x81, 0xff];
    header.extend((300u64 << 20).to_be_bytes());
    header.extend(MASK.unwrap());
    client.send(&header).await;
    let to_client = client.read_frame().await;
    assert_eq!(
        &payload(&to_client)[..2],
        &u16::from(CloseCode::Size).to_be_bytes()
    );
    assert_eq!(
        payload(&upstream.read_frame().await)[..2],
        u16::from(CloseCode::Away).to_be_bytes()
    );
}

/// An interceptor for the hook tests: holds `held/x`, answers `turn/interrupt` itself, and
/// records what it saw.
#[derive(Default)]
struct Scripted {
    seen: Arc<std::sync::Mutex<Vec<(Direction, String)>>>,
}

#[derive(Debug)]
enum ScriptedCommand {
    /// Release what is held toward the client, and tell the client so.
    ReleaseAndAnnounce,
}

impl Interceptor for Scripted {
    type Command = ScriptedCommand;

    fn watched(&self, direction: Direction) -> &[&'static str] {
        match direction {
            Direction::ToClient => &["held/x"],
            Direction::ToUpstream => &["turn/interrupt", "held/x"],
        }
    }

    fn inspect(&mut self, message: &Inspected<'_>, actions: &mut Actions) -> Verdict {
        self.seen
            .lock()
            .unwrap()
            .push((message.direction, message.text.to_owned()));
        match (message.direction, message.method()) {
            (_, Some("held/x")) => Verdict::Hold,
            (Direction::ToUpstream, Some("turn/interrupt")) => {
                let id = message.envelope.id.clone();
                actions.inject(
                    Direction::ToClient,
                    json!({"id": id, "result": {"answeredBy": "proxy"}}).to_string(),
                );
                Verdict::Drop
            }
            _ => Verdict::Forward,
        }
    }

    fn command(&mut self, command: ScriptedCommand, actions: &mut Actions) {
        match command {
            ScriptedCommand::ReleaseAndAnnounce => {
                actions.inject(Direction::ToClient, "releasing");
                actions.release_held(Direction::ToClient);
            }
        }
    }
}

async fn next_text(client: &mut WsClient) -> String {
    match next_data(client).await {
        Message::Text(t) => t.as_str().to_owned(),
        other => panic!("expected text, got {other:?}"),
    }
}

async fn hooked() -> (
    Relay<Scripted>,
    WsClient,
    ConnectionHandle<Scripted>,
    Arc<std::sync::Mutex<Vec<(Direction, String)>>>,
) {
    let echo = cs_tui_testkit::echo_upstream::start().await;
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    let mut relay = relay_with(ws(&echo, "unused"), true, move |_| Scripted {
        seen: log.clone(),
    })
    .await;
    let client = WsClient::connect(&relay.url, &relay.token).await;
    let handle = relay.connected().await;
    (relay, client, handle, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_messages_reach_either_side_and_own_responses_are_swallowed() {
    let (_relay, mut client, handle, seen) = hooked().await;
    // Toward the app-server the proxy's frames are masked (the echo server, a tungstenite
    // server, refuses unmasked ones), so this comes back.
    handle
        .inject(Direction::ToUpstream, "from the proxy")
        .unwrap();
    assert_eq!(next_text(&mut client).await, "from the proxy");
    handle
        .inject(Direction::ToClient, r#"{"method":"proxy/said"}"#)
        .unwrap();
    assert_eq!(next_text(&mut client).await, r#"{"method":"proxy/said"}"#);

    // A request with a proxy-owned id: the echo sends it back as a "response", which the
    // interceptor sees and the client never does. (Injections keep their order; the
    // client's own frames have none relative to them.)
    let own = r#"{"id":"cs-tui/test/1","result":{"turn":{"id":"u9"}}}"#;
    handle.inject(Direction::ToUpstream, own).unwrap();
    handle.inject(Direction::ToUpstream, "after").unwrap();
    assert_eq!(next_text(&mut client).await, "after");
    assert!(
        seen.lock()
            .unwrap()
            .contains(&(Direction::ToClient, own.to_owned()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_messages_are_released_in_order_or_dropped() {
    let (_relay, mut client, handle, _) = hooked().await;
    let held = |n: u32| format!(r#"{{"method":"held/x","params":{{"n":{n}}}}}"#);
    // Held on the way to the app-server, released there: the echo brings them back, and
    // they are held again on their way to the client.
    client.send_raw(Message::Text(held(1).into())).await;
    client.send_raw(Message::Text(held(2).into())).await;
    client.send_raw(Message::Text("pass".into())).await;
    assert_eq!(next_text(&mut client).await, "pass");
    // Commands keep their order (a client's frames have none relative to them): the held
    // messages go back out before the marker, so they are held again before it arrives.
    handle.release_held(Direction::ToUpstream).unwrap();
    handle.inject(Direction::ToUpstream, "marker").unwrap();
    assert_eq!(next_text(&mut client).await, "marker");

    // An interceptor command releases what waits toward the client, in arrival order.
    handle.command(ScriptedCommand::ReleaseAndAnnounce).unwrap();
    assert_eq!(next_text(&mut client).await, "releasing");
    assert_eq!(next_text(&mut client).await, held(1));
    assert_eq!(next_text(&mut client).await, held(2));

    // Dropped: never delivered.
    client.send_raw(Message::Text(held(3).into())).await;
    client.send_raw(Message::Text("sync".into())).await;
    assert_eq!(next_text(&mut client).await, "sync");
    handle.release_held(Direction::ToUpstream).unwrap();
    handle.inject(Direction::ToUpstream, "end").unwrap();
    assert_eq!(next_text(&mut client).await, "end");
    handle.drop_held(Direction::ToClient).unwrap();
    handle.release_held(Direction::ToClient).unwrap();
    handle
        .inject(Direction::ToClient, "really the end")
        .unwrap();
    assert_eq!(next_text(&mut client).await, "really the end");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_can_answer_a_client_request_itself() {
    let (_relay, mut client, handle, seen) = hooked().await;
    let interrupt = r#"{"id":9,"method":"turn/interrupt","params":{"threadId":"t","turnId":"u"}}"#;
    client.send_raw(Message::Text(interrupt.into())).await;
    client.send_raw(Message::Text("next".into())).await;
    // Had it been forwarded, its echo would come before "next".
    let answer: Value = serde_json::from_str(&next_text(&mut client).await).unwrap();
    assert_eq!(answer, json!({"id": 9, "result": {"answeredBy": "proxy"}}));
    assert_eq!(next_text(&mut client).await, "next");
    // The interceptor saw the client's masked frame as plain text.
    assert!(
        seen.lock()
            .unwrap()
            .contains(&(Direction::ToUpstream, interrupt.to_owned()))
    );
    drop(client);
    tokio::time::timeout(WAIT, async {
        while !handle.is_closed() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the handle reports the end of its connection");
    assert!(handle.inject(Direction::ToClient, "late").is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_frames_pass_through_and_injections_wait_for_the_message_end() {
    let (mut relay, mut client, mut upstream, _) = raw_pair().await;
    let handle = relay.connected().await;

    // A large fragmented message streams through (the relay does not look at it), its frames
    // split across many reads.
    let mut first = br#"{"method":"item/agentMessage/delta","params":""#.to_vec();
    first.resize(200_000, b'a');
    let first = frame(TEXT, &first, false, None);
    let mut last = vec![b'b'; 300_000];
    last.extend_from_slice(br#""}"#);
    let last = frame(CONTINUE, &last, true, None);
    upstream.send(&first[..1000]).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    upstream.send(&first[1000..]).await;
    assert_eq!(client.read(first.len()).await, first);

    // Mid-message, an injected message waits for the message's last frame.
    handle.inject(Direction::ToClient, "injected").unwrap();
    client.expect_quiet(QUIET).await;
    for part in last.chunks(70_000) {
        upstream.send(part).await;
        tokio::task::yield_now().await;
    }
    assert_eq!(client.read(last.len()).await, last);
    assert_eq!(
        client.read_frame().await,
        frame(TEXT, b"injected", true, None)
    );

    // The same toward the app-server, masked, with a ping in the middle.
    let big = frame(BINARY, &vec![7u8; 1 << 20], true, MASK);
    let ping = frame(PING, b"p", true, MASK);
    let sent = concat(&[big.clone(), ping, big]);
    for part in sent.chunks(100_000) {
        client.send(part).await;
    }
    assert_eq!(upstream.read(sent.len()).await, sent);
}

/// Panics on `boom`, like a buggy interceptor might.
struct Fragile;

impl Interceptor for Fragile {
    type Command = ();

    fn watched(&self, _: Direction) -> &[&'static str] {
        &["boom"]
    }

    fn inspect(&mut self, _: &Inspected<'_>, _: &mut Actions) -> Verdict {
        panic!("the interceptor broke (this panic is expected by the test)")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_interceptor_ends_only_its_connection_and_is_reported() {
    let echo = cs_tui_testkit::echo_upstream::start().await;
    let mut relay = relay_with(ws(&echo, "unused"), true, |_| Fragile).await;
    let mut client = WsClient::connect(&relay.url, &relay.token).await;
    let handle = relay.connected().await;
    client
        .send_raw(Message::Text(r#"{"method":"boom"}"#.into()))
        .await;
    match relay
        .event("Disconnected", |e| matches!(e, RelayEvent::Disconnected(_)))
        .await
    {
        RelayEvent::Disconnected(conn) => assert_eq!(conn, handle.conn()),
        _ => unreachable!(),
    }
    // The relay still serves others.
    let mut other = WsClient::connect(&relay.url, &relay.token).await;
    other.send_raw(Message::Text("still here".into())).await;
    assert_eq!(next_text(&mut other).await, "still here");
}

/// A good upgrade request with one more header line.
fn request_with(url: &str, token: &str, extra: &str) -> Vec<u8> {
    let good = String::from_utf8(raw::upgrade_request(url, Some(token))).unwrap();
    let head = good.strip_suffix("\r\n\r\n").unwrap();
    format!("{head}\r\n{extra}\r\n\r\n").into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_without_the_token_is_refused_before_the_gate_opens() {
    let echo = cs_tui_testkit::echo_upstream::start().await;
    // The gate never opens: a refusal can only come from authenticating first.
    let relay = relay_to(ws(&echo, "unused"), false).await;
    for token in [None, Some("wrong")] {
        let status = tokio::time::timeout(WAIT, connect_status(&relay.url, token))
            .await
            .expect("answered without waiting for the session");
        assert_eq!(status, Err(401));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_with_an_origin_header_is_refused() {
    let echo = cs_tui_testkit::echo_upstream::start().await;
    let relay = relay_to(ws(&echo, "unused"), true).await;
    for origin in ["Origin: http://127.0.0.1:3000", "origin: null"] {
        let (head, _) =
            raw::http_exchange(&relay.url, &request_with(&relay.url, &relay.token, origin)).await;
        assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    }
    // The same request without it is fine.
    assert_eq!(connect_status(&relay.url, Some(&relay.token)).await, Ok(()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_connections_are_bounded_in_number() {
    let echo = cs_tui_testkit::echo_upstream::start().await;
    let limits = HandshakeLimits {
        max_pending: 2,
        timeout: Duration::from_secs(600),
    };
    let relay = relay_limited(ws(&echo, "unused"), true, |_| NoInterceptor, limits).await;
    let addr = relay.url.strip_prefix("ws://").unwrap().to_owned();
    // Two connections that never say anything hold both slots (the relay accepts in order).
    let silent = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let _silent2 = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let (head, mut refused) = raw::http_exchange(
        &relay.url,
        &raw::upgrade_request(&relay.url, Some(&relay.token)),
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    refused.read_to_end().await;
    // A slot comes free when a silent one leaves.
    drop(silent);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match connect_status(&relay.url, Some(&relay.token)).await {
            Ok(()) => break,
            Err(503) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            other => panic!("a client after the slot came free: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_connections_are_bounded_in_time_even_at_a_closed_gate() {
    let echo = cs_tui_testkit::echo_upstream::start().await;
    let limits = HandshakeLimits {
        max_pending: 64,
        timeout: Duration::from_millis(200),
    };
    for ready in [true, false] {
        let relay = relay_limited(ws(&echo, "unused"), ready, |_| NoInterceptor, limits).await;
        let addr = relay.url.strip_prefix("ws://").unwrap();
        // Half a request, then silence: the relay closes the connection.
        let mut slow = RawPeer {
            stream: tokio::net::TcpStream::connect(addr).await.unwrap(),
            pending: Vec::new(),
        };
        slow.send(b"GET / HTTP/1.1\r\nHost: x\r\n").await;
        assert_eq!(slow.read_to_end().await, b"", "closed without an answer");
    }
}

/// On a unix socket the peer's uid is the credential: a client of our own user connects with
/// no token at all, as `codex --remote unix://` does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unix_socket_client_of_our_own_user_needs_no_token() {
    let echo = cs_tui_testkit::echo_upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("proxy.sock");
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    let (tx, _events) = mpsc::unbounded_channel::<RelayEvent>();
    let (_ready_tx, ready) = watch::channel(true);
    tokio::spawn(relay::serve(
        listener,
        Arc::new(RelayShared {
            upstream: ws(&echo, "unused"),
            client_token: Secret::new("never-sent"),
            ready,
            events: tx.into(),
            interceptor: Box::new(|_| NoInterceptor),
        }),
    ));
    let stream = tokio::net::UnixStream::connect(&path).await.unwrap();
    let (mut client, response) = tokio_tungstenite::client_async("ws://localhost/rpc", stream)
        .await
        .expect("upgraded without a token");
    assert_eq!(response.status(), 101);
    use futures_util::{SinkExt as _, StreamExt as _};
    client
        .send(Message::Text("over unix".into()))
        .await
        .unwrap();
    let echoed = tokio::time::timeout(WAIT, client.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(echoed, Message::Text("over unix".into()));

    // An Origin is refused there too.
    let mut request = "ws://localhost/rpc".into_client_request().unwrap();
    request
        .headers_mut()
        .insert("origin", "http://127.0.0.1".parse().unwrap());
    let stream = tokio::net::UnixStream::connect(&path).await.unwrap();
    match tokio_tungstenite::client_async(request, stream).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 403)
        }
        other => panic!("expected 403, got {:?}", other.map(|(_, r)| r.status())),
    }
}

/// Rewrites one id both ways, as the turn guard does for a hidden re-run: `T-one` toward the
/// app-server becomes `T-two`, and `T-two` toward the client `T-one`, in any message.
struct Renamer {
    seen: Arc<std::sync::Mutex<Vec<(Direction, String)>>>,
}

impl Interceptor for Renamer {
    type Command = ();

    fn watched_text(&self, direction: Direction) -> Option<&str> {
        Some(match direction {
            Direction::ToUpstream => "T-one",
            Direction::ToClient => "T-two",
        })
    }

    fn inspect(&mut self, message: &Inspected<'_>, actions: &mut Actions) -> Verdict {
        self.seen
            .lock()
            .unwrap()
            .push((message.direction, message.text.to_owned()));
        let (from, to) = match message.direction {
            Direction::ToUpstream => ("T-one", "T-two"),
            Direction::ToClient => ("T-two", "T-one"),
        };
        actions.inject(message.direction, message.text.replace(from, to));
        Verdict::Drop
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interceptor_sees_every_message_containing_its_text_and_nothing_else() {
    let echo = cs_tui_testkit::echo_upstream::start().await;
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    let relay = relay_with(ws(&echo, "unused"), true, move |_| Renamer {
        seen: log.clone(),
    })
    .await;
    let mut client = WsClient::connect(&relay.url, &relay.token).await;
    // A method nobody watches, with the id deep inside: renamed on the way out, and back.
    let request = r#"{"id":1,"method":"x/y","params":{"deep":[{"turnId":"T-one"}]}}"#;
    client.send_raw(Message::Text(request.into())).await;
    let plain = r#"{"method":"x/z","params":{"turnId":"T-three"}}"#;
    client.send_raw(Message::Text(plain.into())).await;
    assert_eq!(next_text(&mut client).await, request);
    assert_eq!(
        next_text(&mut client).await,
        plain,
        "in its place, in order"
    );
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        vec![
            (Direction::ToUpstream, request.to_owned()),
            (Direction::ToClient, request.replace("T-one", "T-two")),
        ],
        "what the app-server got had the other id; a message without either was not looked at"
    );
}
