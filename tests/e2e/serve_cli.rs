//! `cs-tui serve` and `cs-tui switch` as a user runs them: the real binary, the real
//! app-server, the mock backend, and a scripted Codex-like client.

use crate::support::product::cs_tui_command;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use cs_tui_testkit::WAIT;
use cs_tui_testkit::mock_backend::AccountMode;
use cs_tui_testkit::turns::{run_turn, start_thread};
use cs_tui_testkit::{CodexHome, MockBackend, WsClient};
use serde_json::{Value, json};

pub(crate) struct Serve {
    pub(crate) child: Child,
    lines: mpsc::Receiver<String>,
}

impl Serve {
    pub(crate) fn next_line(&self, what: &str) -> String {
        self.lines
            .recv_timeout(WAIT)
            .unwrap_or_else(|_| panic!("serve printed no {what}"))
    }

    /// The lines printed and not read yet, up to the end of serve's stdout (call it once serve
    /// has ended).
    pub(crate) fn rest(&self) -> Vec<String> {
        let mut rest = Vec::new();
        loop {
            match self.lines.recv_timeout(WAIT) {
                Ok(line) => rest.push(line),
                Err(mpsc::RecvTimeoutError::Disconnected) => return rest,
                Err(mpsc::RecvTimeoutError::Timeout) => panic!("serve's stdout stayed open"),
            }
        }
    }

    pub(crate) fn wait_event(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        loop {
            let line = self.next_line(what);
            let event: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
            if pred(&event) {
                return event;
            }
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_serve(store: &std::path::Path, home: &CodexHome, mock: &MockBackend) -> Serve {
    spawn_serve_with(store, home, mock, &[])
}

pub(crate) fn spawn_serve_with(
    store: &std::path::Path,
    home: &CodexHome,
    mock: &MockBackend,
    args: &[&std::ffi::OsStr],
) -> Serve {
    spawn_command(cs_tui_command(store, home, mock), args)
}

fn spawn_command(mut command: Command, args: &[&std::ffi::OsStr]) -> Serve {
    let mut child = command
        .arg("serve")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Serve { child, lines }
}

pub(crate) fn import(store: &std::path::Path, home: &CodexHome, mock: &MockBackend, label: &str) {
    let (fake, refresh) = mock.add_account(label);
    let file = store.join(format!("{label}.json"));
    std::fs::write(&file, fake.auth_json(3600, &refresh).to_string()).unwrap();
    succeeds(
        cs_tui_command(store, home, mock)
            .args(["accounts", "import", "--name", label, "--file"])
            .arg(&file),
    );
}

/// Runs a cs-tui command that must succeed; its stdout.
fn succeeds(command: &mut Command) -> String {
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Pids whose command line mentions `needle` (the app-server's token file lives in the store).
fn processes_mentioning(needle: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| {
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            String::from_utf8_lossy(&cmdline)
                .contains(needle)
                .then_some(pid)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_prints_its_address_streams_events_and_obeys_switch_from_another_terminal() {
    let mock = MockBackend::start().await;
    let home = CodexHome::offline(&mock.url());
    let store = tempfile::tempdir().unwrap();
    for label in ["alice", "bob"] {
        import(store.path(), &home, &mock, label);
    }

    let serve = spawn_serve(store.path(), &home, &mock);
    let url = serve.next_line("listening line");
    let url = url
        .strip_prefix("listening ")
        .expect("listening ws://…")
        .to_owned();
    assert!(url.starts_with("ws://127.0.0.1:"), "{url}");
    let token_file = serve.next_line("token-file line");
    let token_file = token_file.strip_prefix("token-file ").unwrap().to_owned();
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&token_file).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "the token file is private");
    let token = std::fs::read_to_string(&token_file).unwrap();
    serve.wait_event("active account", |e| {
        e["event"] == "active_account" && e["account"]["name"] == "alice"
    });

    let mut client = WsClient::connect(&url, token.trim()).await;
    client.initialize(json!("initialize")).await;
    let thread = start_thread(&mut client, home.work_dir()).await;
    run_turn(&mut client, &thread, "served by alice?").await;
    serve.wait_event("rate limits", |e| e["event"] == "rate_limits_updated");

    let out = succeeds(cs_tui_command(store.path(), &home, &mock).args(["switch", "bob"]));
    assert!(out.contains("switching to bob"), "{out}");
    let done = serve.wait_event("switch done", |e| e["event"] == "switch_done");
    assert_eq!(done["to"]["name"], "bob");
    assert_eq!(done["reason"]["kind"], "manual");

    run_turn(&mut client, &thread, "served by bob?").await;
    let last = mock.last_user_turn_request("served by bob?");
    assert_eq!(last.account_header.as_deref(), Some("acct-bob"));

    // Another process renames an account: the stream says what the store lists now.
    succeeds(
        cs_tui_command(store.path(), &home, &mock).args(["accounts", "rename", "alice", "alicia"]),
    );
    let listed = serve.wait_event("the store's new listing", |e| {
        e["event"] == "accounts_listed"
    });
    let names: Vec<&str> = listed["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alicia", "bob"], "{listed}");
    assert_eq!(
        listed["accounts"][0]["email"], "alice@example.com",
        "{listed}"
    );
    assert_eq!(listed["accounts"][0]["enabled"], true, "{listed}");
    assert_eq!(listed["accounts"][0]["needs_login"], false, "{listed}");
    let listed = listed.to_string();

    // SIGTERM: clean exit, no token file, no runtime directory left.
    let pid = nix::unistd::Pid::from_raw(serve.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let mut serve = serve;
    let status = serve.child.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(!std::path::Path::new(&token_file).exists());
    let runtime = store.path().join("runtime");
    let left: Vec<_> = std::fs::read_dir(&runtime)
        .map(|d| d.flatten().collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "runtime left behind: {left:?}");
    let history = std::fs::read_to_string(store.path().join("switch-history.jsonl")).unwrap();
    assert!(history.contains("\"manual\""), "{history}");

    // The logs (cs-tui's and the app-server's, which is 0600) hold no token.
    let mut secrets = stored_tokens(store.path());
    secrets.extend(mock.requests().into_iter().filter_map(|r| r.refresh_token));
    secrets.push(token.trim().to_owned());
    let logs: Vec<_> = std::fs::read_dir(store.path().join("logs"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    let app_server_log = logs
        .iter()
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("app-server-")
        })
        .expect("the app-server's log");
    assert_eq!(mode_of(app_server_log), 0o600);
    for secret in secrets.iter().filter(|s| s.len() >= 8) {
        assert!(!listed.contains(secret.as_str()), "a token in {listed}");
    }
    for log in &logs {
        let text = std::fs::read_to_string(log).unwrap();
        for secret in secrets.iter().filter(|s| s.len() >= 8) {
            assert!(
                !text.contains(secret.as_str()),
                "a token in {}",
                log.display()
            );
        }
    }
}

/// Every token stored in the account store.
fn stored_tokens(store: &std::path::Path) -> Vec<String> {
    let file: Value =
        serde_json::from_slice(&std::fs::read(store.join("accounts.json")).unwrap()).unwrap();
    let mut out = Vec::new();
    for account in file["accounts"].as_array().unwrap() {
        for key in ["id_token", "access_token", "refresh_token"] {
            if let Some(token) = account["auth"][key].as_str() {
                out.push(token.to_owned());
                // A JWT's payload alone would still be a leak.
                out.extend(
                    token
                        .split('.')
                        .nth(1)
                        .filter(|p| p.len() >= 16)
                        .map(str::to_owned),
                );
            }
        }
    }
    assert!(out.len() >= 6, "tokens to look for");
    out
}

#[test]
fn switch_without_a_running_session_says_so() {
    let store = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cs-tui"))
        .env("CS_TUI_HOME", store.path())
        .args(["switch", "best"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no cs-tui session is running"), "{err}");
    assert!(err.contains("hint:"), "{err}");
}

#[test]
fn serve_refuses_a_non_loopback_address() {
    let store = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cs-tui"))
        .env("CS_TUI_HOME", store.path())
        .args(["serve", "--listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refusing to listen on 0.0.0.0:0"), "{err}");
}

/// SIGKILL leaves cs-tui no chance to clean up; the app-server must not outlive it anyway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_serve_takes_its_app_server_with_it() {
    let mock = MockBackend::start().await;
    let home = CodexHome::offline(&mock.url());
    let store = tempfile::tempdir().unwrap();
    import(store.path(), &home, &mock, "alice");
    let mut serve = spawn_serve(store.path(), &home, &mock);
    serve.next_line("listening line");
    serve.next_line("token-file line");
    serve.wait_event("active account", |e| e["event"] == "active_account");
    let marker = store.path().join("runtime").display().to_string();
    let app_server = processes_mentioning(&marker);
    assert!(!app_server.is_empty(), "the app-server runs from {marker}");

    serve.child.kill().unwrap();
    serve.child.wait().unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    while !processes_mentioning(&marker).is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        processes_mentioning(&marker),
        Vec::<i32>::new(),
        "app-server processes left after cs-tui was killed"
    );
}

fn mode_of(path: &std::path::Path) -> u32 {
    std::os::unix::fs::PermissionsExt::mode(&std::fs::symlink_metadata(path).unwrap().permissions())
        & 0o7777
}

/// A neighbour prepares the token file (world-readable, or a link to a file of the victim's):
/// serve refuses with a clear error, writes nothing into it and deletes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_never_writes_its_token_into_a_file_it_did_not_create() {
    use std::os::unix::fs::PermissionsExt;
    let mock = MockBackend::start().await;
    let home = CodexHome::offline(&mock.url());
    let store = tempfile::tempdir().unwrap();
    import(store.path(), &home, &mock, "alice");
    let tmp = tempfile::tempdir().unwrap();

    let open = tmp.path().join("open-token");
    std::fs::write(&open, "").unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o666)).unwrap();
    let victim = tmp.path().join("victim-notes");
    std::fs::write(&victim, "the victim's own words").unwrap();
    let link = tmp.path().join("linked-token");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    let dangling = tmp.path().join("dangling-token");
    std::os::unix::fs::symlink(tmp.path().join("not-yet"), &dangling).unwrap();

    for (path, says) in [
        (&open, "already exists"),
        (&link, "is a symbolic link"),
        (&dangling, "is a symbolic link"),
    ] {
        let out = cs_tui_command(store.path(), &home, &mock)
            .arg("serve")
            .arg("--token-file")
            .arg(path)
            .output()
            .unwrap();
        assert!(!out.status.success(), "serve accepted {}", path.display());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{err}");
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(err.contains("hint:"), "{err}");
    }
    assert_eq!(std::fs::read(&open).unwrap(), b"", "nothing written");
    assert_eq!(mode_of(&open), 0o666, "its mode untouched");
    assert_eq!(
        std::fs::read_to_string(&victim).unwrap(),
        "the victim's own words"
    );
    assert!(std::fs::symlink_metadata(&link).unwrap().is_symlink());
    assert!(
        !tmp.path().join("not-yet").exists(),
        "no file created through a link"
    );
    let runtime: Vec<_> = std::fs::read_dir(store.path().join("runtime"))
        .map(|d| d.flatten().collect())
        .unwrap_or_default();
    assert!(runtime.is_empty(), "runtime left behind: {runtime:?}");
}

/// serve creates its token file 0600 and, at exit, removes that file only: a file put in its
/// place meanwhile stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_removes_only_the_token_file_it_created() {
    let mock = MockBackend::start().await;
    let home = CodexHome::offline(&mock.url());
    let store = tempfile::tempdir().unwrap();
    import(store.path(), &home, &mock, "alice");
    let tmp = tempfile::tempdir().unwrap();

    for replace in [false, true] {
        let path = tmp.path().join(format!("token-{replace}"));
        let serve = spawn_serve_with(
            store.path(),
            &home,
            &mock,
            &["--token-file".as_ref(), path.as_os_str()],
        );
        serve.next_line("listening line");
        assert_eq!(
            serve.next_line("token-file line"),
            format!("token-file {}", path.display())
        );
        assert_eq!(mode_of(&path), 0o600);
        assert_eq!(std::fs::read_to_string(&path).unwrap().trim().len(), 64);
        if replace {
            std::fs::remove_file(&path).unwrap();
            std::fs::write(&path, "someone else's").unwrap();
        }
        let pid = nix::unistd::Pid::from_raw(serve.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let mut serve = serve;
        assert!(serve.child.wait().unwrap().success());
        if replace {
            assert_eq!(std::fs::read_to_string(&path).unwrap(), "someone else's");
        } else {
            assert!(!path.exists(), "its own token file is removed");
        }
    }
}

/// `--listen unix://PATH`: a socket of mode 0600 that a client of our own user reaches with no
/// token; no token file; the socket goes at exit. A stale socket of ours is replaced; any
/// other file there is refused and left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_listens_on_a_unix_socket_when_asked() {
    use futures_util::{SinkExt as _, StreamExt as _};
    use tokio_tungstenite::tungstenite::Message;
    let mock = MockBackend::start().await;
    let home = CodexHome::offline(&mock.url());
    let store = tempfile::tempdir().unwrap();
    import(store.path(), &home, &mock, "alice");
    let tmp = tempfile::tempdir().unwrap();

    let taken = tmp.path().join("taken");
    std::fs::write(&taken, "keep me").unwrap();
    let out = cs_tui_command(store.path(), &home, &mock)
        .arg("serve")
        .arg("--listen")
        .arg(format!("unix://{}", taken.display()))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(std::fs::read_to_string(&taken).unwrap(), "keep me");

    let out = cs_tui_command(store.path(), &home, &mock)
        .args([
            "serve",
            "--listen",
            "unix:///x.sock",
            "--token-file",
            "/x.token",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(!std::path::Path::new("/x.token").exists());

    // A socket left by a killed session: nobody listens on it.
    let path = tmp.path().join("proxy.sock");
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    let listen = format!("unix://{}", path.display());
    let serve = spawn_serve_with(
        store.path(),
        &home,
        &mock,
        &["--listen".as_ref(), listen.as_ref()],
    );
    assert_eq!(
        serve.next_line("listening line"),
        format!("listening {listen}")
    );
    assert_eq!(mode_of(&path), 0o600);
    use std::os::unix::fs::FileTypeExt;
    assert!(
        std::fs::symlink_metadata(&path)
            .unwrap()
            .file_type()
            .is_socket()
    );
    serve.wait_event("active account", |e| e["event"] == "active_account");

    let stream = tokio::net::UnixStream::connect(&path).await.unwrap();
    let (mut client, _) = tokio_tungstenite::client_async("ws://localhost/rpc", stream)
        .await
        .expect("upgraded without a token");
    let initialize = json!({"id": 1, "method": "initialize", "params": {
        "clientInfo": {"name": "test", "title": "test", "version": "0"},
        "capabilities": {"experimentalApi": true}}});
    client
        .send(Message::Text(initialize.to_string().into()))
        .await
        .unwrap();
    let answer = tokio::time::timeout(WAIT, client.next())
        .await
        .expect("the app-server answers")
        .unwrap()
        .unwrap();
    let answer: Value = serde_json::from_str(answer.to_text().unwrap()).unwrap();
    assert!(answer["result"]["userAgent"].is_string(), "{answer}");

    let pid = nix::unistd::Pid::from_raw(serve.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let mut serve = serve;
    assert!(serve.child.wait().unwrap().success());
    assert!(!path.exists(), "the socket goes at exit");
}

/// On a loopback port serve raises its soft open-files limit to the hard one, so that
/// connections a neighbour opens do not run it out of descriptors at a low soft limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_on_tcp_raises_its_open_files_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    use std::os::unix::process::CommandExt;
    let mock = MockBackend::start().await;
    let home = CodexHome::offline(&mock.url());
    let store = tempfile::tempdir().unwrap();
    import(store.path(), &home, &mock, "alice");
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    assert!(hard > 256, "the test needs a hard limit above 256");
    let mut command = cs_tui_command(store.path(), &home, &mock);
    // SAFETY: setrlimit is async-signal-safe, and nothing else runs between fork and exec.
    unsafe {
        command.pre_exec(move || {
            setrlimit(Resource::RLIMIT_NOFILE, 256, hard).map_err(std::io::Error::from)
        });
    }
    let serve = spawn_command(command, &[]);
    serve.next_line("listening line");
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", serve.child.id())).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let numbers: Vec<&str> = line.split_whitespace().skip(3).take(2).collect();
    assert_eq!(numbers, [hard.to_string(), hard.to_string()], "{line}");
}

/// A store so deep that the session socket must be bound elsewhere, and that elsewhere is not
/// usable (a link where the directory should be): the session serves anyway and says that
/// `cs-tui switch` cannot reach it; the link's target is left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_socket_that_cannot_be_opened_is_a_notice_not_the_end() {
    use std::os::unix::fs::PermissionsExt;
    let mock = MockBackend::start().await;
    let home = CodexHome::offline(&mock.url());
    let root = tempfile::tempdir().unwrap();
    let store = root.path().join("s".repeat(60)).join("t".repeat(60));
    std::fs::create_dir_all(&store).unwrap();
    import(&store, &home, &mock, "alice");
    let xdg = root.path().join("xdg");
    std::fs::create_dir(&xdg).unwrap();
    std::fs::set_permissions(&xdg, std::fs::Permissions::from_mode(0o700)).unwrap();
    let elsewhere = root.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    std::fs::set_permissions(&elsewhere, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::os::unix::fs::symlink(&elsewhere, xdg.join("cs-tui")).unwrap();

    let mut command = cs_tui_command(&store, &home, &mock);
    command.env("XDG_RUNTIME_DIR", &xdg);
    let serve = spawn_command(command, &[]);
    let url = serve.next_line("listening line");
    assert!(url.starts_with("listening ws://127.0.0.1:"), "{url}");
    serve.next_line("token-file line");
    // Both come, in either order.
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let event = serve.wait_event("the notice and the active account", |e| {
            e["event"] == "notice" || e["event"] == "active_account"
        });
        seen.push(event);
    }
    let notice = seen
        .iter()
        .find(|e| e["event"] == "notice")
        .expect("a notice");
    assert!(
        seen.iter().any(|e| e["event"] == "active_account"),
        "{seen:?}"
    );
    let message = notice["message"].as_str().unwrap();
    assert!(
        message.contains("`cs-tui switch` cannot reach"),
        "{message}"
    );
    assert!(message.contains("symbolic link"), "{message}");
    assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
    assert_eq!(mode_of(&elsewhere), 0o777);
}

/// The turn ids of every message `client` received on `thread` that names a turn (a
/// `turnId`, or the `turn` of `turn/started` and `turn/completed`), with their methods.
fn turn_ids_seen(client: &WsClient, thread: &str) -> Vec<(String, String)> {
    client
        .received()
        .iter()
        .filter(|m| m["params"]["threadId"] == thread)
        .filter_map(|m| {
            let params = &m["params"];
            let id = params["turnId"]
                .as_str()
                .or_else(|| params["turn"]["id"].as_str())?;
            Some((
                m["method"].as_str().unwrap_or("response").to_owned(),
                id.to_owned(),
            ))
        })
        .collect()
}

/// The first line of `<store>/ledger.jsonl` that `pred` accepts, waiting for it (lines are
/// written as turns end).
fn wait_ledger_line(store: &std::path::Path, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let text = std::fs::read_to_string(store.join("ledger.jsonl")).unwrap_or_default();
        let found = text
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|l| pred(l));
        if let Some(line) = found {
            return line;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no such ledger line in:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A client that is not the Codex TUI (an editor extension over `serve`, a script) knows its
/// turn by the id its `turn/start` was answered with. A usage limit mid-turn, the switch and
/// the hidden re-run on the next account do not change it: the client hears the reply and
/// `turn/completed` under that id, and interrupts the re-run by it (docs/protocol.md §8).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hidden_rerun_keeps_the_clients_turn_id_and_can_be_interrupted_by_it() {
    let mock = MockBackend::start().await;
    let home = CodexHome::offline(&mock.url());
    let store = tempfile::tempdir().unwrap();
    for label in ["alice", "bob", "carol"] {
        import(store.path(), &home, &mock, label);
    }
    let serve = spawn_serve(store.path(), &home, &mock);
    let url = serve.next_line("listening line");
    let url = url.strip_prefix("listening ").unwrap().to_owned();
    let token_file = serve.next_line("token-file line");
    let token = std::fs::read_to_string(token_file.strip_prefix("token-file ").unwrap()).unwrap();
    serve.wait_event("active account", |e| {
        e["event"] == "active_account" && e["account"]["name"] == "alice"
    });
    let mut client = WsClient::connect(&url, token.trim()).await;
    client
        .request_with_id(
            json!(0),
            "initialize",
            json!({"clientInfo": {"name": "turn-id-script", "version": "1.0.0"},
                   "capabilities": {"experimentalApi": true}}),
        )
        .await
        .expect("initialize");
    client.notify("initialized", Value::Null).await;
    let thread = start_thread(&mut client, home.work_dir()).await;
    run_turn(&mut client, &thread, "warm up").await;

    // Alice is out: the turn fails on her, is withheld and runs again on bob.
    mock.set_mode("acct-alice", AccountMode::UsageLimit);
    let started = client
        .request(
            "turn/start",
            json!({"threadId": thread, "input": [{"type": "text", "text": "the prompt that hits the limit"}]}),
        )
        .await
        .expect("turn/start");
    let t1 = started["turn"]["id"].as_str().expect("turn id").to_owned();
    let completed = client
        .wait_for(WAIT, "turn/completed of the client's own turn", |m| {
            m["method"] == "turn/completed" && m["params"]["turn"]["id"] == t1.as_str()
        })
        .await;
    assert_eq!(
        completed["params"]["turn"]["status"], "completed",
        "{completed}"
    );
    serve.wait_event("the re-run on bob", |e| {
        e["event"] == "turn_rerun" && e["to"]["name"] == "bob"
    });
    let replies = cs_tui_testkit::turns::agent_texts(&client);
    assert!(
        replies
            .iter()
            .any(|r| r.contains("Served by bob: you said \"the prompt that hits the limit\"")),
        "{replies:?}"
    );
    let warm_up = turn_ids_seen(&client, &thread)
        .first()
        .map(|(_, id)| id.clone())
        .expect("the warm-up's messages");
    let foreign: Vec<_> = turn_ids_seen(&client, &thread)
        .into_iter()
        .filter(|(_, id)| *id != t1 && *id != warm_up)
        .collect();
    assert!(
        foreign.is_empty(),
        "messages naming a turn the client never started: {foreign:?}"
    );
    let reply_items = turn_ids_seen(&client, &thread)
        .into_iter()
        .filter(|(m, id)| m == "item/completed" && *id == t1)
        .count();
    assert!(
        reply_items >= 2,
        "the prompt and the reply, as the client's turn"
    );
    assert!(
        client.received_with_method("error").is_empty(),
        "the limit is never shown"
    );
    // The session itself saw the real ids: the ledger has the re-run under the server's id.
    let rerun = wait_ledger_line(store.path(), |l| {
        l["rerun"] == true && l["account"]["name"] == "bob"
    });
    assert_eq!(rerun["thread_id"], thread.as_str());
    assert_ne!(rerun["turn_id"], t1.as_str(), "{rerun}");
    assert!(rerun["turn_id"].is_string(), "{rerun}");

    // Bob is out too, and carol is slow: the client interrupts the re-run by its own id.
    mock.set_mode("acct-bob", AccountMode::UsageLimit);
    mock.set_mode("acct-carol", AccountMode::Slow(Duration::from_secs(120)));
    let started = client
        .request(
            "turn/start",
            json!({"threadId": thread, "input": [{"type": "text", "text": "a long one"}]}),
        )
        .await
        .expect("turn/start");
    let t3 = started["turn"]["id"].as_str().expect("turn id").to_owned();
    serve.wait_event("the re-run on carol", |e| {
        e["event"] == "turn_rerun" && e["to"]["name"] == "carol"
    });
    client
        .request("turn/interrupt", json!({"threadId": thread, "turnId": t3}))
        .await
        .expect("the re-run is the client's turn to interrupt");
    let completed = client
        .wait_for(WAIT, "turn/completed of the interrupted turn", |m| {
            m["method"] == "turn/completed" && m["params"]["turn"]["id"] == t3.as_str()
        })
        .await;
    assert_eq!(
        completed["params"]["turn"]["status"], "interrupted",
        "{completed}"
    );

    // The next turn starts afresh and is served as usual.
    mock.set_mode("acct-carol", AccountMode::Normal);
    run_turn(&mut client, &thread, "after the interrupt").await;
    assert_eq!(
        mock.last_user_turn_request("after the interrupt")
            .account_header
            .as_deref(),
        Some("acct-carol")
    );
}
