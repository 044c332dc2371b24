//! What a package installs, from the real binary: `cs-tui --version` with the pinned Codex, a
//! missing one, one that hangs, one that prints nonsense and one that cannot run;
//! `cs-tui completions` and `cs-tui man` on stdout and into a directory, and their errors.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::accounts::BIN;

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The pinned Codex (node_modules/.bin/codex, the npm wrapper), whatever codex the suite runs.
fn pinned_codex() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("node_modules/.bin/codex")
}

/// A scratch directory that is the store (`CS_TUI_HOME`) and holds fake codex binaries.
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Self {
        Self {
            dir: tempfile::Builder::new()
                .prefix("cs-tui-pkg-")
                .tempdir()
                .unwrap(),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// An executable script `name` in its own directory (to put on PATH).
    fn script(&self, name: &str, body: &str) -> PathBuf {
        let dir = self.path().join(format!("bin-{name}"));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("codex");
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    /// `cs-tui ARGS` with `CS_TUI_CODEX_BIN` as given (else unset) and PATH as given.
    fn run(&self, args: &[&str], codex_env: Option<&Path>, path: &str) -> Output {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .env_remove("CS_TUI_CODEX_BIN")
            .env("CS_TUI_HOME", self.path().join("store"))
            .env("PATH", path)
            .stdin(Stdio::null());
        if let Some(codex) = codex_env {
            cmd.env("CS_TUI_CODEX_BIN", codex);
        }
        let out = cmd.output().unwrap();
        assert!(
            !self.path().join("store").exists(),
            "{args:?} wrote to the store"
        );
        out
    }
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

#[track_caller]
fn assert_version_line(out: &Output, codex: &str) {
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        stdout(out),
        format!("cs-tui {VERSION} ({codex})\n"),
        "{out:?}"
    );
    assert!(out.stderr.is_empty(), "{out:?}");
}

#[test]
fn version_names_the_pinned_codex_from_the_env_the_flag_or_path() {
    let scratch = Scratch::new();
    let pinned = pinned_codex();
    for flag in ["--version", "-V"] {
        let out = scratch.run(&[flag], Some(&pinned), "/usr/bin:/bin");
        assert_version_line(&out, "codex-cli 0.169.0");
    }
    // Found on PATH, as `codex`.
    let on_path = scratch.path().join("path");
    std::fs::create_dir(&on_path).unwrap();
    std::os::unix::fs::symlink(&pinned, on_path.join("codex")).unwrap();
    let path = format!("{}:/usr/bin:/bin", on_path.display());
    assert_version_line(&scratch.run(&["-V"], None, &path), "codex-cli 0.169.0");
    // --codex-bin wins over the environment.
    let out = scratch.run(
        &["--codex-bin", pinned.to_str().unwrap(), "--version"],
        Some(Path::new("/nonexistent/codex")),
        "/usr/bin:/bin",
    );
    assert_version_line(&out, "codex-cli 0.169.0");
}

#[test]
fn version_without_a_codex_says_not_found_and_succeeds() {
    let scratch = Scratch::new();
    let empty = scratch.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let out = scratch.run(&["--version"], None, empty.to_str().unwrap());
    assert_version_line(&out, "codex: not found");
    let out = scratch.run(
        &["-V"],
        Some(Path::new("/nonexistent/codex")),
        "/usr/bin:/bin",
    );
    assert_version_line(&out, "codex: not found");
}

#[test]
fn version_with_a_broken_codex_says_why_and_succeeds() {
    let scratch = Scratch::new();
    let nonsense = scratch.script("nonsense", "echo 'no idea'; exit 1");
    let out = scratch.run(&["-V"], Some(&nonsense), "/usr/bin:/bin");
    assert_version_line(
        &out,
        &format!(
            "codex: `{} --version` printed no version (exit status: 1)",
            nonsense.display()
        ),
    );

    let not_executable = scratch.script("noexec", "echo codex-cli 9.9.9");
    std::fs::set_permissions(&not_executable, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = scratch.run(&["-V"], Some(&not_executable), "/usr/bin:/bin");
    let line = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        line.starts_with(&format!(
            "cs-tui {VERSION} (codex: running `{} --version`: ",
            not_executable.display()
        )) && line.contains("ermission denied"),
        "{out:?}"
    );
}

#[test]
fn version_with_a_hanging_codex_gives_up_and_kills_it() {
    let scratch = Scratch::new();
    let pid_file = scratch.path().join("codex.pid");
    let hanging = scratch.script(
        "hangs",
        &format!("echo $$ > '{}'; exec sleep 600", pid_file.display()),
    );
    let started = Instant::now();
    let out = scratch.run(&["--version"], Some(&hanging), "/usr/bin:/bin");
    let took = started.elapsed();
    assert_version_line(
        &out,
        &format!(
            "codex: `{} --version` did not answer within 3s",
            hanging.display()
        ),
    );
    assert!(took < Duration::from_secs(60), "took {took:?}");
    // The hanging codex was killed, not left behind: gone, or a zombie waiting for its reaper.
    let pid = std::fs::read_to_string(&pid_file).unwrap();
    let stat = format!("/proc/{}/stat", pid.trim());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match std::fs::read_to_string(&stat) {
            Err(_) => break,
            Ok(s) if s.rsplit(')').next().unwrap().trim_start().starts_with('Z') => break,
            Ok(s) => assert!(Instant::now() < deadline, "codex still runs: {s}"),
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn completions_and_man_pages_come_from_the_binary() {
    let scratch = Scratch::new();
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = scratch.run(&["completions", shell], None, "/usr/bin:/bin");
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        let script = stdout(&out);
        assert!(
            script.contains("cs-tui") && script.contains("accounts"),
            "{shell}"
        );
    }
    let out = scratch.run(&["completions", "tcsh"], None, "/usr/bin:/bin");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("invalid value 'tcsh'") && err.contains("bash"),
        "{err}"
    );

    let out = scratch.run(&["man"], None, "/usr/bin:/bin");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(stdout(&out).contains(".TH cs-tui 1"), "{out:?}");

    let dir = scratch.path().join("share/man/man1");
    let out = scratch.run(
        &["man", "--dir", dir.to_str().unwrap()],
        None,
        "/usr/bin:/bin",
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let listed: Vec<String> = stdout(&out).lines().map(str::to_owned).collect();
    assert!(listed.len() > 10, "{listed:?}");
    for path in &listed {
        assert!(
            std::fs::read_to_string(path).unwrap().starts_with(".ie"),
            "{path}"
        );
    }
    assert!(dir.join("cs-tui-accounts-import.1").is_file());

    // A directory that cannot be made: a clear error, nothing written.
    let file = scratch.path().join("a-file");
    std::fs::write(&file, "keep me").unwrap();
    let target = file.join("man1");
    let out = scratch.run(
        &["man", "--dir", target.to_str().unwrap()],
        None,
        "/usr/bin:/bin",
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("creating {}", target.display())),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");
}

#[test]
fn a_reader_that_stops_early_is_not_an_error() {
    // stdout is a pipe whose reading end is closed: every write fails with EPIPE.
    let (read, write) = nix::unistd::pipe().unwrap();
    drop(read);
    for args in [&["completions", "bash"][..], &["man"][..]] {
        let out = Command::new(BIN)
            .args(args)
            .stdout(write.try_clone().unwrap())
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}: {out:?}");
        assert!(out.stderr.is_empty(), "{args:?}: {out:?}");
    }
}
