//! Where the pinned `codex` binary lives.

use std::path::PathBuf;

/// The Codex version the tests are pinned to (package.json holds the same).
pub const PINNED_CODEX_VERSION: &str = "0.169.0";

/// The environment variable that points tests at another `codex` binary.
pub const CODEX_BIN_ENV: &str = "CS_TUI_TEST_CODEX";

/// The `codex` binary the end-to-end tests run: `$CS_TUI_TEST_CODEX`, else the project-local
/// install made by `scripts/install-codex` (`node_modules/.bin/codex`).
///
/// Panics with instructions when it is missing: an end-to-end test must fail, never skip.
pub fn codex_bin() -> PathBuf {
    if let Some(path) = std::env::var_os(CODEX_BIN_ENV) {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "{CODEX_BIN_ENV} points at {}, which is not a file",
            path.display()
        );
        return path;
    }
    let local = workspace_root().join("node_modules/.bin/codex");
    assert!(
        local.exists(),
        "the pinned codex binary is missing at {}.\n\
         Install it with `scripts/install-codex` (runs `npm ci`, which installs \
         @openai/codex@{PINNED_CODEX_VERSION}), or point {CODEX_BIN_ENV} at a codex binary.",
        local.display()
    );
    local
}

/// The cs-tui workspace root (the directory holding the top-level Cargo.toml).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("testkit lives inside the workspace")
        .to_path_buf()
}
