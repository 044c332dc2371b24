//! The app-server's reaper: a tiny process between cs-tui and `codex app-server` that makes
//! sure nothing the app-server started outlives cs-tui, even when cs-tui is SIGKILLed.
//!
//! `PR_SET_PDEATHSIG` stops the app-server when its parent dies, but not the tools it runs:
//! Codex starts each command in a session of its own, so a `sleep 600` a turn started would be
//! orphaned to init and live on. The reaper is cs-tui itself, re-executed as
//! `cs-tui __reaper PROGRAM ARGS…` (`/proc/self/exe`, so a rebuilt binary does not matter). It
//!
//! - is a child subreaper (`PR_SET_CHILD_SUBREAPER`): whatever the app-server's tree orphans is
//!   re-parented to it, so every process of that tree stays its descendant;
//! - holds the read end of a pipe whose only write end is cs-tui's: when cs-tui dies, however
//!   it dies, the pipe reads end-of-file, and the reaper SIGKILLs every descendant;
//! - does the same when the app-server exits (its tools go with it) and on SIGUSR1 (cs-tui's
//!   "stop it now"), then exits the way the app-server did, so cs-tui sees the real status;
//! - ignores SIGTERM, SIGINT, SIGHUP and SIGQUIT: cs-tui stops the app-server by signalling the
//!   process group both share, and the reaper must outlive the app-server to clean up after it.
//!
//! Linux only (subreapers and `/proc`, gated with `cfg(target_os = "linux")`): elsewhere
//! [`available`] is false and the app-server is started directly (see [`crate::process`]).

use std::ffi::{OsStr, OsString};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::sys::signal::Signal;
#[cfg(target_os = "linux")]
use {
    nix::errno::Errno,
    nix::fcntl::OFlag,
    nix::poll::{PollFd, PollFlags, PollTimeout, poll},
    nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, kill, sigaction},
    nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid},
    nix::unistd::Pid,
    std::os::fd::{AsFd, BorrowedFd, OwnedFd},
    std::sync::atomic::AtomicI32,
};

/// The hidden first argument that turns cs-tui into the reaper.
pub(crate) const SUBCOMMAND: &str = "__reaper";

/// The signal that asks the reaper to kill everything now (cs-tui's forced stop).
pub(crate) const KILL_NOW: Signal = Signal::SIGUSR1;

/// Set by the cs-tui binary's `main`, which answers [`SUBCOMMAND`]: only then can the running
/// executable be re-executed as the reaper (a test binary linking the library cannot).
static AVAILABLE: AtomicBool = AtomicBool::new(false);

/// Declares that this executable answers [`SUBCOMMAND`].
pub(crate) fn enable() {
    AVAILABLE.store(true, Ordering::Relaxed);
}

/// Whether the app-server is to be started through the reaper.
pub(crate) fn available() -> bool {
    cfg!(target_os = "linux") && AVAILABLE.load(Ordering::Relaxed)
}

/// The command that runs `program` under the reaper (this executable re-executed as
/// `cs-tui __reaper PROGRAM`), or `None` when the reaper is not [`available`]. Its stdin is
/// piped: the spawner must keep that pipe's write end, the only one, for as long as it lives.
pub(crate) fn command(program: &OsStr) -> Option<tokio::process::Command> {
    if !available() {
        return None;
    }
    #[cfg(target_os = "linux")]
    {
        // `/proc/self/exe`, so a binary rebuilt meanwhile does not matter. It costs one exec of
        // cs-tui before the program's: ~2.6 ms (release build, median), against the
        // app-server's ~200 ms to ready.
        let mut command = tokio::process::Command::new("/proc/self/exe");
        command
            .arg0("cs-tui")
            .arg(SUBCOMMAND)
            .arg(program)
            .stdin(std::process::Stdio::piped());
        Some(command)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = program;
        None
    }
}

/// Runs the reaper if `args` (the whole command line) asks for it; `None` otherwise.
pub(crate) fn run_if_asked(args: &[OsString]) -> Option<ExitCode> {
    if args.get(1).map(OsString::as_os_str) != Some(OsStr::new(SUBCOMMAND)) {
        return None;
    }
    #[cfg(target_os = "linux")]
    {
        Some(run(&args[2..]))
    }
    #[cfg(not(target_os = "linux"))]
    {
        eprintln!("cs-tui: {SUBCOMMAND} is only used on Linux");
        Some(ExitCode::FAILURE)
    }
}

#[cfg(target_os = "linux")]
/// The write end of the self-pipe the signal handlers wake the loop through.
static WAKE_FD: AtomicI32 = AtomicI32::new(-1);
#[cfg(target_os = "linux")]
/// Set by SIGUSR1.
static KILL_REQUESTED: AtomicBool = AtomicBool::new(false);

#[cfg(target_os = "linux")]
extern "C" fn on_wake(signal: i32) {
    if signal == KILL_NOW as i32 {
        KILL_REQUESTED.store(true, Ordering::SeqCst);
    }
    let fd = WAKE_FD.load(Ordering::SeqCst);
    if fd >= 0 {
        // SAFETY: the fd stays open for the reaper's whole life; write(2) is async-signal-safe.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        let _ = nix::unistd::write(fd, &[0]);
    }
}

#[cfg(target_os = "linux")]
extern "C" fn ignore(_: i32) {}

#[cfg(target_os = "linux")]
fn run(command: &[OsString]) -> ExitCode {
    match reap(command) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("cs-tui reaper: {err}");
            kill_descendants();
            ExitCode::FAILURE
        }
    }
}

#[cfg(target_os = "linux")]
fn reap(command: &[OsString]) -> std::io::Result<ExitCode> {
    use std::os::unix::process::CommandExt as _;

    let (program, args) = command
        .split_first()
        .ok_or_else(|| std::io::Error::other("no command to run"))?;
    nix::sys::prctl::set_child_subreaper(true)?;
    let (wake_read, wake_write): (OwnedFd, OwnedFd) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
    WAKE_FD.store(
        std::os::fd::AsRawFd::as_raw_fd(&wake_write),
        Ordering::SeqCst,
    );
    // Handlers, not SIG_IGN: dispositions set to "ignore" would be inherited by the app-server
    // across exec, handlers are reset to the default there.
    let wake = SigAction::new(
        SigHandler::Handler(on_wake),
        SaFlags::SA_RESTART | SaFlags::SA_NOCLDSTOP,
        SigSet::empty(),
    );
    let ignored = SigAction::new(
        SigHandler::Handler(ignore),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    // SAFETY: both handlers only touch atomics and call write(2).
    unsafe {
        sigaction(Signal::SIGCHLD, &wake)?;
        sigaction(KILL_NOW, &wake)?;
        for signal in [
            Signal::SIGTERM,
            Signal::SIGINT,
            Signal::SIGHUP,
            Signal::SIGQUIT,
        ] {
            sigaction(signal, &ignored)?;
        }
    }
    let mut child = std::process::Command::new(program);
    child.args(args).stdin(std::process::Stdio::null());
    // SAFETY: runs in the forked child before exec; prctl(2) is async-signal-safe.
    unsafe {
        child.pre_exec(|| {
            // If the reaper itself is SIGKILLed, the app-server goes too.
            super::set_parent_death_signal(Signal::SIGKILL)?;
            Ok(())
        });
    }
    let spawned = child.spawn().map_err(|err| {
        std::io::Error::new(
            err.kind(),
            format!(
                "starting {}: {err}",
                std::path::Path::new(program).display()
            ),
        )
    })?;
    let app_server = Pid::from_raw(spawned.id() as i32);

    let parent = std::io::stdin();
    let mut buf = [0u8; 64];
    loop {
        let mut fds = [
            PollFd::new(parent.as_fd(), PollFlags::POLLIN),
            PollFd::new(wake_read.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(err) => return Err(err.into()),
        }
        let parent_ready = fds[0].any().unwrap_or(true);
        if parent_ready {
            // cs-tui never writes: readable means end-of-file, i.e. cs-tui is gone.
            match nix::unistd::read(parent.as_fd(), &mut buf) {
                Ok(0) | Err(_) => {
                    kill_descendants();
                    return Ok(ExitCode::from(1));
                }
                Ok(_) => {}
            }
        }
        while nix::unistd::read(wake_read.as_fd(), &mut buf).is_ok_and(|n| n > 0) {}
        if KILL_REQUESTED.load(Ordering::SeqCst) {
            kill_descendants();
            return Ok(ExitCode::from(137));
        }
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(status) if status.pid() == Some(app_server) => {
                    kill_descendants();
                    return Ok(exit_like(status));
                }
                // An orphan of the app-server's tree, re-parented to us and now reaped.
                Ok(_) => {}
            }
        }
    }
}

/// Ends the reaper the way the app-server ended: its exit code, or its signal.
#[cfg(target_os = "linux")]
fn exit_like(status: WaitStatus) -> ExitCode {
    match status {
        WaitStatus::Exited(_, code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        WaitStatus::Signaled(_, signal, _) => {
            let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
            // SAFETY: restoring the default disposition.
            let _ = unsafe { sigaction(signal, &default) };
            let _ = nix::sys::signal::raise(signal);
            // A signal whose default is not to terminate (or that is blocked): say it in the code.
            ExitCode::from(128u8.saturating_add(signal as i32 as u8))
        }
        _ => ExitCode::FAILURE,
    }
}

/// SIGKILLs every descendant until none is left, reaping as they die. Killing a parent
/// re-parents its children to us (we are a subreaper), so they are found on the next round;
/// `ECHILD` means no child, hence no descendant, remains.
#[cfg(target_os = "linux")]
fn kill_descendants() {
    let me = std::process::id() as i32;
    loop {
        for pid in descendants_of(me) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        match waitpid(None, None) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(_) => return,
        }
    }
}

/// Every process whose chain of parents leads to `root`, read from `/proc`.
#[cfg(target_os = "linux")]
fn descendants_of(root: i32) -> Vec<i32> {
    let parents: Vec<(i32, i32)> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            Some((pid, parent_from_stat(&stat)?))
        })
        .collect();
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(
            parents
                .iter()
                .filter(|(_, ppid)| *ppid == parent)
                .map(|(pid, _)| *pid),
        );
        i += 1;
    }
    found.remove(0);
    found
}

/// The parent pid in a `/proc/PID/stat` line: `pid (comm) state ppid …`, where `comm` may
/// itself hold spaces and parentheses, so the fields start after the last `)`.
pub(crate) fn parent_from_stat(stat: &str) -> Option<i32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_ascii_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parent_is_read_past_any_command_name() {
        assert_eq!(parent_from_stat("42 (sleep) S 7 42 42 0"), Some(7));
        assert_eq!(parent_from_stat("42 (a) b) (c) R 9 1 1"), Some(9));
        assert_eq!(parent_from_stat("42 (x"), None);
        assert_eq!(parent_from_stat(""), None);
    }

    #[test]
    fn only_the_binary_that_answers_the_subcommand_uses_the_reaper() {
        // The test binary never called `enable`.
        assert!(!available());
        assert!(run_if_asked(&["cs-tui".into(), "resume".into()]).is_none());
    }
}
