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

#[test]
fn the_demo_switches_within_a_minute_exits_0_and_leaves_nothing_behind() {
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
    let before = snapshot(outside.path());

    let codex = codex_bin();
    let env: Vec<(&str, &OsStr)> = vec![
        ("HOME", home.as_os_str()),
        ("TMPDIR", tmp.as_os_str()),
        ("CS_TUI_HOME", store.as_os_str()),
        ("CODEX_HOME", codex_home.as_os_str()),
        ("CS_TUI_CODEX_BIN", codex.as_os_str()),
    ];
    let script = "\"$0\" demo; echo \"cs-tui exited $?\"; printf 'shell prompt> '; exec sleep 600";
    let t = cs_tui_under_sh(160, 48, &home, &env, script);
    let watch = NeverShown::start(&t, &["hit your usage limit", "usage limit reached"]);

    let started = t.wait_for(WAIT, "the demo on alice", |s| {
        panel(s).contains("● alice") && panel(s).contains("proxy ready")
    });
    assert!(
        panel(&started).contains("prompts are typed for you"),
        "{started}"
    );
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
    let after_exit = t.wait_for(WAIT, "the demo's history", |s| s.contains("shell prompt>"));
    let history = t.run(&["capture-pane", "-p", "-J", "-S", "-200", "-t", "main"]);
    assert!(
        history.contains("alice  bob  usage limit reached"),
        "{history}\n---\n{after_exit}"
    );
    assert!(history.contains("removed now"), "{history}");

    // Nothing of the demo is left: its directory (made in TMPDIR) is gone, and the user's
    // store, Codex home and home are as they were.
    assert_eq!(
        snapshot(outside.path()),
        before,
        "files changed outside the demo"
    );
    assert!(
        std::fs::read_dir(&tmp).unwrap().next().is_none(),
        "the demo left something in TMPDIR"
    );
    // (The shell that ran it waits in `home`.)
    assert_eq!(processes_in(&tmp), vec![], "processes left behind");
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
