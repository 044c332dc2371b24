//! `cs-tui history`: its arguments.

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Reads <store>/ledger.jsonl (and ledger.1.jsonl, the rotated one) and <store>/switch-history.jsonl. Lines that do not parse are skipped and counted."
)]
pub struct HistoryArgs {
    /// Machine-readable output (stable fields, see README).
    #[arg(long, conflicts_with = "csv")]
    pub json: bool,
    /// One CSV table: a row per turn, per switch and per account's totals (column `kind`).
    #[arg(long)]
    pub csv: bool,
    /// Only what happened in this last span: `30m`, `2h`, `7d`, `1w 2d`.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub since: Option<std::time::Duration>,
    /// Only this account's turns and switches (its name or id).
    #[arg(long, value_name = "NAME")]
    pub account: Option<String>,
}
