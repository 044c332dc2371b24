//! How the proxy reaches the app-server: a unix socket in the session's private directory, or
//! a loopback websocket port guarded by a capability token.
//!
//! cs-tui starts its app-server on a unix socket (`--listen unix://PATH`). Its protection is the
//! filesystem: the socket is 0600 in a 0700 directory (the app-server binds it under
//! `/tmp/codex-daemon-<uid>/` and links PATH to it), as strong as a token nobody else can
//! read. It is also the cheaper hop: measured with `cargo bench --bench proxy` on the 2-core
//! test machine, the relay to a unix upstream added ~8–14 µs to a round trip against ~13–20 µs
//! to a TCP one, and moved client messages faster (1 MiB: 108–121 % of a direct TCP client vs
//! 68–83 %). The TCP form remains for an app-server reached by URL (tests start one that way).

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

/// Connects to a unix socket, following its link (the session socket's client lives in
/// [`crate::ipc`]).
pub use crate::ipc::connect_unix;

/// The longest socket path `bind(2)` takes (`sun_path` holds 108 bytes on Linux, 104 on
/// macOS, with the terminating NUL).
pub const MAX_SOCKET_PATH: usize = 103;

/// A unix listener at `path`, which stays reachable by that name however deep it is.
///
/// A path too long for a socket address is served through a link: the socket itself is bound
/// in a private (0700, ours) directory (see [`private_socket_dir`]), and `path` links to it,
/// as the app-server does with its own socket. [`connect_unix`] follows the link.
pub struct BoundSocket {
    pub listener: tokio::net::UnixListener,
    pub files: SocketFiles,
}

/// Where a [`BoundSocket`] is; the socket bound elsewhere (if any) is removed on drop.
#[derive(Debug)]
pub struct SocketFiles {
    path: PathBuf,
    /// Where the socket really is, when that is not `path`.
    target: Option<PathBuf>,
}

impl SocketFiles {
    /// The socket itself: a path a client can connect to without following a link (short
    /// enough for a socket address).
    pub fn socket_path(&self) -> &Path {
        self.target.as_deref().unwrap_or(&self.path)
    }
}

impl Drop for SocketFiles {
    fn drop(&mut self) {
        if let Some(target) = &self.target {
            let _ = std::fs::remove_file(target);
        }
    }
}

impl BoundSocket {
    /// Binds at `path`, which must be in a directory of ours (whatever is at `path` is
    /// replaced).
    pub fn bind(path: &Path) -> Result<Self> {
        let _ = std::fs::remove_file(path);
        if path.as_os_str().len() <= MAX_SOCKET_PATH {
            let listener = tokio::net::UnixListener::bind(path)
                .wrap_err_with(|| format!("binding the socket {}", path.display()))?;
            owner_only(path);
            return Ok(Self {
                listener,
                files: SocketFiles {
                    path: path.to_owned(),
                    target: None,
                },
            });
        }
        let dir = private_socket_dir()?;
        sweep_dead_sockets(&dir);
        let target = dir.join(format!(
            "{}-{}.sock",
            std::process::id(),
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        ));
        let listener = tokio::net::UnixListener::bind(&target)
            .wrap_err_with(|| format!("binding the socket {}", target.display()))?;
        owner_only(&target);
        let files = SocketFiles {
            path: path.to_owned(),
            target: Some(target),
        };
        std::os::unix::fs::symlink(files.socket_path(), path).wrap_err_with(|| {
            format!(
                "linking {} to {}",
                path.display(),
                files.socket_path().display()
            )
        })?;
        Ok(Self { listener, files })
    }
}

/// Makes a socket just bound 0600. Not the boundary (it sits in a 0700 directory of ours, and
/// every peer's uid is checked), but the socket's mode follows the umask, and nobody else needs
/// to see it as connectable.
pub(crate) fn owner_only(socket: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    let _ = std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600));
}

/// Where sockets too deep for their own path are bound: `$XDG_RUNTIME_DIR/cs-tui` when the
/// login session has a runtime directory (a real directory of ours, 0700), else
/// `/tmp/cs-tui-<uid>`. Created without following links, and used only when it is ours (see
/// [`crate::paths::ensure_own_private_dir`]): in `/tmp`, a neighbour may have made it first.
pub fn private_socket_dir() -> Result<PathBuf> {
    let dir = socket_dir_for(std::env::var_os("XDG_RUNTIME_DIR"));
    crate::paths::ensure_own_private_dir(&dir)
        .wrap_err("no private directory for a socket whose own path is too long")?;
    Ok(dir)
}

/// Removes the sockets in the private socket directory whose session is gone (named
/// `<pid>-<id>.sock` by [`BoundSocket::bind`]; a session killed with SIGKILL cannot remove its
/// own, and its store, where the link to it was, may be gone too). A live pid keeps its
/// socket, whoever it is now.
fn sweep_dead_sockets(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.ends_with(".sock"))
            .and_then(|n| n.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<i32>().ok())
            .filter(|&pid| pid > 0)
        else {
            continue;
        };
        let gone = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None)
            == Err(nix::errno::Errno::ESRCH);
        if gone
            && entry
                .file_type()
                .is_ok_and(|t| std::os::unix::fs::FileTypeExt::is_socket(&t))
        {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// [`private_socket_dir`]'s choice, given `$XDG_RUNTIME_DIR`.
fn socket_dir_for(xdg_runtime_dir: Option<std::ffi::OsString>) -> PathBuf {
    xdg_runtime_dir
        .map(PathBuf::from)
        .filter(|dir| dir.is_absolute() && crate::paths::is_own_private_dir(dir))
        .map(|dir| dir.join("cs-tui"))
        .filter(|dir| dir.as_os_str().len() < MAX_SOCKET_PATH - 40)
        .unwrap_or_else(|| PathBuf::from(format!("/tmp/cs-tui-{}", nix::unistd::geteuid())))
}

/// Removes the socket a link in a dead session's directory points to (see [`BoundSocket`]).
pub fn remove_link_target(link: &Path) {
    let Ok(target) = std::fs::read_link(link) else {
        return;
    };
    let ours = [
        socket_dir_for(std::env::var_os("XDG_RUNTIME_DIR")),
        socket_dir_for(None),
    ];
    if target
        .parent()
        .is_some_and(|dir| ours.iter().any(|o| o == dir))
    {
        let _ = std::fs::remove_file(target);
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileTypeExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn deep_sockets_go_to_the_xdg_runtime_dir_when_it_is_ours_and_private() {
        use std::os::unix::fs::PermissionsExt;
        let fallback = PathBuf::from(format!("/tmp/cs-tui-{}", nix::unistd::geteuid()));
        assert_eq!(socket_dir_for(None), fallback);
        let xdg = tempfile::tempdir().unwrap();
        std::fs::set_permissions(xdg.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        assert_eq!(
            socket_dir_for(Some(xdg.path().into())),
            xdg.path().join("cs-tui")
        );
        // One others may enter, a relative one, or a link are not trusted.
        std::fs::set_permissions(xdg.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(socket_dir_for(Some(xdg.path().into())), fallback);
        assert_eq!(socket_dir_for(Some("run/user".into())), fallback);
        let private = xdg.path().join("private");
        std::fs::create_dir(&private).unwrap();
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
        let link = xdg.path().join("link");
        std::os::unix::fs::symlink(&private, &link).unwrap();
        assert_eq!(socket_dir_for(Some(link.into())), fallback);
    }

    #[tokio::test]
    async fn a_socket_too_deep_for_an_address_is_bound_elsewhere_and_linked() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("d".repeat(60)).join("e".repeat(60));
        std::fs::create_dir_all(&deep).unwrap();
        let path = deep.join("control.sock");
        assert!(path.as_os_str().len() > MAX_SOCKET_PATH);

        let socket = BoundSocket::bind(&path).unwrap();
        let target = std::fs::read_link(&path).expect("a link at the deep path");
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::symlink_metadata(&target)
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_eq!(
            target.parent(),
            Some(private_socket_dir().unwrap().as_path())
        );
        let server = tokio::spawn(async move {
            let (mut stream, _) = socket.listener.accept().await.unwrap();
            stream.write_all(b"hi").await.unwrap();
            socket
        });
        let mut client = connect_unix(&path).await.unwrap();
        let mut got = [0u8; 2];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hi");
        drop(server.await.unwrap());
        assert!(!target.exists(), "the socket goes with its listener");

        // A short path is bound where it is.
        let short = dir.path().join("s.sock");
        let socket = BoundSocket::bind(&short).unwrap();
        let meta = std::fs::symlink_metadata(&short).unwrap();
        assert!(meta.file_type().is_socket());
        // Both kinds are the owner's alone, whatever the umask.
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        drop(socket);
    }

    #[test]
    fn sockets_of_dead_sessions_are_swept_and_others_stay() {
        let dir = tempfile::tempdir().unwrap();
        // A pid that is surely gone: a child that has exited and been reaped.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let bind = |name: String| {
            let path = dir.path().join(name);
            drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
            path
        };
        let stale = bind(format!("{dead}-0123456789ab.sock"));
        let alive = bind(format!("{}-0123456789ab.sock", std::process::id()));
        let foreign = bind("other.sock".to_owned());
        let file = dir.path().join(format!("{dead}-notasocket.sock"));
        std::fs::write(&file, "x").unwrap();
        sweep_dead_sockets(dir.path());
        assert!(!stale.exists(), "a dead session's socket stays");
        assert!(alive.exists() && foreign.exists() && file.exists());
    }
}
