//! `cs-tui serve` (headless proxy) and `cs-tui switch NAME`.

use std::process::ExitCode;

use color_eyre::eyre::{Result, bail};

use crate::cli::GlobalArgs;

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on (loopback only).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: String,
    /// Where to write the proxy's bearer token (mode 0600).
    #[arg(long)]
    pub token_file: Option<std::path::PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct SwitchArgs {
    /// Account name, id, or unique id prefix.
    pub account: String,
}

pub fn run_serve(_global: &GlobalArgs, _args: ServeArgs) -> Result<ExitCode> {
    bail!("the switching proxy is not built yet")
}

pub fn run_switch(_global: &GlobalArgs, _args: SwitchArgs) -> Result<ExitCode> {
    bail!("the switching proxy is not built yet")
}
