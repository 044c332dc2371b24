//! The turn ledger and `cs-tui history`, as a user sees them: the real cs-tui in tmux with the
//! real Codex TUI, the real app-server and the mock backend, two accounts, a usage limit that
//! moves the session from alice to bob. Every turn gets a ledger line naming the account that
//! served it and the tokens the backend reported for it; `history --csv` adds up to what the
//! mock's request log says it answered. The TUI's title generation (its own turn on a temporary
//! thread after the first prompt) is recorded too, marked `"purpose": "title"`, and counted
//! apart from the user's turns.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::time::Instant;

use crate::support::cs_tui_under_sh;
use crate::support::product::{Product, cs_tui, panel, prompt, ready, start_with};
use cs_tui_testkit::WAIT;
use cs_tui_testkit::codex_bin;
use cs_tui_testkit::mock_backend::{AccountMode, TokenUsage};
use serde_json::Value;

fn ask_and_expect(p: &Product, question: &str, who: &str) {
    prompt(&p.tmux, question);
    p.tmux
        .wait_for(WAIT, &format!("{who}'s reply to {question:?}"), |s| {
            s.contains(&format!("Served by {who}: you said \"{question}\""))
        });
}

fn ledger_lines(p: &Product) -> Vec<Value> {
    std::fs::read_to_string(p.store.path().join("ledger.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("a ledger line is JSON"))
        .collect()
}

/// (input, cached, output, requests) the mock reported per account name (`acct-NAME`).
fn mock_totals(p: &Product) -> BTreeMap<String, (u64, u64, u64, u64)> {
    mock_totals_where(p, |_| true)
}

/// [`mock_totals`] of the requests `keep` keeps.
fn mock_totals_where(
    p: &Product,
    keep: impl Fn(&cs_tui_testkit::mock_backend::RequestRecord) -> bool,
) -> BTreeMap<String, (u64, u64, u64, u64)> {
    let mut totals = BTreeMap::new();
    for r in p.mock.requests().into_iter().filter(|r| keep(r)) {
        let (Some(usage), Some(account)) = (r.token_usage, r.account_header.as_deref()) else {
            continue;
        };
        let name = account.trim_start_matches("acct-").to_owned();
        let t: &mut (u64, u64, u64, u64) = totals.entry(name).or_default();
        t.0 += usage.input;
        t.1 += usage.cached;
        t.2 += usage.output;
        t.3 += 1;
    }
    totals
}

fn ledger_totals(lines: &[Value]) -> BTreeMap<String, (u64, u64, u64)> {
    let mut totals = BTreeMap::new();
    for l in lines {
        if ["input_tokens", "cached_input_tokens", "output_tokens"]
            .iter()
            .all(|k| l[k] == 0)
        {
            // A turn the backend refused (at the limit) has no request with usage.
            continue;
        }
        let name = l["account"]["name"].as_str().unwrap().to_owned();
        let t: &mut (u64, u64, u64) = totals.entry(name).or_default();
        t.0 += l["input_tokens"].as_u64().unwrap();
        t.1 += l["cached_input_tokens"].as_u64().unwrap();
        t.2 += l["output_tokens"].as_u64().unwrap();
    }
    totals
}

/// Polls `what` until it holds or [`WAIT`] has passed.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ledger_line_per_turn_names_the_serving_account_after_a_switch_and_history_csv_adds_up() {
    let p = start_with(&["alice", "bob"], |mock| mock.vary_token_usage()).await;
    p.tmux.wait_for(WAIT, "Codex and the panel on alice", |s| {
        ready(s) && panel(s).contains("● alice") && panel(s).contains("proxy ready")
    });
    ask_and_expect(&p, "warm up", "alice");
    p.tmux.wait_for(WAIT, "the title Codex generated", |s| {
        s.contains("Chat with alice")
    });
    p.mock.set_mode("acct-alice", AccountMode::UsageLimit);
    ask_and_expect(&p, "the prompt that hits the limit", "bob");
    ask_and_expect(&p, "after the switch", "bob");

    // Every answered model request is in the ledger, on the account it went to.
    let mut lines = Vec::new();
    wait_until("the ledger to hold every answered request's tokens", || {
        lines = ledger_lines(&p);
        let want: BTreeMap<_, _> = mock_totals(&p)
            .into_iter()
            .map(|(k, (i, c, o, _))| (k, (i, c, o)))
            .collect();
        ledger_totals(&lines) == want
    });
    let by_prompt = |text: &str, account: &str| -> (Value, TokenUsage) {
        let request = p
            .mock
            .user_turn_requests(text)
            .into_iter()
            .find(|r| r.account_header.as_deref() == Some(account))
            .unwrap_or_else(|| panic!("{text:?} went to {account}"));
        let usage = request.token_usage.expect("answered with usage");
        let line = lines
            .iter()
            .find(|l| {
                l["input_tokens"].as_u64() == Some(usage.input)
                    && l["output_tokens"].as_u64() == Some(usage.output)
            })
            .unwrap_or_else(|| panic!("no ledger line with {usage:?}: {lines:#?}"))
            .clone();
        (line, usage)
    };
    let (warm, _) = by_prompt("warm up", "acct-alice");
    assert_eq!(warm["account"]["name"], "alice");
    assert_eq!(warm["rerun"], false);
    assert_eq!(warm["status"], "completed");
    let (rerun, usage) = by_prompt("the prompt that hits the limit", "acct-bob");
    assert_eq!(rerun["account"]["name"], "bob", "{rerun:#}");
    assert_eq!(rerun["rerun"], true, "{rerun:#}");
    assert_eq!(rerun["cached_input_tokens"].as_u64(), Some(usage.cached));
    let (after, _) = by_prompt("after the switch", "acct-bob");
    assert_eq!(after["account"]["name"], "bob");
    assert_eq!(after["rerun"], false);
    // The turn that hit the limit is there too, on alice, failed, with no tokens.
    assert!(
        lines.iter().any(|l| l["account"]["name"] == "alice"
            && l["status"] == "failed"
            && l["input_tokens"] == 0),
        "{lines:#?}"
    );
    // The TUI's title generation spent quota and is recorded, marked: the title lines add up to
    // the mock's title requests, the user's lines to the rest, and a title turn runs on a
    // thread of its own.
    let of_purpose = |purpose: &str| -> Vec<Value> {
        lines
            .iter()
            .filter(|l| l["purpose"] == purpose)
            .cloned()
            .collect()
    };
    let (title_lines, user_lines) = (of_purpose("title"), of_purpose("user"));
    assert_eq!(
        title_lines.len() + user_lines.len(),
        lines.len(),
        "{lines:#?}"
    );
    let without_count = |m: BTreeMap<String, (u64, u64, u64, u64)>| -> BTreeMap<_, _> {
        m.into_iter()
            .map(|(k, (i, c, o, _))| (k, (i, c, o)))
            .collect()
    };
    let title_want = without_count(mock_totals_where(&p, |r| r.is_title_request()));
    assert!(
        title_want.contains_key("alice"),
        "the mock saw alice's title request"
    );
    assert_eq!(ledger_totals(&title_lines), title_want, "{lines:#?}");
    assert_eq!(
        ledger_totals(&user_lines),
        without_count(mock_totals_where(&p, |r| !r.is_title_request())),
        "{lines:#?}"
    );
    for line in [&warm, &rerun, &after] {
        assert_eq!(line["purpose"], "user", "{line:#}");
    }
    let user_threads: BTreeSet<&str> = user_lines
        .iter()
        .filter_map(|l| l["thread_id"].as_str())
        .collect();
    assert!(
        title_lines
            .iter()
            .all(|l| !user_threads.contains(l["thread_id"].as_str().unwrap())),
        "{lines:#?}"
    );
    let count = |lines: &[Value], name: &str| -> u64 {
        lines
            .iter()
            .filter(|l| l["account"]["name"] == name)
            .count() as u64
    };

    for l in &lines {
        assert!(l["session"].as_str().is_some_and(|s| !s.is_empty()));
        assert!(l["model"].as_str().is_some_and(|m| !m.is_empty()), "{l:#}");
        assert!(l["duration_ms"].as_u64().is_some());
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(p.store.path().join("ledger.jsonl"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    // `history --csv`: the totals rows match the mock's request log.
    let csv = cs_tui(p.store.path(), &p.home, &p.mock, &["history", "--csv"]);
    let mut reader = csv::Reader::from_reader(csv.as_bytes());
    let header = reader.headers().unwrap().clone();
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    let mut csv_totals = BTreeMap::new();
    let mut switches = Vec::new();
    for row in reader.records() {
        let row = row.unwrap();
        match &row[col("kind")] {
            "total" => {
                let n = |c: &str| row[col(c)].parse::<u64>().unwrap();
                csv_totals.insert(
                    row[col("account")].to_owned(),
                    (
                        n("input_tokens"),
                        n("cached_input_tokens"),
                        n("output_tokens"),
                        n("reruns"),
                        n("switches_away"),
                        n("turns"),
                        n("title_turns"),
                    ),
                );
            }
            "switch" => switches.push((
                row[col("account")].to_owned(),
                row[col("to_account")].to_owned(),
            )),
            _ => {}
        }
    }
    let mock = mock_totals(&p);
    assert_eq!(csv_totals["alice"].0, mock["alice"].0);
    assert_eq!(csv_totals["alice"].1, mock["alice"].1);
    assert_eq!(csv_totals["alice"].2, mock["alice"].2);
    assert_eq!(csv_totals["bob"].0, mock["bob"].0);
    assert_eq!(csv_totals["bob"].1, mock["bob"].1);
    assert_eq!(csv_totals["bob"].2, mock["bob"].2);
    assert_eq!(csv_totals["bob"].3, 1, "one re-run, on bob");
    assert_eq!(csv_totals["alice"].4, 1, "one switch away from alice");
    assert_eq!(switches, vec![("alice".to_owned(), "bob".to_owned())]);
    for name in ["alice", "bob"] {
        assert_eq!(
            (csv_totals[name].5, csv_totals[name].6),
            (count(&user_lines, name), count(&title_lines, name)),
            "{name}: user turns in `turns`, the TUI's title turns in `title_turns`"
        );
    }
    assert!(
        csv_totals["alice"].6 >= 1,
        "alice served the title: {lines:#?}"
    );
    // Each turn row carries its purpose, in the last-but-one column.
    let mut reader = csv::Reader::from_reader(csv.as_bytes());
    let purposes: Vec<String> = reader
        .records()
        .map(|r| r.unwrap())
        .filter(|r| &r[0] == "turn")
        .map(|r| r[col("purpose")].to_owned())
        .collect();
    assert_eq!(col("purpose"), header.len() - 2);
    assert_eq!(
        purposes,
        lines
            .iter()
            .map(|l| l["purpose"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    );

    // A broken line is skipped with a count; the command still works.
    std::fs::OpenOptions::new()
        .append(true)
        .open(p.store.path().join("ledger.jsonl"))
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"{not json\n"))
        .unwrap();
    let out = crate::support::product::cs_tui_command(p.store.path(), &p.home, &p.mock)
        .args(["history", "--json", "--account", "bob"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["skipped_lines"], 1);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("skipped 1 line"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let turns = json["turns"].as_array().unwrap();
    assert!(turns.iter().all(|t| t["account"]["name"] == "bob"));
    assert_eq!(json["totals"].as_array().unwrap().len(), 1, "{json:#}");
    assert_eq!(
        json["totals"][0]["input_tokens"].as_u64(),
        Some(mock["bob"].0)
    );
    assert_eq!(
        json["totals"][0]["turns"].as_u64(),
        Some(count(&user_lines, "bob"))
    );
    assert_eq!(
        json["totals"][0]["title_turns"].as_u64(),
        Some(count(&title_lines, "bob"))
    );

    // A second session on the store starts its panel's switch list with the first one's
    // switch, from the history file.
    let codex = codex_bin();
    let refresh_url = p.mock.refresh_url();
    let env: Vec<(&str, &OsStr)> = vec![
        ("CS_TUI_HOME", p.store.path().as_os_str()),
        ("CS_TUI_CODEX_BIN", codex.as_os_str()),
        ("CODEX_HOME", p.home.path().as_os_str()),
        ("CODEX_REFRESH_TOKEN_URL_OVERRIDE", OsStr::new(&refresh_url)),
    ];
    let script = "\"$0\"; echo \"cs-tui exited $?\"; printf 'shell prompt> '; exec sleep 600";
    let second = cs_tui_under_sh(160, 48, p.home.work_dir(), &env, script);
    second.wait_for(
        WAIT,
        "the second session's panel with the first's switch",
        |s| {
            let panel = panel(s);
            panel.contains("proxy ready") && panel.contains("alice → bob")
        },
    );
}

/// A `turn/start` that overrides the model (as Codex's `/model` does) is recorded on that
/// model, and so are the turns after it; the turn before keeps the thread's first model. A
/// real `cs-tui serve`, the real app-server behind it, a raw client on its socket.
#[test]
fn a_turn_that_overrides_the_model_is_recorded_on_it() {
    use crate::support::pool::PoolRig;
    use cs_tui_testkit::turns::{run_turn, start_thread};
    use cs_tui_testkit::{MockBackend, WsClient};
    use serde_json::json;

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mock = runtime.block_on(MockBackend::start());
    let mut rig = PoolRig::new(&mock, &["alice"]);
    let cwd = rig.scratch().join("work");
    std::fs::create_dir_all(&cwd).unwrap();
    let s = rig.spawn_ready(&cwd, &[]);
    let listen = rig.sessions[s].listen.clone();
    let ledger = rig.store.path().join("ledger.jsonl");
    let models = || -> Vec<String> {
        std::fs::read_to_string(&ledger)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).expect("a ledger line is JSON"))
            .map(|l| l["model"].as_str().unwrap_or("(none)").to_owned())
            .collect()
    };
    let first = runtime.block_on(async {
        let mut client = WsClient::connect_unix(&listen).await;
        client.initialize(json!("initialize")).await;
        let thread = start_thread(&mut client, &cwd).await;
        run_turn(&mut client, &thread, "before").await;
        let first = client
            .received_with_method("thread/started")
            .first()
            .and_then(|m| m["params"]["thread"]["model"].as_str())
            .expect("thread/started names the model")
            .to_owned();
        let started = client
            .request(
                "turn/start",
                json!({
                    "threadId": thread,
                    "input": [{"type": "text", "text": "override"}],
                    "model": "gpt-5.1-codex-mini",
                }),
            )
            .await
            .expect("turn/start");
        let turn = started["turn"]["id"].as_str().unwrap().to_owned();
        client
            .wait_for(WAIT, "the overriding turn's turn/completed", |m| {
                m["method"] == "turn/completed" && m["params"]["turn"]["id"] == turn.as_str()
            })
            .await;
        run_turn(&mut client, &thread, "after").await;
        first
    });
    assert_ne!(first, "gpt-5.1-codex-mini");
    // The backend was asked with each model, in that order.
    let asked: Vec<String> = mock
        .requests()
        .into_iter()
        .filter(|r| r.is_model_request())
        .filter_map(|r| r.body?.get("model")?.as_str().map(str::to_owned))
        .collect();
    let want = [first.as_str(), "gpt-5.1-codex-mini", "gpt-5.1-codex-mini"];
    assert_eq!(asked, want);
    wait_until("three ledger lines", || models().len() == 3);
    assert_eq!(models(), want);
}
