//! End-to-end checks of the facts cs-tui relies on, against the real `codex app-server`
//! (pinned version) and the mock backend. No cs-tui code is involved: these pin the ground
//! the proxy stands on (docs/protocol.md §1–§4).

use cs_tui_testkit::WAIT;
use cs_tui_testkit::mock_backend::AccountMode;
use cs_tui_testkit::turns::{run_turn, start_thread};
use cs_tui_testkit::ws_client::connect_status;
use cs_tui_testkit::{AppServer, CodexHome, FakeAccount, MockBackend, WsClient, codex_bin};
use serde_json::{Value, json};

struct Rig {
    mock: MockBackend,
    home: CodexHome,
    server: AppServer,
}

async fn rig() -> Rig {
    let mock = MockBackend::start().await;
    let home = CodexHome::offline(&mock.url());
    let server = AppServer::spawn(&codex_bin(), home.path(), &mock.refresh_url()).await;
    Rig { mock, home, server }
}

async fn client(rig: &Rig) -> WsClient {
    let mut client = WsClient::connect(&rig.server.ws_url(), rig.server.token()).await;
    client.initialize(json!("initialize")).await;
    client
}

async fn login(client: &mut WsClient, account: &FakeAccount) -> Value {
    let result = client
        .request(
            "account/login/start",
            json!({
                "type": "chatgptAuthTokens",
                "accessToken": account.access_token(3600, 0),
                "chatgptAccountId": account.chatgpt_account_id,
                "chatgptPlanType": account.plan,
            }),
        )
        .await
        .expect("login accepted");
    assert_eq!(result["type"], "chatgptAuthTokens");
    let completed = client
        .wait_notification("account/login/completed", WAIT)
        .await;
    assert_eq!(completed["params"]["success"], true, "{completed}");
    completed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_with_tokens_then_account_read_shows_the_account() {
    let rig = rig().await;
    let (alice, _) = rig.mock.add_account("alice");
    let mut client = client(&rig).await;

    let before = client.request("account/read", json!({})).await.unwrap();
    assert!(before["account"].is_null(), "{before}");

    login(&mut client, &alice).await;
    let updated = client.wait_notification("account/updated", WAIT).await;
    assert_eq!(
        updated["params"]["authMode"], "chatgptAuthTokens",
        "{updated}"
    );

    let after = client.request("account/read", json!({})).await.unwrap();
    assert_eq!(after["account"]["type"], "chatgpt", "{after}");
    assert_eq!(after["account"]["email"], "alice@example.com", "{after}");
    // Login asks the backend which workspaces the account has.
    rig.mock
        .wait_for_request(WAIT, "accounts/check", |r| {
            r.path == "/backend-api/wham/accounts/check"
                && r.account_header.as_deref() == Some("acct-alice")
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_without_experimental_api_is_refused() {
    let rig = rig().await;
    let (alice, _) = rig.mock.add_account("alice");
    let mut client = WsClient::connect(&rig.server.ws_url(), rig.server.token()).await;
    client
        .request(
            "initialize",
            json!({"clientInfo": {"name": "plain", "title": "plain", "version": "0"}}),
        )
        .await
        .unwrap();
    client.notify("initialized", Value::Null).await;
    let err = client
        .request(
            "account/login/start",
            json!({"type": "chatgptAuthTokens", "accessToken": alice.access_token(3600, 0),
                   "chatgptAccountId": alice.chatgpt_account_id, "chatgptPlanType": null}),
        )
        .await
        .expect_err("refused without experimentalApi");
    assert_eq!(err["code"], -32600, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_read_returns_what_wham_usage_said() {
    let rig = rig().await;
    let (alice, _) = rig.mock.add_account("alice");
    let usage = cs_tui_testkit::Usage {
        primary: Some(cs_tui_testkit::UsageWindow {
            used_percent: 42,
            window_minutes: 300,
            resets_at: 1_900_000_000,
        }),
        secondary: Some(cs_tui_testkit::UsageWindow {
            used_percent: 17,
            window_minutes: 10080,
            resets_at: 1_900_500_000,
        }),
        credits: Some((true, false, Some("12.5".into()))),
        limit_reached_type: None,
    };
    rig.mock.set_usage(&alice.chatgpt_account_id, usage);
    let mut client = client(&rig).await;
    login(&mut client, &alice).await;

    let limits = client
        .request("account/rateLimits/read", json!(null))
        .await
        .unwrap();
    let snapshot = &limits["rateLimits"];
    assert_eq!(snapshot["primary"]["usedPercent"], 42, "{limits}");
    assert_eq!(snapshot["primary"]["windowDurationMins"], 300, "{limits}");
    assert_eq!(snapshot["primary"]["resetsAt"], 1_900_000_000, "{limits}");
    assert_eq!(snapshot["secondary"]["usedPercent"], 17, "{limits}");
    assert_eq!(
        snapshot["secondary"]["windowDurationMins"], 10080,
        "{limits}"
    );
    assert_eq!(snapshot["credits"]["hasCredits"], true, "{limits}");
    assert_eq!(snapshot["credits"]["balance"], "12.5", "{limits}");
    rig.mock
        .wait_for_request(WAIT, "wham/usage", |r| r.path == "/backend-api/wham/usage")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_read_without_login_is_an_error() {
    let rig = rig().await;
    let mut client = client(&rig).await;
    let err = client
        .request("account/rateLimits/read", json!(null))
        .await
        .expect_err("no login");
    assert_eq!(err["code"], -32600, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_returns_the_mock_reply_and_a_rate_limit_update() {
    let rig = rig().await;
    let (alice, _) = rig.mock.add_account("alice");
    rig.mock.set_usage(
        &alice.chatgpt_account_id,
        cs_tui_testkit::Usage {
            primary: Some(cs_tui_testkit::UsageWindow::five_hour(33)),
            ..Default::default()
        },
    );
    let mut client = client(&rig).await;
    login(&mut client, &alice).await;
    let thread = start_thread(&mut client, rig.home.work_dir()).await;
    let completed = run_turn(&mut client, &thread, "ping one").await;
    assert_eq!(
        completed["params"]["turn"]["status"], "completed",
        "{completed}"
    );

    let texts: Vec<String> = client
        .received_with_method("item/completed")
        .iter()
        .filter(|m| m["params"]["item"]["type"] == "agentMessage")
        .filter_map(|m| m["params"]["item"]["text"].as_str().map(str::to_owned))
        .collect();
    assert!(
        texts
            .iter()
            .any(|t| t.contains("Served by alice") && t.contains("ping one")),
        "agent messages: {texts:?}"
    );
    let update = client
        .wait_notification("account/rateLimits/updated", WAIT)
        .await;
    assert_eq!(
        update["params"]["rateLimits"]["primary"]["usedPercent"], 33,
        "{update}"
    );
    assert!(
        update.get("emittedAtMs").is_some(),
        "notifications carry emittedAtMs: {update}"
    );

    let served = rig
        .mock
        .model_requests()
        .into_iter()
        .find(|r| r.user_input_texts().iter().any(|t| t.contains("ping one")))
        .expect("the model request reached the mock");
    assert_eq!(served.account_header.as_deref(), Some("acct-alice"));
    assert_eq!(served.token_account.as_deref(), Some("acct-alice"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_usage_limit_yields_the_documented_error_sequence() {
    let rig = rig().await;
    let (alice, _) = rig.mock.add_account("alice");
    let mut client = client(&rig).await;
    login(&mut client, &alice).await;
    let thread = start_thread(&mut client, rig.home.work_dir()).await;
    rig.mock
        .set_mode(&alice.chatgpt_account_id, AccountMode::UsageLimit);
    let completed = run_turn(&mut client, &thread, "this will hit the limit").await;
    assert_eq!(
        completed["params"]["turn"]["status"], "failed",
        "{completed}"
    );

    let errors = client.received_with_method("error");
    let error = errors
        .iter()
        .find(|e| e["params"]["threadId"] == thread.as_str())
        .unwrap_or_else(|| panic!("no error for the thread; got {errors:?}"));
    assert_eq!(
        error["params"]["error"]["codexErrorInfo"], "usageLimitExceeded",
        "{error}"
    );
    assert_eq!(error["params"]["willRetry"], false, "{error}");
    // The order docs/protocol.md §3 records: 100 % update, systemError status, error, failed turn.
    let order: Vec<&str> = client
        .received
        .iter()
        .filter(|m| {
            m["params"]["threadId"] == thread.as_str()
                || m["method"] == "account/rateLimits/updated"
        })
        .filter_map(|m| m["method"].as_str())
        .filter(|m| {
            matches!(
                *m,
                "account/rateLimits/updated" | "thread/status/changed" | "error" | "turn/completed"
            )
        })
        .collect();
    let pos = |name: &str| {
        order
            .iter()
            .rposition(|m| *m == name)
            .unwrap_or_else(|| panic!("{name} missing in {order:?}"))
    };
    assert!(pos("error") < pos("turn/completed"), "{order:?}");
    let hundred = client
        .received_with_method("account/rateLimits/updated")
        .into_iter()
        .any(|u| u["params"]["rateLimits"]["primary"]["usedPercent"] == 100);
    assert!(hundred, "a 100 % rate-limit update arrives on limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_bearer_token_is_refused_with_401() {
    let rig = rig().await;
    assert_eq!(
        connect_status(&rig.server.ws_url(), Some("not-the-token")).await,
        Err(401)
    );
    assert_eq!(connect_status(&rig.server.ws_url(), None).await, Err(401));
    assert_eq!(
        connect_status(&rig.server.ws_url(), Some(rig.server.token())).await,
        Ok(())
    );
}

/// The mock's `/codex/models` catalog is taken as the real one would be: the configured model
/// has metadata (no fallback warning), and under a `chatgptAuthTokens` login Codex fetches the
/// catalog once, not before every turn. A failed fetch is retried every turn in that mode,
/// which once made every proxied turn ~40 ms slower (`scripts/bench-turn-latency.py`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_model_catalog_is_accepted_and_not_refetched_per_turn() {
    let rig = rig().await;
    let (alice, _) = rig.mock.add_account("alice");
    let mut client = client(&rig).await;
    login(&mut client, &alice).await;
    let thread = start_thread(&mut client, rig.home.work_dir()).await;
    let catalog_fetches = || {
        rig.mock
            .requests()
            .iter()
            .filter(|r| r.path.ends_with("/codex/models"))
            .count()
    };
    run_turn(&mut client, &thread, "first").await;
    let after_first = catalog_fetches();
    assert!(after_first >= 1, "Codex asked for the catalog");
    for i in 0..3 {
        let completed = run_turn(&mut client, &thread, &format!("again {i}")).await;
        assert_eq!(completed["params"]["turn"]["status"], "completed");
    }
    assert_eq!(
        catalog_fetches(),
        after_first,
        "later turns reuse the cached catalog"
    );
    let warnings: Vec<&Value> = client.received_with_method("warning");
    assert!(
        !warnings
            .iter()
            .any(|w| w.to_string().contains("Model metadata")),
        "the configured model has metadata: {warnings:?}"
    );
}

/// docs/protocol.md §9: every header family becomes its own snapshot, keyed by `limitId`; a read
/// returns them all under `rateLimitsByLimitId` (from `/wham/usage`'s
/// `additional_rate_limits`), with the seat's spend control as `individualLimit`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_limit_family_reaches_the_client_under_its_own_limit_id() {
    let rig = rig().await;
    let (alice, _) = rig.mock.add_account("alice");
    let id = &alice.chatgpt_account_id;
    rig.mock.set_usage(
        id,
        cs_tui_testkit::Usage {
            primary: Some(cs_tui_testkit::UsageWindow::five_hour(42)),
            ..Default::default()
        },
    );
    rig.mock
        .set_families(id, vec![cs_tui_testkit::LimitFamily::spark(100)]);
    rig.mock.set_individual_limit(
        id,
        Some(cs_tui_testkit::SpendControl {
            limit: "50.00".into(),
            used: "12.50".into(),
            used_percent: 25,
            resets_at: 1_900_000_000,
        }),
    );
    let mut client = client(&rig).await;
    login(&mut client, &alice).await;

    let read = client
        .request("account/rateLimits/read", json!(null))
        .await
        .unwrap();
    let by_id = &read["rateLimitsByLimitId"];
    assert_eq!(by_id["codex"]["primary"]["usedPercent"], 42, "{read}");
    let spark = &by_id["codex_bengalfox"];
    assert_eq!(spark["primary"]["usedPercent"], 100, "{read}");
    assert_eq!(spark["limitName"], "GPT-5.3-Codex-Spark", "{read}");
    let spend = &read["rateLimits"]["individualLimit"];
    assert_eq!(spend["limit"], "50.00", "{read}");
    assert_eq!(spend["remainingPercent"], 75, "{read}");

    // Measured on 0.169.0: with both header families on one response, the turn's update
    // carries the Spark family (under its own limitId), not the `codex` one: a client that
    // takes every update for the account's quota sees "100 %".
    let thread = start_thread(&mut client, rig.home.work_dir()).await;
    run_turn(&mut client, &thread, "ping").await;
    let update = client
        .wait_for(WAIT, "the Spark family's update", |m| {
            m["method"] == "account/rateLimits/updated"
                && m["params"]["rateLimits"]["limitId"] == "codex_bengalfox"
        })
        .await;
    let spark = &update["params"]["rateLimits"];
    assert_eq!(spark["primary"]["usedPercent"], 100, "{update}");
    assert_eq!(spark["limitName"], "GPT-5.3-Codex-Spark", "{update}");
    for update in client.received_with_method("account/rateLimits/updated") {
        assert!(
            update["params"]["rateLimits"]["limitId"].is_string(),
            "every update names its family: {update}"
        );
    }
}

/// A weekly-only plan (docs/protocol.md §9) and a workspace limit type reach the client as sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_weekly_only_plan_and_a_workspace_limit_arrive_as_sent() {
    let rig = rig().await;
    let (alice, _) = rig.mock.add_seat("alice", "team");
    let key = cs_tui_testkit::seat_key(&alice.chatgpt_account_id, &alice.user_id);
    let mut usage = cs_tui_testkit::Usage::weekly_only(30);
    usage.limit_reached_type = Some("workspace_member_usage_limit_reached".into());
    rig.mock.set_usage(&key, usage);
    let mut client = client(&rig).await;
    login(&mut client, &alice).await;
    let read = client
        .request("account/rateLimits/read", json!(null))
        .await
        .unwrap();
    let snapshot = &read["rateLimits"];
    assert_eq!(snapshot["primary"]["windowDurationMins"], 10080, "{read}");
    assert!(snapshot["secondary"].is_null(), "{read}");
    assert_eq!(
        snapshot["rateLimitReachedType"], "workspace_member_usage_limit_reached",
        "{read}"
    );
}

/// docs/protocol.md §9: reset credits reach clients in `account/rateLimits/read`
/// (`rateLimitResetCredits`), read from `/wham/rate-limit-reset-credits`, and
/// `account/rateLimitResetCredit/consume` is a thin wrapper over the backend's
/// `POST …/consume {redeem_request_id}` whose `code` becomes the `outcome`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_credits_are_read_and_consumed_through_the_app_server() {
    use cs_tui_testkit::ResetCredit;
    let rig = rig().await;
    let (alice, _) = rig.mock.add_account("alice");
    let id = alice.chatgpt_account_id.clone();
    let soon = ResetCredit::expiring_in_days("credit-soon", 3);
    rig.mock.set_reset_credits(
        &id,
        vec![
            ResetCredit::expiring_in_days("credit-late", 20),
            soon.clone(),
        ],
    );
    let mut client = client(&rig).await;
    login(&mut client, &alice).await;

    let limits = client
        .request("account/rateLimits/read", json!({}))
        .await
        .expect("rate limits");
    let summary = &limits["rateLimitResetCredits"];
    assert_eq!(summary["availableCount"], 2, "{limits}");
    let credits = summary["credits"].as_array().expect("credit details");
    assert_eq!(credits[0]["id"], "credit-soon", "{summary}");
    assert_eq!(
        credits[0]["expiresAt"],
        soon.expires_at.unwrap(),
        "{summary}"
    );
    assert_eq!(credits[0]["status"], "available", "{summary}");

    // Not exhausted: the backend spends the credit for nothing.
    let key = "7d4e2f0a-0000-4000-8000-000000000001";
    let outcome = client
        .request(
            "account/rateLimitResetCredit/consume",
            json!({"idempotencyKey": key}),
        )
        .await
        .expect("consume");
    assert_eq!(outcome["outcome"], "nothingToReset", "{outcome}");
    let consume = rig
        .mock
        .wait_for_request(WAIT, "the consume POST", |r| {
            r.path.ends_with("/wham/rate-limit-reset-credits/consume")
        })
        .await;
    assert_eq!(consume.method, "POST");
    assert_eq!(consume.body, Some(json!({"redeem_request_id": key})));
    assert_eq!(consume.account_header.as_deref(), Some(id.as_str()));

    // Exhausted: the same key again spends nothing more; a new key resets.
    rig.mock.set_mode(&id, AccountMode::UsageLimit);
    let again = client
        .request(
            "account/rateLimitResetCredit/consume",
            json!({"idempotencyKey": key}),
        )
        .await
        .expect("consume again");
    assert_eq!(again["outcome"], "nothingToReset", "{again}");
    assert_eq!(
        rig.mock
            .reset_credits(&id)
            .iter()
            .filter(|c| c.redeemed)
            .count(),
        1
    );
    let reset = client
        .request(
            "account/rateLimitResetCredit/consume",
            json!({"idempotencyKey": "7d4e2f0a-0000-4000-8000-000000000002"}),
        )
        .await
        .expect("consume with a new key");
    assert_eq!(reset["outcome"], "reset", "{reset}");
    assert!(rig.mock.reset_credits(&id).iter().all(|c| c.redeemed));
    assert_eq!(rig.mock.usage(&id).primary.unwrap().used_percent, 0);
    let none = client
        .request(
            "account/rateLimitResetCredit/consume",
            json!({"idempotencyKey": "7d4e2f0a-0000-4000-8000-000000000003"}),
        )
        .await
        .expect("consume with none left");
    assert_eq!(none["outcome"], "noCredit", "{none}");
}
