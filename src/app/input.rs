//! Where a key goes: to Codex, to a hotkey behind the prefix, or to an open overlay. One
//! function decides, so the routing is visible in one place.

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use crate::config::PrefixKey;
use crate::pty::keys::{KeyModes, encode_key};
use crate::state::Overlay;

/// What a key press does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum KeyAction {
    /// Bytes for Codex.
    Send(Vec<u8>),
    /// The prefix was pressed; the next key is a hotkey.
    PrefixArmed,
    TogglePanel,
    OpenHelp,
    OpenPicker,
    SwitchBest,
    AskQuit,
    Quit,
    CloseOverlay,
    PickerMove(isize),
    PickerChoose,
    /// Swallowed (an unknown hotkey, a key an overlay ignores).
    Nothing,
}

/// The prefix state machine.
#[derive(Clone, Debug)]
pub(crate) struct KeyRouter {
    /// The bytes a terminal sends for the prefix key: a key event with the same bytes is the
    /// prefix, however the terminal reported it.
    prefix: Vec<u8>,
    pending: bool,
    /// The look (help or panel) the prefix just closed: its own hotkey then does not open it
    /// again, so `Ctrl+] p` and `Ctrl+] ?` close what they opened.
    closed_by_prefix: Option<Overlay>,
}

impl KeyRouter {
    pub(crate) fn new(prefix: PrefixKey) -> Self {
        Self {
            prefix: encode_key(prefix.key(), KeyModes::default()).unwrap_or_default(),
            pending: false,
            closed_by_prefix: None,
        }
    }

    /// Whether `key` is the prefix.
    fn is_prefix(&self, key: &KeyEvent) -> bool {
        encode_key(key, KeyModes::default()).is_some_and(|bytes| bytes == self.prefix)
    }

    /// Whether the prefix was pressed and the next key is a hotkey.
    pub(crate) fn pending(&self) -> bool {
        self.pending
    }

    pub(crate) fn route(
        &mut self,
        key: &KeyEvent,
        overlay: Option<&Overlay>,
        modes: KeyModes,
    ) -> KeyAction {
        if key.kind == KeyEventKind::Release {
            return KeyAction::Nothing;
        }
        if let Some(overlay) = overlay {
            self.pending = false;
            // A look closes at any key; the prefix closes it and is the prefix too, so that
            // `Ctrl+] q` quits from under the help or the panel.
            if matches!(overlay, Overlay::Help | Overlay::Panel) && self.is_prefix(key) {
                self.pending = true;
                self.closed_by_prefix = Some(overlay.clone());
                return KeyAction::CloseOverlay;
            }
            return route_overlay(key, overlay);
        }
        if self.pending {
            self.pending = false;
            let closed = self.closed_by_prefix.take();
            if self.is_prefix(key) {
                return KeyAction::Send(self.prefix.clone());
            }
            return match key.code {
                KeyCode::Char('s') => KeyAction::OpenPicker,
                KeyCode::Char('n') => KeyAction::SwitchBest,
                KeyCode::Char('p') if closed == Some(Overlay::Panel) => KeyAction::Nothing,
                KeyCode::Char('p') => KeyAction::TogglePanel,
                KeyCode::Char('?' | 'h') if closed == Some(Overlay::Help) => KeyAction::Nothing,
                KeyCode::Char('?' | 'h') => KeyAction::OpenHelp,
                KeyCode::Char('q') => KeyAction::AskQuit,
                _ => KeyAction::Nothing,
            };
        }
        if self.is_prefix(key) {
            self.pending = true;
            return KeyAction::PrefixArmed;
        }
        encode_key(key, modes).map_or(KeyAction::Nothing, KeyAction::Send)
    }
}

fn route_overlay(key: &KeyEvent, overlay: &Overlay) -> KeyAction {
    let ctrl_c = key.code == KeyCode::Char('c') && key.modifiers.contains(KeyModifiers::CONTROL);
    match overlay {
        // A look at the panel or the help: any key closes it, and goes no further.
        Overlay::Help | Overlay::Panel => KeyAction::CloseOverlay,
        Overlay::ConfirmQuit => match key.code {
            KeyCode::Char('y' | 'Y' | 'q') | KeyCode::Enter => KeyAction::Quit,
            _ => KeyAction::CloseOverlay,
        },
        Overlay::Picker { .. } => match key.code {
            _ if ctrl_c => KeyAction::CloseOverlay,
            KeyCode::Esc | KeyCode::Char('q') => KeyAction::CloseOverlay,
            KeyCode::Up | KeyCode::Char('k') | KeyCode::BackTab => KeyAction::PickerMove(-1),
            KeyCode::Down | KeyCode::Char('j') | KeyCode::Tab => KeyAction::PickerMove(1),
            KeyCode::Enter => KeyAction::PickerChoose,
            _ => KeyAction::Nothing,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    fn ctrl(c: char) -> KeyEvent {
        KeyEvent::new(KeyCode::Char(c), KeyModifiers::CONTROL)
    }

    fn router() -> KeyRouter {
        KeyRouter::new(PrefixKey::default())
    }

    #[test]
    fn keys_go_to_codex_unless_behind_the_prefix() {
        let mut r = router();
        let modes = KeyModes::default();
        assert_eq!(
            r.route(&key(KeyCode::Char('s')), None, modes),
            KeyAction::Send(b"s".to_vec())
        );
        assert_eq!(r.route(&ctrl('c'), None, modes), KeyAction::Send(vec![3]));
        assert_eq!(r.route(&ctrl(']'), None, modes), KeyAction::PrefixArmed);
        assert!(r.pending());
        assert_eq!(
            r.route(&key(KeyCode::Char('s')), None, modes),
            KeyAction::OpenPicker
        );
        assert!(!r.pending());
        let hotkeys = [
            ('n', KeyAction::SwitchBest),
            ('p', KeyAction::TogglePanel),
            ('?', KeyAction::OpenHelp),
            ('q', KeyAction::AskQuit),
            ('x', KeyAction::Nothing),
        ];
        for (c, action) in hotkeys {
            // crossterm reports the 0x1d byte as Ctrl+5; it is the same prefix.
            assert_eq!(r.route(&ctrl('5'), None, modes), KeyAction::PrefixArmed);
            assert_eq!(r.route(&key(KeyCode::Char(c)), None, modes), action, "{c}");
        }
    }

    #[test]
    fn the_prefix_closes_a_look_and_arms_itself_and_its_hotkey_closes_what_it_opened() {
        let modes = KeyModes::default();
        for (look, reopen) in [(Overlay::Panel, 'p'), (Overlay::Help, '?')] {
            let mut r = router();
            // Any other key just closes it.
            assert_eq!(
                r.route(&key(KeyCode::Char('x')), Some(&look), modes),
                KeyAction::CloseOverlay
            );
            assert!(!r.pending());
            // The prefix closes it and arms: `q` then asks to quit.
            assert_eq!(
                r.route(&ctrl(']'), Some(&look), modes),
                KeyAction::CloseOverlay
            );
            assert!(r.pending());
            assert_eq!(
                r.route(&key(KeyCode::Char('q')), None, modes),
                KeyAction::AskQuit
            );
            // Its own hotkey after the prefix closed it does not open it again...
            r.route(&ctrl(']'), Some(&look), modes);
            assert_eq!(
                r.route(&key(KeyCode::Char(reopen)), None, modes),
                KeyAction::Nothing
            );
            // ...but does the next time.
            assert_eq!(r.route(&ctrl(']'), None, modes), KeyAction::PrefixArmed);
            assert_ne!(
                r.route(&key(KeyCode::Char(reopen)), None, modes),
                KeyAction::Nothing
            );
        }
        // The picker and the quit question keep their own keys.
        let mut r = router();
        assert_eq!(
            r.route(&ctrl(']'), Some(&Overlay::Picker { selected: 0 }), modes),
            KeyAction::Nothing
        );
        assert!(!r.pending());
    }

    #[test]
    fn prefix_matches_every_report_of_its_byte() {
        let modes = KeyModes::default();
        // Terminals send 0x1d for Ctrl+]; crossterm decodes 0x1d as Ctrl+5.
        assert_eq!(
            router().route(&ctrl(']'), None, modes),
            KeyAction::PrefixArmed
        );
        assert_eq!(
            router().route(&ctrl('5'), None, modes),
            KeyAction::PrefixArmed
        );
        assert_eq!(
            router().route(&key(KeyCode::Char(']')), None, modes),
            KeyAction::Send(b"]".to_vec())
        );
        let mut f12 = KeyRouter::new(PrefixKey::parse("F12").unwrap());
        assert_eq!(
            f12.route(&key(KeyCode::F(12)), None, modes),
            KeyAction::PrefixArmed
        );
        // Pressed twice, a prefix goes to Codex as the bytes a terminal sends for it.
        for (text, bytes) in [("ctrl+space", vec![0]), ("ctrl+a", vec![0x01])] {
            let mut r = KeyRouter::new(PrefixKey::parse(text).unwrap());
            let press = PrefixKey::parse(text).unwrap().key().to_owned();
            assert_eq!(
                r.route(&press, None, modes),
                KeyAction::PrefixArmed,
                "{text}"
            );
            assert_eq!(
                r.route(&press, None, modes),
                KeyAction::Send(bytes),
                "{text}"
            );
        }
    }

    #[test]
    fn prefix_twice_sends_the_prefix_byte() {
        let mut r = router();
        let modes = KeyModes::default();
        r.route(&ctrl(']'), None, modes);
        assert_eq!(
            r.route(&ctrl(']'), None, modes),
            KeyAction::Send(vec![0x1d])
        );
        assert!(!r.pending());
    }

    #[test]
    fn overlays_take_their_keys() {
        let mut r = router();
        let modes = KeyModes::default();
        let quit = Overlay::ConfirmQuit;
        assert_eq!(
            r.route(&key(KeyCode::Char('y')), Some(&quit), modes),
            KeyAction::Quit
        );
        assert_eq!(
            r.route(&key(KeyCode::Char('n')), Some(&quit), modes),
            KeyAction::CloseOverlay
        );
        assert_eq!(
            r.route(&key(KeyCode::Esc), Some(&quit), modes),
            KeyAction::CloseOverlay
        );
        let picker = Overlay::Picker { selected: 0 };
        assert_eq!(
            r.route(&key(KeyCode::Down), Some(&picker), modes),
            KeyAction::PickerMove(1)
        );
        assert_eq!(
            r.route(&key(KeyCode::Char('k')), Some(&picker), modes),
            KeyAction::PickerMove(-1)
        );
        assert_eq!(
            r.route(&key(KeyCode::Enter), Some(&picker), modes),
            KeyAction::PickerChoose
        );
        assert_eq!(
            r.route(&key(KeyCode::Esc), Some(&picker), modes),
            KeyAction::CloseOverlay
        );
        assert_eq!(
            r.route(&key(KeyCode::Char('a')), Some(&picker), modes),
            KeyAction::Nothing
        );
        assert_eq!(
            r.route(&key(KeyCode::Char('a')), Some(&Overlay::Help), modes),
            KeyAction::CloseOverlay
        );
    }

    #[test]
    fn application_cursor_mode_reaches_the_encoding() {
        let mut r = router();
        let app = KeyModes {
            application_cursor: true,
        };
        assert_eq!(
            r.route(&key(KeyCode::Up), None, app),
            KeyAction::Send(b"\x1bOA".to_vec())
        );
    }
}
