//! The election of the store's usage poller: whoever holds an exclusive `flock` on
//! `<store>/locks/poller.lock` polls. The kernel drops the lock when its holder's process
//! ends, `kill -9` included, so a crashed poller blocks nobody.

use std::fs::File;
use std::path::{Path, PathBuf};

use color_eyre::eyre::{Result, WrapErr};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

/// The lock file's name in `<store>/locks/`.
pub(crate) const POLLER_LOCK: &str = "poller.lock";

/// The poller lock of one store, held or tried.
#[derive(Debug)]
pub(crate) struct PollerLock {
    path: PathBuf,
    state: LockState,
}

#[derive(Debug)]
enum LockState {
    /// Held while this lives: dropping it unlocks.
    Held { _lock: Flock<File> },
    /// The file, kept open for the next try.
    Free(Option<File>),
}

impl PollerLock {
    /// The lock of the store at `store_dir`, not tried yet.
    pub(crate) fn new(store_dir: &Path) -> Self {
        Self {
            path: store_dir.join("locks").join(POLLER_LOCK),
            state: LockState::Free(None),
        }
    }

    pub(crate) fn is_held(&self) -> bool {
        matches!(self.state, LockState::Held { .. })
    }

    /// Tries to take the lock without waiting; `Ok(true)`: we hold it (now or already).
    pub(crate) fn try_take(&mut self) -> Result<bool> {
        let file = match &mut self.state {
            LockState::Held { .. } => return Ok(true),
            LockState::Free(file) => match file.take() {
                Some(file) => file,
                None => self.open()?,
            },
        };
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(held) => {
                self.state = LockState::Held { _lock: held };
                Ok(true)
            }
            Err((file, Errno::EWOULDBLOCK)) => {
                self.state = LockState::Free(Some(file));
                Ok(false)
            }
            Err((_, errno)) => Err(std::io::Error::from(errno))
                .wrap_err_with(|| format!("locking {}", self.path.display())),
        }
    }

    /// Gives the lock up (if held); returns whether it was held.
    pub(crate) fn release(&mut self) -> bool {
        let held = self.is_held();
        // Dropping the Flock unlocks; the file is opened again at the next try.
        self.state = LockState::Free(None);
        held
    }

    fn open(&self) -> Result<File> {
        if let Some(dir) = self.path.parent() {
            crate::paths::ensure_private_dir(dir)
                .wrap_err_with(|| format!("creating {}", dir.display()))?;
        }
        crate::paths::open_lock_file(&self.path)
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use nix::sys::signal::{Signal, kill};
    use nix::sys::wait::waitpid;
    use nix::unistd::{ForkResult, fork, pipe, read, write};

    use super::*;

    #[test]
    fn the_lock_passes_to_a_waiter_when_released_cleanly() {
        let store = tempfile::tempdir().unwrap();
        let mut first = PollerLock::new(store.path());
        let mut second = PollerLock::new(store.path());
        assert!(first.try_take().unwrap());
        assert!(first.try_take().unwrap(), "taking it again keeps it");
        assert!(!second.try_take().unwrap());
        assert!(!second.try_take().unwrap(), "a retry while held fails too");
        assert!(first.release());
        assert!(!first.release(), "released once");
        assert!(second.try_take().unwrap());
        assert!(!first.try_take().unwrap());
        let path = store.path().join("locks").join(POLLER_LOCK);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let dir_mode = std::fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(dir_mode & 0o777, 0o700);
    }

    #[test]
    fn a_symlink_in_place_of_the_lock_is_refused_not_followed() {
        let store = tempfile::tempdir().unwrap();
        let locks = store.path().join("locks");
        std::fs::create_dir(&locks).unwrap();
        let target = store.path().join("elsewhere");
        std::os::unix::fs::symlink(&target, locks.join(POLLER_LOCK)).unwrap();
        let mut lock = PollerLock::new(store.path());
        let err = lock.try_take().unwrap_err().to_string();
        assert!(err.contains("is a symbolic link"), "{err}");
        assert!(!lock.is_held());
        assert!(!target.exists());
    }

    #[test]
    fn the_lock_is_not_inherited_by_a_child_process() {
        let store = tempfile::tempdir().unwrap();
        let mut lock = PollerLock::new(store.path());
        assert!(lock.try_take().unwrap());
        let LockState::Held { _lock: held } = &lock.state else {
            panic!("held")
        };
        let flags = nix::fcntl::fcntl(&**held, nix::fcntl::FcntlArg::F_GETFD).unwrap();
        assert!(
            nix::fcntl::FdFlag::from_bits_truncate(flags).contains(nix::fcntl::FdFlag::FD_CLOEXEC)
        );
    }

    #[test]
    fn the_lock_passes_to_a_waiter_when_its_holder_is_killed() {
        let store = tempfile::tempdir().unwrap();
        // Opened before the fork: the child only locks, writes and waits (no allocation).
        let child_lock = PollerLock::new(store.path()).open().unwrap();
        let (ready_read, ready_write) = pipe().unwrap();
        // SAFETY: the child makes only async-signal-safe calls (flock, write, pause, _exit).
        let child = match unsafe { fork() }.unwrap() {
            ForkResult::Child => {
                let held = Flock::lock(child_lock, FlockArg::LockExclusive);
                let code = if held.is_ok() { 0 } else { 1 };
                let _ = write(&ready_write, &[code]);
                loop {
                    nix::unistd::pause();
                }
            }
            ForkResult::Parent { child } => child,
        };
        drop(child_lock);
        drop(ready_write);
        let mut byte = [9u8];
        assert_eq!(read(&ready_read, &mut byte).unwrap(), 1);
        assert_eq!(byte[0], 0, "the child holds the lock");

        let mut waiter = PollerLock::new(store.path());
        assert!(!waiter.try_take().unwrap(), "held by the child");
        kill(child, Signal::SIGKILL).unwrap();
        waitpid(child, None).unwrap();
        assert!(waiter.try_take().unwrap(), "free once its holder died");
    }
}
