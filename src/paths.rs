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
