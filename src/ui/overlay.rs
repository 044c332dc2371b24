//! Overlays drawn over everything: help, quit confirmation, account picker.

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Flex, Layout, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, BorderType, Clear, Paragraph, Widget};

use crate::state::dashboard::{AccountState, Dashboard, SessionMode, StoredState};
use crate::ui::panel::RenderContext;

fn centered(area: Rect, width: u16, height: u16) -> Rect {
    let [row] = Layout::vertical([Constraint::Length(height.min(area.height))])
        .flex(Flex::Center)
        .areas(area);
    let [cell] = Layout::horizontal([Constraint::Length(width.min(area.width))])
        .flex(Flex::Center)
        .areas(row);
    cell
}

fn boxed(title: &str, lines: Vec<Line<'static>>, area: Rect, buf: &mut Buffer) {
    let width = lines.iter().map(Line::width).max().unwrap_or(0) + 4;
    let height = lines.len() + 2;
    let rect = centered(
        area,
        u16::try_from(width.max(title.chars().count() + 6)).unwrap_or(u16::MAX),
        u16::try_from(height).unwrap_or(u16::MAX),
    );
    Clear.render(rect, buf);
    let block = Block::bordered()
        .border_type(BorderType::Rounded)
        .border_style(Style::new().fg(Color::Cyan))
        .title(Line::from(format!(" {title} ")).bold());
    let inner = block.inner(rect);
    block.render(rect, buf);
    let inner = Rect {
        x: inner.x + 1,
        width: inner.width.saturating_sub(1),
        ..inner
    };
    Paragraph::new(lines).render(inner, buf);
}

fn key_line(key: &str, what: &str) -> Line<'static> {
    Line::from(vec![
        Span::styled(format!("{key:<10}"), Style::new().fg(Color::Cyan).bold()),
        Span::raw(what.to_owned()),
    ])
}

pub(crate) fn render_help(ctx: &RenderContext<'_>, area: Rect, buf: &mut Buffer) {
    let p = ctx.prefix;
    let lines = vec![
        Line::from(vec![
            Span::raw("Press "),
            Span::styled(p.to_owned(), Style::new().fg(Color::Cyan).bold()),
            Span::raw(", then:"),
        ]),
        Line::default(),
        key_line("s", "pick an account to switch to"),
        key_line("n", "switch to the best other account now"),
        key_line("p", "show or hide the quota panel"),
        key_line("?", "this help"),
        key_line("q", "quit cs-tui and Codex"),
        key_line(p, &format!("send {p} itself to Codex")),
        Line::default(),
        key_line("wheel", "scroll back through Codex's output"),
        Line::default(),
        Line::styled(
            "Switches wait for the running turn to end.",
            Style::new().add_modifier(Modifier::DIM),
        ),
        Line::styled("Esc closes this.", Style::new().add_modifier(Modifier::DIM)),
    ];
    boxed("cs-tui hotkeys", lines, area, buf);
}

pub(crate) fn render_confirm_quit(area: Rect, buf: &mut Buffer) {
    let lines = vec![
        Line::from("Quit cs-tui? Codex closes with it."),
        Line::default(),
        Line::from(vec![
            Span::styled("y", Style::new().fg(Color::Red).bold()),
            Span::raw(" quit    "),
            Span::styled("n", Style::new().fg(Color::Green).bold()),
            Span::raw(" / Esc stay"),
        ]),
    ];
    boxed("quit", lines, area, buf);
}

pub(crate) fn render_picker(
    dashboard: &Dashboard,
    selected: usize,
    ctx: &RenderContext<'_>,
    area: Rect,
    buf: &mut Buffer,
) {
    let mut lines = Vec::new();
    if dashboard.mode == SessionMode::NoProxy {
        lines.push(Line::from("No proxy in this session: Codex runs alone,"));
        lines.push(Line::from("so it cannot switch accounts."));
    }
    let accounts = dashboard.pickable();
    if dashboard.mode != SessionMode::NoProxy && accounts.is_empty() {
        lines.push(Line::from("No stored accounts. Add one with"));
        lines.push(Line::from("`cs-tui accounts add`."));
    }
    let name_width = accounts
        .iter()
        .map(|a| a.name.chars().count())
        .max()
        .unwrap_or(0);
    for (i, account) in accounts.into_iter().enumerate() {
        let state = dashboard.state_of(account);
        let state_text = match state {
            AccountState::Active => "active".to_owned(),
            AccountState::Ready => "ready".to_owned(),
            AccountState::ExhaustedUntil(Some(at)) => format!("exhausted until {}", ctx.clock(at)),
            AccountState::ExhaustedUntil(None) => "exhausted".to_owned(),
            AccountState::WorkspaceLimit(Some(at)) => {
                format!("workspace limit until {}", ctx.clock(at))
            }
            AccountState::WorkspaceLimit(None) => "workspace limit".to_owned(),
            AccountState::NeedsLogin => "needs login".to_owned(),
            AccountState::Disabled => "disabled".to_owned(),
            // Never offered ([`Dashboard::pickable`]).
            AccountState::RemovedFromStore => "removed from the store".to_owned(),
            AccountState::Unsupported => match &account.stored {
                StoredState::Unsupported { kind } => format!(
                    "unsupported sign-in `{}` (from a newer cs-tui)",
                    kind.escape_debug()
                ),
                _ => "unsupported sign-in (from a newer cs-tui)".to_owned(),
            },
        };
        let usage = account
            .snapshot
            .as_ref()
            .map(|s| {
                // The windows it has, shortest first.
                s.windows_by_length()
                    .iter()
                    .map(|w| format!("{} {:>3.0}%", w.kind().short_label(), w.used_percent))
                    .collect::<Vec<_>>()
                    .join("  ")
            })
            .unwrap_or_default();
        let style = if i == selected {
            Style::new().fg(Color::Black).bg(Color::Cyan)
        } else {
            Style::new()
        };
        lines.push(Line::styled(
            format!(
                "{} {:<name_width$}  {:<25} {usage}",
                if i == selected { "›" } else { " " },
                account.name,
                state_text
            ),
            style,
        ));
    }
    lines.push(Line::default());
    lines.push(Line::styled(
        "↑/↓ choose · Enter switch · Esc cancel",
        Style::new().add_modifier(Modifier::DIM),
    ));
    boxed("switch account", lines, area, buf);
}
