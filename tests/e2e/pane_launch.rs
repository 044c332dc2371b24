//! How cs-tui starts and stops, outside the happy path: a clear message instead of a blank
//! screen, Codex's exit code passed on.

use crate::support::cs_tui_under_sh;
use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use cs_tui_testkit::Tmux;
use cs_tui_testkit::WAIT;

/// cs-tui with its store in `store` and no codex override from the caller's environment.
fn cs_tui(store: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cs-tui"));
    cmd.env("CS_TUI_HOME", store).env_remove("CS_TUI_CODEX_BIN");
    cmd
}

fn stderr_of(cmd: &mut Command) -> (i32, String) {
    let out = cmd.output().expect("run cs-tui");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_missing_codex_binary_is_named_with_what_to_do() {
    let store = tempfile::tempdir().unwrap();
    let (code, stderr) = stderr_of(
        cs_tui(store.path())
            .env("CS_TUI_NO_PROXY", "1")
            .args(["--codex-bin", "/nonexistent/codex"]),
    );
    assert_eq!(code, 1);
    assert!(stderr.contains("cannot find the codex binary"), "{stderr}");
    assert!(stderr.contains("/nonexistent/codex"), "{stderr}");
    assert!(stderr.contains("hint: install it"), "{stderr}");
}

#[test]
fn subcommands_that_cannot_run_through_the_proxy_are_refused() {
    let store = tempfile::tempdir().unwrap();
    for args in [&["exec", "hi"][..], &["login"], &["--remote", "ws://x"]] {
        let (code, stderr) = stderr_of(cs_tui(store.path()).env("CS_TUI_NO_PROXY", "1").args(args));
        assert_eq!(code, 1, "{args:?}");
        assert!(stderr.starts_with("error: "), "{args:?}: {stderr}");
        assert!(stderr.contains("hint:"), "{args:?}: {stderr}");
    }
}

#[test]
fn a_broken_config_file_is_named() {
    let store = tempfile::tempdir().unwrap();
    std::fs::write(store.path().join("config.toml"), "prefix_key = \"x\"\n").unwrap();
    let (code, stderr) = stderr_of(&mut cs_tui(store.path()));
    assert_eq!(code, 1);
    assert!(stderr.contains("config.toml"), "{stderr}");
    assert!(stderr.contains("plain character"), "{stderr}");
}

#[test]
fn codex_exit_code_is_cs_tui_exit_code_and_a_spawn_failure_is_readable() {
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("codex");
    std::fs::write(
        &fake,
        "#!/bin/sh\necho \"fake codex got: $*\"; echo \"TERM=$TERM COLORTERM=$COLORTERM TMUX=${TMUX:-unset}\"; sleep 0.3; exit 3\n",
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let script = "\"$0\" resume --last; echo \"cs-tui exited $?\"; exec sleep 600";
    let t = Tmux::start(
        120,
        20,
        dir.path(),
        &[
            ("CS_TUI_NO_PROXY", OsStr::new("1")),
            ("CS_TUI_HOME", dir.path().as_os_str()),
            ("CS_TUI_CODEX_BIN", fake.as_os_str()),
        ],
        OsStr::new("sh"),
        &[
            OsStr::new("-c"),
            OsStr::new(script),
            OsStr::new(env!("CARGO_BIN_EXE_cs-tui")),
        ],
    );
    let screen = t.wait_for(WAIT, "the exit status", |screen| {
        screen.contains("cs-tui exited")
    });
    assert!(screen.contains("cs-tui exited 3"), "{screen}");
    assert_eq!(t.format("#{alternate_on}"), "0");
}

#[test]
fn the_child_sees_the_pane_not_tmux() {
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("codex");
    std::fs::write(
        &fake,
        "#!/bin/sh\necho \"args: $*\"; echo \"env: TERM=$TERM COLORTERM=$COLORTERM TMUX=${TMUX:-unset} TMUX_PANE=${TMUX_PANE:-unset}\"; stty size; exec sleep 600\n",
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let t = Tmux::start(
        160,
        40,
        dir.path(),
        &[
            ("CS_TUI_NO_PROXY", OsStr::new("1")),
            ("CS_TUI_HOME", dir.path().as_os_str()),
            ("CS_TUI_CODEX_BIN", fake.as_os_str()),
        ],
        OsStr::new(env!("CARGO_BIN_EXE_cs-tui")),
        &[OsStr::new("resume"), OsStr::new("--last")],
    );
    let cwd = std::fs::canonicalize(dir.path()).unwrap();
    let screen = t.wait_for(WAIT, "the fake codex output", |screen| {
        screen.contains("env:") && screen.lines().any(|l| l.trim_start().starts_with("40 "))
    });
    assert!(
        screen.contains(&format!("args: resume -C {} --last", cwd.display())),
        "{screen}"
    );
    assert!(
        screen.contains("env: TERM=xterm-256color COLORTERM=truecolor TMUX=unset TMUX_PANE=unset"),
        "{screen}"
    );
    // The PTY is the pane's size: 160 columns less the 44-column panel, all 40 rows.
    assert!(
        screen.lines().any(|l| l.trim_start().starts_with("40 116")),
        "{screen}"
    );
}

fn fake_codex(dir: &Path, body: &str) -> std::path::PathBuf {
    let fake = dir.join("codex");
    std::fs::write(&fake, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    fake
}

fn run_in_tmux(dir: &Path, codex: &Path) -> Tmux {
    run_in_tmux_with(
        dir,
        &[
            ("CS_TUI_NO_PROXY", OsStr::new("1")),
            ("CS_TUI_HOME", dir.as_os_str()),
            ("CS_TUI_CODEX_BIN", codex.as_os_str()),
        ],
    )
}

fn run_in_tmux_with(dir: &Path, env: &[(&str, &OsStr)]) -> Tmux {
    let script = "\"$0\"; echo \"cs-tui exited $?\"; stty -a | tr ' ;' '\\n\\n' | grep -x -- '-\\?icanon'; echo 'shell prompt>'; exec sleep 600";
    cs_tui_under_sh(120, 20, dir, env, script)
}

#[test]
fn sigterm_ends_the_session_and_restores_the_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let fake = fake_codex(dir.path(), "echo fake codex running; exec sleep 600");
    let t = run_in_tmux(dir.path(), &fake);
    t.wait_for(WAIT, "the fake codex", |s| s.contains("fake codex running"));
    // cs-tui is the child of the pane's shell.
    let pid = Command::new("pgrep")
        .args(["-P", &t.pane_pid().to_string()])
        .output()
        .expect("pgrep");
    let pid: i32 = String::from_utf8_lossy(&pid.stdout)
        .trim()
        .parse()
        .expect("cs-tui pid");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let screen = t.wait_for(WAIT, "the shell back", |s| s.contains("shell prompt>"));
    assert!(screen.contains("cs-tui exited 143"), "{screen}");
    assert!(screen.lines().any(|l| l.trim() == "icanon"), "{screen}");
    assert!(!screen.contains("fake codex running"), "{screen}");
}

#[test]
fn a_codex_that_cannot_start_is_a_message_after_the_terminal_is_restored() {
    // (The exec failure surfaces as the child's exit code 1, with nothing on its screen.)
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("codex");
    std::fs::write(&fake, "#!/nonexistent/interpreter\n").unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let t = run_in_tmux(dir.path(), &fake);
    let screen = t.wait_for(WAIT, "the shell back", |s| s.contains("shell prompt>"));
    assert!(screen.contains("cs-tui exited 1"), "{screen}");
    assert!(
        screen.contains("error: codex exited with code 1"),
        "{screen}"
    );
    assert!(
        screen.contains("hint: it stopped right after starting"),
        "{screen}"
    );
    assert!(screen.lines().any(|l| l.trim() == "icanon"), "{screen}");
    assert_eq!(t.format("#{alternate_on}"), "0");
}

#[test]
fn a_failing_codex_leaves_its_last_words_on_the_restored_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let fake = fake_codex(
        dir.path(),
        "echo 'Error: loading config.toml: invalid type at line 3'; exit 2",
    );
    let t = run_in_tmux(dir.path(), &fake);
    let screen = t.wait_for(WAIT, "the shell back", |s| s.contains("shell prompt>"));
    assert!(screen.contains("cs-tui exited 2"), "{screen}");
    assert!(
        screen.contains("error: codex exited with code 2; its last output:"),
        "{screen}"
    );
    assert!(
        screen.contains("  Error: loading config.toml: invalid type at line 3"),
        "{screen}"
    );
}

/// The proxy starts while Codex does; when it cannot (here: no account at all), Codex is
/// stopped and the proxy's reason, with its hint, is what the restored terminal shows.
#[test]
fn a_proxy_that_cannot_start_is_a_message_after_the_terminal_is_restored() {
    let dir = tempfile::tempdir().unwrap();
    let codex_home = dir.path().join("codex-home");
    std::fs::create_dir_all(&codex_home).unwrap();
    let codex = cs_tui_testkit::codex_bin();
    let store = dir.path().join("store");
    let t = run_in_tmux_with(
        dir.path(),
        &[
            ("CS_TUI_HOME", store.as_os_str()),
            ("CS_TUI_CODEX_BIN", codex.as_os_str()),
            ("CODEX_HOME", codex_home.as_os_str()),
        ],
    );
    let screen = t.wait_for(WAIT, "the shell back", |s| s.contains("shell prompt>"));
    assert!(screen.contains("cs-tui exited 1"), "{screen}");
    assert!(
        screen.contains("error: no stored ChatGPT account can start a session"),
        "{screen}"
    );
    assert!(
        screen.contains("hint: add one with `cs-tui accounts import`"),
        "{screen}"
    );
    assert!(screen.lines().any(|l| l.trim() == "icanon"), "{screen}");
    assert_eq!(t.format("#{alternate_on}"), "0");
}

/// A panic in a background task (here the dev event replay, told to panic) ends the session:
/// Codex is stopped, the terminal restored, and the panic said there — not a dashboard left
/// running on a cooked terminal, nor one running on without the task.
#[test]
fn a_panic_off_the_ui_thread_ends_the_session_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let fake = fake_codex(dir.path(), "echo fake codex running; exec sleep 600");
    let events = dir.path().join("events.jsonl");
    std::fs::write(&events, "").unwrap();
    let t = run_in_tmux_with(
        dir.path(),
        &[
            ("CS_TUI_NO_PROXY", OsStr::new("1")),
            ("CS_TUI_DEV_EVENTS", events.as_os_str()),
            ("CS_TUI_HOME", dir.path().as_os_str()),
            ("CS_TUI_CODEX_BIN", fake.as_os_str()),
        ],
    );
    t.wait_for(WAIT, "the fake codex", |s| s.contains("fake codex running"));
    std::fs::write(&events, "panic\n").unwrap();
    let screen = t.wait_for(WAIT, "the shell back", |s| s.contains("shell prompt>"));
    assert!(screen.contains("cs-tui exited 1"), "{screen}");
    assert!(
        screen.contains("error: cs-tui stopped: an internal task panicked"),
        "{screen}"
    );
    assert!(
        screen.contains("the events file asked for a panic"),
        "{screen}"
    );
    assert!(screen.lines().any(|l| l.trim() == "icanon"), "{screen}");
    assert_eq!(t.format("#{alternate_on}"), "0");
}

/// Whatever the command line, cs-tui answers with a message and an exit code, never a panic
/// (`cs-tui -é` used to cut `é` in half).
#[test]
fn no_argv_panics() {
    use std::os::unix::ffi::OsStrExt;
    let store = tempfile::tempdir().unwrap();
    let table: &[&[&[u8]]] = &[
        &[b"-\xc3\xa9"],
        &[b"-\xc3\xa9x", b"hi"],
        &[b"-\xf0\x9f\x98\x80"],
        &[b"--\xc3\xbc=1"],
        &[b"-m"],
        &[b"-"],
        &[b"--="],
        &[b"\xff\xfe"],
        &[b"-\xff"],
        &[b"accounts", b"rename", b"\xc3\xa9", b"\xc3\xbc"],
        &[b"accounts", b"use", b"\xe2\x80\xae"],
        &[b"status", b"--timeout", b"99999999999999999999999"],
        &[b"status", b"--timeout", b"-1"],
        &[b"switch", b"\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"],
        &[b"serve", b"--listen", b"[::1]:99999"],
        &[b"serve", b"--listen", b"\xc3\xa9"],
    ];
    for args in table {
        let args: Vec<&OsStr> = args.iter().map(|a| OsStr::from_bytes(a)).collect();
        // No codex: anything that would start the dashboard stops at that, before the terminal.
        let (code, stderr) = stderr_of(
            cs_tui(store.path())
                .env("CS_TUI_NO_PROXY", "1")
                .env("CS_TUI_CODEX_BIN", "/nonexistent/codex")
                .args(&args),
        );
        assert!(
            code == 1 || code == 2,
            "{args:?}: exit code {code}, stderr:\n{stderr}"
        );
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(!stderr.trim().is_empty(), "{args:?}: no message");
    }
}
