//! The two websocket handshakes, done by hand so that the relay ends up holding plain
//! streams (plus whatever frame bytes arrived with each handshake) and can splice frames.
//!
//! No extension or subprotocol is negotiated on either leg, so the frames on both are plain
//! RFC 6455 frames: a client's masked frames are valid as the proxy's own frames toward the
//! app-server, and the app-server's unmasked frames are valid toward the client.

use std::io;
use std::time::Duration;

use base64::Engine;
use bytes::{Buf, BytesMut};
use color_eyre::eyre::{Result, bail, eyre};
use subtle::ConstantTimeEq;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::handshake::client::generate_request;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use crate::proxy::socket::{AppServerAddr, Stream};
use crate::secret::Secret;

/// The longest handshake (request or response head) either side may send.
const MAX_HEAD: usize = 16 << 10;
const MAX_HEADERS: usize = 64;
/// How long a peer may take to complete its half of a handshake.
pub(super) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A TCP stream after a websocket handshake, with the frame bytes read past its end.
pub(super) struct Upgraded {
    pub stream: Stream,
    pub leftover: BytesMut,
}

/// Why a client's upgrade request is refused; each becomes an HTTP error response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    Unauthorized,
    /// The request carries an `Origin` header: a web page is trying to reach the proxy.
    CrossOrigin,
    BadRequest(&'static str),
    /// `Sec-WebSocket-Version` is not 13 (answered with the version we speak).
    UnsupportedVersion,
    TooLarge,
    /// The app-server could not be reached.
    BadGateway,
}

impl Refusal {
    fn status(self) -> &'static str {
        match self {
            Refusal::Unauthorized => "401 Unauthorized",
            Refusal::CrossOrigin => "403 Forbidden",
            Refusal::BadRequest(_) | Refusal::UnsupportedVersion => "400 Bad Request",
            Refusal::TooLarge => "431 Request Header Fields Too Large",
            Refusal::BadGateway => "502 Bad Gateway",
        }
    }

    pub(super) fn reason(self) -> &'static str {
        match self {
            Refusal::Unauthorized => "missing or wrong bearer token",
            Refusal::CrossOrigin => "requests from web pages (with an Origin header) are refused",
            Refusal::BadRequest(why) => why,
            Refusal::UnsupportedVersion => "only websocket version 13 is supported",
            Refusal::TooLarge => "request head too large",
            Refusal::BadGateway => "the app-server is not reachable",
        }
    }
}

/// How a client's handshake ended without an upgrade.
#[derive(Debug)]
pub(super) enum HelloError {
    /// The request was read and is refused: answer it.
    Refused(Refusal),
    /// The peer went away or sent something that is not HTTP at all.
    Io(io::Error),
}

/// An accepted upgrade request: what to answer with, and the bytes read past the request (the
/// client may send its first frames right behind it).
#[derive(Debug)]
pub(super) struct Hello {
    pub accept_key: String,
    pub leftover: BytesMut,
}

/// Reads a client's upgrade request and checks it (bearer token first, so that a client
/// without the token learns nothing else). `token` is `None` when the transport itself
/// vouched for the client (a unix socket whose peer is our own user).
pub(super) async fn read_hello(
    stream: &mut Stream,
    token: Option<&Secret>,
) -> Result<Hello, HelloError> {
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        if stream.read_buf(&mut buf).await.map_err(HelloError::Io)? == 0 {
            return Err(HelloError::Io(io::ErrorKind::UnexpectedEof.into()));
        }
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut headers);
        let checked = match request.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => check_request(&request, token).map(|k| (k, len)),
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => continue,
            Ok(httparse::Status::Partial) | Err(httparse::Error::TooManyHeaders) => {
                Err(Refusal::TooLarge)
            }
            Err(_) => Err(Refusal::BadRequest("malformed HTTP request")),
        };
        let (accept_key, len) = checked.map_err(HelloError::Refused)?;
        buf.advance(len);
        return Ok(Hello {
            accept_key,
            leftover: buf,
        });
    }
}

/// Checks an upgrade request (RFC 6455 §4.2.1) and returns the `Sec-WebSocket-Accept` value.
pub(super) fn check_request(
    request: &httparse::Request,
    token: Option<&Secret>,
) -> Result<String, Refusal> {
    let headers = &*request.headers;
    if let Some(token) = token {
        let bearer = header(headers, "authorization")
            .and_then(|v| strip_prefix_ignore_case(v, b"bearer "))
            .map(<[u8]>::trim_ascii);
        let authorized = bearer.is_some_and(|t| bool::from(t.ct_eq(token.expose().as_bytes())));
        if !authorized {
            return Err(Refusal::Unauthorized);
        }
    }
    // Browsers send `Origin` with every websocket upgrade, and no Codex client does: a web
    // page must never drive the app-server (it can run commands as the user).
    if header(headers, "origin").is_some() {
        return Err(Refusal::CrossOrigin);
    }
    if request.method != Some("GET") {
        return Err(Refusal::BadRequest("a websocket upgrade must be a GET"));
    }
    if request.version != Some(1) {
        return Err(Refusal::BadRequest("a websocket upgrade needs HTTP/1.1"));
    }
    if !header(headers, "upgrade")
        .is_some_and(|v| v.trim_ascii().eq_ignore_ascii_case(b"websocket"))
    {
        return Err(Refusal::BadRequest("missing `Upgrade: websocket`"));
    }
    if !has_token(headers, "connection", b"upgrade") {
        return Err(Refusal::BadRequest("missing `Connection: Upgrade`"));
    }
    if header(headers, "sec-websocket-version").map(<[u8]>::trim_ascii) != Some(b"13") {
        return Err(Refusal::UnsupportedVersion);
    }
    let key = header(headers, "sec-websocket-key")
        .map(<[u8]>::trim_ascii)
        .ok_or(Refusal::BadRequest("missing Sec-WebSocket-Key"))?;
    let nonce = base64::engine::general_purpose::STANDARD.decode(key);
    if nonce.map(|n| n.len()) != Ok(16) {
        return Err(Refusal::BadRequest(
            "Sec-WebSocket-Key is not 16 bytes in base64",
        ));
    }
    Ok(derive_accept_key(key))
}

/// Answers an accepted upgrade. Neither extensions nor subprotocols are accepted: the frames
/// must stay plain so they can be spliced.
pub(super) async fn accept(stream: &mut Stream, accept_key: &str) -> io::Result<()> {
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Accept: {accept_key}\r\n\r\n"
    );
    stream.write_all(response.as_bytes()).await
}

/// Answers a refused upgrade with an HTTP error and closes the connection.
pub(super) async fn refuse(stream: &mut Stream, refusal: Refusal) {
    let body = refusal.reason();
    let version = if refusal == Refusal::UnsupportedVersion {
        "Sec-WebSocket-Version: 13\r\n"
    } else {
        ""
    };
    let response = format!(
        "HTTP/1.1 {}\r\nConnection: close\r\n{version}Content-Type: text/plain\r\n\
         Content-Length: {}\r\n\r\n{body}",
        refusal.status(),
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// Opens a websocket to the app-server and returns the raw stream.
pub(super) async fn connect_upstream(addr: &AppServerAddr) -> Result<Upgraded> {
    let (mut stream, request) = addr.connect().await?;
    // tungstenite writes the request with a fresh random Sec-WebSocket-Key and returns it.
    // Its error would quote header values, the token's among them: keep it out.
    let (head, key) = generate_request(request).map_err(|_| {
        eyre!(
            "could not build the upgrade request for {}",
            addr.describe()
        )
    })?;
    stream.write_all(&head).await?;

    let mut buf = BytesMut::with_capacity(4096);
    loop {
        if stream.read_buf(&mut buf).await? == 0 {
            bail!("the app-server closed the connection during the websocket handshake");
        }
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut headers);
        let len = match response.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => continue,
            Ok(httparse::Status::Partial) => {
                bail!("the app-server's handshake response is too large")
            }
            Err(e) => bail!("the app-server's handshake response is not HTTP: {e}"),
        };
        check_response(&response, &key)?;
        buf.advance(len);
        return Ok(Upgraded {
            stream,
            leftover: buf,
        });
    }
}

/// Checks the app-server's answer to our upgrade request (RFC 6455 §4.1).
fn check_response(response: &httparse::Response, key: &str) -> Result<()> {
    let code = response.code.unwrap_or(0);
    if code != 101 {
        bail!("the app-server refused the websocket upgrade with HTTP {code}");
    }
    let headers = &*response.headers;
    if !header(headers, "upgrade")
        .is_some_and(|v| v.trim_ascii().eq_ignore_ascii_case(b"websocket"))
        || !has_token(headers, "connection", b"upgrade")
    {
        bail!("the app-server's 101 response lacks the upgrade headers");
    }
    if header(headers, "sec-websocket-accept").map(<[u8]>::trim_ascii)
        != Some(derive_accept_key(key.as_bytes()).as_bytes())
    {
        bail!("the app-server's Sec-WebSocket-Accept does not match our key");
    }
    // We offered none; an extension (compression) would make its frames unspliceable.
    if header(headers, "sec-websocket-extensions").is_some()
        || header(headers, "sec-websocket-protocol").is_some()
    {
        bail!("the app-server negotiated an extension or subprotocol we did not offer");
    }
    Ok(())
}

/// The first header with this (lower-case) name.
fn header<'h>(headers: &[httparse::Header<'h>], name: &str) -> Option<&'h [u8]> {
    headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value)
}

/// Whether any header with this name lists `token` (comma-separated, case-insensitive).
fn has_token(headers: &[httparse::Header], name: &str, token: &[u8]) -> bool {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case(name))
        .flat_map(|h| h.value.split(|b| *b == b','))
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

fn strip_prefix_ignore_case<'a>(value: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    let head = value.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &value[prefix.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    fn check(head: &str) -> Result<String, Refusal> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut headers);
        assert!(request.parse(head.as_bytes()).unwrap().is_complete());
        check_request(&request, Some(&Secret::new("tok")))
    }

    fn request(lines: &[&str]) -> String {
        let mut head = "GET / HTTP/1.1\r\nHost: x\r\n".to_owned();
        for line in lines {
            head.push_str(line);
            head.push_str("\r\n");
        }
        head + "\r\n"
    }

    const GOOD: [&str; 5] = [
        "Authorization: Bearer tok",
        "Upgrade: websocket",
        "Connection: keep-alive, Upgrade",
        "Sec-WebSocket-Version: 13",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
    ];

    fn without(index: usize) -> Vec<&'static str> {
        GOOD.iter()
            .enumerate()
            .filter(|(i, _)| *i != index)
            .map(|(_, l)| *l)
            .collect()
    }

    #[test]
    fn a_good_request_gets_the_rfc_accept_key() {
        // The example from RFC 6455 §1.3.
        assert_eq!(
            check(&request(&GOOD)).unwrap(),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert_eq!(
            derive_accept_key(KEY.as_bytes()),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn the_bearer_is_checked_before_anything_else() {
        assert_eq!(check(&request(&without(0))), Err(Refusal::Unauthorized));
        let mut wrong = GOOD.to_vec();
        wrong[0] = "Authorization: Bearer tok2";
        assert_eq!(check(&request(&wrong)), Err(Refusal::Unauthorized));
        wrong[0] = "Authorization: Basic tok";
        assert_eq!(check(&request(&wrong)), Err(Refusal::Unauthorized));
        // Unauthorized even when the rest is broken too.
        assert_eq!(
            check(&request(&["Upgrade: websocket"])),
            Err(Refusal::Unauthorized)
        );
        wrong[0] = "authorization: bearer tok";
        assert!(check(&request(&wrong)).is_ok());
    }

    #[test]
    fn malformed_upgrades_are_bad_requests() {
        assert!(matches!(
            check(&request(&without(1))),
            Err(Refusal::BadRequest(_))
        ));
        assert!(matches!(
            check(&request(&without(2))),
            Err(Refusal::BadRequest(_))
        ));
        assert_eq!(
            check(&request(&without(3))),
            Err(Refusal::UnsupportedVersion)
        );
        assert!(matches!(
            check(&request(&without(4))),
            Err(Refusal::BadRequest(_))
        ));
        let mut v8 = GOOD.to_vec();
        v8[3] = "Sec-WebSocket-Version: 8";
        assert_eq!(check(&request(&v8)), Err(Refusal::UnsupportedVersion));
        let mut short_key = GOOD.to_vec();
        short_key[4] = "Sec-WebSocket-Key: c2hvcnQ=";
        assert!(matches!(
            check(&request(&short_key)),
            Err(Refusal::BadRequest(_))
        ));
        let post = request(&GOOD).replacen("GET", "POST", 1);
        assert!(matches!(check(&post), Err(Refusal::BadRequest(_))));
    }

    #[test]
    fn a_request_with_an_origin_is_refused_even_with_the_bearer() {
        let mut from_page = GOOD.to_vec();
        from_page.push("Origin: http://127.0.0.1:8000");
        assert_eq!(check(&request(&from_page)), Err(Refusal::CrossOrigin));
        from_page[5] = "origin: null";
        assert_eq!(check(&request(&from_page)), Err(Refusal::CrossOrigin));
        // Without the bearer, it is still only "unauthorized".
        from_page[0] = "X-Other: 1";
        assert_eq!(check(&request(&from_page)), Err(Refusal::Unauthorized));
    }

    #[test]
    fn a_transport_that_vouched_for_the_client_needs_no_bearer() {
        let without_bearer = request(&without(0));
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Request::new(&mut headers);
        assert!(
            parsed
                .parse(without_bearer.as_bytes())
                .unwrap()
                .is_complete()
        );
        assert!(check_request(&parsed, None).is_ok());
    }
}
