//! The demo's autopilot: types the story's prompts into Codex as a person would, one turn at a
//! time, and hands over the keyboard at the end (or as soon as the user types).
//!
//! Everything it waits for is something it sees: the proxy's events (a client connected, turns
//! running) and the pane's text (the composer is up, the pasted prompt is in it). The only
//! timed pauses are for the viewer's sake, between turns.

use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::{Instant, timeout};

use super::script::TURNS;
use crate::app::pilot::{PilotRequest, PilotSeat};
use crate::proxy::events::ProxyEvent;

/// How long the pilot waits for Codex to show its composer.
const COMPOSER_WAIT: Duration = Duration::from_secs(30);
/// How long a pasted prompt may take to appear before it is pasted again.
const PASTE_WAIT: Duration = Duration::from_secs(3);
/// Between the prompt appearing and Enter: Codex takes an Enter right after input as part of
/// a paste burst (a newline), docs/protocol.md §7.
const BEFORE_ENTER: Duration = Duration::from_millis(300);
/// How long a submitted prompt may take to start a turn before Enter is pressed again.
const START_WAIT: Duration = Duration::from_secs(5);
/// No turn running for this long: the turn (and any re-run after a switch) is over, and the
/// viewer has had a moment to read the reply.
const QUIET: Duration = Duration::from_millis(2500);
/// The longest a turn is waited for.
const TURN_WAIT: Duration = Duration::from_secs(600);
/// How often the pane's text is looked at while waiting for it.
const LOOK_EVERY: Duration = Duration::from_millis(100);
/// Codex's composer prompt.
const COMPOSER: char = '›';

/// Why the pilot stopped early.
#[derive(Debug)]
enum Stop {
    /// The user took the keyboard, or the session ended.
    Gone,
}

/// What the pilot has heard so far.
struct Cockpit {
    seat: PilotSeat,
    clients: usize,
    running: usize,
}

impl Cockpit {
    fn ask(&self, request: PilotRequest) -> Result<(), Stop> {
        self.seat.requests.send(request).map_err(|_| Stop::Gone)
    }

    fn hear(&mut self, event: &ProxyEvent) {
        match event {
            ProxyEvent::Connection {
                state: crate::proxy::events::ConnectionState::Ready { clients },
                ..
            } => self.clients = *clients,
            ProxyEvent::TurnsRunning { running, .. } => self.running = *running,
            _ => {}
        }
    }

    /// Takes in events until `done` holds or `limit` passes (`Ok(false)`).
    async fn until(&mut self, limit: Duration, done: impl Fn(&Self) -> bool) -> Result<bool, Stop> {
        let deadline = Instant::now() + limit;
        while !done(self) {
            match timeout(
                deadline.saturating_duration_since(Instant::now()),
                self.seat.events.recv(),
            )
            .await
            {
                Ok(Some(event)) => self.hear(&event),
                Ok(None) => return Err(Stop::Gone),
                Err(_) => return Ok(false),
            }
        }
        Ok(true)
    }

    /// Takes in events for `span`.
    async fn listen(&mut self, span: Duration) -> Result<(), Stop> {
        self.until(span, |_| false).await.map(drop)
    }

    async fn screen(&self) -> Result<String, Stop> {
        let (tx, rx) = oneshot::channel();
        self.ask(PilotRequest::Screen(tx))?;
        rx.await.map_err(|_| Stop::Gone)
    }

    /// Looks at the pane until `seen` holds for its text, or `limit` passes (`Ok(false)`).
    async fn watch_screen(
        &mut self,
        limit: Duration,
        seen: impl Fn(&str) -> bool,
    ) -> Result<bool, Stop> {
        let deadline = Instant::now() + limit;
        loop {
            if seen(&self.screen().await?) {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            self.listen(LOOK_EVERY).await?;
        }
    }

    /// Types `prompt` and sends it; returns once its turn (and any re-run) is over.
    async fn turn(&mut self, prompt: &str) -> Result<(), Stop> {
        // Codex wraps the composer's text to the pane: compare without the whitespace.
        let squeezed = squeeze(prompt);
        let in_composer = |screen: &str| squeeze(screen).contains(&squeezed);
        self.ask(PilotRequest::Paste(prompt.to_owned()))?;
        if !self.watch_screen(PASTE_WAIT, in_composer).await? {
            // Codex was not ready to take it: the paste went nowhere.
            self.ask(PilotRequest::Paste(prompt.to_owned()))?;
            self.watch_screen(PASTE_WAIT, in_composer).await?;
        }
        self.listen(BEFORE_ENTER).await?;
        self.ask(PilotRequest::Keys(b"\r".to_vec()))?;
        if !self.until(START_WAIT, |c| c.running > 0).await? {
            self.ask(PilotRequest::Keys(b"\r".to_vec()))?;
        }
        // Over when no turn has run for a while: a limit hit's re-run starts within that.
        loop {
            self.until(TURN_WAIT, |c| c.running == 0).await?;
            if !self.until(QUIET, |c| c.running > 0).await? {
                return Ok(());
            }
        }
    }
}

/// `text` without its whitespace.
fn squeeze(text: &str) -> String {
    text.chars().filter(|c| !c.is_whitespace()).collect()
}

/// Flies the story: waits for Codex, types each prompt, then hands over.
pub(crate) async fn fly(seat: PilotSeat) {
    let mut cockpit = Cockpit {
        seat,
        clients: 0,
        running: 0,
    };
    match story(&mut cockpit).await {
        Ok(()) => tracing::info!("demo: the autopilot finished its story"),
        Err(Stop::Gone) => tracing::info!("demo: the autopilot stopped"),
    }
}

async fn story(cockpit: &mut Cockpit) -> Result<(), Stop> {
    cockpit.ask(PilotRequest::Notice(
        "demo: prompts are typed for you; typing takes over".to_owned(),
    ))?;
    cockpit.until(COMPOSER_WAIT, |c| c.clients > 0).await?;
    cockpit
        .watch_screen(COMPOSER_WAIT, |screen| screen.contains(COMPOSER))
        .await?;
    for turn in TURNS {
        cockpit.turn(turn.prompt).await?;
    }
    // The pilot leaves its seat after this: the user's first key is then theirs, not a
    // take-over.
    cockpit.ask(PilotRequest::Notice(
        "demo: your turn. Type a prompt; Ctrl+C twice quits".to_owned(),
    ))
}
