//! `cs-tui --version` / `-V`: cs-tui's version and that of the Codex it would run
//! (`--codex-bin`, `CS_TUI_CODEX_BIN`, else `codex` on PATH). Never fails and never waits
//! more than [`CODEX_TIMEOUT`] for Codex.

use std::process::ExitCode;
use std::time::Duration;

use color_eyre::eyre::Result;

use super::Env;
use crate::process::codex::VersionError;

/// How long `codex --version` may take here: long enough for a cold start under load, short
/// enough for a command a user types.
const CODEX_TIMEOUT: Duration = Duration::from_secs(3);

pub(super) fn run(env: &Env) -> Result<ExitCode> {
    let codex = env.runtime().block_on(crate::process::codex::version_line(
        env.codex_bin(),
        CODEX_TIMEOUT,
    ));
    println!("{}", line(env!("CARGO_PKG_VERSION"), &codex));
    Ok(ExitCode::SUCCESS)
}

/// `cs-tui 0.1.0 (codex-cli 0.169.0)`, `cs-tui 0.1.0 (codex: not found)`, or
/// `cs-tui 0.1.0 (codex: ERROR)`.
fn line(version: &str, codex: &Result<String, VersionError>) -> String {
    match codex {
        Ok(codex) => format!("cs-tui {version} ({codex})"),
        Err(VersionError::NotFound { .. }) => format!("cs-tui {version} (codex: not found)"),
        Err(err) => format!("cs-tui {version} (codex: {err})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_names_both_versions_or_why_not() {
        assert_eq!(
            line("0.1.0", &Ok("codex-cli 0.169.0".to_owned())),
            "cs-tui 0.1.0 (codex-cli 0.169.0)"
        );
        let missing = VersionError::NotFound {
            program: "codex".to_owned(),
        };
        assert_eq!(
            line("0.1.0", &Err(missing)),
            "cs-tui 0.1.0 (codex: not found)"
        );
        let slow = VersionError::Timeout {
            program: "/opt/codex".to_owned(),
            timeout: CODEX_TIMEOUT,
        };
        assert_eq!(
            line("0.1.0", &Err(slow)),
            "cs-tui 0.1.0 (codex: `/opt/codex --version` did not answer within 3s)"
        );
    }
}
