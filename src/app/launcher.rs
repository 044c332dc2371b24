//! The child's command line: what `cs-tui [CODEX ARGS]` may pass to Codex, and the final
//! `codex [ARGS] --remote unix://…` (or `--remote ws://… --remote-auth-token-env VAR`).

use std::ffi::{OsStr, OsString};
use std::path::Path;

/// Where Codex connects: the proxy's address, and the variable holding its bearer token when
/// it needs one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RemoteTarget {
    /// `unix://PATH` or `ws://127.0.0.1:PORT`.
    pub url: String,
    /// The name of the environment variable that holds the token (never the token itself);
    /// `None` for a unix socket, which Codex reaches without one.
    pub token_env: Option<String>,
}

/// Why the arguments cannot be run in the pane.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum LaunchError {
    #[error("`codex {subcommand}` does not run in cs-tui: {why}")]
    UnsupportedSubcommand {
        subcommand: String,
        why: &'static str,
    },
    #[error("{flag} is set by cs-tui itself (Codex talks to cs-tui's proxy)")]
    RemoteFlag { flag: String },
    #[error("`{flag}` prints and exits; run `codex {flag}` directly")]
    NotInteractive { flag: String },
    #[error("{flag} needs a value")]
    MissingValue { flag: String },
}

/// Subcommands that start the interactive TUI, which is what the pane hosts.
const INTERACTIVE_SUBCOMMANDS: &[&str] = &["resume", "fork"];

/// Codex's other subcommands (0.169.0), none of which is the interactive TUI on `--remote`.
const OTHER_SUBCOMMANDS: &[(&str, &str)] = &[
    ("exec", "it is non-interactive; run `codex exec` directly"),
    ("e", "it is non-interactive; run `codex exec` directly"),
    (
        "review",
        "it is non-interactive; run `codex review` directly",
    ),
    ("login", "add accounts with `cs-tui accounts add`"),
    ("logout", "remove accounts with `cs-tui accounts remove`"),
    ("mcp", "it manages configuration; run `codex mcp` directly"),
    (
        "plugin",
        "it manages configuration; run `codex plugin` directly",
    ),
    ("app-server", "cs-tui runs its own app-server"),
    ("remote-control", "cs-tui runs its own app-server"),
    ("exec-server", "it is a server; run it directly"),
    ("completion", "run `codex completion` directly"),
    ("update", "run `codex update` directly"),
    ("doctor", "run `codex doctor` directly"),
    ("sandbox", "run `codex sandbox` directly"),
    ("debug", "run `codex debug` directly"),
    ("apply", "run `codex apply` directly"),
    ("a", "run `codex apply` directly"),
    ("queue", "run `codex queue` directly"),
    ("archive", "run `codex archive` directly"),
    ("unarchive", "run `codex unarchive` directly"),
    ("delete", "run `codex delete` directly"),
    ("migrate-rollouts", "run it with `codex` directly"),
    ("migrate-nfs-db", "run it with `codex` directly"),
    (
        "cloud",
        "it talks to Codex Cloud, not to an app-server; run `codex cloud` directly",
    ),
    ("features", "run `codex features` directly"),
    (
        "agents",
        "it is a separate session browser; run `codex agents` directly",
    ),
    ("help", "run `codex help` directly"),
];

/// Options that take a value (as the next argument unless written `--opt=value` / `-Xvalue`).
const OPTIONS_WITH_VALUE: &[&str] = &[
    "-c",
    "--config",
    "--enable",
    "--disable",
    "--remote",
    "--remote-auth-token-env",
    "-i",
    "--image",
    "-m",
    "--model",
    "--local-provider",
    "-p",
    "--profile",
    "-s",
    "--sandbox",
    "-C",
    "--cd",
    "--add-dir",
    "-a",
    "--ask-for-approval",
];

/// One argument, classified.
#[derive(Debug, PartialEq, Eq)]
enum Arg<'a> {
    /// An option; `name` without any `=value`; `takes_next` if its value is the next argument.
    Option { name: &'a str, takes_next: bool },
    /// A positional argument at this index.
    Positional(usize),
    /// `--`: everything after it is positional.
    EndOfOptions(usize),
}

fn option_name(arg: &str) -> (&str, bool) {
    if let Some(long) = arg.strip_prefix("--") {
        match long.split_once('=') {
            Some((name, _)) => (&arg[..2 + name.len()], true),
            None => (arg, false),
        }
    } else {
        // Short options: `-m` or `-mgpt-5` (value attached). The name is `-` and one
        // character, which need not be one byte (`-é`).
        let end = arg.char_indices().nth(2).map_or(arg.len(), |(i, _)| i);
        (&arg[..end], end < arg.len())
    }
}

fn classify(args: &[OsString]) -> Result<Vec<Arg<'_>>, LaunchError> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let Some(text) = args[i].to_str() else {
            out.push(Arg::Positional(i));
            i += 1;
            continue;
        };
        if text == "--" {
            out.push(Arg::EndOfOptions(i));
            break;
        }
        if text.starts_with('-') && text.len() > 1 {
            let (name, has_inline_value) = option_name(text);
            let takes_next = OPTIONS_WITH_VALUE.contains(&name) && !has_inline_value;
            if takes_next && i + 1 >= args.len() {
                return Err(LaunchError::MissingValue {
                    flag: name.to_owned(),
                });
            }
            out.push(Arg::Option { name, takes_next });
            i += if takes_next { 2 } else { 1 };
        } else {
            out.push(Arg::Positional(i));
            i += 1;
        }
    }
    Ok(out)
}

/// Checks that `args` run the interactive TUI and leave `--remote` to cs-tui. Returns the
/// index of a `resume`/`fork` subcommand, if any.
pub(crate) fn validate_codex_args(args: &[OsString]) -> Result<Option<usize>, LaunchError> {
    let classified = classify(args)?;
    for arg in &classified {
        if let Arg::Option { name, .. } = arg {
            match *name {
                "--remote" | "--remote-auth-token-env" => {
                    return Err(LaunchError::RemoteFlag {
                        flag: (*name).to_owned(),
                    });
                }
                "-h" | "--help" | "-V" | "--version" => {
                    return Err(LaunchError::NotInteractive {
                        flag: (*name).to_owned(),
                    });
                }
                _ => {}
            }
        }
    }
    // The first positional is the subcommand, or the start of the prompt.
    let first = classified.iter().find_map(|arg| match arg {
        Arg::Positional(i) => Some(*i),
        _ => None,
    });
    let Some(index) = first else {
        return Ok(None);
    };
    let word = args[index].to_string_lossy();
    if INTERACTIVE_SUBCOMMANDS.contains(&word.as_ref()) {
        return Ok(Some(index));
    }
    if let Some((_, why)) = OTHER_SUBCOMMANDS.iter().find(|(name, _)| *name == word) {
        return Err(LaunchError::UnsupportedSubcommand {
            subcommand: word.into_owned(),
            why,
        });
    }
    Ok(None)
}

fn gives_cwd(args: &[OsString]) -> bool {
    classify(args).is_ok_and(|classified| {
        classified.iter().any(|arg| {
            matches!(
                arg,
                Arg::Option {
                    name: "-C" | "--cd",
                    ..
                }
            )
        })
    })
}

/// The child's arguments: the user's, `-C <cwd>` unless they gave one (after `resume`/`fork`
/// when present, so it applies to that subcommand), and `--remote`/`--remote-auth-token-env`
/// when a proxy is in front (before any `--`, so they stay options).
pub(crate) fn codex_command_args(
    user_args: &[OsString],
    cwd: &Path,
    remote: Option<&RemoteTarget>,
) -> Result<Vec<OsString>, LaunchError> {
    let subcommand = validate_codex_args(user_args)?;
    let mut args: Vec<OsString> = user_args.to_vec();
    if !gives_cwd(user_args) {
        let at = subcommand.map_or(0, |i| i + 1);
        args.splice(at..at, [OsString::from("-C"), cwd.as_os_str().to_owned()]);
    }
    if let Some(remote) = remote {
        let end = args
            .iter()
            .position(|a| a.as_os_str() == OsStr::new("--"))
            .unwrap_or(args.len());
        let mut flags = vec![OsString::from("--remote"), OsString::from(&remote.url)];
        if let Some(token_env) = &remote.token_env {
            flags.extend([OsString::from("--remote-auth-token-env"), token_env.into()]);
        }
        args.splice(end..end, flags);
    }
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    fn strings(list: &[OsString]) -> Vec<String> {
        list.iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    fn remote() -> RemoteTarget {
        RemoteTarget {
            url: "ws://127.0.0.1:4100".into(),
            token_env: Some("CS_TUI_PROXY_TOKEN".into()),
        }
    }

    #[test]
    fn interactive_forms_are_accepted_and_completed() {
        let cwd = Path::new("/work/project");
        let table: &[(&[&str], &[&str])] = &[
            (&[], &["-C", "/work/project"]),
            (
                &["fix the tests"],
                &["-C", "/work/project", "fix the tests"],
            ),
            (
                &["-m", "gpt-5", "fix it"],
                &["-C", "/work/project", "-m", "gpt-5", "fix it"],
            ),
            (
                &["resume", "--last"],
                &["resume", "-C", "/work/project", "--last"],
            ),
            (
                &["-m", "gpt-5", "fork", "abc"],
                &["-m", "gpt-5", "fork", "-C", "/work/project", "abc"],
            ),
            // A value that looks like a subcommand is a value.
            (
                &["-m", "exec", "hello"],
                &["-C", "/work/project", "-m", "exec", "hello"],
            ),
            (&["-C", "/elsewhere"], &["-C", "/elsewhere"]),
            (&["--cd=/elsewhere", "hi"], &["--cd=/elsewhere", "hi"]),
            (&["resume", "-C", "/x"], &["resume", "-C", "/x"]),
            // A prompt that merely mentions a subcommand later is fine.
            (
                &["explain", "exec"],
                &["-C", "/work/project", "explain", "exec"],
            ),
        ];
        for (input, want) in table {
            let got = codex_command_args(&args(input), cwd, None).unwrap();
            assert_eq!(strings(&got), *want, "{input:?}");
        }
    }

    #[test]
    fn remote_flags_go_last_but_before_end_of_options() {
        let cwd = Path::new("/p");
        let got = codex_command_args(&args(&["resume", "--last"]), cwd, Some(&remote())).unwrap();
        assert_eq!(
            strings(&got),
            [
                "resume",
                "-C",
                "/p",
                "--last",
                "--remote",
                "ws://127.0.0.1:4100",
                "--remote-auth-token-env",
                "CS_TUI_PROXY_TOKEN"
            ]
        );
        let got = codex_command_args(&args(&["--", "-not-a-flag"]), cwd, Some(&remote())).unwrap();
        assert_eq!(
            strings(&got),
            [
                "-C",
                "/p",
                "--remote",
                "ws://127.0.0.1:4100",
                "--remote-auth-token-env",
                "CS_TUI_PROXY_TOKEN",
                "--",
                "-not-a-flag"
            ]
        );
    }

    #[test]
    fn a_unix_socket_remote_gets_no_token_flag() {
        let unix = RemoteTarget {
            url: "unix:///run/cs/proxy.sock".into(),
            token_env: None,
        };
        let got = codex_command_args(&args(&["hi"]), Path::new("/p"), Some(&unix)).unwrap();
        assert_eq!(
            strings(&got),
            ["-C", "/p", "hi", "--remote", "unix:///run/cs/proxy.sock"]
        );
    }

    #[test]
    fn what_cannot_work_through_remote_is_refused() {
        let table: &[&[&str]] = &[
            &["exec", "do it"],
            &["e", "do it"],
            &["login"],
            &["logout"],
            &["mcp", "list"],
            &["apply"],
            &["app-server"],
            &["-m", "gpt-5", "review"],
            &["--remote", "ws://x"],
            &["--remote=ws://x"],
            &["--remote-auth-token-env", "T"],
            &["--help"],
            &["-V"],
            &["-m"],
        ];
        for input in table {
            assert!(
                codex_command_args(&args(input), Path::new("/p"), None).is_err(),
                "{input:?} should be refused"
            );
        }
        let err = validate_codex_args(&args(&["login"])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "`codex login` does not run in cs-tui: add accounts with `cs-tui accounts add`"
        );
        let err = validate_codex_args(&args(&["-m"])).unwrap_err();
        assert_eq!(err.to_string(), "-m needs a value");
    }

    #[test]
    fn non_ascii_options_are_options_not_panics() {
        let cwd = Path::new("/p");
        // `-é` is two bytes after the dash; `-éx` has a value attached.
        for input in [
            &["-é"][..],
            &["-éx", "hi"],
            &["-😀"],
            &["--ü=1"],
            &["-\u{301}"],
        ] {
            let got = codex_command_args(&args(input), cwd, None).unwrap();
            assert_eq!(strings(&got[2..]), *input);
        }
        // A value option spelled with a multi-byte value attached is complete.
        let got = codex_command_args(&args(&["-mé"]), cwd, None).unwrap();
        assert_eq!(strings(&got), ["-C", "/p", "-mé"]);
        assert_eq!(option_name("-é"), ("-é", false));
        assert_eq!(option_name("-éabc"), ("-é", true));
        assert_eq!(option_name("-mé"), ("-m", true));
    }
}
