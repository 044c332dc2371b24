//! A store entry whose `auth.type` a newer cs-tui wrote (`device_code`) beside accounts this
//! version knows: the commands list it, refuse to use it, keep it as written and remove it; a
//! proxied session over the real Codex never reads, refreshes or switches to it.

use std::path::Path;

use crate::support::accounts::{Rig as CliRig, account};
use crate::support::session::{Rig as SessionRig, import, start_session};
use crate::support::wait_event;
use cs_tui::proxy::events::{ProxyCommand, ProxyEvent};
use cs_tui_testkit::mock_backend::AccountMode;
use cs_tui_testkit::turns::{run_turn, start_thread};
use cs_tui_testkit::{CodexHome, FakeAccount, MockBackend, Usage, UsageWindow};
use serde_json::{Value, json};

const FUTURE_ID: &str = "f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0";

/// The `auth` of the newer kind. It holds a real (mock) login's tokens, expired, under the
/// names a ChatGPT login uses: a version that took any object with an `access_token` for a
/// login would refresh it, read its usage or switch to it, and the mock would see it.
fn device_code_auth(fake: &FakeAccount, refresh_token: &str) -> Value {
    let tokens = &fake.auth_json(-60, refresh_token)["tokens"];
    json!({
        "type": "device_code",
        "id_token": tokens["id_token"],
        "access_token": tokens["access_token"],
        "refresh_token": refresh_token,
        "device_secret": "SECRET-DEVICE-0123456789",
        "poll": {"interval_secs": 5, "scopes": ["openid", "offline_access"]},
    })
}

/// Puts the newer cs-tui's account into the store at `index`, as that cs-tui would have.
fn insert_future(accounts_json: &Path, index: usize, auth: &Value) {
    let mut file: Value = serde_json::from_slice(&std::fs::read(accounts_json).unwrap()).unwrap();
    file["accounts"].as_array_mut().unwrap().insert(
        index,
        json!({
            "id": FUTURE_ID,
            "name": "future",
            "email": "future@example.com",
            "plan": "pro",
            "chatgpt_account_id": "acct-future",
            "created_at": "2026-01-01T00:00:00Z",
            "enabled": true,
            "auth": auth,
            "status": {"state": "ok"},
        }),
    );
    std::fs::write(accounts_json, serde_json::to_vec_pretty(&file).unwrap()).unwrap();
}

fn stored_auth(accounts_json: &Path, name: &str) -> Option<Value> {
    let file: Value = serde_json::from_slice(&std::fs::read(accounts_json).unwrap()).unwrap();
    file["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == name)
        .map(|a| a["auth"].clone())
}

/// Whether the mock ever saw the future account: a request with its token or account id,
/// or its refresh token.
fn mock_saw_future(mock: &MockBackend, refresh_token: &str) -> Vec<String> {
    mock.requests()
        .into_iter()
        .filter(|r| {
            r.account_header.as_deref() == Some("acct-future")
                || r.token_account.as_deref() == Some("acct-future")
                || r.refresh_token.as_deref() == Some(refresh_token)
        })
        .map(|r| format!("{} {}", r.method, r.path))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_commands_list_refuse_keep_and_remove_an_unsupported_sign_in() {
    let rig = CliRig::new().await;
    let (alice, alice_rt) = rig.mock.add_account("alice");
    let (future, future_rt) = rig.mock.add_account("future");
    rig.write_codex_auth(&alice.auth_json(3600, &alice_rt));
    rig.run(&["accounts", "import"]).await.ok();
    let auth = device_code_auth(&future, &future_rt);
    // The leak check looks for every value of it.
    rig.remember_secrets(&json!({"OPENAI_API_KEY": "SECRET-DEVICE-0123456789"}));
    rig.remember_secrets(&json!({"tokens": {
        "id_token": auth["id_token"], "access_token": auth["access_token"],
        "refresh_token": future_rt,
    }}));
    insert_future(&rig.accounts_json(), 0, &auth);

    // Listed with its kind and a clear state; the others as before.
    let list = rig.run(&["accounts", "list", "--json"]).await.ok().json();
    let entry = account(&list, "future");
    assert_eq!(entry["kind"], "device_code", "{list:#}");
    assert_eq!(entry["status"], "unsupported_sign_in", "{list:#}");
    assert_eq!(
        entry["status_reason"],
        "unsupported sign-in `device_code` (from a newer cs-tui)"
    );
    assert_eq!(entry["access_token_expires_at"], Value::Null);
    assert_eq!(account(&list, "alice")["status"], "ok");
    assert_eq!(account(&list, "alice")["kind"], "chatgpt");
    let table = rig.run(&["accounts", "list"]).await;
    let row = table
        .ok()
        .stdout
        .lines()
        .find(|l| l.contains("future"))
        .unwrap_or_else(|| panic!("{table:#?}"))
        .to_owned();
    assert!(
        row.contains("unsupported sign-in `device_code` (from a newer cs-tui)"),
        "{row}"
    );

    // status reads alice only, and says what the other one is; an account it cannot use is
    // not a failure.
    let status = rig.run(&["status", "--json"]).await.ok().json();
    assert_eq!(account(&status, "alice")["state"], "ok", "{status:#}");
    let entry = account(&status, "future");
    assert_eq!(entry["state"], "unsupported_sign_in", "{status:#}");
    assert_eq!(
        entry["error"],
        "unsupported sign-in `device_code` (from a newer cs-tui)"
    );
    assert!(
        entry["hint"]
            .as_str()
            .unwrap()
            .contains("cs-tui accounts remove future")
    );
    assert_eq!(entry["five_hour"], Value::Null);
    let table = rig.run(&["status"]).await;
    assert!(
        table
            .ok()
            .stdout
            .contains("unsupported sign-in `device_code` (from a newer cs-tui)"),
        "{table:#?}"
    );

    // Every way of using it is refused, naming the kind, and changes nothing.
    let before = std::fs::read(rig.accounts_json()).unwrap();
    for args in [
        &["switch", "future"][..],
        &["accounts", "use", "future"],
        &["accounts", "refresh", "future"],
        &["accounts", "reset", "future", "--yes"],
    ] {
        let run = rig.run(args).await;
        run.fails();
        assert!(
            run.stderr.contains("future signs in with `device_code`")
                && run.stderr.contains("written by a newer cs-tui"),
            "{run:#?}"
        );
        assert_eq!(
            std::fs::read(rig.accounts_json()).unwrap(),
            before,
            "{args:?}"
        );
    }
    // Its flags and name are the user's to change; the sign-in stays as written.
    let disabled = rig.run(&["accounts", "disable", "future"]).await;
    assert!(
        disabled.ok().stdout.contains("never switches to it"),
        "{disabled:#?}"
    );
    rig.run(&["accounts", "enable", "future"]).await.ok();
    rig.run(&["accounts", "rename", "future", "later"])
        .await
        .ok();
    rig.run(&["accounts", "rename", "later", "future"])
        .await
        .ok();
    assert_eq!(stored_auth(&rig.accounts_json(), "future").unwrap(), auth);
    // Refreshing every account refreshes alice and leaves it as written.
    rig.run(&["accounts", "refresh"]).await.ok();
    assert_ne!(
        rig.stored_refresh_token("alice"),
        alice_rt,
        "alice was refreshed"
    );
    assert_eq!(stored_auth(&rig.accounts_json(), "future").unwrap(), auth);
    let list = rig.run(&["accounts", "list", "--json"]).await.ok().json();
    assert_eq!(list["active"], account(&list, "alice")["id"]);
    assert_eq!(
        mock_saw_future(&rig.mock, &future_rt),
        Vec::<String>::new(),
        "nothing is sent for it"
    );

    // Removed like any other account, its values gone from the store and its backup.
    rig.run(&["accounts", "remove", "future", "--yes"])
        .await
        .ok();
    assert_eq!(stored_auth(&rig.accounts_json(), "future"), None);
    let backup = std::fs::read_to_string(rig.store_dir().join("accounts.json.bak")).unwrap();
    assert!(!backup.contains("SECRET-DEVICE"), "{backup}");
    assert!(!backup.contains(&future_rt));
    let list = rig.run(&["accounts", "list", "--json"]).await.ok().json();
    assert_eq!(list["accounts"].as_array().unwrap().len(), 1, "{list:#}");
    rig.assert_no_secret_leaked();
}

/// A session on alice, with the newer cs-tui's account before bob in the store and the most
/// room of all: alice's limit moves the session to bob, and nothing ever touches the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxied_session_never_reads_or_picks_an_unsupported_sign_in() {
    let mock = MockBackend::start().await;
    let home = CodexHome::offline(&mock.url());
    let store = tempfile::tempdir().unwrap();
    for label in ["alice", "bob"] {
        let (fake, refresh) = mock.add_account(label);
        import(store.path(), label, &fake.auth_json(3600, &refresh));
    }
    let (future, future_rt) = mock.add_account("future");
    let auth = device_code_auth(&future, &future_rt);
    let accounts_json = store.path().join("accounts.json");
    insert_future(&accounts_json, 1, &auth);
    mock.set_usage(
        "acct-future",
        Usage {
            primary: Some(UsageWindow::five_hour(0)),
            secondary: Some(UsageWindow::weekly(0)),
            ..Usage::default()
        },
    );
    mock.set_usage(
        "acct-bob",
        Usage {
            primary: Some(UsageWindow::five_hour(60)),
            secondary: Some(UsageWindow::weekly(60)),
            ..Usage::default()
        },
    );
    let session = start_session(&mock, &home, store.path()).await;
    let events = session.subscribe();
    let mut rig = SessionRig {
        mock,
        home,
        store,
        session,
        events,
    };
    let mut client = rig.tui_client().await;
    let thread = start_thread(&mut client, rig.home.work_dir()).await;
    run_turn(&mut client, &thread, "on alice").await;

    // By hand: refused at once, naming the kind.
    let refused = rig
        .session
        .commands()
        .send(ProxyCommand::SwitchTo {
            account_id: FUTURE_ID.into(),
        })
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(
        refused,
        "future signs in with `device_code`, a kind written by a newer cs-tui; this cs-tui cannot use it"
    );

    // Automatic: alice at her limit goes to bob, though the other has more room.
    rig.mock.set_mode("acct-alice", AccountMode::UsageLimit);
    run_turn(&mut client, &thread, "at the limit").await;
    let done = wait_event(&mut rig.events, "the switch", |e| {
        matches!(
            e,
            ProxyEvent::SwitchDone { .. }
                | ProxyEvent::SwitchFailed { .. }
                | ProxyEvent::NoAccountAvailable { .. }
        )
    })
    .await;
    assert!(
        matches!(&done, ProxyEvent::SwitchDone { to, .. } if to.name == "bob"),
        "{done:?}"
    );
    rig.mock.set_mode("acct-alice", AccountMode::Normal);
    run_turn(&mut client, &thread, "after the switch").await;
    assert_eq!(
        rig.mock
            .last_user_turn_request("after the switch")
            .account_header
            .as_deref(),
        Some("acct-bob")
    );
    let bob_id = rig.account_id("bob");
    rig.session.shutdown().await;

    assert_eq!(
        mock_saw_future(&rig.mock, &future_rt),
        Vec::<String>::new(),
        "never read, refreshed or logged in"
    );
    // The session wrote the store (bob is the active one now); the entry is as written.
    let file: Value = serde_json::from_slice(&std::fs::read(&accounts_json).unwrap()).unwrap();
    assert_eq!(file["active"], bob_id.as_str());
    assert_eq!(stored_auth(&accounts_json, "future").unwrap(), auth);
    // Codex's own login was never this account's.
    let codex_auth = std::fs::read_to_string(rig.home.path().join("auth.json")).unwrap_or_default();
    assert!(!codex_auth.contains(&future_rt) && !codex_auth.contains("SECRET-DEVICE"));
}
