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
    let file_name = format!("{name}.log");
    let path = dir.join(&file_name);
    // Create it 0600 before the appender opens it (which would use the umask).
    {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)
            .wrap_err_with(|| format!("creating log file {}", path.display()))?;
    }
    let appender = tracing_appender::rolling::never(dir, &file_name);
    let (writer, guard) = tracing_appender::non_blocking(appender);
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
