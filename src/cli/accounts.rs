//! `cs-tui accounts …` and `cs-tui status`: their arguments.

use std::path::PathBuf;

#[derive(Debug, clap::Subcommand)]
pub enum AccountsCommand {
    /// Import a Codex login (auth.json with ChatGPT tokens or an API key).
    ///
    /// An account that is stored already (same ChatGPT account) gets the newer tokens instead
    /// of a duplicate.
    Import(ImportArgs),
    /// Log in with `codex login` and store the account as NAME.
    ///
    /// Codex runs with a temporary CODEX_HOME that is removed afterwards. Also the way to log
    /// in again to an account that needs it.
    Add(AddArgs),
    /// List stored accounts.
    #[command(visible_alias = "ls")]
    List(ListArgs),
    /// Rename an account.
    Rename {
        /// The account: its name, id, or a unique id prefix (4+ characters).
        old: String,
        /// The new name.
        new: String,
    },
    /// Remove an account and its tokens (asks first unless --yes).
    #[command(visible_alias = "rm")]
    Remove {
        /// The account: its name, id, or a unique id prefix (4+ characters).
        name: String,
        /// Do not ask for confirmation (required when stdin is not a terminal).
        #[arg(long, short = 'y')]
        yes: bool,
    },
    /// Let automatic switching pick this account (the default).
    Enable {
        /// The account: its name, id, or a unique id prefix (4+ characters).
        name: String,
    },
    /// Keep automatic switching away from this account (switching to it by hand still works).
    Disable {
        /// The account: its name, id, or a unique id prefix (4+ characters).
        name: String,
    },
    /// Start the next session on this account.
    Use {
        /// The account: its name, id, or a unique id prefix (4+ characters).
        name: String,
    },
    /// Refresh the tokens of one account, or of every ChatGPT account.
    Refresh {
        /// The account: its name, id, or a unique id prefix (4+ characters).
        name: Option<String>,
    },
    /// Redeem one of an exhausted account's rate-limit reset credits (asks first unless --yes).
    ///
    /// Refused when the account is not exhausted: a credit only clears an exhausted window.
    Reset {
        /// The account: its name, id, or a unique id prefix (4+ characters).
        name: String,
        /// Do not ask for confirmation (required when stdin is not a terminal).
        #[arg(long, short = 'y')]
        yes: bool,
    },
}

#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// Name for the account (default: the e-mail's local part). Renames it if it is stored.
    #[arg(long)]
    pub name: Option<String>,
    /// The auth.json to read [default: $CODEX_HOME/auth.json, CODEX_HOME defaulting to ~/.codex].
    #[arg(long, value_name = "PATH")]
    pub file: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct AddArgs {
    /// Name for the account.
    pub name: String,
    /// Log in with a device code instead of a browser (`codex login --device-auth`).
    #[arg(long)]
    pub device_auth: bool,
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Seconds to wait for each account's usage before showing it as timed out.
    #[arg(long, value_name = "SECS", default_value_t = 15)]
    pub timeout: u64,
}
