//! The client side of a running session's control socket, a leaf module: `cs-tui switch`,
//! the `accounts` commands and `accounts reset` send a session one command as a JSON line and
//! read its [`CommandAnswer`]. The session serves the socket (`proxy::ipc`), with the same
//! [`SOCKET_NAME`] and answer type; the commands themselves are the proxy's to define, so any
//! serializable command goes.
//!
//! The socket lives in the session's 0700 runtime directory under `<store>/runtime/` (or is
//! linked from there, when that path is too long for a socket).

use std::path::{Path, PathBuf};
use std::time::Duration;

use color_eyre::eyre::{Result, WrapErr, eyre};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

/// The session socket's name in a session's runtime directory.
pub const SOCKET_NAME: &str = "control.sock";

/// The answer to a command.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CommandAnswer {
    pub ok: bool,
    pub message: String,
    /// What a question returns (a session's status, what it knows of the pool); absent for
    /// plain commands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
}

impl CommandAnswer {
    pub fn ok(message: String) -> Self {
        Self {
            ok: true,
            message,
            data: None,
        }
    }

    pub fn refusal(message: String) -> Self {
        Self {
            ok: false,
            message,
            data: None,
        }
    }
}

/// How long one exchange with a session may take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    /// From the command sent to the whole answer read.
    pub answer: Duration,
}

impl Timeouts {
    /// For a person's command: a session may take a while to act on it (a switch waits for
    /// the turn boundary only after answering, but a busy core answers late).
    pub const COMMAND: Self = Self {
        connect: Duration::from_secs(2),
        answer: Duration::from_secs(15),
    };
    /// For the pool's traffic between sessions: a peer that cannot answer this fast is
    /// skipped (a stopped session must not hold the others up).
    pub const PEER: Self = Self {
        connect: Duration::from_millis(200),
        answer: Duration::from_millis(500),
    };
}

/// The longest answer read: a status or a pool snapshot is a few KiB.
const MAX_ANSWER: u64 = 256 << 10;

/// Connects to a unix socket. The app-server's PATH is a symbolic link to the real socket;
/// the link's target is connected to directly, since a socket address holds at most ~107
/// bytes and a store directory can be deeper than that.
pub async fn connect_unix(path: &Path) -> std::io::Result<UnixStream> {
    let target = match std::fs::read_link(path) {
        Ok(target) if target.is_absolute() => target,
        Ok(target) => path.parent().unwrap_or(Path::new("/")).join(target),
        Err(_) => path.to_owned(),
    };
    UnixStream::connect(target).await
}

/// The session sockets under `<store>/runtime/`.
pub fn session_sockets(store_dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(store_dir.join("runtime")) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .map(|e| e.path().join(SOCKET_NAME))
        .filter(|p| p.exists())
        .collect()
}

/// Sends a command to one session socket and returns its answer.
pub async fn send(socket: &Path, command: &impl Serialize) -> Result<CommandAnswer> {
    send_with(socket, command, Timeouts::COMMAND).await
}

/// Sends a command to one session socket and returns its answer, within `timeouts`.
pub async fn send_with(
    socket: &Path,
    command: &impl Serialize,
    timeouts: Timeouts,
) -> Result<CommandAnswer> {
    let stream = tokio::time::timeout(timeouts.connect, connect_unix(socket))
        .await
        .map_err(|_| eyre!("timed out connecting to {}", socket.display()))?
        .wrap_err_with(|| format!("connecting to {}", socket.display()))?;
    let (read, mut write) = stream.into_split();
    let mut line = serde_json::to_string(command)?;
    line.push('\n');
    let exchange = async {
        write.write_all(line.as_bytes()).await?;
        let mut reply = String::new();
        BufReader::new(read.take(MAX_ANSWER))
            .read_line(&mut reply)
            .await?;
        Ok::<_, std::io::Error>(reply)
    };
    let reply = tokio::time::timeout(timeouts.answer, exchange)
        .await
        .map_err(|_| eyre!("the session did not answer in time"))??;
    serde_json::from_str(&reply).wrap_err("reading the session's answer")
}

/// Sends a command to every running session, best effort (a stale socket or a busy session
/// is skipped). For commands that run outside any session.
pub async fn announce(store_dir: &Path, command: &impl Serialize) {
    for socket in session_sockets(store_dir) {
        let sent = tokio::time::timeout(Duration::from_secs(2), send(&socket, command)).await;
        match sent {
            Ok(Ok(_)) => tracing::debug!(socket = %socket.display(), "told a session"),
            _ => tracing::debug!(socket = %socket.display(), "a session did not hear of it"),
        }
    }
}
