//! Websocket peers at the byte level, for tests that check exactly which bytes the relay
//! forwards: a raw upstream and a raw client that do the handshake and then hand over the
//! TCP stream, and a frame builder.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::WAIT;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::generate_request;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::OpCode;
use tokio_tungstenite::tungstenite::protocol::frame::{Frame, FrameHeader};

/// One end of a raw connection after its handshake, with the bytes read past the handshake.
pub struct RawPeer {
    pub stream: TcpStream,
    pub pending: Vec<u8>,
}

impl RawPeer {
    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("raw write");
    }

    /// Reads exactly `n` bytes.
    pub async fn read(&mut self, n: usize) -> Vec<u8> {
        while self.pending.len() < n {
            let mut chunk = vec![0; 64 << 10];
            let got = tokio::time::timeout(WAIT, self.stream.read(&mut chunk))
                .await
                .unwrap_or_else(|_| panic!("timed out with {} of {n} bytes", self.pending.len()))
                .expect("raw read");
            assert!(got > 0, "EOF after {} of {n} bytes", self.pending.len());
            self.pending.extend_from_slice(&chunk[..got]);
        }
        self.pending.drain(..n).collect()
    }

    /// Reads the next whole frame (header and payload, as on the wire).
    pub async fn read_frame(&mut self) -> Vec<u8> {
        let mut head = self.read(2).await;
        loop {
            let mut cursor = std::io::Cursor::new(&head);
            if let Some((_, len)) = FrameHeader::parse(&mut cursor).expect("frame header") {
                let rest = cursor.position() as usize + len as usize - head.len();
                head.extend(self.read(rest).await);
                return head;
            }
            head.extend(self.read(1).await);
        }
    }

    /// Asserts nothing more arrives for a while.
    pub async fn expect_quiet(&mut self, window: Duration) {
        assert!(
            self.pending.is_empty(),
            "unexpected bytes {:?}",
            self.pending
        );
        let mut chunk = [0u8; 256];
        if let Ok(read) = tokio::time::timeout(window, self.stream.read(&mut chunk)).await {
            let n = read.expect("raw read");
            panic!("unexpected bytes: {:?}", &chunk[..n]);
        }
    }

    /// Reads until EOF (or a reset), returning what came before it.
    pub async fn read_to_end(&mut self) -> Vec<u8> {
        let mut rest = std::mem::take(&mut self.pending);
        let _ = tokio::time::timeout(WAIT, self.stream.read_to_end(&mut rest))
            .await
            .expect("the peer closed in time");
        rest
    }
}

/// A websocket server that accepts any upgrade and hands each connection to the test.
pub struct RawUpstream {
    pub url: String,
    connections: mpsc::UnboundedReceiver<(RawPeer, String)>,
}

impl RawUpstream {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}", listener.local_addr().unwrap());
        let (tx, connections) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let (head, pending) = read_head(&mut stream).await;
                let mut headers = [httparse::EMPTY_HEADER; 64];
                let mut request = httparse::Request::new(&mut headers);
                request.parse(&head).unwrap();
                let find = |name: &str| {
                    request
                        .headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case(name))
                        .map(|h| String::from_utf8_lossy(h.value).into_owned())
                };
                let key = find("sec-websocket-key").expect("a key");
                let authorization = find("authorization").unwrap_or_default();
                let response = format!(
                    "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n\
                     Upgrade: websocket\r\nSec-WebSocket-Accept: {}\r\n\r\n",
                    derive_accept_key(key.as_bytes())
                );
                stream.write_all(response.as_bytes()).await.unwrap();
                let _ = tx.send((RawPeer { stream, pending }, authorization));
            }
        });
        Self { url, connections }
    }

    /// The next connection and the Authorization header it came with.
    pub async fn accept(&mut self) -> (RawPeer, String) {
        tokio::time::timeout(WAIT, self.connections.recv())
            .await
            .expect("an upstream connection")
            .expect("the upstream is running")
    }
}

/// Reads an HTTP head; returns it and the bytes after it.
async fn read_head(stream: &mut TcpStream) -> (Vec<u8>, Vec<u8>) {
    let mut buf = Vec::new();
    loop {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(WAIT, stream.read(&mut chunk))
            .await
            .expect("an HTTP head in time")
            .expect("read");
        assert!(
            n > 0,
            "EOF in the HTTP head: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(end + 4);
            return (buf, rest);
        }
    }
}

/// A valid upgrade request to `url`, with a bearer token if given, as bytes.
pub fn upgrade_request(url: &str, bearer: Option<&str>) -> Vec<u8> {
    let mut request = url.into_client_request().unwrap();
    if let Some(token) = bearer {
        request.headers_mut().insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
        );
    }
    generate_request(request).unwrap().0
}

/// Sends `request` and returns the HTTP response head and the connection.
pub async fn http_exchange(url: &str, request: &[u8]) -> (String, RawPeer) {
    let addr = url.strip_prefix("ws://").unwrap();
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let (head, pending) = read_head(&mut stream).await;
    (
        String::from_utf8(head).unwrap(),
        RawPeer { stream, pending },
    )
}

/// Connects to the relay as a raw websocket client; `then` goes out in the same write as
/// the upgrade request.
pub async fn connect(url: &str, bearer: &str, then: &[u8]) -> RawPeer {
    let mut request = upgrade_request(url, Some(bearer));
    request.extend_from_slice(then);
    let (head, peer) = http_exchange(url, &request).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    peer
}

/// A frame as it goes on the wire; `mask` for client frames.
pub fn frame(opcode: OpCode, payload: &[u8], fin: bool, mask: Option<[u8; 4]>) -> Vec<u8> {
    let header = FrameHeader {
        is_final: fin,
        opcode,
        mask,
        ..FrameHeader::default()
    };
    let mut out = Vec::new();
    Frame::from_payload(header, payload.to_vec().into())
        .format(&mut out)
        .unwrap();
    out
}

/// The payload of a whole frame as read by [`RawPeer::read_frame`], unmasked.
pub fn payload(frame: &[u8]) -> Vec<u8> {
    let mut cursor = std::io::Cursor::new(frame);
    let (header, len) = FrameHeader::parse(&mut cursor).unwrap().unwrap();
    let start = cursor.position() as usize;
    let mut body = frame[start..start + len as usize].to_vec();
    if let Some(mask) = header.mask {
        for (i, b) in body.iter_mut().enumerate() {
            *b ^= mask[i % 4];
        }
    }
    body
}
