//! What the screen shows besides the pane: the dashboard's data ([`dashboard`]) and which
//! overlay is open ([`Overlay`]). `app` writes it, `ui` only reads it, and this module imports
//! neither, so the dependencies run `app` → `ui` → `state` and never back.

pub mod dashboard;

/// Which overlay is open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Overlay {
    Help,
    ConfirmQuit,
    /// The account picker with the highlighted row.
    Picker {
        selected: usize,
    },
    /// The quota panel, drawn over the pane when the terminal is too narrow to show it beside
    /// the pane ([`crate::ui::AppLayout::drawer`]).
    Panel,
}
