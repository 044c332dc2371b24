//! A pool of real `cs-tui serve` processes on one store, for the pool's end-to-end tests and
//! benchmark: each listens on its own unix socket, its stdout lines are read by a thread into
//! a log that tests wait on (with a deadline, never a sleep), and every process is killed when
//! the rig is dropped.
//!
//! It needs only `cs-tui-testkit` and the `cs-tui` binary (`CARGO_BIN_EXE_cs-tui`), so a bench
//! can include it as it is: `#[path = "../tests/e2e/support/pool.rs"] mod pool;`.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use cs_tui_testkit::{CodexHome, MockBackend, WAIT, codex_bin};
use serde_json::Value;

/// One line a session printed, stamped when its reader thread read it.
#[derive(Clone, Debug)]
pub(crate) struct Line {
    pub text: String,
    /// The line as JSON (an event); `None` for the plain `listening …` lines.
    pub json: Option<Value>,
    #[allow(
        dead_code,
        reason = "issue 14: the pool bench times when each session heard of a limit"
    )]
    pub at: Instant,
}

/// What a session printed so far; the reader thread appends and wakes the waiters.
#[derive(Default)]
struct Printed {
    lines: Mutex<(Vec<Line>, bool)>,
    grew: Condvar,
}

/// One running `cs-tui serve`.
pub(crate) struct PoolSession {
    child: Child,
    printed: Arc<Printed>,
    /// Its `--listen unix://PATH`.
    pub listen: String,
}

impl PoolSession {
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its session id (its runtime directory's name, `<pid>-<uuid>`), once it has one.
    pub(crate) fn session_id(&self, store: &Path) -> String {
        let prefix = format!("{}-", self.pid());
        self.wait_until("its runtime directory", || {
            std::fs::read_dir(store.join("runtime"))
                .ok()?
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .find(|name| name.starts_with(&prefix))
        })
    }

    /// Everything it printed so far.
    pub(crate) fn lines(&self) -> Vec<Line> {
        self.printed.lines.lock().unwrap().0.clone()
    }

    /// The events (JSON lines) it printed so far.
    pub(crate) fn events(&self) -> Vec<Value> {
        self.lines().into_iter().filter_map(|l| l.json).collect()
    }

    /// How many lines it printed so far: a mark for [`Self::wait_for_after`].
    pub(crate) fn mark(&self) -> usize {
        self.printed.lines.lock().unwrap().0.len()
    }

    /// The first event it printed (ever) for which `pred` holds; waits up to [`WAIT`].
    pub(crate) fn wait_for(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Line {
        self.wait_for_after(0, what, pred)
    }

    /// The first event printed after `mark` lines for which `pred` holds; waits up to
    /// [`WAIT`], then panics with what it printed.
    pub(crate) fn wait_for_after(
        &self,
        mark: usize,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Line {
        let deadline = Instant::now() + WAIT;
        let mut guard = self.printed.lines.lock().unwrap();
        loop {
            let (lines, ended) = &*guard;
            if let Some(line) = lines
                .iter()
                .skip(mark)
                .find(|l| l.json.as_ref().is_some_and(&pred))
            {
                return line.clone();
            }
            let now = Instant::now();
            if *ended || now >= deadline {
                let seen: Vec<String> = lines.iter().map(|l| l.text.clone()).collect();
                let ended = *ended;
                // Let go of the lock first: a panic holding it would poison it for the reader.
                drop(guard);
                panic!(
                    "session {} printed no {what} ({}); it printed: {seen:#?}",
                    self.child.id(),
                    if ended {
                        "its stdout closed"
                    } else {
                        "timed out"
                    }
                );
            }
            guard = self
                .printed
                .grew
                .wait_timeout(guard, deadline - now)
                .unwrap()
                .0;
        }
    }

    /// Returns when the session prints a line, or after `at_most`.
    #[allow(
        dead_code,
        reason = "the pool bench includes this file and does not use it"
    )]
    pub(crate) fn wait_printed(&self, at_most: std::time::Duration) {
        let guard = self.printed.lines.lock().unwrap();
        let _ = self.printed.grew.wait_timeout(guard, at_most).unwrap();
    }

    /// Polls `probe` whenever the session prints, and at least every 50 ms, up to [`WAIT`].
    fn wait_until<T>(&self, what: &str, probe: impl Fn() -> Option<T>) -> T {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(found) = probe() {
                return found;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            let guard = self.printed.lines.lock().unwrap();
            let _ = self
                .printed
                .grew
                .wait_timeout(guard, std::time::Duration::from_millis(50))
                .unwrap();
        }
    }
}

/// What `/proc` says of one process: CPU time used and resident memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ProcStats {
    /// utime + stime, in clock ticks (`getconf CLK_TCK`, 100 on Linux).
    pub cpu_ticks: u64,
    /// VmRSS.
    pub rss_kib: u64,
}

impl ProcStats {
    /// `None` once the process is gone.
    pub(crate) fn of(pid: u32) -> Option<Self> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The command name may hold spaces and parentheses: fields count from its last ')'.
        let fields: Vec<&str> = stat[stat.rfind(')')? + 2..].split(' ').collect();
        // After the name: state is field 3, utime 14 and stime 15 (1-based, `man 5 proc`).
        let ticks = |i: usize| fields.get(i - 3)?.parse::<u64>().ok();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let rss_kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0);
        Some(Self {
            cpu_ticks: ticks(14)? + ticks(15)?,
            rss_kib,
        })
    }
}

/// Every live process below `pid` (children, their children, …), from `/proc`.
pub(crate) fn descendants(pid: u32) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .map(|dir| {
            dir.flatten()
                .filter_map(|e| {
                    let child: u32 = e.file_name().to_str()?.parse().ok()?;
                    let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
                    let ppid = stat[stat.rfind(')')? + 2..]
                        .split(' ')
                        .nth(1)?
                        .parse()
                        .ok()?;
                    Some((child, ppid))
                })
                .collect()
        })
        .unwrap_or_default();
    let mut found = Vec::new();
    let mut frontier = vec![pid];
    while let Some(parent) = frontier.pop() {
        for (child, _) in parents.iter().filter(|(_, p)| *p == parent) {
            found.push(*child);
            frontier.push(*child);
        }
    }
    found
}

impl Drop for PoolSession {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// N `cs-tui serve` on one store, with one Codex home and the mock backend's accounts.
pub(crate) struct PoolRig {
    pub home: CodexHome,
    pub store: tempfile::TempDir,
    /// Where the sessions' sockets go (short paths: a socket address holds ~107 bytes).
    sockets: tempfile::TempDir,
    refresh_url: String,
    /// Each stored account's label and its id at the mock (its `chatgpt-account-id`).
    #[allow(
        dead_code,
        reason = "the pool bench includes this file and does not use it"
    )]
    mock_ids: Vec<(String, String)>,
    pub sessions: Vec<PoolSession>,
}

impl PoolRig {
    /// A store holding `labels` as accounts of `mock` (imported with `cs-tui accounts
    /// import`, so each has its own refresh-token chain).
    pub(crate) fn new(mock: &MockBackend, labels: &[&str]) -> Self {
        let mut rig = Self {
            home: CodexHome::offline(&mock.url()),
            store: tempfile::tempdir().unwrap(),
            sockets: tempfile::Builder::new().prefix("pool").tempdir().unwrap(),
            refresh_url: mock.refresh_url(),
            mock_ids: Vec::new(),
            sessions: Vec::new(),
        };
        for label in labels {
            let (fake, refresh) = mock.add_account(label);
            rig.mock_ids
                .push(((*label).to_owned(), fake.chatgpt_account_id.clone()));
            let file = rig.store.path().join(format!("{label}.auth.json"));
            std::fs::write(&file, fake.auth_json(3600, &refresh).to_string()).unwrap();
            let out = rig
                .command()
                .args(["accounts", "import", "--name", label, "--file"])
                .arg(&file)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "importing {label}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        rig
    }

    /// Account `label`'s id at the mock: its `chatgpt-account-id` header, and the key of
    /// [`MockBackend::set_mode`] and [`MockBackend::gate`].
    #[allow(
        dead_code,
        reason = "the pool bench includes this file and does not use it"
    )]
    pub(crate) fn mock_id(&self, label: &str) -> &str {
        self.mock_ids
            .iter()
            .find(|(l, _)| l == label)
            .map(|(_, id)| id.as_str())
            .unwrap_or_else(|| panic!("no account {label} in the rig"))
    }

    /// The environment a `cs-tui` of this rig runs with (for one started another way, such
    /// as a dashboard in tmux).
    #[allow(
        dead_code,
        reason = "the pool bench includes this file and does not use it"
    )]
    pub(crate) fn env(&self) -> Vec<(&'static str, std::ffi::OsString)> {
        vec![
            ("CS_TUI_HOME", self.store.path().into()),
            ("CODEX_HOME", self.home.path().into()),
            ("CS_TUI_CODEX_BIN", codex_bin().into()),
            (
                "CODEX_REFRESH_TOKEN_URL_OVERRIDE",
                (&self.refresh_url).into(),
            ),
        ]
    }

    /// `cs-tui` with this rig's store, Codex home, Codex binary and refresh endpoint (as the
    /// e2e tests' `cs_tui_command`), stdin closed, and the pool on unless a spawn says so.
    pub(crate) fn command(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_cs-tui"));
        command
            .env("CS_TUI_HOME", self.store.path())
            .env("CODEX_HOME", self.home.path())
            .env("CS_TUI_CODEX_BIN", codex_bin())
            .env("CODEX_REFRESH_TOKEN_URL_OVERRIDE", &self.refresh_url)
            .env_remove("CS_TUI_LOG")
            .env_remove("CS_TUI_POOL")
            .stdin(Stdio::null());
        command
    }

    /// Starts one more `cs-tui serve --listen unix://…` in `cwd` (the directory it reports),
    /// with `env` added; returns its index in [`Self::sessions`]. It is running, not
    /// necessarily ready: wait for its `active_account` event.
    pub(crate) fn spawn(&mut self, cwd: &Path, env: &[(&str, &OsStr)]) -> usize {
        let index = self.sessions.len();
        let socket = self.sockets.path().join(format!("s{index}.sock"));
        let listen = format!("unix://{}", socket.display());
        let mut command = self.command();
        command
            .current_dir(cwd)
            .args(["serve", "--listen", &listen])
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let printed = Arc::new(Printed::default());
        let sink = printed.clone();
        std::thread::spawn(move || {
            for text in BufReader::new(stdout).lines().map_while(Result::ok) {
                let line = Line {
                    json: serde_json::from_str(&text).ok(),
                    text,
                    at: Instant::now(),
                };
                sink.lines.lock().unwrap().0.push(line);
                sink.grew.notify_all();
            }
            sink.lines.lock().unwrap().1 = true;
            sink.grew.notify_all();
        });
        self.sessions.push(PoolSession {
            child,
            printed,
            listen,
        });
        index
    }

    /// Starts a session in `cwd` and waits until it has logged in (its `active_account`).
    pub(crate) fn spawn_ready(&mut self, cwd: &Path, env: &[(&str, &OsStr)]) -> usize {
        let index = self.spawn(cwd, env);
        self.sessions[index].wait_for("active account", |e| e["event"] == "active_account");
        index
    }

    /// Runs `cs-tui ARGS` on this store in `cwd`.
    pub(crate) fn run(&self, cwd: &Path, args: &[&str]) -> Output {
        self.command().current_dir(cwd).args(args).output().unwrap()
    }

    /// `cs-tui sessions --json` on this store, parsed (it must succeed).
    pub(crate) fn sessions_json(&self) -> Value {
        let out = self.run(self.store.path(), &["sessions", "--json"]);
        assert!(
            out.status.success(),
            "cs-tui sessions --json: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "sessions --json is not JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// The directory where the rig's sockets live (a scratch directory for tests too).
    pub(crate) fn scratch(&self) -> PathBuf {
        self.sockets.path().to_owned()
    }
}
