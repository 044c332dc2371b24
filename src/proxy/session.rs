//! A switching session: the app-server, the proxy's control connection and core, the relay
//! listener, and the session socket, started in the order the protocol needs and torn down
//! together.
//!
//! Data flow:
//! ```text
//! codex TUI ──ws──▶ relay (unix socket, our uid; or 127.0.0.1, bearer) ──ws per client──▶ codex app-server
//!                     │ observations                                ▲
//!                     ▼                                             │ login, reads
//!   commands ──▶ core (state, policy) ──▶ switch task ──▶ control connection
//!                     │
//!                     ▼ ProxyEvent (broadcast) ──▶ dashboard, `serve` JSON lines
//! ```

use std::collections::VecDeque;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable as _};

use color_eyre::eyre::{Result, WrapErr, eyre};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::errors::with_hint;
use crate::paths::CreatedFile;
use crate::proxy::app_server::{self, AppServer, AppServerExit, AppServerOptions};
use crate::proxy::core::{self, Core, CoreConfig, CoreInit, CoreMsg, Input};
use crate::proxy::directory::{AccountDirectory, DirAccount};
use crate::proxy::events::{ProxyCommand, ProxyEvent};
use crate::proxy::history::HISTORY_FILE;
use crate::proxy::ipc;
use crate::proxy::placement::PlanContext;
use crate::proxy::policy::PolicyConfig;
use crate::proxy::pool::hub::{self, Hub, HubConfig, RoleSink};
use crate::proxy::pool::{PoolHandle, SessionKind, StatusCell};
use crate::proxy::relay::{self, ClientListener, EventSink, RelayShared};
use crate::proxy::socket::{BoundSocket, SocketFiles};
use crate::proxy::start_plan::{StartPlan, login_first_usable, plan_start};
use crate::proxy::turn_guard::{GuardShared, GuardSink, TurnGuard};
use crate::proxy::upstream::{ClientIdentity, ControlConnection, ControlEvent};
use crate::secret::Secret;

/// How the session is set up.
#[derive(Clone, Debug)]
pub struct SessionOptions {
    pub codex_bin: OsString,
    pub codex_home: PathBuf,
    /// The store directory (runtime dir, logs and switch history live under it).
    pub store_dir: PathBuf,
    pub policy: PolicyConfig,
    pub usage_poll: Duration,
    /// Where the proxy listens; must be a loopback address.
    pub listen: SocketAddr,
    /// Where to write the proxy's bearer token (default: in the runtime directory).
    pub token_file: Option<PathBuf>,
    /// Re-run a turn that failed on a usage limit on the new account, hiding the failure.
    pub hidden_rerun: bool,
    /// What runs the session (shown to the pool and `cs-tui sessions`).
    pub kind: crate::proxy::pool::SessionKind,
    /// The directory the session was started in.
    pub cwd: PathBuf,
    /// How a new session (or an automatic switch) chooses among the pool's accounts.
    pub placement: crate::config::Placement,
    /// Share knowledge with the store's other sessions (`false`: `CS_TUI_POOL=off`).
    pub pool: bool,
}

impl SessionOptions {
    /// What the session needs to place itself among its peers: its store, its runtime
    /// directory, its `[pool]` settings, and the status cell its peers read (`None` until the
    /// session has one).
    pub(crate) fn plan_context(
        &self,
        runtime_dir: &Path,
        status: Option<StatusCell>,
    ) -> PlanContext {
        PlanContext {
            store_dir: self.store_dir.clone(),
            own_dir: Some(runtime_dir.to_owned()),
            placement: self.placement,
            status,
            pool: self.pool,
        }
    }
}

/// The proxy's listening socket, bound before the session starts so a client (the Codex TUI)
/// can be launched while the app-server is still starting: its connection waits at the relay
/// until the starting account is logged in.
///
/// On a loopback port clients must present the bearer token; on a unix socket they must be
/// our own user (the relay checks the peer's credentials), since `codex --remote unix://`
/// sends no token (0.169.0 refuses `--remote-auth-token-env` with it).
pub struct ProxyListener {
    listener: ClientListener,
    url: String,
    token: Secret,
    /// The unix socket's file, removed with the session (if it is still ours).
    socket: Option<UnixSocketFile>,
    /// The session's runtime directory, when the listener was bound in it.
    runtime_dir: Option<PathBuf>,
}

/// A unix socket the proxy bound: in the runtime directory (gone with it), or at a path the
/// user gave (removed at the end if it is still the socket we bound).
enum UnixSocketFile {
    Private { _files: SocketFiles },
    AtPath { path: PathBuf, dev: u64, ino: u64 },
}

impl Drop for UnixSocketFile {
    fn drop(&mut self) {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        if let UnixSocketFile::AtPath { path, dev, ino } = self
            && std::fs::symlink_metadata(&*path)
                .is_ok_and(|m| m.file_type().is_socket() && m.dev() == *dev && m.ino() == *ino)
        {
            let _ = std::fs::remove_file(&*path);
        }
    }
}

impl ProxyListener {
    /// A loopback port (`serve`'s default).
    pub async fn bind(addr: SocketAddr) -> Result<Self> {
        if !addr.ip().is_loopback() {
            return Err(with_hint(
                eyre!("refusing to listen on {addr}: the proxy serves this machine only"),
                "use a 127.0.0.1 address, e.g. --listen 127.0.0.1:8765, or a unix socket, --listen unix://PATH",
            ));
        }
        let listener = TcpListener::bind(addr)
            .await
            .wrap_err_with(|| format!("binding the proxy to {addr}"))?;
        // Anyone on the machine can open connections to a loopback port; with the soft limit
        // on open files raised to the hard one, they run the relay out of descriptors later.
        raise_open_files_limit();
        let local = listener.local_addr()?;
        Ok(Self {
            listener: listener.into(),
            url: format!("ws://{local}"),
            token: Secret::new(app_server::random_token()),
            socket: None,
            runtime_dir: None,
        })
    }

    /// A unix socket at a path the user chose (`serve --listen unix://PATH`). Something already
    /// there is refused, except a socket of ours that nobody listens on any more (left by a
    /// session that was killed), which is replaced.
    pub fn bind_unix(path: &Path) -> Result<Self> {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        if path.as_os_str().len() > crate::proxy::socket::MAX_SOCKET_PATH {
            return Err(with_hint(
                eyre!("{} is too long for a unix socket's address", path.display()),
                "use a shorter path (at most 103 bytes)",
            ));
        }
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            let stale = meta.file_type().is_socket()
                && meta.uid() == nix::unistd::geteuid().as_raw()
                && std::os::unix::net::UnixStream::connect(path)
                    .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused);
            if !stale {
                return Err(with_hint(
                    eyre!("{} already exists", path.display()),
                    "give --listen unix:// a path where nothing is yet",
                ));
            }
            std::fs::remove_file(path)
                .wrap_err_with(|| format!("removing the stale socket {}", path.display()))?;
        }
        let listener = tokio::net::UnixListener::bind(path)
            .wrap_err_with(|| format!("binding the proxy to {}", path.display()))?;
        let meta = std::fs::symlink_metadata(path)?;
        crate::proxy::socket::owner_only(path);
        Ok(Self {
            listener: listener.into(),
            url: format!("unix://{}", path.display()),
            token: Secret::new(app_server::random_token()),
            socket: Some(UnixSocketFile::AtPath {
                path: path.to_owned(),
                dev: meta.dev(),
                ino: meta.ino(),
            }),
            runtime_dir: None,
        })
    }

    /// A unix socket in a new runtime directory of the session under the store (0700): what
    /// the dashboard's Codex connects to. No other user can even reach it.
    pub fn bind_private(store_dir: &Path) -> Result<Self> {
        let runtime_dir = new_runtime_dir(store_dir)?;
        let bound = BoundSocket::bind(&runtime_dir.join(PROXY_SOCKET_NAME)).inspect_err(|_| {
            let _ = std::fs::remove_dir_all(&runtime_dir);
        })?;
        Ok(Self {
            listener: bound.listener.into(),
            // The socket itself: Codex connects by path, and a deep store's path would not fit
            // in a socket address.
            url: format!("unix://{}", bound.files.socket_path().display()),
            token: Secret::new(app_server::random_token()),
            socket: Some(UnixSocketFile::Private {
                _files: bound.files,
            }),
            runtime_dir: Some(runtime_dir),
        })
    }

    /// `ws://127.0.0.1:PORT` or `unix://PATH`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Whether clients connect over a unix socket (and need no token).
    pub fn is_unix(&self) -> bool {
        matches!(self.listener, ClientListener::Unix(_))
    }

    /// The bearer token clients must present on a loopback port.
    pub fn token(&self) -> &Secret {
        &self.token
    }
}

/// The proxy's socket in a session's runtime directory.
pub const PROXY_SOCKET_NAME: &str = "proxy.sock";

/// Raises the soft limit on open files to the hard one (each proxy client takes two).
pub fn raise_open_files_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if let Err(err) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::debug!(soft, hard, %err, "raising the open-files limit failed");
            }
        }
        Ok(_) => {}
        Err(err) => tracing::debug!(%err, "reading the open-files limit failed"),
    }
}

/// Creates a new runtime directory for a session under `<store>/runtime/` (0700), after
/// removing those of sessions whose process is gone.
fn new_runtime_dir(store_dir: &Path) -> Result<PathBuf> {
    let runtime_root = store_dir.join("runtime");
    crate::paths::ensure_private_dir(&runtime_root)
        .wrap_err_with(|| format!("creating {}", runtime_root.display()))?;
    prune_stale_runtime_dirs(&runtime_root);
    let runtime_dir = runtime_root.join(format!(
        "{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ));
    crate::paths::ensure_private_dir(&runtime_dir)
        .wrap_err_with(|| format!("creating {}", runtime_dir.display()))?;
    Ok(runtime_dir)
}

/// A running session.
pub struct Session {
    url: String,
    token: Secret,
    /// Removed when the session ends, if it is still the file the session created. None on a
    /// unix socket.
    token_file: Option<CreatedFile>,
    /// The proxy's unix socket, if it listens on one.
    _socket: Option<UnixSocketFile>,
    runtime_dir: PathBuf,
    events: broadcast::Sender<ProxyEvent>,
    core: mpsc::UnboundedSender<CoreMsg>,
    /// The app-server of the moment: the supervisor replaces one that exits.
    app_server: Arc<std::sync::Mutex<Option<AppServer>>>,
    /// Set when the session ends, so an exit then is not answered with a restart.
    stopping: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
    starting_account: DirAccount,
    /// Subscribed before the core started, so the first subscriber sees its first events.
    first_subscriber: std::sync::Mutex<Option<broadcast::Receiver<ProxyEvent>>>,
    /// The control socket and the pool hub.
    pool: PoolParts,
}

/// What makes a session one of the store's pool: its control socket (served from right after
/// its runtime directory exists, so a starting session is counted) and its hub (none when the
/// pool is off). Dropped, the socket stops answering and the hub says goodbye to the peers.
struct PoolParts {
    control_socket: Option<JoinHandle<()>>,
    hub: Option<Hub>,
}

impl PoolParts {
    /// Stops answering on the control socket, then tells the peers this session ends (after
    /// its runtime directory is gone, so a peer that looks again finds it gone).
    async fn close(&mut self) {
        if let Some(socket) = self.control_socket.take() {
            socket.abort();
        }
        if let Some(hub) = self.hub.take() {
            hub.close().await;
        }
    }
}

impl Drop for PoolParts {
    fn drop(&mut self) {
        if let Some(socket) = self.control_socket.take() {
            socket.abort();
        }
        // The hub's own Drop says goodbye.
        self.hub.take();
    }
}

/// What `Session::start` prepares before the app-server runs, for `finish_start`.
struct Early {
    runtime_dir: PathBuf,
    token_file: Option<CreatedFile>,
    core_tx: mpsc::UnboundedSender<CoreMsg>,
    core_rx: mpsc::UnboundedReceiver<CoreMsg>,
    events: broadcast::Sender<ProxyEvent>,
    first_subscriber: broadcast::Receiver<ProxyEvent>,
    core_running: Arc<AtomicBool>,
    pool_handle: PoolHandle,
    pool: PoolParts,
    /// How an automatic switch places the session among its peers.
    placing: PlanContext,
}

/// Sends commands to a session's core.
#[derive(Clone)]
pub struct CommandSender(mpsc::UnboundedSender<CoreMsg>);

impl CommandSender {
    /// Sends a command; the receiver yields a sentence saying what happens.
    pub fn send(&self, command: ProxyCommand) -> oneshot::Receiver<Result<String, String>> {
        let (tx, rx) = oneshot::channel();
        let _ = self.0.send(CoreMsg::Command(command, Some(tx)));
        rx
    }
}

/// The control connection and the channel its events arrive on.
type ControlParts = (
    ControlConnection,
    mpsc::UnboundedSender<ControlEvent>,
    mpsc::UnboundedReceiver<ControlEvent>,
);

impl Session {
    /// Starts the app-server, logs in the starting account over the control connection, and
    /// opens the relay. Returns once clients can attach.
    pub async fn start<D: AccountDirectory>(
        listener: ProxyListener,
        options: SessionOptions,
        dir: D,
    ) -> Result<Self> {
        let mut listener = listener;
        let runtime_dir = match listener.runtime_dir.take() {
            Some(dir) => dir,
            None => new_runtime_dir(&options.store_dir)?,
        };
        // A client on the unix socket needs no token: there is no file to write.
        let token_file = if listener.is_unix() {
            None
        } else {
            let path = options
                .token_file
                .clone()
                .unwrap_or_else(|| runtime_dir.join("proxy.token"));
            let created = crate::paths::create_private_file(&path, listener.token.expose().as_bytes())
                .map_err(|err| {
                    let _ = std::fs::remove_dir_all(&runtime_dir);
                    with_hint(
                        eyre!(err),
                        "give --token-file a path that does not exist yet; serve creates it (0600) and removes it when it exits",
                    )
                })?;
            Some(created)
        };

        // The session's status, its control socket and its pool hub, from now on: a starting
        // session is visible to the others (and counted when they choose an account).
        let status = StatusCell::new(hub::starting_status(
            &runtime_dir,
            options.kind,
            options.cwd.clone(),
            (options.kind == SessionKind::Serve).then(|| listener.url.clone()),
        ));
        if !options.pool {
            // Alone, the session polls every account itself (as before the pool).
            status.update(|s| s.poller = true);
        }
        let (core_tx, core_rx) = mpsc::unbounded_channel::<CoreMsg>();
        let (events, first_subscriber) = broadcast::channel(1024);
        let core_running = Arc::new(AtomicBool::new(false));
        let (hub, pool_handle) = if options.pool {
            let config = HubConfig {
                store_dir: options.store_dir.clone(),
                runtime_dir: runtime_dir.clone(),
            };
            let role = {
                let core_tx = core_tx.clone();
                RoleSink::new(move |poller| {
                    let _ = core_tx.send(Input::PollerRole(poller).into());
                })
            };
            let (hub, handle) = Hub::start(config, status.clone(), events.clone(), role);
            (Some(hub), handle)
        } else {
            (None, PoolHandle::off())
        };
        let serving = ipc::Serving {
            core: core_tx.clone(),
            core_running: core_running.clone(),
            status: status.clone(),
            id: hub::session_id(&runtime_dir),
            hub: hub.as_ref().map(Hub::notes),
        };
        // Without its control socket the session still serves; only `cs-tui switch`, the
        // `accounts` commands and the pool cannot reach it.
        let control_socket = match ipc::listen(&runtime_dir, serving) {
            Ok(task) => Some(task),
            Err(err) => {
                tracing::warn!("the session's control socket is unavailable: {err:#}");
                let _ = events.send(ProxyEvent::Notice {
                    message: format!("`cs-tui switch` cannot reach this session: {err:#}"),
                    at: chrono::Utc::now(),
                });
                None
            }
        };
        let mut pool = PoolParts {
            control_socket,
            hub,
        };

        let app_server_options = AppServerOptions {
            codex_bin: options.codex_bin.clone(),
            codex_home: options.codex_home.clone(),
            runtime_dir: runtime_dir.join("app-server"),
            stderr_log: options
                .store_dir
                .join("logs")
                .join(format!("app-server-{}.log", std::process::id())),
            env: Vec::new(),
        };
        // The app-server's ~200 ms start overlaps with reading the store. The starting
        // account's usage read waits for the control connection's `initialize`, whose result
        // names the `User-Agent` our own backend reads must send too.
        let (control_tx, control_rx) = mpsc::unbounded_channel();
        let start_server = async {
            let server = AppServer::start(app_server_options.clone()).await?;
            let identity = ClientIdentity::codex_tui(server.codex_version());
            let control =
                ControlConnection::connect(&server.addr(), &identity, control_tx.clone()).await?;
            if let Some(user_agent) = control.user_agent() {
                dir.adopt_user_agent(user_agent);
            }
            Ok::<_, color_eyre::Report>((server, control))
        };
        // A failed start ends the wait at once: the plan's usage read would otherwise wait
        // for a User-Agent that never comes.
        let placing = options.plan_context(&runtime_dir, Some(status.clone()));
        let plan = async {
            Ok::<_, color_eyre::Report>(plan_start(&dir, &options.policy, &placing).await)
        };
        let started = tokio::try_join!(start_server, plan);
        let ((app_server, control), plan) = match started {
            Ok(started) => started,
            Err(err) => {
                token_file.as_ref().map(CreatedFile::remove);
                let _ = std::fs::remove_dir_all(&runtime_dir);
                pool.close().await;
                return Err(err);
            }
        };
        let early = Early {
            runtime_dir: runtime_dir.clone(),
            token_file: token_file.clone(),
            core_tx,
            core_rx,
            events,
            first_subscriber,
            core_running,
            pool_handle,
            pool,
            placing,
        };
        // On failure `finish_start` has closed the pool parts it was given.
        let result = Self::finish_start(
            listener,
            options,
            dir,
            (app_server, app_server_options),
            (control, control_tx, control_rx),
            plan,
            early,
        )
        .await;
        if result.is_err() {
            token_file.as_ref().map(CreatedFile::remove);
            let _ = std::fs::remove_dir_all(&runtime_dir);
        }
        result
    }

    async fn finish_start<D: AccountDirectory>(
        listener: ProxyListener,
        options: SessionOptions,
        dir: D,
        (app_server, app_server_options): (AppServer, AppServerOptions),
        (control, control_tx, mut control_rx): ControlParts,
        plan: Result<StartPlan>,
        early: Early,
    ) -> Result<Self> {
        let Early {
            runtime_dir,
            token_file,
            core_tx,
            core_rx,
            events,
            first_subscriber,
            core_running,
            pool_handle,
            mut pool,
            placing,
        } = early;
        // Log in before any client is accepted: a TUI that attaches to an app-server without
        // auth stays on its sign-in screen (docs/protocol.md §2).
        let logged_in = match plan {
            Ok(plan) => login_first_usable(&dir, &control, &plan, &pool_handle)
                .await
                .map(|login| (plan, login)),
            Err(err) => Err(err),
        };
        let (plan, (starting_account, snapshot)) = match logged_in {
            Ok(logged_in) => logged_in,
            Err(err) => {
                // The runtime directory goes first: a peer that looks again finds us gone.
                let _ = std::fs::remove_dir_all(&runtime_dir);
                pool.close().await;
                return Err(err);
            }
        };

        let mut tasks = Vec::new();
        {
            let core_tx = core_tx.clone();
            tasks.push(tokio::spawn(async move {
                while let Some(event) = control_rx.recv().await {
                    if core_tx.send(CoreMsg::Control(event)).is_err() {
                        break;
                    }
                }
            }));
        }
        let upstream = app_server.addr();
        let app_server = Arc::new(std::sync::Mutex::new(Some(app_server)));
        let stopping = Arc::new(AtomicBool::new(false));
        tasks.push(tokio::spawn(supervise(Supervisor {
            slot: app_server.clone(),
            options: app_server_options,
            stopping: stopping.clone(),
            core: core_tx.clone(),
            control_events: control_tx,
        })));
        let (ready_tx, ready) = watch::channel(true);
        let guards = GuardShared::new(options.hidden_rerun, options.policy.clone());
        let core = Core::new(CoreInit {
            guards: guards.clone(),
            dir,
            control,
            events: events.clone(),
            inbox: core_tx.clone(),
            config: CoreConfig {
                policy: options.policy.clone(),
                usage_poll: options.usage_poll,
                history_path: options.store_dir.join(HISTORY_FILE),
                ledger: Some(crate::proxy::ledger::Ledger::in_store(&options.store_dir)),
                session_id: crate::proxy::pool::hub::session_id(&runtime_dir),
            },
            accounts: plan.accounts,
            active: starting_account.id.clone(),
            active_snapshot: snapshot,
            ready: ready_tx,
            pool: pool_handle,
            placement: Some(placing),
        });
        tasks.push(watch_core(tokio::spawn(core.run(core_rx)), events.clone()));
        core_running.store(true, Ordering::SeqCst);

        let shared = Arc::new(RelayShared {
            // A restarted app-server listens on the same path.
            upstream,
            client_token: listener.token.clone(),
            ready,
            events: {
                let core_tx = core_tx.clone();
                EventSink::new(move |event| {
                    let _ = core_tx.send(CoreMsg::Relay(event));
                })
            },
            interceptor: {
                let core_tx = core_tx.clone();
                let sink = GuardSink::new(move |event| {
                    let _ = core_tx.send(CoreMsg::Guard(event));
                });
                Box::new(move |conn| TurnGuard::new(conn, guards.clone(), sink.clone()))
            },
        });
        tasks.push(tokio::spawn(relay::serve(listener.listener, shared)));

        Ok(Self {
            url: listener.url,
            token: listener.token,
            token_file,
            _socket: listener.socket,
            runtime_dir,
            events,
            core: core_tx,
            app_server,
            stopping,
            tasks,
            starting_account,
            first_subscriber: std::sync::Mutex::new(Some(first_subscriber)),
            pool,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn token(&self) -> &Secret {
        &self.token
    }

    /// Where the bearer token is, for a session on a loopback port.
    pub fn token_file(&self) -> Option<&Path> {
        self.token_file.as_ref().map(CreatedFile::path)
    }

    pub fn runtime_dir(&self) -> &Path {
        &self.runtime_dir
    }

    /// The account the session started on.
    pub fn starting_account(&self) -> &DirAccount {
        &self.starting_account
    }

    /// The app-server's process group id.
    pub fn app_server_pgid(&self) -> Option<i32> {
        lock(&self.app_server).as_ref().map(AppServer::pgid)
    }

    /// Events. The first subscriber gets every event since the session started (the active
    /// account and its limits are announced then); later ones get events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<ProxyEvent> {
        self.first_subscriber
            .lock()
            .ok()
            .and_then(|mut first| first.take())
            .unwrap_or_else(|| self.events.subscribe())
    }

    /// The handle job control uses to give the poller's lock up while stopped (`None` with
    /// the pool off).
    pub(crate) fn pool_control(&self) -> Option<hub::PoolControl> {
        self.pool.hub.as_ref().map(Hub::control)
    }

    pub fn commands(&self) -> CommandSender {
        CommandSender(self.core.clone())
    }

    /// Stops everything: the relay, the core, the app-server's process group; removes the
    /// runtime directory (the proxy's token file, the sockets).
    pub async fn shutdown(mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        let _ = self.core.send(CoreMsg::Shutdown);
        for task in self.tasks.drain(..) {
            task.abort();
        }
        if let Some(app_server) = take(&self.app_server) {
            app_server.shutdown().await;
        }
        self.token_file.as_ref().map(CreatedFile::remove);
        let _ = std::fs::remove_dir_all(&self.runtime_dir);
        // Last: the peers hear `session_ended` (and `poller_released`) once we are gone.
        self.pool.close().await;
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        for task in &self.tasks {
            task.abort();
        }
        // AppServer's own Drop kills its process group.
        take(&self.app_server);
        self.token_file.as_ref().map(CreatedFile::remove);
        let _ = std::fs::remove_dir_all(&self.runtime_dir);
        // `pool` (a field) is dropped after this: the control socket stops, the peers hear
        // that the session ended.
    }
}

fn lock(slot: &Mutex<Option<AppServer>>) -> MutexGuard<'_, Option<AppServer>> {
    slot.lock().unwrap_or_else(PoisonError::into_inner)
}

fn take(slot: &Mutex<Option<AppServer>>) -> Option<AppServer> {
    lock(slot).take()
}

/// Restarts within this window count together: one exit more than [`MAX_RESTARTS`] in it ends
/// the session (an app-server that keeps dying would otherwise be restarted forever).
const RESTART_WINDOW: Duration = Duration::from_secs(600);
const MAX_RESTARTS: usize = 3;

/// What the supervisor of the app-server works with.
struct Supervisor {
    slot: Arc<Mutex<Option<AppServer>>>,
    options: AppServerOptions,
    stopping: Arc<AtomicBool>,
    core: mpsc::UnboundedSender<CoreMsg>,
    control_events: mpsc::UnboundedSender<ControlEvent>,
}

/// Watches the app-server and starts another on the same socket path when it exits (a crash,
/// a kill), so the session survives it: the Codex TUI reconnects to the proxy by itself, and
/// the proxy holds it at the gate until the core has logged the active account in again.
async fn supervise(supervisor: Supervisor) {
    let Supervisor {
        slot,
        options,
        stopping,
        core,
        control_events,
    } = supervisor;
    let mut restarts: VecDeque<Instant> = VecDeque::new();
    loop {
        let Some(mut exit) = lock(&slot).as_ref().map(AppServer::exit_watch) else {
            return;
        };
        let Ok(exit) = exit
            .wait_for(Option::is_some)
            .await
            .map(|exit| exit.clone().expect("checked by wait_for"))
        else {
            return;
        };
        if stopping.load(Ordering::SeqCst) {
            return;
        }
        // Its socket and directory go before the next one binds the same path.
        drop(take(&slot));
        restarts.retain(|at| at.elapsed() < RESTART_WINDOW);
        let restarting = restarts.len() < MAX_RESTARTS;
        tracing::warn!(status = %exit.status, restarting, "the app-server exited");
        let _ = core.send(core::Input::AppServerExited { exit, restarting }.into());
        if !restarting {
            return;
        }
        restarts.push_back(Instant::now());
        let start = || async {
            let server = AppServer::start(options.clone()).await?;
            let identity = ClientIdentity::codex_tui(server.codex_version());
            let control =
                ControlConnection::connect(&server.addr(), &identity, control_events.clone())
                    .await?;
            Ok::<_, color_eyre::Report>((server, control))
        };
        let started = start
            .retry(
                ExponentialBuilder::default()
                    .with_min_delay(Duration::from_millis(200))
                    .with_max_times(3),
            )
            .notify(|err, wait| {
                tracing::warn!("restarting the app-server failed ({err:#}); again in {wait:?}")
            })
            .await;
        match started {
            Ok((server, control)) => {
                if stopping.load(Ordering::SeqCst) {
                    server.shutdown().await;
                    return;
                }
                tracing::info!("the app-server was restarted");
                *lock(&slot) = Some(server);
                let _ = core.send(CoreMsg::AppServerRestarted(control));
            }
            Err(err) => {
                let exit = AppServerExit {
                    status: format!("could not be started again: {err:#}"),
                    stderr_tail: app_server::stderr_tail(&options.stderr_log, 20),
                };
                let _ = core.send(
                    core::Input::AppServerExited {
                        exit,
                        restarting: false,
                    }
                    .into(),
                );
                return;
            }
        }
    }
}

/// Removes runtime directories of sessions whose process is gone.
fn prune_stale_runtime_dirs(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.split('-').next())
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok();
        if !alive {
            for socket in [ipc::SOCKET_NAME, PROXY_SOCKET_NAME] {
                crate::proxy::socket::remove_link_target(&entry.path().join(socket));
            }
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Watches the session's core: if it dies (a panic), nothing would switch accounts or answer
/// token-refresh requests any more, so the session says so and ends
/// ([`ProxyEvent::SessionFailed`]) instead of going on half-dead. Aborting the watcher aborts
/// the core.
fn watch_core(core: JoinHandle<()>, events: broadcast::Sender<ProxyEvent>) -> JoinHandle<()> {
    struct AbortOnDrop(tokio::task::AbortHandle);
    impl Drop for AbortOnDrop {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    // Made out here: a watcher aborted before its first poll still drops it.
    let abort = AbortOnDrop(core.abort_handle());
    tokio::spawn(async move {
        let _abort = abort;
        if let Err(err) = core.await
            && err.is_panic()
        {
            let payload = err.into_panic();
            let why = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".to_owned());
            tracing::error!("the session core died: {why}");
            let _ = events.send(ProxyEvent::SessionFailed {
                message: format!(
                    "the switching core stopped ({why}): no more switches or token refreshes"
                ),
                at: chrono::Utc::now(),
            });
        }
    })
}

#[cfg(test)]
mod core_watch_tests {
    use super::*;

    #[tokio::test]
    async fn a_core_that_panics_ends_the_session_with_a_message() {
        let (events, mut rx) = broadcast::channel(4);
        let core = tokio::spawn(async { panic!("core broke") });
        watch_core(core, events).await.unwrap();
        match rx.recv().await.unwrap() {
            ProxyEvent::SessionFailed { message, .. } => {
                assert!(message.contains("core broke"), "{message}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn aborting_the_watcher_aborts_the_core() {
        let (events, _rx) = broadcast::channel(4);
        let (_hold, wait) = tokio::sync::oneshot::channel::<()>();
        let core = tokio::spawn(async move {
            let _ = wait.await;
        });
        let abort = core.abort_handle();
        let watcher = watch_core(core, events);
        watcher.abort();
        let _ = watcher.await;
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        while !abort.is_finished() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the core still runs"
            );
            tokio::task::yield_now().await;
        }
    }
}
