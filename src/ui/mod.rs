//! Render functions: state in, widgets out. Nothing here changes the app's state or does
//! I/O; the one thing kept between frames is [`PanelCache`], a memo of the panel's last drawing.

pub(crate) mod overlay;
pub(crate) mod panel;

use ratatui::Frame;
use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Span;
use ratatui::widgets::{Paragraph, Widget};

use crate::config::{PanelConfig, PanelSide};
use crate::pty::widget::{PaneWidget, cursor_position};
use crate::state::Overlay;
use crate::state::dashboard::Dashboard;
pub use panel::RenderContext;

/// Where everything goes on the screen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppLayout {
    /// The embedded terminal. Its size is the PTY's size.
    pub pane: Rect,
    /// The side panel, when shown in full.
    pub panel: Option<Rect>,
    /// The one-line status bar, when the panel is hidden or the terminal too narrow.
    pub status: Option<Rect>,
    /// Where the panel is drawn over the pane on request (`Ctrl+] p`), when the terminal is
    /// too narrow to show it beside the pane. The pane keeps its size, so Codex does not
    /// reflow when it opens.
    pub drawer: Option<Rect>,
}

/// The pane never gets narrower than this next to the panel.
const MIN_PANE_COLUMNS: u16 = 40;

/// Splits the terminal: pane plus side panel when the panel is on and the terminal wide enough,
/// else pane plus a one-line status bar at the bottom.
pub fn layout(area: Rect, panel: &PanelConfig, panel_visible: bool) -> AppLayout {
    let width = panel.width.max(20);
    let wide = area.width >= panel.collapse_below_columns
        && area.width >= width.saturating_add(MIN_PANE_COLUMNS);
    if panel_visible && wide {
        let pane_width = area.width - width;
        let (pane_x, panel_x) = match panel.side {
            PanelSide::Right => (area.x, area.x + pane_width),
            PanelSide::Left => (area.x + width, area.x),
        };
        return AppLayout {
            pane: Rect::new(pane_x, area.y, pane_width, area.height),
            panel: Some(Rect::new(panel_x, area.y, width, area.height)),
            status: None,
            drawer: None,
        };
    }
    if area.height < 2 {
        return AppLayout {
            pane: area,
            panel: None,
            status: None,
            drawer: None,
        };
    }
    let pane = Rect::new(area.x, area.y, area.width, area.height - 1);
    // Narrow: the panel can still be looked at, over the pane's side, above the status bar.
    let drawer = (!wide).then(|| {
        let width = width.min(pane.width);
        let x = match panel.side {
            PanelSide::Right => pane.right() - width,
            PanelSide::Left => pane.x,
        };
        Rect::new(x, pane.y, width, pane.height)
    });
    AppLayout {
        pane,
        panel: None,
        status: Some(Rect::new(area.x, area.bottom() - 1, area.width, 1)),
        drawer,
    }
}

/// Everything one frame shows.
pub struct View<'a> {
    pub screen: &'a vt100::Screen,
    pub dashboard: &'a Dashboard,
    pub layout: AppLayout,
    pub overlay: Option<&'a Overlay>,
    /// The prefix key was pressed and the next key is a hotkey.
    pub prefix_pending: bool,
    pub ctx: RenderContext<'a>,
}

/// The panel as last drawn, and what it was drawn from. Codex redraws the pane up to 120
/// times a second while it works; the panel changes a few times a turn, and laying it out was
/// a third of a frame's cost.
#[derive(Default)]
pub struct PanelCache {
    drawn: Option<(PanelInputs, Buffer)>,
}

/// Everything the panel's cells depend on. Times show to the minute (the loop wakes each
/// minute for the countdowns).
#[derive(Clone, PartialEq)]
struct PanelInputs {
    dashboard: Dashboard,
    minute: i64,
    area: Rect,
    prefix: String,
}

impl PanelCache {
    /// Draws the panel into `buf` at `area`, laying it out again only when its inputs changed.
    pub fn render(
        &mut self,
        dashboard: &Dashboard,
        ctx: &RenderContext<'_>,
        area: Rect,
        buf: &mut Buffer,
    ) {
        let fresh = |(inputs, _): &(PanelInputs, Buffer)| {
            inputs.area == area
                && inputs.minute == ctx.now.timestamp().div_euclid(60)
                && inputs.prefix == ctx.prefix
                && inputs.dashboard == *dashboard
        };
        if !self.drawn.as_ref().is_some_and(fresh) {
            let mut panel = Buffer::empty(area);
            panel::render_panel(dashboard, ctx, area, &mut panel);
            let inputs = PanelInputs {
                dashboard: dashboard.clone(),
                minute: ctx.now.timestamp().div_euclid(60),
                area,
                prefix: ctx.prefix.to_owned(),
            };
            self.drawn = Some((inputs, panel));
        }
        let (_, panel) = self.drawn.as_ref().expect("drawn above");
        // The terminal may have shrunk since the layout was made (the resize event is still
        // on its way): draw only what fits.
        let area = area.intersection(buf.area);
        if area.is_empty() {
            return;
        }
        for y in area.top()..area.bottom() {
            let from = panel.index_of(area.x, y);
            let to = buf.index_of(area.x, y);
            let width = usize::from(area.width);
            buf.content[to..to + width].clone_from_slice(&panel.content[from..from + width]);
        }
    }
}

/// Draws one frame and places the cursor where the child put it (unless an overlay is open).
pub fn draw(frame: &mut Frame<'_>, view: &View<'_>, panel_cache: &mut PanelCache) {
    let buf = frame.buffer_mut();
    PaneWidget::new(view.screen).render(view.layout.pane, buf);
    if let Some(area) = view.layout.panel {
        panel_cache.render(view.dashboard, &view.ctx, area, buf);
        if view.prefix_pending {
            pending_marker(
                Rect::new(area.x + 2, area.bottom() - 1, area.width - 4, 1),
                buf,
            );
        }
    }
    if let Some(area) = view.layout.status {
        Paragraph::new(panel::status_line(view.dashboard, &view.ctx)).render(area, buf);
        if view.prefix_pending {
            pending_marker(area, buf);
        }
    }
    match view.overlay {
        Some(Overlay::Help) => overlay::render_help(&view.ctx, frame.area(), frame.buffer_mut()),
        Some(Overlay::ConfirmQuit) => {
            overlay::render_confirm_quit(frame.area(), frame.buffer_mut())
        }
        Some(Overlay::Picker { selected }) => overlay::render_picker(
            view.dashboard,
            *selected,
            &view.ctx,
            frame.area(),
            frame.buffer_mut(),
        ),
        Some(Overlay::Panel) => {
            if let Some(area) = view.layout.drawer {
                panel_cache.render(view.dashboard, &view.ctx, area, frame.buffer_mut());
                // On its bottom border: how to go back to Codex.
                let hint = Rect::new(
                    area.x + 2,
                    area.bottom() - 1,
                    area.width.saturating_sub(4),
                    1,
                )
                .intersection(frame.area());
                Paragraph::new(Span::styled(
                    " any key closes this ",
                    Style::new().add_modifier(Modifier::DIM),
                ))
                .render(hint, frame.buffer_mut());
            }
        }
        None => {
            if let Some(position) = cursor_position(view.screen, view.layout.pane) {
                frame.set_cursor_position(position);
            }
        }
    }
}

/// Shows that the next key is a hotkey.
fn pending_marker(area: Rect, buf: &mut ratatui::buffer::Buffer) {
    let text = " hotkey: s n p ? q ";
    Paragraph::new(Span::styled(
        text,
        Style::new().fg(Color::Black).bg(Color::Yellow),
    ))
    .render(area, buf);
}

#[cfg(test)]
mod tests;
