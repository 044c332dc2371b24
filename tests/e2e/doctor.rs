//! `cs-tui doctor` against a good rig (real codex, mock backend, a private store), a store
//! other users can read, and a backend that is down.

use std::os::unix::fs::PermissionsExt as _;

use crate::support::accounts::Rig;
use cs_tui_testkit::{CodexHome, codex_bin};
use serde_json::Value;

async fn rig_with_alice() -> Rig {
    let rig = Rig::new()
        .await
        .with_env("CS_TUI_CODEX_BIN", codex_bin().to_str().unwrap());
    let (alice, refresh) = rig.mock.add_account("alice");
    rig.import("alice", &alice.auth_json(3600, &refresh)).await;
    rig
}

fn check<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no {name} check: {report:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_good_rig_is_all_ok() {
    let rig = rig_with_alice().await;
    let run = rig.run(&["doctor", "--json"]).await;
    let report = run.ok().json();
    assert_eq!(report["ok"], true, "{report:#}");
    for c in report["checks"].as_array().unwrap() {
        assert_eq!(c["status"], "ok", "{c:#}");
    }
    for name in [
        "codex",
        "app-server",
        "store",
        "runtime",
        "account alice",
        "backend",
        "config",
    ] {
        check(&report, name);
    }
    assert!(
        check(&report, "codex")["message"]
            .as_str()
            .unwrap()
            .contains("(tested 0.169.0–0.171.0)"),
        "{report:#}"
    );

    let text = rig.run(&["doctor"]).await;
    text.ok();
    assert!(
        text.stdout.lines().all(|l| l.starts_with("ok   ")),
        "{text:#?}"
    );
    rig.assert_no_secret_leaked();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_others_can_read_fails_with_a_chmod_hint() {
    let rig = rig_with_alice().await;
    std::fs::set_permissions(rig.store_dir(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let run = rig.run(&["doctor"]).await;
    run.fails();
    let store_dir = rig.store_dir().display().to_string();
    assert!(
        run.stdout.contains(&format!("fail {store_dir} is 0755"))
            && run.stdout.contains(&format!("hint: chmod 700 {store_dir}")),
        "{run:#?}"
    );
    let report = rig.run(&["doctor", "--json"]).await.json();
    assert_eq!(report["ok"], false);
    assert_eq!(check(&report, "store")["status"], "fail");
    // The other checks still ran.
    assert_eq!(check(&report, "backend")["status"], "ok", "{report:#}");
    rig.assert_no_secret_leaked();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_is_down_fails() {
    // A chatgpt_base_url on a port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dead = CodexHome::offline(&format!("http://127.0.0.1:{port}"));
    let rig = rig_with_alice()
        .await
        .with_env("CODEX_HOME", dead.path().to_str().unwrap());
    let run = rig.run(&["doctor", "--json"]).await;
    run.fails();
    let report = run.json();
    let backend = check(&report, "backend");
    assert_eq!(backend["status"], "fail", "{report:#}");
    assert!(
        backend["message"].as_str().unwrap().contains(&format!(
            "http://127.0.0.1:{port}/backend-api/ cannot be reached"
        )),
        "{report:#}"
    );
    assert!(
        backend["hint"]
            .as_str()
            .unwrap()
            .contains("chatgpt_base_url")
    );
    assert_eq!(check(&report, "codex")["status"], "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_codex_config_fails_and_no_other_backend_is_tried() {
    let rig = rig_with_alice().await;
    std::fs::write(
        rig.codex_home.path().join("config.toml"),
        "chatgpt_base_url = [",
    )
    .unwrap();
    let run = rig.run(&["doctor", "--json"]).await;
    run.fails();
    let report = run.json();
    let config = check(&report, "config");
    assert_eq!(config["status"], "fail", "{report:#}");
    assert!(
        config["message"]
            .as_str()
            .unwrap()
            .contains("is not valid TOML"),
        "{report:#}"
    );
    let backend = check(&report, "backend");
    assert_eq!(backend["status"], "fail", "{report:#}");
    assert!(
        backend["message"]
            .as_str()
            .unwrap()
            .starts_with("not tried"),
        "{report:#}"
    );
}

/// A user who never ran Codex has no `~/.codex`: the app-server is tried on an empty Codex home
/// of the check's own, and nothing is created in their home or left in the store. A
/// `$CODEX_HOME` the user set that does not exist fails with what to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_codex_home_the_app_server_is_tried_on_an_empty_one() {
    let rig = rig_with_alice().await;
    // `HOME` is the directory the store is in.
    let home = rig.store_dir().parent().unwrap().to_owned();
    assert!(!home.join(".codex").exists());
    let mut cmd = rig.command(&["doctor", "--json"]);
    cmd.env_remove("CODEX_HOME");
    let run = rig.run_command(cmd, &["doctor", "--json"]).await;
    let report: Value = serde_json::from_str(&run.stdout).unwrap();
    let app_server = check(&report, "app-server");
    assert_eq!(app_server["status"], "ok", "{report:#}");
    assert!(
        app_server["message"]
            .as_str()
            .unwrap()
            .contains("on an empty Codex home"),
        "{report:#}"
    );
    assert!(!home.join(".codex").exists(), "doctor created ~/.codex");
    let runtime = rig.store_dir().join("runtime");
    let left: Vec<_> = std::fs::read_dir(&runtime)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left in {}: {left:?}", runtime.display());

    let missing = home.join("no-such-codex-home");
    let mut cmd = rig.command(&["doctor", "--json"]);
    cmd.env("CODEX_HOME", &missing);
    let run = rig.run_command(cmd, &["doctor", "--json"]).await;
    let report: Value = serde_json::from_str(&run.stdout).unwrap();
    let app_server = check(&report, "app-server");
    assert_eq!(app_server["status"], "fail", "{report:#}");
    assert!(
        app_server["hint"]
            .as_str()
            .unwrap()
            .contains("unset CODEX_HOME"),
        "{report:#}"
    );
    assert!(!missing.exists());
}
