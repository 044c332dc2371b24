//! Nothing cs-tui started outlives it: after `kill -9` of the dashboard or of `cs-tui serve`
//! during a turn whose tool runs `sleep 600`, no process of its tree is left — not the
//! app-server, not Codex, not the tool (which Codex runs in a session of its own, out of reach
//! of the app-server's process group and of `PR_SET_PDEATHSIG`).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::product::{first_turn, prompt, start_configured};
use cs_tui_testkit::WAIT;
use cs_tui_testkit::mock_backend::ScriptedReply;
use cs_tui_testkit::{CodexHome, MockBackend, WsClient, codex_bin};
use serde_json::json;

/// One process: its parent, its start time (to tell a reused pid apart), state and command.
#[derive(Clone, Debug)]
struct Proc {
    ppid: i32,
    start: u64,
    state: char,
    cmdline: String,
}

fn processes() -> BTreeMap<i32, Proc> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| {
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            let fields: Vec<&str> = stat[stat.rfind(')')? + 2..].split(' ').collect();
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            Some((
                pid,
                Proc {
                    state: fields[0].chars().next()?,
                    ppid: fields[1].parse().ok()?,
                    start: fields[19].parse().ok()?,
                    cmdline: String::from_utf8_lossy(&cmdline).replace('\0', " "),
                },
            ))
        })
        .collect()
}

/// `root` and every process below it.
fn tree(root: i32) -> BTreeMap<i32, Proc> {
    let all = processes();
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(
            all.iter()
                .filter(|(_, p)| p.ppid == parent)
                .map(|(pid, _)| *pid),
        );
        i += 1;
    }
    found
        .into_iter()
        .filter_map(|pid| Some((pid, all.get(&pid)?.clone())))
        .collect()
}

/// Waits until `root`'s tree holds both `sleep 600`s (the tools); returns the whole tree.
fn wait_for_tool(root: i32, what: &str) -> BTreeMap<i32, Proc> {
    let deadline = Instant::now() + WAIT;
    loop {
        let tree = tree(root);
        let sleeps = tree
            .values()
            .filter(|p| p.cmdline.starts_with("sleep 600") && p.state != 'Z')
            .count();
        if sleeps == 2 {
            return tree;
        }
        assert!(
            Instant::now() < deadline,
            "not both `sleep 600`s under {what} (pid {root}; without a subreaper the \
             detached one escapes the tree at once): {tree:#?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until none of `before` is alive (gone, or a zombie nobody reaped yet: dead).
fn wait_all_gone(before: &BTreeMap<i32, Proc>) {
    let deadline = Instant::now() + WAIT;
    loop {
        let now = processes();
        let alive: Vec<(&i32, &Proc)> = before
            .iter()
            .filter(|(pid, p)| {
                now.get(pid)
                    .is_some_and(|q| q.start == p.start && q.state != 'Z')
            })
            .collect();
        if alive.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "left alive after kill -9: {alive:#?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Two tool calls: the first leaves a `sleep 600` behind in a session of its own, as a tool
/// starting a daemon does (its parent exits: it is nobody's child but init's — or the
/// reaper's); the second runs `sleep 600` in the foreground, so the turn is still running when
/// cs-tui is killed. (The tools run unsandboxed: Codex's bubblewrap sandbox would take the first
/// one down with the command.)
fn push_sleep_tools(mock: &MockBackend) {
    mock.push_script(ScriptedReply::FunctionCall {
        call_id: "call_detached_sleep".into(),
        name: "exec_command".into(),
        arguments: r#"{"cmd":"setsid -f sleep 600","login":false}"#.into(),
    });
    mock.push_script(ScriptedReply::FunctionCall {
        call_id: "call_sleep_600".into(),
        name: "exec_command".into(),
        arguments: r#"{"cmd":"sleep 600","login":false,"yield_time_ms":30000}"#.into(),
    });
}

fn kill9(pid: i32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_dashboard_mid_tool_turn_leaves_no_process() {
    let p = start_configured(&["alice"], |_, home| {
        // Top-level keys go before the file's first table.
        let config = home.path().join("config.toml");
        let text = std::fs::read_to_string(&config).unwrap();
        std::fs::write(
            config,
            format!("sandbox_mode = \"danger-full-access\"\n{text}"),
        )
        .unwrap();
    })
    .await;
    let t = &p.tmux;
    first_turn(t, "alice", "hello");
    push_sleep_tools(&p.mock);
    prompt(t, "run a long tool");
    // The pane runs `sh -c '"$0"; …'`: cs-tui is the shell's child.
    let shell = t.pane_pid();
    let cs_tui = tree(shell)
        .into_iter()
        .find(|(_, p)| p.ppid == shell)
        .map(|(pid, _)| pid)
        .expect("cs-tui under the pane's shell");
    let before = wait_for_tool(cs_tui, "cs-tui");
    assert!(
        before.values().any(|p| p.cmdline.contains(" app-server ")),
        "the app-server is in the tree: {before:#?}"
    );
    kill9(cs_tui);
    wait_all_gone(&before);
    t.wait_for(WAIT, "the shell back", |s| s.contains("cs-tui exited 137"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_serve_mid_tool_turn_leaves_no_process() {
    let mock = MockBackend::start().await;
    let home = CodexHome::offline(&mock.url());
    let store = tempfile::tempdir().unwrap();
    let (fake, refresh) = mock.add_account("alice");
    let file = store.path().join("alice.json");
    std::fs::write(&file, fake.auth_json(3600, &refresh).to_string()).unwrap();
    let cs_tui = |args: &[&str]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_cs-tui"));
        command
            .env("CS_TUI_HOME", store.path())
            .env("CODEX_HOME", home.path())
            .env("CS_TUI_CODEX_BIN", codex_bin())
            .env("CODEX_REFRESH_TOKEN_URL_OVERRIDE", mock.refresh_url())
            .env_remove("CS_TUI_LOG")
            .args(args);
        command
    };
    let imported = cs_tui(&["accounts", "import", "--file", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(imported.status.success(), "{imported:?}");

    let mut serve = cs_tui(&["serve"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(serve.stdout.take().unwrap()).lines();
    let mut next = || lines.next().expect("a line from serve").unwrap();
    let url = next().strip_prefix("listening ").unwrap().to_owned();
    let token_file = next().strip_prefix("token-file ").unwrap().to_owned();
    while !next().contains("\"active_account\"") {}
    let token = std::fs::read_to_string(token_file).unwrap();

    let mut client = WsClient::connect(&url, token.trim()).await;
    client.initialize(json!("initialize")).await;
    let thread = client
        .request(
            "thread/start",
            json!({"cwd": home.work_dir(), "approvalPolicy": "never", "sandbox": "danger-full-access"}),
        )
        .await
        .expect("thread/start")["thread"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    push_sleep_tools(&mock);
    client
        .request(
            "turn/start",
            json!({"threadId": thread, "input": [{"type": "text", "text": "run a long tool"}]}),
        )
        .await
        .expect("turn/start");
    let pid = serve.id() as i32;
    let before = tokio::task::spawn_blocking(move || wait_for_tool(pid, "cs-tui serve"))
        .await
        .unwrap();
    kill9(pid);
    serve.wait().unwrap();
    tokio::task::spawn_blocking(move || wait_all_gone(&before))
        .await
        .unwrap();
}
