//! Runs the mock ChatGPT backend by hand, for trying cs-tui in a terminal with no network.
//!
//! ```text
//! cargo run -p cs-tui-testkit --bin mock-backend -- DIR alice bob
//! ```
//! writes an offline `DIR/codex-home` (config + alice's auth.json) and prints the URLs. Then
//! type commands on stdin:
//! `mode NAME normal|limit|401|500|slow MS`, `usage NAME FIVE_HOUR% [WEEKLY%]`,
//! `weekly-only NAME WEEK%`, `spark NAME 5H%` (a model's own limit family), `credits NAME COUNT`
//! (reset credits), `burn NAME POINTS`, `log`, `quit`.

use std::io::BufRead as _;
use std::time::Duration;

use cs_tui_testkit::mock_backend::AccountMode;
use cs_tui_testkit::{LimitFamily, MockBackend, ResetCredit, Usage, UsageWindow};

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let dir = std::path::PathBuf::from(args.next().expect("usage: mock-backend DIR NAME..."));
    let names: Vec<String> = args.collect();
    assert!(!names.is_empty(), "name at least one account");
    let port = std::env::var("MOCK_PORT").unwrap_or_else(|_| "0".into());
    let mock = MockBackend::start_on(&format!("127.0.0.1:{port}")).await;
    let home = dir.join("codex-home");
    let work = dir.join("work");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::create_dir_all(&work).unwrap();
    std::fs::write(
        home.join("config.toml"),
        cs_tui_testkit::codex_home::offline_config(&mock.url(), &work),
    )
    .unwrap();
    for (i, name) in names.iter().enumerate() {
        let (fake, refresh) = mock.add_account(name);
        let auth = fake.auth_json(3600, &refresh);
        let file = dir.join(format!("{name}.auth.json"));
        std::fs::write(&file, serde_json::to_vec_pretty(&auth).unwrap()).unwrap();
        if i == 0 {
            std::fs::write(
                home.join("auth.json"),
                serde_json::to_vec_pretty(&auth).unwrap(),
            )
            .unwrap();
        }
    }
    println!("mock backend {}", mock.url());
    println!("CODEX_HOME={}", home.display());
    println!("CODEX_REFRESH_TOKEN_URL_OVERRIDE={}", mock.refresh_url());
    println!("work dir {}", work.display());
    println!("auth files: {}", dir.join("<name>.auth.json").display());

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    while let Some(line) = rx.recv().await {
        let words: Vec<&str> = line.split_whitespace().collect();
        let id = |n: &str| format!("acct-{n}");
        match words.as_slice() {
            ["mode", name, mode, rest @ ..] => {
                let mode = match (*mode, rest) {
                    ("normal", _) => AccountMode::Normal,
                    ("limit", _) => AccountMode::UsageLimit,
                    ("401", _) => AccountMode::UnauthorizedOnce,
                    ("500", _) => AccountMode::ServerError,
                    ("slow", [ms]) => {
                        AccountMode::Slow(Duration::from_millis(ms.parse().unwrap_or(2000)))
                    }
                    _ => {
                        println!("unknown mode");
                        continue;
                    }
                };
                mock.set_mode(&id(name), mode);
                println!("ok");
            }
            ["usage", name, five, rest @ ..] => {
                let mut usage = Usage {
                    primary: Some(UsageWindow::five_hour(five.parse().unwrap_or(0))),
                    ..Default::default()
                };
                if let [week] = rest {
                    usage.secondary = Some(UsageWindow::weekly(week.parse().unwrap_or(0)));
                }
                mock.set_usage(&id(name), usage);
                println!("ok");
            }
            ["weekly-only", name, week] => {
                mock.set_usage(&id(name), Usage::weekly_only(week.parse().unwrap_or(0)));
                println!("ok");
            }
            ["spark", name, five] => {
                mock.set_families(
                    &id(name),
                    vec![LimitFamily::spark(five.parse().unwrap_or(0))],
                );
                println!("ok");
            }
            ["credits", name, count] => {
                let credits = (0..count.parse::<usize>().unwrap_or(0))
                    .map(|i| {
                        ResetCredit::expiring_in_days(&format!("credit-{name}-{i}"), 3 + i as i64)
                    })
                    .collect();
                mock.set_reset_credits(&id(name), credits);
                println!("ok");
            }
            ["burn", name, points] => {
                mock.set_burn_per_request(&id(name), points.parse().unwrap_or(0));
                println!("ok");
            }
            ["log"] => {
                for r in mock.requests() {
                    println!(
                        "{} {} {} {:?}",
                        r.method, r.path, r.status, r.account_header
                    );
                }
            }
            ["quit"] => break,
            _ => println!(
                "commands: mode NAME normal|limit|401|500|slow MS, usage NAME 5H% [WEEK%], weekly-only NAME WEEK%, spark NAME 5H%, credits NAME COUNT, burn NAME PTS, log, quit"
            ),
        }
    }
}
