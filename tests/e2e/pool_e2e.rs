//! Many sessions on one store (issue 14), as a user runs them: real `cs-tui serve` processes
//! with the real app-server, the mock backend, `cs-tui sessions` and `cs-tui switch
//! --session` from another terminal.

use std::ffi::OsStr;
use std::path::Path;
use std::time::Instant;

use cs_tui_testkit::turns::{agent_texts, run_turn, start_thread};
use cs_tui_testkit::{MockBackend, RequestRecord, Tmux, Usage, UsageWindow, WAIT, WsClient};
use serde_json::{Value, json};

use crate::support::cs_tui_under_sh;
use crate::support::pool::{PoolRig, PoolSession, ProcStats, descendants};
use crate::support::product::{panel, prompt, ready};

const ACCOUNTS: [&str; 3] = ["alice", "bob", "carol"];

fn active_name(session: &PoolSession) -> String {
    let line = session.wait_for("active account", |e| e["event"] == "active_account");
    line.json.unwrap()["account"]["name"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn another_account(than: &str) -> &'static str {
    ACCOUNTS.into_iter().find(|a| *a != than).unwrap()
}

fn is_switch(event: &Value) -> bool {
    event["event"]
        .as_str()
        .is_some_and(|e| e.starts_with("switch_"))
}

fn switch_events(session: &PoolSession) -> Vec<Value> {
    session.events().into_iter().filter(is_switch).collect()
}

/// The `switch_*` events a session printed after its first `mark` lines.
fn switch_events_since(session: &PoolSession, mark: usize) -> Vec<Value> {
    session.lines()[mark..]
        .iter()
        .filter_map(|l| l.json.clone())
        .filter(is_switch)
        .collect()
}

/// Each account of `sessions --json` with the number of sessions on it.
fn account_counts(listing: &Value) -> Vec<(&str, u64)> {
    listing["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["name"].as_str().unwrap(), a["sessions"].as_u64().unwrap()))
        .collect()
}

/// `cs-tui sessions --json`, asked again each time a session prints and at least every 50 ms,
/// until `pred` holds (up to [`WAIT`]).
fn sessions_until(rig: &PoolRig, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let listing = rig.sessions_json();
        if pred(&listing) {
            return listing;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; last `sessions --json`: {listing:#}"
        );
        match rig.sessions.first() {
            Some(session) => session.wait_printed(std::time::Duration::from_millis(50)),
            None => std::thread::sleep(std::time::Duration::from_millis(50)),
        }
    }
}

/// The sessions `sessions --json` lists.
fn sessions_of(listing: &Value) -> &Vec<Value> {
    listing["sessions"].as_array().unwrap()
}

/// Whether `sessions --json` lists exactly `n` sessions, all `ready`.
fn all_ready(listing: &Value, n: usize) -> bool {
    let sessions = sessions_of(listing);
    sessions.len() == n && sessions.iter().all(|s| s["state"] == "ready")
}

/// The session of `sessions --json` with this pid.
fn listed(listing: &Value, pid: u32) -> &Value {
    sessions_of(listing)
        .iter()
        .find(|s| s["pid"] == pid)
        .unwrap_or_else(|| panic!("no session {pid} in {listing:#}"))
}

/// Both windows of an account used this much: its headroom is `100 - percent`.
fn used(percent: u8) -> Usage {
    Usage {
        primary: Some(UsageWindow::five_hour(percent)),
        secondary: Some(UsageWindow::weekly(percent)),
        ..Usage::default()
    }
}

fn event_is(event: &Value, name: &str) -> bool {
    event["event"] == name
}

/// The model requests (`POST …/responses`) logged after the first `mark` entries whose
/// `chatgpt-account-id` is `account`.
fn model_requests_on(mock: &MockBackend, mark: usize, account: &str) -> Vec<RequestRecord> {
    mock.requests()
        .into_iter()
        .skip(mark)
        .filter(|r| r.is_model_request() && r.account_header.as_deref() == Some(account))
        .collect()
}

/// A Codex client on a serve's unix socket, initialized, with a thread in `cwd`.
async fn client_with_thread(session_listen: &str, cwd: &Path) -> (WsClient, String) {
    let mut client = WsClient::connect_unix(session_listen).await;
    client.initialize(json!("initialize")).await;
    let thread = start_thread(&mut client, cwd).await;
    (client, thread)
}

/// Sends `turn/start` on `thread` and waits for a `turn/completed` of that thread: a turn
/// that met a usage limit ends as its hidden re-run, whose turn id is another.
async fn turn_on_thread(client: &mut WsClient, thread: &str, text: &str) {
    client
        .request(
            "turn/start",
            json!({"threadId": thread, "input": [{"type": "text", "text": text}]}),
        )
        .await
        .expect("turn/start");
    client
        .wait_for(WAIT, "turn/completed", |m| {
            m["method"] == "turn/completed" && m["params"]["threadId"] == thread
        })
        .await;
}

/// The dashboard (`cs-tui` with no command) in a 160×48 tmux window on the rig's store, in
/// the Codex home's work directory; it shows what a person finds after it exits.
fn dashboard(rig: &PoolRig) -> Tmux {
    let env = rig.env();
    let env: Vec<(&str, &OsStr)> = env.iter().map(|(k, v)| (*k, v.as_os_str())).collect();
    let script = "\"$0\"; echo \"cs-tui exited $?\"; printf 'shell prompt> '; exec sleep 600";
    cs_tui_under_sh(160, 48, rig.home.work_dir(), &env, script)
}

/// The account the dashboard's panel marks active (`● NAME`), among the rig's.
fn panel_active(screen: &str) -> Option<&'static str> {
    let panel = panel(screen);
    ACCOUNTS
        .into_iter()
        .find(|name| panel.contains(&format!("● {name}")))
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Two `serve` on one store: both are listed by `cs-tui sessions`, a manual switch named with
/// `--session` (a pid, an id prefix) moves only that session, one without it is refused while
/// the choice is unclear, and a session killed with SIGKILL drops out of both.
#[test]
fn two_serves_on_one_store_switch_one_at_a_time() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mock = runtime.block_on(MockBackend::start());
    let mut rig = PoolRig::new(&mock, &ACCOUNTS);
    let api = rig.scratch().join("api");
    let web = rig.scratch().join("web");
    std::fs::create_dir_all(&api).unwrap();
    std::fs::create_dir_all(&web).unwrap();
    let s1 = rig.spawn(&api, &[]);
    let s2 = rig.spawn_ready(&web, &[]);
    let first = active_name(&rig.sessions[s1]);
    let second = active_name(&rig.sessions[s2]);
    let (pid1, pid2) = (rig.sessions[s1].pid(), rig.sessions[s2].pid());
    let id2 = rig.sessions[s2].session_id(rig.store.path());
    for session in &rig.sessions {
        assert_eq!(
            session.lines()[0].text,
            format!("listening {}", session.listen)
        );
        // What the bench measures: each session and its app-server, apart.
        let own = ProcStats::of(session.pid()).expect("the session runs");
        assert!(own.rss_kib > 0, "{own:?}");
        let below = descendants(session.pid());
        assert!(
            below.iter().any(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains("app-server"))
            }),
            "an app-server among {below:?}"
        );
    }

    // `sessions --json` lists both, and every stored account.
    let listing = rig.sessions_json();
    let mut pids: Vec<u64> = sessions_of(&listing)
        .iter()
        .map(|s| s["pid"].as_u64().unwrap())
        .collect();
    pids.sort_unstable();
    let mut want = vec![u64::from(pid1), u64::from(pid2)];
    want.sort_unstable();
    assert_eq!(pids, want, "{listing:#}");
    let names: Vec<&str> = listing["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ACCOUNTS, "{listing:#}");
    // Both answer `session_status`: `ready` (once their proxies are), with their fields.
    let listing = sessions_until(&rig, "both sessions ready", |l| all_ready(l, 2));
    for session in sessions_of(&listing) {
        let cwd = Path::new(session["cwd"].as_str().unwrap());
        assert!(cwd == api || cwd == web, "{listing:#}");
        assert_eq!(session["kind"], "serve");
    }
    let text = rig.run(rig.store.path(), &["sessions"]);
    assert!(text.status.success(), "{}", stderr(&text));
    assert!(stdout(&text).starts_with("PID"), "{}", stdout(&text));
    assert!(stdout(&text).contains("2 sessions"), "{}", stdout(&text));

    // By pid: only the first session moves.
    let target1 = another_account(&first);
    let out = rig.run(
        rig.store.path(),
        &["switch", target1, "--session", &pid1.to_string()],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains(&format!("switching to {target1}")),
        "{}",
        stdout(&out)
    );
    let done = rig.sessions[s1].wait_for("switch done", |e| e["event"] == "switch_done");
    assert_eq!(done.json.unwrap()["to"]["name"], target1);
    assert!(
        switch_events(&rig.sessions[s2]).is_empty(),
        "the other session did not switch: {:#?}",
        switch_events(&rig.sessions[s2])
    );

    // By id prefix: only the second.
    let target2 = another_account(&second);
    let prefix = &id2[..id2.find('-').unwrap() + 5];
    let mark1 = rig.sessions[s1].mark();
    let out = rig.run(rig.store.path(), &["switch", target2, "--session", prefix]);
    assert!(out.status.success(), "{}", stderr(&out));
    let done = rig.sessions[s2].wait_for("switch done", |e| e["event"] == "switch_done");
    assert_eq!(done.json.unwrap()["to"]["name"], target2);
    assert_eq!(
        switch_events(&rig.sessions[s2]).len(),
        2,
        "started and done"
    );
    let later = switch_events_since(&rig.sessions[s1], mark1);
    assert!(
        later.is_empty(),
        "the first session did not switch again: {later:#?}"
    );

    // Without --session, from a directory neither was started in: refused, with the list.
    let out = rig.run(&rig.scratch(), &["switch", "best"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("2 cs-tui sessions are running"), "{err}");
    assert!(
        err.contains(&pid1.to_string()) && err.contains(&pid2.to_string()),
        "{err}"
    );
    assert!(err.contains("--session"), "{err}");
    // A pid that is not a session's.
    let out = rig.run(rig.store.path(), &["switch", "best", "--session", "1"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no running session has the pid"),
        "{}",
        stderr(&out)
    );

    // SIGKILL the first: its directory stays until the next start prunes it, but it is no
    // longer listed, and with one session left `switch` needs no --session.
    let killed = rig.sessions.remove(s1);
    drop(killed);
    let listing = rig.sessions_json();
    let pids: Vec<u64> = sessions_of(&listing)
        .iter()
        .map(|s| s["pid"].as_u64().unwrap())
        .collect();
    assert_eq!(pids, [u64::from(pid2)], "{listing:#}");
    let survivor = &rig.sessions[0];
    let back = another_account(target2);
    let mark2 = survivor.mark();
    let out = rig.run(&rig.scratch(), &["switch", back]);
    assert!(out.status.success(), "{}", stderr(&out));
    let done = survivor.wait_for_after(mark2, "switch done", |e| e["event"] == "switch_done");
    assert_eq!(done.json.unwrap()["to"]["name"], back);
}

/// The dashboard shows the pool it hears of (`PoolChanged`, fed here through the development
/// replay path): the pool line, `×N` on the accounts in use, and `· N sessions` in the status
/// bar once the panel collapses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_pool() {
    use chrono::Utc;
    use cs_tui::proxy::events::{ConnectionState, PoolShare, ProxyEvent};

    use crate::support::replay::{Replay, account};

    let replay = Replay::new().await;
    let now = Utc::now();
    let quota = cs_tui::quota::RateLimitSnapshot::default();
    replay.emit(&[
        ProxyEvent::Connection {
            state: ConnectionState::Ready { clients: 1 },
            at: now,
        },
        ProxyEvent::ActiveAccount {
            account: account("alice"),
            at: now,
        },
        ProxyEvent::RateLimitsUpdated {
            account: account("bob"),
            snapshot: quota.clone(),
            families: Vec::new(),
            at: now,
        },
        ProxyEvent::RateLimitsUpdated {
            account: account("carol"),
            snapshot: quota,
            families: Vec::new(),
            at: now,
        },
    ]);
    let t = replay.start(160, 40, &[]);
    let screen = t.wait_for(WAIT, "the panel on alice", |screen| {
        screen.contains("● alice") && screen.contains("carol")
    });
    assert!(
        !screen.contains("sessions"),
        "alone: no pool line\n{screen}"
    );

    replay.emit(&[ProxyEvent::PoolChanged {
        sessions: 3,
        by_account: vec![
            PoolShare {
                account: account("alice"),
                sessions: 2,
            },
            PoolShare {
                account: account("bob"),
                sessions: 1,
            },
        ],
        at: Utc::now(),
    }]);
    let screen = t.wait_for(WAIT, "the pool in the panel", |screen| {
        screen.contains("3 sessions: alice ×2, bob ×1")
            && screen.contains("● alice ×2")
            && screen.contains("bob ×1")
    });
    assert!(!screen.contains("carol ×"), "{screen}");

    // Narrow: the status bar counts the sessions.
    t.resize(100, 30);
    t.wait_for(WAIT, "the status bar with the pool", |screen| {
        screen.contains("alice · 3 sessions")
    });
}

/// Two `serve` sessions on alice (`[pool] placement = "fill"`; alice 10 %, bob 30 %, carol
/// 50 % used), started in `a/` and `b/`: their indexes in the rig, and the first one's id.
fn two_serves_on_alice(mock: &MockBackend, rig: &mut PoolRig) -> (usize, usize, String) {
    // Alice first for the first session; "fill" puts the later ones with it.
    for (name, percent) in [("alice", 10), ("bob", 30), ("carol", 50)] {
        mock.set_usage(rig.mock_id(name), used(percent));
    }
    std::fs::write(
        rig.store.path().join("config.toml"),
        "[pool]\nplacement = \"fill\"\n",
    )
    .unwrap();
    let a = rig.scratch().join("a");
    let b = rig.scratch().join("b");
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    let s1 = rig.spawn_ready(&a, &[]);
    let s2 = rig.spawn_ready(&b, &[]);
    assert_eq!(active_name(&rig.sessions[s1]), "alice");
    assert_eq!(active_name(&rig.sessions[s2]), "alice");
    let id1 = rig.sessions[s1].session_id(rig.store.path());
    (s1, s2, id1)
}

/// The first "must show": two `serve` and a dashboard on one store, all on alice
/// (`[pool] placement = "fill"`). Alice hits her limit in the first serve; the second serve
/// and the dashboard hear it from it (`usage_limit_hit` naming that session), move away at
/// once (they are idle), and their next turns, one over the serve's socket and one typed in
/// the dashboard's Codex pane, send nothing to alice.
#[test]
fn after_a_limit_in_one_session_the_others_send_nothing_to_that_account() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mock = runtime.block_on(MockBackend::start());
    let mut rig = PoolRig::new(&mock, &ACCOUNTS);
    let alice = rig.mock_id("alice").to_owned();
    let (s1, s2, id1) = two_serves_on_alice(&mock, &mut rig);
    let (a, b) = (rig.scratch().join("a"), rig.scratch().join("b"));
    let t = dashboard(&rig);
    t.wait_for(WAIT, "Codex and the dashboard's panel on alice", |s| {
        ready(s) && panel(s).contains("proxy ready") && panel_active(s) == Some("alice")
    });
    let listing = sessions_until(&rig, "three sessions on alice, ready", |l| {
        all_ready(l, 3)
            && sessions_of(l)
                .iter()
                .all(|s| s["account"]["name"] == "alice")
    });
    assert_eq!(
        sessions_of(&listing)
            .iter()
            .filter(|s| s["kind"] == "dashboard")
            .count(),
        1,
        "{listing:#}"
    );

    // Alice's limit, met by a turn in the first serve.
    mock.set_mode(&alice, cs_tui_testkit::AccountMode::UsageLimit);
    let mark2 = rig.sessions[s2].mark();
    let started = Instant::now();
    runtime.block_on(async {
        let (mut client, thread) = client_with_thread(&rig.sessions[s1].listen, &a).await;
        turn_on_thread(&mut client, &thread, "first serve meets the limit").await;
    });
    let hit = rig.sessions[s2].wait_for_after(mark2, "alice's limit heard from S1", |e| {
        event_is(e, "usage_limit_hit") && e["account"]["name"] == "alice"
    });
    assert_eq!(hit.json.as_ref().unwrap()["session"], id1.as_str());
    let done = rig.sessions[s2].wait_for_after(mark2, "the second serve leaves alice", |e| {
        event_is(e, "switch_done")
    });
    let done = done.json.unwrap();
    assert_eq!(done["from"]["name"], "alice", "{done}");
    let s2_now = done["to"]["name"].as_str().unwrap().to_owned();
    assert_ne!(s2_now, "alice");
    assert_eq!(done["reason"]["kind"], "peer", "{done}");
    let screen = t.wait_for(WAIT, "the dashboard's panel off alice", |s| {
        panel_active(s).is_some_and(|name| name != "alice")
    });
    let d_now = panel_active(&screen).unwrap();
    let own = rig.sessions[s1].wait_for("S1's own limit", |e| {
        event_is(e, "usage_limit_hit") && e["session"].is_null()
    });
    eprintln!(
        "S1 printed its limit, S2 printed it {:?} later; the turn in S1 until D's panel moved: {:?}",
        hit.at.saturating_duration_since(own.at),
        started.elapsed()
    );

    // From here on, nothing goes to alice: a turn in the second serve, one typed in the
    // dashboard.
    let mark = mock.requests().len();
    let texts = runtime.block_on(async {
        let (mut client, thread) = client_with_thread(&rig.sessions[s2].listen, &b).await;
        run_turn(&mut client, &thread, "second serve after the limit").await;
        agent_texts(&client)
    });
    assert!(
        texts.contains(&format!(
            "Served by {s2_now}: you said \"second serve after the limit\""
        )),
        "{texts:?}"
    );
    prompt(&t, "dashboard after the limit");
    t.wait_for(WAIT, "the dashboard's reply", |s| {
        s.contains(&format!(
            "Served by {d_now}: you said \"dashboard after the limit\""
        ))
    });
    let to_alice = model_requests_on(&mock, mark, &alice);
    assert!(
        to_alice.is_empty(),
        "requests to alice after the others heard of her limit: {:#?}",
        to_alice
            .iter()
            .map(|r| (&r.path, r.status, r.user_input_texts()))
            .collect::<Vec<_>>()
    );
    for text in ["second serve after the limit", "dashboard after the limit"] {
        let requests = mock.user_turn_requests(text);
        assert!(!requests.is_empty(), "no request carried {text:?}");
        assert!(
            requests
                .iter()
                .all(|r| r.account_header.as_deref() != Some(alice.as_str())),
            "{text:?}"
        );
    }
}

/// The hold path: the second serve has a turn running on alice (held at the mock's gate, no
/// timer) when the first serve meets alice's limit. It defers its switch to the turn's end
/// (`switch_deferred`), and a turn asked for meanwhile by another client is held by the
/// guard instead of going to alice; when the running turn ends, the switch happens and the
/// held turn goes to the new account.
#[test]
fn a_turn_asked_for_while_a_peer_limit_waits_is_held_then_sent_to_the_new_account() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mock = runtime.block_on(MockBackend::start());
    let mut rig = PoolRig::new(&mock, &ACCOUNTS);
    let alice = rig.mock_id("alice").to_owned();
    let (s1, s2, id1) = two_serves_on_alice(&mock, &mut rig);
    let (a, b) = (rig.scratch().join("a"), rig.scratch().join("b"));
    let (s1_listen, s2_listen) = (
        rig.sessions[s1].listen.clone(),
        rig.sessions[s2].listen.clone(),
    );

    // The second serve: one client's turn waits at alice's gate; another client is ready
    // with its own thread.
    mock.gate(&alice);
    let (mut running, running_thread, mut second, second_thread) = runtime.block_on(async {
        let (mut running, running_thread) = client_with_thread(&s2_listen, &b).await;
        let (second, second_thread) = client_with_thread(&s2_listen, &b).await;
        running
            .request(
                "turn/start",
                json!({"threadId": running_thread,
                    "input": [{"type": "text", "text": "running on alice"}]}),
            )
            .await
            .expect("turn/start");
        mock.wait_for_gated(&alice, 1, WAIT).await;
        (running, running_thread, second, second_thread)
    });
    rig.sessions[s2].wait_for("the running turn", |e| {
        event_is(e, "turns_running") && e["running"] == 1
    });

    // Alice's limit, met by a turn in the first serve (a limited account refuses at once,
    // gate or not). Its end (a hidden re-run on another account) is awaited later: the
    // second serve's hold lasts 10 s at most when no switch follows it (the running turn
    // keeps it deferred), so the held turn is asked for as soon as the deferral shows.
    let (mut first, first_thread) =
        runtime.block_on(async { client_with_thread(&s1_listen, &a).await });
    mock.set_mode(&alice, cs_tui_testkit::AccountMode::UsageLimit);
    let mark2 = rig.sessions[s2].mark();
    runtime.block_on(async {
        first
            .request(
                "turn/start",
                json!({"threadId": first_thread,
                    "input": [{"type": "text", "text": "first serve meets the limit"}]}),
            )
            .await
            .expect("turn/start");
    });
    let deferred = rig.sessions[s2].wait_for_after(mark2, "the switch deferred", |e| {
        event_is(e, "switch_deferred")
    });

    // Another client asks for a turn: the guard holds it (the session says so with a
    // `turns_held` event), and nothing of it reaches the backend.
    let held_text = "asked for while the switch waits";
    let held_id = "held-turn";
    runtime.block_on(async {
        second
            .send_json(&json!({"id": held_id, "method": "turn/start", "params": {
                "threadId": second_thread,
                "input": [{"type": "text", "text": held_text}]}}))
            .await;
    });
    let hit = rig.sessions[s2].wait_for_after(mark2, "alice's limit heard from S1", |e| {
        event_is(e, "usage_limit_hit") && e["account"]["name"] == "alice"
    });
    assert_eq!(hit.json.as_ref().unwrap()["session"], id1.as_str());
    let deferred = deferred.json.unwrap();
    assert_eq!(deferred["reason"]["kind"], "peer", "{deferred}");
    assert_eq!(deferred["reason"]["session"], id1.as_str(), "{deferred}");
    assert!(
        switch_events(&rig.sessions[s2])
            .iter()
            .all(|e| e["event"] != "switch_started"),
        "no switch during the running turn"
    );
    let held = rig.sessions[s2].wait_for_after(mark2, "the guard holding the second turn", |e| {
        event_is(e, "turns_held") && e["held"] == 1
    });
    let mark_held = rig.sessions[s2].mark();
    assert!(held.json.unwrap()["at"].is_string());
    assert!(mock.user_turn_requests(held_text).is_empty());

    // The running turn ends (alice refuses it now); the switch follows and the held turn
    // goes to the new account.
    mock.open(&alice);
    let done =
        rig.sessions[s2].wait_for_after(mark2, "the switch done", |e| event_is(e, "switch_done"));
    // The switch's end lets the held turn go: the session says so.
    rig.sessions[s2].wait_for_after(mark_held, "the held turn released", |e| {
        event_is(e, "turns_held") && e["held"] == 0
    });
    let done = done.json.unwrap();
    assert_eq!(done["from"]["name"], "alice", "{done}");
    let now = done["to"]["name"].as_str().unwrap().to_owned();
    assert_ne!(now, "alice");
    let new_id = rig.mock_id(&now).to_owned();
    runtime.block_on(async {
        let started = second
            .wait_for(WAIT, "the held turn's answer", |m| m["id"] == held_id)
            .await;
        assert!(started["result"]["turn"]["id"].is_string(), "{started}");
        second
            .wait_for(WAIT, "the held turn's end", |m| {
                m["method"] == "turn/completed" && m["params"]["threadId"] == second_thread
            })
            .await;
        running
            .wait_for(WAIT, "the running turn's end", |m| {
                m["method"] == "turn/completed" && m["params"]["threadId"] == running_thread
            })
            .await;
        first
            .wait_for(WAIT, "the first serve's turn's end", |m| {
                m["method"] == "turn/completed" && m["params"]["threadId"] == first_thread
            })
            .await;
    });
    let requests = mock.user_turn_requests(held_text);
    assert!(!requests.is_empty(), "the held turn was sent");
    assert!(
        requests
            .iter()
            .all(|r| r.account_header.as_deref() == Some(new_id.as_str())),
        "the held turn went to {now} only: {:?}",
        requests
            .iter()
            .map(|r| (&r.account_header, r.status))
            .collect::<Vec<_>>()
    );
    assert!(
        agent_texts(&second).contains(&format!("Served by {now}: you said \"{held_text}\"")),
        "{:?}",
        agent_texts(&second)
    );
}

/// Placement spreads two new sessions (default `spread`): alice at 90 % headroom with one
/// session scores 45, carol at 60 % with none 60, bob at 30 % 30, so the second goes to
/// carol. `sessions --json` shows both with their fields; `cs-tui switch bob` run from below
/// the second's directory moves only that one.
#[test]
fn two_new_sessions_spread_over_two_accounts_and_switch_picks_the_session_by_cwd() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mock = runtime.block_on(MockBackend::start());
    let mut rig = PoolRig::new(&mock, &ACCOUNTS);
    for (name, percent) in [("alice", 10), ("bob", 70), ("carol", 40)] {
        mock.set_usage(rig.mock_id(name), used(percent));
    }
    let a = rig.scratch().join("a");
    let b = rig.scratch().join("b");
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(b.join("sub")).unwrap();
    let before = chrono::Utc::now();
    let s1 = rig.spawn_ready(&a, &[]);
    let s2 = rig.spawn_ready(&b, &[]);
    assert_eq!(active_name(&rig.sessions[s1]), "alice");
    assert_eq!(active_name(&rig.sessions[s2]), "carol");
    let (pid1, pid2) = (rig.sessions[s1].pid(), rig.sessions[s2].pid());

    let listing = sessions_until(&rig, "both sessions ready", |l| all_ready(l, 2));
    for (pid, cwd, account, session) in [
        (pid1, &a, "alice", &rig.sessions[s1]),
        (pid2, &b, "carol", &rig.sessions[s2]),
    ] {
        let s = listed(&listing, pid);
        assert_eq!(s["account"]["name"], account, "{listing:#}");
        assert_eq!(s["kind"], "serve", "{listing:#}");
        assert_eq!(Path::new(s["cwd"].as_str().unwrap()), cwd, "{listing:#}");
        assert_eq!(s["clients"], 0, "{listing:#}");
        assert_eq!(s["turns_running"], 0, "{listing:#}");
        assert_eq!(s["listen"], session.listen.as_str(), "{listing:#}");
        assert!(s["switching_to"].is_null(), "{listing:#}");
        assert!(
            s["id"].as_str().unwrap().starts_with(&format!("{pid}-")),
            "{listing:#}"
        );
        let started: chrono::DateTime<chrono::Utc> =
            s["started_at"].as_str().unwrap().parse().unwrap();
        assert!(
            started >= before - chrono::Duration::seconds(1) && started <= chrono::Utc::now(),
            "{listing:#}"
        );
    }
    let started = |pid| -> chrono::DateTime<chrono::Utc> {
        listed(&listing, pid)["started_at"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert!(started(pid1) <= started(pid2), "{listing:#}");
    let pollers = sessions_of(&listing)
        .iter()
        .filter(|s| s["poller"] == true)
        .count();
    assert_eq!(pollers, 1, "exactly one poller: {listing:#}");
    assert_eq!(
        account_counts(&listing),
        [("alice", 1), ("bob", 0), ("carol", 1)],
        "{listing:#}"
    );

    // `switch bob` from b/sub: the session started in b/ is the one meant.
    let mark1 = rig.sessions[s1].mark();
    let out = rig.run(&b.join("sub"), &["switch", "bob"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("switching to bob"),
        "{}",
        stdout(&out)
    );
    let done = rig.sessions[s2].wait_for("switch done", |e| event_is(e, "switch_done"));
    let done = done.json.unwrap();
    assert_eq!(done["from"]["name"], "carol", "{done}");
    assert_eq!(done["to"]["name"], "bob", "{done}");
    let listing = sessions_until(&rig, "the second on bob", |l| {
        all_ready(l, 2) && listed(l, pid2)["account"]["name"] == "bob"
    });
    assert_eq!(listed(&listing, pid1)["account"]["name"], "alice");
    let moved = switch_events_since(&rig.sessions[s1], mark1);
    assert!(moved.is_empty(), "the first session stayed: {moved:#?}");

    // And from a/ itself, the first (the older one: not "the newest session" by chance).
    let mark2 = rig.sessions[s2].mark();
    let out = rig.run(&a, &["switch", "carol"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let done = rig.sessions[s1].wait_for("switch done", |e| event_is(e, "switch_done"));
    assert_eq!(done.json.unwrap()["to"]["name"], "carol");
    let listing = sessions_until(&rig, "the first on carol", |l| {
        all_ready(l, 2) && listed(l, pid1)["account"]["name"] == "carol"
    });
    assert_eq!(listed(&listing, pid2)["account"]["name"], "bob");
    let moved = switch_events_since(&rig.sessions[s2], mark2);
    assert!(moved.is_empty(), "the second session stayed: {moved:#?}");
}

/// A session killed with SIGKILL in the middle of a pool: the others' pool drops it at their
/// next sweep of the peers (every 5 s), and the next session's placement does not count it.
/// Alice at 100 % headroom, bob at 70 %: the first session takes alice, the second bob
/// (50 < 70). With the second killed, a third takes bob again (70 > 50); had the dead one
/// still counted, bob would score 35 and the third would go to alice.
#[test]
fn a_killed_session_leaves_the_pool_and_is_not_counted_by_the_next_placement() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mock = runtime.block_on(MockBackend::start());
    let mut rig = PoolRig::new(&mock, &ACCOUNTS);
    for (name, percent) in [("alice", 0), ("bob", 30), ("carol", 90)] {
        mock.set_usage(rig.mock_id(name), used(percent));
    }
    let dir = rig.scratch();
    let s1 = rig.spawn_ready(&dir, &[]);
    let s2 = rig.spawn_ready(&dir, &[]);
    assert_eq!(active_name(&rig.sessions[s1]), "alice");
    assert_eq!(active_name(&rig.sessions[s2]), "bob");
    rig.sessions[s1].wait_for("a pool of two", |e| {
        event_is(e, "pool_changed") && e["sessions"] == 2
    });

    let mark = rig.sessions[s1].mark();
    let killed_at = Instant::now();
    drop(rig.sessions.remove(s2));
    let shrunk = rig.sessions[s1].wait_for_after(mark, "the pool without the killed one", |e| {
        event_is(e, "pool_changed") && e["sessions"] == 1
    });
    let noticed = shrunk.at.duration_since(killed_at);
    eprintln!("the killed session left the pool after {noticed:?}");
    // One sweep is 5 s; how long it took is reported, not asserted (the bench measures it).
    let shares = shrunk.json.unwrap()["by_account"].clone();
    assert_eq!(
        shares.as_array().unwrap().len(),
        1,
        "only alice is in use: {shares:#}"
    );
    assert_eq!(shares[0]["account"]["name"], "alice", "{shares:#}");

    let s3 = rig.spawn_ready(&dir, &[]);
    assert_eq!(
        active_name(&rig.sessions[s3]),
        "bob",
        "the killed session is not counted"
    );
    let listing = sessions_until(&rig, "two sessions ready", |l| all_ready(l, 2));
    assert_eq!(
        account_counts(&listing),
        [("alice", 1), ("bob", 1), ("carol", 0)],
        "{listing:#}"
    );
}

/// A damaged `accounts.json` does not hide the running sessions: `cs-tui sessions` lists them
/// with the accounts they report, warns on stderr that the store is damaged, and exits 0.
#[test]
fn sessions_are_listed_when_the_store_is_damaged() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mock = runtime.block_on(MockBackend::start());
    let mut rig = PoolRig::new(&mock, &["alice", "bob"]);
    let cwd = rig.scratch().join("api");
    std::fs::create_dir_all(&cwd).unwrap();
    let s = rig.spawn_ready(&cwd, &[]);
    let on = active_name(&rig.sessions[s]);
    let pid = rig.sessions[s].pid();
    sessions_until(&rig, "the session ready", |l| all_ready(l, 1));

    let store_file = rig.store.path().join("accounts.json");
    let intact = std::fs::read(&store_file).unwrap();
    std::fs::write(&store_file, b"{\"version\": 1, \"accounts\": [").unwrap();

    let out = rig.run(rig.store.path(), &["sessions", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).starts_with("warning: "), "{}", stderr(&out));
    assert!(stderr(&out).contains("damaged"), "{}", stderr(&out));
    let listing: Value = serde_json::from_slice(&out.stdout).unwrap();
    let session = listed(&listing, pid);
    assert_eq!(session["account"]["name"], on.as_str(), "{listing:#}");
    assert_eq!(session["state"], "ready", "{listing:#}");
    assert_eq!(
        listing["accounts"],
        json!([{"id": session["account"]["id"], "name": on, "sessions": 1}]),
        "{listing:#}"
    );
    assert!(
        listing["store_error"]
            .as_str()
            .is_some_and(|e| e.contains("damaged")),
        "{listing:#}"
    );

    let text = rig.run(rig.store.path(), &["sessions"]);
    assert!(text.status.success(), "{}", stderr(&text));
    assert!(stderr(&text).contains("damaged"), "{}", stderr(&text));
    assert!(stdout(&text).starts_with("PID"), "{}", stdout(&text));
    assert!(
        stdout(&text).contains(&format!("1 session: {on} ×1")),
        "{}",
        stdout(&text)
    );
    // Nothing was written over the damaged file.
    assert_eq!(
        std::fs::read(&store_file).unwrap(),
        b"{\"version\": 1, \"accounts\": [",
    );
    std::fs::write(&store_file, intact).unwrap();
}

/// Waits (up to [`WAIT`]) until the store's `serve.log` has a line containing `needle`,
/// looking again each time `session` prints and at least every 50 ms; returns the line.
fn serve_log_line(rig: &PoolRig, session: &PoolSession, needle: &str) -> String {
    let log = rig.store.path().join("logs").join("serve.log");
    let deadline = Instant::now() + WAIT;
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.contains(needle)) {
            return line.to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {needle:?} in {}:\n{text}",
            log.display()
        );
        session.wait_printed(std::time::Duration::from_millis(50));
    }
}

/// A poller stopped with `kill -STOP` keeps the poller lock (the kernel drops it only with
/// its holder) and reads nothing more. The other session does not wait for it for good:
/// after two polling intervals without a read from the pool it reads every account on its
/// own timer, and says so in the log.
#[test]
fn a_stopped_poller_does_not_stall_the_other_sessions_usage_reads() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mock = runtime.block_on(MockBackend::start());
    let mut rig = PoolRig::new(&mock, &ACCOUNTS);
    std::fs::write(
        rig.store.path().join("config.toml"),
        "[polling]\nusage_interval_secs = 1\n",
    )
    .unwrap();
    let dir = rig.scratch();
    let s1 = rig.spawn_ready(&dir, &[]);
    let s2 = rig.spawn_ready(&dir, &[]);
    let (pid1, pid2) = (rig.sessions[s1].pid(), rig.sessions[s2].pid());
    let listing = sessions_until(&rig, "two sessions, the first the poller", |l| {
        all_ready(l, 2) && listed(l, pid1)["poller"] == true
    });
    assert_eq!(listed(&listing, pid2)["poller"], false, "{listing:#}");

    let poller = Pid::from_raw(i32::try_from(pid1).unwrap());
    kill(poller, Signal::SIGSTOP).unwrap();
    let stopped = std::time::Instant::now();
    // Every account is read again, three times over, while the poller is stopped: one read
    // per account may be the poller's (sent before it stopped and answered after); the
    // others can only be the second session's.
    runtime.block_on(async {
        for name in ACCOUNTS {
            let account = rig.mock_id(name).to_owned();
            let mut after = stopped;
            for n in 1..=3 {
                let read = mock
                    .wait_for_request(WAIT, &format!("read {n} of {name}'s usage"), |r| {
                        r.path.ends_with("/wham/usage")
                            && r.account_header.as_deref() == Some(account.as_str())
                            && r.at > after
                    })
                    .await;
                after = read.at;
            }
        }
    });
    let line = serve_log_line(
        &rig,
        &rig.sessions[s2],
        "no usage read from the pool's poller",
    );
    assert!(line.contains("WARN"), "{line}");
    kill(poller, Signal::SIGCONT).unwrap();
}
