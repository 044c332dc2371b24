//! `cs-tui doctor [--json]`: checks what cs-tui needs, each check with a timeout, each line
//! `ok`, `warn` or `fail` with a hint. Exits 1 when any check fails.

use std::ffi::OsStr;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::Utc;
use color_eyre::eyre::{Result, WrapErr, eyre};
use serde::Serialize;

use crate::accounts::{AccountAuth, AccountStatus, Store};
use crate::proxy::app_server::{AppServer, AppServerOptions};
use crate::proxy::upstream::{ClientIdentity, ControlConnection};

/// The Codex releases the end-to-end tests run against: the pinned one (package.json) and the
/// newest (`CODEX_NEWEST` in scripts/test-codex-newest; a unit test keeps them in step).
pub(crate) const TESTED_CODEX_OLDEST: &str = "0.169.0";
pub(crate) const TESTED_CODEX_NEWEST: &str = "0.171.0";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Status {
    Ok,
    Warn,
    Fail,
}

/// One line of the report.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct Check {
    /// What was checked: `codex`, `app-server`, `store`, `runtime`, `account NAME`, `backend`,
    /// `config`.
    pub name: String,
    pub status: Status,
    pub message: String,
    pub hint: Option<String>,
}

impl Check {
    fn ok(name: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            status: Status::Ok,
            message: message.into(),
            hint: None,
        }
    }

    fn warn(name: impl Into<String>, message: impl Into<String>, hint: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            status: Status::Warn,
            message: message.into(),
            hint: Some(hint.into()),
        }
    }

    fn fail(name: impl Into<String>, message: impl Into<String>, hint: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            status: Status::Fail,
            message: message.into(),
            hint: Some(hint.into()),
        }
    }
}

/// `doctor --json`'s output.
#[derive(Serialize)]
pub(crate) struct Report<'a> {
    pub ok: bool,
    pub tested_codex: [&'static str; 2],
    pub checks: &'a [Check],
}

/// Where a Codex version stands against the tested range.
pub(crate) fn judge_codex_version(version: &str) -> Check {
    let range = format!("tested {TESTED_CODEX_OLDEST}–{TESTED_CODEX_NEWEST}");
    let parse = |v: &str| semver::Version::parse(v).ok();
    let (Some(have), Some(oldest), Some(newest)) = (
        parse(version),
        parse(TESTED_CODEX_OLDEST),
        parse(TESTED_CODEX_NEWEST),
    ) else {
        return Check::warn(
            "codex",
            format!("codex {version}: not a version cs-tui can compare ({range})"),
            format!("install a tested release: npm install -g @openai/codex@{TESTED_CODEX_NEWEST}"),
        );
    };
    if have < oldest {
        Check::fail(
            "codex",
            format!("codex {version} is older than cs-tui supports ({range})"),
            format!("update it: npm install -g @openai/codex@{TESTED_CODEX_NEWEST}"),
        )
    } else if have > newest {
        Check::warn(
            "codex",
            format!("codex {version} is newer than cs-tui was tested with ({range})"),
            format!(
                "it likely works; if switching misbehaves, npm install -g @openai/codex@{TESTED_CODEX_NEWEST}"
            ),
        )
    } else {
        Check::ok("codex", format!("codex {version} ({range})"))
    }
}

/// Whether a path is private to us: owned by this user, no group or other bits.
fn private_check(name: &str, path: &Path, want_mode: u32) -> Option<Check> {
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return None,
        Err(err) => {
            return Some(Check::fail(
                name,
                format!("{} cannot be read: {err}", path.display()),
                "check the path's permissions",
            ));
        }
    };
    let mode = meta.permissions().mode() & 0o777;
    let uid = nix::unistd::getuid().as_raw();
    if meta.uid() != uid {
        return Some(Check::fail(
            name,
            format!(
                "{} belongs to uid {}, not to you",
                path.display(),
                meta.uid()
            ),
            format!("chown it to yourself: chown -R $(id -u) {}", path.display()),
        ));
    }
    if mode & 0o077 != 0 {
        return Some(Check::fail(
            name,
            format!(
                "{} is {mode:04o}: other users can reach it (it must be {want_mode:04o})",
                path.display()
            ),
            format!("chmod {want_mode:o} {}", path.display()),
        ));
    }
    None
}

fn store_checks(store_dir: &Path) -> (Vec<Check>, Option<crate::accounts::AccountsFile>) {
    let mut checks = Vec::new();
    if !store_dir.exists() {
        checks.push(Check::warn(
            "store",
            format!("no store yet at {}", store_dir.display()),
            "add an account: cs-tui accounts import (reads ~/.codex/auth.json) or cs-tui accounts add NAME",
        ));
        return (checks, None);
    }
    let mut problems: Vec<Check> = [
        ("store", store_dir.to_owned(), 0o700),
        ("store", store_dir.join("accounts.json"), 0o600),
        ("store", store_dir.join("accounts.json.bak"), 0o600),
    ]
    .iter()
    .filter_map(|(name, path, mode)| private_check(name, path, *mode))
    .collect();
    let store = Store::open(store_dir);
    let file = match store.load() {
        Ok(file) => Some(file),
        Err(err) => {
            problems.push(Check::fail(
                "store",
                format!("{err:#}"),
                format!(
                    "the previous version is {}; nothing was changed",
                    store.backup_path().display()
                ),
            ));
            None
        }
    };
    if problems.is_empty() {
        let count = file.as_ref().map_or(0, |f| f.accounts.len());
        checks.push(Check::ok(
            "store",
            format!(
                "store {} is private ({count} account{})",
                store_dir.display(),
                if count == 1 { "" } else { "s" }
            ),
        ));
    }
    checks.extend(problems);

    let runtime_problems: Vec<Check> = [
        ("runtime", store_dir.join("runtime"), 0o700),
        ("runtime", store_dir.join("logs"), 0o700),
    ]
    .iter()
    .filter_map(|(name, path, mode)| private_check(name, path, *mode))
    .collect();
    if runtime_problems.is_empty() {
        checks.push(Check::ok(
            "runtime",
            format!(
                "runtime and log directories under {} are private",
                store_dir.display()
            ),
        ));
    }
    checks.extend(runtime_problems);
    (checks, file)
}

fn account_checks(file: &crate::accounts::AccountsFile) -> Vec<Check> {
    let now = Utc::now();
    file.accounts
        .iter()
        .map(|account| {
            let name = format!("account {}", account.name);
            match (&account.auth, &account.status) {
                (AccountAuth::ApiKey { .. }, _) => {
                    Check::ok(name, format!("{}: API key", account.name))
                }
                // Not a failure: the account is kept for the newer cs-tui that wrote it.
                (AccountAuth::Unknown(unknown), _) => Check::warn(
                    name,
                    format!(
                        "{}: {}; it is never used here",
                        account.name,
                        crate::accounts::store::unsupported_sign_in_state(unknown.kind())
                    ),
                    format!(
                        "use it with that newer cs-tui, or remove it: cs-tui accounts remove {}",
                        account.name
                    ),
                ),
                (_, AccountStatus::NeedsLogin { reason }) => Check::fail(
                    name,
                    format!("{} needs a new login: {reason}", account.name),
                    crate::accounts::tokens::relogin_command(&account.name),
                ),
                (
                    AccountAuth::ChatGpt { .. },
                    AccountStatus::Ok | AccountStatus::Unknown { .. },
                ) => match account.access_claims().and_then(|c| c.expires_at) {
                    Some(exp) if exp > now => Check::ok(
                        name,
                        format!(
                            "{}: access token valid for {}m",
                            account.name,
                            (exp - now).num_minutes()
                        ),
                    ),
                    Some(_) => Check::ok(
                        name,
                        format!(
                            "{}: access token expired; it is refreshed at the next use",
                            account.name
                        ),
                    ),
                    None => Check::warn(
                        name,
                        format!("{}: the access token is not readable", account.name),
                        format!("refresh it: cs-tui accounts refresh {}", account.name),
                    ),
                },
            }
        })
        .collect()
}

fn config_check(store_dir: &Path, codex_home: Option<&Path>) -> Check {
    let path = store_dir.join(crate::config::CONFIG_FILE);
    if let Err(err) = crate::config::Config::load(&path) {
        let hint = crate::errors::hints(&err)
            .into_iter()
            .next()
            .unwrap_or_else(|| "fix the file or move it away".to_owned());
        return Check::fail("config", format!("{err:#}"), hint);
    }
    if let Some(home) = codex_home
        && let Err(err) = crate::accounts::chatgpt_base_url(home)
    {
        let hint = crate::errors::hints(&err)
            .into_iter()
            .next()
            .unwrap_or_else(|| "fix the file".to_owned());
        return Check::fail("config", format!("{err:#}"), hint);
    }
    Check::ok(
        "config",
        format!(
            "{} and Codex's config.toml are valid",
            if path.exists() {
                path.display().to_string()
            } else {
                format!("{} (absent: defaults)", path.display())
            }
        ),
    )
}

async fn backend_check(http: Result<&reqwest::Client>, base: &str, timeout: Duration) -> Check {
    let hint = "check the network, or chatgpt_base_url in $CODEX_HOME/config.toml";
    let client = match http {
        Ok(client) => client,
        Err(err) => return Check::fail("backend", format!("no HTTP client: {err:#}"), hint),
    };
    let url = crate::accounts::usage::usage_url(base);
    let started = Instant::now();
    // Without a token the answer is 401 or so: any answer proves the backend is reachable.
    match client.get(&url).timeout(timeout).send().await {
        Ok(response) => Check::ok(
            "backend",
            format!(
                "{base} answers (HTTP {} in {} ms)",
                response.status().as_u16(),
                started.elapsed().as_millis()
            ),
        ),
        Err(err) if err.is_timeout() => Check::fail(
            "backend",
            format!("{base} did not answer within {}s", timeout.as_secs()),
            hint,
        ),
        Err(err) => Check::fail(
            "backend",
            format!("{base} cannot be reached: {}", connect_failure(&err)),
            hint,
        ),
    }
}

/// The innermost cause of a request error (reqwest's outer message only names the URL).
fn connect_failure(err: &reqwest::Error) -> String {
    let mut source: Option<&dyn std::error::Error> = Some(err);
    let mut last = err.to_string();
    while let Some(e) = source {
        last = e.to_string();
        source = e.source();
    }
    last
}

async fn app_server_check(
    codex_bin: &std::ffi::OsStr,
    codex_home: PathBuf,
    store_dir: &Path,
) -> Result<String> {
    let started = Instant::now();
    let root = store_dir.join("runtime");
    crate::paths::ensure_private_dir(&root)
        .wrap_err_with(|| format!("creating {}", root.display()))?;
    // Removed however the check ends: a failed start, or the check's time limit dropping it.
    let runtime = tempfile::Builder::new()
        .prefix(&format!("{}-doctor-", std::process::id()))
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir_in(&root)
        .wrap_err_with(|| format!("creating a directory in {}", root.display()))?;
    let runtime_dir = runtime.path();
    // A Codex home that does not exist yet: the default one is made by the first session (as
    // by Codex's own first run), and a check creates nothing of the user's, so the app-server
    // is tried on an empty one of its own. One the user chose must exist.
    let missing = !codex_home.is_dir();
    if missing && crate::paths::chosen_codex_home().is_some() {
        return Err(crate::errors::with_hint(
            eyre!(
                "CODEX_HOME is {}, which is not a directory",
                codex_home.display()
            ),
            "create it, or unset CODEX_HOME to use ~/.codex",
        ));
    }
    let codex_home = if missing {
        let empty = runtime_dir.join("codex-home");
        crate::paths::ensure_private_dir(&empty)
            .wrap_err_with(|| format!("creating {}", empty.display()))?;
        empty
    } else {
        codex_home
    };
    let server = AppServer::start(AppServerOptions {
        codex_bin: codex_bin.to_owned(),
        codex_home,
        runtime_dir: runtime_dir.join("app-server"),
        stderr_log: store_dir
            .join("logs")
            .join(format!("app-server-doctor-{}.log", std::process::id())),
        env: Vec::new(),
    })
    .await?;
    let ready_ms = started.elapsed().as_millis();
    let (events, _ignored) = tokio::sync::mpsc::unbounded_channel();
    let identity = ClientIdentity::codex_tui(server.codex_version());
    let connected = ControlConnection::connect(&server.addr(), &identity, events).await;
    server.shutdown().await;
    connected.wrap_err("the app-server started but did not answer `initialize`")?;
    if missing {
        return Ok(format!(
            "codex app-server starts and answers ({ready_ms} ms), on an empty Codex home: \
             ~/.codex does not exist yet (the first session creates it)"
        ));
    }
    Ok(format!(
        "codex app-server starts and answers ({ready_ms} ms)"
    ))
}

/// Runs every check, each within `timeout`: `codex_bin`, the store in `store_dir` (or why
/// there is none), the backend through `http`.
pub(crate) async fn run_checks(
    codex_bin: &OsStr,
    store_dir: Result<&Path>,
    http: Result<&reqwest::Client>,
    timeout: Duration,
) -> Vec<Check> {
    let mut checks = Vec::new();
    let codex_home = crate::paths::codex_home().ok();
    // With Codex's config unreadable, the backend it would use is unknown: the config
    // check says why, and no other address is tried in its place.
    let base = match codex_home.as_deref() {
        Some(home) => crate::accounts::chatgpt_base_url(home).ok(),
        None => Some(crate::accounts::usage::DEFAULT_CHATGPT_BASE_URL.to_owned()),
    };

    let codex = async {
        match crate::process::codex::version(codex_bin).await {
            Ok(version) => (judge_codex_version(&version), true),
            Err(err) => (
                Check::fail(
                    "codex",
                    format!("{err:#}"),
                    format!(
                        "install it: npm install -g @openai/codex@{TESTED_CODEX_NEWEST}, or name it with --codex-bin / CS_TUI_CODEX_BIN"
                    ),
                ),
                false,
            ),
        }
    };
    let ((codex_check, codex_found), backend) = tokio::join!(
        limited_pair(timeout, codex),
        limited("backend", timeout, async {
            match &base {
                Some(base) => backend_check(http, base, timeout).await,
                None => Check::fail(
                    "backend",
                    "not tried: Codex's config.toml cannot be read",
                    "fix $CODEX_HOME/config.toml (see the config line)",
                ),
            }
        })
    );
    checks.push(codex_check);

    let app_server = match (&store_dir, &codex_home, codex_found) {
        (Ok(store_dir), Some(home), true) => {
            limited("app-server", timeout, async {
                match app_server_check(codex_bin, home.clone(), store_dir).await {
                    Ok(message) => Check::ok("app-server", message),
                    Err(err) => Check::fail(
                        "app-server",
                        format!("{err:#}"),
                        crate::errors::hints(&err).into_iter().next().unwrap_or_else(|| {
                            "run `codex app-server --help` to see whether this Codex has one; the log is in <store>/logs/".to_owned()
                        }),
                    ),
                }
            })
            .await
        }
        (_, _, false) => Check::fail(
            "app-server",
            "not tried: codex was not found",
            "install Codex first",
        ),
        (Err(err), _, _) => Check::fail("app-server", format!("{err:#}"), "set CS_TUI_HOME"),
        (_, None, _) => Check::fail(
            "app-server",
            "no CODEX_HOME: neither $CODEX_HOME nor a home directory is set",
            "set CODEX_HOME or HOME",
        ),
    };
    checks.push(app_server);

    match &store_dir {
        Ok(store_dir) => {
            let (store, file) = store_checks(store_dir);
            checks.extend(store);
            if let Some(file) = &file {
                if file.accounts.is_empty() {
                    checks.push(Check::warn(
                        "accounts",
                        "no account stored",
                        "cs-tui accounts import, or cs-tui accounts add NAME",
                    ));
                }
                checks.extend(account_checks(file));
            }
            checks.push(backend);
            checks.push(config_check(store_dir, codex_home.as_deref()));
        }
        Err(err) => {
            checks.push(Check::fail("store", format!("{err:#}"), "set CS_TUI_HOME"));
            checks.push(backend);
        }
    }
    checks
}

/// A check that must end within `timeout`.
async fn limited<F: std::future::Future<Output = Check>>(
    name: &str,
    timeout: Duration,
    future: F,
) -> Check {
    tokio::time::timeout(timeout, future)
        .await
        .unwrap_or_else(|_| {
            Check::fail(
                name,
                format!("no answer within {}s", timeout.as_secs()),
                "try again, or raise --timeout",
            )
        })
}

async fn limited_pair<F: std::future::Future<Output = (Check, bool)>>(
    timeout: Duration,
    future: F,
) -> (Check, bool) {
    tokio::time::timeout(timeout, future)
        .await
        .unwrap_or_else(|_| {
            (
                Check::fail(
                    "codex",
                    format!(
                        "`codex --version` did not answer within {}s",
                        timeout.as_secs()
                    ),
                    "try again, or raise --timeout",
                ),
                false,
            )
        })
}

/// `ok   …` / `warn …` / `fail …`, each problem with its hint below.
pub(crate) fn render(checks: &[Check]) -> String {
    let mut out = String::new();
    for check in checks {
        let word = match check.status {
            Status::Ok => "ok  ",
            Status::Warn => "warn",
            Status::Fail => "fail",
        };
        out.push_str(&format!("{word} {}\n", check.message));
        if let Some(hint) = &check.hint {
            out.push_str(&format!("     hint: {hint}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unsupported_sign_in_is_a_warning_that_names_its_kind_and_no_value() {
        let file: crate::accounts::AccountsFile = serde_json::from_value(serde_json::json!({
            "version": 1,
            "accounts": [{
                "id": "f1", "name": "future", "created_at": "2026-01-01T00:00:00Z",
                "auth": {"type": "device_code", "device_token": "SECRET-DEVICE"}
            }]
        }))
        .unwrap();
        let [check] = account_checks(&file).try_into().unwrap();
        assert_eq!(check.status, Status::Warn);
        assert_eq!(check.name, "account future");
        assert!(
            check
                .message
                .contains("unsupported sign-in `device_code` (from a newer cs-tui)"),
            "{check:?}"
        );
        assert!(
            check
                .hint
                .as_deref()
                .unwrap()
                .contains("cs-tui accounts remove future"),
            "{check:?}"
        );
        assert!(!format!("{check:?}").contains("SECRET"));
    }

    #[test]
    fn versions_are_judged_against_the_tested_range() {
        assert_eq!(judge_codex_version("0.169.0").status, Status::Ok);
        assert_eq!(judge_codex_version("0.170.5").status, Status::Ok);
        assert_eq!(judge_codex_version("0.171.0").status, Status::Ok);
        let newer = judge_codex_version("0.172.0");
        assert_eq!(newer.status, Status::Warn);
        assert!(
            newer.message.contains("tested 0.169.0–0.171.0"),
            "{newer:?}"
        );
        assert_eq!(judge_codex_version("0.168.9").status, Status::Fail);
        assert_eq!(judge_codex_version("banana").status, Status::Warn);
        assert!(judge_codex_version("0.169.0").hint.is_none());
    }

    /// The range here, the pinned Codex (package.json), the newest one CI tests
    /// (scripts/test-codex-newest) and the README agree.
    #[test]
    fn the_tested_range_matches_ci_and_the_readme() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let read = |p: &str| std::fs::read_to_string(root.join(p)).unwrap();
        let script = read("scripts/test-codex-newest");
        assert!(
            script.contains(&format!("\nCODEX_NEWEST={TESTED_CODEX_NEWEST}\n")),
            "scripts/test-codex-newest must set CODEX_NEWEST={TESTED_CODEX_NEWEST}"
        );
        let package: serde_json::Value = serde_json::from_str(&read("package.json")).unwrap();
        assert_eq!(
            package["dependencies"]["@openai/codex"], TESTED_CODEX_OLDEST,
            "package.json pins the oldest tested Codex"
        );
        let readme = read("README.md");
        assert!(
            readme.contains(&format!("{TESTED_CODEX_OLDEST}–{TESTED_CODEX_NEWEST}")),
            "README.md names the tested range"
        );
    }

    #[test]
    fn wide_permissions_fail_with_a_chmod_hint() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let check = private_check("store", dir.path(), 0o700).unwrap();
        assert_eq!(check.status, Status::Fail);
        assert!(check.hint.unwrap().starts_with("chmod 700 "));
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        assert_eq!(private_check("store", dir.path(), 0o700), None);
    }
}
