//! `cs-tui demo` as a new user meets it, in tmux with the real Codex: within a minute the
//! gauges move, alice's limit is met and the turn continues on bob with no error in Codex's
//! pane, the switch is in the panel's history; quitting exits 0, prints the history, and leaves
//! nothing behind — not in the user's store, `CODEX_HOME` or home, not in the temporary
//! directory, and no process.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cs_tui_testkit::{WAIT, codex_bin};

use crate::support::cs_tui_under_sh;
use crate::support::product::{NeverShown, panel, quit};
use cs_tui_testkit::tmux::Tmux;

/// What the issue promises: the switch within a minute of starting.
const SWITCH_WITHIN: Duration = Duration::from_secs(60);

/// Every file under `dir` with its contents.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(next) = todo.pop() {
        for entry in std::fs::read_dir(&next).unwrap().flatten() {
            let path = entry.path();
            if entry.file_type().unwrap().is_dir() {
                todo.push(path.clone());
                files.insert(path, Vec::new());
            } else {
                files.insert(path.clone(), std::fs::read(&path).unwrap_or_default());
            }
        }
    }
    files
}

/// This user's processes whose working directory or program is under `dir`.
fn processes_in(dir: &Path) -> Vec<(i32, PathBuf)> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| {
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            ["cwd", "exe"].iter().find_map(|link| {
                let target = std::fs::read_link(entry.path().join(link)).ok()?;
                target.starts_with(dir).then_some((pid, target))
            })
        })
        .collect()
}

/// A user's machine in a temporary directory: `home`, `TMPDIR`, their own store and Codex home.
struct Machine {
    outside: tempfile::TempDir,
    home: PathBuf,
    tmp: PathBuf,
    store: PathBuf,
    codex_home: PathBuf,
}

impl Machine {
    fn new() -> Self {
        let outside = tempfile::Builder::new()
            .prefix("cs-tui-demo-e2e-")
            .tempdir()
            .unwrap();
        let [home, tmp, store, codex_home] =
            ["home", "tmp", "store", "codex-home"].map(|d| outside.path().join(d));
        for dir in [&home, &tmp, &store, &codex_home] {
            std::fs::create_dir(dir).unwrap();
        }
        // A user's own store and Codex login, which the demo must not touch.
        std::fs::write(store.join("config.toml"), "[panel]\nside = \"right\"\n").unwrap();
        std::fs::write(codex_home.join("auth.json"), "{\"auth_mode\": \"chatgpt\"}").unwrap();
        Self {
            outside,
            home,
            tmp,
            store,
            codex_home,
        }
    }

    /// `script` (with `$0` the cs-tui binary) in tmux, in `home`, with this machine's
    /// environment.
    fn run(&self, script: &str) -> Tmux {
        let codex = codex_bin();
        let env: Vec<(&str, &OsStr)> = vec![
            ("HOME", self.home.as_os_str()),
            ("TMPDIR", self.tmp.as_os_str()),
            ("CS_TUI_HOME", self.store.as_os_str()),
            ("CODEX_HOME", self.codex_home.as_os_str()),
            ("CS_TUI_CODEX_BIN", codex.as_os_str()),
        ];
        cs_tui_under_sh(160, 48, &self.home, &env, script)
    }

    /// Asserts that nothing of a demo is left: no directory in `TMPDIR`, no process there, and
    /// everything else as in `before`.
    fn assert_nothing_left(&self, before: &BTreeMap<PathBuf, Vec<u8>>) {
        assert_eq!(
            &snapshot(self.outside.path()),
            before,
            "files changed outside the demo"
        );
        assert!(
            std::fs::read_dir(&self.tmp).unwrap().next().is_none(),
            "the demo left something in TMPDIR"
        );
        // (The shell that ran it waits in `home`.)
        assert_eq!(processes_in(&self.tmp), vec![], "processes left behind");
    }
}

/// Runs the demo, then leaves the shell waiting.
const DEMO: &str =
    "\"$0\" demo; echo \"cs-tui exited $?\"; printf 'shell prompt> '; exec sleep 600";

fn started(t: &Tmux) -> String {
    t.wait_for(WAIT, "the demo on alice", |s| {
        panel(s).contains("● alice") && panel(s).contains("proxy ready")
    })
}

#[test]
fn the_demo_switches_within_a_minute_exits_0_and_leaves_nothing_behind() {
    let machine = Machine::new();
    let before = snapshot(machine.outside.path());
    let t = machine.run(DEMO);
    let watch = NeverShown::start(&t, &["hit your usage limit", "usage limit reached"]);

    t.wait_for(WAIT, "the demo on alice, with the autopilot", |s| {
        panel(s).contains("● alice")
            && panel(s).contains("proxy ready")
            && panel(s).contains("prompts are typed for you")
    });
    let switched = t.wait_for(SWITCH_WITHIN, "the switch to bob", |s| {
        panel(s).contains("alice → bob") && panel(s).contains("● bob")
    });
    assert!(
        panel(&switched).contains("usage limit reached"),
        "{switched}"
    );
    // The turn that met the limit is answered on bob, and the story goes on there.
    t.wait_for(WAIT, "the re-run's reply", |s| {
        s.contains("Added three tests")
    });
    t.wait_for(WAIT, "the story's last reply, on bob", |s| {
        s.contains("Summary: a --strict flag") && panel(s).contains("demo: your turn")
    });
    watch.assert_never_seen();

    quit(&t);
    let history = t.run(&["capture-pane", "-p", "-J", "-S", "-200", "-t", "main"]);
    assert!(
        history.contains("alice  bob  usage limit reached"),
        "{history}"
    );
    assert!(history.contains("removed now"), "{history}");
    machine.assert_nothing_left(&before);
}

#[test]
fn a_demo_killed_with_sigkill_is_cleaned_up_by_the_next_one() {
    let machine = Machine::new();
    let before = snapshot(machine.outside.path());
    // A killed program cannot give the terminal back: `stty sane` does, as a user would.
    let second = DEMO.replacen("demo", "demo --keep", 1);
    // Under the usual umask, so that a directory made with the default mode would be readable
    // by others.
    let script = format!("umask 022; \"$0\" demo --no-autopilot; stty sane; {second}");
    let t = machine.run(&script);
    started(&t);
    let sandbox = std::fs::read_dir(&machine.tmp)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("cs-tui-demo-")
        })
        .expect("the first demo's directory");
    // Everything the demo makes is the user's alone: its directory, the store, the Codex home,
    // the work and temporary directories (0700), the owner file and Codex's config (0600).
    for (path, mode) in [
        (sandbox.clone(), 0o700),
        (sandbox.join("store"), 0o700),
        (sandbox.join("codex-home"), 0o700),
        (sandbox.join("work"), 0o700),
        (sandbox.join("tmp"), 0o700),
        (sandbox.join("owner.pid"), 0o600),
        (sandbox.join("codex-home/config.toml"), 0o600),
    ] {
        use std::os::unix::fs::PermissionsExt as _;
        let actual = std::fs::symlink_metadata(&path)
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(actual, mode, "{} is {actual:o}", path.display());
    }
    let pid: i32 = std::fs::read_to_string(sandbox.join("owner.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();

    // The second demo starts where the first one died, and sweeps its directory away.
    t.wait_for(WAIT, "the second demo typing", |s| {
        panel(s).contains("prompts are typed for you")
    });
    assert!(
        !sandbox.exists(),
        "the killed demo's directory is still there"
    );
    quit(&t);
    // It was asked to keep its own directory: kept, and marked so that no later demo sweeps
    // it away.
    let kept: Vec<PathBuf> = std::fs::read_dir(&machine.tmp)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert!(kept[0].join("store/accounts.json").is_file());
    assert!(!kept[0].join("owner.pid").exists());
    let screen = t.screen();
    assert!(screen.contains("The demo's directory is kept"), "{screen}");
    std::fs::remove_dir_all(&kept[0]).unwrap();
    machine.assert_nothing_left(&before);
}

#[test]
fn without_codex_the_demo_says_so_and_leaves_nothing_behind() {
    let outside = tempfile::Builder::new()
        .prefix("cs-tui-demo-e2e-")
        .tempdir()
        .unwrap();
    let tmp = outside.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let out = std::process::Command::new(crate::support::accounts::BIN)
        .arg("demo")
        .env("TMPDIR", &tmp)
        .env("HOME", outside.path())
        .env("CS_TUI_CODEX_BIN", outside.path().join("no-codex-here"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot find the codex binary"), "{stderr}");
    assert!(stderr.contains("npm install -g @openai/codex"), "{stderr}");
    assert!(
        std::fs::read_dir(&tmp).unwrap().next().is_none(),
        "the demo left something in TMPDIR"
    );
}
