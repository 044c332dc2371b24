//! `cs-tui accounts add`: the real `codex login` cannot finish offline, so a stand-in codex
//! records how it was launched and writes an auth.json in the real format. Checked: the
//! arguments, the temporary CODEX_HOME (private, inside the store, gone afterwards on every
//! path), and the import of what it wrote.

use std::path::{Path, PathBuf};

use crate::support::accounts::{Rig, Run};
use serde_json::Value;

/// Writes the stand-in codex into `dir`. What it does is chosen by `FAKE_CODEX_MODE`; it
/// records into `FAKE_CODEX_RECORD` and copies `FAKE_CODEX_RECORD/auth.json` as its login.
fn stand_in_codex(dir: &Path) -> PathBuf {
    let path = dir.join("fake-codex");
    std::fs::write(
        &path,
        r#"#!/bin/sh
rec="$FAKE_CODEX_RECORD"
printf '%s\n' "$@" > "$rec/args"
printf '%s' "$CODEX_HOME" > "$rec/codex_home"
stat -c %a "$CODEX_HOME" > "$rec/codex_home_mode"
case "$FAKE_CODEX_MODE" in
  ok) cp "$rec/auth.json" "$CODEX_HOME/auth.json"; echo "Successfully logged in" ;;
  fail) cp "$rec/auth.json" "$CODEX_HOME/auth.json"; echo "Error logging in: denied" >&2; exit 1 ;;
  nothing) exit 0 ;;
  interrupt) cp "$rec/auth.json" "$CODEX_HOME/auth.json"; kill -INT "$PPID"; sleep 1; exit 130 ;;
esac
"#,
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

struct AddRig {
    rig: Rig,
    record: tempfile::TempDir,
    codex: PathBuf,
}

impl AddRig {
    async fn new() -> Self {
        let rig = Rig::new().await;
        let record = tempfile::tempdir().unwrap();
        let codex = stand_in_codex(record.path());
        Self { rig, record, codex }
    }

    /// The login the stand-in codex will "complete".
    fn will_log_in_as(&self, auth: &Value) {
        self.rig.remember_secrets(auth);
        std::fs::write(self.record.path().join("auth.json"), auth.to_string()).unwrap();
    }

    async fn add(&self, mode: &str, args: &[&str]) -> Run {
        let _ = std::fs::remove_file(self.record.path().join("codex_home"));
        let mut full = vec!["accounts", "add"];
        full.extend_from_slice(args);
        let mut cmd = self.rig.command(&full);
        cmd.env("CS_TUI_CODEX_BIN", &self.codex)
            .env("FAKE_CODEX_MODE", mode)
            .env("FAKE_CODEX_RECORD", self.record.path());
        self.rig.run_command(cmd, &full).await
    }

    fn recorded(&self, what: &str) -> String {
        std::fs::read_to_string(self.record.path().join(what))
            .unwrap_or_else(|e| panic!("the stand-in codex recorded no {what}: {e}"))
    }

    /// The temporary CODEX_HOME codex ran with: inside the store, private, and gone now.
    #[track_caller]
    fn assert_temp_home_gone(&self) {
        let home = PathBuf::from(self.recorded("codex_home"));
        assert!(home.starts_with(self.rig.store_dir()), "{}", home.display());
        assert_ne!(home, self.rig.codex_home.path());
        assert_eq!(self.recorded("codex_home_mode").trim(), "700");
        assert!(!home.exists(), "{} was left behind", home.display());
        let leftovers: Vec<_> = std::fs::read_dir(self.rig.store_dir())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("login-"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    fn stored_names(&self) -> Vec<String> {
        if !self.rig.accounts_json().exists() {
            return Vec::new();
        }
        self.rig.stored()["accounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["name"].as_str().unwrap().to_owned())
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn add_runs_codex_login_in_a_temporary_home_and_imports_the_login() {
    let t = AddRig::new().await;
    let (alice, rt) = t.rig.mock.add_account("alice");
    t.will_log_in_as(&alice.auth_json(3600, &rt));

    let run = t.add("ok", &["work"]).await;
    assert!(
        run.ok()
            .stdout
            .contains("Logged in and stored work (alice@example.com, plus)."),
        "{run:#?}"
    );
    assert!(
        run.stdout.contains("Successfully logged in"),
        "codex owns the terminal: {run:#?}"
    );
    assert_eq!(
        t.recorded("args"),
        "login\n-c\ncli_auth_credentials_store=\"file\"\n"
    );
    t.assert_temp_home_gone();
    assert_eq!(t.stored_names(), ["work"]);
    // The user's own CODEX_HOME was not used for the login.
    assert!(!t.rig.codex_auth_path().exists());

    // The stored login works.
    let status = t.rig.run(&["status", "--json"]).await.ok().json();
    assert_eq!(status["accounts"][0]["state"], "ok", "{status:#}");

    // --device-auth, and logging in again to the same account updates it.
    let rt2 = t.rig.mock.issue_refresh_token(&alice.chatgpt_account_id);
    let mut relogin = alice.auth_json(7200, &rt2);
    relogin["tokens"]["access_token"] = alice.access_token(7200, 5).into();
    t.will_log_in_as(&relogin);
    let run = t.add("ok", &["work", "--device-auth"]).await;
    assert!(
        run.ok()
            .stdout
            .contains("Logged in to work (alice@example.com, plus) again"),
        "{run:#?}"
    );
    assert_eq!(
        t.recorded("args"),
        "login\n-c\ncli_auth_credentials_store=\"file\"\n--device-auth\n"
    );
    t.assert_temp_home_gone();
    assert_eq!(t.stored_names(), ["work"]);
    assert_eq!(t.rig.stored_refresh_token("work"), rt2);

    // --codex-bin wins over the environment.
    let mut cmd = t
        .rig
        .command(&["accounts", "add", "x", "--codex-bin", "/nonexistent/codex"]);
    cmd.env("CS_TUI_CODEX_BIN", &t.codex);
    let run = t
        .rig
        .run_command(
            cmd,
            &["accounts", "add", "x", "--codex-bin", "/nonexistent/codex"],
        )
        .await;
    assert!(
        run.fails()
            .stderr
            .contains("could not run /nonexistent/codex"),
        "{run:#?}"
    );
    assert!(run.stderr.contains("hint: install Codex"), "{run:#?}");
    t.rig.assert_no_secret_leaked();
}

#[tokio::test(flavor = "multi_thread")]
async fn add_removes_the_temporary_home_when_the_login_fails() {
    let t = AddRig::new().await;
    let (alice, rt) = t.rig.mock.add_account("alice");
    t.will_log_in_as(&alice.auth_json(3600, &rt));

    // codex exits non-zero (after writing tokens, even).
    let run = t.add("fail", &["work"]).await;
    run.fails();
    assert!(run.stderr.contains("Error logging in: denied"), "{run:#?}");
    assert!(run.stderr.contains("login` failed"), "{run:#?}");
    assert!(run.stderr.contains("nothing was stored"), "{run:#?}");
    t.assert_temp_home_gone();
    assert!(t.stored_names().is_empty());

    // codex exits 0 without writing a login.
    let run = t.add("nothing", &["work"]).await;
    assert!(
        run.fails().stderr.contains("wrote no auth.json"),
        "{run:#?}"
    );
    t.assert_temp_home_gone();

    // Ctrl+C while codex runs: cs-tui lets codex stop, then cleans up.
    let run = t.add("interrupt", &["work"]).await;
    assert!(
        run.fails().stderr.contains("the login was cancelled"),
        "{run:#?}"
    );
    t.assert_temp_home_gone();
    assert!(t.stored_names().is_empty());

    // The login succeeds but NAME belongs to another account: nothing is stored, dir gone.
    let (bob, bob_rt) = t.rig.mock.add_account("bob");
    t.will_log_in_as(&bob.auth_json(3600, &bob_rt));
    t.add("ok", &["bob"]).await.ok();
    t.will_log_in_as(&alice.auth_json(3600, &rt));
    let run = t.add("ok", &["bob"]).await;
    assert!(
        run.fails().stderr.contains("belongs to another account"),
        "{run:#?}"
    );
    t.assert_temp_home_gone();
    assert_eq!(t.stored_names(), ["bob"]);

    // A bad name is refused before codex runs.
    let _ = std::fs::remove_file(t.record.path().join("args"));
    let run = t.add("ok", &["two words"]).await;
    assert!(run.fails().stderr.contains("hint:"), "{run:#?}");
    assert!(!t.record.path().join("args").exists());
    t.rig.assert_no_secret_leaked();
}
