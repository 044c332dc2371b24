//! Keys and pastes as bytes, the way xterm sends them.
//!
//! Codex reads its input with crossterm in legacy mode (we do not claim kitty keyboard support,
//! see [`super::queries`]), so it must get exactly what a plain xterm would send: Enter as `\r`
//! (`\n` is Ctrl+J, a newline in the composer), Backspace as 0x7f, Shift+Tab as `ESC[Z`, arrows
//! as `ESC O A` in application-cursor mode (docs/protocol.md §7).

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

/// Terminal modes the child set that change what keys send.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct KeyModes {
    /// DECCKM (`CSI ?1h`): unmodified arrows, Home and End send `ESC O x` instead of `ESC [ x`.
    pub application_cursor: bool,
}

impl KeyModes {
    pub(crate) fn of(screen: &vt100::Screen) -> Self {
        Self {
            application_cursor: screen.application_cursor(),
        }
    }
}

const ESC: u8 = 0x1b;

/// The bytes a terminal sends for `key`, or `None` for keys a legacy terminal cannot send
/// (media keys, modifier-only presses, releases).
pub(crate) fn encode_key(key: &KeyEvent, modes: KeyModes) -> Option<Vec<u8>> {
    if key.kind == KeyEventKind::Release {
        return None;
    }
    let mods = key.modifiers;
    let alt = mods.contains(KeyModifiers::ALT);
    let ctrl = mods.contains(KeyModifiers::CONTROL);
    // xterm's modifier parameter: 1 + Shift(1) + Alt(2) + Ctrl(4).
    let param =
        1 + u8::from(mods.contains(KeyModifiers::SHIFT)) + 2 * u8::from(alt) + 4 * u8::from(ctrl);
    let modified = param > 1;

    let mut out = match key.code {
        KeyCode::Char(c) => return Some(encode_char(c, ctrl, alt)),
        KeyCode::Enter => vec![b'\r'],
        // Ctrl+Backspace is ^H in xterm; plain Backspace is DEL.
        KeyCode::Backspace if ctrl => vec![0x08],
        KeyCode::Backspace => vec![0x7f],
        KeyCode::Tab if mods.contains(KeyModifiers::SHIFT) => b"\x1b[Z".to_vec(),
        KeyCode::Tab => vec![b'\t'],
        KeyCode::BackTab => return Some(b"\x1b[Z".to_vec()),
        KeyCode::Esc => vec![ESC],
        KeyCode::Up => return Some(cursor_key(b'A', param, modes)),
        KeyCode::Down => return Some(cursor_key(b'B', param, modes)),
        KeyCode::Right => return Some(cursor_key(b'C', param, modes)),
        KeyCode::Left => return Some(cursor_key(b'D', param, modes)),
        KeyCode::Home => return Some(cursor_key(b'H', param, modes)),
        KeyCode::End => return Some(cursor_key(b'F', param, modes)),
        KeyCode::KeypadBegin => return Some(cursor_key(b'E', param, modes)),
        KeyCode::Insert => return Some(tilde_key(2, param)),
        KeyCode::Delete => return Some(tilde_key(3, param)),
        KeyCode::PageUp => return Some(tilde_key(5, param)),
        KeyCode::PageDown => return Some(tilde_key(6, param)),
        KeyCode::F(n @ 1..=4) => {
            let final_byte = b"PQRS"[usize::from(n - 1)];
            return Some(if modified {
                format!("\x1b[1;{param}{}", char::from(final_byte)).into_bytes()
            } else {
                vec![ESC, b'O', final_byte]
            });
        }
        KeyCode::F(n @ 5..=12) => {
            let code = [15, 17, 18, 19, 20, 21, 23, 24][usize::from(n - 5)];
            return Some(tilde_key(code, param));
        }
        _ => return None,
    };
    // Enter, Backspace, Tab and Esc take Alt as an ESC prefix, like characters.
    if alt {
        out.insert(0, ESC);
    }
    Some(out)
}

fn encode_char(c: char, ctrl: bool, alt: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(5);
    if alt {
        out.push(ESC);
    }
    match ctrl.then(|| control_byte(c)).flatten() {
        Some(byte) => out.push(byte),
        None => {
            let mut buf = [0; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
        }
    }
    out
}

/// The C0 byte xterm sends for Ctrl plus this character, if any. The digit aliases are the
/// VT220 ones (Ctrl+2 = NUL … Ctrl+8 = DEL), which is also how crossterm decodes 0x1c–0x1f.
fn control_byte(c: char) -> Option<u8> {
    Some(match c {
        'a'..='z' => c as u8 - b'a' + 1,
        'A'..='Z' => c as u8 - b'A' + 1,
        '@' | ' ' | '2' => 0x00,
        '[' | '3' => 0x1b,
        '\\' | '4' => 0x1c,
        ']' | '5' => 0x1d,
        '^' | '6' | '~' => 0x1e,
        '_' | '7' | '/' => 0x1f,
        '8' | '?' => 0x7f,
        _ => return None,
    })
}

/// Arrows, Home, End: `ESC [ x` (normal), `ESC O x` (application cursor, unmodified only),
/// `ESC [ 1 ; m x` with modifiers.
fn cursor_key(final_byte: u8, param: u8, modes: KeyModes) -> Vec<u8> {
    if param > 1 {
        format!("\x1b[1;{param}{}", char::from(final_byte)).into_bytes()
    } else if modes.application_cursor {
        vec![ESC, b'O', final_byte]
    } else {
        vec![ESC, b'[', final_byte]
    }
}

/// Insert, Delete, PgUp, PgDn, F5–F12: `ESC [ n ~`, or `ESC [ n ; m ~` with modifiers.
fn tilde_key(code: u8, param: u8) -> Vec<u8> {
    if param > 1 {
        format!("\x1b[{code};{param}~").into_bytes()
    } else {
        format!("\x1b[{code}~").into_bytes()
    }
}

/// A paste as the child should receive it.
///
/// With bracketed paste on (the child sent `CSI ?2004h`; Codex does) the text is wrapped in
/// `ESC[200~ … ESC[201~`; ESC bytes inside are dropped so the paste cannot end the bracket early
/// or smuggle a control sequence. Without it, line feeds become `\r` as a terminal's paste does,
/// so each line arrives as if typed and Enter-ed.
pub(crate) fn encode_paste(text: &str, bracketed: bool) -> Vec<u8> {
    if bracketed {
        let mut out = Vec::with_capacity(text.len() + 12);
        out.extend_from_slice(b"\x1b[200~");
        out.extend(text.bytes().filter(|&b| b != ESC));
        out.extend_from_slice(b"\x1b[201~");
        out
    } else {
        text.replace("\r\n", "\r").replace('\n', "\r").into_bytes()
    }
}

/// What a mouse-wheel notch over the pane means.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum WheelAction {
    /// Move our scrollback view by this many lines (positive = back in history).
    Scroll(isize),
    /// Send these bytes (arrow keys) to the child.
    Send(Vec<u8>),
}

/// Lines one wheel notch moves.
pub(crate) const WHEEL_LINES: usize = 3;

/// On the normal screen the wheel scrolls our own scrollback; on the alternate screen (Codex's
/// overlays, pagers) there is no scrollback, so it becomes arrow keys like xterm's
/// alternateScroll.
pub(crate) fn wheel(up: bool, alternate_screen: bool, modes: KeyModes) -> WheelAction {
    if alternate_screen {
        let arrow = cursor_key(if up { b'A' } else { b'B' }, 1, modes);
        WheelAction::Send(arrow.repeat(WHEEL_LINES))
    } else if up {
        WheelAction::Scroll(WHEEL_LINES as isize)
    } else {
        WheelAction::Scroll(-(WHEEL_LINES as isize))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(code: KeyCode, mods: KeyModifiers) -> KeyEvent {
        KeyEvent::new(code, mods)
    }

    const NONE: KeyModifiers = KeyModifiers::NONE;
    const CTRL: KeyModifiers = KeyModifiers::CONTROL;
    const ALT: KeyModifiers = KeyModifiers::ALT;
    const SHIFT: KeyModifiers = KeyModifiers::SHIFT;

    #[test]
    fn keys_encode_as_xterm_sends_them() {
        let normal = KeyModes::default();
        let table: &[(KeyCode, KeyModifiers, &[u8])] = &[
            (KeyCode::Enter, NONE, b"\r"),
            (KeyCode::Enter, ALT, b"\x1b\r"),
            (KeyCode::Backspace, NONE, b"\x7f"),
            (KeyCode::Backspace, ALT, b"\x1b\x7f"),
            (KeyCode::Backspace, CTRL, b"\x08"),
            (KeyCode::Tab, NONE, b"\t"),
            (KeyCode::Tab, SHIFT, b"\x1b[Z"),
            (KeyCode::BackTab, SHIFT, b"\x1b[Z"),
            (KeyCode::Esc, NONE, b"\x1b"),
            (KeyCode::Char('a'), NONE, b"a"),
            (KeyCode::Char('A'), SHIFT, b"A"),
            (KeyCode::Char('é'), NONE, "é".as_bytes()),
            (KeyCode::Char('漢'), NONE, "漢".as_bytes()),
            (KeyCode::Char('🦀'), NONE, "🦀".as_bytes()),
            (KeyCode::Char('c'), CTRL, b"\x03"),
            (KeyCode::Char('d'), CTRL, b"\x04"),
            (KeyCode::Char('j'), CTRL, b"\n"),
            (KeyCode::Char('C'), CTRL.union(SHIFT), b"\x03"),
            (KeyCode::Char(' '), CTRL, b"\x00"),
            (KeyCode::Char('@'), CTRL, b"\x00"),
            (KeyCode::Char('['), CTRL, b"\x1b"),
            (KeyCode::Char('\\'), CTRL, b"\x1c"),
            (KeyCode::Char(']'), CTRL, b"\x1d"),
            (KeyCode::Char('5'), CTRL, b"\x1d"),
            (KeyCode::Char('^'), CTRL, b"\x1e"),
            (KeyCode::Char('_'), CTRL, b"\x1f"),
            (KeyCode::Char('x'), ALT, b"\x1bx"),
            (KeyCode::Char('b'), CTRL.union(ALT), b"\x1b\x02"),
            (KeyCode::Up, NONE, b"\x1b[A"),
            (KeyCode::Down, NONE, b"\x1b[B"),
            (KeyCode::Right, NONE, b"\x1b[C"),
            (KeyCode::Left, NONE, b"\x1b[D"),
            (KeyCode::Right, CTRL, b"\x1b[1;5C"),
            (KeyCode::Left, ALT, b"\x1b[1;3D"),
            (KeyCode::Up, SHIFT, b"\x1b[1;2A"),
            (KeyCode::Home, NONE, b"\x1b[H"),
            (KeyCode::End, NONE, b"\x1b[F"),
            (KeyCode::End, CTRL, b"\x1b[1;5F"),
            (KeyCode::Insert, NONE, b"\x1b[2~"),
            (KeyCode::Delete, NONE, b"\x1b[3~"),
            (KeyCode::Delete, SHIFT, b"\x1b[3;2~"),
            (KeyCode::PageUp, NONE, b"\x1b[5~"),
            (KeyCode::PageDown, NONE, b"\x1b[6~"),
            (KeyCode::PageUp, CTRL, b"\x1b[5;5~"),
            (KeyCode::F(1), NONE, b"\x1bOP"),
            (KeyCode::F(4), NONE, b"\x1bOS"),
            (KeyCode::F(1), SHIFT, b"\x1b[1;2P"),
            (KeyCode::F(5), NONE, b"\x1b[15~"),
            (KeyCode::F(10), NONE, b"\x1b[21~"),
            (KeyCode::F(11), NONE, b"\x1b[23~"),
            (KeyCode::F(12), NONE, b"\x1b[24~"),
            (KeyCode::F(12), CTRL, b"\x1b[24;5~"),
        ];
        for (code, mods, want) in table {
            let got = encode_key(&key(*code, *mods), normal);
            assert_eq!(
                got.as_deref(),
                Some(*want),
                "{code:?} {mods:?}: got {got:?}, want {want:?}"
            );
        }
    }

    #[test]
    fn application_cursor_mode_changes_only_unmodified_cursor_keys() {
        let app = KeyModes {
            application_cursor: true,
        };
        let table: &[(KeyCode, KeyModifiers, &[u8])] = &[
            (KeyCode::Up, NONE, b"\x1bOA"),
            (KeyCode::Down, NONE, b"\x1bOB"),
            (KeyCode::Right, NONE, b"\x1bOC"),
            (KeyCode::Left, NONE, b"\x1bOD"),
            (KeyCode::Home, NONE, b"\x1bOH"),
            (KeyCode::End, NONE, b"\x1bOF"),
            (KeyCode::Up, CTRL, b"\x1b[1;5A"),
            (KeyCode::PageUp, NONE, b"\x1b[5~"),
            (KeyCode::Enter, NONE, b"\r"),
        ];
        for (code, mods, want) in table {
            assert_eq!(
                encode_key(&key(*code, *mods), app).as_deref(),
                Some(*want),
                "{code:?} {mods:?}"
            );
        }
    }

    #[test]
    fn keys_a_legacy_terminal_cannot_send_are_dropped() {
        let normal = KeyModes::default();
        assert_eq!(encode_key(&key(KeyCode::CapsLock, NONE), normal), None);
        assert_eq!(encode_key(&key(KeyCode::Null, NONE), normal), None);
        let mut release = key(KeyCode::Char('a'), NONE);
        release.kind = KeyEventKind::Release;
        assert_eq!(encode_key(&release, normal), None);
    }

    #[test]
    fn pastes_are_bracketed_only_when_the_child_asked() {
        assert_eq!(
            encode_paste("one\ntwo", true),
            b"\x1b[200~one\ntwo\x1b[201~".to_vec()
        );
        assert_eq!(
            encode_paste("evil\x1b[201~rm -rf", true),
            b"\x1b[200~evil[201~rm -rf\x1b[201~".to_vec()
        );
        assert_eq!(encode_paste("one\r\ntwo\nthree", false), b"one\rtwo\rthree");
    }

    #[test]
    fn wheel_scrolls_history_or_sends_arrows_on_the_alternate_screen() {
        let normal = KeyModes::default();
        assert_eq!(wheel(true, false, normal), WheelAction::Scroll(3));
        assert_eq!(wheel(false, false, normal), WheelAction::Scroll(-3));
        assert_eq!(
            wheel(true, true, normal),
            WheelAction::Send(b"\x1b[A\x1b[A\x1b[A".to_vec())
        );
        let app = KeyModes {
            application_cursor: true,
        };
        assert_eq!(
            wheel(false, true, app),
            WheelAction::Send(b"\x1bOB\x1bOB\x1bOB".to_vec())
        );
    }
}
