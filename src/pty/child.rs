//! The child process in a PTY: spawn with a clean environment, read its output on a thread,
//! write input on another, resize, and stop its whole process group.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use color_eyre::eyre::{Result, WrapErr, eyre};
use portable_pty::{CommandBuilder, MasterPty, PtySize, native_pty_system};
use tokio::sync::mpsc;

use crate::errors::WithHint;

/// What the PTY threads report to the app.
#[derive(Debug)]
pub enum PtyEvent {
    /// Bytes the child wrote.
    Output(Vec<u8>),
    /// The child exited with this code (after its output was drained).
    Exited(i32),
}

/// What the pane emulates: `TERM`/`COLORTERM` must say so (docs/protocol.md §7).
pub const PANE_TERM: &str = "xterm-256color";
pub const PANE_COLORTERM: &str = "truecolor";

/// Variables that describe the *outer* terminal or multiplexer. Codex changes behaviour when it
/// sees `TMUX`/`TMUX_PANE`/`ZELLIJ` (docs/protocol.md §7); the others name a terminal that is not
/// the one Codex is drawing into (the pane is).
const OUTER_TERMINAL_VARS: &[&str] = &[
    "TMUX",
    "TMUX_PANE",
    "ZELLIJ",
    "ZELLIJ_SESSION_NAME",
    "ZELLIJ_PANE_ID",
    "STY",
    "TERM_PROGRAM",
    "TERM_PROGRAM_VERSION",
    "TERM_SESSION_ID",
    "LC_TERMINAL",
    "LC_TERMINAL_VERSION",
    "ITERM_SESSION_ID",
    "ITERM_PROFILE",
    "KITTY_WINDOW_ID",
    "KITTY_PID",
    "WEZTERM_PANE",
    "WEZTERM_EXECUTABLE",
    "ALACRITTY_WINDOW_ID",
    "ALACRITTY_SOCKET",
    "VTE_VERSION",
    "WT_SESSION",
    "KONSOLE_VERSION",
    "GHOSTTY_RESOURCES_DIR",
    "COLUMNS",
    "LINES",
];

/// The child's environment: the parent's, minus the outer terminal's identity, plus
/// `TERM`/`COLORTERM` for what the pane emulates, plus `extra` (e.g. the proxy token variable).
pub fn child_environment(
    parent: impl IntoIterator<Item = (OsString, OsString)>,
    extra: &[(OsString, OsString)],
) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = parent
        .into_iter()
        .filter(|(key, _)| {
            let key = key.to_string_lossy();
            !OUTER_TERMINAL_VARS.contains(&key.as_ref())
                && key != "TERM"
                && key != "COLORTERM"
                && !extra.iter().any(|(k, _)| k.to_string_lossy() == key)
        })
        .collect();
    env.push(("TERM".into(), PANE_TERM.into()));
    env.push(("COLORTERM".into(), PANE_COLORTERM.into()));
    env.extend(extra.iter().cloned());
    env
}

/// Waits for `pid` to end without reaping it (so the PTY library's own wait still works) and
/// returns the signal that ended it, if one did.
#[cfg(target_os = "linux")]
fn killed_by(pid: i32) -> Option<i32> {
    use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT;
    loop {
        match waitid(Id::Pid(nix::unistd::Pid::from_raw(pid)), flags) {
            Ok(WaitStatus::Signaled(_, signal, _)) => return Some(signal as i32),
            Ok(_) => return None,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return None,
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn killed_by(_pid: i32) -> Option<i32> {
    None
}

/// What to run.
#[derive(Clone)]
pub struct ChildSpec {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    pub cwd: PathBuf,
    /// The whole environment. It holds the proxy token, so `Debug` shows only the names.
    pub env: Vec<(OsString, OsString)>,
}

impl std::fmt::Debug for ChildSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChildSpec")
            .field("program", &self.program)
            .field("args", &self.args)
            .field("cwd", &self.cwd)
            .field(
                "env",
                &self.env.iter().map(|(key, _)| key).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// A running child in a PTY.
pub struct PtyChild {
    master: Box<dyn MasterPty + Send>,
    input: std::sync::mpsc::Sender<Vec<u8>>,
    pid: Option<i32>,
}

impl PtyChild {
    /// Spawns `spec` in a new PTY of `rows`×`cols`. Output and the exit arrive on `events`.
    ///
    /// The output channel is bounded: a child that writes faster than the app parses waits,
    /// instead of growing memory.
    pub fn spawn(
        spec: &ChildSpec,
        rows: u16,
        cols: u16,
        events: mpsc::Sender<PtyEvent>,
    ) -> Result<Self> {
        let pair = native_pty_system()
            .openpty(PtySize {
                rows: rows.max(1),
                cols: cols.max(1),
                pixel_width: 0,
                pixel_height: 0,
            })
            .map_err(|e| eyre!("{e:#}"))
            .wrap_err("opening a pseudo-terminal")?;
        let mut cmd = CommandBuilder::new(&spec.program);
        cmd.args(&spec.args);
        cmd.cwd(&spec.cwd);
        cmd.env_clear();
        for (key, value) in &spec.env {
            cmd.env(key, value);
        }
        let mut child = pair
            .slave
            .spawn_command(cmd)
            .map_err(|e| eyre!("{e:#}"))
            .wrap_err_with(|| format!("starting {}", spec.program.display()))
            .hint("check that the codex binary runs: `codex --version`")?;
        // The child holds its own copy of the slave; ours would keep the PTY open after it exits.
        drop(pair.slave);
        let pid = child.process_id().and_then(|p| i32::try_from(p).ok());

        let mut reader = pair
            .master
            .try_clone_reader()
            .map_err(|e| eyre!("{e:#}"))
            .wrap_err("reading the pseudo-terminal")?;
        let mut writer = pair
            .master
            .take_writer()
            .map_err(|e| eyre!("{e:#}"))
            .wrap_err("writing to the pseudo-terminal")?;

        let (reader_done_tx, reader_done) = std::sync::mpsc::channel::<()>();
        let output = events.clone();
        std::thread::Builder::new()
            .name("pty-reader".into())
            .spawn(move || {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    match reader.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if output
                                .blocking_send(PtyEvent::Output(buf[..n].to_vec()))
                                .is_err()
                            {
                                break;
                            }
                        }
                    }
                }
                let _ = reader_done_tx.send(());
            })
            .wrap_err("starting the PTY reader thread")?;

        std::thread::Builder::new()
            .name("pty-waiter".into())
            .spawn(move || {
                // portable-pty reports a death by signal as code 1; a shell says 128 + N.
                let signal = pid.and_then(killed_by);
                let code = match child.wait() {
                    Ok(status) => match signal {
                        Some(signal) => 128 + signal,
                        None => i32::try_from(status.exit_code()).unwrap_or(1),
                    },
                    Err(err) => {
                        tracing::warn!("waiting for the child: {err}");
                        1
                    }
                };
                // Let the last output reach the screen before the exit is reported; a
                // grandchild that keeps the PTY open must not hold the exit back for long.
                let _ = reader_done.recv_timeout(Duration::from_millis(500));
                let _ = events.blocking_send(PtyEvent::Exited(code));
            })
            .wrap_err("starting the child waiter thread")?;

        let (input, input_rx) = std::sync::mpsc::channel::<Vec<u8>>();
        std::thread::Builder::new()
            .name("pty-writer".into())
            .spawn(move || {
                // Writes block while the child does not read; on this thread they cannot stall
                // the UI.
                for bytes in input_rx {
                    if writer
                        .write_all(&bytes)
                        .and_then(|()| writer.flush())
                        .is_err()
                    {
                        break;
                    }
                }
            })
            .wrap_err("starting the PTY writer thread")?;

        Ok(Self {
            master: pair.master,
            input,
            pid,
        })
    }

    /// Sends bytes to the child's input.
    pub fn write(&self, bytes: Vec<u8>) {
        if !bytes.is_empty() {
            let _ = self.input.send(bytes);
        }
    }

    /// Tells the kernel (and so the child, by SIGWINCH) the new size.
    pub fn resize(&self, rows: u16, cols: u16) -> Result<()> {
        self.master
            .resize(PtySize {
                rows: rows.max(1),
                cols: cols.max(1),
                pixel_width: 0,
                pixel_height: 0,
            })
            .map_err(|e| eyre!("{e:#}"))
            .wrap_err("resizing the pseudo-terminal")
    }

    pub fn pid(&self) -> Option<i32> {
        self.pid
    }

    /// Signals the child's whole process group. The child is a session leader (portable-pty
    /// calls setsid), and `codex` from npm is a Node wrapper around the real binary, so the
    /// group is what must be signalled (docs/protocol.md §1).
    pub fn signal_group(&self, signal: nix::sys::signal::Signal) {
        if let Some(pid) = self.pid {
            let _ = crate::process::signal_group(pid, signal);
        }
    }
}

impl Drop for PtyChild {
    fn drop(&mut self) {
        // A terminal that goes away hangs up its session.
        self.signal_group(nix::sys::signal::Signal::SIGHUP);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        pairs
            .iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)))
            .collect()
    }

    #[test]
    fn environment_hides_the_outer_terminal_and_names_the_pane() {
        let parent = vars(&[
            ("HOME", "/home/u"),
            ("TMUX", "/tmp/tmux-0/default,1,0"),
            ("TMUX_PANE", "%1"),
            ("ZELLIJ", "0"),
            ("TERM", "screen"),
            ("TERM_PROGRAM", "tmux"),
            ("COLORTERM", "24bit"),
            ("PATH", "/usr/bin"),
            ("CS_TUI_PROXY_TOKEN", "stale"),
        ]);
        let env = child_environment(parent, &vars(&[("CS_TUI_PROXY_TOKEN", "fresh")]));
        let get = |k: &str| {
            env.iter()
                .filter(|(key, _)| key == k)
                .map(|(_, v)| v.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
        };
        for hidden in ["TMUX", "TMUX_PANE", "ZELLIJ", "TERM_PROGRAM"] {
            assert!(get(hidden).is_empty(), "{hidden} leaked");
        }
        assert_eq!(get("TERM"), ["xterm-256color"]);
        assert_eq!(get("COLORTERM"), ["truecolor"]);
        assert_eq!(get("HOME"), ["/home/u"]);
        assert_eq!(get("CS_TUI_PROXY_TOKEN"), ["fresh"]);
    }

    #[test]
    fn debug_output_never_shows_environment_values() {
        let spec = ChildSpec {
            program: "codex".into(),
            args: Vec::new(),
            cwd: "/".into(),
            env: vars(&[("CS_TUI_PROXY_TOKEN", "very-secret")]),
        };
        let shown = format!("{spec:?}");
        assert!(shown.contains("CS_TUI_PROXY_TOKEN"), "{shown}");
        assert!(!shown.contains("very-secret"), "{shown}");
    }

    #[tokio::test]
    async fn child_output_exit_code_and_input_round_trip() {
        let (tx, mut rx) = mpsc::channel(16);
        let spec = ChildSpec {
            program: "/bin/sh".into(),
            args: vec![
                "-c".into(),
                "stty -echo; printf 'size %s\\n' \"$(stty size)\"; read line; echo \"got $line $TERM\"; exit 7"
                    .into(),
            ],
            cwd: std::env::temp_dir(),
            env: child_environment(std::env::vars_os(), &[]),
        };
        let child = PtyChild::spawn(&spec, 12, 34, tx).unwrap();
        child.write(b"hi\r".to_vec());
        let mut output = Vec::new();
        let code = loop {
            match tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .expect("child finishes")
                .expect("channel open")
            {
                PtyEvent::Output(bytes) => output.extend(bytes),
                PtyEvent::Exited(code) => break code,
            }
        };
        let text = String::from_utf8_lossy(&output);
        assert!(text.contains("size 12 34"), "{text:?}");
        assert!(text.contains("got hi xterm-256color"), "{text:?}");
        assert_eq!(code, 7);
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_child_killed_by_a_signal_exits_with_128_plus_its_number() {
        let (tx, mut rx) = mpsc::channel(16);
        let spec = ChildSpec {
            program: "/bin/sh".into(),
            args: vec!["-c".into(), "kill -9 $$".into()],
            cwd: std::env::temp_dir(),
            env: child_environment(std::env::vars_os(), &[]),
        };
        let _child = PtyChild::spawn(&spec, 12, 34, tx).unwrap();
        let code = loop {
            match tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .expect("child finishes")
                .expect("channel open")
            {
                PtyEvent::Output(_) => {}
                PtyEvent::Exited(code) => break code,
            }
        };
        assert_eq!(code, 128 + 9);
    }
}
