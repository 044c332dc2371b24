//! `cs-tui serve --metrics`: the session's [`ProxyEvent`]s as Prometheus metrics, served on
//! `GET /metrics` of a loopback port.
//!
//! [`prometheus_client`] (the Prometheus project's own Rust client) keeps the metrics and writes
//! the exposition text (OpenMetrics, which Prometheus scrapes natively; counters end in
//! `_total`); hyper serves it, as OpenMetrics to a scraper whose `Accept` asks for it and in
//! the classic text format (0.0.4) to any other, as Prometheus's own clients do. `serve` feeds each event it prints (updating atomics), and a
//! scrape only reads them, in a task of its own: a scraper cannot hold the session up. A
//! scraper gets at most [`MAX_CONNECTIONS`] connections at once (more are closed unanswered),
//! each for at most [`CONNECTION_LIFETIME`], one request each. Labels carry account names and
//! window labels, never tokens.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use color_eyre::eyre::{Result, WrapErr as _, eyre};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Method, Request, Response, StatusCode, header};
use hyper_util::rt::TokioIo;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::conn_cap::{ConnectionCap, WhenFull, accept_capped};
use crate::errors::{WithHint as _, with_hint};
use crate::proxy::events::{ConnectionState, ProxyEvent, SwitchReason};
use crate::proxy::pool::SessionState;
use crate::proxy::rpc::TurnPurpose;

/// Scrapes served at once; more connections are closed at once.
pub(crate) const MAX_CONNECTIONS: usize = 16;
/// How long one connection may take, reading its request and writing the answer.
pub(crate) const CONNECTION_LIFETIME: Duration = Duration::from_secs(10);

/// The content type of the OpenMetrics text prometheus-client writes.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The content type of the classic Prometheus text format, for a scraper that does not ask
/// for OpenMetrics.
const CLASSIC_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The states `cs_tui_session_state` has a series for.
const STATES: [(SessionState, &str); 4] = [
    (SessionState::Starting, "starting"),
    (SessionState::Ready, "ready"),
    (SessionState::Switching, "switching"),
    (SessionState::Down, "down"),
];

/// A label value, escaped as the text format wants (prometheus-client 0.24 writes label
/// values as they are, and an account name may hold a quote).
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct LabelText(String);

impl From<&str> for LabelText {
    fn from(text: &str) -> Self {
        Self(text.to_owned())
    }
}

impl EncodeLabelValue for LabelText {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        use std::fmt::Write as _;
        for c in self.0.chars() {
            match c {
                '\\' => encoder.write_str("\\\\")?,
                '"' => encoder.write_str("\\\"")?,
                '\n' => encoder.write_str("\\n")?,
                c => encoder.write_char(c)?,
            }
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WindowLabels {
    account: LabelText,
    window: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AccountLabels {
    account: LabelText,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PurposeLabels {
    /// `user`, or `title` for the TUI's title generation.
    purpose: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// Declares the metric families in one table: each field, its type, and the name (after the
/// `cs_tui_` prefix) and help it is registered under, in the order they are written.
macro_rules! families {
    ($($field:ident: $ty:ty => $name:literal, $help:literal;)*) => {
        /// The metric families, shared by the feed (which writes) and the server (which reads).
        #[derive(Clone, Default)]
        struct Families {
            $($field: $ty,)*
        }

        impl Families {
            fn register(&self, registry: &mut Registry) {
                $(registry.register($name, $help, self.$field.clone());)*
            }
        }
    };
}

families! {
    used_percent: Family<WindowLabels, FloatGauge> => "account_used_percent",
        "Percent used of an account's rate-limit window (its general quota)";
    resets_at: Family<WindowLabels, Gauge> => "account_reset_timestamp_seconds",
        "When an account's rate-limit window resets, in unix seconds";
    switches: Family<ReasonLabels, Counter> => "switches", "Account switches completed, by reason";
    switch_failures: Family<ReasonLabels, Counter> =>
        "switch_failures", "Account switches that failed, by reason";
    no_account: Counter => "no_account_available", "Switches wanted when no account was usable";
    turns: Family<PurposeLabels, Counter> =>
        "turns", "Turns started in this session, by purpose (user, or the TUI's title generation)";
    turns_running: Gauge => "turns_running", "Turns running now";
    reruns: Counter => "reruns", "Turns withheld at a usage limit and re-run on the next account";
    limit_hits: Family<AccountLabels, Counter> =>
        "limit_hits", "Turns of this session refused at an account's usage limit";
    session_state: Family<StateLabels, Gauge> =>
        "session_state", "The session's state: 1 for the current one";
    active_account: Family<AccountLabels, Gauge> =>
        "active_account", "The account the session runs on: 1 for it, 0 for accounts it left";
    clients: Gauge => "clients", "Codex clients attached";
    pool_sessions: Gauge => "pool_sessions", "Sessions running on this store, this one included";
    pool_account_sessions: Family<AccountLabels, Gauge> =>
        "pool_account_sessions", "Sessions of the pool running on each account";
}

/// The session's metrics: the registry a scrape encodes, and the feed's view of the session.
pub(crate) struct Metrics {
    registry: Arc<Registry>,
    families: Families,
    /// User and title turns running as last reported: a rise is that many turns started.
    turns_running: (usize, usize),
    state: SessionState,
    switching: bool,
    active: Option<String>,
    /// Each account's windows as last reported, to drop the series of a window that went.
    windows: BTreeMap<String, BTreeSet<String>>,
    pool_accounts: BTreeSet<String>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let families = Families::default();
        let mut registry = Registry::with_prefix("cs_tui");
        families.register(&mut registry);
        let metrics = Self {
            registry: Arc::new(registry),
            families,
            turns_running: (0, 0),
            state: SessionState::Starting,
            switching: false,
            active: None,
            windows: BTreeMap::new(),
            pool_accounts: BTreeSet::new(),
        };
        metrics.show_state();
        // Both series from the start, at 0, so that a rate over them is defined at once.
        for purpose in [TurnPurpose::User, TurnPurpose::Title] {
            metrics
                .families
                .turns
                .get_or_create(&PurposeLabels {
                    purpose: purpose.as_str(),
                })
                .inc_by(0);
        }
        metrics
    }

    /// The exposition text, as a scrape gets it.
    #[cfg(test)]
    pub(crate) fn encode(&self) -> String {
        encode(&self.registry)
    }

    /// Takes one of the session's events into the metrics.
    pub(crate) fn observe(&mut self, event: &ProxyEvent) {
        let f = &self.families;
        match event {
            ProxyEvent::RateLimitsUpdated {
                account, snapshot, ..
            } => {
                let mut now = BTreeSet::new();
                for window in snapshot.windows() {
                    let labels = WindowLabels {
                        account: account.name.as_str().into(),
                        window: window.kind().label(),
                    };
                    f.used_percent
                        .get_or_create(&labels)
                        .set(window.used_percent);
                    match window.resets_at {
                        Some(at) => {
                            f.resets_at.get_or_create(&labels).set(at);
                        }
                        None => {
                            f.resets_at.remove(&labels);
                        }
                    }
                    now.insert(labels.window);
                }
                let before = self.windows.insert(account.name.clone(), now.clone());
                for gone in before.unwrap_or_default().difference(&now) {
                    let labels = WindowLabels {
                        account: account.name.as_str().into(),
                        window: gone.clone(),
                    };
                    f.used_percent.remove(&labels);
                    f.resets_at.remove(&labels);
                }
            }
            ProxyEvent::ActiveAccount { account, .. }
            | ProxyEvent::AppServerRestarted { account, .. } => {
                self.set_active(&account.name);
            }
            ProxyEvent::UsageLimitHit {
                account,
                session: None,
                ..
            } => {
                f.limit_hits
                    .get_or_create(&AccountLabels {
                        account: account.name.as_str().into(),
                    })
                    .inc();
            }
            ProxyEvent::TurnsRunning {
                running,
                title_turns,
                ..
            } => {
                let now = (running.saturating_sub(*title_turns), *title_turns);
                for (purpose, now, before) in [
                    (TurnPurpose::User, now.0, self.turns_running.0),
                    (TurnPurpose::Title, now.1, self.turns_running.1),
                ] {
                    let labels = PurposeLabels {
                        purpose: purpose.as_str(),
                    };
                    f.turns
                        .get_or_create(&labels)
                        .inc_by(now.saturating_sub(before) as u64);
                }
                f.turns_running.set(gauge_value(*running));
                self.turns_running = now;
            }
            ProxyEvent::TurnRerun { .. } => {
                f.reruns.inc();
            }
            ProxyEvent::SwitchStarted { .. } => {
                self.switching = true;
                self.state = SessionState::Switching;
            }
            ProxyEvent::SwitchDone { to, reason, .. } => {
                f.switches
                    .get_or_create(&ReasonLabels {
                        reason: reason_label(reason).to_owned(),
                    })
                    .inc();
                self.set_active(&to.name);
                self.switching = false;
                self.state = SessionState::Ready;
            }
            ProxyEvent::SwitchFailed { reason, .. } => {
                f.switch_failures
                    .get_or_create(&ReasonLabels {
                        reason: reason_label(reason).to_owned(),
                    })
                    .inc();
                self.switching = false;
                if self.state == SessionState::Switching {
                    self.state = SessionState::Ready;
                }
            }
            ProxyEvent::NoAccountAvailable { .. } => {
                f.no_account.inc();
            }
            ProxyEvent::Connection { state, .. } => match state {
                ConnectionState::Starting => self.state = SessionState::Starting,
                ConnectionState::Ready { clients } => {
                    f.clients.set(gauge_value(*clients));
                    if !self.switching {
                        self.state = SessionState::Ready;
                    }
                }
                ConnectionState::Down => self.state = SessionState::Down,
            },
            ProxyEvent::AppServerExited { restarting, .. } => {
                self.state = if *restarting {
                    SessionState::Starting
                } else {
                    SessionState::Down
                };
            }
            ProxyEvent::SessionFailed { .. } => self.state = SessionState::Down,
            ProxyEvent::PoolChanged {
                sessions,
                by_account,
                ..
            } => {
                f.pool_sessions.set(gauge_value(*sessions));
                let now: BTreeSet<String> =
                    by_account.iter().map(|s| s.account.name.clone()).collect();
                for share in by_account {
                    f.pool_account_sessions
                        .get_or_create(&AccountLabels {
                            account: share.account.name.as_str().into(),
                        })
                        .set(gauge_value(share.sessions));
                }
                for gone in self.pool_accounts.difference(&now) {
                    f.pool_account_sessions.remove(&AccountLabels {
                        account: gone.as_str().into(),
                    });
                }
                self.pool_accounts = now;
            }
            ProxyEvent::AccountsListed { accounts, .. } => {
                // An account removed or renamed in the store: its gauges go (the session's
                // active account keeps its own until the session leaves it). Counters stay.
                let listed: BTreeSet<&str> = accounts.iter().map(|a| a.name.as_str()).collect();
                let gone: Vec<String> = self
                    .windows
                    .keys()
                    .filter(|name| {
                        !listed.contains(name.as_str()) && self.active.as_ref() != Some(*name)
                    })
                    .cloned()
                    .collect();
                for name in gone {
                    for window in self.windows.remove(&name).unwrap_or_default() {
                        let labels = WindowLabels {
                            account: name.as_str().into(),
                            window,
                        };
                        f.used_percent.remove(&labels);
                        f.resets_at.remove(&labels);
                    }
                    f.active_account.remove(&AccountLabels {
                        account: name.as_str().into(),
                    });
                }
            }
            ProxyEvent::UsageLimitHit { .. }
            | ProxyEvent::ResetCredits { .. }
            | ProxyEvent::SwitchDeferred { .. }
            | ProxyEvent::TurnsHeld { .. }
            | ProxyEvent::Notice { .. } => {}
        }
        self.show_state();
    }

    fn set_active(&mut self, name: &str) {
        let f = &self.families;
        if let Some(old) = self.active.take()
            && old != name
        {
            f.active_account
                .get_or_create(&AccountLabels {
                    account: old.as_str().into(),
                })
                .set(0);
        }
        f.active_account
            .get_or_create(&AccountLabels {
                account: name.into(),
            })
            .set(1);
        self.active = Some(name.to_owned());
    }

    fn show_state(&self) {
        for (state, label) in STATES {
            self.families
                .session_state
                .get_or_create(&StateLabels {
                    state: label.to_owned(),
                })
                .set(i64::from(state == self.state));
        }
    }
}

fn gauge_value(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The `reason` label of a switch: the kind `serve`'s JSON lines carry.
fn reason_label(reason: &SwitchReason) -> &'static str {
    match reason {
        SwitchReason::UsageLimit => "usage_limit",
        SwitchReason::HardLimit { .. } => "hard_limit",
        SwitchReason::SoftThreshold { .. } => "soft_threshold",
        SwitchReason::Manual => "manual",
        SwitchReason::Peer { .. } => "peer",
    }
}

fn encode(registry: &Registry) -> String {
    let mut text = String::new();
    // Writing into a String cannot fail.
    prometheus_client::encoding::text::encode(&mut text, registry)
        .expect("encoding metrics into a String");
    text
}

/// Checks a `--metrics` address: a loopback one only (the metrics name the accounts).
pub(crate) fn parse_address(text: &str) -> Result<SocketAddr> {
    let addr: SocketAddr = text.parse().map_err(|_| {
        with_hint(
            eyre!("--metrics {text:?} is not an address"),
            "use 127.0.0.1:PORT (port 0 picks a free one)",
        )
    })?;
    if !addr.ip().is_loopback() {
        return Err(with_hint(
            eyre!("refusing to serve metrics on {addr}: the metrics name your accounts"),
            "use a loopback address, e.g. --metrics 127.0.0.1:9464, and let a local Prometheus (or an SSH tunnel) scrape it",
        ));
    }
    Ok(addr)
}

/// The metrics endpoint, bound and not yet serving.
pub(crate) struct MetricsListener {
    listener: TcpListener,
    addr: SocketAddr,
}

impl MetricsListener {
    pub(crate) async fn bind(addr: SocketAddr) -> Result<Self> {
        let listener = TcpListener::bind(addr)
            .await
            .wrap_err_with(|| format!("cannot listen for metrics on {addr}"))
            .hint("another program may hold that port: pick another, or 0 for a free one")?;
        let addr = listener.local_addr()?;
        Ok(Self { listener, addr })
    }

    /// The address bound (the port chosen when 0 was asked).
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves the metrics until the returned task is dropped; the caller feeds them every
    /// event of its subscription (the first subscriber gets the session's start events, which
    /// carry the active account and the pool's counts).
    pub(crate) fn start(self) -> (Metrics, MetricsServer) {
        let metrics = Metrics::new();
        let registry = Arc::clone(&metrics.registry);
        let server = tokio::spawn(serve(self.listener, registry));
        (metrics, MetricsServer(server))
    }
}

/// The metrics endpoint's task; aborted when dropped.
pub(crate) struct MetricsServer(JoinHandle<()>);

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn serve(listener: TcpListener, registry: Arc<Registry>) {
    let cap = ConnectionCap {
        name: "metrics",
        max: MAX_CONNECTIONS,
        when_full: WhenFull::Close,
        lifetime: Some(CONNECTION_LIFETIME),
    };
    accept_capped(listener, cap, move |stream| {
        let registry = Arc::clone(&registry);
        let service = hyper::service::service_fn(move |request| {
            let registry = Arc::clone(&registry);
            async move { Ok::<_, std::convert::Infallible>(answer(&request, &registry)) }
        });
        async move {
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(error = %e, "metrics: connection ended");
            }
        }
    })
    .await;
}

/// Whether a request's `Accept` headers take OpenMetrics: a media range
/// `application/openmetrics-text` whose `q` is not 0 (Prometheus sends one).
fn accepts_openmetrics(headers: &header::HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|range| range.trim().parse::<mime::Mime>().ok())
        .any(|range| {
            range.essence_str() == "application/openmetrics-text"
                && range
                    .get_param("q")
                    .and_then(|q| q.as_str().parse::<f64>().ok())
                    .is_none_or(|q| q > 0.0)
        })
}

/// The exposition in the classic Prometheus text format (0.0.4). The samples are the same as
/// in OpenMetrics; the difference is in the descriptors: OpenMetrics names a counter's
/// family (`# TYPE cs_tui_turns counter`, sample `cs_tui_turns_total`), the classic format
/// names the sample (`# TYPE cs_tui_turns_total counter`), so a classic parser reading
/// OpenMetrics finds no type for a counter's samples. `# EOF` (and `# UNIT`, which no family
/// here has) is OpenMetrics only.
fn classic(openmetrics: &str) -> String {
    let counters: BTreeSet<&str> = openmetrics
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut text = String::with_capacity(openmetrics.len() + 16 * counters.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let descriptor = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|kind| Some((kind, line.strip_prefix(kind)?)));
        match descriptor {
            Some((kind, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                text.push_str(kind);
                text.push_str(name);
                if counters.contains(name) {
                    text.push_str("_total");
                }
                text.push(' ');
                text.push_str(tail);
            }
            None => text.push_str(line),
        }
        text.push('\n');
    }
    text
}

fn answer<B>(request: &Request<B>, registry: &Registry) -> Response<Full<Bytes>> {
    let found = request.method() == Method::GET && request.uri().path() == "/metrics";
    let (status, content_type, body) = if !found {
        (
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "not found: cs-tui serves GET /metrics only\n".to_owned(),
        )
    } else if accepts_openmetrics(request.headers()) {
        (StatusCode::OK, CONTENT_TYPE, encode(registry))
    } else {
        (
            StatusCode::OK,
            CLASSIC_CONTENT_TYPE,
            classic(&encode(registry)),
        )
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    response
}

#[cfg(test)]
mod tests;
