//! `cs-tui demo`: its arguments.

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Runs the real Codex TUI, the proxy and the panel against a simulated backend on 127.0.0.1, with three demo accounts (alice, bob, carol). Everything lives in one temporary directory, removed at the end: your accounts, ~/.codex and the network are not touched. Needs codex installed, as cs-tui itself does."
)]
pub struct DemoArgs {
    /// Keep the demo's temporary directory (its store, ledger, logs and Codex home) and print
    /// where it is.
    #[arg(long)]
    pub keep: bool,
    /// Type nothing: the demo waits for your prompts.
    #[arg(long)]
    pub no_autopilot: bool,
}
