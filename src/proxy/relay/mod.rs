//! The websocket relay: a loopback listener that requires the proxy's bearer token (or a unix
//! socket that admits only our own user) and gives every client its own upstream connection
//! to the app-server.
//!
//! After both handshakes (done here, so that no extension is negotiated on either leg) the
//! relay splices raw bytes and tracks only frame boundaries: frames pass byte for byte and in
//! order in both directions. A client's frames are masked with its key, which is just as valid
//! from the proxy as a client; the app-server's frames are unmasked, as a server's must be.
//! Only text messages that may be watched are looked at, and only hits are parsed:
//!
//! - server→client messages whose top-level method is in [`RELAY_WATCHED`] become
//!   [`Observation`]s for the core; `account/chatgptAuthTokens/refresh` requests are dropped;
//! - once the proxy has injected a request on a connection, responses to its own ids
//!   (`cs-tui/…`) are dropped;
//! - a per-connection [`Interceptor`] sees the messages it watches in either direction and
//!   decides [`Verdict::Forward`], [`Verdict::Drop`] or [`Verdict::Hold`]; the core drives it
//!   and the connection through a [`ConnectionHandle`] (inject, release or drop held
//!   messages, interceptor commands);
//! - while an interceptor asks for it ([`Interceptor::watched_text`]), every text message of
//!   that connection and direction is scanned for a string (`memchr::memmem`), and those that
//!   contain it are parsed and shown to the interceptor too (the turn guard rewrites a hidden
//!   re-run's turn id so). Connections that do not ask keep the fast path below.
//!
//! # Measured against a tokio-tungstenite relay
//!
//! This layer replaced a relay built the obvious way with tokio-tungstenite (accept both
//! websockets, forward whole `Message`s, parse every server message's JSON). `cargo bench
//! --bench proxy` runs such a relay beside this one, in the same process and against the same
//! upstream. Three release runs on a loaded 2-core machine (2026-12-02), this relay against
//! that one (higher is better for this relay):
//!
//! - round trip of a small request (p50): +9 µs over a direct connection, against +15–16 µs
//!   (the whole round trip 33–35 µs against 39–41 µs, 1.16–1.20×); p99 was dominated by the
//!   machine's load;
//! - 300-byte server→client messages: 1.9–2.9× the messages per second (~550k–930k/s against
//!   ~280k–460k/s), client→server 1.3–1.8×;
//! - 1 MiB messages: server→client 1.1–1.3×, client→server 1.3–1.7×.
//!
//! Most of the gap is framing, not parsing: the same tungstenite relay that parses only what
//! [`sniff_method`] lets through gains little (300-byte server→client 1.13×, one run). Both
//! relays are far above what a Codex session needs (a streamed reply is some hundreds of small
//! deltas a second; 6 µs is nothing beside a model turn), so the figures show a lower cost per
//! message, not a difference a user can see. What the splicer buys besides is that frames
//! reach the app-server and the TUI byte for byte, with no extension negotiated on either leg.
//!
//! The check for [`Interceptor::watched_text`] on every text message (a default method that
//! returns `None`) cost nothing measurable: two runs before it and three after (2026-12-02, the
//! machine loaded by other builds), 300-byte server→client messages moved 1.9–3.7M/s before
//! against 2.0–3.7M/s after, at 1.9–3.3× the tungstenite relay in every run.
//!
//! [`RELAY_WATCHED`]: crate::proxy::rpc::RELAY_WATCHED
//! [`sniff_method`]: crate::proxy::rpc::sniff_method

mod handshake;
mod inspect;
mod pump;
mod splice;

use std::convert::Infallible;
use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures_util::FutureExt;
use tokio::net::{TcpListener, UnixListener, UnixStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

use self::handshake::{HANDSHAKE_TIMEOUT, HelloError, Refusal, Upgraded};
use self::pump::{Pump, PumpAction};
use crate::proxy::rpc::{Envelope, OWN_ID_PREFIX, TokenBreakdown};
use crate::proxy::socket::{AppServerAddr, Stream};
use crate::quota::RateLimitSnapshot;
use crate::secret::Secret;

/// Identifies one client connection for the lifetime of the proxy.
pub type ConnId = u64;

/// How long the second direction of a connection may run on once the first has ended (it
/// normally ends at once: the peer sees the shutdown and closes too).
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// What the relay saw on a client's upstream connection.
#[derive(Debug, Clone, PartialEq)]
pub enum Observation {
    RateLimits(Box<RateLimitSnapshot>),
    UsageLimitError {
        thread_id: Option<String>,
        turn_id: Option<String>,
    },
    TurnStarted {
        thread_id: String,
        turn_id: String,
    },
    TurnCompleted {
        thread_id: String,
        turn_id: String,
        status: Option<String>,
    },
    /// `thread/tokenUsage/updated`: the tokens of the model response just finished (`last`)
    /// and the thread's running sum (`total`, which tells a repeated notification apart).
    TokenUsage {
        thread_id: String,
        turn_id: String,
        last: TokenBreakdown,
        total: TokenBreakdown,
    },
    /// `thread/started`: the thread's model.
    ThreadStarted {
        thread_id: String,
        model: Option<String>,
    },
    /// `thread/settings/updated`: the thread's model from its next turn on (a `turn/start`
    /// that overrides it is announced so, before its `turn/started`).
    ThreadSettings {
        thread_id: String,
        model: Option<String>,
    },
    /// `model/rerouted`: this turn is served by another model.
    ModelRerouted {
        thread_id: String,
        turn_id: String,
        model: String,
    },
}

/// What the relay tells the session core.
pub enum RelayEvent<I: Interceptor = NoInterceptor> {
    /// A client is connected and relayed; the handle drives that connection.
    Connected(ConnId, ConnectionHandle<I>),
    Disconnected(ConnId),
    Observed(ConnId, Observation),
}

impl<I: Interceptor> fmt::Debug for RelayEvent<I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RelayEvent::Connected(conn, _) => f.debug_tuple("Connected").field(conn).finish(),
            RelayEvent::Disconnected(conn) => f.debug_tuple("Disconnected").field(conn).finish(),
            RelayEvent::Observed(conn, o) => {
                f.debug_tuple("Observed").field(conn).field(o).finish()
            }
        }
    }
}

/// Which way a message travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Client → app-server.
    ToUpstream,
    /// App-server → client.
    ToClient,
}

impl Direction {
    pub fn reverse(self) -> Self {
        match self {
            Direction::ToUpstream => Direction::ToClient,
            Direction::ToClient => Direction::ToUpstream,
        }
    }

    /// Who sends the messages travelling this way (for logs).
    fn source(self) -> &'static str {
        match self {
            Direction::ToUpstream => "client",
            Direction::ToClient => "app-server",
        }
    }
}

/// What happens to a message an [`Interceptor`] looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Passes on, byte for byte, in its place.
    Forward,
    /// Never reaches the other side.
    Drop,
    /// Is withheld, after any message held before it in the same direction, until
    /// [`RelayCommand::ReleaseHeld`] (sent on in order, byte for byte) or
    /// [`RelayCommand::DropHeld`]. Messages not held keep flowing meanwhile.
    Hold,
}

/// A whole text message the relay stopped to show an [`Interceptor`].
#[derive(Debug)]
pub struct Inspected<'a> {
    pub conn: ConnId,
    pub direction: Direction,
    /// The message as sent (unmasked).
    pub text: &'a str,
    pub envelope: &'a Envelope<'a>,
}

impl Inspected<'_> {
    /// The top-level method, for requests and notifications.
    pub fn method(&self) -> Option<&str> {
        self.envelope.method
    }

    /// Whether this is a response to a request the proxy injected (its id starts with
    /// [`OWN_ID_PREFIX`]); such a response is dropped whatever the verdict.
    pub fn is_own_response(&self) -> bool {
        self.envelope.method.is_none()
            && matches!(&self.envelope.id, Some(serde_json::Value::String(id)) if id.starts_with(OWN_ID_PREFIX))
    }
}

/// What a connection is asked to do, by the core or by its interceptor.
#[derive(Debug)]
enum Action {
    Inject(Direction, String),
    ReleaseHeld(Direction),
    DropHeld(Direction),
}

/// Actions an [`Interceptor`] asks for while deciding. Those for the direction of the message
/// being decided happen right after it (so "drop this and inject that" keeps its place); those
/// for the other direction are queued to it.
#[derive(Debug, Default)]
pub struct Actions(Vec<Action>);

impl Actions {
    /// One line per action, for logs and tests: `inject→upstream {…}`, `release-held→client`…
    pub fn describe(&self) -> Vec<String> {
        let side = |d: &Direction| match d {
            Direction::ToUpstream => "upstream",
            Direction::ToClient => "client",
        };
        self.0
            .iter()
            .map(|action| match action {
                Action::Inject(d, text) => format!("inject→{} {text}", side(d)),
                Action::ReleaseHeld(d) => format!("release-held→{}", side(d)),
                Action::DropHeld(d) => format!("drop-held→{}", side(d)),
            })
            .collect()
    }

    /// Sends a text message (a whole JSON-RPC message) toward `to`.
    pub fn inject(&mut self, to: Direction, text: impl Into<String>) {
        self.0.push(Action::Inject(to, text.into()));
    }

    /// Sends on the messages held in `direction`, in the order they arrived.
    pub fn release_held(&mut self, direction: Direction) {
        self.0.push(Action::ReleaseHeld(direction));
    }

    /// Forgets the messages held in `direction`.
    pub fn drop_held(&mut self, direction: Direction) {
        self.0.push(Action::DropHeld(direction));
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn into_iter(self) -> impl Iterator<Item = Action> {
        self.0.into_iter()
    }
}

/// A connection's synchronous decision point: the relay shows it every whole text message
/// whose top-level method it watches (and, toward the client, every response to the proxy's
/// own requests), in the connection's task, before anything after that message is relayed
/// in the same direction. One interceptor serves both directions of a connection.
///
/// Messages it does not watch never reach it and cost it nothing; keep `watched` short.
pub trait Interceptor: Send + 'static {
    /// What the core may tell it through [`ConnectionHandle::command`].
    type Command: Send + 'static;

    /// The top-level methods to stop for, per direction. Asked for every text message, so
    /// return a stored list.
    fn watched(&self, direction: Direction) -> &[&'static str] {
        let _ = direction;
        &[]
    }

    /// While this is `Some`, every whole text message in `direction` whose text contains the
    /// string is shown to [`Interceptor::inspect`] too, whatever its method (so that it can
    /// rewrite it: [`Verdict::Drop`] and inject the new text in its place). Asked for every
    /// text message: return `None` (the default) unless the connection needs it, and a stored
    /// string when it does; a connection that returns `None` keeps the relay's fast path.
    fn watched_text(&self, direction: Direction) -> Option<&str> {
        let _ = direction;
        None
    }

    /// Decides about a watched message; may ask for more in `actions`.
    fn inspect(&mut self, message: &Inspected<'_>, actions: &mut Actions) -> Verdict {
        let _ = (message, actions);
        Verdict::Forward
    }

    /// Applies a command from the core; may ask for actions.
    fn command(&mut self, command: Self::Command, actions: &mut Actions) {
        let _ = (command, actions);
    }
}

/// The interceptor of a relay that only forwards and observes.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoInterceptor;

impl Interceptor for NoInterceptor {
    type Command = Infallible;
}

/// What the core can ask of one connection through its [`ConnectionHandle`]. Commands are
/// carried out in the order they are sent.
#[derive(Debug)]
pub enum RelayCommand<C> {
    /// Sends a text message toward a side: to the app-server as the proxy's own masked frame
    /// (use ids starting [`OWN_ID_PREFIX`]; the responses are then dropped), or to the client.
    /// It goes out after what was relayed before, never inside a fragmented message.
    Inject(Direction, String),
    /// Sends on the messages held in that direction, in arrival order.
    ReleaseHeld(Direction),
    /// Forgets the messages held in that direction.
    DropHeld(Direction),
    /// A command for the connection's interceptor.
    Interceptor(C),
}

/// The connection behind a handle has ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the relayed connection has ended")]
pub struct ConnectionClosed;

/// Drives one relayed connection. Cheap to clone; dropping every handle leaves the connection
/// running.
pub struct ConnectionHandle<I: Interceptor = NoInterceptor> {
    conn: ConnId,
    commands: mpsc::UnboundedSender<RelayCommand<I::Command>>,
}

impl<I: Interceptor> Clone for ConnectionHandle<I> {
    fn clone(&self) -> Self {
        Self {
            conn: self.conn,
            commands: self.commands.clone(),
        }
    }
}

impl<I: Interceptor> fmt::Debug for ConnectionHandle<I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionHandle")
            .field("conn", &self.conn)
            .finish_non_exhaustive()
    }
}

impl<I: Interceptor> ConnectionHandle<I> {
    pub fn conn(&self) -> ConnId {
        self.conn
    }

    pub fn send(&self, command: RelayCommand<I::Command>) -> Result<(), ConnectionClosed> {
        self.commands.send(command).map_err(|_| ConnectionClosed)
    }

    pub fn inject(&self, to: Direction, text: impl Into<String>) -> Result<(), ConnectionClosed> {
        self.send(RelayCommand::Inject(to, text.into()))
    }

    pub fn release_held(&self, direction: Direction) -> Result<(), ConnectionClosed> {
        self.send(RelayCommand::ReleaseHeld(direction))
    }

    pub fn drop_held(&self, direction: Direction) -> Result<(), ConnectionClosed> {
        self.send(RelayCommand::DropHeld(direction))
    }

    pub fn command(&self, command: I::Command) -> Result<(), ConnectionClosed> {
        self.send(RelayCommand::Interceptor(command))
    }

    pub fn is_closed(&self) -> bool {
        self.commands.is_closed()
    }
}

/// Makes the interceptor of each new connection.
pub type InterceptorFactory<I> = Box<dyn Fn(ConnId) -> I + Send + Sync>;

/// What every client connection shares.
/// Where the relay reports what it sees. The session hands it the core's own inbox, so the
/// relay's observations and the interceptors' messages reach the core in the order they
/// happened on each connection (no task in between to reorder them).
pub struct EventSink<I: Interceptor>(Arc<dyn Fn(RelayEvent<I>) + Send + Sync>);

impl<I: Interceptor> EventSink<I> {
    pub fn new(send: impl Fn(RelayEvent<I>) + Send + Sync + 'static) -> Self {
        Self(Arc::new(send))
    }

    pub fn send(&self, event: RelayEvent<I>) {
        (self.0)(event);
    }
}

impl<I: Interceptor> Clone for EventSink<I> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

/// Events into a channel (tests, benches); a closed receiver just stops hearing them.
impl<I: Interceptor> From<mpsc::UnboundedSender<RelayEvent<I>>> for EventSink<I> {
    fn from(tx: mpsc::UnboundedSender<RelayEvent<I>>) -> Self {
        Self::new(move |event| {
            let _ = tx.send(event);
        })
    }
}

pub struct RelayShared<I: Interceptor = NoInterceptor> {
    /// The app-server every client gets its own connection to.
    pub upstream: AppServerAddr,
    /// The bearer token clients must present.
    pub client_token: Secret,
    /// Clients wait here until the starting account is logged in: a TUI that attaches to an
    /// app-server without auth shows its sign-in screen for good (docs/protocol.md §2).
    pub ready: watch::Receiver<bool>,
    pub events: EventSink<I>,
    /// `Box::new(|_| NoInterceptor)` for a relay that only forwards and observes.
    pub interceptor: InterceptorFactory<I>,
}

static NEXT_CONN: AtomicU64 = AtomicU64::new(1);

/// Where the relay accepts clients.
#[derive(Debug)]
pub enum ClientListener {
    /// A loopback port: clients must present the bearer token.
    Tcp(TcpListener),
    /// A unix socket: clients must be our own user (checked with the peer's credentials); no
    /// bearer is asked for, since `codex --remote unix://` cannot send one.
    Unix(UnixListener),
}

impl From<TcpListener> for ClientListener {
    fn from(listener: TcpListener) -> Self {
        ClientListener::Tcp(listener)
    }
}

impl From<UnixListener> for ClientListener {
    fn from(listener: UnixListener) -> Self {
        ClientListener::Unix(listener)
    }
}

/// Bounds on clients that have not yet shown they may connect: anyone on the machine can open
/// a loopback connection, so those that have not authenticated are limited in number and in
/// how long they may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandshakeLimits {
    /// At most this many connections may be reading their upgrade request at once; more are
    /// answered 503 and closed at once.
    pub max_pending: usize,
    /// A client must have sent its whole upgrade request within this time.
    pub timeout: Duration,
}

impl Default for HandshakeLimits {
    fn default() -> Self {
        Self {
            max_pending: 64,
            timeout: HANDSHAKE_TIMEOUT,
        }
    }
}

/// Accepts clients forever, with the default [`HandshakeLimits`].
pub async fn serve<I: Interceptor>(
    listener: impl Into<ClientListener>,
    shared: Arc<RelayShared<I>>,
) {
    serve_with_limits(listener, shared, HandshakeLimits::default()).await;
}

/// The answer to a connection beyond [`HandshakeLimits::max_pending`].
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\n\
    Content-Length: 0\r\n\r\n";

/// Accepts clients forever.
pub async fn serve_with_limits<I: Interceptor>(
    listener: impl Into<ClientListener>,
    shared: Arc<RelayShared<I>>,
    limits: HandshakeLimits,
) {
    let listener = listener.into();
    let pending = Arc::new(Semaphore::new(limits.max_pending));
    loop {
        let accepted = match &listener {
            ClientListener::Tcp(listener) => listener.accept().await.map(|(stream, peer)| {
                let _ = stream.set_nodelay(true);
                (Stream::Tcp(stream), peer.to_string())
            }),
            ClientListener::Unix(listener) => listener
                .accept()
                .await
                .map(|(stream, _)| (Stream::Unix(stream), "unix".to_owned())),
        };
        match accepted {
            Ok((stream, peer)) => {
                let Ok(permit) = pending.clone().try_acquire_owned() else {
                    tracing::warn!(%peer, "too many unauthenticated proxy clients; refused one");
                    // A fresh socket's send buffer is empty: this never blocks.
                    let _ = match &stream {
                        Stream::Tcp(s) => s.try_write(BUSY),
                        Stream::Unix(s) => s.try_write(BUSY),
                    };
                    continue;
                };
                let shared = shared.clone();
                tokio::spawn(async move {
                    let conn = NEXT_CONN.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(conn, %peer, "client connecting");
                    handle_client(conn, stream, shared, permit, limits.timeout).await;
                });
            }
            Err(err) => {
                // Out of descriptors, typically: wait for some to be freed.
                tracing::warn!(%err, "accepting a proxy client failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Whether a unix socket's peer runs as `uid` (its credentials as of `connect`).
fn peer_runs_as(stream: &UnixStream, uid: u32) -> bool {
    stream.peer_cred().is_ok_and(|cred| cred.uid() == uid)
}

async fn handle_client<I: Interceptor>(
    conn: ConnId,
    mut stream: Stream,
    shared: Arc<RelayShared<I>>,
    unauthenticated: OwnedSemaphorePermit,
    timeout: Duration,
) {
    let token = match &stream {
        Stream::Tcp(_) => Some(&shared.client_token),
        Stream::Unix(unix) if peer_runs_as(unix, nix::unistd::geteuid().as_raw()) => None,
        Stream::Unix(_) => {
            tracing::warn!(conn, "refused a proxy client of another user");
            return;
        }
    };
    // The client authenticates before anything else, the wait for the session among it: one
    // without the token never holds more than its handshake's time and slot.
    let hello = tokio::time::timeout(timeout, handshake::read_hello(&mut stream, token)).await;
    let hello = match hello {
        Ok(Ok(hello)) => hello,
        Ok(Err(HelloError::Refused(refusal))) => {
            tracing::info!(conn, reason = refusal.reason(), "refused a proxy client");
            handshake::refuse(&mut stream, refusal).await;
            return;
        }
        Ok(Err(HelloError::Io(err))) => {
            tracing::debug!(conn, %err, "a client left during the handshake");
            return;
        }
        Err(_) => {
            tracing::info!(conn, "a client did not complete its handshake in time");
            return;
        }
    };
    drop(unauthenticated);
    let mut ready = shared.ready.clone();
    if ready.wait_for(|r| *r).await.is_err() {
        return;
    }
    // A fresh upstream per client: a reconnecting TUI starts clean. It is dialled before the
    // client's upgrade is accepted, so an unreachable app-server is an HTTP 502, not a
    // websocket that opens and dies.
    let upstream = tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        handshake::connect_upstream(&shared.upstream),
    )
    .await
    .unwrap_or_else(|_| {
        Err(color_eyre::eyre::eyre!(
            "the app-server's handshake timed out"
        ))
    });
    let upstream = match upstream {
        Ok(upstream) => upstream,
        Err(err) => {
            tracing::error!(conn, "upstream connection failed: {err:#}");
            handshake::refuse(&mut stream, Refusal::BadGateway).await;
            return;
        }
    };
    if let Err(err) = handshake::accept(&mut stream, &hello.accept_key).await {
        tracing::debug!(conn, %err, "a client left during the handshake");
        return;
    }
    let client = Upgraded {
        stream,
        leftover: hello.leftover,
    };
    let (commands_tx, commands) = mpsc::unbounded_channel();
    let handle = ConnectionHandle {
        conn,
        commands: commands_tx,
    };
    let interceptor = (shared.interceptor)(conn);
    shared.events.send(RelayEvent::Connected(conn, handle));
    // An interceptor that panics ends its connection, not the relay, and the core still
    // hears that the client is gone.
    let relayed = AssertUnwindSafe(relay(
        conn,
        client,
        upstream,
        interceptor,
        commands,
        shared.events.clone(),
    ))
    .catch_unwind()
    .await;
    if relayed.is_err() {
        tracing::error!(conn, "relaying this connection panicked; it was dropped");
    }
    tracing::debug!(conn, "client disconnected");
    shared.events.send(RelayEvent::Disconnected(conn));
}

/// What both directions of a connection share. Both run in the connection's one task, so the
/// interceptor's lock is never contended; it is a `Mutex` only so the task can be `Send`.
struct Connection<I: Interceptor> {
    id: ConnId,
    interceptor: Mutex<I>,
    events: EventSink<I>,
    to_upstream: mpsc::UnboundedSender<PumpAction>,
    to_client: mpsc::UnboundedSender<PumpAction>,
    /// Set once the proxy injected a message toward the app-server: from then on, responses
    /// may carry the proxy's own ids and are looked for.
    own_ids: AtomicBool,
    /// A close frame went toward the app-server / toward the client.
    closed_upstream: AtomicBool,
    closed_client: AtomicBool,
}

impl<I: Interceptor> Connection<I> {
    fn mark_closed(&self, direction: Direction) {
        match direction {
            Direction::ToUpstream => &self.closed_upstream,
            Direction::ToClient => &self.closed_client,
        }
        .store(true, Ordering::Relaxed);
    }

    fn closed(&self, direction: Direction) -> bool {
        match direction {
            Direction::ToUpstream => &self.closed_upstream,
            Direction::ToClient => &self.closed_client,
        }
        .load(Ordering::Relaxed)
    }

    /// Close frames went both ways: nothing more may be said on this connection.
    fn close_handshake_done(&self) -> bool {
        self.closed(Direction::ToUpstream) && self.closed(Direction::ToClient)
    }

    fn interceptor(&self) -> MutexGuard<'_, I> {
        self.interceptor
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn route(&self, direction: Direction) -> &mpsc::UnboundedSender<PumpAction> {
        match direction {
            Direction::ToUpstream => &self.to_upstream,
            Direction::ToClient => &self.to_client,
        }
    }

    /// Turns an action into what the pump of its direction does.
    fn prepare(&self, action: Action) -> (Direction, PumpAction) {
        match action {
            Action::Inject(direction, text) => {
                if direction == Direction::ToUpstream {
                    self.own_ids.store(true, Ordering::Relaxed);
                }
                let frame = Frame::message(text, OpCode::Data(Data::Text), true);
                (
                    direction,
                    PumpAction::Message(pump::encode(direction, frame)),
                )
            }
            Action::ReleaseHeld(direction) => (direction, PumpAction::ReleaseHeld),
            Action::DropHeld(direction) => (direction, PumpAction::DropHeld),
        }
    }

    /// Carries out the core's commands, in order, until the connection ends.
    async fn dispatch(&self, mut commands: mpsc::UnboundedReceiver<RelayCommand<I::Command>>) {
        while let Some(command) = commands.recv().await {
            let mut actions = Actions::default();
            match command {
                RelayCommand::Inject(to, text) => actions.inject(to, text),
                RelayCommand::ReleaseHeld(direction) => actions.release_held(direction),
                RelayCommand::DropHeld(direction) => actions.drop_held(direction),
                RelayCommand::Interceptor(command) => {
                    self.interceptor().command(command, &mut actions)
                }
            }
            for action in actions.into_iter() {
                let (direction, action) = self.prepare(action);
                let _ = self.route(direction).send(action);
            }
        }
        // Every handle is gone; the connection itself goes on.
        std::future::pending::<()>().await;
    }
}

/// Relays one connection in both directions until both have ended, or one has and the close
/// handshake is complete, or the other did not follow within [`CLOSE_GRACE`].
async fn relay<I: Interceptor>(
    id: ConnId,
    mut client: Upgraded,
    mut upstream: Upgraded,
    interceptor: I,
    commands: mpsc::UnboundedReceiver<RelayCommand<I::Command>>,
    events: EventSink<I>,
) {
    let (to_upstream, to_upstream_rx) = mpsc::unbounded_channel();
    let (to_client, to_client_rx) = mpsc::unbounded_channel();
    let conn = Connection {
        id,
        interceptor: Mutex::new(interceptor),
        events,
        to_upstream,
        to_client,
        own_ids: AtomicBool::new(false),
        closed_upstream: AtomicBool::new(false),
        closed_client: AtomicBool::new(false),
    };
    let (client_read, client_write) = client.stream.split();
    let (upstream_read, upstream_write) = upstream.stream.split();
    let mut outbound = std::pin::pin!(
        Pump::new(
            Direction::ToUpstream,
            &conn,
            std::mem::take(&mut client.leftover)
        )
        .run(client_read, upstream_write, to_upstream_rx)
    );
    let mut inbound = std::pin::pin!(
        Pump::new(
            Direction::ToClient,
            &conn,
            std::mem::take(&mut upstream.leftover)
        )
        .run(upstream_read, client_write, to_client_rx)
    );
    // Once one direction has ended, the other may still carry the rest of a close handshake;
    // once close frames went both ways, the relay (the client's server) closes at once, as
    // RFC 6455 §7.1.1 asks of a server.
    let pumps = async {
        let rest = tokio::select! {
            () = &mut outbound => inbound.as_mut(),
            () = &mut inbound => outbound.as_mut(),
        };
        if !conn.close_handshake_done() {
            let _ = tokio::time::timeout(CLOSE_GRACE, rest).await;
        }
    };
    tokio::select! {
        () = pumps => {}
        () = conn.dispatch(commands) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_unix_peer_is_admitted_by_its_uid_only() {
        let (ours, _theirs) = UnixStream::pair().unwrap();
        let uid = nix::unistd::geteuid().as_raw();
        assert!(peer_runs_as(&ours, uid));
        assert!(!peer_runs_as(&ours, uid.wrapping_add(1)));
    }
}
