//! `cs-tui completions` and `cs-tui man`: their arguments.

use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    /// The shell to complete in.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, clap::Args)]
pub struct ManArgs {
    /// Write one page per command (cs-tui.1, cs-tui-accounts.1, cs-tui-accounts-import.1 and so on)
    /// into this directory, created if missing, instead of printing cs-tui.1.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}
