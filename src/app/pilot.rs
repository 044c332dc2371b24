//! A driver at the keyboard (the demo's autopilot): it sees the proxy's events as the dashboard
//! applies them, reads the pane's text, and types or pastes into Codex exactly as the keyboard
//! would. The first key or paste the user sends takes the keyboard back: the loop drops the
//! pilot and says so in the panel.

use tokio::sync::{mpsc, oneshot};

use crate::proxy::events::ProxyEvent;

/// What the pilot asks of the dashboard.
#[derive(Debug)]
pub enum PilotRequest {
    /// Text pasted into the pane, bracketed if Codex asked for bracketed paste.
    Paste(String),
    /// Bytes for Codex's input, as the keyboard sends them (`\r` is Enter).
    Keys(Vec<u8>),
    /// The pane's text as it stands (the live screen).
    Screen(oneshot::Sender<String>),
    /// A line for the panel's notices.
    Notice(String),
}

/// The dashboard's end of a pilot.
pub struct Pilot {
    /// Every proxy event the dashboard applies, in order.
    pub events: mpsc::UnboundedSender<ProxyEvent>,
    pub requests: mpsc::UnboundedReceiver<PilotRequest>,
}

/// The pilot's end: what it hears and how it asks.
pub(crate) struct PilotSeat {
    pub events: mpsc::UnboundedReceiver<ProxyEvent>,
    pub requests: mpsc::UnboundedSender<PilotRequest>,
}

/// A connected pair.
pub(crate) fn pilot() -> (Pilot, PilotSeat) {
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let (requests_tx, requests_rx) = mpsc::unbounded_channel();
    (
        Pilot {
            events: events_tx,
            requests: requests_rx,
        },
        PilotSeat {
            events: events_rx,
            requests: requests_tx,
        },
    )
}
