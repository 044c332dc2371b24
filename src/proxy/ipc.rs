//! A unix socket per running session, so `cs-tui switch NAME` in another terminal can ask the
//! session to switch. The socket lives in the session's 0700 runtime directory (or is linked
//! from there, when that path is too long for a socket).

use std::path::{Path, PathBuf};
use std::time::Duration;

use color_eyre::eyre::{Result, WrapErr, eyre};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot};

use crate::proxy::core::CoreMsg;
use crate::proxy::events::ProxyCommand;
use crate::proxy::socket::{BoundSocket, connect_unix};

pub const SOCKET_NAME: &str = "control.sock";

/// The answer to a command.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CommandAnswer {
    pub ok: bool,
    pub message: String,
}

/// Serves commands on `<runtime_dir>/control.sock` until the task is dropped.
pub fn listen(
    runtime_dir: &Path,
    core: mpsc::UnboundedSender<CoreMsg>,
) -> Result<tokio::task::JoinHandle<()>> {
    let path = runtime_dir.join(SOCKET_NAME);
    let socket = BoundSocket::bind(&path).wrap_err("opening the session socket")?;
    Ok(tokio::spawn(async move {
        // Owned by the task: the socket goes when the task is aborted.
        while let Ok((stream, _)) = socket.listener.accept().await {
            let core = core.clone();
            tokio::spawn(async move {
                if let Err(err) = serve_one(stream, core).await {
                    tracing::debug!("session socket client: {err:#}");
                }
            });
        }
    }))
}

async fn serve_one(stream: UnixStream, core: mpsc::UnboundedSender<CoreMsg>) -> Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    BufReader::new(read).read_line(&mut line).await?;
    let answer = match serde_json::from_str::<ProxyCommand>(&line) {
        Ok(command) => {
            let (tx, rx) = oneshot::channel();
            let _ = core.send(CoreMsg::Command(command, Some(tx)));
            match tokio::time::timeout(Duration::from_secs(10), rx).await {
                Ok(Ok(Ok(message))) => CommandAnswer { ok: true, message },
                Ok(Ok(Err(message))) => CommandAnswer { ok: false, message },
                _ => CommandAnswer {
                    ok: false,
                    message: "the session did not answer".to_owned(),
                },
            }
        }
        Err(err) => CommandAnswer {
            ok: false,
            message: format!("not a command: {err}"),
        },
    };
    let mut out = serde_json::to_string(&answer)?;
    out.push('\n');
    write.write_all(out.as_bytes()).await?;
    Ok(())
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
pub async fn send(socket: &Path, command: &ProxyCommand) -> Result<CommandAnswer> {
    let stream = tokio::time::timeout(Duration::from_secs(2), connect_unix(socket))
        .await
        .map_err(|_| eyre!("timed out connecting to {}", socket.display()))?
        .wrap_err_with(|| format!("connecting to {}", socket.display()))?;
    let (read, mut write) = stream.into_split();
    let mut line = serde_json::to_string(command)?;
    line.push('\n');
    write.write_all(line.as_bytes()).await?;
    let mut reply = String::new();
    tokio::time::timeout(
        Duration::from_secs(15),
        BufReader::new(read).read_line(&mut reply),
    )
    .await
    .map_err(|_| eyre!("the session did not answer in time"))??;
    serde_json::from_str(&reply).wrap_err("reading the session's answer")
}

/// Tells every running session (best effort: a stale socket or a busy session is skipped)
/// that the stored accounts changed. For the `accounts` commands, which run outside any.
pub fn announce_accounts_changed(store_dir: &Path) {
    announce(store_dir, &ProxyCommand::AccountsChanged);
}

/// Sends a command to every running session, best effort (a stale socket or a busy session
/// is skipped). For commands that run outside any session.
pub fn announce(store_dir: &Path, command: &ProxyCommand) {
    let sockets = session_sockets(store_dir);
    if sockets.is_empty() {
        return;
    }
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    runtime.block_on(async {
        for socket in sockets {
            let sent = tokio::time::timeout(Duration::from_secs(2), send(&socket, command)).await;
            match sent {
                Ok(Ok(_)) => tracing::debug!(socket = %socket.display(), "told a session"),
                _ => tracing::debug!(socket = %socket.display(), "a session did not hear of it"),
            }
        }
    });
}
