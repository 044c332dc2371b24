//! `cs-tui serve --metrics`: the real binary, the real app-server, the mock backend, a scripted
//! Codex client, and `/metrics` read by a Prometheus text parser after a turn, a manual switch
//! and a limit hit that is re-run on the other account.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use cs_tui_testkit::WAIT;
use cs_tui_testkit::mock_backend::AccountMode;
use cs_tui_testkit::turns::{run_turn, start_thread};
use cs_tui_testkit::{CodexHome, MockBackend, Usage, UsageWindow, WsClient};
use prometheus_parse::{Scrape, Value};
use serde_json::json;

use crate::serve_cli::{Serve, import, spawn_serve_with};
use crate::support::product::cs_tui_command;

/// What Prometheus (3.x) sends as its scrape's `Accept`.
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.2,*/*;q=0.1";

/// One HTTP/1.1 request on a fresh connection, with `accept` as its `Accept` header if
/// given; the status code, the content type and the body.
fn http(addr: &str, method: &str, path: &str, accept: Option<&str>) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let accept = accept
        .map(|a| format!("Accept: {a}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{accept}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").expect("an HTTP answer");
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let content_type = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-type")
                .then(|| value.trim().to_owned())
        })
        .unwrap_or_default();
    (status, content_type, body.to_owned())
}

/// `GET /metrics` as a classic scraper asks for it (no `Accept`), parsed by `prometheus-parse`
/// (a parser of the classic text format): samples by name and labels.
struct Metrics(Vec<prometheus_parse::Sample>);

impl Metrics {
    fn scrape(addr: &str) -> Self {
        let (status, content_type, body) = http(addr, "GET", "/metrics", None);
        assert_eq!(status, 200, "{body}");
        assert!(
            content_type.starts_with("text/plain; version=0.0.4"),
            "{content_type}"
        );
        let scrape = Scrape::parse(body.lines().map(|l| Ok(l.to_owned()))).expect("parsed");
        Self(scrape.samples)
    }

    /// The value of the one sample of `name` with `labels` (typed, see [`typed_value`]).
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let found: Vec<f64> = self
            .0
            .iter()
            .filter(|s| s.metric == name)
            .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(typed_value)
            .collect();
        assert!(found.len() <= 1, "{name} {labels:?}: {found:?}");
        found.first().copied()
    }

    /// Every sample is typed: the counters (`_total`) as counters, the rest as gauges.
    fn assert_typed(&self) {
        assert!(self.0.len() >= 14, "{:?}", self.0);
        for sample in &self.0 {
            typed_value(sample);
        }
    }
}

/// A sample's value; a `_total` sample must read as a counter, any other as a gauge.
fn typed_value(sample: &prometheus_parse::Sample) -> f64 {
    let counter = sample.metric.ends_with("_total");
    match sample.value {
        Value::Counter(v) if counter => v,
        Value::Gauge(v) if !counter => v,
        ref other => panic!("{}: {other:?}", sample.metric),
    }
}

/// A sample's name, labels, and the value it should have.
type Expected<'a> = (&'a str, &'a [(&'a str, &'a str)], f64);

/// Scrapes until `expected` holds (the metrics follow the session's events on a subscription
/// of their own), or fails with what was last seen.
fn wait_metrics(addr: &str, what: &str, expected: &[Expected]) -> Metrics {
    let deadline = Instant::now() + WAIT;
    loop {
        let metrics = Metrics::scrape(addr);
        let wrong: Vec<String> = expected
            .iter()
            .filter_map(|(name, labels, want)| {
                let got = metrics.get(name, labels);
                (got != Some(*want)).then(|| format!("{name}{labels:?} = {got:?}, want {want}"))
            })
            .collect();
        if wrong.is_empty() {
            return metrics;
        }
        assert!(Instant::now() < deadline, "{what}: {wrong:#?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn start(mock: &MockBackend, home: &CodexHome, store: &std::path::Path) -> (Serve, String, String) {
    let serve = spawn_serve_with(
        store,
        home,
        mock,
        &["--metrics".as_ref(), "127.0.0.1:0".as_ref()],
    );
    let url = serve.next_line("listening line");
    let url = url.strip_prefix("listening ").unwrap().to_owned();
    let token_file = serve.next_line("token-file line");
    let token = std::fs::read_to_string(token_file.strip_prefix("token-file ").unwrap()).unwrap();
    let metrics = serve.next_line("metrics line");
    let addr = metrics
        .strip_prefix("metrics http://")
        .and_then(|m| m.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("metrics http://ADDR/metrics: {metrics}"))
        .to_owned();
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");
    assert!(!addr.ends_with(":0"), "the port bound, not 0: {addr}");
    (serve, url, format!("{}\n{addr}", token.trim()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_a_turn_a_switch_and_a_rerun_limit_hit() {
    let mock = MockBackend::start().await;
    let home = CodexHome::offline(&mock.url());
    let store = tempfile::tempdir().unwrap();
    for label in ["alice", "bob"] {
        import(store.path(), &home, &mock, label);
    }
    let five_hour = UsageWindow::five_hour(33);
    let weekly = UsageWindow::weekly(44);
    mock.set_usage(
        "acct-alice",
        Usage {
            primary: Some(five_hour),
            secondary: Some(weekly),
            ..Default::default()
        },
    );
    let (serve, url, token_addr) = start(&mock, &home, store.path());
    let (token, addr) = token_addr.split_once('\n').unwrap();
    serve.wait_event("active account", |e| {
        e["event"] == "active_account" && e["account"]["name"] == "alice"
    });

    // Anything but GET /metrics is not found.
    for (method, path) in [("POST", "/metrics"), ("GET", "/"), ("GET", "/metricsx")] {
        assert_eq!(http(addr, method, path, None).0, 404, "{method} {path}");
    }

    let mut client = WsClient::connect(&url, token).await;
    client.initialize(json!("initialize")).await;
    let thread = start_thread(&mut client, home.work_dir()).await;
    run_turn(&mut client, &thread, "served by alice?").await;
    assert_eq!(
        mock.last_user_turn_request("served by alice?")
            .account_header
            .as_deref(),
        Some("acct-alice")
    );
    let alice = mock.usage("acct-alice");
    let alice_5h = f64::from(alice.primary.unwrap().used_percent);
    let alice_wk = f64::from(alice.secondary.unwrap().used_percent);
    let after_turn = wait_metrics(
        addr,
        "alice's quota and one turn",
        &[
            (
                "cs_tui_account_used_percent",
                &[("account", "alice"), ("window", "5h")],
                alice_5h,
            ),
            (
                "cs_tui_account_used_percent",
                &[("account", "alice"), ("window", "weekly")],
                alice_wk,
            ),
            (
                "cs_tui_account_reset_timestamp_seconds",
                &[("account", "alice"), ("window", "5h")],
                five_hour.resets_at as f64,
            ),
            ("cs_tui_active_account", &[("account", "alice")], 1.0),
            ("cs_tui_session_state", &[("state", "ready")], 1.0),
            ("cs_tui_turns_total", &[("purpose", "user")], 1.0),
            ("cs_tui_turns_running", &[], 0.0),
            ("cs_tui_pool_sessions", &[], 1.0),
            ("cs_tui_pool_account_sessions", &[("account", "alice")], 1.0),
        ],
    );
    assert_eq!(
        after_turn.get("cs_tui_switches_total", &[("reason", "manual")]),
        None
    );
    assert_eq!(after_turn.get("cs_tui_reruns_total", &[]), Some(0.0));

    // A manual switch from another terminal.
    let out = cs_tui_command(store.path(), &home, &mock)
        .args(["switch", "bob"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serve.wait_event("switch done", |e| {
        e["event"] == "switch_done" && e["to"]["name"] == "bob"
    });
    run_turn(&mut client, &thread, "served by bob?").await;
    assert_eq!(
        mock.last_user_turn_request("served by bob?")
            .account_header
            .as_deref(),
        Some("acct-bob")
    );
    wait_metrics(
        addr,
        "the manual switch and bob's turn",
        &[
            ("cs_tui_switches_total", &[("reason", "manual")], 1.0),
            ("cs_tui_active_account", &[("account", "bob")], 1.0),
            ("cs_tui_active_account", &[("account", "alice")], 0.0),
            ("cs_tui_turns_total", &[("purpose", "user")], 2.0),
            ("cs_tui_pool_account_sessions", &[("account", "bob")], 1.0),
        ],
    );

    // Bob hits his limit mid-turn: the turn is withheld, the session switches back to alice
    // and re-runs it there.
    mock.set_mode("acct-bob", AccountMode::UsageLimit);
    let started = client
        .request(
            "turn/start",
            json!({"threadId": thread, "input": [{"type": "text", "text": "bob is out"}]}),
        )
        .await
        .expect("turn/start");
    assert!(started["turn"]["id"].is_string(), "{started}");
    serve.wait_event("the re-run", |e| {
        e["event"] == "turn_rerun" && e["from"]["name"] == "bob" && e["to"]["name"] == "alice"
    });
    let rerun = mock
        .wait_for_request(WAIT, "the re-run served by alice", |r| {
            r.account_header.as_deref() == Some("acct-alice")
                && r.user_input_texts()
                    .iter()
                    .any(|t| t.contains("bob is out"))
        })
        .await;
    assert_eq!(rerun.status, 200);
    let refused = mock
        .user_turn_requests("bob is out")
        .into_iter()
        .filter(|r| r.account_header.as_deref() == Some("acct-bob"))
        .count();
    assert!(refused >= 1, "bob refused the turn first");
    let last = wait_metrics(
        addr,
        "the limit hit, the automatic switch and the re-run",
        &[
            ("cs_tui_limit_hits_total", &[("account", "bob")], 1.0),
            ("cs_tui_switches_total", &[("reason", "usage_limit")], 1.0),
            ("cs_tui_switches_total", &[("reason", "manual")], 1.0),
            ("cs_tui_reruns_total", &[], 1.0),
            ("cs_tui_active_account", &[("account", "alice")], 1.0),
            ("cs_tui_active_account", &[("account", "bob")], 0.0),
            ("cs_tui_turns_running", &[], 0.0),
            ("cs_tui_session_state", &[("state", "ready")], 1.0),
            ("cs_tui_session_state", &[("state", "switching")], 0.0),
        ],
    );
    assert_eq!(
        last.get("cs_tui_limit_hits_total", &[("account", "alice")]),
        None
    );
    assert!(
        last.get("cs_tui_turns_total", &[("purpose", "user")])
            .unwrap()
            >= 3.0
    );
    // A scripted client generates no titles: the title series is there, at 0.
    assert_eq!(
        last.get("cs_tui_turns_total", &[("purpose", "title")]),
        Some(0.0)
    );

    last.assert_typed();

    // Prometheus asks for OpenMetrics and gets it: counters named by family, `_total`
    // samples, `# EOF`.
    let (status, content_type, text) = http(addr, "GET", "/metrics", Some(PROMETHEUS_ACCEPT));
    assert_eq!(status, 200);
    assert!(
        content_type.starts_with("application/openmetrics-text; version=1.0.0"),
        "{content_type}"
    );
    for line in [
        "# TYPE cs_tui_reruns counter\ncs_tui_reruns_total 1\n",
        "# TYPE cs_tui_turns_running gauge\ncs_tui_turns_running 0\n",
    ] {
        assert!(text.contains(line), "{line} in {text}");
    }
    assert!(text.ends_with("# EOF\n"), "{text}");

    // Names, never tokens.
    let auth: serde_json::Value =
        serde_json::from_slice(&std::fs::read(store.path().join("accounts.json")).unwrap())
            .unwrap();
    for account in auth["accounts"].as_array().unwrap() {
        for key in ["id_token", "access_token", "refresh_token"] {
            let secret = account["auth"][key].as_str().unwrap();
            assert!(!text.contains(secret), "{key} in /metrics");
        }
    }
    assert!(!text.contains(token), "the proxy token in /metrics");
    drop(serve);
}

/// Connections that never finish their request take no more than their slots: the session
/// goes on serving turns, and once they go, `/metrics` answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_scrapers_cannot_hold_the_session_up() {
    let mock = MockBackend::start().await;
    let home = CodexHome::offline(&mock.url());
    let store = tempfile::tempdir().unwrap();
    import(store.path(), &home, &mock, "alice");
    let (serve, url, token_addr) = start(&mock, &home, store.path());
    let (token, addr) = token_addr.split_once('\n').unwrap();
    serve.wait_event("active account", |e| e["event"] == "active_account");

    let stalled: Vec<TcpStream> = (0..40)
        .map(|_| {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
                .unwrap();
            s
        })
        .collect();
    let mut client = WsClient::connect(&url, token).await;
    client.initialize(json!("initialize")).await;
    let thread = start_thread(&mut client, home.work_dir()).await;
    run_turn(&mut client, &thread, "still served?").await;
    assert_eq!(mock.user_turn_requests("still served?").len(), 1);

    drop(stalled);
    // The server sees the stalled connections close; then a scrape is answered.
    let deadline = Instant::now() + WAIT;
    let turns = loop {
        let answered = TcpStream::connect(addr).ok().and_then(|mut s| {
            s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .ok()?;
            let mut text = String::new();
            s.read_to_string(&mut text).ok()?;
            text.starts_with("HTTP/1.1 200").then_some(text)
        });
        if let Some(text) = answered {
            break text;
        }
        assert!(Instant::now() < deadline, "/metrics never answered again");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(turns.contains("cs_tui_turns_total"), "{turns}");
    drop(serve);
}

#[test]
fn metrics_refuse_a_non_loopback_address_before_anything_starts() {
    let store = tempfile::tempdir().unwrap();
    for (addr, says) in [
        ("0.0.0.0:9464", "refusing to serve metrics on 0.0.0.0:9464"),
        ("localhost:9464", "is not an address"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_cs-tui"))
            .env("CS_TUI_HOME", store.path())
            .args(["serve", "--metrics", addr])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{addr} accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{err}");
        assert!(err.contains("hint:"), "{err}");
    }
    // A port another program holds: refused before the session starts (no accounts here).
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_cs-tui"))
        .env("CS_TUI_HOME", store.path())
        .args(["serve", "--metrics", &addr])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("cannot listen for metrics on {addr}")),
        "{err}"
    );
    assert!(err.contains("hint:"), "{err}");
    assert!(out.stdout.is_empty(), "nothing printed as listening");
}
