//! `cs-tui doctor`: its arguments.

#[derive(Debug, clap::Args)]
pub struct DoctorArgs {
    /// Print JSON instead of lines.
    #[arg(long)]
    pub json: bool,
    /// Seconds each check may take.
    #[arg(long, value_name = "SECS", default_value_t = 15)]
    pub timeout: u64,
}
