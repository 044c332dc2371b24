//! A unix socket per running session, so `cs-tui switch NAME` in another terminal can ask the
//! session to switch. The socket lives in the session's 0700 runtime directory (or is linked
//! from there, when that path is too long for a socket). This is the serving side; the client
//! (and the answer's wire type) is [`crate::ipc`].

use std::path::Path;
use std::time::Duration;

use color_eyre::eyre::{Result, WrapErr, eyre};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot};

pub(crate) use crate::ipc::{CommandAnswer, SOCKET_NAME};
use crate::proxy::core::CoreMsg;
use crate::proxy::events::ProxyCommand;
use crate::proxy::socket::BoundSocket;

/// What a client of the session socket may do: it must be our own user, and send one line of
/// at most `max_line` bytes within `read_timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IpcLimits {
    /// The only uid served (ours).
    pub uid: u32,
    pub max_line: usize,
    pub read_timeout: Duration,
}

impl Default for IpcLimits {
    fn default() -> Self {
        Self {
            uid: nix::unistd::geteuid().as_raw(),
            // A command is a few dozen bytes.
            max_line: 16 << 10,
            read_timeout: Duration::from_secs(5),
        }
    }
}

/// Serves commands on `<runtime_dir>/control.sock` until the task is dropped.
pub(crate) fn listen(
    runtime_dir: &Path,
    core: mpsc::UnboundedSender<CoreMsg>,
) -> Result<tokio::task::JoinHandle<()>> {
    listen_with(&runtime_dir.join(SOCKET_NAME), core, IpcLimits::default())
}

/// Serves commands on the socket at `path` until the task is dropped.
pub(crate) fn listen_with(
    path: &Path,
    core: mpsc::UnboundedSender<CoreMsg>,
    limits: IpcLimits,
) -> Result<tokio::task::JoinHandle<()>> {
    let socket = BoundSocket::bind(path).wrap_err("opening the session socket")?;
    Ok(tokio::spawn(async move {
        // Owned by the task: the socket goes when the task is aborted.
        loop {
            let stream = match socket.listener.accept().await {
                Ok((stream, _)) => stream,
                Err(err) => {
                    // Out of descriptors, typically: wait for some to be freed.
                    tracing::warn!(%err, "accepting a session socket client failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let core = core.clone();
            tokio::spawn(async move {
                if let Err(err) = serve_one(stream, core, limits).await {
                    tracing::debug!("session socket client: {err:#}");
                }
            });
        }
    }))
}

async fn serve_one(
    stream: UnixStream,
    core: mpsc::UnboundedSender<CoreMsg>,
    limits: IpcLimits,
) -> Result<()> {
    let peer = stream.peer_cred()?.uid();
    if peer != limits.uid {
        tracing::warn!(peer, "refused a session socket client of another user");
        return Ok(());
    }
    let (mut read, mut write) = stream.into_split();
    let mut line = Vec::new();
    let reader = BufReader::new((&mut read).take(limits.max_line as u64 + 1));
    let got = tokio::time::timeout(limits.read_timeout, reader_read_line(reader, &mut line)).await;
    let answer = match got {
        Err(_) => refusal(format!(
            "no command within {} s",
            limits.read_timeout.as_secs_f32()
        )),
        Ok(Err(err)) => return Err(err.into()),
        Ok(Ok(())) if line.len() > limits.max_line => {
            refusal(format!("a command is at most {} bytes", limits.max_line))
        }
        Ok(Ok(())) => match serde_json::from_slice::<ProxyCommand>(&line) {
            Ok(command) => {
                let (tx, rx) = oneshot::channel();
                let _ = core.send(CoreMsg::Command(command, Some(tx)));
                match tokio::time::timeout(Duration::from_secs(10), rx).await {
                    Ok(Ok(Ok(message))) => CommandAnswer::ok(message),
                    Ok(Ok(Err(message))) => refusal(message),
                    _ => refusal("the session did not answer".to_owned()),
                }
            }
            Err(err) => refusal(format!("not a command: {err}")),
        },
    };
    let mut out = serde_json::to_string(&answer)?;
    out.push('\n');
    let unread = line.len() > limits.max_line;
    tokio::time::timeout(limits.read_timeout, async {
        write.write_all(out.as_bytes()).await?;
        if unread {
            // Closing with unread bytes would reset the connection and lose the answer: end
            // ours, and discard the rest (for as long as a line may take).
            write.shutdown().await?;
            tokio::io::copy(&mut read, &mut tokio::io::sink()).await?;
        }
        Ok::<_, std::io::Error>(())
    })
    .await
    .map_err(|_| eyre!("the client did not take its answer in time"))??;
    Ok(())
}

async fn reader_read_line<R: tokio::io::AsyncBufRead + Unpin>(
    mut reader: R,
    line: &mut Vec<u8>,
) -> std::io::Result<()> {
    reader.read_until(b'\n', line).await.map(drop)
}

fn refusal(message: String) -> CommandAnswer {
    CommandAnswer::refusal(message)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::ipc::{connect_unix, send};

    /// A session socket whose core answers every command with "done".
    fn serve(limits: IpcLimits) -> (tempfile::TempDir, PathBuf, mpsc::UnboundedReceiver<String>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(SOCKET_NAME);
        let (core, mut inbox) = mpsc::unbounded_channel();
        let (seen_tx, seen) = mpsc::unbounded_channel();
        listen_with(&path, core, limits).unwrap();
        tokio::spawn(async move {
            while let Some(message) = inbox.recv().await {
                if let CoreMsg::Command(command, Some(reply)) = message {
                    let _ = seen_tx.send(format!("{command:?}"));
                    let _ = reply.send(Ok("done".to_owned()));
                }
            }
        });
        (dir, path, seen)
    }

    async fn exchange(path: &Path, bytes: &[u8]) -> String {
        let mut stream = connect_unix(path).await.unwrap();
        // The peer may close before reading everything: that is its answer.
        let _ = stream.write_all(bytes).await;
        let mut answer = String::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut answer))
            .await
            .expect("the session answers or closes in time");
        answer
    }

    #[tokio::test]
    async fn a_command_is_answered() {
        let (_dir, path, mut seen) = serve(IpcLimits::default());
        let answer = send(&path, &ProxyCommand::SwitchBest).await.unwrap();
        assert_eq!(answer, CommandAnswer::ok("done".into()));
        assert_eq!(seen.recv().await.unwrap(), "SwitchBest");
    }

    #[tokio::test]
    async fn a_line_over_the_cap_is_refused_unread() {
        let limits = IpcLimits {
            max_line: 64,
            ..IpcLimits::default()
        };
        let (_dir, path, mut seen) = serve(limits);
        let answer = exchange(&path, &vec![b'{'; 1 << 20]).await;
        assert!(answer.contains("a command is at most 64 bytes"), "{answer}");
        // Even a valid command is too long once padded past the cap.
        let padded = format!("{{\"command\":\"switch_best\"{}}}\n", " ".repeat(80));
        let answer = exchange(&path, padded.as_bytes()).await;
        assert!(answer.contains("at most 64 bytes"), "{answer}");
        assert!(seen.try_recv().is_err(), "no command reached the session");
    }

    #[tokio::test]
    async fn a_silent_client_is_timed_out() {
        let limits = IpcLimits {
            read_timeout: Duration::from_millis(200),
            ..IpcLimits::default()
        };
        let (_dir, path, mut seen) = serve(limits);
        let answer = exchange(&path, b"{\"command\":").await;
        assert!(answer.contains("no command within"), "{answer}");
        assert!(seen.try_recv().is_err());
    }

    #[tokio::test]
    async fn a_client_of_another_user_gets_nothing() {
        let limits = IpcLimits {
            uid: nix::unistd::geteuid().as_raw() + 1,
            ..IpcLimits::default()
        };
        let (_dir, path, mut seen) = serve(limits);
        let line = serde_json::to_string(&ProxyCommand::SwitchBest).unwrap() + "\n";
        assert_eq!(exchange(&path, line.as_bytes()).await, "");
        assert!(seen.try_recv().is_err());
    }
}
