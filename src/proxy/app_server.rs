//! The `codex app-server` child: spawn, readiness, stderr capture, and teardown on every path.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use color_eyre::eyre::{Result, WrapErr, bail, eyre};
use nix::sys::signal::Signal;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use crate::process::Group;
use crate::proxy::socket::AppServerAddr;

/// How long the app-server gets to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Readiness (its socket accepting a connection) is polled this often: spawn-to-ready is
/// ~200 ms, so a coarse poll wastes time, and a failed connect to a unix socket costs
/// microseconds.
const READY_POLL: Duration = Duration::from_millis(5);
/// The socket's name inside the runtime directory.
const SOCKET_NAME: &str = "app-server.sock";
/// Grace period between SIGTERM and SIGKILL. SIGTERM during a turn only starts a drain
/// (docs/protocol.md §1), so we do not wait long.
const TERM_GRACE: Duration = Duration::from_millis(1500);

/// Everything needed to start the app-server.
#[derive(Clone, Debug)]
pub(crate) struct AppServerOptions {
    pub codex_bin: OsString,
    /// The user's `CODEX_HOME`.
    pub codex_home: PathBuf,
    /// A private (0700) directory for the app-server's socket; removed at shutdown.
    pub runtime_dir: PathBuf,
    /// Where the app-server's stderr goes.
    pub stderr_log: PathBuf,
    /// Extra environment (e.g. `CODEX_REFRESH_TOKEN_URL_OVERRIDE`, passed through from ours).
    pub env: Vec<(OsString, OsString)>,
}

/// How the app-server ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct AppServerExit {
    pub status: String,
    pub stderr_tail: String,
}

/// A running app-server. Dropping it kills the process group and removes its socket.
pub(crate) struct AppServer {
    /// Its process group; the reaper's (`process/reaper.rs`) when started through it.
    group: Group,
    /// The reaper's pipe; dropping it makes the reaper kill the whole tree.
    _reaper_pipe: Option<tokio::process::ChildStdin>,
    socket: PathBuf,
    runtime_dir: PathBuf,
    stderr_log: PathBuf,
    exit: watch::Receiver<Option<AppServerExit>>,
    stop: Option<oneshot::Sender<()>>,
    /// What `codex --version` said, when it answered.
    codex_version: Option<String>,
}

/// Removes what a killed app-server leaves of its socket: it binds the real socket (and a lock
/// file beside it) under `/tmp/codex-daemon-<uid>/`, named after our path, and links our path
/// to it. A clean exit removes the socket itself; SIGKILL leaves both.
fn remove_socket(link: &Path) {
    if let Ok(target) = std::fs::read_link(link) {
        let mut lock = target.clone().into_os_string();
        lock.push(".lock");
        let _ = std::fs::remove_file(&target);
        let _ = std::fs::remove_file(lock);
    }
    let _ = std::fs::remove_file(link);
}

impl AppServer {
    /// Spawns `codex app-server` on a unix socket in the runtime directory and waits until it
    /// accepts a connection.
    pub(crate) async fn start(options: AppServerOptions) -> Result<Self> {
        crate::paths::ensure_private_dir(&options.runtime_dir).wrap_err_with(|| {
            format!(
                "creating the runtime directory {}",
                options.runtime_dir.display()
            )
        })?;
        let socket = options.runtime_dir.join(SOCKET_NAME);
        if let Some(parent) = options.stderr_log.parent() {
            crate::paths::ensure_private_dir(parent)
                .wrap_err_with(|| format!("creating {}", parent.display()))?;
        }
        let stderr = open_private_log(&options.stderr_log)
            .wrap_err_with(|| format!("creating {}", options.stderr_log.display()))?;

        let (program, npm_env) = crate::process::codex::exec_target(&options.codex_bin);
        // Through the reaper where it can run (Linux, the cs-tui binary), so that the
        // app-server's tools die with cs-tui too; else directly, with the kernel's parent-death
        // signal where there is one: the npm wrapper forwards that SIGTERM. See `process`.
        // In a process group of its own: the npm `codex` is a Node wrapper around the real
        // binary, and only signalling the whole group stops both (docs/protocol.md §1).
        let (mut command, reaped) = crate::process::command_dying_with_us(&program);
        command
            .envs(npm_env)
            .arg("app-server")
            .arg("--listen")
            .arg(format!("unix://{}", socket.display()))
            .env("CODEX_HOME", &options.codex_home)
            // Its stderr goes to a log file (and its tail into events): plain text, no colours.
            .env("NO_COLOR", "1")
            .envs(options.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(stderr);
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(err) => {
                let _ = std::fs::remove_dir_all(&options.runtime_dir);
                return Err(eyre!(err)).wrap_err_with(|| {
                    format!(
                        "starting `{} app-server`",
                        options.codex_bin.to_string_lossy()
                    )
                });
            }
        };
        let group = Group {
            pgid: child.id().map(|p| p as i32).unwrap_or_default(),
            reaped,
        };
        // Its only write end: closed when we drop it or die, which tells the reaper to kill
        // everything.
        let reaper_pipe = child.stdin.take();

        let (exit_tx, exit_rx) = watch::channel(None);
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let stderr_log = options.stderr_log.clone();
        tokio::spawn(async move {
            let status = tokio::select! {
                status = child.wait() => status,
                _ = stop_rx => {
                    group.signal(Signal::SIGTERM);
                    match tokio::time::timeout(TERM_GRACE, child.wait()).await {
                        Ok(status) => status,
                        Err(_) => {
                            group.kill_now();
                            child.wait().await
                        }
                    }
                }
            };
            // The wrapper may be gone while the real binary lives on in the group. (Through the
            // reaper, nothing is left by now: it exits last.)
            group.signal(Signal::SIGKILL);
            let status = match status {
                Ok(s) => s.to_string(),
                Err(e) => format!("unknown ({e})"),
            };
            let _ = exit_tx.send(Some(AppServerExit {
                status,
                stderr_tail: stderr_tail(&stderr_log, 20),
            }));
        });

        let mut server = Self {
            group,
            _reaper_pipe: reaper_pipe,
            socket,
            runtime_dir: options.runtime_dir,
            stderr_log: options.stderr_log,
            exit: exit_rx,
            stop: Some(stop_tx),
            codex_version: None,
        };
        // The version (for the control connection's `initialize`) is read while the
        // app-server starts, so it costs no time.
        let (ready, version) = tokio::join!(
            server.wait_ready(),
            crate::process::codex::version(&options.codex_bin)
        );
        ready?;
        server.codex_version = version
            .inspect_err(|err| tracing::warn!("reading the Codex version: {err:#}"))
            .ok();
        Ok(server)
    }

    async fn wait_ready(&self) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut exit = self.exit.clone();
        loop {
            if let Some(exit) = exit.borrow_and_update().clone() {
                bail!(
                    "codex app-server exited during startup ({}); its last output:\n{}",
                    exit.status,
                    exit.stderr_tail
                );
            }
            if crate::proxy::socket::connect_unix(&self.socket)
                .await
                .is_ok()
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "codex app-server did not become ready within {READY_TIMEOUT:?}; its last output:\n{}",
                    stderr_tail(&self.stderr_log, 20)
                );
            }
            tokio::select! {
                _ = tokio::time::sleep(READY_POLL) => {}
                _ = exit.changed() => {}
            }
        }
    }

    /// Where to connect.
    pub(crate) fn addr(&self) -> AppServerAddr {
        AppServerAddr::Unix(self.socket.clone())
    }

    /// The version of the Codex that runs it (`codex --version`), when known.
    pub(crate) fn codex_version(&self) -> Option<&str> {
        self.codex_version.as_deref()
    }

    /// The process group id (the wrapper's pid).
    pub(crate) fn pgid(&self) -> i32 {
        self.group.pgid
    }

    /// A receiver that turns `Some` when the app-server exits.
    pub(crate) fn exit_watch(&self) -> watch::Receiver<Option<AppServerExit>> {
        self.exit.clone()
    }

    /// Stops the process group (SIGTERM, then SIGKILL after a grace period), waits for it, and
    /// removes its socket.
    pub(crate) async fn shutdown(mut self) -> Option<AppServerExit> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let mut exit = self.exit.clone();
        let result = tokio::time::timeout(TERM_GRACE * 3, exit.wait_for(Option::is_some))
            .await
            .ok()
            .and_then(|r| r.ok().and_then(|v| v.clone()));
        self.cleanup_files();
        result
    }

    fn cleanup_files(&self) {
        remove_socket(&self.socket);
        let _ = std::fs::remove_dir_all(&self.runtime_dir);
    }
}

impl Drop for AppServer {
    fn drop(&mut self) {
        if self.stop.is_some() {
            self.group.kill_now();
        }
        self.cleanup_files();
    }
}

/// 32 random bytes as hex: a capability or bearer token.
pub(crate) fn random_token() -> String {
    use rand::Rng as _;
    let bytes: [u8; 32] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Opens the app-server's log, emptied and readable by us only (0600, also when it existed):
/// what the app-server says may quote requests. A link in its place is not followed.
fn open_private_log(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(path)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    Ok(file)
}

/// The last `lines` lines of a log file.
pub(crate) fn stderr_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
