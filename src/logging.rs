//! Logging to a file: the terminal belongs to the UI.
//!
//! The level comes from `--log-level` or `CS_TUI_LOG` (an `EnvFilter` directive such as
//! `debug` or `cs_tui::proxy=trace`), default `info`. Log lines never hold tokens: secrets are
//! wrapped in [`crate::secret::Secret`], whose `Debug` is redacted.

use std::path::{Path, PathBuf};

use color_eyre::eyre::{Result, WrapErr};
use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::EnvFilter;

pub(crate) const LOG_ENV: &str = "CS_TUI_LOG";

/// Installs a file logger writing to `dir/<name>.log`. Keep the guard alive until exit, or
/// buffered lines are lost.
pub(crate) fn init(dir: &Path, name: &str, level: Option<&str>) -> Result<(WorkerGuard, PathBuf)> {
    crate::paths::ensure_private_dir(dir)
        .wrap_err_with(|| format!("creating log directory {}", dir.display()))?;
    let path = dir.join(format!("{name}.log"));
    let file = open_log_file(&path)?;
    let (writer, guard) = tracing_appender::non_blocking(file);
    let directive = level
        .map(str::to_owned)
        .or_else(|| std::env::var(LOG_ENV).ok())
        .unwrap_or_else(|| "info".to_owned());
    let filter = EnvFilter::try_new(&directive)
        .wrap_err_with(|| format!("invalid log level {directive:?} (try info, debug or trace)"))?
        // tungstenite traces whole frames, and a login frame holds an access token.
        .add_directive("tungstenite=debug".parse().expect("a valid directive"))
        .add_directive(
            "tokio_tungstenite=debug"
                .parse()
                .expect("a valid directive"),
        );
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(false)
        .try_init()
        .map_err(|e| color_eyre::eyre::eyre!("installing the logger: {e}"))?;
    Ok((guard, path))
}

/// Opens the log file for appending, created 0600. A symbolic link there is refused, not
/// followed: log lines go to a file of ours, never to one a link points at.
fn open_log_file(path: &Path) -> Result<std::fs::File> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(path)
        .wrap_err_with(|| {
            if path.is_symlink() {
                format!(
                    "log file {} is a symbolic link; not writing through it",
                    path.display()
                )
            } else {
                format!("creating log file {}", path.display())
            }
        })?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .wrap_err_with(|| format!("making log file {} private", path.display()))?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn a_link_in_place_of_the_log_file_is_refused_and_its_target_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("victim");
        std::fs::write(&target, "victim\n").unwrap();
        let log = dir.path().join("cs-tui.log");
        std::os::unix::fs::symlink(&target, &log).unwrap();
        let err = open_log_file(&log).unwrap_err();
        assert!(format!("{err:#}").contains("is a symbolic link"), "{err:#}");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "victim\n");
    }

    #[test]
    fn the_log_file_is_private_and_appended_to() {
        use std::io::Write as _;
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("cs-tui.log");
        std::fs::write(&log, "old\n").unwrap();
        std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o644)).unwrap();
        open_log_file(&log).unwrap().write_all(b"new\n").unwrap();
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "old\nnew\n");
        let mode = std::fs::metadata(&log).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}
