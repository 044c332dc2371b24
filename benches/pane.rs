//! Benchmarks of the pane, reported as ratios against baselines measured in the same run.
//!
//! `cargo bench --bench pane` (needs tmux and the pinned codex, like the end-to-end tests).
//! Set `CS_TUI_BENCH_MB` to change the stream size (default 50).
//!
//! (a) throughput: a deterministic ANSI-heavy stream (truecolor, scroll regions, CJK/emoji,
//!     long lines) `cat` in tmux (baseline) vs. vt100 parsing alone, vs. the pane pipeline in
//!     process (PTY → parser → a full frame drawn at most every 16 ms), vs. the real cs-tui
//!     binary inside tmux hosting `cat`;
//! (b) CPU of cs-tui over 10 s with Codex idle in the pane;
//! (c) peak RSS of cs-tui with 10,000 lines of scrollback filled;
//! (d) launch to Codex's model line: cs-tui vs. plain codex in tmux vs. codex in an in-process
//!     pane that answers its queries, both with and without codex's shared app-server daemon
//!     already running;
//! (e) Enter to reply on screen: cs-tui vs. plain codex, both in tmux.
//!
//! The screens are read through tmux control-mode clients polled every millisecond: a
//! `tmux capture-pane` process every 2 ms took much of the 2-core test machine's CPU and so
//! slowed whatever needed the most of it.

use std::ffi::OsStr;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cs_tui::app::frame::FrameScheduler;
use cs_tui::config::PanelConfig;
use cs_tui::pty::child::{ChildSpec, PtyChild, PtyEvent, child_environment};
use cs_tui::pty::queries::OuterColors;
use cs_tui::pty::screen::PaneScreen;
use cs_tui::state::dashboard::{Dashboard, SessionMode};
use cs_tui::ui::{self, RenderContext, View};
use cs_tui_testkit::tmux::{ControlClient, Tmux};
use cs_tui_testkit::{CodexHome, MockBackend, codex_bin};
use ratatui::backend::CrosstermBackend;
use ratatui::layout::Rect;
use ratatui::{Terminal, TerminalOptions, Viewport};

/// The window the throughput runs use (the anchors were measured at this size).
const COLS: u16 = 140;
const ROWS: u16 = 45;

/// A small deterministic generator (no dependency, same stream every run).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) as u32
    }

    fn below(&mut self, n: u32) -> u32 {
        self.next() % n
    }
}

const WORDS: &[&str] = &[
    "pane",
    "vt100",
    "ratatui",
    "codex",
    "quota",
    "switch",
    "render",
    "frame",
    "scroll",
    "cursor",
    "漢字",
    "かな",
    "カタカナ",
    "한국어",
    "中文字符",
    "🦀",
    "🚀",
    "✨",
    "emoji👍",
    "ü",
    "é",
];

/// Writes about `bytes` of terminal output exercising what Codex and build tools emit.
fn generate_stream(path: &Path, bytes: usize) {
    let mut rng = Lcg(0x5eed_cafe);
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut written = 0usize;
    let mut line = String::with_capacity(1024);
    let mut n = 0u64;
    while written < bytes {
        line.clear();
        n += 1;
        match rng.below(20) {
            // A top-anchored scroll region, like Codex's inline viewport pushing history up.
            0 => {
                let bottom = 10 + rng.below(30);
                line.push_str(&format!("\x1b[1;{bottom}r\x1b[{bottom};1H"));
                for _ in 0..3 {
                    line.push_str(&format!(
                        "\x1b[38;5;{}mregion line {n}\x1b[0m\r\n",
                        rng.below(256)
                    ));
                }
                line.push_str("\x1b[r");
            }
            // Cursor addressing and erasing, like a TUI redrawing a status area.
            1 => {
                line.push_str(&format!(
                    "\x1b7\x1b[{};{}H\x1b[2K\x1b[1;7m status {n} \x1b[0m\x1b8",
                    1 + rng.below(u32::from(ROWS)),
                    1 + rng.below(u32::from(COLS) / 2)
                ));
            }
            _ => {
                // A line of coloured words, sometimes far wider than the window.
                let words = if rng.below(8) == 0 {
                    60
                } else {
                    4 + rng.below(16)
                };
                for _ in 0..words {
                    let r = rng.below(256);
                    let g = rng.below(256);
                    let b = rng.below(256);
                    match rng.below(4) {
                        0 => line.push_str(&format!("\x1b[38;2;{r};{g};{b}m")),
                        1 => line.push_str(&format!("\x1b[48;2;{r};{g};{b}m\x1b[1m")),
                        2 => line.push_str(&format!("\x1b[3{}m\x1b[4m", rng.below(8))),
                        _ => line.push_str("\x1b[0m"),
                    }
                    line.push_str(WORDS[rng.below(WORDS.len() as u32) as usize]);
                    line.push(' ');
                }
                line.push_str("\x1b[0m\r\n");
            }
        }
        out.write_all(line.as_bytes()).unwrap();
        written += line.len();
    }
    out.flush().unwrap();
}

fn mb(bytes: usize) -> f64 {
    bytes as f64 / 1_000_000.0
}

/// vt100 alone, fed in 64 KiB chunks.
fn parse_only(data: &[u8]) -> Duration {
    let mut pane = PaneScreen::new(ROWS, COLS, 10_000, OuterColors::default());
    let start = Instant::now();
    for chunk in data.chunks(64 * 1024) {
        let _ = pane.process(chunk);
    }
    start.elapsed()
}

/// The pane pipeline in process: `cat` in our PTY → parser → a full dashboard frame (pane plus
/// panel) drawn through ratatui's crossterm backend into a sink, at most every 16 ms, as the
/// app's frame scheduler does.
fn pane_pipeline(file: &Path, runtime: &tokio::runtime::Runtime) -> (Duration, u32) {
    runtime.block_on(async {
        let width = COLS + PanelConfig::default().width;
        let area = Rect::new(0, 0, width, ROWS);
        let layout = ui::layout(area, &PanelConfig::default(), true);
        let backend = CrosstermBackend::new(std::io::sink());
        let mut terminal = Terminal::with_options(
            backend,
            TerminalOptions {
                viewport: Viewport::Fixed(area),
            },
        )
        .unwrap();
        let dashboard = Dashboard::new(SessionMode::NoProxy, Vec::new());
        let mut pane = PaneScreen::new(
            layout.pane.height,
            layout.pane.width,
            10_000,
            OuterColors::default(),
        );
        let (tx, mut rx) = tokio::sync::mpsc::channel(64);
        let spec = ChildSpec {
            program: "/bin/cat".into(),
            args: vec![file.as_os_str().to_owned()],
            cwd: std::env::temp_dir(),
            env: child_environment(std::env::vars_os(), &[]),
        };
        let start = Instant::now();
        let child = PtyChild::spawn(&spec, layout.pane.height, layout.pane.width, tx).unwrap();
        let mut frames = FrameScheduler::default();
        let mut drawn = 0u32;
        let now = chrono::Local::now().fixed_offset();
        let mut panel_cache = ui::PanelCache::default();
        let mut draw = |pane: &PaneScreen, frames: &mut FrameScheduler| {
            terminal
                .draw(|f| {
                    ui::draw(
                        f,
                        &View {
                            screen: pane.screen(),
                            dashboard: &dashboard,
                            layout,
                            overlay: None,
                            prefix_pending: false,
                            ctx: RenderContext {
                                now,
                                prefix: "Ctrl+]",
                            },
                        },
                        &mut panel_cache,
                    )
                })
                .unwrap();
            frames.drew(Instant::now());
        };
        loop {
            if frames
                .deadline(None)
                .is_some_and(|due| due <= Instant::now())
            {
                draw(&pane, &mut frames);
                drawn += 1;
            }
            match rx.recv().await {
                Some(PtyEvent::Output(bytes)) => {
                    child.write(pane.process(&bytes));
                    frames.request();
                }
                Some(PtyEvent::Exited(_)) | None => break,
            }
        }
        draw(&pane, &mut frames);
        (start.elapsed(), drawn + 1)
    })
}

fn time_until_exit(tmux: &Tmux, start: Instant) -> Duration {
    tmux.wait_dead(Duration::from_secs(600));
    start.elapsed()
}

fn tmux_cat(file: &Path) -> Duration {
    let start = Instant::now();
    let tmux = Tmux::start(
        COLS,
        ROWS,
        &std::env::temp_dir(),
        &[],
        OsStr::new("cat"),
        &[file.as_os_str()],
    );
    time_until_exit(&tmux, start)
}

fn write_script(dir: &Path, name: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// The real cs-tui binary in tmux, with `cat FILE` as its "codex". The window is wider by the
/// panel so the pane has the same 140×45 as the baseline.
fn cs_tui_cat(file: &Path, dir: &Path) -> Duration {
    let fake = write_script(dir, "cat-codex", &format!("exec cat '{}'", file.display()));
    let start = Instant::now();
    let tmux = Tmux::start(
        COLS + PanelConfig::default().width,
        ROWS,
        dir,
        &[
            ("CS_TUI_NO_PROXY", OsStr::new("1")),
            ("CS_TUI_HOME", dir.as_os_str()),
            ("CS_TUI_CODEX_BIN", fake.as_os_str()),
        ],
        OsStr::new(env!("CARGO_BIN_EXE_cs-tui")),
        &[],
    );
    time_until_exit(&tmux, start)
}

fn proc_field(pid: i32, file: &str, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).ok()?;
    text.lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the ")" of the command name: state is field 3; utime 14, stime 15.
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

fn clock_ticks_per_second() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .map_or(100, |t| t as u64)
}

struct CodexRig {
    _mock: MockBackend,
    home: CodexHome,
    store: tempfile::TempDir,
}

impl CodexRig {
    async fn new() -> Self {
        let mock = MockBackend::start().await;
        let (alice, refresh) = mock.add_account("alice");
        let home = CodexHome::offline(&mock.url());
        home.write_auth_json(&alice.auth_json(3600, &refresh));
        Self {
            _mock: mock,
            home,
            store: tempfile::tempdir().unwrap(),
        }
    }

    /// The product as a user runs it: app-server, switching proxy, Codex in the pane. (The
    /// store starts empty, so the first run imports `$CODEX_HOME/auth.json`.)
    fn cs_tui(&self, width: u16, height: u16) -> Tmux {
        self.cs_tui_with(width, height, &[])
    }

    fn cs_tui_with(&self, width: u16, height: u16, extra: &[(&str, &OsStr)]) -> Tmux {
        let codex = codex_bin();
        let mut env = vec![
            ("CS_TUI_HOME", self.store.path().as_os_str()),
            ("CS_TUI_CODEX_BIN", codex.as_os_str()),
            ("CODEX_HOME", self.home.path().as_os_str()),
        ];
        env.extend_from_slice(extra);
        Tmux::start(
            width,
            height,
            self.home.work_dir(),
            &env,
            OsStr::new(env!("CARGO_BIN_EXE_cs-tui")),
            &[],
        )
    }

    fn plain_codex(&self, width: u16, height: u16) -> Tmux {
        let codex = codex_bin();
        Tmux::start(
            width,
            height,
            self.home.work_dir(),
            &[("CODEX_HOME", self.home.path().as_os_str())],
            codex.as_os_str(),
            &[OsStr::new("-C"), self.home.work_dir().as_os_str()],
        )
    }
}

const MODEL_LINE: &str = "gpt-5.1-codex";

fn fast_wait(tmux: &Tmux, what: &str, pred: impl Fn(&str) -> bool) -> Instant {
    watch(&mut tmux.control(), what, pred)
}

/// Polls the screen every millisecond through a control-mode client (no process per poll, so
/// the observer takes little CPU from what it observes); returns when `pred` first held.
fn watch(control: &mut ControlClient, what: &str, pred: impl Fn(&str) -> bool) -> Instant {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let screen = control.screen();
        if pred(&screen) {
            return Instant::now();
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}:\n{screen}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Codex in our pane, in process, no tmux: spawn to the model line on the parsed screen.
/// `native`: run the npm package's binary directly, as cs-tui does, instead of its Node wrapper.
async fn codex_in_bare_pane(rig: &CodexRig, native: bool) -> Duration {
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let codex = codex_bin();
    let mut extra = vec![("CODEX_HOME".into(), rig.home.path().as_os_str().to_owned())];
    extra.push(("CS_TUI_BENCH".into(), "1".into()));
    let program = if native {
        let (binary, env) = cs_tui::process::codex::exec_target(codex.as_os_str());
        extra.extend(env);
        PathBuf::from(binary)
    } else {
        codex
    };
    let spec = ChildSpec {
        program,
        args: vec!["-C".into(), rig.home.work_dir().as_os_str().to_owned()],
        cwd: rig.home.work_dir().to_owned(),
        env: child_environment(std::env::vars_os(), &extra),
    };
    let mut pane = PaneScreen::new(47, 116, 10_000, OuterColors::default());
    let start = Instant::now();
    let child = PtyChild::spawn(&spec, 47, 116, tx).unwrap();
    loop {
        match tokio::time::timeout(Duration::from_secs(60), rx.recv()).await {
            Ok(Some(PtyEvent::Output(bytes))) => {
                child.write(pane.process(&bytes));
                if pane.screen().contents().contains(MODEL_LINE) {
                    break;
                }
            }
            other => panic!("codex ended before its model line: {other:?}"),
        }
    }
    let elapsed = start.elapsed();
    child.signal_group(nix::sys::signal::Signal::SIGKILL);
    elapsed
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `CS_TUI_BENCH_ONLY=cd` runs just those sections; all of them by default.
fn wants(section: char) -> bool {
    std::env::var("CS_TUI_BENCH_ONLY").map_or(true, |only| only.contains(section))
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let size_mb: usize = std::env::var("CS_TUI_BENCH_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    if wants('a') {
        let stream = dir.path().join("stream.ansi");
        generate_stream(&stream, size_mb * 1_000_000);
        let data = std::fs::read(&stream).unwrap();
        let bytes = data.len();
        println!("stream: {:.1} MB at {COLS}x{ROWS}", mb(bytes));

        println!("\n(a) throughput");
        let tmux = tmux_cat(&stream);
        let rate = |d: Duration| mb(bytes) / d.as_secs_f64();
        println!(
            "  baseline: cat in tmux            {:>7.0} ms  {:>6.1} MB/s  1.00x",
            ms(tmux),
            rate(tmux)
        );
        let parse = parse_only(&data);
        println!(
            "  vt100 parse alone                {:>7.0} ms  {:>6.1} MB/s  {:.2}x tmux",
            ms(parse),
            rate(parse),
            tmux.as_secs_f64() / parse.as_secs_f64()
        );
        let (pipeline, frames) = pane_pipeline(&stream, &runtime);
        println!(
            "  pane pipeline (PTY+parse+frames) {:>7.0} ms  {:>6.1} MB/s  {:.2}x tmux  ({frames} frames)",
            ms(pipeline),
            rate(pipeline),
            tmux.as_secs_f64() / pipeline.as_secs_f64()
        );
        let binary = cs_tui_cat(&stream, dir.path());
        println!(
            "  cs-tui binary in tmux, cat child {:>7.0} ms  {:>6.1} MB/s  {:.2}x tmux",
            ms(binary),
            rate(binary),
            tmux.as_secs_f64() / binary.as_secs_f64()
        );
    }

    if wants('c') {
        println!("\n(c) peak memory with 10,000 lines of scrollback (12,000 lines printed)");
        let lines = write_script(
            dir.path(),
            "lines-codex",
            "i=0; while [ $i -lt 12000 ]; do printf '\\033[38;2;%d;100;200mscrollback line %d with some text to fill the row \\033[0m\\r\\n' $((i % 256)) $i; i=$((i+1)); done; exec sleep 600",
        );
        // Rows full to the last column of a 140-column pane: the worst case, since vt100 trims a row's trailing blank
        // cells as it enters the scrollback (32 bytes per cell that remains).
        let full = write_script(
            dir.path(),
            "full-rows-codex",
            "i=0; while [ $i -lt 12000 ]; do printf '\\033[38;2;%d;100;200mscrollback line %05d %0118d\\033[0m\\r\\n' $((i % 256)) $i 0; i=$((i+1)); done; exec sleep 600",
        );
        for (script, width, label) in [
            (
                &lines,
                160,
                "160x48 window (116-column pane), typical lines",
            ),
            (
                &lines,
                COLS + PanelConfig::default().width,
                "184x45 window (140-column pane), typical lines",
            ),
            (
                &full,
                COLS + PanelConfig::default().width,
                "184x45 window (140-column pane), every row full (worst case)",
            ),
        ] {
            let height = if width == 160 { 48 } else { ROWS };
            let tmux_lines = Tmux::start(
                width,
                height,
                dir.path(),
                &[
                    ("CS_TUI_NO_PROXY", OsStr::new("1")),
                    ("CS_TUI_HOME", dir.path().as_os_str()),
                    ("CS_TUI_CODEX_BIN", script.as_os_str()),
                ],
                OsStr::new(env!("CARGO_BIN_EXE_cs-tui")),
                &[],
            );
            fast_wait(&tmux_lines, "the last line", |s| {
                s.contains("scrollback line 11999")
            });
            let pid = tmux_lines.pane_pid();
            let hwm = proc_field(pid, "status", "VmHWM:").unwrap_or(0);
            println!(
                "  {label}: cs-tui VmHWM {:.1} MB (target < 50 MB)",
                hwm as f64 / 1024.0
            );
        }
    }

    runtime.block_on(async {
        let rig = CodexRig::new().await;
        if wants('b') {
        println!("\n(b) CPU with Codex idle, 10 s");
        let session = rig.cs_tui(160, 48);
        fast_wait(&session, "codex ready", |s| s.contains(MODEL_LINE));
        // Let Codex finish its startup animation frames first.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let pid = session.pane_pid();
        let before = cpu_ticks(pid);
        let t0 = Instant::now();
        tokio::time::sleep(Duration::from_secs(10)).await;
        let ticks = cpu_ticks(pid) - before;
        let hz = clock_ticks_per_second() as f64;
        let seconds = t0.elapsed().as_secs_f64();
        let cpu = ticks as f64 / hz / seconds;
        println!(
            "  cs-tui: {ticks} ticks in {seconds:.1} s = {:.3}% of a core (resolution {:.3}%; target < 0.2%)",
            cpu * 100.0,
            100.0 / hz / seconds
        );
        let hwm = proc_field(pid, "status", "VmHWM:").unwrap_or(0);
        println!("  cs-tui VmHWM with Codex: {:.1} MB", hwm as f64 / 1024.0);
        drop(session);

        }

        if wants('d') {
        // Plain codex (0.157+) detaches a shared app-server daemon on its first launch and
        // attaches to it on later ones, so its launch time depends on whether one is running:
        // each baseline is measured cold (no daemon) and warm (the daemon of the cold run).
        // cs-tui always starts its own app-server, and runs the npm package's native binary
        // (so does the last row: what is left once Node's start-up is out of both).
        println!("\n(d) launch to Codex's model line (median of 3)");
        let mut ours = Vec::new();
        let mut plain_cold = Vec::new();
        let mut plain_warm = Vec::new();
        let mut bare_cold = Vec::new();
        let mut bare_warm = Vec::new();
        let mut bare_native = Vec::new();
        let model_line = |tmux: Tmux, start: Instant| {
            let at = fast_wait(&tmux, "model line", |s| s.contains(MODEL_LINE));
            drop(tmux);
            at - start
        };
        for _ in 0..3 {
            rig.home.stop_daemons();
            let start = Instant::now();
            ours.push(model_line(rig.cs_tui(160, 48), start));
            let start = Instant::now();
            plain_cold.push(model_line(rig.plain_codex(116, 48), start));
            let start = Instant::now();
            plain_warm.push(model_line(rig.plain_codex(116, 48), start));
            rig.home.stop_daemons();
            bare_cold.push(codex_in_bare_pane(&rig, false).await);
            bare_warm.push(codex_in_bare_pane(&rig, false).await);
            bare_native.push(codex_in_bare_pane(&rig, true).await);
        }
        rig.home.stop_daemons();
        let ours = median(ours);
        let rows = [
            ("plain codex in tmux, cold", median(plain_cold)),
            ("plain codex in tmux, warm", median(plain_warm)),
            ("codex in a bare answering pane, cold", median(bare_cold)),
            ("codex in a bare answering pane, warm", median(bare_warm)),
            ("the same, without the Node wrapper", median(bare_native)),
        ];
        println!("  cs-tui (app-server, proxy, pane)        {:>6.0} ms", ms(ours));
        for (name, baseline) in rows {
            println!(
                "  {name:<39} {:>6.0} ms   cs-tui = {:.2}x",
                ms(baseline),
                ours.as_secs_f64() / baseline.as_secs_f64()
            );
        }
        println!("  (targets: below 1x plain codex in tmux, at most 1.5x the answering pane)");

        }

        if wants('e') {
        let prompts: usize = std::env::var("CS_TUI_BENCH_PROMPTS")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(12);
        println!(
            "\n(e) Enter to reply on screen (median of {prompts} prompts after a warm-up, alternating)"
        );
        let sessions = [
            ("plain codex", rig.plain_codex(116, 48)),
            ("cs-tui", rig.cs_tui(160, 48)),
        ];
        let mut controls: Vec<ControlClient> = sessions.iter().map(|(_, s)| s.control()).collect();
        for control in &mut controls {
            watch(control, "ready", |s| s.contains(MODEL_LINE));
        }
        let mut times = vec![Vec::new(); sessions.len()];
        for i in 0..=prompts {
            for (k, ((name, _), control)) in sessions.iter().zip(&mut controls).enumerate() {
                let prompt = format!("bench {name} {i}");
                control.paste(&prompt);
                watch(control, "prompt", |s| s.contains(&prompt));
                let start = Instant::now();
                control.keys("Enter");
                let reply = format!("you said \"{prompt}\"");
                let took = watch(control, "reply", |s| s.contains(&reply)) - start;
                // The first turn also names the thread; it warms up.
                if i > 0 {
                    times[k].push(took);
                }
                std::thread::sleep(Duration::from_millis(300));
            }
        }
        let mut results = Vec::new();
        for ((name, _), t) in sessions.iter().zip(times) {
            let m = median(t);
            println!("  {name:<12} {:>6.0} ms", ms(m));
            results.push(m);
        }
        println!(
            "  cs-tui / plain = {:.2}x (target within 1.10x)",
            results[1].as_secs_f64() / results[0].as_secs_f64()
        );
        }
    });
    runtime.shutdown_background();
}
