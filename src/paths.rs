//! Where cs-tui and Codex keep their files.

use std::path::PathBuf;

use color_eyre::eyre::{Result, eyre};

/// Environment variable that overrides the store directory.
pub(crate) const STORE_DIR_ENV: &str = "CS_TUI_HOME";

/// The store directory: `$CS_TUI_HOME`, else the platform config dir (`~/.config/cs-tui`).
pub(crate) fn store_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os(STORE_DIR_ENV).filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    dirs::config_dir()
        .map(|d| d.join("cs-tui"))
        .ok_or_else(|| eyre!("cannot find a config directory; set {STORE_DIR_ENV}"))
}

/// Codex's home: `$CODEX_HOME`, else `~/.codex`.
pub(crate) fn codex_home() -> Result<PathBuf> {
    match chosen_codex_home() {
        Some(dir) => Ok(dir),
        None => default_codex_home(dirs::home_dir()),
    }
}

/// `$CODEX_HOME`, when the user set one.
pub(crate) fn chosen_codex_home() -> Option<PathBuf> {
    std::env::var_os("CODEX_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
}

fn default_codex_home(home: Option<PathBuf>) -> Result<PathBuf> {
    home.map(|d| d.join(".codex"))
        .ok_or_else(|| eyre!("cannot find the home directory; set CODEX_HOME"))
}

/// Codex's home for a session's app-server, ready as Codex's own first run leaves it.
///
/// `~/.codex` is created (0700) when missing: a user whose logins all came through `cs-tui
/// accounts add` may never have run Codex, and the app-server, given a `CODEX_HOME` that does
/// not exist, stops with a backtrace. A `$CODEX_HOME` the user chose is theirs to create: a
/// missing one is a clear error here.
pub(crate) fn session_codex_home() -> Result<PathBuf> {
    codex_home_ready(chosen_codex_home(), dirs::home_dir())
}

fn codex_home_ready(chosen: Option<PathBuf>, home: Option<PathBuf>) -> Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt as _;
    if let Some(dir) = chosen {
        if !dir.is_dir() {
            return Err(crate::errors::with_hint(
                eyre!("CODEX_HOME is {}, which is not a directory", dir.display()),
                "create it (Codex keeps its login, config and sessions there), or unset CODEX_HOME to use ~/.codex",
            ));
        }
        return Ok(dir);
    }
    let dir = default_codex_home(home)?;
    match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => tracing::info!("created {} for Codex, as its first run does", dir.display()),
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(err) => return Err(eyre!("creating {} for Codex: {err}", dir.display())),
    }
    if !dir.is_dir() {
        return Err(eyre!(
            "{} is not a directory; Codex keeps its files there",
            dir.display()
        ));
    }
    Ok(dir)
}

/// The directory cs-tui writes its log files to (`<store>/logs`).
pub(crate) fn log_dir() -> Result<PathBuf> {
    Ok(store_dir()?.join("logs"))
}

/// Creates `dir` (and parents) with mode 0700, and tightens it to 0700 if it exists.
pub(crate) fn ensure_private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// A file cs-tui created itself (see [`create_private_file`]): remembered by device, inode
/// and a fingerprint of what it holds (an inode number is reused at once by a file created in
/// its place), so that only that very file is ever removed, never one put in its place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CreatedFile {
    path: std::path::PathBuf,
    dev: u64,
    ino: u64,
    fingerprint: u64,
}

fn fingerprint(contents: &[u8]) -> u64 {
    use std::hash::{Hash as _, Hasher as _};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    contents.hash(&mut hasher);
    hasher.finish()
}

impl CreatedFile {
    pub(crate) fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Removes the file if the path still names the file we created (not a link, not a file
    /// someone put there since). Returns whether it was removed.
    pub(crate) fn remove(&self) -> bool {
        use std::io::Read as _;
        use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
        let ours = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
            .open(&self.path)
            .and_then(|mut file| {
                let meta = file.metadata()?;
                let mut contents = Vec::new();
                if meta.is_file() && meta.dev() == self.dev && meta.ino() == self.ino {
                    file.read_to_end(&mut contents)?;
                    return Ok(fingerprint(&contents) == self.fingerprint);
                }
                Ok(false)
            });
        ours.unwrap_or(false) && std::fs::remove_file(&self.path).is_ok()
    }
}

/// Why [`create_private_file`] would not write.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CreateFileError {
    #[error("{} already exists; cs-tui writes secrets only into a file it creates itself", .0.display())]
    Exists(std::path::PathBuf),
    #[error("{} is a symbolic link; cs-tui does not follow links to write secrets", .0.display())]
    Symlink(std::path::PathBuf),
    #[error("creating {}: {source}", path.display())]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// Creates `path` anew, readable and writable by us only (0600), and writes `contents`.
///
/// The file must not exist: `O_CREAT | O_EXCL | O_NOFOLLOW`, so neither a file someone
/// prepared (with its mode, e.g. 0666) nor a symbolic link (to a file of the victim's choice)
/// is ever written through. A partly written file is removed again.
pub(crate) fn create_private_file(
    path: &std::path::Path,
    contents: &[u8],
) -> Result<CreatedFile, CreateFileError> {
    use std::io::Write as _;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let opened = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(path);
    let mut file = match opened {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
            let link = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
            return Err(if link {
                CreateFileError::Symlink(path.to_owned())
            } else {
                CreateFileError::Exists(path.to_owned())
            });
        }
        Err(source) => {
            return Err(CreateFileError::Io {
                path: path.to_owned(),
                source,
            });
        }
    };
    let io = |source| CreateFileError::Io {
        path: path.to_owned(),
        source,
    };
    let meta = file.metadata().map_err(io)?;
    let created = CreatedFile {
        path: path.to_owned(),
        dev: meta.dev(),
        ino: meta.ino(),
        fingerprint: fingerprint(contents),
    };
    match file.write_all(contents).and_then(|()| file.sync_all()) {
        Ok(()) => Ok(created),
        Err(source) => {
            created.remove();
            Err(io(source))
        }
    }
}

/// Opens the lock file at `path` for reading and writing, creating it (0600) if missing and
/// never truncating it. A symbolic link in its place is refused, not followed (`O_NOFOLLOW`),
/// and the descriptor is closed on exec (`O_CLOEXEC`): neither the app-server nor the reaper
/// may inherit, and so keep, a lock. The directory must exist.
pub(crate) fn open_lock_file(path: &std::path::Path) -> Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(path)
        .map_err(|err| {
            if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
                eyre!(
                    "the lock file {} is a symbolic link; cs-tui does not follow it",
                    path.display()
                )
            } else {
                color_eyre::Report::new(err)
                    .wrap_err(format!("opening the lock file {}", path.display()))
            }
        })
}

/// Opens the lock file at `path` (see [`open_lock_file`]) and takes its `flock` of `kind`,
/// blocking while another holds it (a non-blocking `kind` fails instead). Dropping the
/// returned guard unlocks.
pub(crate) fn lock_file(
    path: &std::path::Path,
    kind: nix::fcntl::FlockArg,
) -> Result<nix::fcntl::Flock<std::fs::File>> {
    nix::fcntl::Flock::lock(open_lock_file(path)?, kind).map_err(|(_, errno)| {
        color_eyre::Report::new(std::io::Error::from(errno))
            .wrap_err(format!("locking {}", path.display()))
    })
}

/// Makes sure `dir` is a private directory of ours: created 0700 if missing (its parent must
/// exist), without following a link at `dir`. One that exists must be a real directory owned
/// by us; it is then tightened to 0700 through its own descriptor (never by name, so a link
/// swapped in cannot redirect the change). A directory of another user is refused, untouched.
pub(crate) fn ensure_own_private_dir(dir: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(err) => return Err(eyre!("creating {}: {err}", dir.display())),
    }
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_DIRECTORY | nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(dir);
    let handle = match opened {
        Ok(handle) => handle,
        Err(_) if std::fs::symlink_metadata(dir).is_ok_and(|m| m.file_type().is_symlink()) => {
            return Err(eyre!(
                "{} is a symbolic link, not a directory of ours; cs-tui does not follow it",
                dir.display()
            ));
        }
        Err(err) => return Err(eyre!("opening {}: {err}", dir.display())),
    };
    let meta = handle
        .metadata()
        .map_err(|err| eyre!("reading {}: {err}", dir.display()))?;
    if meta.uid() != nix::unistd::geteuid().as_raw() {
        return Err(eyre!(
            "{} belongs to another user (uid {}); cs-tui will not use it",
            dir.display(),
            meta.uid()
        ));
    }
    if meta.mode() & 0o077 != 0 {
        handle
            .set_permissions(std::fs::Permissions::from_mode(0o700))
            .map_err(|err| eyre!("making {} private: {err}", dir.display()))?;
    }
    Ok(())
}

/// Whether `dir` is a real directory of ours that nobody else may enter (as
/// `$XDG_RUNTIME_DIR` must be).
pub(crate) fn is_own_private_dir(dir: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(dir).is_ok_and(|meta| {
        meta.is_dir() && meta.uid() == nix::unistd::geteuid().as_raw() && meta.mode() & 0o077 == 0
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn mode(path: &std::path::Path) -> u32 {
        std::fs::symlink_metadata(path).unwrap().mode() & 0o7777
    }

    #[test]
    fn a_lock_file_is_created_0600_kept_as_it_is_and_not_inherited() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("x.lock");
        let file = open_lock_file(&path).unwrap();
        assert_eq!(mode(&path), 0o600);
        let flags = nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_GETFD).unwrap();
        assert!(
            nix::fcntl::FdFlag::from_bits_truncate(flags).contains(nix::fcntl::FdFlag::FD_CLOEXEC)
        );
        drop(file);
        std::fs::write(&path, "holder 42").unwrap();
        drop(open_lock_file(&path).unwrap());
        assert_eq!(
            std::fs::read(&path).unwrap(),
            b"holder 42",
            "never truncated"
        );
    }

    #[test]
    fn a_symlink_in_place_of_a_lock_file_is_refused_and_its_target_untouched() {
        use nix::fcntl::FlockArg;
        let tmp = tempfile::tempdir().unwrap();
        let victim = tmp.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o644)).unwrap();
        let link = tmp.path().join("x.lock");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        let err = open_lock_file(&link).unwrap_err().to_string();
        assert!(err.contains("is a symbolic link"), "{err}");
        let err = lock_file(&link, FlockArg::LockExclusive)
            .unwrap_err()
            .to_string();
        assert!(err.contains("is a symbolic link"), "{err}");
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert_eq!(mode(&victim), 0o644);

        // A dangling link: its target is not created either.
        let dangling = tmp.path().join("y.lock");
        let target = tmp.path().join("not-yet");
        std::os::unix::fs::symlink(&target, &dangling).unwrap();
        assert!(open_lock_file(&dangling).is_err());
        assert!(!target.exists());
    }

    #[test]
    fn a_held_lock_file_refuses_a_second_exclusive_holder_until_dropped() {
        use nix::fcntl::FlockArg;
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("x.lock");
        let held = lock_file(&path, FlockArg::LockExclusive).unwrap();
        let err = lock_file(&path, FlockArg::LockExclusiveNonblock).unwrap_err();
        assert!(err.to_string().contains("locking"), "{err:#}");
        let io = err
            .downcast_ref::<std::io::Error>()
            .expect("the io error kept");
        assert_eq!(io.kind(), std::io::ErrorKind::WouldBlock, "{err:#}");
        assert!(lock_file(&path, FlockArg::LockSharedNonblock).is_err());
        drop(held);
        drop(lock_file(&path, FlockArg::LockExclusiveNonblock).unwrap());
        let shared = lock_file(&path, FlockArg::LockShared).unwrap();
        drop(lock_file(&path, FlockArg::LockSharedNonblock).unwrap());
        drop(shared);
    }

    #[test]
    fn a_private_dir_is_created_0700_and_an_own_open_one_tightened() {
        let tmp = tempfile::tempdir().unwrap();
        let fresh = tmp.path().join("fresh");
        ensure_own_private_dir(&fresh).unwrap();
        assert_eq!(mode(&fresh), 0o700);
        let open = tmp.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
        ensure_own_private_dir(&open).unwrap();
        assert_eq!(mode(&open), 0o700);
        assert!(is_own_private_dir(&open));
    }

    #[test]
    fn a_link_or_a_file_in_place_of_the_private_dir_is_refused_untouched() {
        let tmp = tempfile::tempdir().unwrap();
        let elsewhere = tmp.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        std::fs::set_permissions(&elsewhere, std::fs::Permissions::from_mode(0o755)).unwrap();
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&elsewhere, &link).unwrap();
        let err = ensure_own_private_dir(&link).unwrap_err().to_string();
        assert!(err.contains("symbolic link"), "{err}");
        assert_eq!(mode(&elsewhere), 0o755, "the link's target is not chmodded");
        assert!(!is_own_private_dir(&link));

        let file = tmp.path().join("file");
        std::fs::write(&file, "x").unwrap();
        assert!(ensure_own_private_dir(&file).is_err());
        assert_eq!(std::fs::read(&file).unwrap(), b"x");
    }

    #[test]
    fn a_directory_of_another_user_is_refused_and_never_chmodded() {
        let tmp = tempfile::tempdir().unwrap();
        // As root, a directory given to `nobody`; as anyone else, a directory of root's.
        let theirs = if nix::unistd::geteuid().is_root() {
            let dir = tmp.path().join("theirs");
            std::fs::create_dir(&dir).unwrap();
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
            std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).unwrap();
            dir
        } else {
            std::path::PathBuf::from("/")
        };
        let before = mode(&theirs);
        let err = ensure_own_private_dir(&theirs).unwrap_err().to_string();
        assert!(err.contains("belongs to another user"), "{err}");
        assert_eq!(mode(&theirs), before);
        assert!(!is_own_private_dir(&theirs));
    }

    #[test]
    fn a_missing_codex_home_is_made_like_codexs_first_run_unless_the_user_chose_it() {
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path().to_owned();
        // Never run Codex: ~/.codex is created, ours alone.
        let dir = codex_home_ready(None, Some(home.clone())).unwrap();
        assert_eq!(dir, home.join(".codex"));
        assert_eq!(mode(&dir), 0o700);
        // Already there: used as it is.
        std::fs::write(dir.join("auth.json"), "{}").unwrap();
        assert_eq!(codex_home_ready(None, Some(home.clone())).unwrap(), dir);
        assert!(dir.join("auth.json").is_file());
        // A $CODEX_HOME the user chose is never created: a clear error names it.
        let chosen = home.join("elsewhere");
        let err = codex_home_ready(Some(chosen.clone()), Some(home.clone())).unwrap_err();
        let text = crate::errors::render_error(&err);
        assert!(text.contains("elsewhere"), "{text}");
        assert!(text.contains("unset CODEX_HOME"), "{text}");
        assert!(!chosen.exists());
        std::fs::create_dir(&chosen).unwrap();
        assert_eq!(
            codex_home_ready(Some(chosen.clone()), None).unwrap(),
            chosen
        );
        // A file where ~/.codex should be is not a home.
        let other = tempfile::tempdir().unwrap();
        std::fs::write(other.path().join(".codex"), "x").unwrap();
        assert!(codex_home_ready(None, Some(other.path().to_owned())).is_err());
        assert!(codex_home_ready(None, None).is_err());
    }
}
