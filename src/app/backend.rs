//! The seam between the dashboard and the switching proxy.
//!
//! The dashboard needs four things from whatever sits in front of Codex: where Codex connects
//! (`--remote` URL and the token's variable), a stream of [`ProxyEvent`]s, a way to send
//! [`ProxyCommand`]s, and the stored accounts to list. [`start_backend`] is the one place that
//! builds them.

use std::any::Any;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use color_eyre::eyre::{Result, eyre};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::accounts::{Account, Store};
use crate::app::launcher::RemoteTarget;
use crate::proxy::events::{ProxyCommand, ProxyEvent};
use crate::proxy::session::{ProxyListener, Session, SessionOptions};
use crate::proxy::store_directory::StoreDirectory;
use crate::state::dashboard::{AccountView, StoredState};

/// Set to `1` for the no-proxy mode: `codex` alone in the pane (no quota, no switching).
/// A development path: it lets the pane be used and tested on its own.
pub(crate) const NO_PROXY_ENV: &str = "CS_TUI_NO_PROXY";

/// With [`NO_PROXY_ENV`]: a file of [`ProxyEvent`]s as JSON lines, followed like `tail -f` and
/// fed to the dashboard as if the proxy sent them. For development and the dashboard's
/// end-to-end tests.
pub(crate) const DEV_EVENTS_ENV: &str = "CS_TUI_DEV_EVENTS";

/// With [`DEV_EVENTS_ENV`]: a file the dashboard's [`ProxyCommand`]s are appended to, as JSON
/// lines.
pub(crate) const DEV_COMMANDS_ENV: &str = "CS_TUI_DEV_COMMANDS";

/// What stands in front of Codex.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BackendKind {
    /// The switching proxy.
    Proxy,
    /// No proxy: Codex alone.
    NoProxy,
    /// No proxy, with proxy events replayed from a file ([`DEV_EVENTS_ENV`]).
    Replay,
}

/// Where Codex connects: the proxy's unix socket in the session's 0700 runtime directory. No
/// other user can reach it (and the relay checks that the peer is us), so there is no token:
/// `codex --remote unix://` cannot send one.
#[derive(Debug)]
pub(crate) struct RemoteEndpoint {
    /// `unix://PATH` of the proxy.
    pub url: String,
}

impl RemoteEndpoint {
    pub(crate) fn target(&self) -> RemoteTarget {
        RemoteTarget {
            url: self.url.clone(),
            token_env: None,
        }
    }
}

/// Everything the dashboard gets from the proxy.
pub(crate) struct SessionBackend {
    pub kind: BackendKind,
    /// `None`: no proxy, Codex without `--remote` (the [`NO_PROXY_ENV`] path).
    pub remote: Option<RemoteEndpoint>,
    /// What the proxy did or saw. A closed channel is fine (nothing more will come).
    pub events: mpsc::UnboundedReceiver<ProxyEvent>,
    /// What the user asks of the proxy (hotkeys, picker).
    pub commands: mpsc::UnboundedSender<ProxyCommand>,
    /// The stored accounts, for the panel and the picker.
    pub accounts: Vec<AccountView>,
    /// The store's last switches (every session's), from the switch history file.
    pub recent_switches: Vec<crate::proxy::history::SwitchRecord>,
    /// Kept alive until Codex has exited, then dropped: put the proxy's handle here so its
    /// `Drop` stops the app-server.
    pub guard: Option<Box<dyn Any + Send>>,
    /// The proxy starts while Codex does; this says once whether it came up. An error ends
    /// the session with that error (Codex could never have connected).
    pub started: Option<oneshot::Receiver<Result<()>>>,
    /// The session's share in the pool's poller election, given up while cs-tui is stopped.
    pub(crate) pool: crate::proxy::pool::hub::PoolControlSlot,
    /// Earlier sessions' usage samples (the usage store), which start the burn-down.
    pub(crate) usage_samples: Vec<crate::proxy::usage_store::StoredSample>,
}

impl SessionBackend {
    /// No proxy: events never come, commands go nowhere.
    pub(crate) fn no_proxy() -> Self {
        let (_, events) = mpsc::unbounded_channel();
        let (commands, _) = mpsc::unbounded_channel();
        Self {
            kind: BackendKind::NoProxy,
            remote: None,
            events,
            commands,
            accounts: Vec::new(),
            recent_switches: Vec::new(),
            guard: None,
            started: None,
            pool: Default::default(),
            usage_samples: Vec::new(),
        }
    }

    /// Whether the dashboard has no proxy to show or command.
    pub(crate) fn is_no_proxy(&self) -> bool {
        self.kind == BackendKind::NoProxy
    }

    /// No proxy, with events followed from `events_file` and commands appended to
    /// `commands_file`.
    pub(crate) fn replay(events_file: PathBuf, commands_file: Option<PathBuf>) -> Self {
        let (event_tx, events) = mpsc::unbounded_channel();
        let (commands, mut command_rx) = mpsc::unbounded_channel::<ProxyCommand>();
        tokio::spawn(async move {
            let mut offset = 0usize;
            let mut ticker = tokio::time::interval(Duration::from_millis(100));
            loop {
                ticker.tick().await;
                let Ok(text) = tokio::fs::read_to_string(&events_file).await else {
                    continue;
                };
                let Some(new) = text.get(offset..) else {
                    continue;
                };
                // Only whole lines; a line being written is read next time.
                let Some(end) = new.rfind('\n') else {
                    continue;
                };
                for line in new[..end].lines().filter(|l| !l.trim().is_empty()) {
                    // A development aid: how a task that dies is tested end to end.
                    assert_ne!(line.trim(), "panic", "the events file asked for a panic");
                    match serde_json::from_str::<ProxyEvent>(line) {
                        Ok(event) => {
                            if event_tx.send(event).is_err() {
                                return;
                            }
                        }
                        Err(err) => {
                            tracing::warn!("{}: bad event line: {err}", events_file.display())
                        }
                    }
                }
                offset += end + 1;
            }
        });
        tokio::spawn(async move {
            while let Some(command) = command_rx.recv().await {
                tracing::info!(?command, "dashboard command");
                if let Some(path) = &commands_file {
                    let line = serde_json::to_string(&command).unwrap_or_default() + "\n";
                    let appended = std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(path)
                        .and_then(|mut f| std::io::Write::write_all(&mut f, line.as_bytes()));
                    if let Err(err) = appended {
                        tracing::warn!("{}: {err}", path.display());
                    }
                }
            }
        });
        Self {
            kind: BackendKind::Replay,
            remote: None,
            events,
            commands,
            accounts: Vec::new(),
            recent_switches: Vec::new(),
            guard: None,
            started: None,
            pool: Default::default(),
            usage_samples: Vec::new(),
        }
    }
}

/// Whether the switching proxy stands in front of Codex: yes, unless [`NO_PROXY_ENV`] says no.
pub(crate) fn proxy_wanted() -> bool {
    !std::env::var_os(NO_PROXY_ENV).is_some_and(|v| !v.is_empty() && v != "0")
}

/// What the switching proxy starts with.
pub struct ProxySetup {
    /// The session's options (the store directory among them).
    pub options: SessionOptions,
    /// The Codex login the first run imported, which the panel reports.
    pub imported: Option<Account>,
}

/// Starts whatever sits in front of Codex for this session: normally (`proxy` given) the
/// app-server and the switching proxy, logged in to the best stored account before Codex
/// attaches; else no proxy.
pub(crate) async fn start_backend(proxy: Option<ProxySetup>) -> Result<SessionBackend> {
    let Some(ProxySetup { options, imported }) = proxy else {
        return Ok(match std::env::var_os(DEV_EVENTS_ENV) {
            Some(events) => SessionBackend::replay(
                events.into(),
                std::env::var_os(DEV_COMMANDS_ENV).map(PathBuf::from),
            ),
            None => SessionBackend::no_proxy(),
        });
    };
    let store_dir = options.store_dir.clone();
    let store = Store::open(&store_dir);
    let listener = ProxyListener::bind_private(&store_dir)?;
    let dir = StoreDirectory::from_env(&store_dir)?;
    // Codex needs only the listener's address to start; its connection waits at the relay
    // until the session has logged in (Codex allows 10 s for that). Starting both at once
    // saves Codex's whole start-up time.
    let remote = RemoteEndpoint {
        url: listener.url().to_owned(),
    };

    // Proxy events and command answers reach the dashboard on one channel.
    let (event_tx, events) = mpsc::unbounded_channel();
    if let Some(account) = imported {
        let _ = event_tx.send(ProxyEvent::Notice {
            message: format!("imported {} from $CODEX_HOME/auth.json", account.name),
            at: Utc::now(),
        });
    }
    let (commands, command_rx) = mpsc::unbounded_channel::<ProxyCommand>();
    let (started_tx, started) = oneshot::channel();
    let slot = SessionSlot::default();
    let keep = Arc::downgrade(&slot.0);
    let pool = crate::proxy::pool::hub::PoolControlSlot::default();
    let pool_slot = pool.clone();
    let samples_dir = store_dir.clone();
    tokio::spawn(async move {
        let session = match Session::start(listener, options, dir).await {
            Ok(session) => session,
            Err(err) => {
                let _ = started_tx.send(Err(err));
                return;
            }
        };
        connect_dashboard(&session, event_tx, command_rx);
        crate::proxy::usage_store::spawn_recorder(&samples_dir, session.subscribe());
        pool_slot.set(session.pool_control());
        // If cs-tui is already ending, dropping the session here stops the app-server.
        if let Some(slot) = keep.upgrade()
            && let Ok(mut slot) = slot.lock()
        {
            *slot = Some(session);
        }
        let _ = started_tx.send(Ok(()));
    });

    let accounts = store
        .load()?
        .accounts
        .iter()
        .map(|account| AccountView {
            stored: StoredState::of(
                account.enabled,
                account.needs_login(),
                account.unsupported_sign_in(),
            ),
            email: account.email.clone(),
            plan: account.plan.clone(),
            ..AccountView::new(account.id.clone(), account.name.clone())
        })
        .collect();
    Ok(SessionBackend {
        kind: BackendKind::Proxy,
        remote: Some(remote),
        events,
        commands,
        accounts,
        recent_switches: crate::proxy::history::read_recent(
            &store_dir.join(crate::proxy::history::HISTORY_FILE),
            crate::state::dashboard::SEEDED_SWITCHES,
        ),
        guard: Some(Box::new(slot)),
        started: Some(started),
        pool,
        usage_samples: crate::proxy::usage_store::load(&store_dir, Utc::now().timestamp()),
    })
}

/// Holds the session once it has started; dropping it stops the session (and the app-server).
#[derive(Default)]
struct SessionSlot(Arc<Mutex<Option<Session>>>);

impl Drop for SessionSlot {
    fn drop(&mut self) {
        let session = self.0.lock().ok().and_then(|mut slot| slot.take());
        drop(session);
    }
}

/// Forwards the session's events and command answers to the dashboard's channel, and the
/// dashboard's commands to the session.
fn connect_dashboard(
    session: &Session,
    event_tx: mpsc::UnboundedSender<ProxyEvent>,
    mut command_rx: mpsc::UnboundedReceiver<ProxyCommand>,
) {
    let mut proxy_events = session.subscribe();
    let forward = event_tx.clone();
    tokio::spawn(async move {
        loop {
            match proxy_events.recv().await {
                Ok(event) => {
                    if forward.send(event).is_err() {
                        break;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(n, "the dashboard fell behind the proxy's events");
                }
                Err(broadcast::error::RecvError::Closed) => break,
            }
        }
    });
    let sender = session.commands();
    tokio::spawn(async move {
        while let Some(command) = command_rx.recv().await {
            let answer = sender.send(command);
            let event_tx = event_tx.clone();
            tokio::spawn(async move {
                let message = match answer.await {
                    Ok(Ok(message)) => message,
                    Ok(Err(message)) => format!("cannot switch: {message}"),
                    Err(_) => return,
                };
                let _ = event_tx.send(ProxyEvent::Notice {
                    message,
                    at: Utc::now(),
                });
            });
        }
    });
}

/// What the dashboard makes of the proxy's start: `Ok` once it runs, or the reason it never
/// will (with its hint).
pub(crate) async fn wait_started(started: oneshot::Receiver<Result<()>>) -> Result<()> {
    started
        .await
        .unwrap_or_else(|_| Err(eyre!("the switching proxy stopped while starting")))
}
