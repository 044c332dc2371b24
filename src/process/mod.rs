//! Child processes, in one place for both children cs-tui starts (the Codex TUI in the pane,
//! `codex app-server` behind the proxy): finding a program on `PATH`, running `codex` the way
//! its npm wrapper would ([`codex`]), starting a child that does not outlive cs-tui
//! ([`command_dying_with_us`], [`reaper`]), and signalling a child's process group.
//!
//! Platforms: everything here is POSIX except what keeps the app-server's tree from outliving
//! a SIGKILLed cs-tui, which is Linux-only and gated with `cfg(target_os = "linux")`:
//! `PR_SET_PDEATHSIG`, the reaper's `PR_SET_CHILD_SUBREAPER`, its `/proc` walk, and the
//! re-exec through `/proc/self/exe`. Elsewhere (macOS) the app-server is started directly in a
//! process group of its own; an orderly exit, a signal cs-tui handles, or a panic still stops
//! that group (the proxy's `Drop` and emergency clean-up), but a cs-tui killed by SIGKILL
//! leaves it running, and the kernel gives no notice to act on.

pub mod codex;
pub(crate) mod reaper;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use nix::sys::signal::Signal;
use nix::unistd::Pid;

/// Finds `program` like a shell would: a path as given, a bare name on `PATH`.
pub fn resolve_program(program: &OsStr, path_var: Option<&OsStr>) -> Option<PathBuf> {
    let candidate = Path::new(program);
    if candidate.components().count() > 1 {
        return is_executable(candidate).then(|| candidate.to_path_buf());
    }
    std::env::split_paths(path_var?)
        .map(|dir| dir.join(program))
        .find(|p| is_executable(p))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Sends `signal` to the process group `pgid` leads. `codex` from npm is a Node wrapper
/// around the real binary, so the group is what must be signalled (docs/protocol.md §1).
pub fn signal_group(pgid: i32, signal: Signal) -> nix::Result<()> {
    nix::sys::signal::killpg(Pid::from_raw(pgid), signal)
}

/// A child's process group, and whether the reaper leads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Group {
    pub pgid: i32,
    /// Started through the [`reaper`]: the group's leader is the reaper, which kills the
    /// child's whole tree when asked, or when cs-tui is gone.
    pub reaped: bool,
}

impl Group {
    /// Signals the whole group (SIGTERM to ask, SIGKILL for what is left).
    pub fn signal(self, signal: Signal) {
        let _ = signal_group(self.pgid, signal);
    }

    /// Kills the child now. Through the reaper, the reaper does it, the tools the child started
    /// included (a SIGKILL to the group would kill the reaper before it could).
    pub fn kill_now(self) {
        if self.reaped {
            let _ = nix::sys::signal::kill(Pid::from_raw(self.pgid), reaper::KILL_NOW);
        } else {
            self.signal(Signal::SIGKILL);
        }
    }
}

/// A command for `program` that does not outlive cs-tui, in a process group of its own, with
/// whether it runs through the [`reaper`]. Add arguments, environment and output to it, then
/// spawn it; keep the child's stdin: when it runs through the reaper, that is the pipe whose
/// end-of-file tells the reaper cs-tui is gone.
///
/// - Linux, in the cs-tui binary: `cs-tui __reaper PROGRAM …`, so the child's whole tree goes
///   when cs-tui does, however it ends.
/// - Linux, elsewhere (a test binary linking the library): `PROGRAM` directly, with
///   `PR_SET_PDEATHSIG` so the kernel sends it SIGTERM when cs-tui dies.
/// - Other systems: `PROGRAM` directly, nothing kernel-side (see the module's documentation).
///
/// Everywhere, a child whose parent died while it was being spawned does not start.
pub fn command_dying_with_us(program: &OsStr) -> (tokio::process::Command, bool) {
    let reaped_command = reaper::command(program);
    let reaped = reaped_command.is_some();
    let mut command = reaped_command.unwrap_or_else(|| {
        let mut command = tokio::process::Command::new(program);
        command.stdin(Stdio::null());
        command
    });
    // Its own process group: only signalling the whole group stops the npm wrapper and the
    // binary it runs (docs/protocol.md §1).
    command.process_group(0).kill_on_drop(false);
    let parent = nix::unistd::getpid();
    // SAFETY: the closure runs in the forked child before exec and only makes the
    // async-signal-safe prctl(2) and getppid(2) calls.
    unsafe {
        command.pre_exec(move || {
            if !reaped {
                set_parent_death_signal(Signal::SIGTERM)?;
            }
            if nix::unistd::getppid() != parent {
                // The parent died before the parent-death signal took effect.
                return Err(std::io::Error::other("cs-tui exited during the spawn"));
            }
            Ok(())
        });
    }
    (command, reaped)
}

/// Asks the kernel to send this process `signal` when its parent dies (`PR_SET_PDEATHSIG`).
/// Async-signal-safe: callable between fork and exec.
#[cfg(target_os = "linux")]
pub fn set_parent_death_signal(signal: Signal) -> std::io::Result<()> {
    nix::sys::prctl::set_pdeathsig(signal)?;
    Ok(())
}

/// No such request exists here: nothing is done (see the module's documentation).
#[cfg(not(target_os = "linux"))]
pub fn set_parent_death_signal(_signal: Signal) -> std::io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn programs_resolve_by_path_or_on_path() {
        let path = std::env::var_os("PATH");
        let sh = resolve_program(OsStr::new("sh"), path.as_deref()).expect("sh on PATH");
        assert!(sh.is_absolute());
        assert_eq!(
            resolve_program(OsStr::new("/bin/sh"), None),
            Some(PathBuf::from("/bin/sh"))
        );
        assert_eq!(
            resolve_program(OsStr::new("no-such-codex-here"), path.as_deref()),
            None
        );
        assert_eq!(resolve_program(OsStr::new("./missing/codex"), None), None);
    }

    /// A test binary is not the reaper: the child runs directly, leads its own group, and a
    /// group signal reaches the grandchild too.
    #[tokio::test]
    async fn a_child_leads_its_own_group_and_the_group_signal_reaches_its_children() {
        let (mut command, reaped) = command_dying_with_us(OsStr::new("/bin/sh"));
        assert!(!reaped);
        let mut child = command
            .arg("-c")
            .arg("sleep 600 & echo $!; wait")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id().unwrap() as i32;
        assert_eq!(
            nix::unistd::getpgid(Some(Pid::from_raw(pid))).unwrap(),
            Pid::from_raw(pid)
        );
        let mut line = String::new();
        let stdout = child.stdout.take().unwrap();
        tokio::io::AsyncBufReadExt::read_line(&mut tokio::io::BufReader::new(stdout), &mut line)
            .await
            .unwrap();
        let grandchild = Pid::from_raw(line.trim().parse().unwrap());
        assert_eq!(
            nix::unistd::getpgid(Some(grandchild)).unwrap(),
            Pid::from_raw(pid)
        );
        Group { pgid: pid, reaped }.kill_now();
        let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .expect("the group died")
            .unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9)
        );
        // The grandchild was in the group: it is gone (or a zombie of init's, not running).
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while nix::sys::signal::kill(grandchild, None).is_ok() && !is_zombie(grandchild) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "grandchild lives on"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn is_zombie(pid: Pid) -> bool {
        #[cfg(target_os = "linux")]
        {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|stat| stat[stat.rfind(')').unwrap_or(0)..].contains(") Z"))
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = pid;
            false
        }
    }
}
