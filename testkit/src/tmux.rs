//! Drives a program inside a private tmux server, as a person at a terminal would: type keys,
//! read the screen, resize the window. Every wait polls with a deadline; nothing sleeps blind.

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// A tmux server of our own (its own socket), with one session running `command`.
pub struct Tmux {
    socket: String,
}

fn tmux_available() {
    let ok = Command::new("tmux")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "tmux is missing: the dashboard end-to-end tests drive cs-tui inside tmux. \
         Install it (scripts/test does: apt-get install tmux)."
    );
}

impl Tmux {
    /// Starts `program args…` in a detached `width`×`height` window, in `cwd`, with `env` added.
    /// The pane stays after the program exits so its last screen and exit status can be read.
    pub fn start(
        width: u16,
        height: u16,
        cwd: &Path,
        env: &[(&str, &OsStr)],
        program: &OsStr,
        args: &[&OsStr],
    ) -> Self {
        tmux_available();
        let socket = format!("cs-tui-test-{}", uuid_like());
        let tmux = Self { socket };
        let mut cmd = tmux.command();
        cmd.args(["-f", "/dev/null", "new-session", "-d", "-s", "main"])
            .args(["-x", &width.to_string(), "-y", &height.to_string()])
            .arg("-c")
            .arg(cwd);
        for (key, value) in env {
            let mut pair = std::ffi::OsString::from(key);
            pair.push("=");
            pair.push(value);
            cmd.arg("-e").arg(pair);
        }
        cmd.arg(program).args(args);
        let out = cmd.output().expect("run tmux");
        assert!(
            out.status.success(),
            "tmux new-session failed: {}",
            text(&out)
        );
        tmux.run(&["set-option", "-t", "main", "remain-on-exit", "on"]);
        // Keep the window at the size we ask for, whatever clients come and go.
        tmux.run(&["set-option", "-t", "main", "window-size", "manual"]);
        tmux
    }

    /// The private server's socket name (`tmux -L NAME`).
    pub fn socket(&self) -> &str {
        &self.socket
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new("tmux");
        cmd.args(["-L", &self.socket]);
        cmd
    }

    /// Runs a tmux command and returns its stdout.
    pub fn run(&self, args: &[&str]) -> String {
        let out = self.command().args(args).output().expect("run tmux");
        assert!(out.status.success(), "tmux {args:?} failed: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The screen as text.
    pub fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "main"])
    }

    /// The screen with colours and attributes as escape sequences.
    pub fn screen_with_escapes(&self) -> String {
        self.run(&["capture-pane", "-p", "-e", "-t", "main"])
    }

    /// A tmux format about the pane (`#{pane_dead}`, `#{alternate_on}`…).
    pub fn format(&self, format: &str) -> String {
        self.run(&["display-message", "-p", "-t", "main", format])
            .trim()
            .to_owned()
    }

    /// Types text literally.
    pub fn type_text(&self, text: &str) {
        self.run(&["send-keys", "-t", "main", "-l", text]);
    }

    /// Sends tmux key names (`Enter`, `C-]`, `Escape`).
    pub fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "main"];
        args.extend_from_slice(keys);
        self.run(&args);
    }

    /// Pastes text the way a terminal does: bracketed (`ESC[200~…ESC[201~`) when the program
    /// asked for bracketed paste.
    pub fn paste(&self, text: &str) {
        self.run(&["set-buffer", "-b", "cs-tui-test", text]);
        self.run(&[
            "paste-buffer",
            "-p",
            "-d",
            "-b",
            "cs-tui-test",
            "-t",
            "main",
        ]);
    }

    /// Types text and waits until Codex can take Enter as "submit". Codex treats keys that
    /// arrive within a few milliseconds of each other as a paste burst, and an Enter within
    /// ~120 ms of such a burst as a newline; a person types slower than that. So: wait until
    /// the text is on screen, then let that window pass.
    pub fn type_like_a_person(&self, text: &str) {
        self.type_text(text);
        let typed_at = Instant::now();
        self.wait_for(crate::WAIT, "the typed text", |screen| {
            screen.contains(text)
        });
        let window = Duration::from_millis(250);
        if let Some(left) = window.checked_sub(typed_at.elapsed()) {
            std::thread::sleep(left);
        }
    }

    pub fn resize(&self, width: u16, height: u16) {
        self.run(&[
            "resize-window",
            "-t",
            "main",
            "-x",
            &width.to_string(),
            "-y",
            &height.to_string(),
        ]);
    }

    /// Waits until `pred` holds for the screen; panics with the screen after `timeout`.
    pub fn wait_for(&self, timeout: Duration, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let screen = self.screen();
            if pred(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {what}; the screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(40));
        }
    }

    /// Like [`Tmux::wait_for`], but gives up quietly: `None` when `pred` did not hold in time.
    pub fn wait_for_within(
        &self,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let screen = self.screen();
            if pred(&screen) {
                return Some(screen);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(40));
        }
    }

    /// Waits until the program in the pane has exited (its terminal closed).
    pub fn wait_dead(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.format("#{pane_dead}") != "1" {
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for the program to exit; the screen:\n{}",
                self.screen()
            );
            std::thread::sleep(Duration::from_millis(40));
        }
    }

    /// Waits until the program in the pane has exited; returns its exit status. (tmux marks
    /// the pane dead when its terminal closes and learns the status a moment later.)
    pub fn wait_exit(&self, timeout: Duration) -> i32 {
        self.wait_dead(timeout);
        let deadline = Instant::now() + crate::WAIT;
        loop {
            if let Ok(status) = self.format("#{pane_dead_status}").parse() {
                return status;
            }
            let signal = self.format("#{pane_dead_signal}");
            assert!(
                signal.is_empty(),
                "the program was killed by signal {signal}"
            );
            assert!(
                Instant::now() < deadline,
                "tmux never learned the program's exit status"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The pane's process id.
    pub fn pane_pid(&self) -> i32 {
        self.format("#{pane_pid}").parse().expect("pane pid")
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.command().arg("kill-server").output();
    }
}

/// A control-mode client (`tmux -C`) of a [`Tmux`] server: commands go down one pipe and their
/// output comes back on another, with no process started per command. For measurements, where
/// a `tmux capture-pane` process every 2 ms would take a good part of a small machine's CPU
/// away from what is being measured.
pub struct ControlClient {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    lines: std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
}

impl Tmux {
    pub fn control(&self) -> ControlClient {
        use std::process::Stdio;
        let mut child = self
            .command()
            // No %output notifications: they would copy every byte the pane gets.
            .args(["-C", "attach-session", "-f", "no-output", "-t", "main"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start a tmux control client");
        let stdin = child.stdin.take().expect("piped stdin");
        let lines = std::io::BufRead::lines(std::io::BufReader::new(
            child.stdout.take().expect("piped stdout"),
        ));
        ControlClient {
            child,
            stdin,
            lines,
        }
    }
}

impl ControlClient {
    /// Runs a tmux command; returns its output. Panics if tmux reports an error.
    pub fn command(&mut self, command: &str) -> String {
        use std::io::Write as _;
        // A marker command after it tells this command's block from the attach's own.
        writeln!(self.stdin, "{command}\ndisplay-message -p cs-tui-mark").expect("tmux control");
        self.stdin.flush().expect("tmux control");
        let mut blocks = Vec::new();
        let mut block: Option<Vec<String>> = None;
        loop {
            let line = self
                .lines
                .next()
                .expect("tmux control client output")
                .expect("tmux control client output");
            match &mut block {
                None if line.starts_with("%begin ") => block = Some(Vec::new()),
                None => {} // a notification
                Some(body) if line.starts_with("%end ") || line.starts_with("%error ") => {
                    let body = std::mem::take(body);
                    assert!(!line.starts_with("%error "), "tmux {command:?}: {body:?}");
                    if body == ["cs-tui-mark"] {
                        // The block before the marker is this command's.
                        return blocks
                            .pop()
                            .map(|b: Vec<String>| b.join("\n"))
                            .unwrap_or_default();
                    }
                    blocks.push(body);
                    block = None;
                }
                Some(body) => body.push(line),
            }
        }
    }

    pub fn screen(&mut self) -> String {
        self.command("capture-pane -p -t main")
    }

    /// Sends tmux key names (`Enter`, `C-]`).
    pub fn keys(&mut self, keys: &str) {
        self.command(&format!("send-keys -t main {keys}"));
    }

    /// Pastes text (bracketed, as a terminal does). The text must not hold a single quote.
    pub fn paste(&mut self, text: &str) {
        assert!(!text.contains('\''), "{text:?}");
        self.command(&format!("set-buffer -b cs-tui-ctl '{text}'"));
        self.command("paste-buffer -p -d -b cs-tui-ctl -t main");
    }
}

impl Drop for ControlClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn uuid_like() -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!("{}-{n}-{nanos}", std::process::id())
}
