//! Usage samples outlive the session: a `serve` session appends each account's numbers to
//! `<store>/usage.jsonl` (after what an earlier session kept there, skipping a torn line), and
//! a later process (`status --json`) measures the pool's burn on them for its forecast. The
//! real binary, the real app-server, the mock backend.

use crate::support::product::cs_tui_command;
use std::io::{BufRead, BufReader, Write as _};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use cs_tui_testkit::WAIT;
use cs_tui_testkit::{CodexHome, MockBackend};
use serde_json::Value;

struct Serve {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_serve(mut command: Command) -> Serve {
    let mut child = command
        .arg("serve")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Serve { child, lines }
}

fn import(store: &std::path::Path, home: &CodexHome, mock: &MockBackend, label: &str) {
    let (fake, refresh) = mock.add_account(label);
    let file = store.join(format!("{label}.json"));
    std::fs::write(&file, fake.auth_json(3600, &refresh).to_string()).unwrap();
    let out = cs_tui_command(store, home, mock)
        .args(["accounts", "import", "--name", label, "--file"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// The store's id of the account named `name`.
fn account_id(store: &std::path::Path, name: &str) -> String {
    let accounts: Value =
        serde_json::from_str(&std::fs::read_to_string(store.join("accounts.json")).unwrap())
            .unwrap();
    accounts["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == name)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The stored samples of `account`.
fn samples_of(path: &std::path::Path, account: &str) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|s| s["account"] == account)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn samples_outlive_the_session_and_feed_the_forecast() {
    let mock = MockBackend::start().await;
    let home = CodexHome::offline(&mock.url());
    let store = tempfile::tempdir().unwrap();
    import(store.path(), &home, &mock, "alice");
    import(store.path(), &home, &mock, "bob");
    let alice = account_id(store.path(), "alice");
    let path = store.path().join("usage.jsonl");

    // An earlier session saw alice at 0 % half an hour ago, and a crash tore its last line.
    let earlier = unix_now() - 1800;
    let mut file = std::fs::OpenOptions::new()
        .create_new(true)
        .append(true)
        .mode(0o600)
        .open(&path)
        .unwrap();
    writeln!(
        file,
        r#"{{"at":{earlier},"account":"{alice}","five_hour":0.0,"weekly":19.0}}"#
    )
    .unwrap();
    write!(file, r#"{{"at":{earlier},"account":"#).unwrap();
    writeln!(file).unwrap();
    drop(file);

    // This session reads alice at 10 % (the mock's default) and keeps it.
    let serve = spawn_serve(cs_tui_command(store.path(), &home, &mock));
    let deadline = Instant::now() + WAIT;
    while samples_of(&path, &alice).len() < 2 {
        assert!(
            Instant::now() < deadline,
            "the session kept no sample of alice"
        );
        // Serve's lines are drained so it never blocks on a full pipe.
        let _ = serve.lines.recv_timeout(Duration::from_millis(100));
    }
    drop(serve);
    let kept = samples_of(&path, &alice);
    assert_eq!(kept.len(), 2, "{kept:?}");
    assert_eq!(
        kept[0]["five_hour"], 0.0,
        "the earlier session's sample stays"
    );
    assert_eq!(kept[1]["five_hour"], 10.0);
    assert_eq!(kept[1]["weekly"], 20.0);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    // A later process measures the pool's burn on them: 10 points in about half an hour.
    let out = cs_tui_command(store.path(), &home, &mock)
        .args(["status", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    let forecast = &status["forecast"];
    assert!(forecast["samples"].as_u64().unwrap() >= 2, "{forecast:#}");
    let burn = forecast["five_hour_burn_per_hour"].as_f64().unwrap();
    assert!((15.0..=20.01).contains(&burn), "{forecast:#}");
    assert_ne!(forecast["state"], "idle", "{forecast:#}");
    assert!(
        forecast["text"].as_str().unwrap().starts_with("pool "),
        "{forecast:#}"
    );
    assert!(forecast["horizon"].is_string(), "{forecast:#}");

    // The backend cannot be read now: each account's newest kept reading stands in.
    for _ in 0..2 {
        mock.push_usage_fault(cs_tui_testkit::mock_backend::UsageFault::Json403);
    }
    let out = cs_tui_command(store.path(), &home, &mock)
        .args(["status", "--json"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "a failed read is a failure");
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    let alice_now = status["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "alice")
        .unwrap();
    assert_eq!(alice_now["state"], "error", "{alice_now:#}");
    let known = &alice_now["last_known"];
    assert_eq!(known["five_hour_used_percent"], 10.0, "{known:#}");
    assert_eq!(known["weekly_used_percent"], 20.0, "{known:#}");
    let at = chrono::DateTime::parse_from_rfc3339(known["at"].as_str().unwrap()).unwrap();
    assert_eq!(at.timestamp(), kept[1]["at"].as_i64().unwrap());
}

/// The dashboard starts its burn-down and its runway from the samples earlier sessions kept:
/// the real `cs-tui` in tmux with Codex in its pane.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_starts_from_the_samples_earlier_sessions_kept() {
    use crate::support::product::{panel, quit, start_with_store};
    let p = start_with_store(&["alice", "bob"], |mock, _, store| {
        let usage = |five: u8, week: u8| cs_tui_testkit::Usage {
            primary: Some(cs_tui_testkit::UsageWindow::five_hour(five)),
            secondary: Some(cs_tui_testkit::UsageWindow::weekly(week)),
            ..Default::default()
        };
        mock.set_usage("acct-alice", usage(46, 27));
        mock.set_usage("acct-bob", usage(80, 55));
        // Earlier sessions saw alice climb from 10 % to 42 % over the last 45 minutes.
        let alice = account_id(store, "alice");
        let now = unix_now();
        let lines: String = (0..9)
            .map(|i| {
                format!(
                    "{{\"at\":{},\"account\":\"{alice}\",\"five_hour\":{}.0,\"weekly\":27.0}}\n",
                    now - (45 - 5 * i) * 60,
                    10 + 4 * i
                )
            })
            .collect();
        let mut file = std::fs::OpenOptions::new()
            .create_new(true)
            .append(true)
            .mode(0o600)
            .open(store.join("usage.jsonl"))
            .unwrap();
        file.write_all(lines.as_bytes()).unwrap();
    })
    .await;
    let t = &p.tmux;
    let screen = t.wait_for(WAIT, "the runway from the stored samples", |s| {
        let panel = panel(s);
        // Nine stored samples and this session's first: the 5-hour burn-down has ten.
        let sparks = panel
            .lines()
            .find_map(|l| l.trim_start().strip_prefix("5h "))
            .map_or(0, |rest| {
                rest.chars().filter(|c| ('▁'..='█').contains(c)).count()
            });
        sparks >= 10 && panel.contains("pool dry")
    });
    // 0.8 points a minute: alice's 54 % last until 67 minutes from now, then bob's 20 %.
    // (Near midnight the times carry a weekday and the line wraps.)
    assert!(
        runway_text(&panel(&screen)).ends_with(", then alice resets"),
        "{screen}"
    );
    quit(t);
}

/// The panel's runway line, its wrapped lines joined.
fn runway_text(panel: &str) -> String {
    let mut lines = panel
        .lines()
        .map(|l| l.trim_end().trim_end_matches('│').trim())
        .skip_while(|l| !l.starts_with("pool"));
    let first = lines.next().unwrap_or_default().to_owned();
    lines
        .take_while(|l| l.starts_with(|c: char| c.is_alphanumeric()))
        .fold(first, |text, more| format!("{text} {more}"))
}
