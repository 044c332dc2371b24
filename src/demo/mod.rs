//! `cs-tui demo`: the real product — Codex in the pane, the proxy, the panel, switching and the
//! hidden re-run — against a simulated ChatGPT backend with three demo accounts, in one
//! temporary directory that is removed at the end.
//!
//! ```text
//!  sandbox (0700 temp dir): store/  codex-home/  work/  tmp/
//!  env: CS_TUI_HOME=store  CODEX_HOME=codex-home  TMPDIR=tmp  refresh URL → simulated backend
//!  simulated backend (127.0.0.1, random key in every token) ◀── app-server, cs-tui's polls
//!  dashboard (app::run) ── proxy events ──▶ autopilot ── paste / Enter ──▶ Codex in the pane
//! ```
//!
//! The sandbox is made before any thread starts, because it points the process's environment
//! at itself: every part of cs-tui, Codex's app-server and the Codex TUI then read and write
//! only there, and nothing reaches the user's store, `~/.codex` or the network.

mod backend;
mod pilot;
mod script;
mod tokens;

use std::ffi::OsString;
use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use color_eyre::eyre::{Result, WrapErr, eyre};

pub(crate) use backend::SimBackend;
pub(crate) use pilot::fly;

use crate::accounts::Store;

/// Variables that would take the demo somewhere else (a development mode, a real API key).
const CLEARED_ENV: &[&str] = &[
    "CS_TUI_NO_PROXY",
    "CS_TUI_DEV_EVENTS",
    "CS_TUI_DEV_COMMANDS",
    "OPENAI_API_KEY",
    "CODEX_API_KEY",
];

/// How the demo's directories are named in `$TMPDIR`.
const PREFIX: &str = "cs-tui-demo-";
/// The pid of the demo that made the directory.
const OWNER_FILE: &str = "owner.pid";

/// The demo's temporary directory, its backend's socket and its key.
pub(crate) struct Sandbox {
    root: tempfile::TempDir,
    listener: Option<std::net::TcpListener>,
    /// Every token the simulated backend accepts carries it.
    key: String,
    /// When the demo's accounts were made (unix seconds).
    now: i64,
}

impl Sandbox {
    /// Makes the sandbox and points this process's environment at it.
    ///
    /// # Safety
    /// No other thread may exist yet: the environment is changed.
    pub(crate) unsafe fn create() -> Result<Self> {
        sweep_abandoned(&std::env::temp_dir());
        // Every directory is ours alone (0700): tempfile's default mode follows the umask (0755
        // under the usual 022), which would let other users read the logs, the Codex home and
        // the files Codex and its tools put in the demo's TMPDIR.
        let root = tempfile::Builder::new()
            .prefix(PREFIX)
            .permissions(std::fs::Permissions::from_mode(0o700))
            .tempdir()
            .wrap_err("creating the demo's temporary directory")?;
        for dir in ["store", "codex-home", "work", "tmp"] {
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(root.path().join(dir))
                .wrap_err_with(|| format!("creating {dir} in the demo's directory"))?;
        }
        crate::paths::create_private_file(
            &root.path().join(OWNER_FILE),
            std::process::id().to_string().as_bytes(),
        )
        .wrap_err("writing the demo's owner file")?;
        let listener = std::net::TcpListener::bind("127.0.0.1:0")
            .wrap_err("opening a port on 127.0.0.1 for the demo's backend")?;
        let base = format!("http://{}", listener.local_addr()?);
        let sandbox = Self {
            listener: Some(listener),
            key: uuid::Uuid::new_v4().simple().to_string(),
            now: chrono::Utc::now().timestamp(),
            root,
        };
        crate::paths::create_private_file(
            &sandbox.codex_home().join("config.toml"),
            codex_config(&base, &sandbox.work_dir()).as_bytes(),
        )
        .wrap_err("writing the demo's Codex config")?;
        let set: [(&str, OsString); 4] = [
            (crate::paths::STORE_DIR_ENV, sandbox.store_dir().into()),
            ("CODEX_HOME", sandbox.codex_home().into()),
            ("TMPDIR", sandbox.tmp_dir().into()),
            (
                crate::accounts::tokens::REFRESH_URL_ENV,
                format!("{base}/oauth/token").into(),
            ),
        ];
        // SAFETY: the caller guarantees no other thread exists.
        unsafe {
            for (key, value) in set {
                std::env::set_var(key, value);
            }
            for key in CLEARED_ENV {
                std::env::remove_var(key);
            }
        }
        Ok(sandbox)
    }

    pub(crate) fn root(&self) -> &Path {
        self.root.path()
    }

    pub(crate) fn store_dir(&self) -> PathBuf {
        self.root().join("store")
    }

    fn codex_home(&self) -> PathBuf {
        self.root().join("codex-home")
    }

    /// Where Codex runs: an empty project the config trusts.
    pub(crate) fn work_dir(&self) -> PathBuf {
        self.root().join("work")
    }

    fn tmp_dir(&self) -> PathBuf {
        self.root().join("tmp")
    }

    /// Stores the three demo accounts (alice first, so active).
    pub(crate) fn seed(&self, store: &Store) -> Result<()> {
        for account in script::accounts(self.now) {
            let auth = serde_json::to_vec(&account.identity.auth_json(self.now, &self.key))?;
            let auth = crate::accounts::codex_auth::parse_auth_json(&auth)
                .map_err(|why| eyre!("a demo login does not parse: {why}"))?;
            crate::accounts::import_auth(store, &auth, Some(account.identity.name))?;
        }
        Ok(())
    }

    /// Starts the simulated backend; inside the runtime.
    pub(crate) fn start_backend(&mut self) -> Result<SimBackend> {
        let listener = self
            .listener
            .take()
            .ok_or_else(|| eyre!("the demo's backend was started already"))?;
        SimBackend::start(listener, script::accounts(self.now), self.key.clone())
    }

    /// Stops what still runs from the sandbox and removes it, unless `keep`. Returns the
    /// directory when kept.
    pub(crate) fn close(self, keep: bool) -> Result<Option<PathBuf>> {
        stop_processes_under(self.root());
        if keep {
            // Without its owner file, no later demo sweeps it away.
            std::fs::remove_file(self.root().join(OWNER_FILE))
                .wrap_err("keeping the demo's directory")?;
            return Ok(Some(self.root.keep()));
        }
        let path = self.root().to_owned();
        self.root
            .close()
            .wrap_err_with(|| format!("removing the demo's directory {}", path.display()))?;
        Ok(None)
    }
}

/// Removes the directories of earlier demos that were killed before they could (`kill -9`, a
/// power cut): ours (same user, a real directory), named as the demo names them, whose owner
/// file names a process that is gone. Best effort and quiet.
fn sweep_abandoned(temp_dir: &Path) {
    use std::os::unix::fs::MetadataExt as _;
    let Ok(entries) = std::fs::read_dir(temp_dir) else {
        return;
    };
    let uid = nix::unistd::getuid().as_raw();
    for entry in entries.flatten() {
        let path = entry.path();
        let ours = entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(PREFIX))
            && std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir() && m.uid() == uid);
        if !ours {
            continue;
        }
        let Some(pid) = std::fs::read_to_string(path.join(OWNER_FILE))
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
        else {
            // Being made right now, or not the demo's.
            continue;
        };
        let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok();
        if !alive {
            stop_processes_under(&path);
            match std::fs::remove_dir_all(&path) {
                Ok(()) => {
                    tracing::info!(path = %path.display(), "removed an abandoned demo directory")
                }
                Err(e) => {
                    tracing::debug!(path = %path.display(), error = %e, "could not remove an abandoned demo directory")
                }
            }
        }
    }
}

/// Codex's config for the demo (docs/protocol.md §6): the ChatGPT base URL and the model
/// provider point at the simulated backend, every feature that would reach the network is off,
/// and the work directory is trusted (no trust prompt).
fn codex_config(base: &str, work_dir: &Path) -> String {
    let model = backend::MODEL;
    let work = work_dir.display();
    format!(
        r#"chatgpt_base_url = "{base}/backend-api/"
model_provider = "cs-tui-demo"
model = "{model}"
check_for_update_on_startup = false

[model_providers.cs-tui-demo]
name = "cs-tui demo"
base_url = "{base}/backend-api/codex"
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

/// Kills this user's processes whose program lies in `dir` (a Codex daemon started from the
/// demo's `CODEX_HOME`), so that nothing of the demo outlives it.
fn stop_processes_under(dir: &Path) {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    let me = std::process::id();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        if pid.unsigned_abs() == me {
            continue;
        }
        let Ok(exe) = std::fs::read_link(entry.path().join("exe")) else {
            // Another user's process, or gone.
            continue;
        };
        if exe.starts_with(dir) {
            tracing::info!(pid, "demo: stopping a process left in the sandbox");
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_abandoned_demo_directories_are_swept() {
        let temp = tempfile::tempdir().unwrap();
        let dir = |name: &str, owner: Option<&str>| {
            let path = temp.path().join(name);
            std::fs::create_dir(&path).unwrap();
            std::fs::write(path.join("file"), "x").unwrap();
            if let Some(owner) = owner {
                std::fs::write(path.join(OWNER_FILE), owner).unwrap();
            }
            path
        };
        // A pid that cannot be running (above the kernel's maximum).
        let dead = dir("cs-tui-demo-dead", Some("2147483600"));
        let alive = dir("cs-tui-demo-alive", Some(&std::process::id().to_string()));
        let unowned = dir("cs-tui-demo-new", None);
        let other = dir("something-else", Some("2147483600"));
        let target = dir("target", Some("2147483600"));
        let link = temp.path().join("cs-tui-demo-link");
        std::os::unix::fs::symlink(&target, &link).unwrap();

        sweep_abandoned(temp.path());

        assert!(!dead.exists());
        for kept in [&alive, &unowned, &other, &target] {
            assert!(kept.join("file").exists(), "{}", kept.display());
        }
        assert!(
            link.symlink_metadata().is_ok(),
            "a link is not followed or removed"
        );
    }

    #[test]
    fn the_codex_config_points_everything_at_the_backend_and_parses() {
        let text = codex_config("http://127.0.0.1:9", Path::new("/tmp/x/work"));
        let config: toml::Table = text.parse().unwrap();
        assert_eq!(
            config["chatgpt_base_url"].as_str(),
            Some("http://127.0.0.1:9/backend-api/")
        );
        assert_eq!(
            config["model_providers"]["cs-tui-demo"]["base_url"].as_str(),
            Some("http://127.0.0.1:9/backend-api/codex")
        );
        assert_eq!(
            config["projects"]["/tmp/x/work"]["trust_level"].as_str(),
            Some("trusted")
        );
    }
}
