//! Answers to the questions the child asks its terminal.
//!
//! vt100 only parses; it never answers. The Codex TUI probes at startup and waits up to ~100 ms
//! for each answer — cursor position `ESC[6n`, colours `OSC 10;?`/`OSC 11;?`, kitty keyboard
//! `ESC[?u`, device attributes `ESC[c` — and asks the cursor position again at runtime
//! (docs/protocol.md §7). The pane answers them itself.
//!
//! The queries are recognised by the vt100 parser itself (through its `Callbacks`), so a query
//! split across two reads is found like any other sequence, and the cursor position is the one
//! at the exact point of the stream where the query stood, not after the whole chunk.

use std::time::Instant;

/// A question a program asks its terminal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TerminalQuery {
    /// DSR 6, `ESC[6n`: where is the cursor?
    CursorPosition,
    /// DSR 5, `ESC[5n`: are you OK?
    Status,
    /// DA1, `ESC[c`: what are you?
    PrimaryDeviceAttributes,
    /// `ESC[?u`: which kitty keyboard flags are on?
    KittyKeyboardFlags,
    /// `OSC 10;?`: the default foreground colour.
    ForegroundColor,
    /// `OSC 11;?`: the default background colour.
    BackgroundColor,
    /// DECRQM `ESC[?N$p`: is private mode N set?
    PrivateMode(u16),
}

/// An RGB colour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rgb(pub u8, pub u8, pub u8);

/// The outer terminal's default colours, reported to the child as its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OuterColors {
    pub foreground: Rgb,
    pub background: Rgb,
}

impl Default for OuterColors {
    /// A light-on-dark terminal, the common case, used when the outer terminal does not say.
    fn default() -> Self {
        Self {
            foreground: Rgb(0xd0, 0xd0, 0xd0),
            background: Rgb(0x00, 0x00, 0x00),
        }
    }
}

/// Synchronized output (`CSI ?2026h/l`): Codex brackets each frame with it.
pub const SYNCHRONIZED_OUTPUT_MODE: u16 = 2026;

/// Focus events (`CSI ?1004h`): `ESC[I` / `ESC[O` when the terminal gains or loses focus.
pub const FOCUS_REPORTING_MODE: u16 = 1004;

/// The reply a terminal gives, or `None` when it stays silent.
///
/// The kitty keyboard query gets no reply, as from a terminal without kitty support: the DA1
/// query Codex sends right after tells it so without a wait. Claiming support (even with flags
/// 0) would invite Codex to push keyboard flags and expect kitty-encoded keys, which the pane
/// does not produce.
pub fn reply_to_terminal_query(
    query: &TerminalQuery,
    screen: &vt100::Screen,
    colors: &OuterColors,
) -> Option<Vec<u8>> {
    match query {
        TerminalQuery::CursorPosition => {
            let (row, col) = screen.cursor_position();
            let (_, cols) = screen.size();
            // After writing the last column the cursor waits at `cols`; terminals report the
            // last column itself.
            let col = col.min(cols.get() - 1);
            Some(format!("\x1b[{};{}R", row + 1, col + 1).into_bytes())
        }
        TerminalQuery::Status => Some(b"\x1b[0n".to_vec()),
        // A VT100 with advanced video: the minimal honest answer; the pane is no full xterm.
        TerminalQuery::PrimaryDeviceAttributes => Some(b"\x1b[?1;2c".to_vec()),
        TerminalQuery::KittyKeyboardFlags => None,
        TerminalQuery::ForegroundColor => Some(osc_color(10, colors.foreground)),
        TerminalQuery::BackgroundColor => Some(osc_color(11, colors.background)),
        TerminalQuery::PrivateMode(mode) => {
            // 1 = set, 2 = reset, 0 = unknown. We honour synchronized output (frames are held
            // until it ends), so report it as supported and currently reset.
            let state = match *mode {
                SYNCHRONIZED_OUTPUT_MODE => 2,
                1 if screen.application_cursor() => 1,
                25 => {
                    if screen.hide_cursor() {
                        2
                    } else {
                        1
                    }
                }
                2004 if screen.bracketed_paste() => 1,
                1049 if screen.alternate_screen() => 1,
                1 | 2004 | 1049 => 2,
                _ => 0,
            };
            Some(format!("\x1b[?{mode};{state}$y").into_bytes())
        }
    }
}

/// `OSC n;rgb:rrrr/gggg/bbbb ST`, xterm's 16-bit-per-channel form.
fn osc_color(n: u8, Rgb(r, g, b): Rgb) -> Vec<u8> {
    let wide = |c: u8| u16::from(c) * 0x101;
    format!(
        "\x1b]{n};rgb:{:04x}/{:04x}/{:04x}\x1b\\",
        wide(r),
        wide(g),
        wide(b)
    )
    .into_bytes()
}

/// Parses the colour in an OSC 10/11 reply body such as `rgb:ffff/ffff/ffff`, `rgb:ff/ff/ff`
/// or `#rrggbb`.
pub fn parse_color_spec(spec: &str) -> Option<Rgb> {
    if let Some(hex) = spec.strip_prefix('#') {
        if hex.len() != 6 {
            return None;
        }
        let channel = |i: usize| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok();
        return Some(Rgb(channel(0)?, channel(2)?, channel(4)?));
    }
    let body = spec.strip_prefix("rgb:").or(spec.strip_prefix("rgba:"))?;
    let mut channels = body.split('/').map(|c| {
        // Scale 1–4 hex digits to 8 bits, as XParseColor does.
        let digits = c.len();
        if digits == 0 || digits > 4 {
            return None;
        }
        let value = u32::from_str_radix(c, 16).ok()?;
        let max = (1u32 << (4 * digits)) - 1;
        Some(((value * 255 + max / 2) / max) as u8)
    });
    Some(Rgb(channels.next()??, channels.next()??, channels.next()??))
}

/// The parser's callbacks: collect replies to queries and note what the pane must honour.
#[derive(Debug, Default)]
pub struct TerminalReplies {
    pub colors: OuterColors,
    /// Replies not yet written to the child, in order.
    pub pending: Vec<u8>,
    /// When the child began a synchronized update that has not ended yet.
    pub synchronized_since: Option<Instant>,
    /// The last window title the child set (OSC 0/2).
    pub title: Option<String>,
    /// The child asked for focus events (`CSI ?1004h`), which vt100 does not track.
    pub focus_reporting: bool,
    /// Desktop notifications (OSC 9) to pass on to the outer terminal.
    pub notifications: Vec<String>,
}

impl TerminalReplies {
    pub fn new(colors: OuterColors) -> Self {
        Self {
            colors,
            ..Self::default()
        }
    }

    fn answer(&mut self, screen: &vt100::Screen, query: TerminalQuery) {
        if let Some(reply) = reply_to_terminal_query(&query, screen, &self.colors) {
            self.pending.extend_from_slice(&reply);
        }
    }
}

fn first_param(params: &[&[u16]]) -> u16 {
    params.first().and_then(|p| p.first()).copied().unwrap_or(0)
}

impl vt100::Callbacks for TerminalReplies {
    fn unhandled_csi(
        &mut self,
        screen: &mut vt100::Screen,
        i1: Option<u8>,
        i2: Option<u8>,
        params: &[&[u16]],
        c: char,
    ) {
        let query = match (i1, i2, c) {
            (None, None, 'n') if first_param(params) == 6 => TerminalQuery::CursorPosition,
            (None, None, 'n') if first_param(params) == 5 => TerminalQuery::Status,
            (None, None, 'c') if first_param(params) == 0 => TerminalQuery::PrimaryDeviceAttributes,
            (Some(b'?'), None, 'u') => TerminalQuery::KittyKeyboardFlags,
            (Some(b'?'), Some(b'$'), 'p') => TerminalQuery::PrivateMode(first_param(params)),
            // vt100 passes DECSET/DECRST modes it does not know here; 2026 and 1004 are two.
            (Some(b'?'), None, 'h' | 'l') => {
                for mode in params.iter().filter_map(|p| p.first()) {
                    match *mode {
                        SYNCHRONIZED_OUTPUT_MODE => {
                            self.synchronized_since = (c == 'h').then(Instant::now);
                        }
                        FOCUS_REPORTING_MODE => self.focus_reporting = c == 'h',
                        _ => {}
                    }
                }
                return;
            }
            _ => return,
        };
        self.answer(screen, query);
    }

    fn unhandled_osc(&mut self, screen: &mut vt100::Screen, params: &[&[u8]]) {
        let query = match params {
            [b"10", b"?"] => TerminalQuery::ForegroundColor,
            [b"11", b"?"] => TerminalQuery::BackgroundColor,
            [b"9", message @ ..] if !message.is_empty() => {
                let message = message.join(&b";"[..]);
                self.notifications
                    .push(String::from_utf8_lossy(&message).into_owned());
                return;
            }
            _ => return,
        };
        self.answer(screen, query);
    }

    fn set_window_title(&mut self, _: &mut vt100::Screen, title: &[u8]) {
        self.title = Some(String::from_utf8_lossy(title).into_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parser() -> vt100::Parser<TerminalReplies> {
        vt100::Parser::new_with_callbacks(
            std::num::NonZeroU16::new(24).unwrap(),
            std::num::NonZeroU16::new(80).unwrap(),
            0,
            TerminalReplies::new(OuterColors {
                foreground: Rgb(0xff, 0xff, 0xff),
                background: Rgb(0x12, 0x34, 0x56),
            }),
        )
    }

    fn replies(parser: &mut vt100::Parser<TerminalReplies>) -> String {
        String::from_utf8(std::mem::take(&mut parser.callbacks_mut().pending)).unwrap()
    }

    #[test]
    fn codex_startup_probes_are_answered_in_order() {
        let mut p = parser();
        p.process(b"\x1b[3;7H\x1b[6n\x1b]10;?\x1b\\\x1b]11;?\x07\x1b[?u\x1b[c");
        assert_eq!(
            replies(&mut p),
            "\x1b[3;7R\x1b]10;rgb:ffff/ffff/ffff\x1b\\\x1b]11;rgb:1212/3434/5656\x1b\\\x1b[?1;2c"
        );
    }

    #[test]
    fn cursor_position_is_the_one_at_the_query_not_at_the_end_of_the_chunk() {
        let mut p = parser();
        p.process(b"hello\x1b[6nworld!\x1b[6n");
        assert_eq!(replies(&mut p), "\x1b[1;6R\x1b[1;12R");
    }

    #[test]
    fn queries_split_across_reads_are_answered_once_complete() {
        let whole = b"ab\x1b[6n\x1b]11;?\x1b\\\x1b[c";
        for split in 1..whole.len() {
            let mut p = parser();
            p.process(&whole[..split]);
            p.process(&whole[split..]);
            assert_eq!(
                replies(&mut p),
                "\x1b[1;3R\x1b]11;rgb:1212/3434/5656\x1b\\\x1b[?1;2c",
                "split at {split}"
            );
        }
    }

    #[test]
    fn cursor_waiting_past_the_last_column_reports_the_last_column() {
        let mut p = parser();
        p.process(&[b'x'; 80]);
        p.process(b"\x1b[6n");
        assert_eq!(replies(&mut p), "\x1b[1;80R");
    }

    #[test]
    fn kitty_query_alone_gets_no_reply_and_other_sequences_none_either() {
        let mut p = parser();
        p.process(b"\x1b[?u\x1b[2J\x1b[>c\x1b]0;title\x07\x1b]12;?\x07");
        assert_eq!(replies(&mut p), "");
        assert_eq!(p.callbacks().title.as_deref(), Some("title"));
    }

    #[test]
    fn synchronized_output_is_tracked_and_reported() {
        let mut p = parser();
        p.process(b"\x1b[?2026$p");
        assert_eq!(replies(&mut p), "\x1b[?2026;2$y");
        p.process(b"\x1b[?2026h");
        assert!(p.callbacks().synchronized_since.is_some());
        p.process(b"frame\x1b[?2026l");
        assert!(p.callbacks().synchronized_since.is_none());
        p.process(b"\x1b[?1004h\x1b]9;done\x07");
        assert!(p.callbacks().focus_reporting);
        assert_eq!(p.callbacks().notifications, ["done"]);
        p.process(b"\x1b[?2004h\x1b[?2004$p\x1b[?1$p");
        assert_eq!(replies(&mut p), "\x1b[?2004;1$y\x1b[?1;2$y");
    }

    #[test]
    fn status_report() {
        let mut p = parser();
        p.process(b"\x1b[5n");
        assert_eq!(replies(&mut p), "\x1b[0n");
    }

    #[test]
    fn colour_specs_parse_in_every_form_terminals_use() {
        assert_eq!(
            parse_color_spec("rgb:ffff/8080/0000"),
            Some(Rgb(255, 128, 0))
        );
        assert_eq!(parse_color_spec("rgb:ff/80/00"), Some(Rgb(255, 128, 0)));
        assert_eq!(parse_color_spec("rgb:f/8/0"), Some(Rgb(255, 136, 0)));
        assert_eq!(parse_color_spec("#1e1e2e"), Some(Rgb(0x1e, 0x1e, 0x2e)));
        assert_eq!(parse_color_spec("rgb:zz/00/00"), None);
        assert_eq!(parse_color_spec("red"), None);
    }
}
