//! cs-tui end to end, as a person uses it: the real `cs-tui` binary inside tmux, hosting the
//! real Codex TUI (plain, through the `CS_TUI_NO_PROXY` path) against the mock backend.
//!
//! Fails — never skips — when tmux or the pinned codex is missing.

use crate::support::cs_tui_under_sh;
use crate::support::product::paste_prompt;
use std::ffi::OsStr;
use std::time::Duration;

use cs_tui_testkit::Tmux;
use cs_tui_testkit::WAIT;
use cs_tui_testkit::{CodexHome, MockBackend, codex_bin};

struct Session {
    _mock: MockBackend,
    home: CodexHome,
    _store: tempfile::TempDir,
    tmux: Tmux,
    auth_before: Vec<u8>,
}

async fn start(width: u16, height: u16) -> Session {
    let mock = MockBackend::start().await;
    let (alice, refresh) = mock.add_account("alice");
    let home = CodexHome::offline(&mock.url());
    home.write_auth_json(&alice.auth_json(3600, &refresh));
    let auth_before = std::fs::read(home.path().join("auth.json")).unwrap();
    let store = tempfile::tempdir().unwrap();
    let codex = codex_bin();
    let refresh_url = mock.refresh_url();
    let env: Vec<(&str, &OsStr)> = vec![
        ("CS_TUI_NO_PROXY", OsStr::new("1")),
        ("CS_TUI_HOME", store.path().as_os_str()),
        ("CS_TUI_CODEX_BIN", codex.as_os_str()),
        ("CODEX_HOME", home.path().as_os_str()),
        ("CODEX_REFRESH_TOKEN_URL_OVERRIDE", OsStr::new(&refresh_url)),
    ];
    // cs-tui runs under sh, which afterwards prints its exit status and whether the terminal
    // is back in canonical (cooked) mode: what a person would find after quitting.
    let script = "trap '' INT; \"$0\"; echo \"cs-tui exited $?\"; stty -a | tr ' ;' '\\n\\n' | grep -x -- '-\\?icanon'; \
                  printf 'shell prompt> '; exec sleep 600";
    let tmux = cs_tui_under_sh(width, height, home.work_dir(), &env, script);
    Session {
        _mock: mock,
        home,
        _store: store,
        tmux,
        auth_before,
    }
}

/// The last `rows` lines of the screen.
fn bottom(screen: &str, rows: usize) -> Vec<&str> {
    let lines: Vec<&str> = screen.lines().collect();
    lines[lines.len().saturating_sub(rows)..].to_vec()
}

fn ready(screen: &str) -> bool {
    screen.contains("OpenAI Codex")
        && screen.contains("Ask Codex to do anything")
        && screen.contains("gpt-5.1-codex")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codex_runs_in_the_pane_and_the_dashboard_around_it_works() {
    let s = start(160, 48).await;
    let t = &s.tmux;

    // Codex starts in the pane, the panel beside it with the prefix in its footer.
    let screen = t.wait_for(
        WAIT,
        "Codex ready in the pane, the panel beside it",
        |screen| {
            ready(screen) && screen.contains("╭ cs-tui") && screen.contains("Ctrl+] then ? help")
        },
    );
    let composer = screen.lines().find(|l| l.contains("Ask Codex")).unwrap();
    assert!(
        composer.contains("│"),
        "the panel sits right of the composer: {composer:?}"
    );

    // A pasted prompt (bracketed paste through the pane) and Enter: the reply appears.
    paste_prompt(t, "alice", "hello pane");

    // A typed prompt: keys go through the pane's encoder, Enter arrives as \r.
    t.type_like_a_person("typed prompt");
    t.keys(&["Enter"]);
    t.wait_for(WAIT, "the reply to the typed prompt", |screen| {
        screen.contains("Served by alice: you said \"typed prompt\"")
    });

    // Backspace (0x7f) edits the composer.
    t.type_like_a_person("abcX");
    t.keys(&["BSpace"]);
    t.wait_for(WAIT, "backspace to delete a character", |screen| {
        screen.contains("› abc") && !screen.contains("› abcX")
    });
    // Ctrl+U clears it again (an emacs-style Ctrl key reaches Codex).
    t.keys(&["C-u"]);
    t.wait_for(WAIT, "Ctrl+U to clear the composer", |screen| {
        screen.contains("Ask Codex to do anything")
    });

    // The panel toggles: hidden, a one-line status bar takes its place; shown again.
    t.keys(&["C-]", "p"]);
    let screen = t.wait_for(WAIT, "the panel hidden", |screen| {
        !screen.contains("╭ cs-tui") && bottom(screen, 1)[0].contains("cs-tui")
    });
    let composer = screen.lines().find(|l| l.contains("Ask Codex")).unwrap();
    assert!(!composer.contains("│"), "{composer:?}");
    t.keys(&["C-]", "p"]);
    t.wait_for(WAIT, "the panel back", |screen| screen.contains("╭ cs-tui"));

    // Resizing the window: the panel collapses on a narrow terminal, the PTY gets the new
    // size, and Codex redraws for it (its composer sits just above our status bar).
    t.resize(100, 30);
    let screen = t.wait_for(WAIT, "Codex redrawn at 100x30", |screen| {
        let lines: Vec<&str> = screen.lines().collect();
        lines.len() == 30
            && !screen.contains("╭ cs-tui")
            && lines[29].contains("cs-tui")
            && lines[20..29].iter().any(|l| l.contains("Ask Codex"))
            && lines.iter().all(|l| l.chars().count() <= 100)
    });
    println!("after resize:\n{screen}");
    t.resize(160, 48);
    t.wait_for(WAIT, "Codex redrawn at 160x48 with the panel", |screen| {
        let lines: Vec<&str> = screen.lines().collect();
        screen.contains("╭ cs-tui") && lines[38..48].iter().any(|l| l.contains("Ask Codex"))
    });

    // Help, then quit (asks first; "n" stays).
    t.keys(&["C-]", "?"]);
    t.wait_for(WAIT, "the help overlay", |screen| {
        screen.contains("cs-tui hotkeys")
    });
    t.keys(&["Escape"]);
    t.wait_for(WAIT, "the help closed", |screen| {
        !screen.contains("cs-tui hotkeys")
    });
    t.keys(&["C-]", "q"]);
    t.wait_for(WAIT, "the quit question", |screen| {
        screen.contains("Quit cs-tui?")
    });
    t.keys(&["n"]);
    t.wait_for(WAIT, "still running", |screen| {
        !screen.contains("Quit cs-tui?") && ready(screen)
    });
    t.keys(&["C-]", "q"]);
    t.wait_for(WAIT, "the quit question", |screen| {
        screen.contains("Quit cs-tui?")
    });
    t.keys(&["y"]);
    let screen = t.wait_for(WAIT, "cs-tui gone and the shell back", |screen| {
        screen.contains("shell prompt>")
    });
    println!("after quit:\n{screen}");
    assert!(screen.contains("cs-tui exited 0"), "{screen}");
    assert!(
        screen.lines().any(|l| l.trim() == "icanon"),
        "the terminal is back in canonical mode: {screen}"
    );
    assert_eq!(t.format("#{alternate_on}"), "0", "alternate screen left");
    assert_eq!(t.format("#{cursor_flag}"), "1", "cursor shown");
    assert_eq!(t.format("#{mouse_any_flag}"), "0", "mouse reporting off");
    assert!(
        !screen.contains("OpenAI Codex"),
        "nothing of the dashboard is left on the screen: {screen}"
    );

    // cs-tui never touched the user's Codex login.
    assert_eq!(
        std::fs::read(s.home.path().join("auth.json")).unwrap(),
        s.auth_before
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codex_exit_code_becomes_cs_tui_exit_code_and_the_terminal_is_restored() {
    let s = start(120, 30).await;
    let t = &s.tmux;
    t.wait_for(WAIT, "Codex ready", ready);
    paste_prompt(t, "alice", "one prompt");
    // Ctrl+C quits Codex (its own key, passed through the pane); it may first ask for
    // another one. (The shell around cs-tui ignores SIGINT, so a late Ctrl+C cannot kill it.)
    for _ in 0..3 {
        if t.screen().contains("shell prompt>") {
            break;
        }
        t.keys(&["C-c"]);
        let deadline = std::time::Instant::now() + WAIT;
        while std::time::Instant::now() < deadline {
            let screen = t.screen();
            if screen.contains("shell prompt>") || screen.contains("again to quit") {
                break;
            }
            std::thread::sleep(Duration::from_millis(40));
        }
    }
    let screen = t.wait_for(WAIT, "the shell back", |screen| {
        screen.contains("shell prompt>")
    });
    println!("after Codex quit:\n{screen}");
    assert!(screen.contains("cs-tui exited 0"), "{screen}");
    // Codex's parting hint survives the alternate screen.
    assert!(screen.contains("codex resume"), "{screen}");
    assert!(screen.lines().any(|l| l.trim() == "icanon"), "{screen}");
    assert_eq!(t.format("#{alternate_on}"), "0");

    // Plain Codex leaves its managed app-server daemon running from `$CODEX_HOME/packages`;
    // the fixture must not leave it behind (CI would collect ~250 MB per test).
    let home = s.home.path().to_owned();
    drop(s);
    assert!(
        cs_tui_testkit::codex_home::processes_under(&home).is_empty(),
        "no process left running from the test CODEX_HOME"
    );
    assert!(!home.exists(), "the test CODEX_HOME is removed");
}

/// The state letter of a process (`R`, `S`, `T` for stopped, …).
fn process_state(pid: i32) -> char {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    stat[stat.rfind(')').unwrap() + 2..].chars().next().unwrap()
}

fn only_child_of(pid: i32) -> i32 {
    let out = std::process::Command::new("pgrep")
        .args(["-P", &pid.to_string()])
        .output()
        .expect("pgrep");
    let children: Vec<i32> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(children.len(), 1, "children of {pid}: {children:?}");
    children[0]
}

fn wait_until(what: &str, mut pred: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + WAIT;
    while !pred() {
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Job control: SIGTSTP gives the outer terminal back (main screen, cooked mode) and stops
/// cs-tui, while Codex runs on; SIGCONT takes the terminal again and redraws it all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigtstp_gives_the_terminal_back_and_sigcont_redraws() {
    let s = start(160, 40).await;
    let t = &s.tmux;
    t.wait_for(WAIT, "Codex ready beside the panel", |screen| {
        ready(screen) && screen.contains("╭ cs-tui")
    });
    let cs_tui = only_child_of(t.pane_pid());
    let codex = only_child_of(cs_tui);
    let tty = t.format("#{pane_tty}");
    let canonical = || {
        let out = std::process::Command::new("stty")
            .args(["-F", &tty, "-a"])
            .output()
            .expect("stty");
        String::from_utf8_lossy(&out.stdout)
            .split([' ', ';', '\n'])
            .any(|word| word == "icanon")
    };
    assert!(!canonical(), "the dashboard runs in raw mode");
    let signal = |sig| nix::sys::signal::kill(nix::unistd::Pid::from_raw(cs_tui), sig).unwrap();

    signal(nix::sys::signal::Signal::SIGTSTP);
    wait_until("cs-tui stopped", || process_state(cs_tui) == 'T');
    assert_eq!(t.format("#{alternate_on}"), "0", "back on the main screen");
    assert!(canonical(), "the terminal is back in cooked mode");
    assert!(
        !t.screen().contains("Ask Codex to do anything"),
        "the dashboard is off the screen:\n{}",
        t.screen()
    );
    assert_ne!(process_state(codex), 'T', "Codex runs on");

    signal(nix::sys::signal::Signal::SIGCONT);
    t.wait_for(WAIT, "the whole dashboard drawn again", |screen| {
        ready(screen) && screen.contains("╭ cs-tui")
    });
    assert_eq!(t.format("#{alternate_on}"), "1");
    assert!(!canonical(), "raw mode again");
    // Keys reach Codex again.
    t.paste("after the stop");
    t.wait_for(WAIT, "the pasted prompt", |screen| {
        screen.contains("› after the stop")
    });
}

/// A resize that reaches cs-tui together with keys is not lost, and neither are the keys.
/// crossterm's default (mio, edge-triggered) reader handled one of the two and dropped the
/// other's readiness: the layout stayed at the old size until the next resize, or the keys sat
/// unread until the next key. cs-tui is stopped while the window shrinks and the keys are typed,
/// so both wait for it when it continues.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resize_arriving_with_keys_is_applied_and_the_keys_too() {
    let s = start(160, 40).await;
    let t = &s.tmux;
    t.wait_for(WAIT, "Codex ready beside the panel", |screen| {
        ready(screen) && screen.contains("╭ cs-tui")
    });
    let cs_tui = only_child_of(t.pane_pid());
    let tty = t.format("#{pane_tty}");
    let tty_size = || {
        let out = std::process::Command::new("stty")
            .args(["-F", &tty, "size"])
            .output()
            .expect("stty");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    // The column the panel's frame starts at.
    let panel_at = |screen: &str| {
        screen
            .lines()
            .find_map(|l| l.find("╭ cs-tui").map(|b| l[..b].chars().count()))
    };
    let signal = |sig| nix::sys::signal::kill(nix::unistd::Pid::from_raw(cs_tui), sig).unwrap();
    for (width, height) in [(130u16, 40u16), (160, 40)] {
        signal(nix::sys::signal::Signal::SIGSTOP);
        wait_until("cs-tui stopped", || process_state(cs_tui) == 'T');
        t.resize(width, height);
        // tmux resizes the pane's terminal a moment later; then SIGWINCH is pending.
        wait_until("the terminal resized", || {
            tty_size() == format!("{height} {width}")
        });
        t.keys(&["C-]", "?"]);
        signal(nix::sys::signal::Signal::SIGCONT);
        t.wait_for(WAIT, "the help the keys ask for", |s| {
            s.contains("this help")
        });
        t.keys(&["Escape"]);
        let want = usize::from(width) - 44;
        t.wait_for(
            WAIT,
            &format!("the panel laid out for {width} columns"),
            |s| !s.contains("this help") && panel_at(s) == Some(want),
        );
    }
}
