//! Runs the real `codex app-server` on a free loopback port for a test.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tempfile::TempDir;

/// A running `codex app-server`. Dropping it kills its whole process group (the npm `codex` is
/// a Node wrapper around the real binary, so signalling only the wrapper would leave it running).
pub struct AppServer {
    child: Child,
    port: u16,
    token: String,
    runtime: TempDir,
}

impl AppServer {
    /// Spawns `codex app-server` with `CODEX_HOME=codex_home`, sends token refreshes to
    /// `refresh_url`, and waits until `/readyz` answers 200.
    pub async fn spawn(codex_bin: &Path, codex_home: &Path, refresh_url: &str) -> Self {
        let runtime = tempfile::Builder::new()
            .prefix("cs-tui-app-server-")
            .tempdir()
            .expect("runtime dir");
        let token = format!("{}", uuid::Uuid::new_v4().simple());
        let token_file = runtime.path().join("ws-token");
        std::fs::write(&token_file, &token).expect("write token file");
        let port = free_port();
        let stderr = std::fs::File::create(runtime.path().join("stderr.log")).expect("stderr log");
        let mut command = Command::new(codex_bin);
        command
            .arg("app-server")
            .arg("--listen")
            .arg(format!("ws://127.0.0.1:{port}"))
            .arg("--ws-auth")
            .arg("capability-token")
            .arg("--ws-token-file")
            .arg(&token_file)
            .env("CODEX_HOME", codex_home)
            .env("CODEX_REFRESH_TOKEN_URL_OVERRIDE", refresh_url)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let child = command.spawn().expect("spawn codex app-server");
        let mut server = Self {
            child,
            port,
            token,
            runtime,
        };
        server.wait_ready(crate::WAIT).await;
        server
    }

    async fn wait_ready(&mut self, timeout: Duration) {
        let client = reqwest::Client::new();
        let url = format!("http://127.0.0.1:{}/readyz", self.port);
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(resp) = client.get(&url).send().await
                && resp.status().is_success()
            {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "codex app-server exited during startup ({status}); stderr:\n{}",
                    self.stderr()
                );
            }
            assert!(
                Instant::now() < deadline,
                "codex app-server not ready after {timeout:?}; stderr:\n{}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `ws://127.0.0.1:PORT`.
    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    pub fn token_file(&self) -> PathBuf {
        self.runtime.path().join("ws-token")
    }

    /// What the app-server wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.runtime.path().join("stderr.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for AppServer {
    fn drop(&mut self) {
        let group = Pid::from_raw(self.child.id() as i32);
        let _ = killpg(group, Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("reserve a loopback port")
}
