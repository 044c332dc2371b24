//! The store under concurrent use by real `cs-tui` processes, and a lock holder that dies.

use std::collections::BTreeSet;
use std::os::unix::process::CommandExt as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::accounts::{BIN, Rig};
use cs_tui_testkit::FakeAccount;
use cs_tui_testkit::WAIT;

const PROCESSES: usize = 8;
const UPDATES_PER_PROCESS: usize = 50;

/// 8 workers each run 50 `accounts import` commands of distinct accounts, all at once. Every
/// import is a read-modify-write of the whole store: a lost update would lose an account.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_processes_lose_no_update() {
    let rig = Rig::new().await;
    let files_dir = tempfile::tempdir().unwrap();
    let mut expected = BTreeSet::new();
    let mut jobs: Vec<Vec<(String, std::path::PathBuf)>> = vec![Vec::new(); PROCESSES];
    for (worker, job) in jobs.iter_mut().enumerate() {
        for n in 0..UPDATES_PER_PROCESS {
            let name = format!("w{worker}-n{n}");
            let fake = FakeAccount::new(&name);
            let path = files_dir.path().join(format!("{name}.json"));
            std::fs::write(
                &path,
                fake.auth_json(3600, &format!("rt-{name}")).to_string(),
            )
            .unwrap();
            expected.insert(name.clone());
            job.push((name, path));
        }
    }
    let store_dir = rig.store_dir();
    let codex_home = rig.codex_home.path().to_owned();
    let started = Instant::now();
    let workers: Vec<_> = jobs
        .into_iter()
        .map(|job| {
            let (store_dir, codex_home) = (store_dir.clone(), codex_home.clone());
            std::thread::spawn(move || {
                for (name, path) in job {
                    let output = Command::new(BIN)
                        .args(["accounts", "import", "--name", &name, "--file"])
                        .arg(&path)
                        .env("CS_TUI_HOME", &store_dir)
                        .env("CODEX_HOME", &codex_home)
                        .stdin(Stdio::null())
                        .output()
                        .unwrap();
                    assert!(
                        output.status.success(),
                        "{name}: {}",
                        String::from_utf8_lossy(&output.stderr)
                    );
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }
    eprintln!(
        "{} imports by {PROCESSES} processes took {:?}",
        PROCESSES * UPDATES_PER_PROCESS,
        started.elapsed()
    );

    let list = rig.run(&["accounts", "list", "--json"]).await.ok().json();
    let names: BTreeSet<String> = list["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names.len(), PROCESSES * UPDATES_PER_PROCESS);
    assert_eq!(names, expected);
    // No temp file was left by any write.
    let leftovers: Vec<_> = std::fs::read_dir(&store_dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// Whether someone holds the store lock right now.
fn lock_is_held(path: &std::path::Path) -> bool {
    let file = std::fs::File::open(path).unwrap();
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).is_err()
}

/// A process killed while it holds the store lock leaves nothing stuck: the kernel drops an
/// advisory lock with its holder. Meanwhile cs-tui waits rather than writing unlocked.
#[tokio::test(flavor = "multi_thread")]
async fn a_killed_lock_holder_leaves_nothing_stuck() {
    let rig = Rig::new().await;
    let (alice, rt) = rig.mock.add_account("alice");
    rig.write_codex_auth(&alice.auth_json(3600, &rt));
    rig.run(&["accounts", "import"]).await.ok();
    let lock = rig.store_dir().join("accounts.lock");

    // flock(1) takes the lock and holds it while `sleep` runs (-o: sleep does not inherit it).
    let mut holder = Command::new("flock")
        .arg("-o")
        .arg(&lock)
        .args(["sleep", "60"])
        .process_group(0)
        .spawn()
        .expect("run flock(1) from util-linux");
    let deadline = Instant::now() + WAIT;
    while !lock_is_held(&lock) {
        assert!(Instant::now() < deadline, "flock never took the lock");
        std::thread::sleep(Duration::from_millis(10));
    }

    let waiting = rig
        .command(&["accounts", "rename", "alice", "renamed"])
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        rig.stored_account("alice")["name"] == "alice",
        "no write while the lock is held"
    );

    // Kill the holder outright (SIGKILL: no cleanup of any kind runs).
    nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(holder.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    holder.wait().unwrap();

    let output = tokio::time::timeout(WAIT, waiting.wait_with_output())
        .await
        .expect("the waiting command finished once the holder died")
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let list = rig.run(&["accounts", "list", "--json"]).await.ok().json();
    assert_eq!(list["accounts"][0]["name"], "renamed");
}

/// A cs-tui killed in the middle of a refresh (holding the account's refresh lock, waiting on
/// an endpoint that never answers) does not block the next refresh.
#[tokio::test(flavor = "multi_thread")]
async fn a_cs_tui_killed_mid_refresh_does_not_block_the_next_one() {
    let rig = Rig::new().await;
    let (alice, rt) = rig.mock.add_account("alice");
    rig.write_codex_auth(&alice.auth_json(3600, &rt));
    rig.run(&["accounts", "import"]).await.ok();

    // An endpoint that accepts connections and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_url = format!("http://{}/oauth/token", silent.local_addr().unwrap());
    let mut stuck = rig.command(&["accounts", "refresh", "alice"]);
    stuck.env("CODEX_REFRESH_TOKEN_URL_OVERRIDE", &silent_url);
    let mut stuck = stuck.spawn().unwrap();
    let (_conn, _) = silent.accept().unwrap(); // the refresh is in flight, lock held
    stuck.start_kill().unwrap();
    stuck.wait().await.unwrap();

    let started = Instant::now();
    let run = rig.run(&["accounts", "refresh", "alice"]).await;
    assert!(run.ok().stdout.contains("alice: refreshed"), "{run:#?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    rig.assert_no_secret_leaked();
}
