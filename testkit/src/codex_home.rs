//! An offline `CODEX_HOME` (docs/protocol.md §6): config that sends every backend call to the mock.

use std::path::{Path, PathBuf};

use serde_json::Value;
use tempfile::TempDir;

/// A temporary `CODEX_HOME` plus a trusted work directory, removed on drop — together with the
/// background app-server that plain `codex` (0.157+, `features.daemon_auto_start`) starts from
/// `$CODEX_HOME/packages` and leaves running after the TUI exits.
pub struct CodexHome {
    dir: TempDir,
    work_dir: PathBuf,
}

impl CodexHome {
    /// Writes `config.toml` pointing the ChatGPT base URL and a custom model provider at the
    /// mock, with every network-reaching feature off.
    pub fn offline(mock_base_url: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("cs-tui-codex-home-")
            .tempdir()
            .expect("create temp CODEX_HOME");
        let work_dir = dir.path().join("work");
        std::fs::create_dir_all(&work_dir).expect("create work dir");
        let home = Self { dir, work_dir };
        std::fs::write(
            home.path().join("config.toml"),
            offline_config(mock_base_url, &home.work_dir),
        )
        .expect("write config.toml");
        home
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Kills every process whose executable lives under this `CODEX_HOME` (Codex's managed
    /// app-server daemon and its helpers) and waits until they are gone.
    pub fn stop_daemons(&self) {
        kill_and_wait(&processes_under(self.path()));
    }

    /// A directory the config marks as trusted; run Codex with `-C` pointing here.
    pub fn work_dir(&self) -> &Path {
        &self.work_dir
    }

    /// Writes `auth.json` (mode 0600) as `codex login` would.
    pub fn write_auth_json(&self, auth: &Value) {
        let path = self.path().join("auth.json");
        std::fs::write(
            &path,
            serde_json::to_vec_pretty(auth).expect("serialize auth.json"),
        )
        .expect("write auth.json");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .expect("chmod auth.json");
        }
    }
}

/// The model the offline config selects; the mock's catalog describes it.
pub const MODEL: &str = "gpt-5.1-codex";

/// The offline `config.toml` of docs/protocol.md §6: the ChatGPT base URL and a custom model
/// provider point at the mock, every network-reaching feature is off, and `work_dir` is trusted.
pub fn offline_config(mock: &str, work_dir: &Path) -> String {
    let mock = mock.trim_end_matches('/');
    let work = work_dir.display();
    format!(
        r#"chatgpt_base_url = "{mock}/backend-api/"
model_provider = "mock"
model = "{MODEL}"
check_for_update_on_startup = false

[model_providers.mock]
name = "mock"
base_url = "{mock}/backend-api/codex"
wire_api = "responses"
requires_openai_auth = true
supports_websockets = false
request_max_retries = 0
stream_max_retries = 0

[features]
apps = false
plugins = false
remote_plugin = false
unbounded_connection_retries = false

[analytics]
enabled = false

[feedback]
enabled = false

[notice]
hide_rate_limit_model_nudge = true

[tui]
screen_reader_detection_done = true

[projects."{work}"]
trust_level = "trusted"
"#
    )
}

impl Drop for CodexHome {
    fn drop(&mut self) {
        // Before the directory goes: a live daemon would recreate its databases in it, and a
        // process still running on it (a Codex TUI or app-server of a cs-tui that is ending as
        // its tmux server goes) would write its databases and config into the half-removed
        // directory, which then stays behind in the temporary directory.
        self.stop_daemons();
        kill_and_wait(&processes_on(self.path()));
    }
}

/// Kills `pids` and waits (at most [`crate::WAIT`]) until each has exited; an exited child
/// nobody has reaped yet (a zombie) holds no files and counts as gone.
fn kill_and_wait(pids: &[i32]) {
    for &pid in pids {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let running = |pid: &i32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            // "pid (comm) S …": the state follows the last ')'.
            stat.rsplit_once(')')
                .is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X']))
        })
    };
    let deadline = std::time::Instant::now() + crate::WAIT;
    while pids.iter().any(running) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Pids of ours whose environment sets `CODEX_HOME` to `dir`: every process running on it.
pub fn processes_on(dir: &Path) -> Vec<i32> {
    let mut wanted = b"CODEX_HOME=".to_vec();
    wanted.extend_from_slice(dir.as_os_str().as_encoded_bytes());
    let own = i32::try_from(std::process::id()).ok();
    processes_where("environ", |pid, environ| {
        Some(pid) != own
            && environ
                .split(|&b| b == 0)
                .any(|var| var == wanted.as_slice())
    })
}

/// Pids whose `argv[0]` is a path under `dir`.
pub fn processes_under(dir: &Path) -> Vec<i32> {
    processes_where("cmdline", |_, cmdline| {
        cmdline
            .split(|&b| b == 0)
            .next()
            .and_then(|argv0| std::str::from_utf8(argv0).ok())
            .is_some_and(|argv0| Path::new(argv0).starts_with(dir))
    })
}

/// Pids whose `/proc/PID/{file}` (readable: ours) passes `test`.
fn processes_where(file: &str, test: impl Fn(i32, &[u8]) -> bool) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            let contents = std::fs::read(entry.path().join(file)).ok()?;
            test(pid, &contents).then_some(pid)
        })
        .collect()
}
