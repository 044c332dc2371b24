//! Many sessions on one store (issue 14), as a user runs them: real `cs-tui serve` processes
//! with the real app-server, the mock backend, `cs-tui sessions` and `cs-tui switch
//! --session` from another terminal.

use std::path::Path;

use cs_tui_testkit::MockBackend;
use serde_json::Value;

use crate::support::pool::{PoolRig, PoolSession};

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
