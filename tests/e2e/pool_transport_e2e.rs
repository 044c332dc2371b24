//! Two switching sessions on one store, in process, with the real app-server and the mock
//! backend: each answers `session_status` on its control socket, exactly one polls, each sees
//! the other in its pool, and when one shuts down the other takes the poller's lock and sees
//! the pool shrink.

use std::path::Path;
use std::time::Duration;

use cs_tui::proxy::events::ProxyEvent;
use cs_tui::proxy::pool::{SessionState, SessionStatus};
use cs_tui::proxy::session::Session;
use cs_tui_testkit::{CodexHome, MockBackend, WAIT};
use serde_json::json;

use crate::support::session::{import, start_session};
use crate::support::wait_event;

async fn status_of(session: &Session) -> SessionStatus {
    let socket = session.runtime_dir().join(cs_tui::ipc::SOCKET_NAME);
    let answer = cs_tui::ipc::send(&socket, &json!({"command": "session_status"}))
        .await
        .unwrap();
    assert!(answer.ok, "{answer:?}");
    serde_json::from_value(answer.data.expect("a status")).unwrap()
}

/// Asks `session` for its status until `pred` holds, up to [`WAIT`].
async fn status_becomes(
    session: &Session,
    what: &str,
    pred: impl Fn(&SessionStatus) -> bool,
) -> SessionStatus {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let status = status_of(session).await;
        if pred(&status) {
            return status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}; last {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn pool_of(sessions: usize) -> impl Fn(&ProxyEvent) -> bool {
    move |event| matches!(event, ProxyEvent::PoolChanged { sessions: n, .. } if *n == sessions)
}

fn store_with(mock: &MockBackend, store: &Path, names: &[&str]) {
    for name in names {
        let (fake, refresh) = mock.add_account(name);
        import(store, name, &fake.auth_json(3600, &refresh));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sessions_on_one_store_see_each_other_and_elect_one_poller() {
    let mock = MockBackend::start().await;
    let home = CodexHome::offline(&mock.url());
    let store = tempfile::tempdir().unwrap();
    store_with(&mock, store.path(), &["alice", "bob"]);

    let first = start_session(&mock, &home, store.path()).await;
    let mut first_events = first.subscribe();
    let second = start_session(&mock, &home, store.path()).await;
    let mut second_events = second.subscribe();

    wait_event(
        &mut second_events,
        "the second sees two sessions",
        pool_of(2),
    )
    .await;
    wait_event(&mut first_events, "the first sees two sessions", pool_of(2)).await;
    let a = status_becomes(&first, "the first ready", |s| {
        s.state == SessionState::Ready
    })
    .await;
    let b = status_becomes(&second, "the second ready", |s| {
        s.state == SessionState::Ready
    })
    .await;
    assert_ne!(a.id, b.id);
    assert_eq!(
        a.id,
        first.runtime_dir().file_name().unwrap().to_str().unwrap()
    );
    assert_eq!(a.pid, std::process::id());
    assert!(a.account.is_some() && b.account.is_some());
    assert!(
        a.listen
            .as_deref()
            .is_some_and(|l| l.starts_with("ws://127.0.0.1:"))
    );
    assert_eq!(
        [a.poller, b.poller],
        [true, false],
        "the first session holds the poller lock"
    );
    // No token in what a peer is told.
    let raw = serde_json::to_string(&a).unwrap();
    assert!(!raw.contains(first.token().expose()), "{raw}");

    // The poller exits cleanly: the other takes over and sees the pool shrink.
    first.shutdown().await;
    wait_event(&mut second_events, "the pool shrinks to one", pool_of(1)).await;
    status_becomes(&second, "the second polls", |s| s.poller).await;
    second.shutdown().await;
}

/// A `cs-tui serve` process and its JSON lines.
struct Serve {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<serde_json::Value>,
}

impl Serve {
    fn spawn(store: &Path, home: &CodexHome, mock: &MockBackend, pool_off: bool) -> Self {
        use std::io::BufRead;
        let mut command = crate::support::product::cs_tui_command(store, home, mock);
        command.env_remove(cs_tui::proxy::pool::POOL_ENV);
        if pool_off {
            command.env(cs_tui::proxy::pool::POOL_ENV, "off");
        }
        let mut child = command
            .arg("serve")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                let Ok(value) = serde_json::from_str(&line) else {
                    continue; // the address line
                };
                if tx.send(value).is_err() {
                    break;
                }
            }
        });
        Self { child, lines }
    }

    /// Waits for the first JSON line matching `pred`.
    fn wait_line(&self, what: &str, pred: impl Fn(&serde_json::Value) -> bool) {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("serve printed no {what}"));
            if pred(&line) {
                return;
            }
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pool_line(sessions: u64) -> impl Fn(&serde_json::Value) -> bool {
    move |line| line["event"] == "pool_changed" && line["sessions"] == sessions
}

/// Every session's status on the store, by pid.
async fn statuses(store: &Path) -> Vec<SessionStatus> {
    let mut all = Vec::new();
    for socket in cs_tui::ipc::session_sockets(store) {
        if let Ok(answer) = cs_tui::ipc::send(&socket, &json!({"command": "session_status"})).await
            && let Some(data) = answer.data
        {
            all.push(serde_json::from_value(data).unwrap());
        }
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_poller_hands_over_and_a_session_with_the_pool_off_still_answers() {
    let mock = MockBackend::start().await;
    let home = CodexHome::offline(&mock.url());
    let store = tempfile::tempdir().unwrap();
    store_with(&mock, store.path(), &["alice", "bob"]);

    let first = Serve::spawn(store.path(), &home, &mock, false);
    first.wait_line("the first's pool", pool_line(1));
    let second = Serve::spawn(store.path(), &home, &mock, false);
    second.wait_line("the second's pool", pool_line(2));
    first.wait_line("the first sees the second", pool_line(2));
    let all = statuses(store.path()).await;
    assert_eq!(all.len(), 2, "{all:?}");
    let pollers: Vec<u32> = all.iter().filter(|s| s.poller).map(|s| s.pid).collect();
    assert_eq!(pollers, [first.pid()], "{all:?}");

    // kill -9 the poller: the kernel drops its lock; the other finds it gone and polls.
    let mut first = first;
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    second.wait_line("the pool shrinks", pool_line(1));
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let all = statuses(store.path()).await;
        if all.iter().any(|s| s.pid == second.pid() && s.poller) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{all:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // With the pool off, a session polls alone, yet answers `session_status`.
    let off = Serve::spawn(store.path(), &home, &mock, true);
    second.wait_line("the second counts it", pool_line(2));
    let all = statuses(store.path()).await;
    let alone = all.iter().find(|s| s.pid == off.pid()).expect("listed");
    assert!(alone.poller, "{alone:?}");
    assert!(all.iter().any(|s| s.pid == second.pid() && s.poller));
    off.lines
        .try_iter()
        .for_each(|line| assert_ne!(line["event"], "pool_changed", "{line}"));
}

/// Each session's status, asked with the pool's short timeouts (a stopped session is left
/// out).
async fn statuses_quick(store: &Path) -> Vec<SessionStatus> {
    let mut all = Vec::new();
    for socket in cs_tui::ipc::session_sockets(store) {
        let asked = cs_tui::ipc::send_with(
            &socket,
            &json!({"command": "session_status"}),
            cs_tui::ipc::Timeouts::PEER,
        )
        .await;
        if let Ok(answer) = asked
            && let Some(data) = answer.data
        {
            all.push(serde_json::from_value(data).unwrap());
        }
    }
    all
}

/// Waits until `pid` is the store's poller (by what the sessions say).
async fn poller_becomes(store: &Path, pid: u32, what: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let all = statuses_quick(store).await;
        let pollers: Vec<u32> = all.iter().filter(|s| s.poller).map(|s| s.pid).collect();
        if pollers == [pid] {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}: {all:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn process_state(pid: u32) -> char {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(") ")
        .and_then(|(_, rest)| rest.chars().next())
        .unwrap_or('?')
}

/// Job control: a dashboard stopped with SIGTSTP gives the poller's lock up, so a `serve` on
/// the same store polls; continued, it takes part again and gets the lock back when the
/// other goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_dashboard_hands_the_poller_role_over() {
    let p = crate::support::product::start(&["alice", "bob"]).await;
    p.tmux
        .wait_for(WAIT, "Codex ready", crate::support::product::ready);
    let store = p.store.path();
    let dashboard = statuses_quick(store).await;
    assert_eq!(dashboard.len(), 1, "{dashboard:?}");
    let dashboard = &dashboard[0];
    assert_eq!(dashboard.kind, cs_tui::proxy::pool::SessionKind::Dashboard);
    assert!(dashboard.poller);
    assert_eq!(dashboard.listen, None, "a dashboard serves no one else");
    let dashboard = dashboard.pid;

    let serve = Serve::spawn(store, &p.home, &p.mock, false);
    serve.wait_line("the serve's pool", pool_line(2));
    poller_becomes(store, dashboard, "the dashboard still polls").await;

    let signal = |sig| nix::sys::signal::kill(nix::unistd::Pid::from_raw(dashboard as i32), sig);
    signal(nix::sys::signal::Signal::SIGTSTP).unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    while process_state(dashboard) != 'T' {
        assert!(std::time::Instant::now() < deadline, "cs-tui did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }
    poller_becomes(
        store,
        serve.pid(),
        "the serve polls while the dashboard is stopped",
    )
    .await;

    signal(nix::sys::signal::Signal::SIGCONT).unwrap();
    p.tmux
        .wait_for(WAIT, "the dashboard again", crate::support::product::ready);
    poller_becomes(store, serve.pid(), "the serve keeps the lock").await;
    drop(serve); // kill -9
    poller_becomes(store, dashboard, "the dashboard polls again").await;
    crate::support::product::quit(&p.tmux);
}

/// A listener in a peer's place on the store: answers every line `ok` (so it is no session
/// of ours when asked for a status) and hands each line it reads to the test.
fn wiretap(store: &Path) -> tokio::sync::mpsc::UnboundedReceiver<String> {
    use std::os::unix::fs::PermissionsExt;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    let dir = store
        .join("runtime")
        .join(format!("{}-wiretap", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let listener = tokio::net::UnixListener::bind(dir.join(cs_tui::ipc::SOCKET_NAME)).unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut line = String::new();
                if BufReader::new(read).read_line(&mut line).await.is_ok() {
                    let _ = tx.send(line);
                    let _ = write.write_all(b"{\"ok\":true,\"message\":\"\"}\n").await;
                }
            });
        }
    });
    rx
}

/// A login that fails while a session starts (alice's refresh token is rejected) is a
/// first-hand fact: the peers hear `login_failed` for alice, saying the store now wants a new
/// login, with no token and no error text; the session starts on bob.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_that_fails_at_start_is_told_to_the_peers() {
    let mock = MockBackend::start().await;
    let home = CodexHome::offline(&mock.url());
    let store = tempfile::tempdir().unwrap();
    let (alice, _) = mock.add_account("alice");
    // Expired, with a refresh token the sign-in server does not know: its login cannot work.
    let revoked = "rt-revoked-at-start";
    import(store.path(), "alice", &alice.auth_json(-3600, revoked));
    store_with(&mock, store.path(), &["bob"]);
    let stored = cs_tui::accounts::Store::open(store.path()).load().unwrap();
    let alice_id = stored.resolve("alice").unwrap().id.to_string();
    let mut heard = wiretap(store.path());

    let session = start_session(&mock, &home, store.path()).await;
    let status = status_becomes(&session, "ready", |s| s.state == SessionState::Ready).await;
    assert_eq!(status.account.map(|a| a.name).as_deref(), Some("bob"));

    let deadline = tokio::time::Instant::now() + WAIT;
    let mut lines = Vec::new();
    let fact = loop {
        let line = tokio::time::timeout_at(deadline, heard.recv())
            .await
            .unwrap_or_else(|_| panic!("no login_failed reached the peer; it heard {lines:#?}"))
            .expect("the wiretap runs");
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        lines.push(line);
        if value["fact"]["kind"] == "login_failed" {
            break value;
        }
    };
    assert_eq!(fact["command"], "pool");
    assert_eq!(fact["fact"]["account"], alice_id.as_str());
    assert_eq!(fact["fact"]["needs_login"], true, "{fact}");
    let raw = lines.concat();
    assert!(
        !raw.contains(revoked),
        "no refresh token on the wire: {raw}"
    );
    assert!(
        !raw.contains(&alice.access_token(-3600, 0)),
        "no access token on the wire"
    );
    assert!(!raw.contains("invalid"), "no error text on the wire: {raw}");
    session.shutdown().await;
}
