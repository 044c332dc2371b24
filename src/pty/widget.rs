//! Draws the vt100 screen into a ratatui buffer, cell by cell, with every attribute and colour
//! the child set, and tells where the real cursor goes and what shape it has.

use crossterm::cursor::SetCursorStyle;
use ratatui::buffer::Buffer;
use ratatui::layout::{Position, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::widgets::Widget;

/// The child's screen as a widget. The screen's scrollback offset decides which rows show.
pub(crate) struct PaneWidget<'a> {
    screen: &'a vt100::Screen,
}

impl<'a> PaneWidget<'a> {
    pub(crate) fn new(screen: &'a vt100::Screen) -> Self {
        Self { screen }
    }
}

/// A vt100 colour as ratatui's. The 16 ANSI colours map to ratatui's named ones, which are
/// emitted as `ESC[3Xm`/`ESC[9Xm` and so follow the outer terminal's palette like the child meant.
pub(crate) fn convert_color(color: vt100::Color) -> Color {
    match color {
        vt100::Color::Default => Color::Reset,
        vt100::Color::Idx(i) => match i {
            0 => Color::Black,
            1 => Color::Red,
            2 => Color::Green,
            3 => Color::Yellow,
            4 => Color::Blue,
            5 => Color::Magenta,
            6 => Color::Cyan,
            7 => Color::Gray,
            8 => Color::DarkGray,
            9 => Color::LightRed,
            10 => Color::LightGreen,
            11 => Color::LightYellow,
            12 => Color::LightBlue,
            13 => Color::LightMagenta,
            14 => Color::LightCyan,
            15 => Color::White,
            i => Color::Indexed(i),
        },
        vt100::Color::Rgb(r, g, b) => Color::Rgb(r, g, b),
    }
}

/// The ratatui modifiers of one vt100 cell.
fn cell_modifier(cell: &vt100::Cell) -> Modifier {
    let mut modifier = Modifier::empty();
    if cell.bold() {
        modifier |= Modifier::BOLD;
    }
    if cell.dim() {
        modifier |= Modifier::DIM;
    }
    if cell.italic() {
        modifier |= Modifier::ITALIC;
    }
    if cell.underline() {
        modifier |= Modifier::UNDERLINED;
    }
    if cell.inverse() {
        modifier |= Modifier::REVERSED;
    }
    modifier
}

impl Widget for PaneWidget<'_> {
    // Runs for every frame over every cell of the pane (Codex redraws up to 120 times a
    // second while it works), so it writes the buffer's cells in place, row by row, and
    // leaves blank cells without a symbol of their own (ratatui's blank).
    fn render(self, area: Rect, buf: &mut Buffer) {
        // The terminal may have shrunk since the layout was made: draw only what fits.
        let area = area.intersection(buf.area);
        if area.is_empty() {
            return;
        }
        let (rows, cols) = self.screen.size();
        let height = area.height.min(rows.get());
        let width = area.width.min(cols.get());
        for row in 0..area.height {
            let start = buf.index_of(area.x, area.y + row);
            let cells = &mut buf.content[start..start + usize::from(area.width)];
            for target in cells.iter_mut() {
                target.reset();
            }
            if row >= height {
                continue;
            }
            // Columns beyond the emulated width stay blank.
            for (col, target) in (0..width).zip(cells.iter_mut()) {
                let Some(cell) = self.screen.cell(row, col) else {
                    break;
                };
                target.fg = convert_color(cell.fgcolor());
                target.bg = convert_color(cell.bgcolor());
                target.modifier = cell_modifier(cell);
                // The right half of a wide character drawn in the previous column stays
                // blank (ratatui skips it when it diffs), with the right background; so does
                // a wide character cut by the pane's edge.
                let text = cell.contents();
                let blank = text.is_empty()
                    || cell.is_wide_continuation()
                    || (cell.is_wide() && col + 1 >= width);
                if !blank {
                    target.set_symbol(text);
                }
            }
        }
        let offset = self.screen.scrollback();
        if offset > 0 {
            let label = format!(" ↑ {offset} lines back ");
            let label_width = u16::try_from(label.chars().count()).unwrap_or(u16::MAX);
            if label_width <= area.width {
                buf.set_string(
                    area.right() - label_width,
                    area.y,
                    label,
                    Style::new().fg(Color::Black).bg(Color::Yellow),
                );
            }
        }
    }
}

/// Where the real cursor goes for a screen drawn in `area`: where the child put it, or `None`
/// when the child hid it, the view is scrolled back, or it falls outside the area.
pub(crate) fn cursor_position(screen: &vt100::Screen, area: Rect) -> Option<Position> {
    if screen.hide_cursor() || screen.scrollback() > 0 {
        return None;
    }
    let (row, col) = screen.cursor_position();
    let (_, cols) = screen.size();
    let col = col.min(cols.get() - 1);
    (row < area.height && col < area.width).then(|| Position::new(area.x + col, area.y + row))
}

/// The outer terminal's cursor shape for the child's DECSCUSR choice.
pub(crate) fn cursor_style(style: vt100::CursorStyle) -> SetCursorStyle {
    match style {
        vt100::CursorStyle::Default => SetCursorStyle::DefaultUserShape,
        vt100::CursorStyle::BlinkBlock => SetCursorStyle::BlinkingBlock,
        vt100::CursorStyle::SteadyBlock => SetCursorStyle::SteadyBlock,
        vt100::CursorStyle::BlinkUnderline => SetCursorStyle::BlinkingUnderScore,
        vt100::CursorStyle::SteadyUnderline => SetCursorStyle::SteadyUnderScore,
        vt100::CursorStyle::BlinkVerticalBar => SetCursorStyle::BlinkingBar,
        vt100::CursorStyle::SteadyVerticalBar => SetCursorStyle::SteadyBar,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pty::queries::OuterColors;
    use crate::pty::screen::PaneScreen;

    fn render(bytes: &[u8], rows: u16, cols: u16, area: Rect) -> (PaneScreen, Buffer) {
        let mut pane = PaneScreen::new(rows, cols, 100, OuterColors::default());
        pane.process(bytes);
        let mut buf = Buffer::empty(Rect::new(0, 0, area.right(), area.bottom()));
        PaneWidget::new(pane.screen()).render(area, &mut buf);
        (pane, buf)
    }

    fn row_text(buf: &Buffer, y: u16) -> String {
        (0..buf.area.width)
            .map(|x| buf[(x, y)].symbol().to_owned())
            .collect()
    }

    #[test]
    fn attributes_are_drawn() {
        let (_, buf) = render(
            b"\x1b[1mB\x1b[0m\x1b[2mD\x1b[0m\x1b[3mI\x1b[0m\x1b[4mU\x1b[0m\x1b[7mR\x1b[0m\x1b[1;3;4mX",
            2,
            10,
            Rect::new(0, 0, 10, 2),
        );
        let table = [
            (0, "B", Modifier::BOLD),
            (1, "D", Modifier::DIM),
            (2, "I", Modifier::ITALIC),
            (3, "U", Modifier::UNDERLINED),
            (4, "R", Modifier::REVERSED),
            (
                5,
                "X",
                Modifier::BOLD | Modifier::ITALIC | Modifier::UNDERLINED,
            ),
        ];
        for (x, symbol, modifier) in table {
            let cell = &buf[(x, 0)];
            assert_eq!(cell.symbol(), symbol);
            assert_eq!(cell.modifier, modifier, "cell {x}");
        }
        assert_eq!(buf[(6, 0)].modifier, Modifier::empty());
    }

    #[test]
    fn colours_in_16_256_and_truecolor() {
        let (_, buf) = render(
            b"\x1b[31ma\x1b[92mb\x1b[38;5;208mc\x1b[38;2;1;2;3md\x1b[44me\x1b[48;5;17mf\x1b[48;2;9;8;7mg\x1b[0mh",
            1,
            10,
            Rect::new(0, 0, 10, 1),
        );
        let table = [
            (0, Color::Red, Color::Reset),
            (1, Color::LightGreen, Color::Reset),
            (2, Color::Indexed(208), Color::Reset),
            (3, Color::Rgb(1, 2, 3), Color::Reset),
            (4, Color::Rgb(1, 2, 3), Color::Blue),
            (5, Color::Rgb(1, 2, 3), Color::Indexed(17)),
            (6, Color::Rgb(1, 2, 3), Color::Rgb(9, 8, 7)),
            (7, Color::Reset, Color::Reset),
        ];
        for (x, fg, bg) in table {
            let cell = &buf[(x, 0)];
            assert_eq!((cell.fg, cell.bg), (fg, bg), "cell {x} {:?}", cell.symbol());
        }
    }

    #[test]
    fn wide_characters_take_two_cells() {
        let (_, buf) = render("漢字🦀!".as_bytes(), 1, 8, Rect::new(0, 0, 8, 1));
        assert_eq!(buf[(0, 0)].symbol(), "漢");
        assert_eq!(buf[(1, 0)].symbol(), " ");
        assert_eq!(buf[(2, 0)].symbol(), "字");
        assert_eq!(buf[(4, 0)].symbol(), "🦀");
        assert_eq!(buf[(6, 0)].symbol(), "!");
        // What a terminal would show: the diff skips the right halves.
        let blank = Buffer::empty(buf.area);
        let shown: String = blank
            .diff(&buf)
            .iter()
            .map(|(_, _, c)| c.symbol())
            .collect();
        assert_eq!(shown, "漢字🦀!");
    }

    #[test]
    fn wide_character_cut_by_the_edge_is_blank() {
        let (_, buf) = render("ab漢".as_bytes(), 1, 8, Rect::new(0, 0, 3, 1));
        assert_eq!(row_text(&buf, 0), "ab ");
    }

    #[test]
    fn drawn_at_an_offset_and_clipped_to_the_area() {
        let (_, buf) = render(b"hello\r\nworld", 2, 5, Rect::new(2, 1, 3, 2));
        assert_eq!(row_text(&buf, 0), "     ");
        assert_eq!(row_text(&buf, 1), "  hel");
        assert_eq!(row_text(&buf, 2), "  wor");
    }

    #[test]
    fn cursor_follows_the_child_and_hides_when_it_should() {
        let area = Rect::new(10, 2, 20, 5);
        let (mut pane, _) = render(b"\x1b[3;4H", 5, 20, area);
        assert_eq!(
            cursor_position(pane.screen(), area),
            Some(Position::new(13, 4))
        );
        pane.process(b"\x1b[?25l");
        assert_eq!(cursor_position(pane.screen(), area), None);
        pane.process(b"\x1b[?25h\x1b[5 q");
        assert_eq!(
            cursor_style(pane.screen().cursor_style()),
            SetCursorStyle::BlinkingBar
        );
        for i in 0..20 {
            pane.process(format!("{i}\r\n").as_bytes());
        }
        pane.scroll_by(2);
        assert_eq!(cursor_position(pane.screen(), area), None);
    }

    #[test]
    fn scrolled_back_view_shows_history_and_says_so() {
        let mut bytes = Vec::new();
        for i in 0..10 {
            bytes.extend_from_slice(format!("line {i}\r\n").as_bytes());
        }
        let mut pane = PaneScreen::new(3, 40, 100, OuterColors::default());
        pane.process(&bytes);
        pane.scroll_by(4);
        let area = Rect::new(0, 0, 40, 3);
        let mut buf = Buffer::empty(area);
        PaneWidget::new(pane.screen()).render(area, &mut buf);
        assert!(
            row_text(&buf, 0).starts_with("line 4"),
            "{}",
            row_text(&buf, 0)
        );
        assert!(row_text(&buf, 0).contains("4 lines back"));
        assert!(row_text(&buf, 1).starts_with("line 5"));
    }
}
