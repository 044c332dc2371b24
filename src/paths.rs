//! Where cs-tui and Codex keep their files.

use std::path::PathBuf;

use color_eyre::eyre::{Result, eyre};

/// Environment variable that overrides the store directory.
pub const STORE_DIR_ENV: &str = "CS_TUI_HOME";

/// The store directory: `$CS_TUI_HOME`, else the platform config dir (`~/.config/cs-tui`).
pub fn store_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os(STORE_DIR_ENV).filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    dirs::config_dir()
        .map(|d| d.join("cs-tui"))
        .ok_or_else(|| eyre!("cannot find a config directory; set {STORE_DIR_ENV}"))
}

/// Codex's home: `$CODEX_HOME`, else `~/.codex`.
pub fn codex_home() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("CODEX_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    dirs::home_dir()
        .map(|d| d.join(".codex"))
        .ok_or_else(|| eyre!("cannot find the home directory; set CODEX_HOME"))
}

/// The directory cs-tui writes its log files to (`<store>/logs`).
pub fn log_dir() -> Result<PathBuf> {
    Ok(store_dir()?.join("logs"))
}

/// Creates `dir` (and parents) with mode 0700, and tightens it to 0700 if it exists.
pub fn ensure_private_dir(dir: &std::path::Path) -> std::io::Result<()> {
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
pub struct CreatedFile {
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
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Removes the file if the path still names the file we created (not a link, not a file
    /// someone put there since). Returns whether it was removed.
    pub fn remove(&self) -> bool {
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
pub enum CreateFileError {
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
pub fn create_private_file(
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
