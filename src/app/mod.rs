//! The dashboard: state, events, key routing and the main loop.
//!
//! One `select!` loop owns all state. Producers — the PTY reader, the terminal's event stream,
//! the proxy's events, signals, a once-a-minute countdown tick — only send; the loop applies
//! what they say, marks the screen dirty, and the frame scheduler turns bursts into one draw.

pub(crate) mod backend;
pub mod frame;
pub(crate) mod input;
pub(crate) mod launcher;
pub(crate) mod pilot;
pub(crate) mod terminal;

use std::ffi::OsString;
use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use color_eyre::eyre::{Result, WrapErr, eyre};
use crossterm::event::{Event, EventStream, KeyEventKind, MouseEventKind};
use crossterm::terminal::{BeginSynchronizedUpdate, EndSynchronizedUpdate, SetTitle};
use futures_util::StreamExt;
use nix::sys::signal::Signal;
use ratatui::Terminal;
use ratatui::backend::{Backend, CrosstermBackend};
use ratatui::layout::{Position, Rect};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use crate::app::backend::SessionBackend;
use crate::app::frame::FrameScheduler;
use crate::app::input::{KeyAction, KeyRouter};
use crate::app::pilot::{Pilot, PilotRequest};
use crate::app::terminal::{FrameWriter, TerminalGuard};
use crate::config::Config;
use crate::errors::with_hint;
use crate::process::resolve_program;
use crate::proxy::events::{ProxyCommand, ProxyEvent};
use crate::pty::child::{ChildSpec, PtyChild, PtyEvent, child_environment};
use crate::pty::keys::{KeyModes, WheelAction, encode_paste, wheel};
use crate::pty::screen::PaneScreen;
use crate::state::Overlay;
use crate::state::dashboard::{AccountState, Dashboard, SessionMode, StoredState};
use crate::ui::{self, AppLayout, RenderContext, View};

/// How long Codex gets to exit after a hang-up before it is killed.
const CHILD_EXIT_GRACE: Duration = Duration::from_secs(3);
/// Terminal reads that may fail in a row before the terminal counts as gone.
const MAX_INPUT_ERRORS: u32 = 5;
/// Output handled per loop turn before the loop looks at input and frames again.
const OUTPUT_BATCH_BYTES: usize = 1 << 20;

/// What `cs-tui [CODEX ARGS]` runs, checked before anything starts: the Codex arguments are
/// ones the pane can host, and the codex binary is found.
pub struct Launch {
    codex_bin: OsString,
    program: std::path::PathBuf,
    codex_args: Vec<OsString>,
    cwd: std::path::PathBuf,
}

impl Launch {
    /// Refuses what cannot run.
    pub fn prepare(codex_bin: &std::ffi::OsStr, codex_args: Vec<OsString>) -> Result<Self> {
        launcher::validate_codex_args(&codex_args)
            .map_err(|e| with_hint(e.into(), "cs-tui hosts the interactive Codex TUI only"))?;
        let program =
            resolve_program(codex_bin, std::env::var_os("PATH").as_deref()).ok_or_else(|| {
                with_hint(
                    eyre!(
                        "cannot find the codex binary {:?}",
                        codex_bin.to_string_lossy()
                    ),
                    "install it with `npm install -g @openai/codex@0.169.0`, or point --codex-bin \
                     (or CS_TUI_CODEX_BIN) at it",
                )
            })?;
        let cwd = std::env::current_dir().wrap_err("reading the current directory")?;
        Ok(Self {
            codex_bin: codex_bin.to_owned(),
            program,
            codex_args,
            cwd,
        })
    }

    /// Runs Codex in `cwd` instead of the current directory.
    pub(crate) fn in_dir(self, cwd: std::path::PathBuf) -> Self {
        Self { cwd, ..self }
    }
}

/// `cs-tui [CODEX ARGS]`: Codex in the pane, the panel beside it, on `runtime` (shut down
/// here: the terminal reader may be parked in a read). `proxy` is the switching proxy's setup,
/// `None` in the no-proxy mode ([`backend::proxy_wanted`]). `pilot`, if any, types into the
/// pane until the user takes the keyboard ([`pilot`]). Exits with Codex's code.
pub fn run(
    runtime: tokio::runtime::Runtime,
    launch: Launch,
    config: Config,
    proxy: Option<backend::ProxySetup>,
    store_dir: &std::path::Path,
    pilot: Option<Pilot>,
) -> Result<ExitCode> {
    let Launch {
        codex_bin,
        program,
        codex_args,
        cwd,
    } = launch;
    let result = runtime.block_on(async {
        let backend = backend::start_backend(proxy).await?;
        let remote = backend.remote.as_ref().map(backend::RemoteEndpoint::target);
        let args = launcher::codex_command_args(&codex_args, &cwd, remote.as_ref())?;
        // The npm wrapper's Node start-up would delay Codex's first frame by ~130 ms.
        let (program, extra_env) = crate::process::codex::exec_target(program.as_os_str());
        let program = std::path::PathBuf::from(program);
        tracing::info!(program = %program.display(), ?args, no_proxy = backend.is_no_proxy(), "starting codex");
        let spec = ChildSpec {
            program,
            args,
            cwd,
            env: child_environment(std::env::vars_os(), &extra_env),
        };
        session(spec, backend, config, pilot).await
    });
    // The terminal is restored by now. A token refresh under way (a usage poll, a 401 answered
    // for the app-server) may hold a rotated refresh token that must reach the store first.
    crate::accounts::stop_retrying_refreshes();
    runtime.block_on(crate::accounts::settle_refreshes(
        &crate::accounts::Store::open(store_dir),
    ));
    // The terminal reader thread may be parked in a read; do not wait for it.
    runtime.shutdown_background();
    let end = result?;
    // The alternate screen is gone with whatever Codex last said; say it again on the
    // restored terminal, or a failing Codex would leave nothing to read.
    if let Some(report) = end.report(&codex_bin) {
        eprintln!("{report}");
    }
    Ok(ExitCode::from(
        u8::try_from(end.code.clamp(0, 255)).unwrap_or(1),
    ))
}

/// How the session ended.
#[derive(Debug)]
struct SessionEnd {
    /// cs-tui's exit code.
    code: i32,
    /// Codex exited by itself (not because the user quit or a signal came).
    codex_exited: bool,
    /// The non-blank lines of Codex's last screen.
    last_screen: Vec<String>,
    ran_for: Duration,
    /// Why cs-tui ended the session itself, when part of it stopped working.
    failure: Option<String>,
}

impl SessionEnd {
    fn report(&self, program: &std::ffi::OsStr) -> Option<String> {
        if let Some(failure) = &self.failure {
            return Some(format!(
                "error: cs-tui stopped: {failure}\nhint: the log in {} has the details",
                crate::paths::log_dir()
                    .map(|d| d.display().to_string())
                    .unwrap_or_else(|_| "the store's logs/ directory".into())
            ));
        }
        if !self.codex_exited {
            return None;
        }
        if self.code == 0 {
            // Codex's parting words ("To continue this session, run codex resume …").
            let resume: Vec<&str> = self
                .last_screen
                .iter()
                .map(String::as_str)
                .filter(|l| l.contains("codex resume"))
                .collect();
            return (!resume.is_empty()).then(|| resume.join("\n"));
        }
        let mut out = format!("error: codex exited with code {}", self.code);
        if let Some(signal) = self
            .code
            .checked_sub(128)
            .and_then(|n| Signal::try_from(n).ok())
        {
            out.push_str(&format!(" (killed by {signal})"));
        }
        let tail = &self.last_screen[self.last_screen.len().saturating_sub(15)..];
        if !tail.is_empty() {
            out.push_str("; its last output:");
            for line in tail {
                out.push_str("\n  ");
                out.push_str(line);
            }
        }
        if self.ran_for < Duration::from_secs(3) {
            out.push_str(&format!(
                "\nhint: it stopped right after starting; check that `{} --version` runs",
                program.to_string_lossy()
            ));
        }
        Some(out)
    }
}

/// Takes the terminal, runs the loop, and gives the terminal back before any error surfaces.
async fn session(
    spec: ChildSpec,
    mut backend: SessionBackend,
    config: Config,
    pilot: Option<Pilot>,
) -> Result<SessionEnd> {
    let mut guard = TerminalGuard::enter()?;
    let result = event_loop(&mut guard, &spec, &mut backend, config, pilot).await;
    drop(guard);
    drop(backend.guard.take());
    result
}

/// Why the session ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ending {
    /// The user confirmed quit.
    UserQuit,
    /// A signal asked us to stop; exit with 128 + its number.
    Signal(i32),
    /// Part of cs-tui stopped working (a task panicked, the switching core died); exit 1 and
    /// say why.
    Failed,
}

/// What the app needs of the program in its pane: somewhere to send input, a size to set, and
/// a process group to signal. [`PtyChild`] in production; an in-memory writer in the headless
/// tests.
pub trait ChildIo {
    /// Sends bytes to the child's input.
    fn write(&self, bytes: Vec<u8>);
    /// Sets the child's terminal size.
    fn resize(&self, rows: u16, cols: u16) -> Result<()>;
    /// Signals the child's process group.
    fn signal_group(&self, signal: Signal);
}

impl ChildIo for PtyChild {
    fn write(&self, bytes: Vec<u8>) {
        PtyChild::write(self, bytes);
    }

    fn resize(&self, rows: u16, cols: u16) -> Result<()> {
        PtyChild::resize(self, rows, cols)
    }

    fn signal_group(&self, signal: Signal) {
        PtyChild::signal_group(self, signal);
    }
}

/// The outer terminal the app draws on: ratatui's cells, plus the escape sequences ratatui
/// does not know (title, cursor style, synchronized updates, notifications) and one write per
/// frame. The crossterm backend in production; ratatui's `TestBackend` in the headless tests.
pub trait HostBackend: Backend<Error: Send + Sync + 'static> {
    /// Queues an escape sequence outside ratatui's cells.
    fn queue_raw(&mut self, bytes: &[u8]) -> std::io::Result<()>;
    /// Writes the frame queued so far.
    fn present(&mut self) -> std::io::Result<()>;
}

impl HostBackend for CrosstermBackend<FrameWriter> {
    fn queue_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.write_all(bytes)
    }

    fn present(&mut self) -> std::io::Result<()> {
        self.writer_mut().present()
    }
}

/// Queues a crossterm command (as `queue!` would) on any [`HostBackend`].
fn queue_command(backend: &mut impl HostBackend, command: impl crossterm::Command) -> Result<()> {
    let mut ansi = String::new();
    command.write_ansi(&mut ansi).wrap_err("drawing")?;
    backend.queue_raw(ansi.as_bytes()).wrap_err("drawing")
}

struct App<C: ChildIo = PtyChild> {
    config: Config,
    pane: PaneScreen,
    child: C,
    dashboard: Dashboard,
    router: KeyRouter,
    overlay: Option<Overlay>,
    panel_visible: bool,
    layout: AppLayout,
    frames: FrameScheduler,
    panel_cache: ui::PanelCache,
    commands: mpsc::UnboundedSender<ProxyCommand>,
    cursor_style: Option<vt100::CursorStyle>,
    title: Option<String>,
    ending: Option<Ending>,
    /// When Codex gets SIGKILL if it has not exited after the hang-up.
    kill_at: Option<Instant>,
    /// Why the session failed ([`Ending::Failed`]).
    failure: Option<String>,
    /// Which events notify (`[notify]`), said once each.
    notifier: crate::notify::Decider,
    /// Inside tmux (`$TMUX`): escape sequences go through its passthrough.
    inside_tmux: bool,
    /// Who types for the user until the user types ([`pilot`]).
    pilot: Option<Pilot>,
}

async fn event_loop(
    guard: &mut TerminalGuard,
    spec: &ChildSpec,
    backend: &mut SessionBackend,
    config: Config,
    pilot: Option<Pilot>,
) -> Result<SessionEnd> {
    let started = Instant::now();
    let size = guard
        .terminal
        .size()
        .wrap_err("reading the terminal size")?;
    let panel_visible = config.panel.visible;
    let layout = ui::layout(
        Rect::new(0, 0, size.width, size.height),
        &config.panel,
        panel_visible,
    );
    let pane = PaneScreen::new(
        layout.pane.height,
        layout.pane.width,
        config.pane.scrollback_lines,
        guard.colors,
    );
    // Bounded: at most 16 reads (1 MiB) wait for the parser; the child waits beyond that.
    let (pty_tx, mut pty_rx) = mpsc::channel(16);
    let child = PtyChild::spawn(spec, layout.pane.height, layout.pane.width, pty_tx)?;
    let mode = if backend.is_no_proxy() {
        SessionMode::NoProxy
    } else {
        SessionMode::Proxy
    };
    let mut dashboard = Dashboard::new(mode, std::mem::take(&mut backend.accounts))
        .with_switches(std::mem::take(&mut backend.recent_switches));
    dashboard.seed_history(std::mem::take(&mut backend.usage_samples));
    let mut app = App::new(
        config,
        pane,
        child,
        dashboard,
        layout,
        backend.commands.clone(),
    );
    app.pilot = pilot;

    // crossterm's level-triggered reader (the `use-dev-tty` feature, see Cargo.toml): keys and a
    // resize that arrive together are both delivered.
    let mut terminal_events = EventStream::new();
    let mut sigterm = signal(SignalKind::terminate()).wrap_err("installing signal handlers")?;
    let mut sighup = signal(SignalKind::hangup()).wrap_err("installing signal handlers")?;
    let mut sigint = signal(SignalKind::interrupt()).wrap_err("installing signal handlers")?;
    // Once handled, SIGTSTP no longer stops us by itself: `suspend` gives the terminal back
    // first, then stops.
    let mut panics = crate::app::terminal::panics_elsewhere();
    let mut sigtstp = signal(SignalKind::from_raw(Signal::SIGTSTP as i32))
        .wrap_err("installing signal handlers")?;
    let mut proxy_open = true;
    let mut terminal_open = true;
    let mut input_errors = 0u32;
    let mut proxy_starting = backend
        .started
        .take()
        .map(backend::wait_started)
        .map(Box::pin);

    loop {
        let now = Instant::now();
        let frame_due = app.frames.deadline(app.pane.hold_frame_until(now));
        // Under a flood of output the loop may always find output ready; draw when due anyway.
        if frame_due.is_some_and(|due| due <= now) {
            app.draw(&mut guard.terminal)?;
            continue;
        }
        tokio::select! {
            Some(event) = pty_rx.recv() => {
                match event {
                    PtyEvent::Output(bytes) => {
                        app.on_output(&bytes, &mut guard.terminal);
                        // Drain what is already queued: one frame for the whole burst.
                        let mut handled = bytes.len();
                        while handled < OUTPUT_BATCH_BYTES {
                            match pty_rx.try_recv() {
                                Ok(PtyEvent::Output(more)) => {
                                    handled += more.len();
                                    app.on_output(&more, &mut guard.terminal);
                                }
                                Ok(PtyEvent::Exited(code)) => {
                                    proxy_failed(proxy_starting.take()).await?;
                                    return Ok(app.finish(code, started));
                                }
                                Err(_) => break,
                            }
                        }
                    }
                    PtyEvent::Exited(code) => {
                        proxy_failed(proxy_starting.take()).await?;
                        return Ok(app.finish(code, started));
                    }
                }
            }
            event = terminal_events.next(), if terminal_open => match event {
                Some(Ok(event)) => {
                    input_errors = 0;
                    app.on_terminal_event(event);
                }
                Some(Err(err)) => {
                    // One failed read (an interrupted poll, a size query that failed during a
                    // resize) must not cost the keyboard for the rest of the session; a
                    // terminal that keeps failing is gone.
                    input_errors += 1;
                    tracing::warn!(attempt = input_errors, "terminal input: {err}");
                    if input_errors >= MAX_INPUT_ERRORS {
                        terminal_open = false;
                    }
                }
                None => terminal_open = false,
            },
            result = async { proxy_starting.as_mut().expect("checked").await }, if proxy_starting.is_some() => {
                proxy_starting = None;
                if let Err(err) = result {
                    // Codex cannot connect to a proxy that never came up: stop it, and let
                    // the error (with its hint) reach the restored terminal.
                    app.child.signal_group(Signal::SIGKILL);
                    return Err(err);
                }
            }
            event = backend.events.recv(), if proxy_open => match event {
                Some(event) => {
                    tracing::debug!(?event, "proxy event");
                    if let ProxyEvent::SessionFailed { message, .. } = &event {
                        app.fail(message.clone());
                    }
                    app.dashboard.apply(&event);
                    app.notify(&event, &mut guard.terminal);
                    app.frames.request_soon(Instant::now());
                    if let Some(pilot) = &app.pilot {
                        let _ = pilot.events.send(event);
                    }
                }
                None => proxy_open = false,
            },
            request = async { app.pilot.as_mut().expect("checked").requests.recv().await }, if app.pilot.is_some() => match request {
                Some(request) => app.on_pilot(request),
                // The pilot is done.
                None => app.pilot = None,
            },
            () = sleep_until(frame_due), if frame_due.is_some() => app.draw(&mut guard.terminal)?,
            () = tokio::time::sleep_until(next_minute().into()) => {
                // Countdowns ("resets in 2h 13m") move once a minute; nothing else is timed.
                app.frames.request();
            }
            () = sleep_until(app.kill_at), if app.kill_at.is_some() => {
                tracing::warn!("codex did not exit after a hang-up; killing it");
                app.child.signal_group(Signal::SIGKILL);
                app.kill_at = None;
            }
            _ = sigterm.recv() => app.end(Ending::Signal(Signal::SIGTERM as i32)),
            _ = sighup.recv() => app.end(Ending::Signal(Signal::SIGHUP as i32)),
            _ = sigint.recv() => app.end(Ending::Signal(Signal::SIGINT as i32)),
            Some(message) = panics.recv() => {
                app.fail(format!("an internal task panicked: {message}"));
            }
            _ = sigtstp.recv() => {
                tracing::info!("stopped (SIGTSTP)");
                // A stopped poller would stall the pool's numbers: another session polls.
                backend.pool.suspend();
                guard.suspend()?;
                tracing::info!("continued");
                backend.pool.resume();
                // The terminal may have been resized while we were stopped.
                let size = guard.terminal.size().wrap_err("reading the terminal size")?;
                app.relayout(size.width, size.height);
                app.frames.request();
            }
        }
    }
}

/// When Codex exits while the proxy is still starting, the proxy's failure (its listener closed
/// under Codex) is the real story; give it a moment to arrive.
async fn proxy_failed(starting: Option<impl Future<Output = Result<()>> + Unpin>) -> Result<()> {
    match starting {
        Some(starting) => match tokio::time::timeout(Duration::from_secs(5), starting).await {
            Ok(result) => result,
            Err(_) => Ok(()),
        },
        None => Ok(()),
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}

/// The start of the next wall-clock minute.
fn next_minute() -> Instant {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let into_minute = Duration::from_millis(u64::try_from(now.as_millis() % 60_000).unwrap_or(0));
    Instant::now() + (Duration::from_secs(60) - into_minute)
}

impl<C: ChildIo> App<C> {
    fn new(
        config: Config,
        pane: PaneScreen,
        child: C,
        dashboard: Dashboard,
        layout: AppLayout,
        commands: mpsc::UnboundedSender<ProxyCommand>,
    ) -> Self {
        Self {
            router: KeyRouter::new(config.prefix_key.clone()),
            panel_visible: config.panel.visible,
            pane,
            child,
            dashboard,
            overlay: None,
            layout,
            frames: FrameScheduler::default(),
            panel_cache: ui::PanelCache::default(),
            commands,
            cursor_style: None,
            title: None,
            ending: None,
            kill_at: None,
            failure: None,
            notifier: crate::notify::Decider::new(&config.notify),
            inside_tmux: crate::notify::inside_tmux(),
            pilot: None,
            config,
        }
    }

    /// Carries out what the pilot asks.
    fn on_pilot(&mut self, request: PilotRequest) {
        match request {
            // The pilot types for Codex whatever the user looks at (the help, the panel's
            // drawer): an overlay holds back the user's keys, not the pilot's.
            PilotRequest::Paste(text) => self.write_paste(&text),
            PilotRequest::Keys(bytes) => self.child.write(bytes),
            PilotRequest::Screen(answer) => {
                let _ = answer.send(self.pane.screen().contents());
            }
            PilotRequest::Notice(message) => {
                self.dashboard.apply(&ProxyEvent::Notice {
                    message,
                    at: chrono::Utc::now(),
                });
                self.frames.request();
            }
        }
    }

    /// The user typed: a pilot stops typing for them.
    fn take_keyboard(&mut self) {
        if self.pilot.take().is_some() {
            tracing::info!("the user took the keyboard; the pilot stopped");
            self.dashboard.apply(&ProxyEvent::Notice {
                message: "autopilot off: the keyboard is yours".to_owned(),
                at: chrono::Utc::now(),
            });
        }
    }

    /// The user's paste: into the pane as a terminal does, unless an overlay is open.
    fn paste(&mut self, text: &str) {
        if self.overlay.is_none() {
            self.write_paste(text);
        }
    }

    /// Pastes `text` into the pane as a terminal does.
    fn write_paste(&mut self, text: &str) {
        self.pane.scroll_to_live();
        let bracketed = self.pane.screen().bracketed_paste();
        self.child.write(encode_paste(text, bracketed));
    }

    /// Notifies of `event` if `[notify]` asks for it: escape sequences to the outer terminal
    /// (written with the next frame), the command on its own task.
    fn notify(&mut self, event: &ProxyEvent, terminal: &mut Terminal<impl HostBackend>) {
        let Some(notice) = self.notifier.decide(event) else {
            return;
        };
        tracing::info!(kind = notice.kind.as_str(), "notifying");
        let bytes =
            crate::notify::terminal_bytes(&notice, &self.config.notify.methods, self.inside_tmux);
        if !bytes.is_empty() {
            let _ = terminal.backend_mut().queue_raw(&bytes);
            self.frames.request();
        }
        crate::notify::run_command(&self.config.notify, &notice);
    }

    fn finish(&self, child_code: i32, started: Instant) -> SessionEnd {
        let code = match self.ending {
            Some(Ending::UserQuit) => 0,
            Some(Ending::Signal(signal)) => 128 + signal,
            Some(Ending::Failed) => 1,
            None => child_code,
        };
        let screen = self.pane.screen();
        let (rows, cols) = screen.size();
        let last_screen = (0..rows.get())
            .map(|row| screen.contents_between(row, 0, row, cols.get()))
            .map(|line| line.trim_end().to_owned())
            .filter(|line| !line.is_empty())
            .collect();
        SessionEnd {
            code,
            codex_exited: self.ending.is_none(),
            last_screen,
            ran_for: started.elapsed(),
            failure: self.failure.clone(),
        }
    }

    /// Ends the session because part of cs-tui stopped working; `why` is said on the
    /// restored terminal.
    fn fail(&mut self, why: String) {
        tracing::error!("ending the session: {why}");
        if self.failure.is_none() {
            self.failure = Some(why);
        }
        self.end(Ending::Failed);
    }

    /// Starts ending the session: hang up Codex's process group, as closing a terminal does,
    /// then wait for it to exit (killing it after a grace period).
    fn end(&mut self, ending: Ending) {
        if self.ending.is_none() {
            tracing::info!(?ending, "ending the session");
            self.ending = Some(ending);
            self.kill_at = Some(Instant::now() + CHILD_EXIT_GRACE);
            self.child.signal_group(Signal::SIGHUP);
        }
    }

    fn on_output(&mut self, bytes: &[u8], terminal: &mut Terminal<impl HostBackend>) {
        let replies = self.pane.process(bytes);
        // Answers go back at once: Codex waits for them at startup (docs/protocol.md §7).
        self.child.write(replies);
        for message in self.pane.take_notifications() {
            // Codex's own notifications pass on as they came, through tmux when inside it.
            let _ = terminal
                .backend_mut()
                .queue_raw(&crate::notify::osc9(&message, self.inside_tmux));
        }
        self.frames.request();
    }

    fn relayout(&mut self, width: u16, height: u16) {
        self.layout = ui::layout(
            Rect::new(0, 0, width, height),
            &self.config.panel,
            self.panel_visible,
        );
        if self.overlay == Some(Overlay::Panel) && self.layout.drawer.is_none() {
            // Wide enough again (or too small for anything): the drawer has nowhere to be.
            self.overlay = None;
        }
        let (rows, cols) = (self.layout.pane.height, self.layout.pane.width);
        if self.pane.resize(rows, cols)
            && let Err(err) = self.child.resize(rows, cols)
        {
            tracing::warn!("{err:#}");
        }
        self.frames.request();
    }

    fn on_terminal_event(&mut self, event: Event) {
        match event {
            Event::Key(key) if key.kind != KeyEventKind::Release => {
                let modes = KeyModes::of(self.pane.screen());
                let action = self.router.route(&key, self.overlay.as_ref(), modes);
                // Typing for Codex takes the keyboard from a pilot; a hotkey (a look at the
                // help or the panel, a switch) does not.
                if matches!(action, KeyAction::Send(_)) {
                    self.take_keyboard();
                }
                if !matches!(action, KeyAction::Send(_) | KeyAction::Nothing) {
                    // Hotkeys only: what is typed for Codex never reaches the log.
                    tracing::debug!(?action, "hotkey");
                }
                self.on_action(action);
                self.frames.request();
            }
            Event::Key(_) => {}
            Event::Paste(text) => {
                self.take_keyboard();
                self.paste(&text);
            }
            Event::Mouse(mouse) => {
                let up = match mouse.kind {
                    MouseEventKind::ScrollUp => true,
                    MouseEventKind::ScrollDown => false,
                    _ => return,
                };
                if self.overlay.is_some()
                    || !self
                        .layout
                        .pane
                        .contains(Position::new(mouse.column, mouse.row))
                {
                    return;
                }
                let screen = self.pane.screen();
                match wheel(up, screen.alternate_screen(), KeyModes::of(screen)) {
                    WheelAction::Scroll(lines) => {
                        self.pane.scroll_by(lines);
                        self.frames.request();
                    }
                    WheelAction::Send(bytes) => self.child.write(bytes),
                }
            }
            Event::Resize(width, height) => {
                tracing::debug!(width, height, "terminal resized");
                self.relayout(width, height);
            }
            Event::FocusGained if self.pane.focus_reporting() => {
                self.child.write(b"\x1b[I".to_vec());
            }
            Event::FocusLost if self.pane.focus_reporting() => {
                self.child.write(b"\x1b[O".to_vec());
            }
            Event::FocusGained | Event::FocusLost => {}
        }
    }

    fn on_action(&mut self, action: KeyAction) {
        let now = chrono::Utc::now();
        let no_proxy = self.dashboard.mode == SessionMode::NoProxy;
        match action {
            KeyAction::Send(bytes) => {
                // Typing returns the view to the live screen, as terminals do.
                self.pane.scroll_to_live();
                self.child.write(bytes);
            }
            KeyAction::PrefixArmed | KeyAction::Nothing => {}
            // Too narrow for the panel beside the pane: show it over the pane instead.
            KeyAction::TogglePanel if self.layout.drawer.is_some() => {
                self.overlay = Some(Overlay::Panel);
            }
            KeyAction::TogglePanel => {
                self.panel_visible = !self.panel_visible;
                let area = self.layout_area();
                self.relayout(area.width, area.height);
            }
            KeyAction::OpenHelp => self.overlay = Some(Overlay::Help),
            KeyAction::OpenPicker => {
                // Start on the first account one could switch to.
                let accounts = self.dashboard.pickable();
                let selected = accounts
                    .iter()
                    .position(|a| self.dashboard.state_of(a) == AccountState::Ready)
                    .or_else(|| {
                        accounts
                            .iter()
                            .position(|a| Some(&a.id) != self.dashboard.active.as_ref())
                    })
                    .unwrap_or(0);
                self.overlay = Some(Overlay::Picker { selected });
            }
            KeyAction::SwitchBest if no_proxy => self
                .dashboard
                .push_message("no proxy in this session: cannot switch", now),
            KeyAction::SwitchBest => {
                let _ = self.commands.send(ProxyCommand::SwitchBest);
                self.dashboard
                    .push_message("switch to best account requested", now);
            }
            KeyAction::AskQuit => self.overlay = Some(Overlay::ConfirmQuit),
            KeyAction::Quit => {
                self.overlay = None;
                self.end(Ending::UserQuit);
            }
            KeyAction::CloseOverlay => self.overlay = None,
            KeyAction::PickerMove(delta) => {
                if let Some(Overlay::Picker { selected }) = &mut self.overlay {
                    let count = self.dashboard.pickable().len().max(1);
                    *selected = (*selected as isize + delta).rem_euclid(count as isize) as usize;
                }
            }
            KeyAction::PickerChoose => {
                let Some(Overlay::Picker { selected }) = self.overlay.take() else {
                    return;
                };
                let account = self
                    .dashboard
                    .pickable()
                    .get(selected)
                    .map(|a| (*a).clone());
                if let Some(account) = account {
                    if no_proxy {
                        self.dashboard
                            .push_message("no proxy in this session: cannot switch", now);
                    } else if let StoredState::Unsupported { kind } = &account.stored {
                        // Said at once; the session would refuse it the same way.
                        self.dashboard.push_message(
                            crate::accounts::store::unsupported_sign_in_message(
                                &account.name,
                                kind,
                            ),
                            now,
                        );
                    } else if self.dashboard.active.as_ref() != Some(&account.id) {
                        let _ = self.commands.send(ProxyCommand::SwitchTo {
                            account_id: account.id.clone(),
                        });
                        self.dashboard
                            .push_message(format!("switch to {} requested", account.name), now);
                    }
                }
            }
        }
    }

    fn layout_area(&self) -> Rect {
        let mut area = self.layout.pane;
        for other in [self.layout.panel, self.layout.status]
            .into_iter()
            .flatten()
        {
            area = area.union(other);
        }
        area
    }

    fn draw(&mut self, terminal: &mut Terminal<impl HostBackend>) -> Result<()> {
        let now = chrono::Local::now().fixed_offset();
        let prefix = self.config.prefix_key.label();
        queue_command(terminal.backend_mut(), BeginSynchronizedUpdate)?;
        let title = self.pane.title().map(str::to_owned);
        if title != self.title {
            if let Some(title) = &title {
                queue_command(terminal.backend_mut(), SetTitle(title))?;
            }
            self.title = title;
        }
        terminal
            .draw(|frame| {
                ui::draw(
                    frame,
                    &View {
                        screen: self.pane.screen(),
                        dashboard: &self.dashboard,
                        layout: self.layout,
                        overlay: self.overlay.as_ref(),
                        prefix_pending: self.router.pending(),
                        ctx: RenderContext {
                            now,
                            prefix: &prefix,
                        },
                    },
                    &mut self.panel_cache,
                );
            })
            .wrap_err("drawing")?;
        let style = self.pane.screen().cursor_style();
        if self.cursor_style != Some(style) {
            queue_command(
                terminal.backend_mut(),
                crate::pty::widget::cursor_style(style),
            )?;
            self.cursor_style = Some(style);
        }
        queue_command(terminal.backend_mut(), EndSynchronizedUpdate)?;
        terminal.backend_mut().present().wrap_err("drawing")?;
        self.frames.drew(Instant::now());
        Ok(())
    }
}

#[cfg(test)]
mod headless_tests;

#[cfg(test)]
mod tests {
    use super::*;

    fn end(code: i32) -> SessionEnd {
        SessionEnd {
            code,
            codex_exited: true,
            last_screen: vec!["› Ask Codex to do anything".to_owned()],
            ran_for: Duration::from_secs(60),
            failure: None,
        }
    }

    #[test]
    fn the_report_names_the_signal_that_killed_codex() {
        let report = end(137).report(std::ffi::OsStr::new("codex")).unwrap();
        assert!(
            report.starts_with(
                "error: codex exited with code 137 (killed by SIGKILL); its last output:"
            ),
            "{report}"
        );
        let report = end(2).report(std::ffi::OsStr::new("codex")).unwrap();
        assert!(
            report.starts_with("error: codex exited with code 2; its last output:"),
            "{report}"
        );
    }
}
