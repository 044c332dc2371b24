//! Running `codex` the way its npm wrapper would, without Node.
//!
//! `codex` from npm is a Node script (`@openai/codex/bin/codex.js`) that finds the platform
//! package's native binary and runs it with two environment variables; Node's start-up costs
//! ~130 ms on every spawn. Both children cs-tui starts (the app-server and the Codex TUI) are on
//! the critical path of its launch, so they run the binary the wrapper would run, with the same
//! variables. Anything else (a native `codex`, an unknown layout) is run as given.

use std::ffi::{OsStr, OsString};
use std::path::PathBuf;

/// What to execute for `program`, and the environment to add: the npm package's native binary
/// when `program` is its wrapper, else `program` itself with nothing added.
pub fn exec_target(program: &OsStr) -> (OsString, Vec<(OsString, OsString)>) {
    match native_codex(program) {
        Some(native) => {
            tracing::debug!(binary = %native.binary.display(), "codex: the npm package's native binary");
            (native.binary.into_os_string(), native.env)
        }
        None => (program.to_owned(), Vec::new()),
    }
}

/// How long `codex --version` may take.
const VERSION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The version `codex --version` prints (`codex-cli 0.169.0` → `0.169.0`), run the way
/// [`exec_target`] runs Codex.
pub async fn version(program: &OsStr) -> color_eyre::Result<String> {
    let line = version_line(program, VERSION_TIMEOUT).await?;
    Ok(parse_version(&line).expect("version_line returns a line with a version"))
}

/// Why `codex --version` gave no version.
#[derive(Debug, thiserror::Error)]
pub enum VersionError {
    /// No such program (on PATH, or at the path given).
    #[error("`{program}` not found")]
    NotFound { program: String },
    #[error("running `{program} --version`: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("`{program} --version` did not answer within {timeout:?}")]
    Timeout {
        program: String,
        timeout: std::time::Duration,
    },
    #[error("`{program} --version` printed no version ({status})")]
    NoVersion {
        program: String,
        status: std::process::ExitStatus,
    },
}

/// The line of `program --version`'s output that holds the version (`codex-cli 0.169.0`),
/// trimmed; run the way [`exec_target`] runs Codex, killed after `timeout`.
pub async fn version_line(
    program: &OsStr,
    timeout: std::time::Duration,
) -> Result<String, VersionError> {
    let name = program.to_string_lossy().into_owned();
    let (binary, env) = exec_target(program);
    let run = tokio::process::Command::new(&binary)
        .envs(env)
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = match tokio::time::timeout(timeout, run).await {
        Err(_) => {
            return Err(VersionError::Timeout {
                program: name,
                timeout,
            });
        }
        Ok(Err(err)) if err.kind() == std::io::ErrorKind::NotFound => {
            return Err(VersionError::NotFound { program: name });
        }
        Ok(Err(source)) => {
            return Err(VersionError::Spawn {
                program: name,
                source,
            });
        }
        Ok(Ok(out)) => out,
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .find(|line| parse_version(line).is_some())
        .map(str::to_owned)
        .ok_or(VersionError::NoVersion {
            program: name,
            status: out.status,
        })
}

/// `codex-cli 0.169.0` → `0.169.0`: the last word that starts with a digit.
pub fn parse_version(output: &str) -> Option<String> {
    output
        .split_whitespace()
        .rev()
        .find(|word| word.starts_with(|c: char| c.is_ascii_digit()) && word.contains('.'))
        .map(str::to_owned)
}

/// The native Codex binary inside an npm install, and the environment its Node wrapper gives it.
#[derive(Debug, PartialEq)]
struct NativeCodex {
    binary: PathBuf,
    env: Vec<(OsString, OsString)>,
}

fn native_codex(program: &OsStr) -> Option<NativeCodex> {
    let script = super::resolve_program(program, std::env::var_os("PATH").as_deref())?;
    let script = std::fs::canonicalize(script).ok()?;
    if script.file_name()? != "codex.js" {
        return None;
    }
    let package_root = script.parent()?.parent()?;
    let manifest = std::fs::read_to_string(package_root.join("package.json")).ok()?;
    let manifest: serde_json::Value = serde_json::from_str(&manifest).ok()?;
    if manifest["name"] != "@openai/codex" {
        return None;
    }
    let (platform_package, triple) = match (std::env::consts::OS, std::env::consts::ARCH) {
        ("linux", "x86_64") => ("codex-linux-x64", "x86_64-unknown-linux-musl"),
        ("linux", "aarch64") => ("codex-linux-arm64", "aarch64-unknown-linux-musl"),
        ("macos", "x86_64") => ("codex-darwin-x64", "x86_64-apple-darwin"),
        ("macos", "aarch64") => ("codex-darwin-arm64", "aarch64-apple-darwin"),
        _ => return None,
    };
    // Where Node's resolution finds the platform package: nested, or beside it in @openai/.
    let binary = [
        package_root
            .join("node_modules/@openai")
            .join(platform_package),
        package_root.parent()?.join(platform_package),
    ]
    .into_iter()
    .map(|dir| dir.join("vendor").join(triple).join("bin/codex"))
    .find(|binary| binary.is_file())?;
    Some(NativeCodex {
        binary,
        env: vec![
            (
                "CODEX_MANAGED_PACKAGE_ROOT".into(),
                package_root.as_os_str().to_owned(),
            ),
            ("CODEX_MANAGED_BY_NPM".into(), "1".into()),
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{PermissionsExt, symlink};
    use std::path::Path;

    fn executable(path: &Path, body: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, body).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// An npm global install's layout: `.bin/codex` → `@openai/codex/bin/codex.js`, the
    /// platform package beside it.
    fn npm_layout(root: &Path, name: &str) -> PathBuf {
        let modules = root.join("lib/node_modules");
        executable(
            &modules.join("@openai/codex/bin/codex.js"),
            "#!/usr/bin/env node\n",
        );
        std::fs::write(
            modules.join("@openai/codex/package.json"),
            format!(r#"{{"name": "{name}", "version": "0.169.0"}}"#),
        )
        .unwrap();
        let (package, triple) = match std::env::consts::ARCH {
            "aarch64" => ("codex-linux-arm64", "aarch64-unknown-linux-musl"),
            _ => ("codex-linux-x64", "x86_64-unknown-linux-musl"),
        };
        executable(
            &modules
                .join("@openai")
                .join(package)
                .join("vendor")
                .join(triple)
                .join("bin/codex"),
            "#!/bin/sh\n",
        );
        std::fs::create_dir_all(root.join("bin")).unwrap();
        symlink(
            modules.join("@openai/codex/bin/codex.js"),
            root.join("bin/codex"),
        )
        .unwrap();
        root.join("bin/codex")
    }

    #[test]
    fn the_npm_wrapper_is_replaced_by_the_binary_it_would_run() {
        let dir = tempfile::tempdir().unwrap();
        let wrapper = npm_layout(dir.path(), "@openai/codex");
        let native = native_codex(wrapper.as_os_str()).expect("resolved");
        let root = std::fs::canonicalize(dir.path())
            .unwrap()
            .join("lib/node_modules/@openai");
        assert!(native.binary.starts_with(&root), "{native:?}");
        assert!(native.binary.ends_with("bin/codex"), "{native:?}");
        assert_eq!(
            native.env,
            vec![
                (
                    OsString::from("CODEX_MANAGED_PACKAGE_ROOT"),
                    root.join("codex").into_os_string()
                ),
                ("CODEX_MANAGED_BY_NPM".into(), "1".into()),
            ]
        );
    }

    #[test]
    fn anything_else_runs_as_given() {
        let dir = tempfile::tempdir().unwrap();
        // Another package's codex.js, a native binary, a missing program.
        let foreign = npm_layout(dir.path(), "someone-else");
        assert_eq!(native_codex(foreign.as_os_str()), None);
        let plain = dir.path().join("native/codex");
        executable(&plain, "#!/bin/sh\n");
        assert_eq!(native_codex(plain.as_os_str()), None);
        assert_eq!(native_codex(dir.path().join("nope").as_os_str()), None);
    }

    #[test]
    fn versions_are_read_from_codex_version_output() {
        assert_eq!(
            parse_version("codex-cli 0.169.0\n").as_deref(),
            Some("0.169.0")
        );
        assert_eq!(
            parse_version("codex-cli 0.171.0-alpha.2").as_deref(),
            Some("0.171.0-alpha.2")
        );
        assert_eq!(parse_version("codex-cli\n"), None);
        assert_eq!(parse_version(""), None);
    }

    #[tokio::test]
    async fn the_pinned_codex_reports_its_version() {
        let pinned = Path::new(env!("CARGO_MANIFEST_DIR")).join("node_modules/.bin/codex");
        assert_eq!(version(pinned.as_os_str()).await.unwrap(), "0.169.0");
        let missing = version(OsStr::new("/nonexistent/codex")).await.unwrap_err();
        assert!(
            format!("{missing:#}").contains("/nonexistent/codex"),
            "{missing:#}"
        );
    }

    #[test]
    fn the_pinned_codex_resolves_to_its_binary() {
        let pinned = Path::new(env!("CARGO_MANIFEST_DIR")).join("node_modules/.bin/codex");
        let native = native_codex(pinned.as_os_str())
            .expect("scripts/install-codex put the pinned @openai/codex in node_modules");
        let out = std::process::Command::new(&native.binary)
            .arg("--version")
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("0.169.0"),
            "{out:?}"
        );
    }
}
