//! `cs-tui switch NAME [--session S]`: ask one running session to switch.
//!
//! A manual switch moves one session, never the pool: with several running, the one switched
//! is the one `--session` names (its pid, or its id or a unique prefix of it), else the one
//! started in the deepest directory that contains the current one; else none, and the
//! sessions are listed so that the user can name one.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use color_eyre::eyre::{Report, Result, bail, eyre};

use super::Env;
use super::sessions::{self, SessionJson};
use crate::cli::SwitchArgs;
use crate::errors::with_hint;
use crate::proxy::events::ProxyCommand;

pub(super) fn run(env: &Env, args: SwitchArgs) -> Result<ExitCode> {
    let store_dir = env.store_dir()?;
    let command = if args.account == "best" {
        ProxyCommand::SwitchBest
    } else {
        let file = env.store()?.load()?;
        let account = file.resolve(&args.account)?;
        account.ensure_supported()?;
        ProxyCommand::SwitchTo {
            account_id: account.id.clone(),
        }
    };
    let sockets = crate::ipc::session_sockets(store_dir);
    if sockets.is_empty() {
        return Err(no_session());
    }
    let socket = match (&args.session, sockets.as_slice()) {
        (Some(wanted), _) => {
            let ids: Vec<String> = sockets.iter().map(|s| sessions::session_id(s)).collect();
            match by_flag(&ids, wanted) {
                Ok(i) => sockets[i].clone(),
                Err(err) => {
                    let listed = env.runtime().block_on(sessions::list(store_dir));
                    if listed.is_empty() {
                        return Err(no_session());
                    }
                    return Err(with_hint(
                        eyre!("{err}\n{}", session_rows(&listed)),
                        "name one by its pid or id (see `cs-tui sessions`)",
                    ));
                }
            }
        }
        (None, [one]) => one.clone(),
        (None, _) => {
            let listed = env.runtime().block_on(sessions::list(store_dir));
            let here = std::env::current_dir().unwrap_or_default();
            let id = match listed.as_slice() {
                [] => return Err(no_session()),
                [one] => one.id.clone(),
                _ => match by_cwd(&listed, &here) {
                    Some(session) => session.id.clone(),
                    None => return Err(which_one(&listed, &here, &args.account)),
                },
            };
            socket_of(&sockets, &id)
        }
    };
    match env.runtime().block_on(crate::ipc::send(&socket, &command)) {
        Ok(answer) if answer.ok => {
            println!("{}", answer.message);
            Ok(ExitCode::SUCCESS)
        }
        Ok(answer) => bail!("{}", answer.message),
        Err(err) => {
            tracing::debug!("stale session socket {}: {err:#}", socket.display());
            bail!("no running session accepted the switch")
        }
    }
}

fn no_session() -> Report {
    with_hint(
        eyre!("no cs-tui session is running"),
        "start one with `cs-tui` or `cs-tui serve`; `cs-tui accounts use NAME` picks the account the next session starts on",
    )
}

fn socket_of(sockets: &[PathBuf], id: &str) -> PathBuf {
    sockets
        .iter()
        .find(|s| sessions::session_id(s) == id)
        .cloned()
        .expect("a listed session has a socket")
}

/// The session `--session` names, among the session ids (`<pid>-<uuid>`): a number is a
/// pid; anything else a unique prefix of an id.
fn by_flag(ids: &[String], wanted: &str) -> Result<usize, String> {
    let wanted = wanted.trim().to_ascii_lowercase();
    if wanted.is_empty() {
        return Err("--session needs a pid or a session id".to_owned());
    }
    let is_pid = wanted.bytes().all(|b| b.is_ascii_digit());
    let matches: Vec<usize> = (0..ids.len())
        .filter(|&i| {
            if is_pid {
                ids[i].split('-').next() == Some(wanted.as_str())
            } else {
                ids[i].starts_with(&wanted)
            }
        })
        .collect();
    let what = if is_pid { "pid" } else { "id" };
    match matches.as_slice() {
        [one] => Ok(*one),
        [] => Err(format!("no running session has the {what} {wanted:?}:")),
        _ if is_pid => Err(format!(
            "{} session directories have the pid {wanted}; name one by its id:",
            matches.len()
        )),
        _ => Err(format!(
            "{} sessions have an id starting with {wanted:?}:",
            matches.len()
        )),
    }
}

/// The session started in the deepest directory that contains `here`; none when no session
/// does, or when two are equally deep.
fn by_cwd<'a>(sessions: &'a [SessionJson], here: &Path) -> Option<&'a SessionJson> {
    let depth_of = |s: &SessionJson| {
        s.cwd
            .as_deref()
            .filter(|cwd| cwd.is_absolute() && here.starts_with(cwd))
            .map(|cwd| cwd.components().count())
    };
    let deepest = sessions.iter().filter_map(depth_of).max()?;
    let mut at_deepest = sessions.iter().filter(|s| depth_of(s) == Some(deepest));
    let first = at_deepest.next()?;
    at_deepest.next().is_none().then_some(first)
}

/// The refusal when the session to switch is not clear: the sessions, and how to name one.
fn which_one(listed: &[SessionJson], here: &Path, account: &str) -> Report {
    let example = listed
        .iter()
        .find_map(|s| s.pid)
        .map_or_else(|| "PID".to_owned(), |pid| pid.to_string());
    with_hint(
        eyre!(
            "{} cs-tui sessions are running, and not one alone was started in {} or a directory above it: which one should switch?\n{}",
            listed.len(),
            here.display(),
            session_rows(listed)
        ),
        format!("name it: `cs-tui switch {account} --session {example}` (a pid or an id prefix)"),
    )
}

/// "  4242  alice  /home/me/src/api", one line per session.
fn session_rows(listed: &[SessionJson]) -> String {
    listed
        .iter()
        .map(|s| {
            let pid = s.pid.map_or_else(|| s.id.clone(), |p| p.to_string());
            let account = s.account.as_ref().map_or("–", |a| a.name.as_str());
            let cwd = s
                .cwd
                .as_ref()
                .map_or_else(|| "–".to_owned(), |c| c.display().to_string());
            format!("  {pid:<8} {account:<12} {cwd}")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::pool::SessionState;

    fn session(id: &str, cwd: Option<&str>) -> SessionJson {
        let mut s = SessionJson::unknown(id.to_owned(), SessionState::Ready);
        s.cwd = cwd.map(PathBuf::from);
        s
    }

    #[test]
    fn the_flag_names_a_pid_or_an_id_prefix() {
        let ids = [
            "4242-9f1c".to_owned(),
            "42-ab12".to_owned(),
            "77-9f00".to_owned(),
            "77-9f01".to_owned(),
        ];
        assert_eq!(
            by_flag(&ids, "42"),
            Ok(1),
            "a pid, though 4242 starts with 42"
        );
        assert_eq!(by_flag(&ids, "4242"), Ok(0));
        assert_eq!(by_flag(&ids, "77-9F00"), Ok(2), "an id prefix, any case");
        assert_eq!(by_flag(&ids, "4242-9f1c"), Ok(0));
        assert_eq!(by_flag(&ids, "4242-"), Ok(0));
        let err = by_flag(&ids, "4").unwrap_err();
        assert!(
            err.contains("no running session has the pid"),
            "a pid, never a prefix: {err}"
        );
        assert!(by_flag(&ids, "77-9f").unwrap_err().contains("2 sessions"));
        assert!(
            by_flag(&ids, "77")
                .unwrap_err()
                .contains("name one by its id")
        );
        assert!(
            by_flag(&ids, "99-")
                .unwrap_err()
                .contains("no running session has the id")
        );
        assert!(by_flag(&ids, " ").is_err());
    }

    #[test]
    fn the_deepest_directory_containing_here_wins() {
        let sessions = [
            session("1-a", Some("/home/me")),
            session("2-b", Some("/home/me/src/api")),
            session("3-c", Some("/home/me/src/web")),
            session("4-d", None),
        ];
        let id = |here: &str| by_cwd(&sessions, Path::new(here)).map(|s| s.id.as_str());
        assert_eq!(id("/home/me/src/api/handlers"), Some("2-b"));
        assert_eq!(id("/home/me/src/api"), Some("2-b"));
        assert_eq!(id("/home/me/src"), Some("1-a"));
        // Components, not strings: /home/me/src/apix is not under /home/me/src/api.
        assert_eq!(id("/home/me/src/apix"), Some("1-a"));
        assert_eq!(id("/tmp"), None);
    }

    #[test]
    fn two_sessions_in_one_directory_are_not_guessed_between() {
        let sessions = [
            session("1-a", Some("/home/me/src/api")),
            session("2-b", Some("/home/me/src/api")),
            session("3-c", Some("/home/me")),
        ];
        assert!(by_cwd(&sessions, Path::new("/home/me/src/api")).is_none());
        let refusal = which_one(&sessions, Path::new("/home/me/src/api"), "bob");
        let text = format!("{refusal:#}");
        assert!(text.contains("3 cs-tui sessions are running"), "{text}");
        assert!(text.contains("/home/me/src/api"), "{text}");
        let hints = crate::errors::hints(&refusal);
        assert_eq!(
            hints,
            ["name it: `cs-tui switch bob --session 1` (a pid or an id prefix)"]
        );
    }
}
