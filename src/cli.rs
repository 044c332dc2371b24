//! The command line: `cs-tui [CODEX ARGS]` runs the dashboard; subcommands manage accounts and
//! the headless proxy. Each subcommand's arguments live beside the code that runs it.

use std::ffi::OsString;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use color_eyre::eyre::Result;

/// cs-tui: run the Codex TUI with a live quota panel, and switch ChatGPT accounts inside the
/// running session when one hits its usage limit.
#[derive(Debug, Parser)]
#[command(
    name = "cs-tui",
    version,
    args_conflicts_with_subcommands = true,
    after_help = "Anything after the options is passed to codex: `cs-tui resume`, `cs-tui -m gpt-5 \"fix the tests\"`."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,

    #[command(subcommand)]
    pub command: Option<Command>,

    /// Arguments for the embedded `codex` (a prompt, `resume`, `fork`, flags).
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CODEX ARGS"
    )]
    pub codex_args: Vec<OsString>,
}

#[derive(Debug, Clone, clap::Args)]
pub struct GlobalArgs {
    /// The codex binary to run.
    #[arg(long, global = true, env = "CS_TUI_CODEX_BIN", default_value = "codex")]
    pub codex_bin: OsString,

    /// Log level for the log file (error, warn, info, debug, trace, or a filter directive).
    /// Also read from CS_TUI_LOG.
    #[arg(long, global = true, value_name = "LEVEL")]
    pub log_level: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Manage stored accounts (import, add, list, rename, remove, enable, disable, use).
    #[command(subcommand)]
    Accounts(crate::accounts::cli::AccountsCommand),
    /// Show every account's 5-hour and weekly usage.
    Status(crate::accounts::cli::StatusArgs),
    /// Ask the running cs-tui session to switch to an account.
    Switch(crate::proxy::serve::SwitchArgs),
    /// Run the app-server and switching proxy without the dashboard.
    Serve(crate::proxy::serve::ServeArgs),
    /// Check Codex, the app-server, the store, the accounts, the backend and the config.
    Doctor(crate::doctor::DoctorArgs),
}

/// Parses the command line and runs it.
pub fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    if let Some(code) = crate::process::reaper::run_if_asked(&args) {
        return code;
    }
    crate::process::reaper::enable();
    let cli = Cli::parse_from(args);
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            crate::errors::print_error(&err);
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Some(Command::Accounts(cmd)) => crate::accounts::cli::run_accounts(&cli.global, cmd),
        Some(Command::Status(args)) => crate::accounts::cli::run_status(&cli.global, args),
        Some(Command::Switch(args)) => crate::proxy::serve::run_switch(&cli.global, args),
        Some(Command::Serve(args)) => crate::proxy::serve::run_serve(&cli.global, args),
        Some(Command::Doctor(args)) => crate::doctor::run_doctor(&cli.global, args),
        None => crate::app::run(&cli.global, cli.codex_args),
    }
}
