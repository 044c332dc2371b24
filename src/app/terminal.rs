//! Taking over the outer terminal and giving it back on every path: normal exit, error, panic,
//! and signals.

use std::io::{BufWriter, Stdout, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::thread::ThreadId;

use color_eyre::eyre::{Result, WrapErr};
use crossterm::cursor::{SetCursorStyle, Show};
use crossterm::event::{
    DisableBracketedPaste, DisableFocusChange, DisableMouseCapture, EnableBracketedPaste,
    EnableFocusChange, EnableMouseCapture,
};
use crossterm::terminal::{
    Clear, ClearType, EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode,
};
use crossterm::{execute, queue};
use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;
use tokio::sync::mpsc;

use crate::pty::queries::OuterColors;

pub(crate) type Tui = Terminal<CrosstermBackend<FrameWriter>>;

/// Collects everything written to the terminal and hands it over in one `write` per frame:
/// ratatui flushes in the middle of a draw (after the cells, after the cursor), and every
/// flush would be a syscall and a wake-up of the outer terminal, which might even paint the
/// half it got. `flush` is therefore a no-op; [`FrameWriter::present`] writes the frame.
pub struct FrameWriter {
    out: BufWriter<Stdout>,
}

impl FrameWriter {
    fn new() -> Self {
        // Large enough for a full frame of a big terminal in one write.
        Self {
            out: BufWriter::with_capacity(256 * 1024, std::io::stdout()),
        }
    }

    /// Writes what was queued since the last call.
    pub fn present(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

impl Write for FrameWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.out.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Set while the terminal is ours; restoring twice is harmless.
static ACTIVE: AtomicBool = AtomicBool::new(false);

/// Puts the terminal back as we found it. Safe to call from a panic hook or twice.
pub(crate) fn restore() {
    if !ACTIVE.swap(false, Ordering::SeqCst) {
        return;
    }
    let mut out = std::io::stdout();
    let _ = execute!(
        out,
        crossterm::terminal::EndSynchronizedUpdate,
        DisableMouseCapture,
        DisableBracketedPaste,
        DisableFocusChange,
        LeaveAlternateScreen,
        SetCursorStyle::DefaultUserShape,
        Show
    );
    let _ = out.flush();
    let _ = disable_raw_mode();
}

/// The terminal, ours until dropped.
pub(crate) struct TerminalGuard {
    pub terminal: Tui,
    /// The outer terminal's colours, asked before the event reader started.
    pub colors: OuterColors,
}

impl TerminalGuard {
    /// Raw mode, colour probe, alternate screen, bracketed paste, mouse (for the wheel), focus.
    pub(crate) fn enter() -> Result<Self> {
        install_panic_hook();
        enable_raw_mode().wrap_err("switching the terminal to raw mode (is stdin a terminal?)")?;
        ACTIVE.store(true, Ordering::SeqCst);
        // Before crossterm's reader exists, so the replies are not read as keys.
        let colors = crate::pty::outer::probe_outer_colors();
        let mut out = std::io::stdout();
        // Cleared: a terminal that is in the alternate screen already (a cs-tui killed with
        // SIGKILL never left it) keeps its old frame there, and the first frame, drawn as a
        // difference from a blank screen, would leave its stale cells showing.
        queue!(
            out,
            EnterAlternateScreen,
            Clear(ClearType::All),
            EnableBracketedPaste,
            EnableMouseCapture,
            EnableFocusChange
        )
        .and_then(|()| out.flush())
        .wrap_err("setting up the terminal")?;
        let backend = CrosstermBackend::new(FrameWriter::new());
        let terminal = Terminal::new(backend).wrap_err("starting the terminal UI")?;
        Ok(Self { terminal, colors })
    }
}

impl TerminalGuard {
    /// Job control (SIGTSTP: Ctrl+Z in the outer shell, `kill -TSTP`): gives the terminal back
    /// as we found it, stops the whole process as the default action would have, and takes the
    /// terminal again when continued (SIGCONT). The caller redraws everything afterwards. Codex
    /// runs on in its own session meanwhile.
    pub(crate) fn suspend(&mut self) -> Result<()> {
        let _ = self.terminal.backend_mut().writer_mut().present();
        restore();
        nix::sys::signal::raise(nix::sys::signal::Signal::SIGSTOP)
            .wrap_err("stopping for job control")?;
        // Continued.
        enable_raw_mode().wrap_err("switching the terminal back to raw mode")?;
        ACTIVE.store(true, Ordering::SeqCst);
        let mut out = std::io::stdout();
        queue!(
            out,
            EnterAlternateScreen,
            Clear(ClearType::All),
            EnableBracketedPaste,
            EnableMouseCapture,
            EnableFocusChange
        )
        .and_then(|()| out.flush())
        .wrap_err("setting up the terminal again")?;
        // The screen is blank now: forget what ratatui thinks is on it, so the next frame is
        // drawn whole. (Not `Terminal::clear`: it asks the cursor position, and the answer
        // would go to the event reader.) Each swap blanks the buffer it leaves behind.
        self.terminal.swap_buffers();
        self.terminal.swap_buffers();
        Ok(())
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        let _ = self.terminal.backend_mut().writer_mut().present();
        restore();
    }
}

/// The thread that draws: a panic there unwinds through [`TerminalGuard`]'s drop.
static UI_THREAD: OnceLock<ThreadId> = OnceLock::new();
/// Where a panic on any other thread is reported, while the dashboard runs.
static PANICS: Mutex<Option<mpsc::UnboundedSender<String>>> = Mutex::new(None);

/// Panics of other threads (tokio tasks, the PTY reader) from now on, as messages. The
/// dashboard ends on the first: a dead task would leave it running half-dead.
pub(crate) fn panics_elsewhere() -> mpsc::UnboundedReceiver<String> {
    let (tx, rx) = mpsc::unbounded_channel();
    if let Ok(mut slot) = PANICS.lock() {
        *slot = Some(tx);
    }
    rx
}

/// Hands a panic on another thread to the dashboard; `false` when nobody listens.
fn forward_panic(message: String) -> bool {
    PANICS
        .lock()
        .ok()
        .and_then(|slot| slot.as_ref().map(|tx| tx.send(message).is_ok()))
        .unwrap_or(false)
}

fn install_panic_hook() {
    static INSTALLED: AtomicBool = AtomicBool::new(false);
    let _ = UI_THREAD.set(std::thread::current().id());
    if INSTALLED.swap(true, Ordering::SeqCst) {
        return;
    }
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        // The terminal may be gone with the session; the log file keeps it.
        tracing::error!("cs-tui panicked: {info}");
        let on_ui_thread = UI_THREAD.get() == Some(&std::thread::current().id());
        // Off the UI thread, the dashboard still owns the terminal: it ends the session and
        // says why once the terminal is restored (printing now would land on its screen).
        if !on_ui_thread && forward_panic(info.to_string()) {
            return;
        }
        // Restore first, or the message lands on the alternate screen and vanishes.
        restore();
        previous(info);
    }));
}
