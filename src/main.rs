fn main() -> std::process::ExitCode {
    cs_tui::cli::main()
}
