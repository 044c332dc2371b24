//! Adding an account: run the real `codex login` with a temporary `CODEX_HOME` and read the
//! `auth.json` it leaves (docs/protocol.md §5).
//!
//! The temporary home lives inside the store directory (0700), not in a shared /tmp, and is
//! removed on every way out: success, a failed or missing codex, and Ctrl+C / SIGTERM / SIGHUP
//! (cs-tui catches those while the login runs, lets codex stop, then cleans up). Only SIGKILL
//! can leave one behind; the next `add` sweeps such leftovers.

use std::ffi::OsStr;
use std::io::ErrorKind;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use color_eyre::eyre::{Report, Result, WrapErr, eyre};
use tokio::signal::unix::{SignalKind, signal};

use super::codex_auth::{CodexAuth, auth_json_path, read_auth_json};
use super::store::Store;
use crate::errors::with_hint;

/// Temporary login homes are named `login-…` inside the store directory.
const LOGIN_DIR_PREFIX: &str = "login-";
/// A leftover login home older than this belongs to no running login.
const STALE_LOGIN_DIR: Duration = Duration::from_secs(24 * 3600);
/// How long codex gets to stop after an interrupt before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// The arguments cs-tui passes to codex. Credentials are forced into a file: with the keyring
/// store there would be no `auth.json` to import.
pub(crate) fn login_args(device_auth: bool) -> Vec<&'static str> {
    let mut args = vec!["login", "-c", "cli_auth_credentials_store=\"file\""];
    if device_auth {
        args.push("--device-auth");
    }
    args
}

/// Runs `codex login` (with `--device-auth` if asked) in a temporary `CODEX_HOME` and returns
/// the login it wrote. The terminal is codex's while it runs (it prints the URL to open).
pub(crate) async fn login_with_codex(
    store: &Store,
    codex_bin: &OsStr,
    device_auth: bool,
) -> Result<CodexAuth> {
    crate::paths::ensure_private_dir(store.dir())
        .wrap_err_with(|| format!("creating the store directory {}", store.dir().display()))?;
    sweep_stale_login_dirs(store.dir());
    // Private: codex writes the tokens in here.
    let home = tempfile::Builder::new()
        .prefix(LOGIN_DIR_PREFIX)
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir_in(store.dir())
        .wrap_err_with(|| {
            format!(
                "creating a temporary CODEX_HOME in {}",
                store.dir().display()
            )
        })?;
    let result = run_login(home.path(), codex_bin, device_auth).await;
    let home_path = home.path().to_owned();
    home.close().wrap_err_with(|| {
        format!(
            "removing the temporary CODEX_HOME {} (it holds tokens: delete it by hand)",
            home_path.display()
        )
    })?;
    result
}

async fn run_login(home: &Path, codex_bin: &OsStr, device_auth: bool) -> Result<CodexAuth> {
    let shown_bin = Path::new(codex_bin).display().to_string();
    // Registered before the child starts, so no interrupt can slip between the two.
    let mut interrupt = signal(SignalKind::interrupt()).wrap_err("catching Ctrl+C")?;
    let mut terminate = signal(SignalKind::terminate()).wrap_err("catching SIGTERM")?;
    let mut hangup = signal(SignalKind::hangup()).wrap_err("catching SIGHUP")?;

    let mut child = tokio::process::Command::new(codex_bin)
        .args(login_args(device_auth))
        .env("CODEX_HOME", home)
        .stdin(Stdio::inherit())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            let hint = if e.kind() == ErrorKind::NotFound {
                "install Codex (`npm install -g @openai/codex`) or point --codex-bin / CS_TUI_CODEX_BIN at it"
            } else {
                "check that --codex-bin / CS_TUI_CODEX_BIN names the codex executable"
            };
            with_hint(
                Report::new(e).wrap_err(format!("could not run {shown_bin}")),
                hint,
            )
        })?;
    tracing::info!(codex = %shown_bin, device_auth, "running codex login");

    let stop = tokio::select! {
        status = child.wait() => {
            let status = status.wrap_err_with(|| format!("waiting for {shown_bin} login"))?;
            return finish(home, &shown_bin, status);
        }
        _ = interrupt.recv() => None,
        _ = terminate.recv() => Some(nix::sys::signal::Signal::SIGTERM),
        _ = hangup.recv() => Some(nix::sys::signal::Signal::SIGHUP),
    };
    // Ctrl+C reached codex too (same process group); other signals are passed on.
    if let (Some(sig), Some(pid)) = (stop, child.id()) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig);
    }
    if tokio::time::timeout(STOP_GRACE, child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
    Err(with_hint(
        eyre!("the login was cancelled; nothing was stored"),
        "run `cs-tui accounts add NAME` again to log in",
    ))
}

fn finish(home: &Path, shown_bin: &str, status: ExitStatus) -> Result<CodexAuth> {
    if !status.success() {
        return Err(with_hint(
            eyre!("`{shown_bin} login` failed ({status}); nothing was stored"),
            "see codex's message above; `--device-auth` helps where no browser can open",
        ));
    }
    read_auth_json(&auth_json_path(home))?.ok_or_else(|| {
        with_hint(
            eyre!("`{shown_bin} login` finished but wrote no auth.json; nothing was stored"),
            "check that --codex-bin / CS_TUI_CODEX_BIN is the Codex CLI",
        )
    })
}

/// Removes login homes left by a login that was killed outright.
fn sweep_stale_login_dirs(store_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(store_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let stale = entry
            .metadata()
            .ok()
            .filter(|m| m.is_dir())
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > STALE_LOGIN_DIR);
        if stale
            && entry
                .file_name()
                .to_string_lossy()
                .starts_with(LOGIN_DIR_PREFIX)
        {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asks_codex_for_a_file_backed_login() {
        assert_eq!(
            login_args(false),
            ["login", "-c", "cli_auth_credentials_store=\"file\""]
        );
        assert_eq!(login_args(true).last(), Some(&"--device-auth"));
    }
}
