//! `cs-tui doctor [--json]`: runs [`crate::doctor`]'s checks and prints them. Exits 1 when any
//! check fails.

use std::process::ExitCode;
use std::time::Duration;

use color_eyre::eyre::{Result, eyre};

use super::Env;
use super::output::emit;
use crate::cli::DoctorArgs;
use crate::doctor::{Report, Status, TESTED_CODEX_NEWEST, TESTED_CODEX_OLDEST, render, run_checks};

pub(super) fn run(env: &Env, args: DoctorArgs) -> Result<ExitCode> {
    let timeout = Duration::from_secs(args.timeout.max(1));
    let checks = env.runtime().block_on(run_checks(
        env.codex_bin(),
        env.store_dir(),
        env.http(),
        timeout,
    ));
    let failed = checks.iter().any(|c| c.status == Status::Fail);
    let text = if args.json {
        let mut text = serde_json::to_string_pretty(&Report {
            ok: !failed,
            tested_codex: [TESTED_CODEX_OLDEST, TESTED_CODEX_NEWEST],
            checks: &checks,
        })
        .map_err(|e| eyre!("formatting JSON: {e}"))?;
        text.push('\n');
        text
    } else {
        render(&checks)
    };
    emit(&text)?;
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
