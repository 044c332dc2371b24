//! Asks the outer terminal for its default colours once at startup, so the pane can answer the
//! child's `OSC 10;?`/`OSC 11;?` with the real ones (Codex tints its composer from them).
//!
//! crossterm has no API for this. We write `OSC 10;? OSC 11;? ESC[c` in raw mode and read the
//! replies ourselves before crossterm's event reader starts, so they never surface as keys. The
//! DA1 reply, which every terminal sends, ends the wait early; a terminal that stays silent costs
//! at most [`PROBE_TIMEOUT`].

use std::io::Write;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use super::queries::{OuterColors, Rgb, parse_color_spec};

pub(crate) const PROBE_TIMEOUT: Duration = Duration::from_millis(200);

const PROBE: &[u8] = b"\x1b]10;?\x1b\\\x1b]11;?\x1b\\\x1b[c";

/// What the outer terminal answered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ProbeReplies {
    pub foreground: Option<Rgb>,
    pub background: Option<Rgb>,
    /// The DA1 reply arrived: nothing more will come.
    pub done: bool,
}

impl ProbeReplies {
    pub(crate) fn colors(&self) -> OuterColors {
        let default = OuterColors::default();
        OuterColors {
            foreground: self.foreground.unwrap_or(default.foreground),
            background: self.background.unwrap_or(default.background),
        }
    }
}

/// Finds the OSC 10/11 colour replies and the DA1 reply in what the terminal sent.
pub(crate) fn parse_probe_replies(bytes: &[u8]) -> ProbeReplies {
    let text = String::from_utf8_lossy(bytes);
    let mut replies = ProbeReplies::default();
    for (n, slot) in [
        ("10", &mut replies.foreground),
        ("11", &mut replies.background),
    ] {
        let start = format!("\x1b]{n};");
        if let Some(pos) = text.find(&start) {
            let body = &text[pos + start.len()..];
            let end = body.find(['\x07', '\x1b']).unwrap_or(body.len());
            if end < body.len() {
                *slot = parse_color_spec(&body[..end]);
            }
        }
    }
    // DA1 reply: ESC [ ? … c
    if let Some(pos) = text.find("\x1b[?") {
        replies.done = text[pos + 3..]
            .chars()
            .find(|c| !(c.is_ascii_digit() || *c == ';'))
            == Some('c');
    }
    replies
}

/// Probes the terminal on stdin/stdout. Call in raw mode, before the event reader starts.
/// Returns the defaults when stdin is not a terminal or nothing answers in time.
pub(crate) fn probe_outer_colors() -> OuterColors {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let stdin = std::io::stdin();
    if !nix::unistd::isatty(stdin.as_fd()).unwrap_or(false) {
        return OuterColors::default();
    }
    let mut stdout = std::io::stdout();
    if stdout
        .write_all(PROBE)
        .and_then(|()| stdout.flush())
        .is_err()
    {
        return OuterColors::default();
    }
    let deadline = Instant::now() + PROBE_TIMEOUT;
    let mut received = Vec::new();
    let mut buf = [0u8; 256];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let millis = u16::try_from(left.as_millis().max(1)).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(stdin.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(millis)) {
            Ok(n) if n > 0 => {}
            _ => break,
        }
        match nix::unistd::read(stdin.as_fd(), &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => received.extend_from_slice(&buf[..n]),
        }
        if parse_probe_replies(&received).done {
            break;
        }
    }
    let replies = parse_probe_replies(&received);
    tracing::debug!(
        foreground = ?replies.foreground,
        background = ?replies.background,
        answered = replies.done,
        "outer terminal colours"
    );
    replies.colors()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_in_st_and_bel_forms_are_read() {
        let replies = parse_probe_replies(
            b"\x1b]10;rgb:ffff/ffff/ffff\x1b\\\x1b]11;rgb:1e1e/1e1e/2e2e\x07\x1b[?62;22c",
        );
        assert_eq!(replies.foreground, Some(Rgb(255, 255, 255)));
        assert_eq!(replies.background, Some(Rgb(0x1e, 0x1e, 0x2e)));
        assert!(replies.done);
    }

    #[test]
    fn silent_colours_fall_back_to_defaults() {
        let replies = parse_probe_replies(b"\x1b[?1;2c");
        assert!(replies.done);
        assert_eq!(replies.colors(), OuterColors::default());
    }

    #[test]
    fn partial_replies_are_not_done() {
        let replies = parse_probe_replies(b"\x1b]10;rgb:ffff/ff");
        assert_eq!(replies.foreground, None);
        assert!(!replies.done);
        assert!(!parse_probe_replies(b"\x1b[?1;2").done);
    }
}
