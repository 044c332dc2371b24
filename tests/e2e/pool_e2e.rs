//! Many sessions on one store (issue 14), as a user runs them: real `cs-tui serve` processes
//! with the real app-server, the mock backend, `cs-tui sessions` and `cs-tui switch
//! --session` from another terminal.

use std::path::Path;

use cs_tui_testkit::MockBackend;
use serde_json::Value;

use crate::support::pool::{PoolRig, PoolSession, ProcStats, descendants};

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

fn switch_events(session: &PoolSession) -> Vec<Value> {
    session
        .events()
        .into_iter()
        .filter(|e| {
            e["event"]
                .as_str()
                .is_some_and(|e| e.starts_with("switch_"))
        })
        .collect()
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
    let mut pids: Vec<u64> = listing["sessions"]
        .as_array()
        .unwrap()
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
    for session in listing["sessions"].as_array().unwrap() {
        // Until the sessions answer `session_status` (issue 14, part A) they are listed as
        // `unknown_version`; then as `ready`, with their fields.
        let state = session["state"].as_str().unwrap();
        assert!(matches!(state, "ready" | "unknown_version"), "{listing:#}");
        if state == "ready" {
            let cwd = Path::new(session["cwd"].as_str().unwrap());
            assert!(cwd == api || cwd == web, "{listing:#}");
            assert_eq!(session["kind"], "serve");
        }
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
    let later: Vec<Value> = rig.sessions[s1].lines()[mark1..]
        .iter()
        .filter_map(|l| l.json.clone())
        .filter(|e| {
            e["event"]
                .as_str()
                .is_some_and(|e| e.starts_with("switch_"))
        })
        .collect();
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
    let pids: Vec<u64> = listing["sessions"]
        .as_array()
        .unwrap()
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
    use std::ffi::OsStr;
    use std::io::Write;

    use chrono::Utc;
    use cs_tui::account_id::AccountId;
    use cs_tui::proxy::events::{AccountRef, ConnectionState, PoolShare, ProxyEvent};
    use cs_tui_testkit::{CodexHome, Tmux, WAIT, codex_bin};

    let account = |name: &str| AccountRef {
        id: AccountId::new(format!("id-{name}")),
        name: name.to_owned(),
    };
    let mock = MockBackend::start().await;
    let (alice, refresh) = mock.add_account("alice");
    let home = CodexHome::offline(&mock.url());
    home.write_auth_json(&alice.auth_json(3600, &refresh));
    let store = tempfile::tempdir().unwrap();
    let events = store.path().join("events.jsonl");
    let emit = |list: &[ProxyEvent]| {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&events)
            .unwrap();
        for event in list {
            writeln!(file, "{}", serde_json::to_string(event).unwrap()).unwrap();
        }
    };
    let now = Utc::now();
    let quota = cs_tui::quota::RateLimitSnapshot::default();
    emit(&[
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
    let codex = codex_bin();
    let env: Vec<(&str, &OsStr)> = vec![
        ("CS_TUI_NO_PROXY", OsStr::new("1")),
        ("CS_TUI_DEV_EVENTS", events.as_os_str()),
        ("CS_TUI_HOME", store.path().as_os_str()),
        ("CS_TUI_CODEX_BIN", codex.as_os_str()),
        ("CODEX_HOME", home.path().as_os_str()),
    ];
    let t = Tmux::start(
        160,
        40,
        home.work_dir(),
        &env,
        OsStr::new(env!("CARGO_BIN_EXE_cs-tui")),
        &[],
    );
    let screen = t.wait_for(WAIT, "the panel on alice", |screen| {
        screen.contains("● alice") && screen.contains("carol")
    });
    assert!(
        !screen.contains("sessions"),
        "alone: no pool line\n{screen}"
    );

    emit(&[ProxyEvent::PoolChanged {
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
