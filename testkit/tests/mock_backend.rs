//! The mock itself must be faithful: these check its wire format against docs/protocol.md §4–§5.

use cs_tui_testkit::mock_backend::AccountMode;
use cs_tui_testkit::{MockBackend, Usage, UsageWindow};
use serde_json::{Value, json};

async fn get(mock: &MockBackend, path: &str, token: &str, account: &str) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .get(format!("{}{path}", mock.url()))
        .bearer_auth(token)
        .header("chatgpt-account-id", account)
        .send()
        .await
        .unwrap();
    (
        resp.status().as_u16(),
        resp.json().await.unwrap_or(Value::Null),
    )
}

async fn refresh(mock: &MockBackend, refresh_token: &str) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(mock.refresh_url())
        .json(&json!({"client_id": "app_EMoamEEZ73f0CkXaXp7hrann",
                      "grant_type": "refresh_token", "refresh_token": refresh_token}))
        .send()
        .await
        .unwrap();
    (
        resp.status().as_u16(),
        resp.json().await.unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn refresh_tokens_rotate_and_a_used_one_is_rejected() {
    let mock = MockBackend::start().await;
    let (_alice, rt) = mock.add_account("alice");
    let (status, first) = refresh(&mock, &rt).await;
    assert_eq!(status, 200, "{first}");
    let new_rt = first["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(new_rt, rt);
    assert!(first["access_token"].as_str().unwrap().split('.').count() == 3);

    let (status, reused) = refresh(&mock, &rt).await;
    assert_eq!(status, 401);
    assert_eq!(reused["error"]["code"], "refresh_token_reused");

    let (status, _) = refresh(&mock, &new_rt).await;
    assert_eq!(status, 200);
    let (status, unknown) = refresh(&mock, "rt-made-up").await;
    assert_eq!(status, 401, "{unknown}");

    mock.fail_next_refreshes(1);
    let fresh = mock.issue_refresh_token("acct-alice");
    assert_eq!(refresh(&mock, &fresh).await.0, 500);
    assert_eq!(
        refresh(&mock, &fresh).await.0,
        200,
        "a 500 does not burn the token"
    );
}

#[tokio::test]
async fn usage_reports_windows_credits_and_limit_type() {
    let mock = MockBackend::start().await;
    let (alice, _) = mock.add_account("alice");
    mock.set_usage(
        &alice.chatgpt_account_id,
        Usage {
            primary: Some(UsageWindow {
                used_percent: 100,
                window_minutes: 300,
                resets_at: 2_000_000_000,
            }),
            secondary: Some(UsageWindow::weekly(50)),
            credits: Some((false, false, Some("0".into()))),
            limit_reached_type: Some("rate_limit_reached".into()),
        },
    );
    let token = alice.access_token(600, 1);
    let (status, body) = get(&mock, "/backend-api/wham/usage", &token, "acct-alice").await;
    assert_eq!(status, 200);
    assert_eq!(body["plan_type"], "plus");
    assert_eq!(body["rate_limit"]["limit_reached"], true);
    assert_eq!(body["rate_limit"]["primary_window"]["used_percent"], 100);
    assert_eq!(
        body["rate_limit"]["primary_window"]["limit_window_seconds"],
        18000
    );
    assert_eq!(
        body["rate_limit"]["primary_window"]["reset_at"],
        2_000_000_000
    );
    assert_eq!(
        body["rate_limit"]["secondary_window"]["limit_window_seconds"],
        604800
    );
    assert_eq!(body["credits"]["balance"], "0");
    assert_eq!(
        body["rate_limit_reached_type"]["type"],
        "rate_limit_reached"
    );

    let log = mock.requests();
    assert_eq!(log[0].account_header.as_deref(), Some("acct-alice"));
    assert_eq!(log[0].token_id.as_deref(), Some("acct-alice-access-1"));
}

#[tokio::test]
async fn expired_or_foreign_tokens_get_401_and_401_once_recovers() {
    let mock = MockBackend::start().await;
    let (alice, _) = mock.add_account("alice");
    let (bob, _) = mock.add_account("bob");
    let path = "/backend-api/wham/usage";
    assert_eq!(
        get(&mock, path, &alice.access_token(-5, 1), "acct-alice")
            .await
            .0,
        401
    );
    assert_eq!(
        get(&mock, path, &bob.access_token(60, 1), "acct-alice")
            .await
            .0,
        401
    );
    mock.set_mode("acct-alice", AccountMode::UnauthorizedOnce);
    let good = alice.access_token(60, 2);
    assert_eq!(
        get(&mock, "/backend-api/codex/models", &good, "acct-alice")
            .await
            .0,
        200,
        "a background fetch does not use up the 401"
    );
    let post = || {
        reqwest::Client::new()
            .post(format!("{}/backend-api/codex/responses", mock.url()))
            .bearer_auth(&good)
            .header("chatgpt-account-id", "acct-alice")
            .json(&json!({"input": []}))
            .send()
    };
    assert_eq!(post().await.unwrap().status().as_u16(), 401);
    assert_eq!(post().await.unwrap().status().as_u16(), 200);
}

#[tokio::test]
async fn model_requests_stream_sse_with_rate_limit_headers_or_fail_as_configured() {
    let mock = MockBackend::start().await;
    let (alice, _) = mock.add_account("alice");
    mock.set_usage(
        "acct-alice",
        Usage {
            primary: Some(UsageWindow::five_hour(61)),
            secondary: None,
            credits: None,
            limit_reached_type: None,
        },
    );
    let client = reqwest::Client::new();
    let post = || {
        client
            .post(format!("{}/backend-api/codex/responses", mock.url()))
            .bearer_auth(alice.access_token(600, 1))
            .header("chatgpt-account-id", "acct-alice")
            .json(&json!({"input": [{"type": "message", "role": "user",
                "content": [{"type": "input_text", "text": "hello mock"}]}]}))
            .send()
    };
    let resp = post().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers()["x-codex-primary-used-percent"], "61");
    assert_eq!(resp.headers()["x-codex-primary-window-minutes"], "300");
    let body = resp.text().await.unwrap();
    assert!(
        body.starts_with("event: response.created\ndata: "),
        "{body}"
    );
    assert!(
        body.contains("Served by alice: you said \\\"hello mock\\\""),
        "{body}"
    );
    assert!(body.contains("event: response.completed"), "{body}");

    mock.set_mode("acct-alice", AccountMode::UsageLimit);
    let resp = post().await.unwrap();
    assert_eq!(resp.status().as_u16(), 429);
    assert_eq!(resp.headers()["x-codex-primary-used-percent"], "100");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["type"], "usage_limit_reached");
    assert!(body["error"]["resets_at"].as_i64().is_some());
    // The usage endpoint agrees: the account is at its limit.
    let token = alice.access_token(600, 1);
    let (status, usage) = get(&mock, "/backend-api/wham/usage", &token, "acct-alice").await;
    assert_eq!(status, 200);
    assert_eq!(usage["rate_limit"]["limit_reached"], true, "{usage}");
    assert_eq!(usage["rate_limit"]["primary_window"]["used_percent"], 100);
    assert_eq!(
        usage["rate_limit_reached_type"]["type"],
        "rate_limit_reached"
    );

    mock.set_mode("acct-alice", AccountMode::ServerError);
    assert_eq!(post().await.unwrap().status().as_u16(), 500);
    assert_eq!(mock.model_requests().len(), 3);
    assert_eq!(
        mock.model_requests()[0].user_input_texts(),
        vec!["hello mock"]
    );
}

/// docs/protocol.md §9: further limit families as their own header family and in
/// `additional_rate_limits`; a weekly-only shape; a seat's spend control; a workspace seat.
#[tokio::test]
async fn usage_reports_families_shapes_spend_control_and_seats() {
    use cs_tui_testkit::{LimitFamily, SpendControl, seat_key};
    let mock = MockBackend::start().await;
    let (alice, _) = mock.add_account("alice");
    let id = &alice.chatgpt_account_id;
    mock.set_usage(id, Usage::weekly_only(30));
    mock.set_families(id, vec![LimitFamily::spark(100)]);
    mock.set_individual_limit(
        id,
        Some(SpendControl {
            limit: "50.00".into(),
            used: "12.50".into(),
            used_percent: 25,
            resets_at: 2_000_000_000,
        }),
    );
    let token = alice.access_token(3600, 0);
    let (status, usage) = get(&mock, "/backend-api/wham/usage", &token, id).await;
    assert_eq!(status, 200);
    assert_eq!(
        usage["rate_limit"]["primary_window"]["limit_window_seconds"],
        604800
    );
    assert!(usage["rate_limit"]["secondary_window"].is_null(), "{usage}");
    let spark = &usage["additional_rate_limits"][0];
    assert_eq!(spark["limit_name"], "GPT-5.3-Codex-Spark");
    assert_eq!(spark["metered_feature"], "codex_bengalfox");
    assert_eq!(spark["rate_limit"]["limit_reached"], true);
    assert_eq!(
        usage["rate_limit"]["limit_reached"], false,
        "Spark is not the quota"
    );
    let spend = &usage["spend_control"]["individual_limit"];
    assert_eq!(spend["remaining"], "37.50");
    assert_eq!(spend["remaining_percent"], 75);

    // The model stream carries both header families.
    let response = reqwest::Client::new()
        .post(format!("{}/backend-api/codex/responses", mock.url()))
        .bearer_auth(&token)
        .header("chatgpt-account-id", id)
        .json(&json!({"input": []}))
        .send()
        .await
        .unwrap();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    assert_eq!(
        header("x-codex-primary-window-minutes").as_deref(),
        Some("10080")
    );
    assert_eq!(header("x-codex-secondary-used-percent"), None);
    assert_eq!(
        header("x-codex-bengalfox-primary-used-percent").as_deref(),
        Some("100")
    );
    assert_eq!(
        header("x-codex-bengalfox-limit-name").as_deref(),
        Some("GPT-5.3-Codex-Spark")
    );

    // Two seats of one workspace share the account id and are told apart by their user.
    let (seat_a, _) = mock.add_seat("ann", "team");
    let (seat_b, _) = mock.add_seat("ben", "team");
    assert_eq!(seat_a.chatgpt_account_id, seat_b.chatgpt_account_id);
    let mut usage = Usage::monthly_only(12);
    usage.limit_reached_type = Some("workspace_member_usage_limit_reached".into());
    mock.set_usage(
        &seat_key(&seat_a.chatgpt_account_id, &seat_a.user_id),
        usage,
    );
    let (_, ann) = get(
        &mock,
        "/backend-api/wham/usage",
        &seat_a.access_token(3600, 0),
        &seat_a.chatgpt_account_id,
    )
    .await;
    assert_eq!(
        ann["rate_limit_reached_type"]["type"],
        "workspace_member_usage_limit_reached"
    );
    assert_eq!(
        ann["rate_limit"]["primary_window"]["limit_window_seconds"],
        43200 * 60
    );
    let (_, ben) = get(
        &mock,
        "/backend-api/wham/usage",
        &seat_b.access_token(3600, 0),
        &seat_b.chatgpt_account_id,
    )
    .await;
    assert!(ben["rate_limit_reached_type"].is_null(), "{ben}");
    let (_, check) = get(
        &mock,
        "/backend-api/wham/accounts/check",
        &seat_b.access_token(3600, 0),
        &seat_b.chatgpt_account_id,
    )
    .await;
    assert_eq!(check["accounts"][0]["structure"], "workspace");
}

/// A gate holds an account's model requests, with no timer, until it is opened; other
/// accounts pass; a request's log entry comes when it is answered.
#[tokio::test]
async fn a_gate_holds_model_requests_until_opened() {
    let mock = MockBackend::start().await;
    let (alice, _) = mock.add_account("alice");
    let (bob, _) = mock.add_account("bob");
    let post = |who: &cs_tui_testkit::FakeAccount, text: &str| {
        let request = reqwest::Client::new()
            .post(format!("{}/backend-api/codex/responses", mock.url()))
            .bearer_auth(who.access_token(600, 1))
            .header("chatgpt-account-id", who.chatgpt_account_id.clone())
            .json(&json!({"input": [{"type": "message", "role": "user",
                "content": [{"type": "input_text", "text": text}]}]}));
        tokio::spawn(async move {
            let resp = request.send().await.unwrap();
            (resp.status().as_u16(), resp.text().await.unwrap())
        })
    };
    mock.gate("acct-alice");
    let held = post(&alice, "held one");
    let held_too = post(&alice, "held two");
    mock.wait_for_gated("acct-alice", 2, cs_tui_testkit::WAIT)
        .await;
    // Bob has no gate: his request is answered while alice's wait.
    let (status, body) = post(&bob, "free").await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(!held.is_finished() && !held_too.is_finished());
    assert_eq!(mock.gated("acct-alice"), 2);
    assert!(
        mock.user_turn_requests("held").is_empty(),
        "logged when answered"
    );

    // What the account says at opening time is the answer: a limit set while held.
    mock.set_mode("acct-alice", AccountMode::UsageLimit);
    // A limited account refuses at once, gate or not; the held ones keep waiting.
    let (status, body) = post(&alice, "refused").await.unwrap();
    assert_eq!(status, 429, "{body}");
    assert_eq!(mock.gated("acct-alice"), 2);
    assert!(!held.is_finished() && !held_too.is_finished());
    mock.open("acct-alice");
    assert_eq!(held.await.unwrap().0, 429);
    assert_eq!(held_too.await.unwrap().0, 429);
    assert_eq!(mock.gated("acct-alice"), 0);
    assert_eq!(mock.user_turn_requests("held").len(), 2);

    // Open, it stays open; closed again, it holds again.
    mock.set_mode("acct-alice", AccountMode::Normal);
    assert_eq!(post(&alice, "after").await.unwrap().0, 200);
    mock.gate("acct-alice");
    let again = post(&alice, "again");
    mock.wait_for_gated("acct-alice", 1, cs_tui_testkit::WAIT)
        .await;
    mock.open("acct-alice");
    assert_eq!(again.await.unwrap().0, 200);
}
