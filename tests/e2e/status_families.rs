//! `cs-tui status` with limit families, a weekly-only plan, a monthly window and a spend
//! control, against the mock backend.

use crate::support::accounts::{Rig, account};
use cs_tui_testkit::{LimitFamily, SpendControl, Usage};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread")]
async fn status_shows_every_family_and_only_the_windows_an_account_has() {
    let rig = Rig::new().await;
    let (alice, alice_rt) = rig.mock.add_account("alice");
    let (bob, bob_rt) = rig.mock.add_account("bob");
    let (carol, carol_rt) = rig.mock.add_account("carol");
    rig.write_codex_auth(&alice.auth_json(3600, &alice_rt));
    // The first run imports the current Codex login (alice).
    rig.run(&["accounts", "list"]).await.ok();
    for (name, fake, rt) in [("bob", &bob, &bob_rt), ("carol", &carol, &carol_rt)] {
        rig.import(name, &fake.auth_json(3600, rt)).await;
    }
    rig.mock
        .set_families(&alice.chatgpt_account_id, vec![LimitFamily::spark(100)]);
    rig.mock.set_individual_limit(
        &alice.chatgpt_account_id,
        Some(SpendControl {
            limit: "50.00".into(),
            used: "12.50".into(),
            used_percent: 25,
            resets_at: 1_900_000_000,
        }),
    );
    rig.mock
        .set_usage(&bob.chatgpt_account_id, Usage::weekly_only(61));
    rig.mock
        .set_usage(&carol.chatgpt_account_id, Usage::monthly_only(12));

    let status = rig.run(&["status", "--json"]).await.ok().json();
    let alice_status = account(&status, "alice");
    // The account's quota is the codex family: a full Spark family does not limit it.
    assert_eq!(alice_status["state"], "ok", "{alice_status:#}");
    assert_eq!(alice_status["five_hour"]["used_percent"], 10.0);
    let families = alice_status["families"].as_array().unwrap();
    assert_eq!(families.len(), 2, "{alice_status:#}");
    assert_eq!(families[0]["limit_id"], "codex");
    assert_eq!(families[0]["windows"][0]["label"], "5h");
    assert_eq!(families[1]["limit_id"], "codex_bengalfox");
    assert_eq!(families[1]["limit_name"], "GPT-5.3-Codex-Spark");
    assert_eq!(families[1]["windows"][0]["used_percent"], 100.0);
    assert_eq!(families[1]["windows"][1]["label"], "weekly");
    // `additional` is still there, as before.
    assert_eq!(alice_status["additional"][0]["name"], "GPT-5.3-Codex-Spark");
    assert_eq!(
        alice_status["individual_limit"],
        json!({"limit": "50.00", "used": "12.50", "remaining_percent": 75.0,
               "resets_at": "2030-03-17T17:46:40Z"})
    );

    let bob_status = account(&status, "bob");
    assert_eq!(bob_status["five_hour"], Value::Null, "{bob_status:#}");
    assert_eq!(bob_status["weekly"]["used_percent"], 61.0);
    assert_eq!(
        bob_status["families"][0]["windows"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let carol_status = account(&status, "carol");
    assert_eq!(carol_status["other_windows"][0]["window_minutes"], 43200);
    assert_eq!(carol_status["other_windows"][0]["label"], "30d");

    let text = rig.run(&["status"]).await.ok().text();
    assert!(
        text.contains("alice · GPT-5.3-Codex-Spark: 5h 100%, weekly 3%"),
        "{text}"
    );
    assert!(text.contains("alice: spend 12.50 of 50.00"), "{text}");
    assert!(text.contains("carol: 30d 12%"), "{text}");
}
