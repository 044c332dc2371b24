//! `cs-tui serve` and `cs-tui switch`: their arguments.

use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Where to listen: a loopback port (port 0 picks a free one; clients need the bearer
    /// token), or `unix://PATH`, a socket only our own user may connect to (no token).
    #[arg(
        long,
        default_value = "127.0.0.1:0",
        value_name = "127.0.0.1:PORT|unix://PATH"
    )]
    pub listen: String,
    /// Where to write the proxy's bearer token: a new file (created 0600; an existing file or
    /// a link is refused), removed at exit. Default: the session's runtime directory under the
    /// store.
    #[arg(long, value_name = "PATH")]
    pub token_file: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct SwitchArgs {
    /// Account name, id, or unique id prefix; `best` picks the best other account.
    pub account: String,
}
