//! Property tests of the relay's handshake and frame parser, through a real relay on loopback
//! in front of an echo upstream: arbitrary upgrade requests and arbitrary byte streams after
//! a good upgrade never panic a relay task, every connection ends, and the relay still serves
//! a well-formed client afterwards.
//!
//! Cases per property: 24 here; `CS_TUI_FUZZ_CASES` raises it (`scripts/fuzz`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use cs_tui::proxy::relay::{self, NoInterceptor, RelayShared};
use cs_tui::proxy::socket::AppServerAddr;
use cs_tui::secret::Secret;
use cs_tui_testkit::WAIT;
use cs_tui_testkit::raw::{self, frame};
use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Control, Data, OpCode};

const TOKEN: &str = "fuzz-token";

fn cases() -> u32 {
    std::env::var("CS_TUI_FUZZ_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(24)
}

static PANICS: AtomicUsize = AtomicUsize::new(0);

/// A relay in front of an echo upstream, on its own runtime, shared by every case.
struct Rig {
    runtime: tokio::runtime::Runtime,
    url: String,
    _ready: watch::Sender<bool>,
}

fn rig() -> &'static Rig {
    static RIG: std::sync::OnceLock<Rig> = std::sync::OnceLock::new();
    RIG.get_or_init(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, Ordering::SeqCst);
            previous(info);
        }));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let (url, ready) = runtime.block_on(async {
            let upstream = cs_tui_testkit::echo_upstream::start().await;
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("ws://{}", listener.local_addr().unwrap());
            let (events, mut drain) = mpsc::unbounded_channel();
            tokio::spawn(async move { while drain.recv().await.is_some() {} });
            let (ready_tx, ready) = watch::channel(true);
            let shared = Arc::new(RelayShared {
                upstream: AppServerAddr::Ws {
                    url: upstream,
                    token: Secret::new("unused"),
                },
                client_token: Secret::new(TOKEN),
                ready,
                events: events.into(),
                interceptor: Box::new(|_| NoInterceptor),
            });
            tokio::spawn(relay::serve(listener, shared));
            (url, ready_tx)
        });
        Rig {
            runtime,
            url,
            _ready: ready,
        }
    })
}

/// Sends `bytes`, closes our side, and reads until the relay closes: it must, in time.
async fn send_and_drain(mut stream: TcpStream, bytes: &[u8]) -> Vec<u8> {
    // The relay may refuse and close before reading everything: a failed write is an answer.
    let _ = stream.write_all(bytes).await;
    let _ = stream.shutdown().await;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(WAIT, stream.read_to_end(&mut answer));
    match read.await {
        Ok(_) => answer,
        Err(_) => panic!("the relay kept the connection open after our end closed"),
    }
}

fn no_panics_so_far() -> Result<(), TestCaseError> {
    prop_assert_eq!(PANICS.load(Ordering::SeqCst), 0, "a relay task panicked");
    Ok(())
}

/// Upgrade requests: a real one cut anywhere or with a byte changed, or noise.
fn upgrade_request() -> impl Strategy<Value = Vec<u8>> {
    let good = raw::upgrade_request("ws://127.0.0.1:1", Some(TOKEN));
    let len = good.len();
    prop_oneof![
        (0..len).prop_map({
            let good = good.clone();
            move |cut| good[..cut].to_vec()
        }),
        (0..len, any::<u8>()).prop_map({
            let good = good.clone();
            move |(at, byte)| {
                let mut bad = good.clone();
                bad[at] = byte;
                bad
            }
        }),
        (prop::collection::vec(any::<u8>(), 0..600), any::<bool>()).prop_map(|(noise, end)| {
            let mut bytes = b"GET / HTTP/1.1\r\n".to_vec();
            bytes.extend(noise);
            if end {
                bytes.extend_from_slice(b"\r\n\r\n");
            }
            bytes
        }),
        prop::collection::vec(any::<u8>(), 0..2048),
    ]
}

/// Payloads that look like what the relay sniffs, and ones that do not.
fn payload() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        "[ -~]{0,80}".prop_map(|s| format!(r#"{{"method":"{s}","params":{{}}}}"#).into_bytes()),
        "[ -~]{0,80}".prop_map(|s| format!(r#"{{"id":{s},"result":null}}"#).into_bytes()),
        "\\PC{0,200}".prop_map(String::into_bytes),
        prop::collection::vec(any::<u8>(), 0..300),
    ]
}

/// One piece of a client's byte stream: a well-formed frame of any kind, or raw bytes.
fn piece() -> impl Strategy<Value = Vec<u8>> {
    let opcode = prop_oneof![
        Just(OpCode::Data(Data::Text)),
        Just(OpCode::Data(Data::Binary)),
        Just(OpCode::Data(Data::Continue)),
        Just(OpCode::Data(Data::Reserved(3))),
        Just(OpCode::Control(Control::Ping)),
        Just(OpCode::Control(Control::Pong)),
        Just(OpCode::Control(Control::Close)),
    ];
    prop_oneof![
        4 => (opcode, payload(), any::<bool>(), any::<Option<[u8; 4]>>())
            .prop_map(|(op, body, fin, mask)| frame(op, &body, fin, mask)),
        1 => prop::collection::vec(any::<u8>(), 1..64),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn any_upgrade_request_is_answered_or_closed(request in upgrade_request()) {
        let rig = rig();
        let answer = rig.runtime.block_on(async {
            let stream = TcpStream::connect(rig.url.strip_prefix("ws://").unwrap()).await.unwrap();
            send_and_drain(stream, &request).await
        });
        prop_assert!(
            answer.is_empty() || answer.starts_with(b"HTTP/1.1 "),
            "not HTTP: {:?}", String::from_utf8_lossy(&answer)
        );
        no_panics_so_far()?;
    }

    #[test]
    fn any_byte_stream_after_the_upgrade_ends_cleanly(
        pieces in prop::collection::vec(piece(), 0..12),
    ) {
        let rig = rig();
        rig.runtime.block_on(async {
            let peer = raw::connect(&rig.url, TOKEN, &[]).await;
            send_and_drain(peer.stream, &pieces.concat()).await
        });
        no_panics_so_far()?;
    }
}

/// After any number of bad clients, a good one is still relayed.
#[test]
fn the_relay_still_serves_a_good_client_after_the_bad_ones() {
    let rig = rig();
    rig.runtime.block_on(async {
        // Some bad clients first (this test may run before or after the properties).
        for noise in [&b"GET / HTTP/1.1\r\n\r\n"[..], &[0xff; 300], b"\r\n\r\n"] {
            let stream = TcpStream::connect(rig.url.strip_prefix("ws://").unwrap())
                .await
                .unwrap();
            send_and_drain(stream, noise).await;
        }
        let text = br#"{"method":"ping","params":{}}"#;
        let mut peer = raw::connect(
            &rig.url,
            TOKEN,
            &frame(OpCode::Data(Data::Text), text, true, Some([1, 2, 3, 4])),
        )
        .await;
        let echoed = peer.read_frame().await;
        assert_eq!(raw::payload(&echoed), text);
    });
    assert_eq!(PANICS.load(Ordering::SeqCst), 0);
}
