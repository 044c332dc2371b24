//! How the proxy reaches the app-server: a unix socket in the session's private directory, or
//! a loopback websocket port guarded by a capability token.
//!
//! cs-tui starts its app-server on a unix socket (`--listen unix://PATH`). Its protection is the
//! filesystem: the socket is 0600 in a 0700 directory (the app-server binds it under
//! `/tmp/codex-daemon-<uid>/` and links PATH to it), as strong as a token nobody else can
//! read. It is also the cheaper hop: measured on the 2-core test machine, a byte forwarder from
//! a TCP client to a unix upstream moved 1 MiB messages at ~90 % of a direct TCP connection's
//! rate, one to a TCP upstream at ~45 % (`cargo bench --bench proxy` shows both). The TCP form
//! remains for an app-server reached by URL (tests start one that way).

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use color_eyre::eyre::{Result, WrapErr, eyre};
use nix::sys::socket::sockopt;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::{TcpStream, UnixStream, tcp, unix};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Request;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use crate::secret::Secret;

/// The send buffer asked for on the proxy's end of a unix socket to the app-server.
const UNIX_SEND_BUFFER: usize = 4 << 20;

/// Where the app-server listens.
#[derive(Clone, Debug)]
pub enum AppServerAddr {
    /// `unix://PATH`: no token, the socket's directory keeps others out.
    Unix(PathBuf),
    /// `ws://127.0.0.1:PORT` with its capability token.
    Ws { url: String, token: Secret },
}

impl AppServerAddr {
    /// The address for logs and errors (never the token).
    pub fn describe(&self) -> String {
        match self {
            AppServerAddr::Unix(path) => format!("unix://{}", path.display()),
            AppServerAddr::Ws { url, .. } => url.clone(),
        }
    }

    /// Connects, and builds the websocket upgrade request to send over the connection (with
    /// the bearer token for a websocket port, marked sensitive).
    pub async fn connect(&self) -> Result<(Stream, Request)> {
        match self {
            AppServerAddr::Unix(path) => {
                let stream = connect_unix(path).await.wrap_err_with(|| {
                    format!("connecting to the app-server at {}", self.describe())
                })?;
                // A unix socket's writer is held to its own send buffer (the reader's does not
                // count), and the default (~208 KiB) makes a large message a string of
                // sleep-and-wake rounds; 4 MiB moved bulk data ~3x as fast on the test machine.
                // The kernel caps it at `net.core.wmem_max`; a refusal only costs speed.
                let _ = nix::sys::socket::setsockopt(&stream, sockopt::SndBuf, &UNIX_SEND_BUFFER);
                // The host is only a placeholder: a unix socket has no authority.
                let request = "ws://localhost/"
                    .into_client_request()
                    .wrap_err("building the upgrade request")?;
                Ok((Stream::Unix(stream), request))
            }
            AppServerAddr::Ws { url, token } => {
                let mut request = url
                    .as_str()
                    .into_client_request()
                    .wrap_err_with(|| format!("invalid app-server URL {url}"))?;
                let uri = request.uri().clone();
                if uri.scheme_str() != Some("ws") {
                    return Err(eyre!("the app-server must be a plain ws:// URL, not {url}"));
                }
                let host = uri.host().ok_or_else(|| eyre!("no host in {url}"))?;
                let port = uri.port_u16().unwrap_or(80);
                let mut bearer = HeaderValue::from_str(&format!("Bearer {}", token.expose()))
                    .map_err(|_| eyre!("the app-server token is not a valid header value"))?;
                bearer.set_sensitive(true);
                request.headers_mut().insert("authorization", bearer);
                let stream = TcpStream::connect((host, port))
                    .await
                    .wrap_err_with(|| format!("connecting to the app-server at {url}"))?;
                stream.set_nodelay(true)?;
                Ok((Stream::Tcp(stream), request))
            }
        }
    }
}

/// Connects to a unix socket. The app-server's PATH is a symbolic link to the real socket;
/// the link's target is connected to directly, since a socket address holds at most ~107
/// bytes and a store directory can be deeper than that.
pub async fn connect_unix(path: &Path) -> io::Result<UnixStream> {
    let target = match std::fs::read_link(path) {
        Ok(target) if target.is_absolute() => target,
        Ok(target) => path.parent().unwrap_or(Path::new("/")).join(target),
        Err(_) => path.to_owned(),
    };
    UnixStream::connect(target).await
}

/// A connection to either kind of listener (the relay's client side is always TCP).
#[derive(Debug)]
pub enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

/// One socket, borrowed: what splicing needs of either side (its descriptor and readiness).
#[derive(Clone, Copy, Debug)]
pub enum SocketRef<'a> {
    Tcp(&'a TcpStream),
    Unix(&'a UnixStream),
}

/// The read half of a [`Stream`] split in place.
#[derive(Debug)]
pub enum ReadHalf<'a> {
    Tcp(tcp::ReadHalf<'a>),
    Unix(unix::ReadHalf<'a>),
}

/// The write half of a [`Stream`] split in place.
#[derive(Debug)]
pub enum WriteHalf<'a> {
    Tcp(tcp::WriteHalf<'a>),
    Unix(unix::WriteHalf<'a>),
}

impl Stream {
    /// Splits into halves that borrow the stream (no lock, unlike `tokio::io::split`).
    pub fn split(&mut self) -> (ReadHalf<'_>, WriteHalf<'_>) {
        match self {
            Stream::Tcp(s) => {
                let (r, w) = s.split();
                (ReadHalf::Tcp(r), WriteHalf::Tcp(w))
            }
            Stream::Unix(s) => {
                let (r, w) = s.split();
                (ReadHalf::Unix(r), WriteHalf::Unix(w))
            }
        }
    }
}

impl ReadHalf<'_> {
    pub fn socket(&self) -> SocketRef<'_> {
        match self {
            ReadHalf::Tcp(h) => SocketRef::Tcp(h.as_ref()),
            ReadHalf::Unix(h) => SocketRef::Unix(h.as_ref()),
        }
    }
}

impl WriteHalf<'_> {
    pub fn socket(&self) -> SocketRef<'_> {
        match self {
            WriteHalf::Tcp(h) => SocketRef::Tcp(h.as_ref()),
            WriteHalf::Unix(h) => SocketRef::Unix(h.as_ref()),
        }
    }
}

impl SocketRef<'_> {
    /// Runs a non-blocking operation on the descriptor, as `TcpStream::try_io` does.
    pub fn try_io<R>(
        &self,
        interest: Interest,
        f: impl FnOnce() -> io::Result<R>,
    ) -> io::Result<R> {
        match self {
            SocketRef::Tcp(s) => s.try_io(interest, f),
            SocketRef::Unix(s) => s.try_io(interest, f),
        }
    }

    pub async fn readable(&self) -> io::Result<()> {
        match self {
            SocketRef::Tcp(s) => s.readable().await,
            SocketRef::Unix(s) => s.readable().await,
        }
    }

    pub async fn writable(&self) -> io::Result<()> {
        match self {
            SocketRef::Tcp(s) => s.writable().await,
            SocketRef::Unix(s) => s.writable().await,
        }
    }
}

impl AsFd for SocketRef<'_> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            SocketRef::Tcp(s) => s.as_fd(),
            SocketRef::Unix(s) => s.as_fd(),
        }
    }
}

/// Forwards `AsyncRead` calls of an enum to the variant it holds.
macro_rules! delegate_read {
    ($ty:ty) => {
        impl AsyncRead for $ty {
            fn poll_read(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut ReadBuf<'_>,
            ) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    Self::Tcp(s) => Pin::new(s).poll_read(cx, buf),
                    Self::Unix(s) => Pin::new(s).poll_read(cx, buf),
                }
            }
        }
    };
}

/// Forwards `AsyncWrite` calls of an enum to the variant it holds.
macro_rules! delegate_write {
    ($ty:ty) => {
        impl AsyncWrite for $ty {
            fn poll_write(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<io::Result<usize>> {
                match self.get_mut() {
                    Self::Tcp(s) => Pin::new(s).poll_write(cx, buf),
                    Self::Unix(s) => Pin::new(s).poll_write(cx, buf),
                }
            }

            fn poll_write_vectored(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                bufs: &[io::IoSlice<'_>],
            ) -> Poll<io::Result<usize>> {
                match self.get_mut() {
                    Self::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
                    Self::Unix(s) => Pin::new(s).poll_write_vectored(cx, bufs),
                }
            }

            fn is_write_vectored(&self) -> bool {
                match self {
                    Self::Tcp(s) => s.is_write_vectored(),
                    Self::Unix(s) => s.is_write_vectored(),
                }
            }

            fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    Self::Tcp(s) => Pin::new(s).poll_flush(cx),
                    Self::Unix(s) => Pin::new(s).poll_flush(cx),
                }
            }

            fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    Self::Tcp(s) => Pin::new(s).poll_shutdown(cx),
                    Self::Unix(s) => Pin::new(s).poll_shutdown(cx),
                }
            }
        }
    };
}

delegate_read!(Stream);
delegate_write!(Stream);
delegate_read!(ReadHalf<'_>);
delegate_write!(WriteHalf<'_>);
