//! The command line's clap types, and nothing else: `cs-tui [CODEX ARGS]` runs the dashboard;
//! subcommands manage accounts and the headless proxy. [`crate::commands`] runs them; only it
//! (and `main`) imports this module.

mod accounts;
mod demo;
mod doctor;
mod history;
mod package;
mod session;

use std::ffi::OsString;

use clap::{Parser, Subcommand};

pub(crate) use accounts::{AccountsCommand, AddArgs, ImportArgs, ListArgs, StatusArgs};
pub(crate) use demo::DemoArgs;
pub(crate) use doctor::DoctorArgs;
pub(crate) use history::HistoryArgs;
pub(crate) use package::{CompletionsArgs, ManArgs};
pub(crate) use session::{ServeArgs, SessionsArgs, SwitchArgs};

/// cs-tui: run the Codex TUI with a live quota panel, and switch ChatGPT accounts inside the
/// running session when one hits its usage limit.
#[derive(Debug, Parser)]
#[command(
    name = "cs-tui",
    version,
    // `-V`/`--version` is ours: it also names the Codex cs-tui would run.
    disable_version_flag = true,
    after_help = "Anything after the options is passed to codex: `cs-tui resume`, `cs-tui -m gpt-5 \"fix the tests\"`."
)]
pub struct Cli {
    /// Print cs-tui's version and that of the codex it would run.
    #[arg(short = 'V', long, conflicts_with = "codex_args")]
    pub version: bool,

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
    Accounts(AccountsCommand),
    /// Show every account's 5-hour and weekly usage.
    Status(StatusArgs),
    /// Ask a running cs-tui session to switch to an account.
    Switch(SwitchArgs),
    /// List the cs-tui sessions running on this store, with their accounts.
    Sessions(SessionsArgs),
    /// List the turns (the ledger) and the switches, with each account's totals.
    History(HistoryArgs),
    /// Run the app-server and switching proxy without the dashboard.
    Serve(ServeArgs),
    /// Check Codex, the app-server, the store, the accounts, the backend and the config.
    Doctor(DoctorArgs),
    /// Try cs-tui on three simulated accounts: a limit is met and the session switches within
    /// a minute. Nothing of yours is read or written.
    Demo(DemoArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) to stdout.
    Completions(CompletionsArgs),
    /// Print the manual page (roff) to stdout, or write one page per command to a directory.
    Man(ManArgs),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(argv: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("cs-tui").chain(argv.iter().copied()))
            .unwrap_or_else(|err| panic!("{argv:?}: {err}"))
    }

    fn codex_args(cli: &Cli) -> Vec<&str> {
        cli.codex_args.iter().map(|a| a.to_str().unwrap()).collect()
    }

    /// A global option before a subcommand still names the subcommand: `--codex-bin X
    /// accounts list` used to start the dashboard with Codex's prompt "accounts list".
    #[test]
    fn global_options_go_before_or_after_a_subcommand() {
        let cli = parse(&["--codex-bin", "/x/codex", "accounts", "list"]);
        assert!(matches!(cli.command, Some(Command::Accounts(_))), "{cli:?}");
        assert_eq!(cli.global.codex_bin, "/x/codex");
        assert!(cli.codex_args.is_empty());
        let cli = parse(&["--log-level", "debug", "status"]);
        assert!(matches!(cli.command, Some(Command::Status(_))), "{cli:?}");
        assert_eq!(cli.global.log_level.as_deref(), Some("debug"));
        let cli = parse(&["status", "--log-level", "debug"]);
        assert!(matches!(cli.command, Some(Command::Status(_))), "{cli:?}");
        assert_eq!(cli.global.log_level.as_deref(), Some("debug"));
    }

    #[test]
    fn anything_else_goes_to_codex_in_order() {
        for (argv, expected) in [
            (&["resume", "--last"][..], &["resume", "--last"][..]),
            (
                &["-m", "gpt-5", "fix the tests"],
                &["-m", "gpt-5", "fix the tests"],
            ),
            (&["fix", "status"], &["fix", "status"]),
            (&["--codex-bin", "/x", "-m", "gpt-5"], &["-m", "gpt-5"]),
            // `--` makes a subcommand's name a prompt.
            (&["--", "status"], &["status"]),
        ] {
            let cli = parse(argv);
            assert!(cli.command.is_none(), "{argv:?}: {cli:?}");
            assert_eq!(codex_args(&cli), expected, "{argv:?}");
        }
        let cli = parse(&[]);
        assert!(cli.command.is_none() && cli.codex_args.is_empty());
    }
}
