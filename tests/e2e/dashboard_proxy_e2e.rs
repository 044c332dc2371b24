//! The whole product as a person uses it: the real `cs-tui` binary in tmux, the real Codex TUI
//! in its pane, the switching proxy in front of the real app-server, the mock backend, and two
//! stored accounts.

use crate::support::product::{first_turn, panel, prompt, quit, start};
use cs_tui_testkit::WAIT;
use cs_tui_testkit::mock_backend::AccountMode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limit_switches_accounts_in_the_running_session_and_the_panel_says_why() {
    let p = start(&["alice", "bob"]).await;
    let t = &p.tmux;
    first_turn(t, "alice", "first question");

    // Codex reached the proxy over its unix socket in the session's private directory, with no
    // token, and cs-tui listens on no TCP port at all.
    let (codex_pid, codex) = codex_cmdline(p.store.path()).expect("the pane's codex");
    let remote = codex
        .iter()
        .position(|a| a == "--remote")
        .map(|i| codex[i + 1].clone());
    let expected = format!("unix://{}/", p.store.path().join("runtime").display());
    assert!(
        remote
            .as_deref()
            .is_some_and(|r| r.starts_with(&expected) && r.ends_with("/proxy.sock")),
        "{codex:?}"
    );
    assert!(
        !codex.iter().any(|a| a == "--remote-auth-token-env"),
        "{codex:?}"
    );
    let cs_tui = parent_of(codex_pid);
    assert_eq!(
        std::fs::read_link(format!("/proc/{cs_tui}/exe")).unwrap(),
        std::path::Path::new(env!("CARGO_BIN_EXE_cs-tui")),
        "codex is cs-tui's child"
    );
    assert_eq!(
        tcp_listeners_of(cs_tui),
        Vec::<u64>::new(),
        "the dashboard listens on TCP"
    );

    // Alice hits her limit: the turn fails, the proxy logs the session into bob.
    p.mock.set_mode("acct-alice", AccountMode::UsageLimit);
    prompt(t, "second question");
    let screen = t.wait_for(WAIT, "the switch to bob in the panel", |s| {
        let panel = panel(s);
        panel.contains("alice → bob")
            && panel.contains("usage limit reached")
            && panel.contains("● bob")
    });
    assert!(panel(&screen).contains("exhausted until"), "{screen}");

    prompt(t, "third question");
    t.wait_for(WAIT, "bob's reply", |s| {
        s.contains("Served by bob: you said \"third question\"")
    });
    let last = p.mock.last_user_turn_request("third question");
    assert_eq!(last.account_header.as_deref(), Some("acct-bob"));

    // A manual switch back through the picker (alice is usable again).
    p.mock.set_mode("acct-alice", AccountMode::Normal);
    p.mock
        .set_usage("acct-alice", cs_tui_testkit::Usage::default());
    t.keys(&["C-]", "s"]);
    t.wait_for(WAIT, "the picker", |s| s.contains("Enter switch"));
    // The picker opens on the first usable account other than the active one.
    t.wait_for(WAIT, "alice selected", |s| {
        s.lines().any(|l| l.contains("› alice"))
    });
    t.keys(&["Enter"]);
    t.wait_for(WAIT, "the manual switch in the panel", |s| {
        let panel = panel(s);
        panel.contains("bob → alice") && panel.contains("● alice")
    });
    prompt(t, "fourth question");
    t.wait_for(WAIT, "alice's reply again", |s| {
        s.contains("Served by alice: you said \"fourth question\"")
    });

    // Resizing the window: cs-tui lays itself out again (the panel moves to the new right
    // edge; tmux's own cropping of the old frame keeps it where it was) and Codex redraws at
    // the new size.
    t.resize(130, 40);
    t.wait_for(WAIT, "cs-tui and Codex redrawn at 130x40", |s| {
        let lines: Vec<&str> = s.lines().collect();
        let panel_at = lines
            .iter()
            .find_map(|l| l.find("╭ cs-tui").map(|b| l[..b].chars().count()));
        lines.len() == 40
            && panel_at == Some(130 - 44)
            && lines[30..].iter().any(|l| l.contains("Ask Codex"))
    });

    quit(t);

    assert_eq!(
        std::fs::read(p.home.path().join("auth.json")).unwrap(),
        p.auth_before,
        "the user's auth.json is left unchanged"
    );
    let history = std::fs::read_to_string(p.store.path().join("switch-history.jsonl")).unwrap();
    assert_eq!(history.lines().count(), 2, "{history}");
    let runtime: Vec<_> = std::fs::read_dir(p.store.path().join("runtime"))
        .map(|d| d.flatten().collect())
        .unwrap_or_default();
    assert!(runtime.is_empty(), "no token files left: {runtime:?}");
}

/// The command line of the Codex TUI a cs-tui session with this store started.
fn codex_cmdline(store: &std::path::Path) -> Option<(i32, Vec<String>)> {
    let needle = store.join("runtime").display().to_string();
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let args: Vec<String> = String::from_utf8_lossy(&cmdline)
                .split('\0')
                .map(str::to_owned)
                .collect();
            (args.iter().any(|a| a == "--remote") && args.iter().any(|a| a.contains(&needle)))
                .then_some((pid, args))
        })
}

fn parent_of(pid: i32) -> i32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // `pid (comm) state ppid …`; comm may hold spaces, so read after its closing parenthesis.
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    after.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// The inodes of listening TCP sockets (v4 and v6) that process `pid` holds.
fn tcp_listeners_of(pid: i32) -> Vec<u64> {
    let mut listening = std::collections::HashSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // `st` 0A is LISTEN; the inode is the tenth field.
            if fields.get(3) == Some(&"0A")
                && let Some(inode) = fields.get(9).and_then(|i| i.parse::<u64>().ok())
            {
                listening.insert(inode);
            }
        }
    }
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).expect("cs-tui's descriptors");
    let mut held: Vec<u64> = fds
        .flatten()
        .filter_map(|fd| {
            let link = std::fs::read_link(fd.path()).ok()?;
            let inode = link.to_str()?.strip_prefix("socket:[")?.strip_suffix(']')?;
            inode.parse().ok()
        })
        .filter(|inode| listening.contains(inode))
        .collect();
    held.sort_unstable();
    held
}

/// The pid of the app-server a cs-tui session with this store started.
fn app_server_pid(store: &std::path::Path) -> Option<i32> {
    let needle = format!("unix://{}", store.join("runtime").display());
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            // Not the reaper in front of it (`cs-tui __reaper codex app-server …`).
            (cmdline.contains(" app-server ")
                && cmdline.contains(&needle)
                && !cmdline.contains("__reaper"))
            .then_some(pid)
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_app_server_is_replaced_and_codex_carries_on() {
    let p = start(&["alice", "bob"]).await;
    let t = &p.tmux;
    first_turn(t, "alice", "before the crash");

    let pid = app_server_pid(p.store.path()).expect("the session's app-server");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    t.wait_for(WAIT, "the restart in the panel", |s| {
        let panel = panel(s);
        panel.contains("app-server restarted") && panel.contains("proxy ready · 1 client")
    });
    // Codex reconnected by itself; the same conversation goes on, on the same account.
    // Right after reconnecting, Codex resumes its thread and may drop an Enter pressed
    // meanwhile (the prompt stays in the composer): press it again until the turn goes.
    let reply = "Served by alice: you said \"after the crash\"";
    t.type_like_a_person("after the crash");
    let deadline = std::time::Instant::now() + WAIT;
    let screen = loop {
        t.keys(&["Enter"]);
        let sent = t.wait_for_within(std::time::Duration::from_secs(3), |s| s.contains(reply));
        if let Some(screen) = sent {
            break screen;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no reply after the crash: {}",
            t.screen()
        );
    };
    assert!(
        screen.contains("you said \"before the crash\""),
        "the conversation is still on screen: {screen}"
    );
    assert_ne!(app_server_pid(p.store.path()), Some(pid));

    quit(t);
    assert_eq!(
        app_server_pid(p.store.path()),
        None,
        "no app-server is left"
    );
}

/// Waits until a log of the store's sessions says `needle`.
fn wait_for_log(store: &std::path::Path, needle: &str) {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let said = std::fs::read_dir(store.join("logs"))
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| std::fs::read_to_string(e.path()).is_ok_and(|t| t.contains(needle)));
        if said {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no log says {needle:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The panel's row of `name` (its first line), if the panel lists it.
fn account_row(screen: &str, name: &str) -> Option<String> {
    panel(screen)
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("{name} ")))
        .map(str::to_owned)
}

/// While the dashboard runs, another process renames, disables, enables, imports and removes
/// accounts: the panel and the picker follow each change (`accounts_listed`), and the active
/// account, removed, stays marked until the session leaves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_panel_follows_the_accounts_commands_of_another_process() {
    use crate::support::product::{cs_tui, import};
    let p = start(&["alice", "bob", "carol"]).await;
    let t = &p.tmux;
    let (store, home, mock) = (p.store.path(), &p.home, &p.mock);
    t.wait_for(WAIT, "the panel with the proxy ready", |s| {
        let panel = panel(s);
        panel.contains("● alice")
            && panel.contains("proxy ready")
            && account_row(s, "carol").is_some()
    });

    cs_tui(store, home, mock, &["accounts", "rename", "bob", "robert"]);
    t.wait_for(WAIT, "bob renamed robert", |s| {
        account_row(s, "robert").is_some() && account_row(s, "bob").is_none()
    });

    cs_tui(store, home, mock, &["accounts", "disable", "carol"]);
    t.wait_for(WAIT, "carol disabled", |s| {
        account_row(s, "carol").is_some_and(|r| r.contains("disabled"))
    });
    cs_tui(store, home, mock, &["accounts", "enable", "carol"]);
    t.wait_for(WAIT, "carol enabled again", |s| {
        account_row(s, "carol").is_some_and(|r| r.contains("ready"))
    });

    // A new account shows once the store lists it, its usage read or not (this one fails).
    mock.push_usage_fault(cs_tui_testkit::mock_backend::UsageFault::Json403);
    let (dave, refresh) = mock.add_account("dave");
    import(store, home, mock, "dave", &dave.auth_json(3600, &refresh));
    t.wait_for(WAIT, "dave added", |s| {
        account_row(s, "dave").is_some_and(|r| r.contains("ready"))
    });

    cs_tui(
        store,
        home,
        mock,
        &["accounts", "remove", "robert", "--yes"],
    );
    t.wait_for(WAIT, "robert removed", |s| {
        account_row(s, "robert").is_none()
    });

    // A store that cannot be read (damaged by hand) changes nothing in the panel; the
    // session says so in its log.
    let accounts_file = store.join("accounts.json");
    let intact = std::fs::read(&accounts_file).unwrap();
    std::fs::write(&accounts_file, b"{ damaged").unwrap();
    cs_tui::ipc::announce(store, &cs_tui::proxy::events::ProxyCommand::AccountsChanged).await;
    wait_for_log(store, "reading the stored accounts failed");
    let screen = t.screen();
    for name in ["carol", "dave"] {
        assert!(account_row(&screen, name).is_some(), "{name}: {screen}");
    }
    assert!(account_row(&screen, "robert").is_none(), "{screen}");
    std::fs::write(&accounts_file, &intact).unwrap();

    // The active account removed: kept, marked, until the session leaves it.
    cs_tui(store, home, mock, &["accounts", "remove", "alice", "--yes"]);
    t.wait_for(WAIT, "alice marked removed", |s| {
        panel(s)
            .lines()
            .any(|l| l.contains("● alice") && l.contains("removed from the store"))
    });
    // The picker offers carol and dave only.
    t.keys(&["C-]", "s"]);
    let screen = t.wait_for(WAIT, "the picker", |s| s.contains("Enter switch"));
    let picker: Vec<String> = screen
        .lines()
        .map(|l| l.chars().take(115).collect::<String>())
        .filter(|l| l.contains("ready") || l.contains("removed") || l.contains("active"))
        .collect();
    assert_eq!(picker.len(), 2, "{screen}");
    assert!(
        picker[0].contains("carol") && picker[1].contains("dave"),
        "{screen}"
    );
    // Choosing carol leaves alice, which then goes from the panel.
    t.wait_for(WAIT, "carol selected", |s| {
        s.lines().any(|l| l.contains("› carol"))
    });
    t.keys(&["Enter"]);
    t.wait_for(WAIT, "the switch to carol, alice gone", |s| {
        let panel = panel(s);
        panel.contains("● carol")
            && account_row(s, "alice").is_none()
            && !panel.contains("removed from the store")
    });
    quit(t);
}
