//! A unix socket per running session, so `cs-tui switch NAME` in another terminal can ask the
//! session to switch, and so the pool's other sessions can tell it what they learned and ask
//! who it is (`proxy::pool`). The socket lives in the session's 0700 runtime directory (or is linked
//! from there, when that path is too long for a socket). This is the serving side; the client
//! (and the answer's wire type) is [`crate::ipc`].

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use color_eyre::eyre::{Result, WrapErr, eyre};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot};

pub(crate) use crate::ipc::{CommandAnswer, SOCKET_NAME};
use crate::proxy::core::{CoreMsg, Input};
use crate::proxy::events::ProxyCommand;
use crate::proxy::pool::hub::{NoteFrom, PeerNote};
use crate::proxy::pool::wire::{POOL_WIRE_VERSION, PeerRequest, PoolSnapshot};
use crate::proxy::pool::{PeerMessage, StatusCell};
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

/// What the control socket answers with: the core (commands, the peers' account facts), the
/// session's status, and the pool hub (the peers' session facts).
#[derive(Clone, Debug)]
pub(crate) struct Serving {
    pub core: mpsc::UnboundedSender<CoreMsg>,
    /// Set once the core runs: before, a pool snapshot is empty (commands wait in its inbox).
    pub core_running: Arc<AtomicBool>,
    pub status: StatusCell,
    /// The session's id (a fact "from" it is refused).
    pub id: String,
    /// The hub, or `None` when the pool is off.
    pub hub: Option<mpsc::UnboundedSender<NoteFrom>>,
}

/// How long a question to the core may take before the asker is told it did not answer.
const CORE_ANSWER: Duration = Duration::from_secs(10);

/// Serves commands on `<runtime_dir>/control.sock` until the task is dropped.
pub(crate) fn listen(runtime_dir: &Path, serving: Serving) -> Result<tokio::task::JoinHandle<()>> {
    listen_with(
        &runtime_dir.join(SOCKET_NAME),
        serving,
        IpcLimits::default(),
    )
}

/// Serves commands on the socket at `path` until the task is dropped.
pub(crate) fn listen_with(
    path: &Path,
    serving: Serving,
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
            let serving = serving.clone();
            tokio::spawn(async move {
                if let Err(err) = serve_one(stream, serving, limits).await {
                    tracing::debug!("session socket client: {err:#}");
                }
            });
        }
    }))
}

async fn serve_one(stream: UnixStream, serving: Serving, limits: IpcLimits) -> Result<()> {
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
        Ok(Ok(())) => answer_line(&line, &serving).await,
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

/// Answers one line: a [`ProxyCommand`] if it is one, else a [`PeerRequest`].
async fn answer_line(line: &[u8], serving: &Serving) -> CommandAnswer {
    let command_err = match serde_json::from_slice::<ProxyCommand>(line) {
        Ok(command) => {
            let (tx, rx) = oneshot::channel();
            let _ = serving.core.send(CoreMsg::Command(command, Some(tx)));
            return match tokio::time::timeout(CORE_ANSWER, rx).await {
                Ok(Ok(Ok(message))) => CommandAnswer::ok(message),
                Ok(Ok(Err(message))) => refusal(message),
                _ => refusal("the session did not answer".to_owned()),
            };
        }
        Err(err) => err,
    };
    match serde_json::from_slice::<PeerRequest>(line) {
        Ok(request) => answer_peer(request, serving).await,
        Err(_) => match other_pool_version(line) {
            Some(v) => refusal(wrong_version(v)),
            None => refusal(format!("not a command: {command_err}")),
        },
    }
}

/// The version of a pool message this session cannot read, if it is one.
fn other_pool_version(line: &[u8]) -> Option<u64> {
    #[derive(serde::Deserialize)]
    struct Probe {
        command: String,
        v: u64,
    }
    serde_json::from_slice::<Probe>(line)
        .ok()
        .filter(|p| p.command == "pool" && p.v != u64::from(POOL_WIRE_VERSION))
        .map(|p| p.v)
}

fn wrong_version(v: u64) -> String {
    format!(
        "pool message version {v} is not {POOL_WIRE_VERSION}, the one this session (cs-tui {}) speaks: restart the older sessions",
        env!("CARGO_PKG_VERSION")
    )
}

async fn answer_peer(request: PeerRequest, serving: &Serving) -> CommandAnswer {
    match request {
        PeerRequest::Pool(message) => take_fact(*message, serving),
        PeerRequest::SessionStatus => with_data(&serving.status.get()),
        PeerRequest::PoolSnapshot => {
            if !serving.core_running.load(Ordering::SeqCst) {
                return with_data(&PoolSnapshot::default());
            }
            let (tx, rx) = oneshot::channel();
            let _ = serving.core.send(CoreMsg::PoolSnapshot(tx));
            match tokio::time::timeout(CORE_ANSWER, rx).await {
                Ok(Ok(snapshot)) => with_data(&snapshot),
                _ => refusal("the session did not answer".to_owned()),
            }
        }
    }
}

/// A fact from a peer: account facts go to the core, session facts to the hub. Answered at
/// once (queued, not acted on).
fn take_fact(message: PeerMessage, serving: &Serving) -> CommandAnswer {
    if message.v != POOL_WIRE_VERSION {
        return refusal(wrong_version(message.v.into()));
    }
    if message.from == serving.id {
        return refusal("a pool message from this session itself".to_owned());
    }
    let Some(hub) = &serving.hub else {
        return refusal("the pool is off in this session (CS_TUI_POOL=off)".to_owned());
    };
    match PeerNote::of(&message.fact) {
        Some(note) => {
            let _ = hub.send((message.from, note));
        }
        None => {
            let _ = serving.core.send(Input::PeerFact(message).into());
        }
    }
    CommandAnswer::ok(String::new())
}

fn with_data(data: &impl serde::Serialize) -> CommandAnswer {
    match serde_json::to_value(data) {
        Ok(data) => CommandAnswer {
            ok: true,
            message: String::new(),
            data: Some(data),
        },
        Err(err) => refusal(format!("could not write the answer: {err}")),
    }
}

fn refusal(message: String) -> CommandAnswer {
    CommandAnswer::refusal(message)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::ipc::{connect_unix, send};

    /// A session socket whose core answers every command with "done", with what reached the
    /// core (`seen`) and the hub (`notes`).
    struct Served {
        _dir: tempfile::TempDir,
        path: PathBuf,
        seen: mpsc::UnboundedReceiver<String>,
        notes: mpsc::UnboundedReceiver<NoteFrom>,
        core_running: Arc<AtomicBool>,
    }

    const OUR_ID: &str = "4242-ours";

    fn serve(limits: IpcLimits) -> (tempfile::TempDir, PathBuf, mpsc::UnboundedReceiver<String>) {
        let served = serve_pool(limits, true);
        (served._dir, served.path, served.seen)
    }

    fn serve_pool(limits: IpcLimits, pool: bool) -> Served {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(SOCKET_NAME);
        let (core, mut inbox) = mpsc::unbounded_channel();
        let (seen_tx, seen) = mpsc::unbounded_channel();
        let (notes_tx, notes) = mpsc::unbounded_channel();
        let core_running = Arc::new(AtomicBool::new(false));
        let status = StatusCell::new(crate::proxy::pool::hub::starting_status(
            &dir.path().join(OUR_ID),
            crate::proxy::pool::SessionKind::Serve,
            PathBuf::from("/src/api"),
            Some("ws://127.0.0.1:8765".into()),
        ));
        let serving = Serving {
            core,
            core_running: core_running.clone(),
            status,
            id: OUR_ID.into(),
            hub: pool.then_some(notes_tx),
        };
        listen_with(&path, serving, limits).unwrap();
        tokio::spawn(async move {
            while let Some(message) = inbox.recv().await {
                match message {
                    CoreMsg::Command(command, Some(reply)) => {
                        let _ = seen_tx.send(format!("{command:?}"));
                        let _ = reply.send(Ok("done".to_owned()));
                    }
                    CoreMsg::Input(input) => {
                        if let Input::PeerFact(message) = *input {
                            let _ = seen_tx.send(format!("fact from {}", message.from));
                        }
                    }
                    CoreMsg::PoolSnapshot(reply) => {
                        let _ = seen_tx.send("snapshot".into());
                        let _ = reply.send(PoolSnapshot {
                            accounts: vec![crate::proxy::pool::wire::KnownLimits {
                                account: "a1".into(),
                                quota: Default::default(),
                                families: Vec::new(),
                                read_at: None,
                                heard_at: None,
                                limit_hit: true,
                            }],
                        });
                    }
                    _ => {}
                }
            }
        });
        Served {
            _dir: dir,
            path,
            seen,
            notes,
            core_running,
        }
    }

    fn fact(from: &str, fact: crate::proxy::pool::PoolFact) -> PeerRequest {
        PeerRequest::Pool(Box::new(PeerMessage {
            v: POOL_WIRE_VERSION,
            from: from.into(),
            at: chrono::Utc::now(),
            fact,
        }))
    }

    fn limit_hit() -> crate::proxy::pool::PoolFact {
        crate::proxy::pool::PoolFact::LimitHit {
            account: "a1".into(),
        }
    }

    #[tokio::test]
    async fn account_facts_go_to_the_core_and_session_facts_to_the_hub() {
        let mut served = serve_pool(IpcLimits::default(), true);
        let answer = send(&served.path, &fact("77-peer", limit_hit()))
            .await
            .unwrap();
        assert!(answer.ok, "{answer:?}");
        assert_eq!(served.seen.recv().await.unwrap(), "fact from 77-peer");
        for (session_fact, note) in [
            (
                crate::proxy::pool::PoolFact::SessionChanged,
                PeerNote::Changed,
            ),
            (
                crate::proxy::pool::PoolFact::SessionEnded,
                PeerNote::Changed,
            ),
            (
                crate::proxy::pool::PoolFact::PollerReleased,
                PeerNote::PollerReleased,
            ),
        ] {
            let answer = send(&served.path, &fact("77-peer", session_fact))
                .await
                .unwrap();
            assert!(answer.ok, "{answer:?}");
            assert_eq!(
                served.notes.recv().await.unwrap(),
                ("77-peer".to_owned(), note)
            );
        }
        assert!(
            served.seen.try_recv().is_err(),
            "session facts skip the core"
        );
    }

    #[tokio::test]
    async fn a_fact_of_another_version_or_from_ourselves_is_refused() {
        let mut served = serve_pool(IpcLimits::default(), true);
        let line = r#"{"command":"pool","v":2,"from":"77-peer","at":"2026-12-03T10:00:00Z","fact":{"kind":"limit_hit","account":"a1"}}"#;
        let answer = exchange(&served.path, format!("{line}\n").as_bytes()).await;
        let answer: CommandAnswer = serde_json::from_str(&answer).unwrap();
        assert!(!answer.ok);
        assert!(
            answer.message.contains("version 2 is not 1"),
            "{}",
            answer.message
        );
        // A newer version may also carry facts this one cannot read: still the version error.
        let line = r#"{"command":"pool","v":3,"from":"77-peer","at":"2026-12-03T10:00:00Z","fact":{"kind":"teleported"}}"#;
        let answer = exchange(&served.path, format!("{line}\n").as_bytes()).await;
        assert!(answer.contains("version 3 is not 1"), "{answer}");
        let answer = send(&served.path, &fact(OUR_ID, limit_hit()))
            .await
            .unwrap();
        assert!(!answer.ok);
        assert!(
            answer.message.contains("this session itself"),
            "{}",
            answer.message
        );
        // Garbage is still "not a command", naming the command's error.
        let answer = exchange(&served.path, b"{\"command\":\"dance\"}\n").await;
        assert!(answer.contains("not a command"), "{answer}");
        assert!(served.seen.try_recv().is_err());
        assert!(served.notes.try_recv().is_err());
    }

    #[tokio::test]
    async fn a_peer_of_another_user_gets_nothing_and_tells_nothing() {
        let limits = IpcLimits {
            uid: nix::unistd::geteuid().as_raw() + 1,
            ..IpcLimits::default()
        };
        let mut served = serve_pool(limits, true);
        let line = serde_json::to_string(&fact("77-peer", limit_hit())).unwrap() + "\n";
        assert_eq!(exchange(&served.path, line.as_bytes()).await, "");
        let line = serde_json::to_string(&PeerRequest::SessionStatus).unwrap() + "\n";
        assert_eq!(exchange(&served.path, line.as_bytes()).await, "");
        assert!(served.seen.try_recv().is_err());
        assert!(served.notes.try_recv().is_err());
    }

    #[tokio::test]
    async fn session_status_is_answered_while_the_session_starts() {
        let mut served = serve_pool(IpcLimits::default(), true);
        let answer = send(&served.path, &PeerRequest::SessionStatus)
            .await
            .unwrap();
        assert!(answer.ok);
        let status: crate::proxy::pool::SessionStatus =
            serde_json::from_value(answer.data.unwrap()).unwrap();
        assert_eq!(status.state, crate::proxy::pool::SessionState::Starting);
        assert_eq!(status.id, OUR_ID);
        assert_eq!(status.pid, std::process::id());
        assert_eq!(status.listen.as_deref(), Some("ws://127.0.0.1:8765"));
        // The core does not run yet: the snapshot is empty, and the core is not asked.
        let answer = send(&served.path, &PeerRequest::PoolSnapshot)
            .await
            .unwrap();
        assert_eq!(answer.data.unwrap(), serde_json::json!({"accounts": []}));
        assert!(served.seen.try_recv().is_err());
        served.core_running.store(true, Ordering::SeqCst);
        let answer = send(&served.path, &PeerRequest::PoolSnapshot)
            .await
            .unwrap();
        let snapshot: PoolSnapshot = serde_json::from_value(answer.data.unwrap()).unwrap();
        assert_eq!(snapshot.accounts.len(), 1);
        assert!(snapshot.accounts[0].limit_hit);
        assert_eq!(served.seen.recv().await.unwrap(), "snapshot");
    }

    #[tokio::test]
    async fn with_the_pool_off_facts_are_refused_but_the_status_is_answered() {
        let mut served = serve_pool(IpcLimits::default(), false);
        let answer = send(&served.path, &fact("77-peer", limit_hit()))
            .await
            .unwrap();
        assert!(!answer.ok);
        assert!(
            answer.message.contains("CS_TUI_POOL=off"),
            "{}",
            answer.message
        );
        let answer = send(&served.path, &PeerRequest::SessionStatus)
            .await
            .unwrap();
        assert!(answer.ok && answer.data.is_some());
        assert!(served.seen.try_recv().is_err());
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
