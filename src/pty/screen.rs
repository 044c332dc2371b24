//! The pane's screen model: a vt100 0.18 parser with scrollback, the replies it owes the child,
//! and where the user is looking in the history.

use std::num::NonZeroU16;
use std::time::{Duration, Instant};

use super::queries::{OuterColors, TerminalReplies};

/// How long a synchronized update may hold frames back. Codex ends each within one frame; a
/// child that never ends one must not freeze the pane.
pub const SYNCHRONIZED_UPDATE_LIMIT: Duration = Duration::from_millis(150);

/// The emulated screen of the child.
pub struct PaneScreen {
    parser: vt100::Parser<TerminalReplies>,
}

fn non_zero(n: u16) -> NonZeroU16 {
    NonZeroU16::new(n).unwrap_or(NonZeroU16::MIN)
}

impl PaneScreen {
    /// A screen of `rows`×`cols` keeping `scrollback` lines of history. vt100 0.18 keeps the
    /// rows Codex pushes up through its top-anchored scroll region (0.16 dropped them;
    /// docs/protocol.md §7), so the history is really there to scroll back to.
    pub fn new(rows: u16, cols: u16, scrollback: usize, colors: OuterColors) -> Self {
        Self {
            parser: vt100::Parser::new_with_callbacks(
                non_zero(rows),
                non_zero(cols),
                scrollback,
                TerminalReplies::new(colors),
            ),
        }
    }

    /// Feeds the child's output. Returns the replies owed to the child for the queries in it.
    pub fn process(&mut self, bytes: &[u8]) -> Vec<u8> {
        self.parser.process(bytes);
        std::mem::take(&mut self.parser.callbacks_mut().pending)
    }

    pub fn screen(&self) -> &vt100::Screen {
        self.parser.screen()
    }

    /// (rows, cols).
    pub fn size(&self) -> (u16, u16) {
        let (rows, cols) = self.parser.screen().size();
        (rows.get(), cols.get())
    }

    /// Resizes the emulated screen; returns whether the size changed.
    pub fn resize(&mut self, rows: u16, cols: u16) -> bool {
        if self.size() == (rows.max(1), cols.max(1)) {
            return false;
        }
        self.parser.set_size(non_zero(rows), non_zero(cols));
        true
    }

    /// Lines the view is scrolled back into history (0 = live).
    pub fn scroll_offset(&self) -> usize {
        self.parser.screen().scrollback()
    }

    /// Moves the view by `lines` (positive = back in history), clamped to the history held.
    pub fn scroll_by(&mut self, lines: isize) {
        let current = self.scroll_offset();
        let target = current.saturating_add_signed(lines);
        self.parser.screen_mut().set_scrollback(target);
    }

    /// Back to the live screen.
    pub fn scroll_to_live(&mut self) {
        self.parser.screen_mut().set_scrollback(0);
    }

    /// Lines of history held.
    pub fn history_len(&self) -> usize {
        self.parser.screen().scrollback_len()
    }

    /// Whether a frame should wait: the child is inside a synchronized update (`CSI ?2026h`)
    /// that started less than [`SYNCHRONIZED_UPDATE_LIMIT`] ago. Returns when to draw anyway.
    pub fn hold_frame_until(&self, now: Instant) -> Option<Instant> {
        let since = self.parser.callbacks().synchronized_since?;
        let deadline = since + SYNCHRONIZED_UPDATE_LIMIT;
        (deadline > now).then_some(deadline)
    }

    /// Whether the child wants focus events (`CSI ?1004h`).
    pub fn focus_reporting(&self) -> bool {
        self.parser.callbacks().focus_reporting
    }

    /// Desktop notifications (OSC 9) the child sent since the last call.
    pub fn take_notifications(&mut self) -> Vec<String> {
        std::mem::take(&mut self.parser.callbacks_mut().notifications)
    }

    /// The title the child last set, if any.
    pub fn title(&self) -> Option<&str> {
        self.parser.callbacks().title.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_pushed_up_by_a_scroll_region_is_kept_and_scrollable() {
        let mut pane = PaneScreen::new(5, 20, 100, OuterColors::default());
        // Codex's inline viewport: a top-anchored scroll region above the composer, with
        // finished lines pushed up through it.
        pane.process(b"\x1b[1;3r");
        for i in 0..10 {
            pane.process(format!("\x1b[3;1Hline {i}\n").as_bytes());
        }
        pane.process(b"\x1b[r");
        assert!(pane.history_len() >= 5, "history {}", pane.history_len());
        pane.scroll_by(3);
        assert_eq!(pane.scroll_offset(), 3);
        pane.scroll_by(1000);
        assert_eq!(pane.scroll_offset(), pane.history_len());
        pane.scroll_by(-1000);
        assert_eq!(pane.scroll_offset(), 0);
    }

    #[test]
    fn resize_reports_change_only_when_the_size_changes() {
        let mut pane = PaneScreen::new(5, 20, 0, OuterColors::default());
        assert!(!pane.resize(5, 20));
        assert!(pane.resize(10, 30));
        assert_eq!(pane.size(), (10, 30));
        assert!(!pane.resize(10, 30));
    }

    #[test]
    fn frames_are_held_only_during_a_recent_synchronized_update() {
        let mut pane = PaneScreen::new(5, 20, 0, OuterColors::default());
        let now = Instant::now();
        assert_eq!(pane.hold_frame_until(now), None);
        pane.process(b"\x1b[?2026h");
        assert!(pane.hold_frame_until(Instant::now()).is_some());
        assert_eq!(
            pane.hold_frame_until(Instant::now() + SYNCHRONIZED_UPDATE_LIMIT * 2),
            None
        );
        pane.process(b"\x1b[?2026l");
        assert_eq!(pane.hold_frame_until(Instant::now()), None);
    }
}
