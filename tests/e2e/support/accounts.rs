//! Shared rig for the `accounts_*` tests: runs the real `cs-tui` binary with its store and
//! `CODEX_HOME` in temp dirs and the refresh endpoint on the mock backend, keeps every output,
//! and checks at the end that no token appeared in any of it (or in the log files).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;

use cs_tui_testkit::{CodexHome, MockBackend};
use serde_json::Value;
use tempfile::TempDir;

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_cs-tui");

/// One finished command.
#[derive(Debug)]
pub(crate) struct Run {
    pub args: Vec<String>,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    #[track_caller]
    pub(crate) fn ok(&self) -> &Self {
        assert_eq!(self.code, Some(0), "expected success: {self:#?}");
        self
    }

    #[track_caller]
    pub(crate) fn fails(&self) -> &Self {
        assert_eq!(self.code, Some(1), "expected failure: {self:#?}");
        self
    }

    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:#?}"))
    }

    /// stdout and stderr together.
    pub(crate) fn text(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

pub(crate) struct Rig {
    pub mock: MockBackend,
    pub codex_home: CodexHome,
    store: TempDir,
    runs: Mutex<Vec<Run>>,
    /// Every token a test handed out (auth.json files it wrote).
    secrets: Mutex<BTreeSet<String>>,
    /// Extra environment for every command.
    env: Vec<(String, String)>,
}

impl Rig {
    pub(crate) async fn new() -> Self {
        let mock = MockBackend::start().await;
        let codex_home = CodexHome::offline(&mock.url());
        let store = tempfile::Builder::new()
            .prefix("cs-tui-store-")
            .tempdir()
            .unwrap();
        Self {
            mock,
            codex_home,
            store,
            runs: Mutex::new(Vec::new()),
            secrets: Mutex::new(BTreeSet::new()),
            env: Vec::new(),
        }
    }

    pub(crate) fn with_env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// The store directory (`CS_TUI_HOME`); it does not exist until a command creates it.
    pub(crate) fn store_dir(&self) -> PathBuf {
        self.store.path().join("cs-tui")
    }

    pub(crate) fn accounts_json(&self) -> PathBuf {
        self.store_dir().join("accounts.json")
    }

    pub(crate) fn codex_auth_path(&self) -> PathBuf {
        self.codex_home.path().join("auth.json")
    }

    /// Remembers the tokens in an auth.json value, for the leak check.
    pub(crate) fn remember_secrets(&self, auth: &Value) {
        let mut secrets = self.secrets.lock().unwrap();
        for pointer in [
            "/tokens/id_token",
            "/tokens/access_token",
            "/tokens/refresh_token",
            "/OPENAI_API_KEY",
        ] {
            if let Some(s) = auth.pointer(pointer).and_then(Value::as_str) {
                secrets.insert(s.to_owned());
            }
        }
    }

    /// Writes `$CODEX_HOME/auth.json` as `codex login` would.
    pub(crate) fn write_codex_auth(&self, auth: &Value) {
        self.remember_secrets(auth);
        self.codex_home.write_auth_json(auth);
    }

    /// Writes an auth.json somewhere else and returns its path.
    pub(crate) fn write_auth_file(&self, name: &str, auth: &Value) -> PathBuf {
        self.remember_secrets(auth);
        let path = self.store.path().join(name);
        std::fs::write(&path, serde_json::to_vec_pretty(auth).unwrap()).unwrap();
        path
    }

    /// Stores `auth` as account `name` with `cs-tui accounts import --name NAME --file …`.
    pub(crate) async fn import(&self, name: &str, auth: &Value) {
        let file = self.write_auth_file(&format!("{name}.json"), auth);
        self.run(&[
            "accounts",
            "import",
            "--name",
            name,
            "--file",
            file.to_str().unwrap(),
        ])
        .await
        .ok();
    }

    /// Writes `auth` to the file `file_name` and imports it with `cs-tui accounts import
    /// --file …` (the account is named after the login).
    pub(crate) async fn import_file(&self, file_name: &str, auth: &Value) {
        let file = self.write_auth_file(file_name, auth);
        self.run(&["accounts", "import", "--file", file.to_str().unwrap()])
            .await
            .ok();
    }

    pub(crate) fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(BIN);
        cmd.args(args)
            .env("CS_TUI_HOME", self.store_dir())
            .env("CODEX_HOME", self.codex_home.path())
            .env("CODEX_REFRESH_TOKEN_URL_OVERRIDE", self.mock.refresh_url())
            .env("HOME", self.store.path())
            .env("CS_TUI_LOG", "trace")
            .env_remove("CS_TUI_CODEX_BIN")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (key, value) in &self.env {
            cmd.env(key, value);
        }
        cmd
    }

    /// Runs `cs-tui ARGS` to completion.
    pub(crate) async fn run(&self, args: &[&str]) -> Run {
        self.run_command(self.command(args), args).await
    }

    pub(crate) async fn run_command(&self, mut cmd: tokio::process::Command, args: &[&str]) -> Run {
        let output = cmd.output().await.expect("run cs-tui");
        let run = Run {
            args: args.iter().map(|s| s.to_string()).collect(),
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        };
        self.runs.lock().unwrap().push(Run {
            args: run.args.clone(),
            code: run.code,
            stdout: run.stdout.clone(),
            stderr: run.stderr.clone(),
        });
        run
    }

    /// The stored accounts file as JSON (test-side: it holds tokens).
    pub(crate) fn stored(&self) -> Value {
        serde_json::from_slice(&std::fs::read(self.accounts_json()).unwrap()).unwrap()
    }

    /// A stored account by name (test-side: holds tokens).
    pub(crate) fn stored_account(&self, name: &str) -> Value {
        self.stored()["accounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == name)
            .unwrap_or_else(|| panic!("no stored account {name}"))
            .clone()
    }

    pub(crate) fn stored_refresh_token(&self, name: &str) -> String {
        self.stored_account(name)["auth"]["refresh_token"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Every token known to this test: those it wrote, those in the store and its backup, and
    /// every refresh token the mock saw.
    fn all_secrets(&self) -> BTreeSet<String> {
        let mut secrets = self.secrets.lock().unwrap().clone();
        for file in ["accounts.json", "accounts.json.bak"] {
            let Ok(bytes) = std::fs::read(self.store_dir().join(file)) else {
                continue;
            };
            let Ok(json) = serde_json::from_slice::<Value>(&bytes) else {
                continue;
            };
            for account in json["accounts"].as_array().into_iter().flatten() {
                for key in ["id_token", "access_token", "refresh_token", "key"] {
                    if let Some(s) = account["auth"][key].as_str() {
                        secrets.insert(s.to_owned());
                    }
                }
            }
        }
        if let Ok(bytes) = std::fs::read(self.codex_auth_path())
            && let Ok(json) = serde_json::from_slice::<Value>(&bytes)
        {
            for pointer in [
                "/tokens/id_token",
                "/tokens/access_token",
                "/tokens/refresh_token",
            ] {
                if let Some(s) = json.pointer(pointer).and_then(Value::as_str) {
                    secrets.insert(s.to_owned());
                }
            }
        }
        for record in self.mock.requests() {
            secrets.extend(record.refresh_token);
        }
        secrets.retain(|s| s.len() >= 8);
        secrets
    }

    /// Fails if any token (or the payload of any JWT) appears in any command's output or in
    /// any log file of the store.
    #[track_caller]
    pub(crate) fn assert_no_secret_leaked(&self) {
        let secrets = self.all_secrets();
        assert!(
            !secrets.is_empty(),
            "the leak check needs tokens to look for"
        );
        let mut needles: BTreeSet<String> = BTreeSet::new();
        for secret in &secrets {
            needles.insert(secret.clone());
            // A JWT's payload alone would still be a leak.
            if let Some(payload) = secret.split('.').nth(1).filter(|p| p.len() >= 16) {
                needles.insert(payload.to_owned());
            }
        }
        let mut haystacks: Vec<(String, String)> = self
            .runs
            .lock()
            .unwrap()
            .iter()
            .map(|r| (format!("cs-tui {}", r.args.join(" ")), r.text()))
            .collect();
        assert!(!haystacks.is_empty());
        for log in log_files(&self.store_dir().join("logs")) {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            haystacks.push((log.display().to_string(), text));
        }
        for (source, text) in &haystacks {
            for needle in &needles {
                assert!(
                    !text.contains(needle.as_str()),
                    "a token leaked into {source}:\n{text}"
                );
            }
        }
    }
}

fn log_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| entries.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// Account `name` in the JSON of `accounts list --json` or `status --json`.
#[track_caller]
pub(crate) fn account<'a>(list: &'a Value, name: &str) -> &'a Value {
    list["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == name)
        .unwrap_or_else(|| panic!("no account {name} in {list:#}"))
}

/// The mode bits of a file or directory.
pub(crate) fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}
