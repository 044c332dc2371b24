//! The whole app without a terminal or a child: an [`App`] drawing on ratatui's `TestBackend`
//! with an in-memory child, fed key events and PTY output bytes as the event loop would, and
//! its frames snapshotted. Everything between the event loop's producers and the outer
//! terminal runs for real: key routing, the pane's parser, the layout, the panel, overlays.

use std::cell::RefCell;

use chrono::TimeZone as _;
use crossterm::event::{Event, KeyCode, KeyEvent, KeyModifiers};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::style::Color;

use super::*;
use crate::proxy::events::AccountRef;
use crate::pty::queries::OuterColors;
use crate::state::dashboard::AccountView;

/// The child end of the pane, in memory: what the app wrote to it, the sizes it was given
/// and the signals it got.
#[derive(Default)]
struct MemoryChild {
    input: RefCell<Vec<u8>>,
    sizes: RefCell<Vec<(u16, u16)>>,
    signals: RefCell<Vec<Signal>>,
}

impl ChildIo for MemoryChild {
    fn write(&self, bytes: Vec<u8>) {
        self.input.borrow_mut().extend_from_slice(&bytes);
    }

    fn resize(&self, rows: u16, cols: u16) -> Result<()> {
        self.sizes.borrow_mut().push((rows, cols));
        Ok(())
    }

    fn signal_group(&self, signal: Signal) {
        self.signals.borrow_mut().push(signal);
    }
}

/// Escape sequences outside the cells (title, cursor style) have nowhere to go here.
impl HostBackend for TestBackend {
    fn queue_raw(&mut self, _bytes: &[u8]) -> std::io::Result<()> {
        Ok(())
    }

    fn present(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

struct Headless {
    app: App<MemoryChild>,
    terminal: Terminal<TestBackend>,
    /// The proxy's end of the command channel.
    commands: mpsc::UnboundedReceiver<ProxyCommand>,
}

impl Headless {
    /// The app on a `width`×`height` terminal with three stored accounts, `alice` active.
    fn new(width: u16, height: u16) -> Self {
        let config = Config::default();
        let layout = ui::layout(
            Rect::new(0, 0, width, height),
            &config.panel,
            config.panel.visible,
        );
        let pane = PaneScreen::new(
            layout.pane.height,
            layout.pane.width,
            config.pane.scrollback_lines,
            OuterColors::default(),
        );
        let accounts = ["alice", "bob", "carol"]
            .into_iter()
            .map(|name| AccountView::new(name, name))
            .collect();
        let mut dashboard = Dashboard::new(SessionMode::Proxy, accounts);
        dashboard.apply(&ProxyEvent::ActiveAccount {
            account: AccountRef {
                id: "alice".into(),
                name: "alice".into(),
            },
            at: chrono::Utc.timestamp_opt(1_777_637_220, 0).unwrap(),
        });
        let (commands_tx, commands) = mpsc::unbounded_channel();
        let app = App::new(
            config,
            pane,
            MemoryChild::default(),
            dashboard,
            layout,
            commands_tx,
        );
        let terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
        Self {
            app,
            terminal,
            commands,
        }
    }

    fn key(&mut self, code: KeyCode, modifiers: KeyModifiers) {
        self.app
            .on_terminal_event(Event::Key(KeyEvent::new(code, modifiers)));
    }

    fn type_text(&mut self, text: &str) {
        for c in text.chars() {
            self.key(KeyCode::Char(c), KeyModifiers::NONE);
        }
    }

    /// The prefix key (Ctrl+] by default).
    fn prefix(&mut self) {
        self.key(KeyCode::Char(']'), KeyModifiers::CONTROL);
    }

    /// Bytes from the child, as the PTY reader hands them over.
    fn output(&mut self, bytes: &[u8]) {
        self.app.on_output(bytes, &mut self.terminal);
    }

    fn resize(&mut self, width: u16, height: u16) {
        self.terminal.backend_mut().resize(width, height);
        self.app.on_terminal_event(Event::Resize(width, height));
    }

    /// Draws a frame and returns the screen as text, one line per row.
    fn frame(&mut self) -> String {
        self.app.draw(&mut self.terminal).unwrap();
        self.terminal.backend().to_string()
    }

    fn input(&self) -> Vec<u8> {
        self.app.child.input.borrow().clone()
    }
}

#[test]
fn typing_reaches_the_child_byte_exact() {
    let mut h = Headless::new(120, 30);
    h.type_text("héllo ✓");
    h.key(KeyCode::Enter, KeyModifiers::NONE);
    h.key(KeyCode::Char('c'), KeyModifiers::CONTROL);
    h.key(KeyCode::Backspace, KeyModifiers::NONE);
    h.key(KeyCode::Up, KeyModifiers::NONE);
    assert_eq!(h.input(), "héllo ✓\r\x03\x7f\x1b[A".as_bytes());
    // A paste while the child asked for bracketed paste arrives bracketed.
    h.output(b"\x1b[?2004h");
    h.app.on_terminal_event(Event::Paste("two\nlines".into()));
    assert!(
        h.input().ends_with(b"\x1b[200~two\nlines\x1b[201~"),
        "{:?}",
        String::from_utf8_lossy(&h.input())
    );
    assert!(h.commands.try_recv().is_err(), "typing commands no switch");
}

#[test]
fn pty_output_with_colours_renders_in_the_pane() {
    let mut h = Headless::new(120, 30);
    h.output(b"plain \x1b[31mred\x1b[0m \x1b[1;38;2;10;200;30mrgb bold\x1b[0m\r\nsecond line");
    let screen = h.frame();
    insta::assert_snapshot!(screen);
    let buffer = h.terminal.backend().buffer();
    assert_eq!(buffer[(6, 0)].symbol(), "r");
    assert_eq!(buffer[(6, 0)].fg, Color::Red);
    assert_eq!(buffer[(0, 0)].fg, Color::Reset);
    assert_eq!(buffer[(10, 0)].fg, Color::Rgb(10, 200, 30));
    assert!(
        buffer[(10, 0)]
            .modifier
            .contains(ratatui::style::Modifier::BOLD)
    );
}

#[test]
fn the_panel_shows_beside_the_pane() {
    let mut h = Headless::new(120, 30);
    let screen = h.frame();
    insta::assert_snapshot!(screen);
    let panel = h
        .app
        .layout
        .panel
        .expect("a panel on a 120-column terminal");
    assert_eq!(h.app.layout.pane.width + panel.width, 120);
    assert!(screen.contains("● alice"), "{screen}");
    // The prefix key and `p` hide it: the pane takes the width, with a status line below.
    h.prefix();
    h.type_text("p");
    assert_eq!(h.app.layout.panel, None);
    assert_eq!(h.app.layout.pane.width, 120);
    assert_eq!(h.app.child.sizes.borrow().last(), Some(&(29, 120)));
    let screen = h.frame();
    assert!(
        screen.lines().last().unwrap().contains("cs-tui  alice"),
        "{screen}"
    );
    assert!(h.input().is_empty(), "{:?}", h.input());
}

#[test]
fn the_prefix_key_opens_the_picker_and_help_and_keys_stay_out_of_the_child() {
    let mut h = Headless::new(120, 30);
    h.prefix();
    h.type_text("s");
    assert!(
        matches!(h.app.overlay, Some(Overlay::Picker { selected: 1 })),
        "the picker starts on the first account one could switch to"
    );
    insta::assert_snapshot!("picker", h.frame());
    h.key(KeyCode::Down, KeyModifiers::NONE);
    h.key(KeyCode::Enter, KeyModifiers::NONE);
    assert!(h.app.overlay.is_none());
    match h.commands.try_recv() {
        Ok(ProxyCommand::SwitchTo { account_id }) => assert_eq!(account_id, "carol"),
        other => panic!("expected a switch to carol, got {other:?}"),
    }
    h.prefix();
    h.type_text("?");
    assert!(matches!(h.app.overlay, Some(Overlay::Help)));
    insta::assert_snapshot!("help", h.frame());
    h.key(KeyCode::Esc, KeyModifiers::NONE);
    assert!(h.app.overlay.is_none());
    assert!(h.input().is_empty(), "{:?}", h.input());
}

#[test]
fn in_a_narrow_terminal_the_hotkey_shows_the_panel_over_the_pane_without_resizing_codex() {
    let mut h = Headless::new(100, 30);
    h.output(b"codex was here");
    h.frame();
    assert_eq!(
        h.app.layout.panel, None,
        "too narrow for the panel beside the pane"
    );
    let sizes = h.app.child.sizes.borrow().len();
    h.prefix();
    h.type_text("p");
    assert_eq!(h.app.overlay, Some(Overlay::Panel));
    let screen = h.frame();
    insta::assert_snapshot!("panel_drawer", screen);
    assert!(screen.contains("── accounts"), "{screen}");
    assert!(screen.contains("codex was here"), "{screen}");
    assert_eq!(
        h.app.child.sizes.borrow().len(),
        sizes,
        "Codex was not resized"
    );
    // Any key closes it, and does not reach Codex.
    h.type_text("x");
    assert!(h.app.overlay.is_none());
    assert!(!h.frame().contains("── accounts"));
    assert!(h.input().is_empty(), "{:?}", h.input());
    // The hotkey that opened it closes it.
    h.prefix();
    h.type_text("p");
    assert_eq!(h.app.overlay, Some(Overlay::Panel));
    h.prefix();
    h.type_text("p");
    assert!(h.app.overlay.is_none());
    assert!(h.input().is_empty(), "{:?}", h.input());
    // Open, then wide enough: the panel goes beside the pane and the drawer closes.
    h.prefix();
    h.type_text("p");
    h.resize(160, 30);
    assert!(h.app.overlay.is_none());
    assert!(h.app.layout.panel.is_some());
    // In a wide terminal the hotkey still hides and shows the panel beside the pane.
    h.prefix();
    h.type_text("p");
    assert_eq!(h.app.layout.panel, None);
    assert!(h.app.overlay.is_none());
}

#[test]
fn a_resize_reflows_the_pane_and_resizes_the_child() {
    let mut h = Headless::new(120, 30);
    h.output(&[b'x'; 100]);
    h.frame();
    h.resize(70, 20);
    assert_eq!(h.app.layout.panel, None, "too narrow for the panel");
    let rows = h.app.layout.pane.height;
    assert_eq!(h.app.child.sizes.borrow().last(), Some(&(rows, 70)));
    let (pane_rows, pane_cols) = h.app.pane.screen().size();
    assert_eq!((pane_rows.get(), pane_cols.get()), (rows, 70));
    let screen = h.frame();
    insta::assert_snapshot!(screen);
    assert_eq!(screen.lines().count(), 20);
}

#[test]
fn a_tiny_terminal_does_not_panic() {
    // (TestBackend cannot print a zero-width buffer, so these frames are drawn, not read.)
    for (width, height) in [
        (1, 1),
        (0, 0),
        (0, 5),
        (5, 0),
        (2, 1),
        (1, 3),
        (10, 2),
        (40, 1),
    ] {
        let mut h = Headless::new(width, height);
        h.output(b"\x1b[31mhello\x1b[0m world\r\n\x1b[?1049h\x1b[2J alternate");
        h.app.draw(&mut h.terminal).unwrap();
        for hotkey in ["s", "?", "q", "p"] {
            h.prefix();
            h.type_text(hotkey);
            h.app.draw(&mut h.terminal).unwrap();
            h.key(KeyCode::Esc, KeyModifiers::NONE);
        }
        h.resize(3, 2);
        h.output(b"more");
        h.app.draw(&mut h.terminal).unwrap();
        h.resize(width, height);
        h.app.draw(&mut h.terminal).unwrap();
        assert!(
            h.app.ending.is_none(),
            "{width}x{height}: Esc closed the quit question"
        );
    }
}

#[test]
fn a_pilot_pastes_and_types_like_the_keyboard_until_the_user_types() {
    let mut h = Headless::new(120, 30);
    let (pilot, seat) = crate::app::pilot::pilot();
    h.app.pilot = Some(pilot);
    // Codex asked for bracketed paste: the pilot's paste arrives bracketed, as a terminal's.
    h.output(b"\x1b[?2004h");
    h.app
        .on_pilot(PilotRequest::Paste("fix the tests".to_owned()));
    h.app.on_pilot(PilotRequest::Keys(b"\r".to_vec()));
    assert_eq!(h.input(), b"\x1b[200~fix the tests\x1b[201~\r");
    // It reads the pane and posts to the panel's notices.
    h.output(b"hello from codex");
    let (tx, mut rx) = tokio::sync::oneshot::channel();
    h.app.on_pilot(PilotRequest::Screen(tx));
    assert!(rx.try_recv().unwrap().contains("hello from codex"));
    h.app
        .on_pilot(PilotRequest::Notice("demo: typed for you".to_owned()));
    assert!(h.frame().contains("demo: typed for you"));

    // A hotkey is not typing for Codex: a look at the help leaves the pilot at the keyboard,
    // and the pilot still types while the user looks.
    h.prefix();
    h.type_text("?");
    assert!(matches!(h.app.overlay, Some(Overlay::Help)));
    h.app.on_pilot(PilotRequest::Paste("go on".to_owned()));
    h.app.on_pilot(PilotRequest::Keys(b"\r".to_vec()));
    assert!(
        h.input().ends_with(b"\x1b[200~go on\x1b[201~\r"),
        "{:?}",
        String::from_utf8_lossy(&h.input())
    );
    h.key(KeyCode::Esc, KeyModifiers::NONE);
    assert!(
        h.app.pilot.is_some(),
        "a hotkey took the keyboard from the pilot"
    );

    // The user's first key takes the keyboard: the pilot is dropped (its seat hears the
    // channel close), the panel says so, and the key goes to Codex.
    h.type_text("x");
    assert!(h.app.pilot.is_none());
    let mut seat = seat;
    assert!(
        seat.requests
            .send(PilotRequest::Keys(b"y".to_vec()))
            .is_err()
    );
    assert!(matches!(
        seat.events.try_recv(),
        Err(tokio::sync::mpsc::error::TryRecvError::Disconnected)
    ));
    assert!(h.frame().contains("autopilot off"));
    assert!(h.input().ends_with(b"\rx"));
}

/// An account a newer cs-tui stored with a sign-in kind this one cannot use: the picker passes
/// over it and, chosen anyway, says why at once and asks the session for nothing.
#[test]
fn the_picker_refuses_an_unsupported_sign_in_at_once() {
    let mut h = Headless::new(120, 30);
    h.app.dashboard.accounts[1].stored = crate::state::dashboard::StoredState::Unsupported {
        kind: "device_code".into(),
    };
    h.prefix();
    h.type_text("s");
    assert!(
        matches!(h.app.overlay, Some(Overlay::Picker { selected: 2 })),
        "the picker starts on carol, the first account one could switch to"
    );
    let screen = h.frame();
    assert!(
        screen.contains("unsupported sign-in `device_code` (from a newer cs-tui)"),
        "{screen}"
    );
    h.key(KeyCode::Up, KeyModifiers::NONE);
    h.key(KeyCode::Enter, KeyModifiers::NONE);
    assert!(h.app.overlay.is_none());
    assert!(
        h.commands.try_recv().is_err(),
        "nothing is asked of the session"
    );
    let said = format!("{:?}", h.app.dashboard.notices);
    assert!(
        said.contains(
            "bob signs in with `device_code`, a kind written by a newer cs-tui; this cs-tui cannot use it"
        ),
        "{said}"
    );
    assert!(h.input().is_empty(), "{:?}", h.input());
}

/// The active account removed from the store while the session runs on it: the panel keeps it,
/// marked; the picker never offers it, and what the picker offers is what Enter switches to.
#[test]
fn the_picker_never_offers_an_account_removed_from_the_store() {
    let mut h = Headless::new(120, 30);
    let summary = |id: &str| crate::proxy::events::AccountSummary {
        id: id.into(),
        name: id.to_owned(),
        email: None,
        plan: None,
        enabled: true,
        needs_login: false,
        unsupported_sign_in: None,
    };
    h.app.dashboard.apply(&ProxyEvent::AccountsListed {
        accounts: vec![summary("bob"), summary("carol")],
        at: chrono::Utc.timestamp_opt(1_777_637_230, 0).unwrap(),
    });
    let screen = h.frame();
    assert!(
        screen
            .lines()
            .any(|l| l.contains("● alice") && l.contains("removed from the store")),
        "{screen}"
    );
    h.prefix();
    h.type_text("s");
    let screen = h.frame();
    let offered: Vec<&str> = screen.lines().filter(|l| l.contains("› ")).collect();
    assert_eq!(offered.len(), 1, "{screen}");
    assert!(offered[0].contains("bob"), "{screen}");
    let picker_rows = screen
        .lines()
        .filter(|l| l.contains("alice") && (l.contains("ready") || l.contains("removed")))
        .count();
    // The panel's row only: the picker has none for alice.
    assert_eq!(picker_rows, 1, "{screen}");
    // Down wraps over the two offered accounts only: bob → carol → bob.
    h.key(KeyCode::Down, KeyModifiers::NONE);
    h.key(KeyCode::Down, KeyModifiers::NONE);
    h.key(KeyCode::Enter, KeyModifiers::NONE);
    match h.commands.try_recv() {
        Ok(ProxyCommand::SwitchTo { account_id }) => assert_eq!(account_id, "bob"),
        other => panic!("expected a switch to bob, got {other:?}"),
    }
}
