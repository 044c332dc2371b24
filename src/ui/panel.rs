//! The quota panel and its one-line form: pure functions from the dashboard to widgets.

use crate::accounts::reset_credits::ResetCredits;
use chrono::{DateTime, FixedOffset, TimeZone, Utc};
use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, BorderType, Paragraph, Widget};

use crate::pace::{
    Burn, Exhaustion, Runway, describe_runway, format_duration, pace, time_to_exhaustion,
};
use crate::proxy::events::ConnectionState;
use crate::quota::{RateLimitSnapshot, RateLimitWindow, WindowKind};
use crate::state::dashboard::{AccountState, Dashboard, Notice, SessionMode};

/// What every render function needs besides the dashboard.
#[derive(Clone, Copy, Debug)]
pub struct RenderContext<'a> {
    /// Now, in the zone clock times are shown in.
    pub now: DateTime<FixedOffset>,
    /// The prefix key as the footer shows it (`Ctrl+]`).
    pub prefix: &'a str,
}

impl RenderContext<'_> {
    fn unix(&self) -> i64 {
        self.now.timestamp()
    }

    /// `14:20` today, `Fri 09:00` another day.
    pub fn clock(&self, unix: i64) -> String {
        let Some(at) = self.now.timezone().timestamp_opt(unix, 0).single() else {
            return "?".to_owned();
        };
        if at.date_naive() == self.now.date_naive() {
            at.format("%H:%M").to_string()
        } else {
            at.format("%a %H:%M").to_string()
        }
    }

    fn clock_utc(&self, at: DateTime<Utc>) -> String {
        self.clock(at.timestamp())
    }
}

const DIM: Style = Style::new().add_modifier(Modifier::DIM);

fn usage_color(used: f64) -> Color {
    if used >= 90.0 {
        Color::Red
    } else if used >= 70.0 {
        Color::Yellow
    } else {
        Color::Green
    }
}

/// A text gauge: `███████░░░░░░░`.
fn bar(used: f64, width: usize) -> Span<'static> {
    let filled = ((used.clamp(0.0, 100.0) / 100.0) * width as f64).round() as usize;
    let text = format!("{}{}", "█".repeat(filled), "░".repeat(width - filled));
    Span::styled(text, Style::new().fg(usage_color(used)))
}

fn section(title: &str, width: usize) -> Line<'static> {
    let rule = width.saturating_sub(title.chars().count() + 4);
    Line::from(vec![
        Span::styled("── ", DIM),
        Span::styled(title.to_owned(), Style::new().bold()),
        Span::styled(format!(" {}", "─".repeat(rule)), DIM),
    ])
}

fn connection_text(dashboard: &Dashboard) -> (String, Color) {
    if dashboard.mode == SessionMode::NoProxy {
        return (
            "no proxy: quota unknown, no switching".to_owned(),
            Color::Yellow,
        );
    }
    match dashboard.connection {
        ConnectionState::Starting => ("proxy starting…".to_owned(), Color::Yellow),
        ConnectionState::Ready { clients } => (
            format!(
                "proxy ready · {clients} client{}",
                if clients == 1 { "" } else { "s" }
            ),
            Color::Green,
        ),
        ConnectionState::Down => ("proxy down".to_owned(), Color::Red),
    }
}

fn header_lines(dashboard: &Dashboard, lines: &mut Vec<Line<'static>>, width: usize) {
    match dashboard.active_account() {
        Some(active) => {
            let mut first = vec![
                Span::styled("● ", Style::new().fg(Color::Green)),
                Span::styled(active.name.clone(), Style::new().bold()),
            ];
            let plan = active
                .plan
                .clone()
                .or_else(|| active.snapshot.as_ref().and_then(|s| s.plan_type.clone()));
            if let Some(plan) = plan {
                first.push(Span::styled(format!("  {plan}"), DIM));
            }
            lines.push(Line::from(first));
            if let Some(email) = &active.email {
                lines.push(Line::styled(format!("  {email}"), DIM));
            }
        }
        None if dashboard.mode == SessionMode::NoProxy => {
            lines.push(Line::from("○ the account in $CODEX_HOME"));
        }
        None => lines.push(Line::styled("○ no account yet", DIM)),
    }
    let (text, color) = connection_text(dashboard);
    let mut status = vec![Span::styled(text, Style::new().fg(color))];
    if dashboard.turns_running > 0 {
        status.push(Span::styled(" · turn running", DIM));
    }
    lines.push(Line::from(status));
    // The pool, when other sessions share the store: "3 sessions: alice ×2, bob ×1".
    if let Some(summary) = dashboard.pool.summary() {
        // An account's name and its count stay on one line.
        let summary = summary.replace(" ×", "\u{a0}×");
        let options = textwrap::Options::new(width.max(12))
            .subsequent_indent("  ")
            .word_splitter(textwrap::WordSplitter::NoHyphenation);
        for line in textwrap::wrap(&summary, options) {
            lines.push(Line::styled(line.replace('\u{a0}', " "), DIM));
        }
    }
    if let Some(to) = &dashboard.switching_to {
        let name = dashboard
            .account(to)
            .map_or(to.as_str(), |a| a.name.as_str());
        lines.push(Line::styled(
            format!("  switching to {name}…"),
            Style::new().fg(Color::Cyan),
        ));
    }
}

fn window_lines(
    label: &str,
    window: &RateLimitWindow,
    rate: Option<f64>,
    ctx: &RenderContext<'_>,
    width: usize,
    lines: &mut Vec<Line<'static>>,
) {
    let now = ctx.unix();
    let gauge_width = width.saturating_sub(13).max(4);
    lines.push(Line::from(vec![
        Span::styled(format!("{label:<7}"), Style::new().bold()),
        bar(window.used_percent, gauge_width),
        Span::raw(format!(" {:>3.0}%", window.used_percent)),
    ]));
    if let Some(reset) = window.resets_at {
        lines.push(Line::from(format!(
            "  resets in {} ({})",
            format_duration(reset.saturating_sub(now)),
            ctx.clock(reset)
        )));
    }
    let mut detail = Vec::new();
    if let Some(pace) = pace(window, now) {
        let rounded = pace.round();
        detail.push(if rounded >= 0.0 {
            Span::styled(
                format!("  {rounded:.0}% in reserve"),
                Style::new().fg(Color::Green),
            )
        } else {
            Span::styled(
                format!("  {:.0}% in deficit", -rounded),
                Style::new().fg(Color::Yellow),
            )
        });
    }
    let eta = match time_to_exhaustion(window, rate, now) {
        Exhaustion::Exhausted => Some(Span::styled(
            "exhausted".to_owned(),
            Style::new().fg(Color::Red).bold(),
        )),
        Exhaustion::At(at) => Some(Span::styled(
            format!("empty in {} ({})", format_duration(at - now), ctx.clock(at)),
            Style::new().fg(Color::Yellow),
        )),
        Exhaustion::LastsUntilReset => Some(Span::raw("lasts until reset")),
        Exhaustion::Unknown => None,
    };
    if let Some(eta) = eta {
        detail.push(Span::styled(
            if detail.is_empty() { "  " } else { " · " },
            DIM,
        ));
        detail.push(eta);
    }
    if !detail.is_empty() {
        // Pace and ETA on one line when they fit, else on two.
        let total: usize = detail.iter().map(|s| s.content.chars().count()).sum();
        if total <= width {
            lines.push(Line::from(detail));
        } else {
            let eta = detail.split_off(1);
            lines.push(Line::from(detail));
            let mut second = vec![Span::raw("  ")];
            second.extend(eta.into_iter().skip(1));
            lines.push(Line::from(second));
        }
    }
}

fn quota_lines(dashboard: &Dashboard, ctx: &RenderContext<'_>, width: usize) -> Vec<Line<'static>> {
    let mut lines = Vec::new();
    let Some(snapshot) = dashboard.active_account().and_then(|a| a.snapshot.as_ref()) else {
        if dashboard.mode == SessionMode::Proxy {
            lines.push(Line::styled("  waiting for the first numbers…", DIM));
        }
        return lines;
    };
    // The windows the account has, shortest first, named by their length: a plan with only
    // a weekly window shows no 5-hour row.
    let windows = snapshot.windows_by_length();
    if windows.is_empty() {
        lines.push(Line::styled("  no window data", DIM));
    }
    for window in windows {
        let kind = window.kind();
        let label = match kind {
            WindowKind::FiveHour => "5-hour".to_owned(),
            other => other.label(),
        };
        // The runway's rule: no estimate until the burn is measured.
        let rate = Burn::measure(&dashboard.samples(kind), ctx.unix()).rate();
        window_lines(&label, window, rate, ctx, width, &mut lines);
    }
    if snapshot.workspace_limit().is_some() {
        let text = "  workspace limit reached: every seat of the workspace shares it, so cs-tui \
                    does not switch to another seat";
        let options = textwrap::Options::new(width.max(12)).subsequent_indent("  ");
        for line in textwrap::wrap(text, options) {
            lines.push(Line::styled(line.into_owned(), Style::new().fg(Color::Red)));
        }
    }
    if let Some(spend) = &snapshot.individual_limit {
        let gauge_width = width.saturating_sub(13).max(4);
        lines.push(Line::from(vec![
            Span::styled(format!("{:<7}", "spend"), Style::new().bold()),
            bar(spend.used_percent(), gauge_width),
            Span::raw(format!(" {:>3.0}%", spend.used_percent())),
        ]));
        let reset = spend
            .resets_at
            .map(|r| format!(" · resets {}", ctx.clock(r)))
            .unwrap_or_default();
        lines.push(Line::from(format!(
            "  {} of {}{reset}",
            spend.used, spend.limit
        )));
    }
    if let Some(credits) = &snapshot.credits {
        let text = if credits.unlimited {
            "unlimited".to_owned()
        } else {
            credits.balance.clone().unwrap_or_else(|| {
                if credits.has_credits {
                    "some".to_owned()
                } else {
                    "none".to_owned()
                }
            })
        };
        lines.push(Line::from(vec![
            Span::styled("credits ", Style::new().bold()),
            Span::raw(text),
        ]));
    }
    lines
}

const SPARKS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// A sparkline of what is left of a window (100 − used), newest on the right.
pub(crate) fn sparkline(values: &[f64], width: usize) -> String {
    let start = values.len().saturating_sub(width);
    values[start..]
        .iter()
        .map(|used| {
            let left = (100.0 - used).clamp(0.0, 100.0);
            SPARKS[((left / 100.0) * 7.0).round() as usize]
        })
        .collect()
}

fn burn_lines(dashboard: &Dashboard, width: usize) -> Vec<Line<'static>> {
    let mut lines = Vec::new();
    let quota = dashboard.active_account().and_then(|a| a.snapshot.as_ref());
    for (label, kind) in [("5h", WindowKind::FiveHour), ("wk", WindowKind::Weekly)] {
        // Only windows the account has now: a 5-hour window the server stopped sending has
        // no burn-down either.
        if quota.is_none_or(|s| s.window(kind).is_none()) {
            continue;
        }
        let values: Vec<f64> = dashboard
            .samples(kind)
            .iter()
            .map(|s| s.used_percent)
            .collect();
        if values.is_empty() {
            continue;
        }
        let last = values.last().copied().unwrap_or(0.0);
        lines.push(Line::from(vec![
            Span::styled(format!("{label} "), DIM),
            Span::styled(
                sparkline(&values, width.saturating_sub(3)),
                Style::new().fg(usage_color(last)),
            ),
        ]));
    }
    if lines.is_empty() {
        lines.push(Line::styled("  no samples yet", DIM));
    }
    lines
}

/// The pool's runway at the current pace, in words.
fn runway_lines(
    dashboard: &Dashboard,
    ctx: &RenderContext<'_>,
    width: usize,
) -> Vec<Line<'static>> {
    if dashboard.accounts.iter().all(|a| a.snapshot.is_none()) {
        return Vec::new();
    }
    let now = ctx.unix();
    let runway = dashboard.runway(now);
    let style = match &runway {
        Runway::TooFewSamples | Runway::Idle => DIM,
        Runway::KeepsUp { .. } => Style::new().fg(Color::Green),
        Runway::LastsUntil { .. } => Style::new().fg(Color::Red),
        Runway::DryGap { .. } => Style::new().fg(Color::Yellow),
    };
    let text = describe_runway(&runway, now, |t| ctx.clock(t));
    let options = textwrap::Options::new(width.max(12)).subsequent_indent("  ");
    textwrap::wrap(&text, options)
        .into_iter()
        .map(|line| Line::styled(line.into_owned(), style))
        .collect()
}

fn state_span(state: AccountState, ctx: &RenderContext<'_>) -> Span<'static> {
    match state {
        AccountState::Active => Span::styled("active", Style::new().fg(Color::Green).bold()),
        AccountState::Ready => Span::styled("ready", Style::new().fg(Color::Green)),
        AccountState::ExhaustedUntil(Some(at)) => Span::styled(
            format!("exhausted until {}", ctx.clock(at)),
            Style::new().fg(Color::Red),
        ),
        AccountState::ExhaustedUntil(None) => {
            Span::styled("exhausted", Style::new().fg(Color::Red))
        }
        AccountState::WorkspaceLimit(Some(at)) => Span::styled(
            format!("workspace limit until {}", ctx.clock(at)),
            Style::new().fg(Color::Red),
        ),
        AccountState::WorkspaceLimit(None) => {
            Span::styled("workspace limit", Style::new().fg(Color::Red))
        }
        AccountState::NeedsLogin => Span::styled("needs login", Style::new().fg(Color::Yellow)),
        AccountState::Disabled => Span::styled("disabled", DIM),
        AccountState::RemovedFromStore => {
            Span::styled("removed from the store", Style::new().fg(Color::Yellow))
        }
        AccountState::Unsupported => {
            Span::styled("unsupported (newer cs-tui)", Style::new().fg(Color::Yellow))
        }
    }
}

fn mini_window(window: &RateLimitWindow, gauge: usize) -> Vec<Span<'static>> {
    vec![
        Span::styled(format!("{} ", window.kind().short_label()), DIM),
        bar(window.used_percent, gauge),
        Span::raw(format!(" {:>3.0}%", window.used_percent)),
    ]
}

/// The mini gauges of a snapshot's windows, shortest first ("5h ████ 42%  wk ██ 18%").
fn mini_windows(snapshot: &RateLimitSnapshot, gauge: usize) -> Vec<Span<'static>> {
    let mut spans = Vec::new();
    for (i, window) in snapshot.windows_by_length().into_iter().enumerate() {
        if i > 0 {
            spans.push(Span::raw("  "));
        }
        spans.extend(mini_window(window, gauge));
    }
    spans
}

fn account_lines(
    dashboard: &Dashboard,
    ctx: &RenderContext<'_>,
    width: usize,
) -> Vec<Line<'static>> {
    let mut lines = Vec::new();
    if dashboard.accounts.is_empty() {
        lines.push(Line::styled(
            if dashboard.mode == SessionMode::NoProxy {
                "  none in use without the proxy"
            } else {
                "  none stored: cs-tui accounts add"
            },
            DIM,
        ));
        return lines;
    }
    for account in &dashboard.accounts {
        let state = dashboard.state_of(account);
        // A removed account is kept only while the session runs on it.
        let marker = if matches!(state, AccountState::Active | AccountState::RemovedFromStore) {
            "● "
        } else {
            "  "
        };
        let state = state_span(state, ctx);
        // In a pool, how many sessions (this one included) use it: "alice ×2".
        let sessions = match dashboard.pool.sessions_on(&account.id) {
            n if n >= 1 && dashboard.pool.sessions >= 2 => format!(" ×{n}"),
            _ => String::new(),
        };
        let used = 2
            + account.name.chars().count()
            + sessions.chars().count()
            + state.content.chars().count();
        lines.push(Line::from(vec![
            Span::styled(marker, Style::new().fg(Color::Green)),
            Span::styled(account.name.clone(), Style::new().bold()),
            Span::styled(sessions, DIM),
            Span::raw(" ".repeat(width.saturating_sub(used).max(1))),
            state,
        ]));
        // Mini gauges of the windows it has: "  5h ██████ 42%  wk ██████ 18%".
        let gauge = (width.saturating_sub(2 + 2 * 8 + 2) / 2).clamp(3, 12);
        let mut row = vec![Span::raw("  ")];
        match account.snapshot.as_ref().map(|s| mini_windows(s, gauge)) {
            Some(spans) if !spans.is_empty() => row.extend(spans),
            _ => row.push(Span::styled("no numbers yet", DIM)),
        }
        lines.push(Line::from(row));
        // Its other limit families (model-specific limits), one compact row each:
        // "  GPT-5.3-Codex-Spark  5h 100%".
        for family in &account.families {
            let windows = family.windows_by_length();
            let numbers: Vec<String> = windows
                .iter()
                .map(|w| format!("{} {:.0}%", w.kind().short_label(), w.used_percent))
                .collect();
            let numbers = if numbers.is_empty() {
                "–".to_owned()
            } else {
                numbers.join(" ")
            };
            let room = width.saturating_sub(4 + numbers.chars().count() + 2).max(4);
            let mut name: String = family.family_name().chars().take(room).collect();
            if name.chars().count() < family.family_name().chars().count() {
                name.pop();
                name.push('…');
            }
            let pad = width.saturating_sub(4 + name.chars().count() + numbers.chars().count());
            let hot = windows.iter().map(|w| w.used_percent).fold(0.0, f64::max);
            lines.push(Line::from(vec![
                Span::styled(format!("  ↳ {name}"), DIM),
                Span::raw(" ".repeat(pad.max(1))),
                Span::styled(numbers, Style::new().fg(usage_color(hot))),
            ]));
        }
        if let Some(credits) = dashboard
            .reset_credits
            .get(&account.id)
            .filter(|c| c.available > 0)
        {
            lines.push(Line::styled(reset_credits_text(credits, ctx), DIM));
        }
    }
    if let Some(account) = dashboard.resettable_when_all_exhausted() {
        let text = format!(
            "↺ all exhausted: a reset credit can clear {} now: cs-tui accounts reset {}",
            account.name, account.name
        );
        let options = textwrap::Options::new(width.max(12)).subsequent_indent("  ");
        for line in textwrap::wrap(&text, options) {
            lines.push(Line::styled(
                line.into_owned(),
                Style::new().fg(Color::Yellow),
            ));
        }
    }
    lines
}

/// "  ↺ 2 reset credits, first expires in 3d".
fn reset_credits_text(credits: &ResetCredits, ctx: &RenderContext<'_>) -> String {
    let count = match credits.available {
        1 => "1 reset credit".to_owned(),
        n => format!("{n} reset credits"),
    };
    match credits.nearest_expires_at {
        Some(at) => {
            let left = (at.timestamp() - ctx.unix()).max(0);
            let span = match (left / 86_400, left / 3600 % 24, left / 60 % 60) {
                (0, 0, m) => format!("{m}m"),
                (0, h, _) => format!("{h}h"),
                (d, _, _) => format!("{d}d"),
            };
            format!("  ↺ {count}, first expires in {span}")
        }
        None => format!("  ↺ {count}"),
    }
}

fn switch_lines(dashboard: &Dashboard, ctx: &RenderContext<'_>, max: usize) -> Vec<Line<'static>> {
    let mut lines = Vec::new();
    if dashboard.switches.is_empty() {
        lines.push(Line::styled("  none yet", DIM));
    }
    let start = dashboard.switches.len().saturating_sub(max);
    for record in &dashboard.switches[start..] {
        let from = record.from.as_ref().map_or("–", |f| f.name.as_str());
        let (arrow, color) = if record.error.is_none() {
            ("→", Color::Cyan)
        } else {
            ("✗", Color::Red)
        };
        lines.push(Line::from(vec![
            Span::styled(format!("{} ", ctx.clock_utc(record.at)), DIM),
            Span::raw(format!("{from} ")),
            Span::styled(arrow, Style::new().fg(color)),
            Span::styled(format!(" {}", record.to.name), Style::new().bold()),
        ]));
        lines.push(Line::styled(
            format!("      {}", record.reason.describe()),
            DIM,
        ));
        if let Some(error) = &record.error {
            lines.push(Line::styled(
                format!("      failed: {error}"),
                Style::new().fg(Color::Red),
            ));
        }
    }
    lines
}

fn notice_lines(
    dashboard: &Dashboard,
    ctx: &RenderContext<'_>,
    max: usize,
    width: usize,
) -> Vec<Line<'static>> {
    let start = dashboard.notices.len().saturating_sub(max);
    let mut lines = Vec::new();
    for notice in &dashboard.notices[start..] {
        let (text, style) = match notice {
            Notice::SwitchDeferred { to, reason, .. } => (
                format!(
                    "⏸ switch{} waits for the turn to end ({reason})",
                    to.as_ref().map(|t| format!(" to {t}")).unwrap_or_default()
                ),
                Style::new().fg(Color::Cyan),
            ),
            Notice::TurnsHeld { held, .. } => (
                match held {
                    1 => "⏸ turn held: switching accounts".to_owned(),
                    n => format!("⏸ {n} turns held: switching accounts"),
                },
                Style::new().fg(Color::Cyan),
            ),
            Notice::NoAccountAvailable { earliest_reset, .. } => (
                match earliest_reset {
                    Some(at) => format!("⚠ no account available until {}", ctx.clock_utc(*at)),
                    None => "⚠ no account available".to_owned(),
                },
                Style::new().fg(Color::Red),
            ),
            Notice::Message { text, at } => {
                (format!("{} {text}", ctx.clock_utc(*at)), Style::new())
            }
        };
        // A notice is a sentence: wrap it, continuation lines indented like a switch's reason.
        let options = textwrap::Options::new(width.max(12)).subsequent_indent("      ");
        for (i, line) in textwrap::wrap(&text, options).into_iter().enumerate() {
            let line = line.into_owned();
            lines.push(match notice {
                // The time of a message is dim, like the switch history's.
                Notice::Message { .. } if i == 0 => match line.split_once(' ') {
                    Some((time, rest)) => Line::from(vec![
                        Span::styled(format!("{time} "), DIM),
                        Span::raw(rest.to_owned()),
                    ]),
                    None => Line::raw(line),
                },
                _ => Line::styled(line, style),
            });
        }
    }
    lines
}

/// Every line of the panel's body, top to bottom.
pub(crate) fn panel_lines(
    dashboard: &Dashboard,
    ctx: &RenderContext<'_>,
    width: usize,
) -> Vec<Line<'static>> {
    let mut lines = Vec::new();
    header_lines(dashboard, &mut lines, width);
    lines.push(Line::default());
    lines.extend(quota_lines(dashboard, ctx, width));
    if dashboard.mode == SessionMode::Proxy {
        lines.push(section("burn-down (left)", width));
        lines.extend(burn_lines(dashboard, width));
        lines.extend(runway_lines(dashboard, ctx, width));
    }
    lines.push(section("accounts", width));
    lines.extend(account_lines(dashboard, ctx, width));
    lines.push(section("switches", width));
    lines.extend(switch_lines(dashboard, ctx, 5));
    if !dashboard.notices.is_empty() {
        lines.push(section("notices", width));
        lines.extend(notice_lines(dashboard, ctx, 4, width));
    }
    lines
}

/// The footer that tells how to reach the hotkeys.
pub(crate) fn footer_line(prefix: &str) -> Line<'static> {
    Line::from(vec![
        Span::styled(prefix.to_owned(), Style::new().fg(Color::Cyan).bold()),
        Span::styled(" then ", DIM),
        Span::styled("?", Style::new().bold()),
        Span::styled(" help · ", DIM),
        Span::styled("s", Style::new().bold()),
        Span::styled(" switch · ", DIM),
        Span::styled("q", Style::new().bold()),
        Span::styled(" quit", DIM),
    ])
}

/// Draws the side panel in `area`.
pub(crate) fn render_panel(
    dashboard: &Dashboard,
    ctx: &RenderContext<'_>,
    area: Rect,
    buf: &mut Buffer,
) {
    let block = Block::bordered()
        .border_type(BorderType::Rounded)
        .border_style(DIM)
        .title(Line::from(" cs-tui ").bold());
    let inner = block.inner(area);
    block.render(area, buf);
    if inner.height == 0 || inner.width == 0 {
        return;
    }
    let body = Rect {
        height: inner.height.saturating_sub(1),
        ..inner
    };
    let footer = Rect {
        y: inner.bottom() - 1,
        height: 1,
        ..inner
    };
    Paragraph::new(panel_lines(dashboard, ctx, usize::from(inner.width))).render(body, buf);
    Paragraph::new(footer_line(ctx.prefix)).render(footer, buf);
}

/// The one-line status bar used on a narrow terminal or with the panel hidden.
pub(crate) fn status_line(dashboard: &Dashboard, ctx: &RenderContext<'_>) -> Line<'static> {
    let mut spans = vec![Span::styled(
        " cs-tui ",
        Style::new().fg(Color::Black).bg(Color::Cyan),
    )];
    let sep = || Span::styled(" │ ", DIM);
    spans.push(Span::raw(" "));
    match dashboard.active_account() {
        Some(active) => spans.push(Span::styled(active.name.clone(), Style::new().bold())),
        None if dashboard.mode == SessionMode::NoProxy => {
            spans.push(Span::styled("no proxy", Style::new().fg(Color::Yellow)));
        }
        None => spans.push(Span::styled("no account", DIM)),
    }
    if dashboard.pool.sessions >= 2 {
        spans.push(Span::styled(
            format!(" · {} sessions", dashboard.pool.sessions),
            DIM,
        ));
    }
    if let Some(snapshot) = dashboard.active_account().and_then(|a| a.snapshot.as_ref()) {
        // The windows the account has, shortest first.
        for w in snapshot.windows_by_length() {
            spans.push(sep());
            spans.push(Span::styled(format!("{} ", w.kind().short_label()), DIM));
            spans.push(Span::styled(
                format!("{:.0}%", w.used_percent),
                Style::new().fg(usage_color(w.used_percent)).bold(),
            ));
            if let Some(reset) = w.resets_at {
                spans.push(Span::styled(
                    format!(" ↻{}", format_duration(reset.saturating_sub(ctx.unix()))),
                    DIM,
                ));
            }
        }
    }
    // The status bar is one line: the latest notice or switch, whichever came last (a
    // "switching to bob" notice is old news once the switch is done).
    let switch_is_newer = match (dashboard.notices.last(), dashboard.switches.last()) {
        (Some(notice), Some(record)) => record.at >= notice.at(),
        (None, _) => true,
        (Some(_), None) => false,
    };
    if !switch_is_newer
        && let Some(notice) = notice_lines(dashboard, ctx, 1, usize::MAX)
            .into_iter()
            .next()
    {
        spans.push(sep());
        spans.extend(notice.spans);
    } else if let Some(record) = dashboard.switches.last() {
        spans.push(sep());
        spans.push(Span::styled(
            format!(
                "{} {} → {}",
                ctx.clock_utc(record.at),
                record.from.as_ref().map_or("–", |f| f.name.as_str()),
                record.to.name
            ),
            Style::new().fg(Color::Cyan),
        ));
    }
    spans.push(sep());
    spans.push(Span::styled(
        ctx.prefix.to_owned(),
        Style::new().fg(Color::Cyan).bold(),
    ));
    spans.push(Span::styled(" ? help", DIM));
    Line::from(spans)
}
