//! Who the backend thinks is calling (issue 11, item 5): the same turn, once from a plain
//! `codex --remote` session straight to an app-server and once through cs-tui, must reach the
//! backend with the same identifying headers (`originator`, `User-Agent`, …), modulo the parts
//! that change from one session to the next.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;

use crate::support::product::{first_turn, prompt, ready};
use cs_tui_testkit::Tmux;
use cs_tui_testkit::WAIT;
use cs_tui_testkit::{CodexHome, MockBackend, RequestRecord, codex_bin};

const PROMPT: &str = "who is calling";

/// Headers that name no caller but the request itself: sizes, per-session and per-request ids,
/// trace context, the turn's own metadata.
const VOLATILE: &[&str] = &[
    "content-length",
    "session_id",
    "session-id",
    "conversation_id",
    "x-client-request-id",
    "x-request-id",
    "traceparent",
    "tracestate",
    "x-codex-turn-metadata",
    "x-codex-turn-state",
    "x-codex-window-id",
    "x-codex-parent-thread-id",
    "thread-id",
    "host",
    // Transport, not a name: Codex 0.171 offers compressed answers; cs-tui's own reads take
    // them plain.
    "accept-encoding",
    // A request parameter, not a name: the TUI's `account/rateLimits/read` declares it can
    // fall back to Luna Reserve; cs-tui's own reads of other accounts declare nothing.
    "x-openai-codex-luna-reserve",
];

/// What one session told the backend: for each kind of request (`POST /responses`,
/// `GET /wham/usage`, …), the identifying headers of every such request.
fn identities(requests: &[RequestRecord]) -> BTreeMap<String, BTreeSet<BTreeMap<String, String>>> {
    let mut by_kind: BTreeMap<String, BTreeSet<BTreeMap<String, String>>> = BTreeMap::new();
    for r in requests {
        let kind = if r.is_model_request() {
            format!("{} …/responses", r.method)
        } else if let Some(rest) = r.path.split_once("/wham/").map(|(_, rest)| rest) {
            format!("{} /wham/{rest}", r.method)
        } else {
            continue;
        };
        let headers = r
            .headers
            .iter()
            .filter(|(name, _)| !VOLATILE.contains(&name.as_str()))
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect();
        by_kind.entry(kind).or_default().insert(headers);
    }
    by_kind
}

/// A plain Codex session: `codex app-server` on a loopback port and `codex --remote` to it,
/// both started from a shell in tmux as a person would, with the user's own login in
/// `CODEX_HOME`. Returns what the backend saw once the turn's reply is on screen.
async fn plain_session() -> Vec<RequestRecord> {
    let mock = MockBackend::start().await;
    let home = CodexHome::offline(&mock.url());
    let (alice, refresh) = mock.add_account("alice");
    home.write_auth_json(&alice.auth_json(3600, &refresh));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let token_file = home.path().join("ws-token");
    std::fs::write(&token_file, "plain-session-token").unwrap();
    let codex = codex_bin();
    let refresh_url = mock.refresh_url();
    // The TUI connects once the app-server accepts connections (bash's /dev/tcp), and gives up
    // after ~20 s.
    let script = format!(
        "\"$0\" app-server --listen ws://127.0.0.1:{port} --ws-auth capability-token \
         --ws-token-file {token} & \
         for _ in $(seq 400); do (exec 3<>/dev/tcp/127.0.0.1/{port}) 2>/dev/null && break; \
         sleep 0.05; done; \
         CS_PLAIN_TOKEN=plain-session-token exec \"$0\" --remote ws://127.0.0.1:{port} \
         --remote-auth-token-env CS_PLAIN_TOKEN",
        token = token_file.display()
    );
    let env: Vec<(&str, &OsStr)> = vec![
        ("CODEX_HOME", home.path().as_os_str()),
        ("CODEX_REFRESH_TOKEN_URL_OVERRIDE", OsStr::new(&refresh_url)),
    ];
    let tmux = Tmux::start(
        160,
        48,
        home.work_dir(),
        &env,
        OsStr::new("bash"),
        &[OsStr::new("-c"), OsStr::new(&script), codex.as_os_str()],
    );
    tmux.wait_for(WAIT, "Codex ready", ready);
    prompt(&tmux, PROMPT);
    let reply = format!("Served by alice: you said \"{PROMPT}\"");
    tmux.wait_for(WAIT, "the reply", |s| s.contains(&reply));
    settle(&mock).await;
    let requests = mock.requests();
    drop(tmux);
    home.stop_daemons();
    requests
}

/// The same turn through the whole product: cs-tui in tmux, Codex in its pane.
async fn through_cs_tui() -> Vec<RequestRecord> {
    let p = crate::support::product::start(&["alice"]).await;
    first_turn(&p.tmux, "alice", PROMPT);
    settle(&p.mock).await;
    p.mock.requests()
}

/// Waits until the turn's own backend traffic is over: the title request, which Codex sends
/// beside the turn, has been answered.
async fn settle(mock: &MockBackend) {
    mock.wait_for_request(WAIT, "the title request", |r| r.is_title_request())
        .await;
}

/// The login discovery differs by design: a plain app-server logs in from `auth.json` as it
/// starts, before any client has said who it is, so its discovery carries Codex's default
/// originator; through cs-tui the login follows the control connection's `initialize` (and the
/// start-up discovery may go out too, when it wins the race against that login).
const LOGIN_DISCOVERY: &str = "GET /wham/accounts/check";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backend_sees_the_same_caller_with_and_without_cs_tui() {
    let plain_requests = plain_session().await;
    let proxied_requests = through_cs_tui().await;
    let plain = identities(&plain_requests);
    let proxied = identities(&proxied_requests);
    let report = format!("plain codex --remote: {plain:#?}\nthrough cs-tui: {proxied:#?}");

    for kind in ["POST …/responses", "GET /wham/usage"] {
        assert!(
            plain.contains_key(kind) && proxied.contains_key(kind),
            "{kind}\n{report}"
        );
    }
    for (kind, callers) in &proxied {
        if kind == LOGIN_DISCOVERY {
            continue;
        }
        let seen_plain = plain.get(kind);
        for caller in callers {
            assert!(
                seen_plain.is_some_and(|p| p.contains(caller)),
                "through cs-tui, {kind} went out as {caller:#?}, which a plain session never sends\n{report}"
            );
        }
    }
    let turn = &proxied["POST …/responses"];
    assert!(
        turn.iter()
            .all(|h| h.get("originator").map(String::as_str) == Some("codex-tui")),
        "{report}"
    );
    // Nothing, the login discovery included, names cs-tui.
    for r in &proxied_requests {
        for (name, value) in &r.headers {
            assert!(
                !value.contains("cs-tui") && !value.contains("cs_tui"),
                "{} {} sent {name}: {value}",
                r.method,
                r.path
            );
        }
    }
    // The login's discovery goes out under the TUI's name. The app-server may also have sent
    // its own start-up discovery from `auth.json` before the login (it races the control
    // connection, and a loaded machine loses the race now and then): that one carries Codex's
    // default originator, exactly as a plain session's does.
    let discoveries = proxied.get(LOGIN_DISCOVERY).into_iter().flatten();
    let mut under_tui_name = 0;
    for discovery in discoveries {
        let agent = discovery
            .get("user-agent")
            .map(String::as_str)
            .unwrap_or("");
        if agent.starts_with("codex-tui/") {
            under_tui_name += 1;
        } else {
            assert!(
                plain
                    .get(LOGIN_DISCOVERY)
                    .is_some_and(|p| p.contains(discovery)),
                "through cs-tui, a discovery went out as {discovery:#?}\n{report}"
            );
        }
    }
    assert!(
        under_tui_name > 0,
        "no discovery under codex-tui's name\n{report}"
    );
}

/// The starting account's usage read waits for the app-server's `User-Agent` (so that it goes
/// out under Codex's name); a session whose app-server cannot start must still fail at once,
/// not after that wait (30 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_whose_codex_cannot_start_fails_at_once() {
    let mock = MockBackend::start().await;
    let home = CodexHome::offline(&mock.url());
    let store = tempfile::tempdir().unwrap();
    let (alice, refresh) = mock.add_account("alice");
    crate::support::product::import(
        store.path(),
        &home,
        &mock,
        "alice",
        &alice.auth_json(3600, &refresh),
    );
    let started = std::time::Instant::now();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_cs-tui"))
        .env("CS_TUI_HOME", store.path())
        .env("CODEX_HOME", home.path())
        .env("CS_TUI_CODEX_BIN", "/nonexistent/codex")
        .env("CODEX_REFRESH_TOKEN_URL_OVERRIDE", mock.refresh_url())
        .arg("serve")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(WAIT, out)
        .await
        .expect("serve gave up in time")
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("/nonexistent/codex"),
        "{out:?}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
}
