//! `cs-tui sessions [--json]`: every cs-tui session running on the store, with its account.
//!
//! Every control socket under `<store>/runtime/` is asked `{"command":"session_status"}` at
//! once, with [`ASK`] to answer, and the replies classified as the pool's hub classifies them
//! ([`peers::StatusReply`]): a socket that refuses the connection (its session is gone) is
//! left out; one that does not answer in time (a stopped session) is listed as
//! `unresponsive`; one that answers but not with a status (an older cs-tui, or not one) as
//! `unknown_version`. `--json` output is stable (fields are only ever added) and documented in
//! README.md. No token is ever part of it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use chrono::{DateTime, Utc};
use color_eyre::eyre::Result;
use serde::Serialize;

use super::Env;
use super::output::{emit, emit_json, relative_time, table};
use crate::account_id::AccountId;
use crate::accounts::AccountsFile;
use crate::cli::SessionsArgs;
use crate::errors::render_error;
use crate::ipc::Timeouts;
use crate::proxy::events::AccountRef;
use crate::proxy::pool::peers::{self, StatusReply};
use crate::proxy::pool::{SessionKind, SessionState, SessionStatus};

/// How long the sessions have to answer (all at once).
const ASK: Timeouts = Timeouts {
    connect: Duration::from_millis(500),
    answer: Duration::from_secs(1),
};

/// One session in `sessions --json`: what it said of itself, or for a session that did not
/// say (`unresponsive`, `unknown_version`) its id and pid, the rest `null`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(super) struct SessionJson {
    pub id: String,
    pub pid: Option<u32>,
    pub kind: Option<SessionKind>,
    pub version: Option<String>,
    pub account: Option<AccountRef>,
    pub switching_to: Option<AccountRef>,
    pub cwd: Option<PathBuf>,
    pub clients: Option<usize>,
    pub turns_running: Option<usize>,
    pub started_at: Option<DateTime<Utc>>,
    pub poller: Option<bool>,
    pub listen: Option<String>,
    pub state: SessionState,
}

impl SessionJson {
    fn from_status(status: SessionStatus) -> Self {
        Self {
            id: status.id,
            pid: Some(status.pid),
            kind: Some(status.kind),
            version: Some(status.version),
            account: status.account,
            switching_to: status.switching_to,
            cwd: Some(status.cwd),
            clients: Some(status.clients),
            turns_running: Some(status.turns_running),
            started_at: Some(status.started_at),
            poller: Some(status.poller),
            listen: status.listen,
            state: status.state,
        }
    }

    /// A session known only by its runtime directory's name, `<pid>-<uuid>`.
    pub(super) fn unknown(id: String, state: SessionState) -> Self {
        Self {
            pid: id.split('-').next().and_then(|pid| pid.parse().ok()),
            id,
            kind: None,
            version: None,
            account: None,
            switching_to: None,
            cwd: None,
            clients: None,
            turns_running: None,
            started_at: None,
            poller: None,
            listen: None,
            state,
        }
    }
}

/// One stored account in `sessions --json`, with the number of sessions on it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(super) struct AccountSessionsJson {
    pub id: AccountId,
    pub name: String,
    pub sessions: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub(super) struct SessionsJson {
    pub sessions: Vec<SessionJson>,
    pub accounts: Vec<AccountSessionsJson>,
    /// Why the account store could not be read (then `accounts` are those the sessions
    /// reported); `null` when it was.
    pub store_error: Option<String>,
}

pub(super) fn run(env: &Env, args: SessionsArgs) -> Result<ExitCode> {
    let store_dir = env.store_dir()?;
    let file = env.store()?.load();
    let sessions = env.runtime().block_on(list(store_dir));
    let listing = match file {
        Ok(file) => SessionsJson {
            accounts: account_counts(&file, &sessions),
            sessions,
            store_error: None,
        },
        // The sessions say which accounts they are on: a damaged store does not hide them.
        Err(err) => {
            let rendered = render_error(&err);
            eprintln!(
                "{}\nwarning: the sessions are listed with the accounts they report",
                rendered.replacen("error: ", "warning: ", 1)
            );
            SessionsJson {
                accounts: reported_accounts(&sessions),
                sessions,
                store_error: Some(format!("{err:#}")),
            }
        }
    };
    if args.json {
        emit_json(&listing)?;
    } else {
        emit(&render(&listing, Utc::now()))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Asks every session on the store for its status, at once; sorted by start time (the
/// sessions that did not say last, by pid).
pub(super) async fn list(store_dir: &Path) -> Vec<SessionJson> {
    let replies = peers::ask_statuses(peers::sockets(store_dir, None), ASK).await;
    let mut sessions: Vec<SessionJson> = replies
        .into_iter()
        .filter_map(|(socket, reply)| listed(&socket, reply))
        .collect();
    sessions.sort_by(|a, b| {
        (a.started_at.is_none(), a.started_at, a.pid, &a.id).cmp(&(
            b.started_at.is_none(),
            b.started_at,
            b.pid,
            &b.id,
        ))
    });
    sessions
}

/// How a session's reply is listed; `None`: there is no session (the connection was
/// refused, or the socket is gone).
fn listed(socket: &Path, reply: StatusReply) -> Option<SessionJson> {
    let id = || session_id(socket);
    match reply {
        StatusReply::Status(status) => Some(SessionJson::from_status(*status)),
        StatusReply::Gone => None,
        StatusReply::Unresponsive => Some(SessionJson::unknown(id(), SessionState::Unresponsive)),
        StatusReply::OlderVersion => Some(SessionJson::unknown(id(), SessionState::UnknownVersion)),
    }
}

/// A session's id: its runtime directory's name, `<pid>-<uuid>`.
pub(super) fn session_id(socket: &Path) -> String {
    socket
        .parent()
        .and_then(Path::file_name)
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Every stored account, with the number of sessions on it.
pub(super) fn account_counts(
    file: &AccountsFile,
    sessions: &[SessionJson],
) -> Vec<AccountSessionsJson> {
    file.accounts
        .iter()
        .map(|account| AccountSessionsJson {
            id: account.id.clone(),
            name: account.name.clone(),
            sessions: sessions
                .iter()
                .filter(|s| s.account.as_ref().is_some_and(|a| a.id == account.id))
                .count(),
        })
        .collect()
}

/// The accounts the sessions report they are on (or switching to), in the order first
/// met, with the number of sessions on each: for a store that cannot be read.
pub(super) fn reported_accounts(sessions: &[SessionJson]) -> Vec<AccountSessionsJson> {
    let mut accounts: Vec<AccountSessionsJson> = Vec::new();
    for s in sessions {
        for (account, on) in [(&s.account, true), (&s.switching_to, false)] {
            let Some(account) = account else { continue };
            match accounts.iter_mut().find(|a| a.id == account.id) {
                Some(known) => known.sessions += usize::from(on),
                None => accounts.push(AccountSessionsJson {
                    id: account.id.clone(),
                    name: account.name.clone(),
                    sessions: usize::from(on),
                }),
            }
        }
    }
    accounts
}

fn render(listing: &SessionsJson, now: DateTime<Utc>) -> String {
    if listing.sessions.is_empty() {
        return "no cs-tui session is running\n".to_owned();
    }
    let rows = listing
        .sessions
        .iter()
        .map(|s| {
            let dash = || "–".to_owned();
            let account = match (&s.account, &s.switching_to) {
                (Some(from), Some(to)) => format!("{} → {}", from.name, to.name),
                (None, Some(to)) => format!("→ {}", to.name),
                (Some(account), None) => account.name.clone(),
                (None, None) => dash(),
            };
            let kind = match (s.kind, s.state) {
                (_, SessionState::Unresponsive) => "unresponsive".to_owned(),
                (_, SessionState::UnknownVersion) => "older cs-tui".to_owned(),
                (Some(SessionKind::Dashboard), _) => "dashboard".to_owned(),
                (Some(SessionKind::Serve), _) => "serve".to_owned(),
                (None, _) => dash(),
            };
            vec![
                s.pid.map_or_else(dash, |p| p.to_string()),
                kind,
                account,
                s.clients.map_or_else(dash, |n| n.to_string()),
                s.turns_running.map_or_else(dash, |n| n.to_string()),
                s.started_at.map_or_else(dash, |at| relative_time(at, now)),
                s.cwd
                    .as_ref()
                    .map_or_else(dash, |cwd| cwd.display().to_string()),
            ]
        })
        .collect();
    let mut text = table(
        &[
            "PID", "KIND", "ACCOUNT", "CLIENTS", "TURNS", "STARTED", "CWD",
        ],
        rows,
    );
    let shares = listing
        .accounts
        .iter()
        .map(|a| (a.name.as_str(), a.sessions));
    text.push('\n');
    text.push_str(&crate::state::dashboard::pool_summary(
        listing.sessions.len(),
        shares,
    ));
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    use tokio::net::UnixListener;

    use super::*;
    use crate::ipc::CommandAnswer;

    /// How a fake session answers `session_status`.
    #[derive(Clone)]
    enum Fake {
        /// With this status.
        Status(Box<SessionStatus>),
        /// As a cs-tui that predates the question.
        Older,
        /// Never (a stopped session): reads the question and keeps the connection open.
        Silent,
        /// With this raw line (not an answer of ours).
        Raw(String),
    }

    /// A fake session: a unix socket in `<store>/runtime/<id>/control.sock` that answers every
    /// question as `fake` does, counting the questions.
    fn fake_session(store: &Path, id: &str, fake: Fake) -> Arc<AtomicUsize> {
        let dir = store.join("runtime").join(id);
        std::fs::create_dir_all(&dir).unwrap();
        let listener = UnixListener::bind(dir.join(crate::ipc::SOCKET_NAME)).unwrap();
        let asked = Arc::new(AtomicUsize::new(0));
        let counter = asked.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let fake = fake.clone();
                let counter = counter.clone();
                tokio::spawn(async move {
                    let (read, mut write) = stream.into_split();
                    let mut line = String::new();
                    let mut read = BufReader::new(read);
                    read.read_line(&mut line).await.unwrap();
                    assert_eq!(line.trim(), r#"{"command":"session_status"}"#);
                    counter.fetch_add(1, Ordering::SeqCst);
                    let answer = match fake {
                        Fake::Status(status) => CommandAnswer {
                            ok: true,
                            message: String::new(),
                            data: Some(serde_json::to_value(status).unwrap()),
                        },
                        Fake::Older => CommandAnswer::refusal(
                            "not a command: unknown variant `session_status`".to_owned(),
                        ),
                        Fake::Raw(line) => {
                            let _ = write.write_all(line.as_bytes()).await;
                            return;
                        }
                        Fake::Silent => {
                            // Holds the connection until the asker gives up.
                            let mut rest = String::new();
                            let _ = read.read_line(&mut rest).await;
                            return;
                        }
                    };
                    let mut out = serde_json::to_string(&answer).unwrap();
                    out.push('\n');
                    write.write_all(out.as_bytes()).await.unwrap();
                });
            }
        });
        asked
    }

    fn status(id: &str, account: Option<(&str, &str)>, started: i64) -> SessionStatus {
        SessionStatus {
            id: id.to_owned(),
            pid: id.split('-').next().unwrap().parse().unwrap(),
            kind: SessionKind::Serve,
            version: "0.1.0".to_owned(),
            account: account.map(|(id, name)| AccountRef {
                id: AccountId::from(id),
                name: name.to_owned(),
            }),
            switching_to: None,
            cwd: PathBuf::from("/src/api"),
            clients: 1,
            turns_running: 0,
            started_at: DateTime::from_timestamp(started, 0).unwrap(),
            poller: false,
            listen: Some("unix:///run/me/s.sock".to_owned()),
            state: SessionState::Ready,
        }
    }

    #[tokio::test]
    async fn every_session_is_asked_and_each_answer_classified() {
        let store = tempfile::tempdir().unwrap();
        let alice = Some(("a1", "alice"));
        let mut asked = vec![
            fake_session(
                store.path(),
                "200-bbbb",
                Fake::Status(Box::new(status("200-bbbb", alice, 1_800_000_100))),
            ),
            fake_session(
                store.path(),
                "100-aaaa",
                Fake::Status(Box::new(status("100-aaaa", alice, 1_800_000_000))),
            ),
            fake_session(store.path(), "300-cccc", Fake::Older),
        ];
        // Two stopped sessions: together they cost one timeout, not two.
        asked.push(fake_session(store.path(), "400-dddd", Fake::Silent));
        asked.push(fake_session(store.path(), "401-eeee", Fake::Silent));
        // A crashed session: its socket file is left, nobody listens.
        let dead = store.path().join("runtime/500-ffff");
        std::fs::create_dir_all(&dead).unwrap();
        drop(std::os::unix::net::UnixListener::bind(dead.join(crate::ipc::SOCKET_NAME)).unwrap());

        // Answers that are not ours: garbage, a status of another shape, one too long.
        asked.push(fake_session(
            store.path(),
            "600-gggg",
            Fake::Raw("HTTP/1.1 400 Bad Request\n".to_owned()),
        ));
        asked.push(fake_session(
            store.path(),
            "601-hhhh",
            Fake::Raw(r#"{"ok":true,"message":"","data":{"id":"x"}}"#.to_owned() + "\n"),
        ));
        asked.push(fake_session(
            store.path(),
            "602-iiii",
            Fake::Raw(format!(
                "{{\"ok\":true,\"message\":\"{}\"}}\n",
                "x".repeat(300 << 10)
            )),
        ));
        // Something else where a socket should be: no session.
        let odd = store.path().join("runtime/700-jjjj");
        std::fs::create_dir_all(&odd).unwrap();
        std::fs::write(odd.join(crate::ipc::SOCKET_NAME), "not a socket").unwrap();

        let began = std::time::Instant::now();
        let sessions = list(store.path()).await;
        let took = began.elapsed();

        let ids: Vec<(&str, Option<u32>, SessionState)> = sessions
            .iter()
            .map(|s| (s.id.as_str(), s.pid, s.state))
            .collect();
        assert_eq!(
            ids,
            [
                ("100-aaaa", Some(100), SessionState::Ready),
                ("200-bbbb", Some(200), SessionState::Ready),
                ("300-cccc", Some(300), SessionState::UnknownVersion),
                ("400-dddd", Some(400), SessionState::Unresponsive),
                ("401-eeee", Some(401), SessionState::Unresponsive),
                ("600-gggg", Some(600), SessionState::UnknownVersion),
                ("601-hhhh", Some(601), SessionState::UnknownVersion),
                ("602-iiii", Some(602), SessionState::UnknownVersion),
            ]
        );
        assert!(
            asked.iter().all(|n| n.load(Ordering::SeqCst) == 1),
            "every live session is asked once"
        );
        // Asked in parallel: two silent sessions cost one answer timeout (plus scheduling).
        assert!(took < ASK.answer * 2, "took {took:?}");
        assert_eq!(sessions[0].cwd.as_deref(), Some(Path::new("/src/api")));
        assert!(sessions[3].kind.is_none() && sessions[3].account.is_none());
    }

    #[tokio::test]
    async fn no_runtime_dir_lists_nothing() {
        let store = tempfile::tempdir().unwrap();
        assert!(list(store.path()).await.is_empty());
    }

    fn listing() -> SessionsJson {
        let alice = Some(("a1", "alice"));
        let bob = Some(("b2", "bob"));
        let sessions = vec![
            SessionJson::from_status(status("100-aaaa", alice, 1_800_000_000)),
            SessionJson::from_status(status("200-bbbb", bob, 1_800_000_000)),
            SessionJson::from_status(status("300-cccc", alice, 1_800_000_000)),
            SessionJson::unknown("400-dddd".to_owned(), SessionState::Unresponsive),
        ];
        let file: AccountsFile = serde_json::from_value(serde_json::json!({
            "version": 1,
            "accounts": [
                {"id": "a1", "name": "alice", "created_at": "2026-01-01T00:00:00Z", "auth": {"type": "api_key", "key": "sk-x"}},
                {"id": "b2", "name": "bob", "created_at": "2026-01-01T00:00:00Z", "auth": {"type": "api_key", "key": "sk-y"}},
                {"id": "c3", "name": "carol", "created_at": "2026-01-01T00:00:00Z", "auth": {"type": "api_key", "key": "sk-z"}},
            ]
        }))
        .unwrap();
        SessionsJson {
            accounts: account_counts(&file, &sessions),
            sessions,
            store_error: None,
        }
    }

    #[test]
    fn every_stored_account_is_counted() {
        let listing = listing();
        let counts: Vec<(&str, usize)> = listing
            .accounts
            .iter()
            .map(|a| (a.name.as_str(), a.sessions))
            .collect();
        assert_eq!(counts, [("alice", 2), ("bob", 1), ("carol", 0)]);
    }

    #[test]
    fn json_keeps_its_shape() {
        let json = serde_json::to_value(listing()).unwrap();
        let first = &json["sessions"][0];
        assert_eq!(first["id"], "100-aaaa");
        assert_eq!(first["pid"], 100);
        assert_eq!(first["kind"], "serve");
        assert_eq!(first["account"]["name"], "alice");
        assert_eq!(first["switching_to"], serde_json::Value::Null);
        assert_eq!(first["state"], "ready");
        assert_eq!(first["listen"], "unix:///run/me/s.sock");
        let stopped = &json["sessions"][3];
        assert_eq!(stopped["state"], "unresponsive");
        assert_eq!(stopped["pid"], 400);
        assert_eq!(stopped["account"], serde_json::Value::Null);
        assert_eq!(
            json["accounts"][2],
            serde_json::json!({"id": "c3", "name": "carol", "sessions": 0})
        );
        assert_eq!(json["store_error"], serde_json::Value::Null);
        assert!(!json.to_string().contains("sk-"), "no secret in the output");
    }

    #[test]
    fn without_the_store_the_accounts_are_those_the_sessions_report() {
        let mut sessions = listing().sessions;
        sessions[1].switching_to = Some(AccountRef {
            id: AccountId::from("c3"),
            name: "carol".to_owned(),
        });
        let reported = reported_accounts(&sessions);
        let counts: Vec<(&str, &str, usize)> = reported
            .iter()
            .map(|a| (a.id.as_str(), a.name.as_str(), a.sessions))
            .collect();
        assert_eq!(
            counts,
            [("a1", "alice", 2), ("b2", "bob", 1), ("c3", "carol", 0)]
        );
    }

    #[test]
    fn text_lists_rows_then_the_pool_line() {
        let now = DateTime::from_timestamp(1_800_000_000 + 600, 0).unwrap();
        let text = render(&listing(), now);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("PID  KIND"), "{text}");
        assert!(lines[1].starts_with("100  serve"), "{text}");
        assert!(lines[1].contains("10m ago") && lines[1].ends_with("/src/api"));
        assert!(lines[4].starts_with("400  unresponsive"), "{text}");
        assert_eq!(lines.last(), Some(&"4 sessions: alice ×2, bob ×1"));
        let none = SessionsJson {
            sessions: Vec::new(),
            accounts: Vec::new(),
            store_error: None,
        };
        assert_eq!(render(&none, now), "no cs-tui session is running\n");
    }
}
