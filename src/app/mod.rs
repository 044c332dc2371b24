//! The dashboard: state, events, key routing and the main loop.

pub mod dashboard;

use std::ffi::OsString;
use std::process::ExitCode;

use color_eyre::eyre::{Result, bail};

use crate::cli::GlobalArgs;

pub fn run(_global: &GlobalArgs, _codex_args: Vec<OsString>) -> Result<ExitCode> {
    bail!("the dashboard is not built yet")
}
