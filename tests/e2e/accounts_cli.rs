//! `cs-tui accounts …` and `cs-tui status` as a new user types them, against the mock backend.

use crate::support::accounts::{Rig, account, mode};
use cs_tui_testkit::{Usage, UsageWindow};
use serde_json::{Value, json};

/// A new user whose first command imports another login: the current Codex login is stored
/// first (the README's first run), and stays the account the next session starts on.
#[tokio::test(flavor = "multi_thread")]
async fn importing_another_login_first_keeps_the_current_codex_login_too() {
    let rig = Rig::new().await;
    let (alice, alice_rt) = rig.mock.add_account("alice");
    let (bob, bob_rt) = rig.mock.add_account("bob");
    rig.write_codex_auth(&alice.auth_json(3600, &alice_rt));
    let bob_file = rig.write_auth_file("bob-auth.json", &bob.auth_json(3600, &bob_rt));

    let imported = rig
        .run(&["accounts", "import", "--file", bob_file.to_str().unwrap()])
        .await;
    imported.ok();
    assert!(
        imported
            .stderr
            .contains("First run: imported your current Codex login (alice@example.com)"),
        "{imported:#?}"
    );
    let list = rig.run(&["accounts", "list", "--json"]).await.ok().json();
    assert_eq!(list["accounts"].as_array().unwrap().len(), 2, "{list:#}");
    assert_eq!(list["active"], account(&list, "alice")["id"], "{list:#}");
    assert_eq!(account(&list, "bob")["email"], "bob@example.com");
    rig.assert_no_secret_leaked();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_user_imports_lists_renames_switches_and_removes() {
    let rig = Rig::new().await;
    let (alice, alice_rt) = rig.mock.add_account("alice");
    let (bob, bob_rt) = rig.mock.add_account("bob");
    rig.write_codex_auth(&alice.auth_json(3600, &alice_rt));

    // First run: the current Codex login is imported, and cs-tui says so.
    let first = rig.run(&["accounts", "list"]).await;
    first.ok();
    assert!(
        first
            .stderr
            .contains("First run: imported your current Codex login (alice@example.com)"),
        "{first:#?}"
    );
    assert!(
        first.stdout.contains("NAME") && first.stdout.contains("alice"),
        "{first:#?}"
    );
    // Only once.
    let second = rig.run(&["accounts", "list"]).await;
    assert!(!second.ok().stderr.contains("First run"), "{second:#?}");

    // Import another login from a file; importing it again does not duplicate it.
    let bob_file = rig.write_auth_file("bob-auth.json", &bob.auth_json(3600, &bob_rt));
    let bob_file = bob_file.to_str().unwrap();
    let imported = rig.run(&["accounts", "import", "--file", bob_file]).await;
    assert!(
        imported
            .ok()
            .stdout
            .contains("Stored bob (bob@example.com, plus) as a new account."),
        "{imported:#?}"
    );
    let again = rig.run(&["accounts", "import", "--file", bob_file]).await;
    assert!(again.ok().stdout.contains("nothing changed"), "{again:#?}");

    let list = rig.run(&["accounts", "list", "--json"]).await.ok().json();
    assert_eq!(list["accounts"].as_array().unwrap().len(), 2, "{list:#}");
    let alice_json = account(&list, "alice");
    assert_eq!(
        list["active"], alice_json["id"],
        "the first account is the active one"
    );
    assert_eq!(alice_json["email"], "alice@example.com");
    assert_eq!(alice_json["plan"], "plus");
    assert_eq!(alice_json["kind"], "chatgpt");
    assert_eq!(alice_json["chatgpt_account_id"], "acct-alice");
    assert_eq!(alice_json["enabled"], true);
    assert_eq!(alice_json["active"], true);
    assert_eq!(alice_json["status"], "ok");
    assert!(alice_json["access_token_expires_at"].is_string());
    assert_eq!(
        alice_json["subscription_active_until"],
        "2099-01-01T00:00:00Z"
    );
    let bob_id = account(&list, "bob")["id"].as_str().unwrap().to_owned();
    assert_eq!(bob_id.len(), 32);

    // Rename, disable, enable, use (by id prefix).
    rig.run(&["accounts", "rename", "bob", "work"]).await.ok();
    let taken = rig.run(&["accounts", "rename", "work", "alice"]).await;
    assert!(taken.fails().stderr.contains("taken"), "{taken:#?}");
    rig.run(&["accounts", "disable", "work"]).await.ok();
    let list = rig.run(&["accounts", "list", "--json"]).await.ok().json();
    assert_eq!(account(&list, "work")["enabled"], false);
    let table = rig.run(&["accounts", "list"]).await;
    let work_row = table.stdout.lines().find(|l| l.contains("work")).unwrap();
    assert!(work_row.contains(" no "), "{table:#?}");
    rig.run(&["accounts", "enable", "work"]).await.ok();
    let used = rig.run(&["accounts", "use", &bob_id[..6]]).await;
    assert!(
        used.ok()
            .stdout
            .contains("The next session starts on work (bob@example.com, plus)."),
        "{used:#?}"
    );
    let list = rig.run(&["accounts", "list", "--json"]).await.ok().json();
    assert_eq!(list["active"], bob_id.as_str());
    assert_eq!(account(&list, "work")["enabled"], true);
    let table = rig.run(&["accounts", "list"]).await;
    assert!(
        table
            .stdout
            .lines()
            .any(|l| l.starts_with('*') && l.contains("work")),
        "{table:#?}"
    );

    // Status: every account's windows, as a table and as JSON.
    rig.mock.set_usage(
        &bob.chatgpt_account_id,
        Usage {
            primary: Some(UsageWindow {
                used_percent: 100,
                window_minutes: 300,
                resets_at: cs_tui_testkit::jwt::unix_now() + 3600,
            }),
            secondary: Some(UsageWindow::weekly(64)),
            credits: Some((false, false, Some("0".into()))),
            limit_reached_type: Some("rate_limit_reached".into()),
        },
    );
    let status = rig.run(&["status"]).await;
    status.ok();
    let header = status.stdout.lines().next().unwrap();
    for column in ["NAME", "5H", "RESETS", "WEEKLY", "STATE"] {
        assert!(header.contains(column), "{status:#?}");
    }
    let alice_row = status.stdout.lines().find(|l| l.contains("alice")).unwrap();
    assert!(
        alice_row.contains("10%") && alice_row.contains("20%"),
        "{status:#?}"
    );
    assert!(
        alice_row.contains("in 1h 59m") || alice_row.contains("in 2h"),
        "{status:#?}"
    );
    let work_row = status.stdout.lines().find(|l| l.contains("work")).unwrap();
    assert!(
        work_row.contains("100%") && work_row.contains("64%") && work_row.contains("limit reached"),
        "{status:#?}"
    );
    let status = rig.run(&["status", "--json"]).await.ok().json();
    let alice_status = account(&status, "alice");
    assert_eq!(alice_status["state"], "ok");
    assert_eq!(alice_status["five_hour"]["used_percent"], 10.0);
    assert_eq!(alice_status["five_hour"]["window_minutes"], 300);
    assert!(alice_status["five_hour"]["resets_at"].is_string());
    assert_eq!(alice_status["weekly"]["used_percent"], 20.0);
    assert_eq!(alice_status["weekly"]["window_minutes"], 10080);
    assert_eq!(alice_status["error"], Value::Null);
    let work_status = account(&status, "work");
    assert_eq!(work_status["state"], "limited");
    assert_eq!(work_status["active"], true);
    assert_eq!(work_status["limit_reached_type"], "rate_limit_reached");
    assert_eq!(
        work_status["credits"],
        json!({"has_credits": false, "unlimited": false, "balance": "0"})
    );

    // Remove: refused without --yes when stdin is not a terminal, then done.
    let refused = rig.run(&["accounts", "remove", "work"]).await;
    assert!(refused.fails().stderr.contains("--yes"), "{refused:#?}");
    assert_eq!(
        rig.run(&["accounts", "list", "--json"]).await.json()["accounts"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    // Removing an account removes its tokens from the backup too; a temp file a crashed
    // writer left (with tokens in it) is swept by the next writer.
    let work_auth = rig.stored_account("work")["auth"].clone();
    let work_tokens: Vec<String> = ["id_token", "access_token", "refresh_token"]
        .iter()
        .filter_map(|key| work_auth[key].as_str().map(str::to_owned))
        .collect();
    assert_eq!(work_tokens.len(), 3, "{work_auth}");
    let crashed = rig.store_dir().join(".accounts.json.Xy12ab.tmp");
    std::fs::copy(rig.accounts_json(), &crashed).unwrap();
    let removed = rig.run(&["accounts", "remove", "work", "--yes"]).await;
    assert!(!crashed.exists(), "the crashed writer's temp file is swept");
    for file in files_under(&rig.store_dir()) {
        let text = String::from_utf8_lossy(&std::fs::read(&file).unwrap()).into_owned();
        for token in &work_tokens {
            assert!(
                !text.contains(token.as_str()),
                "a removed account's token is left in {}",
                file.display()
            );
        }
    }
    let backup: Value =
        serde_json::from_slice(&std::fs::read(rig.store_dir().join("accounts.json.bak")).unwrap())
            .unwrap();
    let kept: Vec<&str> = backup["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(kept, ["alice"], "the backup keeps the others");
    assert!(
        removed
            .ok()
            .stdout
            .contains("Removed work (bob@example.com, plus)."),
        "{removed:#?}"
    );
    assert!(
        removed.stdout.contains("accounts use NAME"),
        "it was the active one: {removed:#?}"
    );
    let list = rig.run(&["accounts", "list", "--json"]).await.ok().json();
    assert_eq!(list["accounts"].as_array().unwrap().len(), 1);
    assert_eq!(list["active"], Value::Null);

    // Mistakes get one sentence and a hint, and a failing exit code.
    for args in [
        &["accounts", "use", "nobody"][..],
        &["accounts", "rename", "alice", "has space"],
        &["accounts", "import", "--file", "/nonexistent/auth.json"],
    ] {
        let run = rig.run(args).await;
        run.fails();
        assert!(run.stderr.starts_with("error: "), "{run:#?}");
        assert!(run.stderr.contains("\nhint: "), "{run:#?}");
    }

    // Every command has --help.
    for sub in [
        "import", "add", "list", "rename", "remove", "enable", "disable", "use", "refresh",
    ] {
        let help = rig.run(&["accounts", sub, "--help"]).await;
        assert!(
            help.ok().stdout.contains("Usage: cs-tui accounts"),
            "{help:#?}"
        );
    }
    assert!(
        rig.run(&["status", "--help"])
            .await
            .ok()
            .stdout
            .contains("--json")
    );

    // The store is private.
    assert_eq!(mode(&rig.store_dir()), 0o700);
    assert_eq!(mode(&rig.accounts_json()), 0o600);
    assert_eq!(mode(&rig.store_dir().join("accounts.json.bak")), 0o600);
    assert_eq!(mode(&rig.store_dir().join("accounts.lock")), 0o600);
    assert_eq!(mode(&rig.store_dir().join("logs")), 0o700);
    assert_eq!(mode(&rig.store_dir().join("logs/accounts.log")), 0o600);
    assert_eq!(mode(&rig.store_dir().join("locks")), 0o700);
    for lock in std::fs::read_dir(rig.store_dir().join("locks")).unwrap() {
        assert_eq!(mode(&lock.unwrap().path()), 0o600);
    }
    rig.assert_no_secret_leaked();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_api_key_login_is_stored_and_shown_without_quota() {
    let rig = Rig::new().await;
    let (alice, rt) = rig.mock.add_account("alice");
    rig.write_codex_auth(&json!({
        "auth_mode": "apikey",
        "OPENAI_API_KEY": "sk-proj-TEST-KEY-0123456789",
        "tokens": null,
        "last_refresh": null,
    }));
    let imported = rig.run(&["accounts", "import", "--name", "key"]).await;
    assert!(
        imported.ok().stdout.contains("Stored key (API key)"),
        "{imported:#?}"
    );
    let alice_file = rig.write_auth_file("alice.json", &alice.auth_json(3600, &rt));
    rig.run(&["accounts", "import", "--file", alice_file.to_str().unwrap()])
        .await
        .ok();

    let list = rig.run(&["accounts", "list", "--json"]).await.ok().json();
    assert_eq!(account(&list, "key")["kind"], "api_key");
    let status = rig.run(&["status", "--json"]).await.ok().json();
    assert_eq!(account(&status, "key")["state"], "api_key");
    assert_eq!(account(&status, "alice")["state"], "ok");
    let table = rig.run(&["status"]).await;
    assert!(
        table.ok().stdout.contains("api key (no ChatGPT limits)"),
        "{table:#?}"
    );
    rig.assert_no_secret_leaked();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupt_store_is_reported_and_left_byte_for_byte_unchanged() {
    let rig = Rig::new().await;
    let (alice, rt) = rig.mock.add_account("alice");
    rig.write_codex_auth(&alice.auth_json(3600, &rt));
    rig.run(&["accounts", "import"]).await.ok();
    let good = std::fs::read(rig.accounts_json()).unwrap();
    let text = String::from_utf8(good.clone()).unwrap();

    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "truncated",
            good[..good.len() * 2 / 3].to_vec(),
            "truncated",
        ),
        ("not json", b"\x00\x01garbage".to_vec(), "not valid JSON"),
        ("empty", Vec::new(), "truncated"),
        (
            "unknown version",
            text.replace("\"version\": 1", "\"version\": 2")
                .into_bytes(),
            "format version 2",
        ),
        (
            "foreign",
            serde_json::to_vec(&alice.auth_json(3600, &rt)).unwrap(),
            "not a cs-tui account store",
        ),
        (
            "duplicate names",
            {
                let mut v: Value = serde_json::from_slice(&good).unwrap();
                let first = v["accounts"][0].clone();
                let mut copy = first.clone();
                copy["id"] = "ffffffffffffffffffffffffffffffff".into();
                v["accounts"] = json!([first, copy]);
                serde_json::to_vec(&v).unwrap()
            },
            "appears twice",
        ),
    ];
    let file = rig.accounts_json();
    for (label, bytes, needle) in cases {
        std::fs::write(&file, &bytes).unwrap();
        for args in [
            &["accounts", "list"][..],
            &["accounts", "list", "--json"],
            &["status"],
            &["accounts", "import"],
            &["accounts", "rename", "alice", "x"],
            &["accounts", "use", "alice"],
            &["accounts", "remove", "alice", "--yes"],
            &["accounts", "refresh"],
        ] {
            let run = rig.run(args).await;
            run.fails();
            assert!(run.stderr.contains(needle), "{label}: {run:#?}");
            assert!(
                run.stderr.contains(file.to_str().unwrap()),
                "{label}: {run:#?}"
            );
            assert!(run.stderr.contains("hint: "), "{label}: {run:#?}");
            assert!(run.stdout.is_empty(), "{label}: {run:#?}");
            assert_eq!(
                std::fs::read(&file).unwrap(),
                bytes,
                "{label}: {args:?} changed the file"
            );
        }
    }
    rig.assert_no_secret_leaked();
}

/// The leak check itself must bite, or the other tests prove nothing.
#[tokio::test(flavor = "multi_thread")]
async fn the_leak_check_catches_a_planted_token() {
    let rig = Rig::new().await;
    let (alice, rt) = rig.mock.add_account("alice");
    rig.write_codex_auth(&alice.auth_json(3600, &rt));
    rig.run(&["accounts", "import"]).await.ok();
    rig.assert_no_secret_leaked();
    let access = rig.stored_account("alice")["auth"]["access_token"].clone();
    let payload = access
        .as_str()
        .unwrap()
        .split('.')
        .nth(1)
        .unwrap()
        .to_owned();
    for planted in [rt.clone(), payload] {
        std::fs::write(
            rig.store_dir().join("logs/planted.log"),
            format!("oops {planted}"),
        )
        .unwrap();
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            rig.assert_no_secret_leaked()
        }));
        assert!(caught.is_err(), "a planted token went unnoticed");
    }
}

/// Every file under `dir`, recursively.
fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if entry.file_type().unwrap().is_dir() {
            out.extend(files_under(&path));
        } else if entry.file_type().unwrap().is_file() {
            out.push(path);
        }
    }
    out
}

/// The config is read by the commands that use it (a session, `doctor`'s check), never by
/// the others: a broken `config.toml` must not lock the user out of their accounts.
#[tokio::test(flavor = "multi_thread")]
async fn a_broken_config_stops_only_the_commands_that_read_it() {
    let rig = Rig::new().await;
    let (alice, alice_rt) = rig.mock.add_account("alice");
    rig.write_codex_auth(&alice.auth_json(3600, &alice_rt));
    std::fs::create_dir_all(rig.store_dir()).unwrap();
    std::fs::write(rig.store_dir().join("config.toml"), "no_such_key = true\n").unwrap();

    let list = rig.run(&["accounts", "list", "--json"]).await;
    assert_eq!(
        list.ok().json()["accounts"][0]["name"],
        "alice",
        "{list:#?}"
    );
    let status = rig.run(&["status", "--json"]).await;
    assert_eq!(
        status.ok().json()["accounts"][0]["state"],
        "ok",
        "{status:#?}"
    );

    // `serve` reads it, and says what is wrong with it.
    let serve = rig.run(&["serve"]).await;
    assert!(serve.fails().stderr.contains("config.toml"), "{serve:#?}");
}
