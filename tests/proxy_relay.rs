//! The relay as a transport: frames pass unchanged and in order, whatever they hold.

mod common;

use std::sync::Arc;
use std::time::Duration;

use cs_tui::proxy::relay::{self, RelayEvent, RelayShared};
use cs_tui::secret::Secret;
use cs_tui_testkit::ws_client::connect_status;
use cs_tui_testkit::{AppServer, CodexHome, MockBackend, WsClient, codex_bin};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message;

struct Relay {
    url: String,
    token: String,
    events: mpsc::UnboundedReceiver<RelayEvent>,
    _ready: watch::Sender<bool>,
}

async fn relay_to(upstream_url: &str, upstream_token: &str, ready: bool) -> Relay {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    let (tx, events) = mpsc::unbounded_channel();
    let (ready_tx, ready_rx) = watch::channel(ready);
    let shared = Arc::new(RelayShared {
        upstream_url: upstream_url.to_owned(),
        upstream_token: Secret::new(upstream_token),
        client_token: Secret::new("client-secret"),
        ready: ready_rx,
        events: tx,
        interceptor: Box::new(|_| relay::NoInterceptor),
    });
    tokio::spawn(relay::serve(listener, shared));
    Relay {
        url,
        token: "client-secret".to_owned(),
        events,
        _ready: ready_tx,
    }
}

async fn next_data(client: &mut WsClient) -> Message {
    loop {
        match client
            .next_raw(Duration::from_secs(20))
            .await
            .expect("a frame")
        {
            m @ (Message::Text(_) | Message::Binary(_) | Message::Close(_)) => return m,
            _ => continue,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_of_every_kind_pass_unchanged_and_in_order() {
    let echo = common::echo_upstream::start().await;
    let relay = relay_to(&echo, "unused", true).await;
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
    let echo = common::echo_upstream::start().await;
    let relay = relay_to(&echo, "unused", true).await;
    let mut client = WsClient::connect(&relay.url, &relay.token).await;
    let big = format!(
        "{{\"method\":\"big\",\"params\":\"{}\"}}",
        "x".repeat(64 << 20)
    );
    client.send_raw(Message::Text(big.clone().into())).await;
    let Message::Text(back) = next_data(&mut client).await else {
        panic!("not text")
    };
    assert_eq!(back.len(), big.len());
    assert!(back.as_str() == big);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnecting_client_gets_a_fresh_upstream_and_close_is_relayed() {
    let echo = common::echo_upstream::start().await;
    let mut relay = relay_to(&echo, "unused", true).await;
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
    let echo = common::echo_upstream::start().await;
    let relay = relay_to(&echo, "unused", false).await;
    let url = relay.url.clone();
    let token = relay.token.clone();
    let attempt = tokio::spawn(async move { WsClient::connect(&url, &token).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !attempt.is_finished(),
        "the handshake must wait for the gate"
    );
    relay._ready.send(true).unwrap();
    let mut client = tokio::time::timeout(Duration::from_secs(5), attempt)
        .await
        .unwrap()
        .unwrap();
    client.send_raw(Message::Text("in".into())).await;
    assert_eq!(next_data(&mut client).await, Message::Text("in".into()));
    assert_eq!(connect_status(&relay.url, Some("wrong")).await, Err(401));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_json_reaches_the_real_app_server_and_the_session_survives() {
    let mock = MockBackend::start().await;
    let home = CodexHome::offline(&mock.url());
    let server = AppServer::spawn(&codex_bin(), home.path(), &mock.refresh_url()).await;
    let relay = relay_to(&server.ws_url(), server.token(), true).await;
    let mut client = WsClient::connect(&relay.url, &relay.token).await;
    client.initialize(json!("initialize")).await;
    client
        .send_raw(Message::Text("{\"id\": 5, \"method\": ".into()))
        .await;
    client.send_raw(Message::Binary(vec![1, 2, 3].into())).await;
    // Whatever the app-server makes of those, a well-formed request still works afterwards.
    let read: Value = client.request("account/read", json!({})).await.unwrap();
    assert!(read.get("account").is_some(), "{read}");
}
