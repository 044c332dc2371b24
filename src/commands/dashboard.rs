//! `cs-tui [CODEX ARGS]`: the dashboard, Codex in the pane behind the switching proxy.

use std::ffi::OsString;
use std::process::ExitCode;

use color_eyre::eyre::Result;

use super::Env;
use crate::app::backend::{ProxySetup, proxy_wanted};

/// Takes the whole [`Env`]: the dashboard shuts its runtime down without waiting for the
/// terminal reader.
pub(super) fn run(env: Env, codex_args: Vec<OsString>) -> Result<ExitCode> {
    let config = env.config()?.clone();
    // Refuse what cannot run before anything starts.
    let launch = crate::app::Launch::prepare(env.codex_bin(), codex_args)?;
    let proxy = if proxy_wanted() {
        // The panel reports a login imported on first run.
        let imported = env.import_codex_login()?;
        Some(ProxySetup {
            options: env.session_options()?,
            imported,
        })
    } else {
        None
    };
    let store_dir = env.store_dir()?.to_owned();
    let Env {
        runtime, _log: log, ..
    } = env;
    let code = crate::app::run(runtime, launch, config, proxy, &store_dir, None);
    // The logger's buffered lines are written once the session has ended.
    drop(log);
    code
}
