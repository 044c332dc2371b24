//! `cs-tui accounts …` and `cs-tui status`.

use std::process::ExitCode;

use color_eyre::eyre::{Result, bail};

use crate::cli::GlobalArgs;

#[derive(Debug, clap::Subcommand)]
pub enum AccountsCommand {
    /// List stored accounts.
    List,
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run_accounts(_global: &GlobalArgs, _cmd: AccountsCommand) -> Result<ExitCode> {
    bail!("the account store is not built yet")
}

pub fn run_status(_global: &GlobalArgs, _args: StatusArgs) -> Result<ExitCode> {
    bail!("the account store is not built yet")
}
