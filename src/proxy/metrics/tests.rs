use chrono::DateTime;
use prometheus_parse::{Scrape, Value};

use super::*;
use crate::proxy::events::{AccountRef, PoolShare};
use crate::quota::{RateLimitSnapshot, RateLimitWindow};

fn at() -> DateTime<chrono::Utc> {
    DateTime::from_timestamp(1_800_000_000, 0).unwrap()
}

fn account(name: &str) -> AccountRef {
    AccountRef {
        id: format!("id-{name}").as_str().into(),
        name: name.into(),
    }
}

fn limits(name: &str, windows: &[(u32, f64, Option<i64>)]) -> ProxyEvent {
    let mut snapshot = RateLimitSnapshot::default();
    let mut slots = windows.iter().map(|&(mins, used, resets)| RateLimitWindow {
        used_percent: used,
        window_duration_mins: Some(mins),
        resets_at: resets,
    });
    snapshot.primary = slots.next();
    snapshot.secondary = slots.next();
    ProxyEvent::RateLimitsUpdated {
        account: account(name),
        snapshot,
        families: Vec::new(),
        at: at(),
    }
}

fn parse(text: &str) -> Scrape {
    Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("Prometheus text")
}

/// The metrics as a classic scraper reads them.
fn scrape(metrics: &Metrics) -> Scrape {
    parse(&classic(&metrics.encode()))
}

/// The value of the one sample of `name` whose labels include `labels`; `None` when absent.
/// A `_total` sample must read as a counter, any other as a gauge.
fn value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let found: Vec<f64> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            Value::Counter(v) if name.ends_with("_total") => v,
            Value::Gauge(v) if !name.ends_with("_total") => v,
            ref other => panic!("{name}: {other:?}"),
        })
        .collect();
    assert!(found.len() <= 1, "{name} {labels:?}: {found:?}");
    found.first().copied()
}

#[test]
fn events_become_metrics() {
    let mut m = Metrics::new();
    let s = scrape(&m);
    assert_eq!(
        value(&s, "cs_tui_session_state", &[("state", "starting")]),
        Some(1.0)
    );
    assert_eq!(
        value(&s, "cs_tui_session_state", &[("state", "ready")]),
        Some(0.0)
    );
    // Both purposes' series are there from the start.
    assert_eq!(
        value(&s, "cs_tui_turns_total", &[("purpose", "user")]),
        Some(0.0)
    );
    assert_eq!(
        value(&s, "cs_tui_turns_total", &[("purpose", "title")]),
        Some(0.0)
    );

    m.observe(&ProxyEvent::ActiveAccount {
        account: account("alice"),
        at: at(),
    });
    m.observe(&ProxyEvent::Connection {
        state: ConnectionState::Ready { clients: 2 },
        at: at(),
    });
    m.observe(&limits(
        "alice",
        &[(300, 42.5, Some(1_800_003_600)), (10_080, 7.0, None)],
    ));
    // A user turn, the TUI's title turn beside it, both end; another user turn.
    for (running, title_turns) in [(1, 0), (2, 1), (1, 1), (0, 0), (1, 0), (0, 0)] {
        m.observe(&ProxyEvent::TurnsRunning {
            running,
            title_turns,
            at: at(),
        });
    }
    m.observe(&ProxyEvent::UsageLimitHit {
        account: account("alice"),
        session: None,
        at: at(),
    });
    // A peer's hit is that session's to count.
    m.observe(&ProxyEvent::UsageLimitHit {
        account: account("alice"),
        session: Some("123-abc".into()),
        at: at(),
    });
    m.observe(&ProxyEvent::SwitchStarted {
        from: Some(account("alice")),
        to: account("bob"),
        reason: SwitchReason::UsageLimit,
        at: at(),
    });
    let s = scrape(&m);
    assert_eq!(
        value(&s, "cs_tui_session_state", &[("state", "switching")]),
        Some(1.0)
    );
    assert_eq!(
        value(&s, "cs_tui_session_state", &[("state", "ready")]),
        Some(0.0)
    );
    m.observe(&ProxyEvent::SwitchDone {
        from: Some(account("alice")),
        to: account("bob"),
        reason: SwitchReason::UsageLimit,
        elapsed_ms: 300,
        at: at(),
    });
    m.observe(&ProxyEvent::TurnRerun {
        from: Some(account("alice")),
        to: account("bob"),
        waited_ms: 900,
        at: at(),
    });
    m.observe(&ProxyEvent::PoolChanged {
        sessions: 3,
        by_account: vec![
            PoolShare {
                account: account("bob"),
                sessions: 2,
            },
            PoolShare {
                account: account("carol"),
                sessions: 1,
            },
        ],
        at: at(),
    });

    let s = scrape(&m);
    let alice_5h = [("account", "alice"), ("window", "5h")];
    let alice_wk = [("account", "alice"), ("window", "weekly")];
    assert_eq!(
        value(&s, "cs_tui_account_used_percent", &alice_5h),
        Some(42.5)
    );
    assert_eq!(
        value(&s, "cs_tui_account_used_percent", &alice_wk),
        Some(7.0)
    );
    assert_eq!(
        value(&s, "cs_tui_account_reset_timestamp_seconds", &alice_5h),
        Some(1_800_003_600.0)
    );
    assert_eq!(
        value(&s, "cs_tui_account_reset_timestamp_seconds", &alice_wk),
        None,
        "no reset time known, no series"
    );
    assert_eq!(
        value(&s, "cs_tui_turns_total", &[("purpose", "user")]),
        Some(2.0)
    );
    assert_eq!(
        value(&s, "cs_tui_turns_total", &[("purpose", "title")]),
        Some(1.0)
    );
    assert_eq!(value(&s, "cs_tui_turns_running", &[]), Some(0.0));
    assert_eq!(value(&s, "cs_tui_reruns_total", &[]), Some(1.0));
    assert_eq!(
        value(&s, "cs_tui_limit_hits_total", &[("account", "alice")]),
        Some(1.0)
    );
    assert_eq!(
        value(&s, "cs_tui_switches_total", &[("reason", "usage_limit")]),
        Some(1.0)
    );
    assert_eq!(
        value(&s, "cs_tui_switches_total", &[("reason", "manual")]),
        None
    );
    assert_eq!(
        value(&s, "cs_tui_session_state", &[("state", "ready")]),
        Some(1.0)
    );
    assert_eq!(
        value(&s, "cs_tui_session_state", &[("state", "switching")]),
        Some(0.0)
    );
    assert_eq!(
        value(&s, "cs_tui_active_account", &[("account", "bob")]),
        Some(1.0)
    );
    assert_eq!(
        value(&s, "cs_tui_active_account", &[("account", "alice")]),
        Some(0.0)
    );
    assert_eq!(value(&s, "cs_tui_clients", &[]), Some(2.0));
    assert_eq!(value(&s, "cs_tui_pool_sessions", &[]), Some(3.0));
    assert_eq!(
        value(&s, "cs_tui_pool_account_sessions", &[("account", "carol")]),
        Some(1.0)
    );

    // A window that went, and an account that left the pool, lose their series.
    m.observe(&limits("alice", &[(10_080, 9.0, Some(1_800_500_000))]));
    m.observe(&ProxyEvent::PoolChanged {
        sessions: 1,
        by_account: vec![PoolShare {
            account: account("bob"),
            sessions: 1,
        }],
        at: at(),
    });
    m.observe(&ProxyEvent::AppServerExited {
        status: "exit 1".into(),
        stderr_tail: String::new(),
        restarting: false,
        at: at(),
    });
    let s = scrape(&m);
    assert_eq!(value(&s, "cs_tui_account_used_percent", &alice_5h), None);
    assert_eq!(
        value(&s, "cs_tui_account_used_percent", &alice_wk),
        Some(9.0)
    );
    assert_eq!(
        value(&s, "cs_tui_pool_account_sessions", &[("account", "carol")]),
        None
    );
    assert_eq!(
        value(&s, "cs_tui_session_state", &[("state", "down")]),
        Some(1.0)
    );
}

#[test]
fn the_text_is_openmetrics_with_help_and_types() {
    let mut m = Metrics::new();
    m.observe(&limits("a \"quoted\" name", &[(300, 1.0, None)]));
    m.observe(&ProxyEvent::ActiveAccount {
        account: account("back\\slash\nnewline"),
        at: at(),
    });
    let text = m.encode();
    assert!(text.ends_with("# EOF\n"), "{text}");
    assert!(text.contains("# TYPE cs_tui_turns counter"), "{text}");
    assert!(text.contains("cs_tui_reruns_total 0\n"), "{text}");
    assert!(text.contains(r#"account="back\\slash\nnewline""#), "{text}");
    assert!(
        text.contains(r#"account="a \"quoted\" name""#),
        "label values are escaped: {text}"
    );
}

#[test]
fn only_a_loopback_address_is_taken() {
    assert_eq!(
        parse_address("127.0.0.1:0").unwrap(),
        "127.0.0.1:0".parse().unwrap()
    );
    assert!(parse_address("[::1]:9464").is_ok());
    for bad in ["0.0.0.0:9464", "192.168.1.2:9464", "[::]:9464"] {
        let err = format!("{:?}", parse_address(bad).unwrap_err());
        assert!(err.contains("refusing to serve metrics"), "{err}");
        assert!(err.contains("loopback"), "{err}");
    }
    let err = format!("{:?}", parse_address("localhost:9464").unwrap_err());
    assert!(err.contains("is not an address"), "{err}");
}

#[test]
fn only_get_metrics_is_answered() {
    let registry = Registry::default();
    let get = |method: Method, path: &str| {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .body(())
            .unwrap();
        answer(&request, &registry).status()
    };
    assert_eq!(get(Method::GET, "/metrics"), StatusCode::OK);
    assert_eq!(get(Method::GET, "/metrics?x=1"), StatusCode::OK);
    assert_eq!(get(Method::POST, "/metrics"), StatusCode::NOT_FOUND);
    assert_eq!(get(Method::HEAD, "/metrics"), StatusCode::NOT_FOUND);
    assert_eq!(get(Method::GET, "/"), StatusCode::NOT_FOUND);
    assert_eq!(get(Method::GET, "/metrics/x"), StatusCode::NOT_FOUND);
}

/// Every family the feed can fill in: each is encoded only once it has a series.
fn every_family() -> Metrics {
    let mut m = Metrics::new();
    m.observe(&limits("alice", &[(300, 42.5, Some(1_800_003_600))]));
    m.observe(&ProxyEvent::ActiveAccount {
        account: account("alice"),
        at: at(),
    });
    m.observe(&ProxyEvent::UsageLimitHit {
        account: account("alice"),
        session: None,
        at: at(),
    });
    m.observe(&ProxyEvent::SwitchFailed {
        from: Some(account("alice")),
        to: account("bob"),
        reason: SwitchReason::Manual,
        error: "refused".into(),
        at: at(),
    });
    m.observe(&ProxyEvent::SwitchDone {
        from: Some(account("alice")),
        to: account("bob"),
        reason: SwitchReason::UsageLimit,
        elapsed_ms: 300,
        at: at(),
    });
    m.observe(&ProxyEvent::PoolChanged {
        sessions: 1,
        by_account: vec![PoolShare {
            account: account("bob"),
            sessions: 1,
        }],
        at: at(),
    });
    m
}

/// The families' names, help and types, in the order they are written: what dashboards and
/// alerts rely on.
const DESCRIPTORS: &str = "\
# HELP cs_tui_account_used_percent Percent used of an account's rate-limit window (its general quota).
# TYPE cs_tui_account_used_percent gauge
# HELP cs_tui_account_reset_timestamp_seconds When an account's rate-limit window resets, in unix seconds.
# TYPE cs_tui_account_reset_timestamp_seconds gauge
# HELP cs_tui_switches Account switches completed, by reason.
# TYPE cs_tui_switches counter
# HELP cs_tui_switch_failures Account switches that failed, by reason.
# TYPE cs_tui_switch_failures counter
# HELP cs_tui_no_account_available Switches wanted when no account was usable.
# TYPE cs_tui_no_account_available counter
# HELP cs_tui_turns Turns started in this session, by purpose (user, or the TUI's title generation).
# TYPE cs_tui_turns counter
# HELP cs_tui_turns_running Turns running now.
# TYPE cs_tui_turns_running gauge
# HELP cs_tui_reruns Turns withheld at a usage limit and re-run on the next account.
# TYPE cs_tui_reruns counter
# HELP cs_tui_limit_hits Turns of this session refused at an account's usage limit.
# TYPE cs_tui_limit_hits counter
# HELP cs_tui_session_state The session's state: 1 for the current one.
# TYPE cs_tui_session_state gauge
# HELP cs_tui_active_account The account the session runs on: 1 for it, 0 for accounts it left.
# TYPE cs_tui_active_account gauge
# HELP cs_tui_clients Codex clients attached.
# TYPE cs_tui_clients gauge
# HELP cs_tui_pool_sessions Sessions running on this store, this one included.
# TYPE cs_tui_pool_sessions gauge
# HELP cs_tui_pool_account_sessions Sessions of the pool running on each account.
# TYPE cs_tui_pool_account_sessions gauge
# EOF
";

#[test]
fn every_family_keeps_its_name_help_and_type() {
    let text = every_family().encode();
    let descriptors: String = text
        .lines()
        .filter(|l| l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(descriptors, DESCRIPTORS);
}

#[test]
fn a_classic_scraper_reads_every_counter_and_gauge_typed() {
    let m = every_family();
    // What the OpenMetrics text looks like to a classic parser: its counters' `# TYPE` lines
    // name the family, not the `_total` sample, so they read untyped.
    let openmetrics = parse(&m.encode());
    assert!(
        openmetrics
            .samples
            .iter()
            .any(|s| s.metric == "cs_tui_reruns_total" && matches!(s.value, Value::Untyped(_)))
    );

    let text = classic(&m.encode());
    assert!(!text.contains("# EOF"), "{text}");
    assert!(
        text.contains(
            "# HELP cs_tui_reruns_total Turns withheld at a usage limit and re-run on the next account.\n\
             # TYPE cs_tui_reruns_total counter\n\
             cs_tui_reruns_total 0\n"
        ),
        "{text}"
    );
    assert!(
        text.contains("# TYPE cs_tui_turns_running gauge\n"),
        "{text}"
    );
    let classic = parse(&text);
    assert_eq!(classic.samples.len(), parse(&m.encode()).samples.len());
    for sample in &classic.samples {
        let counter = sample.metric.ends_with("_total");
        match sample.value {
            Value::Counter(_) if counter => {}
            Value::Gauge(_) if !counter => {}
            ref other => panic!("{}: {other:?}", sample.metric),
        }
    }
    // Both name the same families with the same help.
    let help = |s: &Scrape| -> BTreeMap<String, String> {
        s.docs
            .iter()
            .map(|(name, doc)| (name.trim_end_matches("_total").to_owned(), doc.clone()))
            .collect()
    };
    assert_eq!(help(&classic), help(&openmetrics));
    assert_eq!(help(&classic).len(), 14);
}

#[test]
fn openmetrics_goes_to_a_scraper_that_asks_for_it_the_classic_text_to_any_other() {
    let m = every_family();
    let get = |accept: &[&str]| {
        let mut request = Request::builder().method(Method::GET).uri("/metrics");
        for value in accept {
            request = request.header(header::ACCEPT, *value);
        }
        let response = answer(&request.body(()).unwrap(), &m.registry);
        assert_eq!(response.status(), StatusCode::OK);
        response.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .to_owned()
    };
    // Prometheus 3's scrape header, and older ones'.
    let prometheus = "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,\
                      application/openmetrics-text;version=0.0.1;q=0.4,\
                      text/plain;version=1.0.0;escaping=allow-utf-8;q=0.3,\
                      text/plain;version=0.0.4;q=0.2,*/*;q=0.1";
    for accept in [
        &[prometheus][..],
        &["application/openmetrics-text; version=0.0.1,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"],
        &["text/plain", "Application/OpenMetrics-Text"],
    ] {
        assert_eq!(get(accept), CONTENT_TYPE, "{accept:?}");
    }
    for accept in [
        &[][..],
        &["*/*"],
        &["text/plain;version=0.0.4"],
        &["application/openmetrics-text;q=0, text/plain;q=0.5"],
        &["not a media type"],
    ] {
        assert_eq!(get(accept), CLASSIC_CONTENT_TYPE, "{accept:?}");
    }
}

/// An account removed or renamed in the store loses its gauges; the active one keeps its own
/// until the session leaves it; counters stay.
#[test]
fn accounts_gone_from_the_store_lose_their_gauges() {
    use crate::proxy::events::AccountSummary;
    let listing = |names: &[&str]| ProxyEvent::AccountsListed {
        accounts: names
            .iter()
            .map(|name| AccountSummary {
                id: format!("id-{name}").as_str().into(),
                name: (*name).to_owned(),
                email: None,
                plan: None,
                enabled: true,
                needs_login: false,
                unsupported_sign_in: None,
            })
            .collect(),
        at: at(),
    };
    let mut m = Metrics::new();
    m.observe(&ProxyEvent::ActiveAccount {
        account: account("alice"),
        at: at(),
    });
    m.observe(&limits("alice", &[(300, 42.0, Some(1_800_003_600))]));
    m.observe(&limits("bob", &[(300, 10.0, Some(1_800_003_600))]));
    m.observe(&limits("carol", &[(300, 20.0, None)]));
    m.observe(&ProxyEvent::UsageLimitHit {
        account: account("carol"),
        session: None,
        at: at(),
    });
    // carol renamed carmen, bob removed; alice (active) removed too.
    m.observe(&listing(&["carmen"]));
    let s = scrape(&m);
    let used = |s: &Scrape, name| {
        value(
            s,
            "cs_tui_account_used_percent",
            &[("account", name), ("window", "5h")],
        )
    };
    assert_eq!(used(&s, "bob"), None);
    assert_eq!(used(&s, "carol"), None);
    assert_eq!(
        used(&s, "alice"),
        Some(42.0),
        "the active account keeps its gauges"
    );
    assert_eq!(
        value(&s, "cs_tui_limit_hits_total", &[("account", "carol")]),
        Some(1.0),
        "counters stay"
    );
    // Numbers for the new name come with its next reading.
    m.observe(&limits("carmen", &[(300, 20.0, None)]));
    assert_eq!(used(&scrape(&m), "carmen"), Some(20.0));
}
