//! `cs-tui accounts reset NAME` end to end: the real binary, the real `codex app-server` it
//! starts (or the running session's), and the mock backend's reset credits (issue 11, item 4).

use std::ffi::OsStr;

use crate::support::accounts::{BIN, Rig};
use cs_tui_testkit::Tmux;
use cs_tui_testkit::WAIT;
use cs_tui_testkit::mock_backend::AccountMode;
use cs_tui_testkit::{RequestRecord, ResetCredit, codex_bin};
use tokio::io::AsyncBufReadExt as _;

const CONSUME: &str = "/wham/rate-limit-reset-credits/consume";

/// A rig with alice stored (two reset credits) and `CS_TUI_CODEX_BIN` set.
async fn rig() -> Rig {
    let rig = Rig::new()
        .await
        .with_env("CS_TUI_CODEX_BIN", codex_bin().to_str().unwrap());
    let (alice, refresh) = rig.mock.add_account("alice");
    rig.mock.set_reset_credits(
        &alice.chatgpt_account_id,
        vec![
            ResetCredit::expiring_in_days("credit-late", 20),
            ResetCredit::expiring_in_days("credit-soon", 3),
        ],
    );
    rig.import("alice", &alice.auth_json(3600, &refresh)).await;
    rig
}

fn consumes(rig: &Rig) -> Vec<RequestRecord> {
    rig.mock
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with(CONSUME))
        .collect()
}

fn redeemed(rig: &Rig) -> Vec<String> {
    rig.mock
        .reset_credits("acct-alice")
        .into_iter()
        .filter(|c| c.redeemed)
        .map(|c| c.id)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_with_room_is_refused_and_nothing_is_redeemed() {
    let rig = rig().await;
    let refused = rig.run(&["accounts", "reset", "alice", "--yes"]).await;
    refused.fails();
    assert!(
        refused.stderr.contains("not exhausted") && refused.stderr.contains("5-hour 10 %"),
        "{refused:#?}"
    );
    assert!(refused.stderr.contains("hint:"), "{refused:#?}");

    // Exhausted, but stdin is no terminal and there is no --yes: refused too.
    rig.mock.set_mode("acct-alice", AccountMode::UsageLimit);
    let unasked = rig.run(&["accounts", "reset", "alice"]).await;
    unasked.fails();
    assert!(
        unasked.stderr.contains("without confirmation"),
        "{unasked:#?}"
    );

    assert!(consumes(&rig).is_empty(), "{:#?}", consumes(&rig));
    assert!(redeemed(&rig).is_empty());
    rig.assert_no_secret_leaked();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn it_asks_first_and_redeems_one_credit_through_an_app_server() {
    let rig = rig().await;
    rig.mock.set_mode("acct-alice", AccountMode::UsageLimit);
    let env: Vec<(String, String)> = vec![
        ("CS_TUI_HOME".into(), rig.store_dir().display().to_string()),
        (
            "CODEX_HOME".into(),
            rig.codex_home.path().display().to_string(),
        ),
        (
            "CODEX_REFRESH_TOKEN_URL_OVERRIDE".into(),
            rig.mock.refresh_url(),
        ),
        ("CS_TUI_CODEX_BIN".into(), codex_bin().display().to_string()),
    ];
    let env: Vec<(&str, &OsStr)> = env
        .iter()
        .map(|(k, v)| (k.as_str(), OsStr::new(v.as_str())))
        .collect();
    let script = "\"$0\" accounts reset alice; echo \"first exited $?\"; \
                  \"$0\" accounts reset alice; echo \"second exited $?\"; exec sleep 600";
    let t = Tmux::start(
        120,
        30,
        rig.codex_home.work_dir(),
        &env,
        OsStr::new("sh"),
        &[OsStr::new("-c"), OsStr::new(script), OsStr::new(BIN)],
    );
    let question = t.wait_for(WAIT, "the question", |s| s.contains("[y/N]"));
    assert!(
        question.contains("alice is exhausted (5-hour 100 %")
            && question.contains("Redeem one of its 2 reset credits, the first expires in 2d"),
        "{question}"
    );
    t.keys(&["n", "Enter"]);
    t.wait_for(WAIT, "the refusal", |s| {
        s.contains("Nothing redeemed.") && s.contains("first exited 1")
    });
    assert!(consumes(&rig).is_empty());

    t.wait_for(WAIT, "the second question", |s| {
        s.matches("[y/N]").count() == 2
    });
    t.keys(&["y", "Enter"]);
    let done = t.wait_for(WAIT, "the redemption", |s| s.contains("second exited"));
    assert!(
        done.contains("Reset alice's usage limits with a reset credit. 1 left.")
            && done.contains("second exited 0"),
        "{done}"
    );
    let consumed = consumes(&rig);
    assert_eq!(consumed.len(), 1, "{consumed:#?}");
    let key = consumed[0].body.as_ref().unwrap()["redeem_request_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(uuid_like(&key), "{key}");
    // Through Codex's app-server: the backend sees Codex redeem it.
    assert!(
        consumed[0].headers["user-agent"].starts_with("codex-tui/"),
        "{consumed:#?}"
    );
    assert_eq!(redeemed(&rig), vec!["credit-soon".to_owned()]);
    assert_eq!(
        rig.mock.usage("acct-alice").primary.unwrap().used_percent,
        0
    );
    rig.assert_no_secret_leaked();
}

fn uuid_like(key: &str) -> bool {
    key.len() == 36 && key.chars().filter(|c| *c == '-').count() == 4
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_answer_is_retried_with_the_same_key_and_spends_one_credit() {
    let rig = rig().await;
    rig.mock.set_mode("acct-alice", AccountMode::UsageLimit);
    rig.mock.lose_next_consume_answers(1);
    let done = rig.run(&["accounts", "reset", "alice", "--yes"]).await;
    done.ok();
    assert!(
        done.stdout.contains("Reset alice's usage limits"),
        "{done:#?}"
    );
    let consumed = consumes(&rig);
    assert_eq!(consumed.len(), 2, "{consumed:#?}");
    assert_eq!(consumed[0].status, 502);
    assert_eq!(consumed[1].status, 200);
    assert_eq!(
        consumed[0].body, consumed[1].body,
        "the retry reuses the key"
    );
    assert_eq!(redeemed(&rig), vec!["credit-soon".to_owned()]);

    // A new action is a new key: alice has room now, so it is refused before any redemption.
    rig.run(&["accounts", "reset", "alice", "--yes"])
        .await
        .fails();
    assert_eq!(consumes(&rig).len(), 2);
    rig.assert_no_secret_leaked();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_active_account_of_a_running_session_is_reset_through_that_session() {
    let rig = rig().await;
    let mut serve = rig.command(&["serve"]);
    serve.stdin(std::process::Stdio::null());
    let mut child = serve.spawn().unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let listening = tokio::time::timeout(WAIT, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.starts_with("listening ") {
                return line;
            }
        }
        panic!("serve ended without listening");
    })
    .await
    .expect("serve listening");
    assert!(listening.contains("ws://127.0.0.1:"), "{listening}");
    // The session announces each account's reset credits.
    let mut credits_event = async |available: u64| {
        tokio::time::timeout(WAIT, async {
            while let Some(line) = lines.next_line().await.unwrap() {
                // `token-file PATH` and other plain lines are not events.
                let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) else {
                    continue;
                };
                if event["event"] == "reset_credits" && event["credits"]["available"] == available {
                    return event;
                }
            }
            panic!("serve ended");
        })
        .await
        .unwrap_or_else(|_| panic!("no reset_credits event with {available} available"))
    };
    let before = credits_event(2).await;
    assert_eq!(before["account"]["name"], "alice", "{before}");
    assert!(
        before["credits"]["nearest_expires_at"].is_string(),
        "{before}"
    );

    rig.mock.set_mode("acct-alice", AccountMode::UsageLimit);
    let done = rig.run(&["accounts", "reset", "alice", "--yes"]).await;
    done.ok();
    assert!(
        done.stdout.contains("through the running session"),
        "{done:#?}"
    );
    assert_eq!(consumes(&rig).len(), 1);
    assert_eq!(redeemed(&rig), vec!["credit-soon".to_owned()]);
    // The session re-reads the usage after the reset.
    let refreshed = rig
        .mock
        .wait_for_request(WAIT, "a usage read after the reset", |r| {
            r.path.ends_with("/wham/usage") && r.at > consumes(&rig)[0].at
        })
        .await;
    assert_eq!(refreshed.status, 200);
    credits_event(1).await;

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id().unwrap() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
    rig.assert_no_secret_leaked();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_reset_credits_and_which_exhausted_account_could_be_reset() {
    let rig = rig().await;
    let json = rig.run(&["status", "--json"]).await.ok().json();
    let credits = &json["accounts"][0]["reset_credits"];
    assert_eq!(credits["available"], 2, "{json:#}");
    let soon = rig.mock.reset_credits("acct-alice")[1].expires_at.unwrap();
    let expected = chrono::DateTime::from_timestamp(soon, 0).unwrap();
    let shown: chrono::DateTime<chrono::Utc> = credits["nearest_expires_at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(shown, expected, "{json:#}");

    let table = rig.run(&["status"]).await.ok().stdout.clone();
    assert!(table.contains("RESET CREDITS"), "{table}");
    assert!(table.contains("2, first expires in 2d"), "{table}");
    assert!(!table.contains("accounts reset"), "alice has room: {table}");

    rig.mock.set_mode("acct-alice", AccountMode::UsageLimit);
    let table = rig.run(&["status"]).await.stdout.clone();
    assert!(
        table.contains(
            "alice exhausted and can be reset with a credit: `cs-tui accounts reset alice`"
        ),
        "{table}"
    );
    rig.assert_no_secret_leaked();
}
