//! Token refresh through the real binary: rotation, auth.json sharing, retries, a 401 from the
//! backend, and a rejected refresh token.

use std::collections::HashSet;
use std::time::Duration;

use crate::support::accounts::Rig;
use cs_tui_testkit::AccountMode;
use cs_tui_testkit::WAIT;
use cs_tui_testkit::mock_backend::{RefreshFault, RequestRecord};
use serde_json::Value;

fn refreshes(records: &[RequestRecord]) -> Vec<&RequestRecord> {
    records
        .iter()
        .filter(|r| r.path == "/oauth/token")
        .collect()
}

/// Once a refresh token was exchanged (HTTP 200), no later request may present it.
#[track_caller]
fn assert_no_refresh_token_reused(records: &[RequestRecord]) {
    let mut spent = HashSet::new();
    for record in refreshes(records) {
        let token = record.refresh_token.clone().expect("a refresh token");
        assert!(
            !spent.contains(&token),
            "a spent refresh token was sent again: {:#?}",
            refreshes(records)
                .iter()
                .map(|r| (&r.refresh_token, r.status))
                .collect::<Vec<_>>()
        );
        if record.status == 200 {
            spent.insert(token);
        }
    }
}

fn codex_auth(rig: &Rig) -> Value {
    serde_json::from_slice(&std::fs::read(rig.codex_auth_path()).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn refresh_rotates_tokens_and_keeps_codex_auth_json_in_step() {
    let rig = Rig::new().await;
    let (alice, rt0) = rig.mock.add_account("alice");
    // Codex's own login for alice, with an access token that has expired.
    rig.write_codex_auth(&alice.auth_json(-60, &rt0));
    rig.run(&["accounts", "import"]).await.ok();

    // `status` finds the token expired, refreshes it, then reads the usage.
    let status = rig.run(&["status", "--json"]).await.ok().json();
    assert_eq!(status["accounts"][0]["state"], "ok", "{status:#}");
    let rt1 = rig.stored_refresh_token("alice");
    assert_ne!(rt1, rt0);
    // auth.json holds the same account, so it gets the new tokens too (or plain codex would
    // be left with a dead refresh token).
    let auth = codex_auth(&rig);
    assert_eq!(auth["tokens"]["refresh_token"], rt1.as_str());
    assert_eq!(auth["tokens"]["account_id"], "acct-alice");
    assert_eq!(
        crate::support::accounts::mode(&rig.codex_auth_path()),
        0o600
    );

    // An explicit refresh, through two server errors (retried with backoff).
    rig.mock.fail_next_refreshes(2);
    let refreshed = rig.run(&["accounts", "refresh", "alice"]).await;
    assert!(
        refreshed.ok().stdout.contains("alice: refreshed"),
        "{refreshed:#?}"
    );
    let rt2 = rig.stored_refresh_token("alice");
    assert_ne!(rt2, rt1);
    assert_eq!(codex_auth(&rig)["tokens"]["refresh_token"], rt2.as_str());

    // A fresh token is not refreshed again.
    rig.run(&["status"]).await.ok();
    rig.run(&["accounts", "list"]).await.ok();

    let log = rig.mock.requests();
    let sent: Vec<(String, u16)> = refreshes(&log)
        .iter()
        .map(|r| (r.refresh_token.clone().unwrap(), r.status))
        .collect();
    assert_eq!(
        sent,
        vec![
            (rt0, 200),
            (rt1.clone(), 500),
            (rt1.clone(), 500),
            (rt1, 200)
        ]
    );
    assert_no_refresh_token_reused(&log);
    // Usage calls carried the newest access token each time.
    let usage: Vec<&RequestRecord> = log
        .iter()
        .filter(|r| r.path.ends_with("/wham/usage"))
        .collect();
    assert!(usage.iter().all(|r| r.status == 200), "{usage:#?}");
    assert!(
        usage
            .iter()
            .all(|r| r.account_header.as_deref() == Some("acct-alice"))
    );
    rig.assert_no_secret_leaked();
}

#[tokio::test(flavor = "multi_thread")]
async fn plain_codex_refreshing_auth_json_is_adopted_not_fought() {
    let rig = Rig::new().await;
    let (alice, rt0) = rig.mock.add_account("alice");
    rig.write_codex_auth(&alice.auth_json(3600, &rt0));
    rig.run(&["accounts", "import"]).await.ok();

    // Plain codex refreshes on its own: rt0 is spent, auth.json holds newer tokens.
    let codex_rt = rig.mock.issue_refresh_token(&alice.chatgpt_account_id);
    let mut newer = alice.auth_json(7200, &codex_rt);
    newer["tokens"]["access_token"] = alice.access_token(7200, 42).into();
    rig.write_codex_auth(&newer);

    rig.run(&["accounts", "refresh", "alice"]).await.ok();
    let log = rig.mock.requests();
    let sent: Vec<String> = refreshes(&log)
        .iter()
        .map(|r| r.refresh_token.clone().unwrap())
        .collect();
    assert_eq!(
        sent,
        vec![codex_rt],
        "cs-tui must use codex's newer token, never rt0"
    );
    assert_no_refresh_token_reused(&log);
    rig.assert_no_secret_leaked();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_401_from_the_backend_leads_to_one_refresh_and_one_retry() {
    let rig = Rig::new().await;
    let (alice, rt) = rig.mock.add_account("alice");
    let (carol, carol_rt) = rig.mock.add_account("carol");
    // auth.json holds another account: it must not be touched.
    rig.write_codex_auth(&carol.auth_json(3600, &carol_rt));
    let before = std::fs::read(rig.codex_auth_path()).unwrap();
    rig.import_file("alice.json", &alice.auth_json(3600, &rt))
        .await;

    rig.mock
        .set_mode(&alice.chatgpt_account_id, AccountMode::UnauthorizedOnce);
    let status = rig.run(&["status", "--json"]).await;
    let json = status.ok().json();
    let alice_status = json["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "alice")
        .unwrap();
    assert_eq!(alice_status["state"], "ok", "{json:#}");
    assert_eq!(alice_status["five_hour"]["used_percent"], 10.0);

    let alice_calls: Vec<(String, u16)> = rig
        .mock
        .requests()
        .iter()
        .filter(|r| r.path == "/oauth/token" || r.account_header.as_deref() == Some("acct-alice"))
        // `status` reads the reset credits after the usage, with the refreshed token.
        .filter(|r| !r.path.ends_with("/wham/rate-limit-reset-credits"))
        .map(|r| (r.path.clone(), r.status))
        .collect();
    assert_eq!(
        alice_calls,
        vec![
            ("/backend-api/wham/usage".to_owned(), 401),
            ("/oauth/token".to_owned(), 200),
            ("/backend-api/wham/usage".to_owned(), 200),
        ]
    );
    assert_eq!(std::fs::read(rig.codex_auth_path()).unwrap(), before);
    rig.assert_no_secret_leaked();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rejected_refresh_token_marks_the_account_and_names_the_fix() {
    let rig = Rig::new().await;
    let (alice, alice_rt) = rig.mock.add_account("alice");
    let (bob, bob_rt) = rig.mock.add_account("bob");
    rig.write_codex_auth(&alice.auth_json(3600, &alice_rt));
    rig.run(&["accounts", "import"]).await.ok();
    // bob's refresh token gets spent elsewhere before cs-tui uses it.
    rig.import_file("bob.json", &bob.auth_json(-60, &bob_rt))
        .await;
    let spent = reqwest::Client::new()
        .post(rig.mock.refresh_url())
        .json(
            &serde_json::json!({"client_id": "app_EMoamEEZ73f0CkXaXp7hrann",
            "grant_type": "refresh_token", "refresh_token": bob_rt}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(spent.status(), 200);
    rig.remember_secrets(&serde_json::json!({"tokens": spent.json::<Value>().await.unwrap()}));

    // status: bob fails and says how to fix it; alice is still shown; the exit code says
    // not everything worked.
    let status = rig.run(&["status"]).await;
    status.fails();
    let bob_row = status.stdout.lines().find(|l| l.contains("bob")).unwrap();
    assert!(
        bob_row.contains("needs login: run `cs-tui accounts add bob`"),
        "{status:#?}"
    );
    let alice_row = status.stdout.lines().find(|l| l.contains("alice")).unwrap();
    assert!(
        alice_row.contains("10%") && alice_row.contains(" ok"),
        "{status:#?}"
    );
    assert!(status.stdout.contains("already used"), "{status:#?}");

    let list = rig.run(&["accounts", "list", "--json"]).await.ok().json();
    let bob_json = list["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "bob")
        .unwrap();
    assert_eq!(bob_json["status"], "needs_login");
    assert!(
        bob_json["status_reason"]
            .as_str()
            .unwrap()
            .contains("already used")
    );
    let table = rig.run(&["accounts", "list"]).await;
    assert!(
        table
            .ok()
            .stdout
            .lines()
            .any(|l| l.contains("bob") && l.contains("needs login"))
    );

    let json = rig.run(&["status", "--json"]).await;
    let json = json.fails().json();
    let bob_status = json["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "bob")
        .unwrap();
    assert_eq!(bob_status["state"], "needs_login");
    assert_eq!(
        bob_status["hint"],
        "run `cs-tui accounts add bob` to log in to it again"
    );

    let refresh = rig.run(&["accounts", "refresh", "bob"]).await;
    refresh.fails();
    assert!(
        refresh.stderr.starts_with(
            "error: account \"bob\" needs a new login: its refresh token was already used"
        ),
        "{refresh:#?}"
    );
    assert!(
        refresh
            .stderr
            .contains("hint: run `cs-tui accounts add bob`"),
        "{refresh:#?}"
    );
    // A dead token is not sent again and again.
    let bob_attempts = rig
        .mock
        .requests()
        .iter()
        .filter(|r| r.refresh_token.as_deref() == Some(bob_rt.as_str()))
        .count();
    assert_eq!(
        bob_attempts, 2,
        "the test's own exchange and cs-tui's one attempt"
    );

    // Logging in again (here: importing a new login for bob) brings it back.
    let fresh_rt = rig.mock.issue_refresh_token(&bob.chatgpt_account_id);
    let file = rig.write_auth_file("bob2.json", &bob.auth_json(3600, &fresh_rt));
    let reimport = rig
        .run(&["accounts", "import", "--file", file.to_str().unwrap()])
        .await;
    assert!(
        reimport.ok().stdout.contains("Updated bob"),
        "{reimport:#?}"
    );
    rig.run(&["status"]).await.ok();
    rig.assert_no_secret_leaked();
}

fn status_of<'a>(json: &'a Value, name: &str) -> &'a Value {
    json["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {json:#}"))
}

/// Issue 12: the sign-in server rotates the refresh token, then answers after the caller's
/// timeout. The rotated token must still reach the store, or the account is dead.
#[tokio::test(flavor = "multi_thread")]
async fn a_slow_sign_in_server_does_not_kill_the_account() {
    let rig = Rig::new().await;
    let (alice, rt0) = rig.mock.add_account("alice");
    // Not in auth.json: the store alone must keep the rotated token.
    rig.import_file("alice.json", &alice.auth_json(-60, &rt0))
        .await;
    rig.mock
        .push_refresh_fault(RefreshFault::RotateThenDelay(Duration::from_secs(4)));

    let status = rig.run(&["status", "--json", "--timeout", "2"]).await;
    let json = status.fails().json();
    let row = status_of(&json, "alice");
    assert_eq!(row["state"], "error", "{json:#}");
    assert!(
        row["error"]
            .as_str()
            .unwrap()
            .contains("no answer within 2s"),
        "{json:#}"
    );

    let log = rig.mock.requests();
    let sent: Vec<(String, u16)> = refreshes(&log)
        .iter()
        .map(|r| (r.refresh_token.clone().unwrap(), r.status))
        .collect();
    let rt1 = rig.stored_refresh_token("alice");
    if sent.is_empty() {
        // The machine was so slow that the request never left within 2 s: nothing was spent.
        assert_eq!(rt1, rt0);
    } else {
        // The server rotated: the store must hold what it minted, not the spent token.
        assert_eq!(sent, vec![(rt0.clone(), 200)]);
        assert_ne!(rt1, rt0, "the rotated refresh token was lost");
        assert!(rt1.starts_with("rt-acct-alice-"), "{rt1}");
    }
    let list = rig.run(&["accounts", "list", "--json"]).await.ok().json();
    assert_eq!(status_of(&list, "alice")["status"], "ok");

    let refreshed = rig.run(&["accounts", "refresh", "alice"]).await;
    assert!(
        refreshed.ok().stdout.contains("alice: refreshed"),
        "{refreshed:#?}"
    );
    let log = rig.mock.requests();
    assert_eq!(
        refreshes(&log)
            .last()
            .map(|r| (r.refresh_token.clone().unwrap(), r.status)),
        Some((rt1, 200))
    );
    assert_no_refresh_token_reused(&log);
    rig.assert_no_secret_leaked();
}

/// Issue 12: an HTML 403 from a proxy, a 5xx, a captive portal: a clear transient error, and
/// the account stays usable.
#[tokio::test(flavor = "multi_thread")]
async fn a_proxy_a_gateway_or_a_captive_portal_does_not_mark_an_account() {
    let rig = Rig::new().await;
    let (alice, rt0) = rig.mock.add_account("alice");
    rig.import_file("alice.json", &alice.auth_json(-60, &rt0))
        .await;

    // `status` with an expired token meets a proxy's HTML 403.
    rig.mock.push_refresh_fault(RefreshFault::Html403);
    let status = rig.run(&["status", "--json"]).await;
    let json = status.fails().json();
    let row = status_of(&json, "alice");
    assert_eq!(row["state"], "error", "{json:#}");
    assert!(
        row["error"]
            .as_str()
            .unwrap()
            .contains("could not refresh the tokens"),
        "{json:#}"
    );
    assert!(
        row["hint"].as_str().unwrap().contains("still usable"),
        "{json:#}"
    );

    let cases: [(Vec<RefreshFault>, &str); 3] = [
        (vec![RefreshFault::Html403], "HTTP 403 with an HTML page"),
        (vec![RefreshFault::ServerError(503); 5], "HTTP 503"),
        (vec![RefreshFault::CaptivePortal], "captive portal"),
    ];
    for (faults, says) in cases {
        for fault in faults {
            rig.mock.push_refresh_fault(fault);
        }
        let refresh = rig.run(&["accounts", "refresh", "alice"]).await;
        refresh.fails();
        assert!(
            refresh
                .stderr
                .starts_with("error: could not refresh the tokens of account \"alice\""),
            "{refresh:#?}"
        );
        assert!(refresh.stderr.contains(says), "{refresh:#?}");
        assert!(
            !refresh.stderr.contains("needs a new login"),
            "{refresh:#?}"
        );
        let list = rig.run(&["accounts", "list", "--json"]).await.ok().json();
        assert_eq!(status_of(&list, "alice")["status"], "ok", "{says}");
        assert_eq!(rig.stored_refresh_token("alice"), rt0);
    }

    // The way clears: the same token still works.
    let status = rig.run(&["status", "--json"]).await.ok().json();
    assert_eq!(status_of(&status, "alice")["state"], "ok", "{status:#}");
    assert_ne!(rig.stored_refresh_token("alice"), rt0);
    // Every attempt presented the one token, and none was refused as reused or revoked (the
    // portal's 200 was not the sign-in server's).
    let log = rig.mock.requests();
    let sent = refreshes(&log);
    assert!(
        sent.iter()
            .all(|r| r.refresh_token.as_deref() == Some(rt0.as_str()) && r.status != 401),
        "{sent:#?}"
    );
    assert_eq!(sent.last().unwrap().status, 200);
    rig.assert_no_secret_leaked();
}

/// A command that is done waits for a refresh under way, but that refresh starts no new
/// attempt: the exit is bounded by one attempt, not by a whole series of retries.
#[tokio::test(flavor = "multi_thread")]
async fn an_exiting_command_lets_the_attempt_under_way_finish_but_starts_no_retry() {
    let rig = Rig::new().await;
    let (alice, rt0) = rig.mock.add_account("alice");
    rig.import_file("alice.json", &alice.auth_json(-60, &rt0))
        .await;
    // Five failures would take five attempts, 3.75 s of backoff at the least.
    for _ in 0..5 {
        rig.mock.push_refresh_fault(RefreshFault::ServerError(502));
    }
    let status = rig.run(&["status", "--json", "--timeout", "1"]).await;
    let json = status.fails().json();
    assert_eq!(status_of(&json, "alice")["state"], "error", "{json:#}");
    let attempts = refreshes(&rig.mock.requests()).len();
    assert!(
        (1..5).contains(&attempts),
        "retries went on after the command was done: {attempts} attempts"
    );
    assert_eq!(rig.stored_refresh_token("alice"), rt0);
    let list = rig.run(&["accounts", "list", "--json"]).await.ok().json();
    assert_eq!(status_of(&list, "alice")["status"], "ok");
    // The faults left over are retried through; the token was never spent.
    rig.run(&["accounts", "refresh", "alice"]).await.ok();
    rig.assert_no_secret_leaked();
}

/// Ctrl-C while the sign-in server holds a rotated token's answer: the command stops, but
/// only after the answer is stored.
#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_during_a_refresh_keeps_the_rotated_token() {
    let rig = Rig::new().await;
    let (alice, rt0) = rig.mock.add_account("alice");
    rig.import_file("alice.json", &alice.auth_json(3600, &rt0))
        .await;
    rig.mock
        .push_refresh_fault(RefreshFault::RotateThenDelay(Duration::from_secs(2)));

    let child = rig
        .command(&["accounts", "refresh", "alice"])
        .spawn()
        .unwrap();
    rig.mock
        .wait_for_request(WAIT, "the refresh", |r| r.path == "/oauth/token")
        .await;
    let pid = nix::unistd::Pid::from_raw(child.id().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let out = tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .expect("the command exits")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("Interrupted."), "{stderr}");
    let rt1 = rig.stored_refresh_token("alice");
    assert_ne!(rt1, rt0, "the rotated refresh token was lost: {stderr}");
    assert!(!stderr.contains(&rt0) && !stderr.contains(&rt1), "{stderr}");

    rig.run(&["accounts", "refresh", "alice"]).await.ok();
    assert_no_refresh_token_reused(&rig.mock.requests());
    rig.assert_no_secret_leaked();
}
