// jemalloc instead of glibc malloc: the pane's scrollback shrinks each row as it scrolls off
// (vt100 trims trailing blanks), and glibc leaves the freed tails as holes new rows cannot
// use, so scrollback cost a full row per line however short the line was.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    cs_tui::commands::main()
}
