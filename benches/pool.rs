//! Many sessions, one pool (issue 14): what N sessions on one store cost, and how fast they
//! learn what one of them saw.
//!
//! `cargo bench --bench pool` starts N ∈ {1, 2, 4, 8} idle `cs-tui serve --listen unix://…`
//! on one store of 3 accounts (alice, bob, carol) of the mock ChatGPT backend, each with the
//! real pinned Codex as its app-server, `[polling] usage_interval_secs = 2` and `[pool]
//! placement = "fill"` (so every session is on alice, the account the store starts on), once
//! with the pool and once with `CS_TUI_POOL=off` in every session (each acts alone, as before
//! issue 14). After 2 warm-up intervals it measures 10 intervals:
//!
//! - **usage GETs per account per interval**: `GET /backend-api/wham/usage` and
//!   `/wham/rate-limit-reset-credits` in the mock's request log, over the 3 accounts (column
//!   `u+c`), and the busiest account's (`max`). Codex's own reads are told apart by the
//!   `originator` header: an app-server sends it on every backend request, cs-tui's own reads
//!   (reqwest, with the app-server's `User-Agent`) do not. Column `app` counts the reads that
//!   carry it (cs-tui may ask its app-server with `account/rateLimits/read`, and no client is
//!   connected to prompt one of Codex's own): it was 0 in every run, so every read is cs-tui's.
//!   The timer re-reads every account once per interval (a session that is not the poller
//!   leaves `CoreState::poll_usage` at its first line); the per-path counts of each window go
//!   to stderr;
//! - **idle CPU per session**: utime+stime from `/proc/PID/stat` over the window, of the
//!   session's cs-tui processes (`cs-tui serve` and its reaper) and, apart, of its app-server
//!   (every other process below it), in ms of CPU per second per session;
//! - **memory per session**: VmRSS at the end of the window, cs-tui and its app-server apart;
//! - **limit hit → all know** (pool on, N ≥ 2): a websocket client on S0 starts a turn while
//!   the mock answers alice's `/responses` with the usage-limit 429. `t0` is the mock's
//!   `RequestRecord::at` of that 429; `t_i` is when the reader thread of S_i's stdout stamped
//!   its `usage_limit_hit` line for alice with `session` = S0's id. Per run the p50 and max over
//!   the other sessions; over 3 fresh runs (fresh store, mock and sessions), the p50 of the
//!   per-run p50s and the max of the maxima.
//!
//! It prints one table and a verdict on the issue's goals (requests flat in N, knowledge in
//! < 1 s). `POOL_BENCH_QUICK=1` (or the argument `--quick`) runs N ∈ {1, 2} with 1 warm-up and
//! 3 measured intervals and one knowledge run: a smoke run of under a minute, for CI.
//! `POOL_BENCH_SIZES=1,8` measures other numbers of sessions (ratios are to the first), and
//! `POOL_BENCH_INTERVALS=70` measures that many intervals instead.
//! Every process is killed when the bench ends, also on a panic (the rig's `Drop`; each
//! app-server runs under cs-tui's reaper, which goes down with its session).
//!
//! Figures of a full release run (2 shared cores, four builds beside it; 2026-12-02):
//!
//! ```text
//! pool bench: 3 accounts, usage interval 2 s, 2 warm-up + 10 measured intervals, 3 knowledge run(s)
//! pool   N     GET/acct/intv (u+c)   app   ×N=1    ×off   max      CPU ms/s/sess   ×N=1       RSS MiB/sess   ×N=1  know p50/max ms
//! on     1     2.20 (1.10+1.10)  0.00   1.00    1.10  2.20    1.0 ( 1.0+ 0.0)   1.00  145.5 (24.2+121.3)   1.00                —
//! off    1     2.00 (1.00+1.00)  0.00   1.00          2.00    1.0 ( 1.0+ 0.0)   1.00  145.3 (23.6+121.7)   1.00                —
//! on     2     2.00 (1.00+1.00)  0.00   0.91    0.48  2.00    1.5 ( 1.2+ 0.2)   1.50  144.6 (23.5+121.1)   0.99              8/8
//! off    2     4.17 (2.10+2.07)  0.00   2.08          4.20    0.7 ( 0.7+ 0.0)   0.75  145.3 (23.6+121.8)   1.00                —
//! on     4     2.00 (1.00+1.00)  0.00   0.91    0.24  2.00    1.4 ( 1.2+ 0.1)   1.37  145.4 (23.7+121.7)   1.00            21/21
//! off    4     8.19 (4.10+4.10)  0.00   4.10          8.19    1.5 ( 1.0+ 0.5)   1.50  145.4 (23.7+121.8)   1.00                —
//! on     8     2.00 (1.00+1.00)  0.00   0.91    0.12  2.00    1.3 ( 1.1+ 0.2)   1.31  145.7 (23.8+121.9)   1.00            18/20
//! off    8    16.18 (8.09+8.09)  0.00   8.09         16.18    0.8 ( 0.7+ 0.1)   0.81  145.1 (23.6+121.5)   1.00                —
//! verdict: requests flat in N (worst 1.00× of N=1); knowledge within 1 s (worst 21 ms = 0.02 s)
//! ```
//!
//! Usage GETs per account per interval (one `/wham/usage` and one reset-credits read) stay at
//! one poller's for every N with the pool and grow as N without it (8.09× at N=8); a limit hit
//! in S0 reaches every other session in at most 21 ms (0.02 of the 1 s goal; 26 ms in an
//! earlier run). Idle cost per session does not grow with N (CPU of order 1–2 ms/s, at the
//! resolution of 10 ms ticks over 20 s; the app-server is 84 % of the ~145 MiB).

use std::ffi::OsStr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cs_tui_testkit::{AccountMode, MockBackend, RequestRecord, WAIT};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

#[path = "../tests/e2e/support/pool.rs"]
#[allow(
    dead_code,
    reason = "shared with the pool e2e tests, which use more of the rig than the bench"
)]
mod pool;

use pool::{PoolRig, PoolSession, ProcStats, descendants};

const ACCOUNTS: [&str; 3] = ["alice", "bob", "carol"];
/// `[polling] usage_interval_secs`: the ratios do not depend on it.
const INTERVAL: Duration = Duration::from_secs(2);
/// Clock ticks per second (`getconf CLK_TCK`; 100 on Linux).
const TICKS_PER_SEC: f64 = 100.0;

struct Plan {
    sizes: Vec<usize>,
    warm_up: u32,
    measured: u32,
    knowledge_runs: usize,
}

impl Plan {
    fn from_env() -> Self {
        let quick = std::env::var("POOL_BENCH_QUICK").is_ok_and(|v| v != "0" && !v.is_empty())
            || std::env::args().any(|a| a == "--quick");
        let mut plan = if quick {
            Self {
                sizes: vec![1, 2],
                warm_up: 1,
                measured: 3,
                knowledge_runs: 1,
            }
        } else {
            Self {
                sizes: vec![1, 2, 4, 8],
                warm_up: 2,
                measured: 10,
                knowledge_runs: 3,
            }
        };
        // `POOL_BENCH_INTERVALS=70`: a longer window (one over 120 s sees the usage reads).
        if let Ok(intervals) = std::env::var("POOL_BENCH_INTERVALS") {
            plan.measured = match intervals.trim().parse::<u32>() {
                Ok(n) if n > 0 => n,
                _ => panic!("POOL_BENCH_INTERVALS={intervals}: expected a number of intervals"),
            };
        }
        // `POOL_BENCH_SIZES=1,8`: other numbers of sessions (the ratios are to the first).
        if let Ok(sizes) = std::env::var("POOL_BENCH_SIZES") {
            plan.sizes = sizes
                .split(',')
                .map(|n| match n.trim().parse::<usize>() {
                    Ok(n) if n > 0 => n,
                    _ => {
                        panic!("POOL_BENCH_SIZES={sizes}: expected numbers of sessions, like 1,2,4")
                    }
                })
                .collect();
        }
        plan
    }
}

/// What one window of idle sessions cost.
#[derive(Clone, Copy, Debug, Default)]
struct Idle {
    /// `/wham/usage` and `/wham/rate-limit-reset-credits` GETs per account per interval.
    usage: f64,
    credits: f64,
    /// Of those, the ones an app-server made (they carry Codex's `originator`).
    via_app_server: f64,
    /// The busiest account's GETs per interval (both kinds).
    max_account: f64,
    /// CPU ms per second per session: the cs-tui process, and its app-server tree.
    cpu_cs_tui: f64,
    cpu_app_server: f64,
    /// VmRSS MiB per session.
    rss_cs_tui: f64,
    rss_app_server: f64,
}

impl Idle {
    fn requests(&self) -> f64 {
        self.usage + self.credits
    }
    fn cpu(&self) -> f64 {
        self.cpu_cs_tui + self.cpu_app_server
    }
    fn rss(&self) -> f64 {
        self.rss_cs_tui + self.rss_app_server
    }
}

/// The pids of the sessions running now, for the signal handler ([`stop_on_signals`]).
static RUNNING: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// A rig whose sessions the signal handler knows of: they are forgotten when it is dropped
/// (before the rig kills them), so a later signal cannot hit a reused pid.
struct Pool(PoolRig);

impl Drop for Pool {
    fn drop(&mut self) {
        let pids: Vec<u32> = self.0.sessions.iter().map(PoolSession::pid).collect();
        RUNNING.lock().unwrap().retain(|pid| !pids.contains(pid));
    }
}

impl std::ops::Deref for Pool {
    type Target = PoolRig;
    fn deref(&self) -> &PoolRig {
        &self.0
    }
}

/// On SIGINT, SIGTERM or SIGHUP sent to the bench alone (a CI timeout, `kill`), the sessions
/// would outlive it (a panic unwinds through the rig's `Drop`, a signal does not): ask each to
/// stop (serve exits on SIGTERM and takes its app-server down), then exit.
fn stop_on_signals(runtime: &tokio::runtime::Runtime) {
    use tokio::signal::unix::{SignalKind, signal};
    let _guard = runtime.enter();
    let mut streams: Vec<_> = [
        SignalKind::interrupt(),
        SignalKind::terminate(),
        SignalKind::hangup(),
    ]
    .into_iter()
    .map(|kind| signal(kind).expect("a signal handler"))
    .collect();
    runtime.spawn(async move {
        let any = futures_util::future::select_all(streams.iter_mut().map(|s| Box::pin(s.recv())));
        any.await;
        for pid in RUNNING.lock().unwrap().drain(..) {
            let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).expect("a pid"));
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        }
        eprintln!("pool bench: stopped by a signal; the sessions were told to stop");
        std::process::exit(130);
    });
}

/// Limit hit → every other session knows, in ms, per run: (p50, max) over the sessions.
type Knowledge = Vec<(f64, f64)>;

fn main() {
    let plan = Plan::from_env();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    stop_on_signals(&runtime);
    let mut rows: Vec<(usize, Idle, Idle, Knowledge)> = Vec::new();
    for &n in &plan.sizes {
        eprintln!("pool bench: {n} session(s), pool on");
        let mock = runtime.block_on(MockBackend::start());
        let mut rig = start_pool(&mock, n, &[]);
        let on = measure_idle(&mock, &rig, &plan);
        let mut knowledge = Vec::new();
        if n >= 2 {
            knowledge.push(limit_hit(&runtime, &mock, &rig));
            for _ in 1..plan.knowledge_runs {
                drop(rig);
                let mock = runtime.block_on(MockBackend::start());
                rig = start_pool(&mock, n, &[]);
                settle(&rig, &plan);
                knowledge.push(limit_hit(&runtime, &mock, &rig));
            }
        }
        drop(rig);
        eprintln!("pool bench: {n} session(s), CS_TUI_POOL=off");
        let mock = runtime.block_on(MockBackend::start());
        let rig = start_pool(&mock, n, &[("CS_TUI_POOL", OsStr::new("off"))]);
        let off = measure_idle(&mock, &rig, &plan);
        drop(rig);
        rows.push((n, on, off, knowledge));
    }
    report(&plan, &rows);
}

/// A store of 3 accounts, polled every 2 s, placement `fill`, starting on alice, and `n`
/// sessions on it, each logged in.
fn start_pool(mock: &MockBackend, n: usize, env: &[(&str, &OsStr)]) -> Pool {
    let mut rig = PoolRig::new(mock, &ACCOUNTS);
    std::fs::write(
        rig.store.path().join("config.toml"),
        format!(
            "[polling]\nusage_interval_secs = {}\n\n[pool]\nplacement = \"fill\"\n",
            INTERVAL.as_secs()
        ),
    )
    .unwrap();
    let out = rig.run(rig.store.path(), &["accounts", "use", "alice"]);
    assert!(
        out.status.success(),
        "accounts use alice: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cwd = rig.scratch();
    for _ in 0..n {
        let index = rig.spawn(&cwd, env);
        RUNNING.lock().unwrap().push(rig.sessions[index].pid());
        // One at a time, as people start them: each chooses with the others counted.
        rig.sessions[index].wait_for("active account", |e| e["event"] == "active_account");
    }
    let rig = Pool(rig);
    for (i, session) in rig.sessions.iter().enumerate() {
        let active = active_name(session);
        assert_eq!(
            active, "alice",
            "session {i} started on {active}, not alice"
        );
    }
    rig
}

/// Waits until every session knows every account's numbers, then lets the warm-up pass: the
/// start's usage reads are answered before alice's limit is set, else a read of alice would
/// tell the pool of the limit before the turn does (and the hit never happens).
fn settle(rig: &PoolRig, plan: &Plan) {
    for session in &rig.sessions {
        for name in ACCOUNTS {
            session.wait_for("the account's numbers", |e| {
                e["event"] == "rate_limits_updated" && e["account"]["name"] == name
            });
        }
    }
    std::thread::sleep(INTERVAL * plan.warm_up);
}

fn active_name(session: &PoolSession) -> String {
    let line = session.wait_for("active account", |e| e["event"] == "active_account");
    line.json.unwrap()["account"]["name"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Per session: its cs-tui processes (the session and its reaper, `cs-tui __reaper …`) and
/// the app-server's (everything below the reaper).
fn sample(rig: &PoolRig) -> Vec<(ProcStats, ProcStats)> {
    let add = |sum: ProcStats, p: ProcStats| ProcStats {
        cpu_ticks: sum.cpu_ticks + p.cpu_ticks,
        rss_kib: sum.rss_kib + p.rss_kib,
    };
    rig.sessions
        .iter()
        .map(|session| {
            let mut own = ProcStats::of(session.pid()).expect("the session runs");
            let mut app_server = ProcStats::default();
            for pid in descendants(session.pid()) {
                let Some(stats) = ProcStats::of(pid) else {
                    continue;
                };
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                if cmdline.split(|b| *b == 0).any(|arg| arg == b"__reaper") {
                    own = add(own, stats);
                } else {
                    app_server = add(app_server, stats);
                }
            }
            (own, app_server)
        })
        .collect()
}

fn is_usage_read(r: &RequestRecord) -> bool {
    r.method == "GET"
        && (r.path.ends_with("/wham/usage") || r.path.ends_with("/wham/rate-limit-reset-credits"))
}

/// Lets the sessions idle through the warm-up, then counts what they do over the measured
/// intervals.
fn measure_idle(mock: &MockBackend, rig: &PoolRig, plan: &Plan) -> Idle {
    std::thread::sleep(INTERVAL * plan.warm_up);
    let from = mock.requests().len();
    let before = sample(rig);
    let started = Instant::now();
    std::thread::sleep(INTERVAL * plan.measured);
    let after = sample(rig);
    let elapsed = started.elapsed().as_secs_f64();
    let requests = mock.requests();
    let to = requests.len();
    let intervals = elapsed / INTERVAL.as_secs_f64();
    let window = &requests[from..to];
    let mut paths = std::collections::BTreeMap::<String, usize>::new();
    for r in window {
        let who = if r.headers.contains_key("originator") {
            "app-server"
        } else {
            "cs-tui"
        };
        *paths
            .entry(format!("{} {} ({who})", r.method, r.path))
            .or_default() += 1;
    }
    eprintln!("  requests in the window: {paths:?}");
    let reads: Vec<&RequestRecord> = window.iter().filter(|r| is_usage_read(r)).collect();
    let by_app_server = reads
        .iter()
        .filter(|r| r.headers.contains_key("originator"))
        .count();
    let per_account = |n: usize| n as f64 / ACCOUNTS.len() as f64 / intervals;
    let max_account = ACCOUNTS
        .iter()
        .map(|label| {
            let id = format!("acct-{label}");
            reads
                .iter()
                .filter(|r| r.account_header.as_deref() == Some(&id))
                .count()
        })
        .max()
        .unwrap_or(0) as f64
        / intervals;
    let sessions = rig.sessions.len() as f64;
    let cpu = |pick: fn(&(ProcStats, ProcStats)) -> u64| {
        let ticks: u64 = before
            .iter()
            .zip(&after)
            .map(|(b, a)| pick(a).saturating_sub(pick(b)))
            .sum();
        ticks as f64 * 1000.0 / TICKS_PER_SEC / elapsed / sessions
    };
    let rss = |pick: fn(&(ProcStats, ProcStats)) -> u64| {
        after.iter().map(pick).sum::<u64>() as f64 / 1024.0 / sessions
    };
    Idle {
        usage: per_account(
            reads
                .iter()
                .filter(|r| r.path.ends_with("/wham/usage"))
                .count(),
        ),
        credits: per_account(
            reads
                .iter()
                .filter(|r| r.path.ends_with("/rate-limit-reset-credits"))
                .count(),
        ),
        via_app_server: per_account(by_app_server),
        max_account,
        cpu_cs_tui: cpu(|s| s.0.cpu_ticks),
        cpu_app_server: cpu(|s| s.1.cpu_ticks),
        rss_cs_tui: rss(|s| s.0.rss_kib),
        rss_app_server: rss(|s| s.1.rss_kib),
    }
}

/// S0 runs a turn into alice's usage limit; returns (p50, max) over the other sessions of the
/// time from the mock's 429 until each printed that alice is exhausted, in ms.
fn limit_hit(runtime: &tokio::runtime::Runtime, mock: &MockBackend, rig: &PoolRig) -> (f64, f64) {
    let s0 = &rig.sessions[0];
    let s0_id = s0.session_id(rig.store.path());
    let marks: Vec<usize> = rig.sessions.iter().map(PoolSession::mark).collect();
    let from = mock.requests().len();
    mock.set_mode("acct-alice", AccountMode::UsageLimit);
    let socket = s0
        .listen
        .strip_prefix("unix://")
        .expect("a unix listen address")
        .to_owned();
    // The turn is started (its `turn/start` answered) before anything is awaited from the
    // sessions, so a client that fails says why here; then its messages are drained.
    let ws = runtime.block_on(start_turn(socket, rig.scratch()));
    let client = runtime.spawn(drain(ws));
    s0.wait_for_after(marks[0], "its own usage_limit_hit", |e| {
        e["event"] == "usage_limit_hit" && e["account"]["name"] == "alice" && e["session"].is_null()
    });
    let heard: Vec<Instant> = rig.sessions[1..]
        .iter()
        .zip(&marks[1..])
        .map(|(session, &mark)| {
            session
                .wait_for_after(mark, "S0's usage_limit_hit", |e| {
                    e["event"] == "usage_limit_hit"
                        && e["account"]["name"] == "alice"
                        && e["session"] == s0_id.as_str()
                })
                .at
        })
        .collect();
    client.abort();
    let _ = runtime.block_on(client);
    let t0 = mock.requests()[from..]
        .iter()
        .find(|r| {
            r.is_model_request()
                && r.status == 429
                && r.token_account.as_deref() == Some("acct-alice")
        })
        .expect("the mock answered alice's turn with 429")
        .at;
    let mut ms: Vec<f64> = heard
        .iter()
        .map(|t| t.saturating_duration_since(t0).as_secs_f64() * 1000.0)
        .collect();
    ms.sort_by(f64::total_cmp);
    (percentile(&ms, 0.5), *ms.last().unwrap())
}

/// A `codex --remote unix://…` client's turn: initialize, start a thread, start a turn; returns
/// once `turn/start` is answered.
async fn start_turn(socket: String, cwd: std::path::PathBuf) -> UnixWs {
    let stream = tokio::net::UnixStream::connect(&socket).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async("ws://localhost/rpc", stream)
        .await
        .expect("websocket upgrade on the session's socket");
    send(
        &mut ws,
        json!({"id": 1, "method": "initialize", "params": {
            "clientInfo": {"name": "codex-tui", "title": "cs-tui pool bench", "version": "0.0.0"},
            "capabilities": {"experimentalApi": true}}}),
    )
    .await;
    wait_answer(&mut ws, 1).await;
    send(&mut ws, json!({"method": "initialized"})).await;
    send(
        &mut ws,
        json!({"id": 2, "method": "thread/start",
               "params": {"cwd": cwd, "approvalPolicy": "never"}}),
    )
    .await;
    let thread = wait_answer(&mut ws, 2).await;
    let thread_id = thread["result"]["thread"]["id"]
        .as_str()
        .expect("thread/start answered a thread id")
        .to_owned();
    send(
        &mut ws,
        json!({"id": 3, "method": "turn/start", "params": {
            "threadId": thread_id,
            "input": [{"type": "text", "text": "pool bench: run into the limit"}]}}),
    )
    .await;
    wait_answer(&mut ws, 3).await;
    ws
}

/// Reads the proxy's messages until aborted (they must be taken off the socket).
async fn drain(mut ws: UnixWs) {
    while let Some(Ok(_)) = ws.next().await {}
}

type UnixWs = tokio_tungstenite::WebSocketStream<tokio::net::UnixStream>;

async fn send(ws: &mut UnixWs, value: Value) {
    ws.send(Message::Text(value.to_string().into()))
        .await
        .expect("the session's socket takes a message");
}

async fn wait_answer(ws: &mut UnixWs, id: u64) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let message = tokio::time::timeout_at(deadline, ws.next())
            .await
            .unwrap_or_else(|_| panic!("no answer to request {id}"))
            .expect("the socket stays open")
            .expect("a websocket message");
        let Message::Text(text) = message else {
            continue;
        };
        let value: Value = serde_json::from_str(&text).expect("JSON from the proxy");
        if value["id"] == id {
            assert!(value.get("error").is_none(), "request {id} failed: {value}");
            return value;
        }
    }
}

/// `a / b`, or "—" when nothing was measured to compare with (a short window can see no CPU
/// tick at all).
fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.2}", a / b)
    } else {
        "—".to_owned()
    }
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    let rank = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[rank]
}

fn report(plan: &Plan, rows: &[(usize, Idle, Idle, Knowledge)]) {
    let Some((_, base_on, base_off, _)) = rows.first() else {
        return;
    };
    println!(
        "\npool bench: {} accounts, usage interval {} s, {} warm-up + {} measured intervals, {} knowledge run(s)\n",
        ACCOUNTS.len(),
        INTERVAL.as_secs(),
        plan.warm_up,
        plan.measured,
        plan.knowledge_runs
    );
    println!(
        "{:<5} {:>2}  {:>22} {:>5} {:>6} {:>7} {:>5}  {:>17} {:>6}  {:>17} {:>6}  {:>15}",
        "pool",
        "N",
        "GET/acct/intv (u+c)",
        "app",
        "×N=1",
        "×off",
        "max",
        "CPU ms/s/sess",
        "×N=1",
        "RSS MiB/sess",
        "×N=1",
        "know p50/max ms"
    );
    let mut worst_ratio: f64 = 0.0;
    let mut worst_knowledge: f64 = 0.0;
    for (n, on, off, knowledge) in rows {
        for (label, idle, base) in [("on", on, base_on), ("off", off, base_off)] {
            let know = if label == "on" && !knowledge.is_empty() {
                let mut p50s: Vec<f64> = knowledge.iter().map(|k| k.0).collect();
                p50s.sort_by(f64::total_cmp);
                let max = knowledge.iter().map(|k| k.1).fold(0.0, f64::max);
                worst_knowledge = worst_knowledge.max(max);
                format!("{:.0}/{:.0}", percentile(&p50s, 0.5), max)
            } else {
                "—".to_owned()
            };
            let vs_off = if label == "on" {
                format!("{:.2}", idle.requests() / off.requests())
            } else {
                String::new()
            };
            if label == "on" {
                worst_ratio = worst_ratio.max(idle.requests() / base.requests());
            }
            println!(
                "{:<5} {:>2}  {:>7.2} ({:>4.2}+{:>4.2}) {:>5.2} {:>6.2} {:>7} {:>5.2}  {:>5.1} ({:>4.1}+{:>4.1}) {:>6}  {:>5.1} ({:>4.1}+{:>4.1}) {:>6}  {:>15}",
                label,
                n,
                idle.requests(),
                idle.usage,
                idle.credits,
                idle.via_app_server,
                idle.requests() / base.requests(),
                vs_off,
                idle.max_account,
                idle.cpu(),
                idle.cpu_cs_tui,
                idle.cpu_app_server,
                ratio(idle.cpu(), base.cpu()),
                idle.rss(),
                idle.rss_cs_tui,
                idle.rss_app_server,
                ratio(idle.rss(), base.rss()),
                know
            );
        }
    }
    println!(
        "\n(u+c: /wham/usage + reset-credit GETs; app: of those, read by an app-server (with Codex's originator);\n max: the busiest account; CPU and RSS: cs-tui (session + reaper) + its app-server)"
    );
    // "Flat": the busiest N reads at most 1.25× what one session reads (the window's edges
    // cut an interval's reads in or out).
    let flat = worst_ratio <= 1.25;
    if rows
        .iter()
        .all(|(_, on, off, _)| on.usage == 0.0 && off.usage == 0.0)
    {
        println!(
            "note: no /wham/usage read fell in a window: a poll re-reads an account's usage only \
             when its last read is older than 120 s (usage_stale_secs); the timer's reads here \
             are the reset credits, sent by the same poll"
        );
    }
    let fast = worst_knowledge < 1000.0;
    println!(
        "verdict: requests {} in N (worst {:.2}× of N=1); knowledge {} 1 s (worst {:.0} ms = {:.2} s)",
        if flat { "flat" } else { "NOT flat" },
        worst_ratio,
        if fast { "within" } else { "NOT within" },
        worst_knowledge,
        worst_knowledge / 1000.0
    );
}
