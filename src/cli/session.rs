//! `cs-tui serve`, `cs-tui switch` and `cs-tui sessions`: their arguments.

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
    /// Serve Prometheus metrics on `GET http://ADDR/metrics`: a loopback address only (port 0
    /// picks a free one; the address is printed as `metrics http://…/metrics`).
    #[arg(long, value_name = "127.0.0.1:PORT")]
    pub metrics: Option<String>,
}

#[derive(Debug, clap::Args)]
#[command(
    after_help = "With several sessions running, the one to switch is: the only one; else the one named by --session; else the one started in the deepest directory containing the current one (see `cs-tui sessions`)."
)]
pub struct SwitchArgs {
    /// Account name, id, or unique id prefix; `best` picks the best other account.
    pub account: String,
    /// The session to switch: its pid, or its id or a unique prefix of it (as `cs-tui
    /// sessions` lists them).
    #[arg(long, value_name = "PID|ID-PREFIX")]
    pub session: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct SessionsArgs {
    /// Machine-readable output (stable fields, see README).
    #[arg(long)]
    pub json: bool,
}
