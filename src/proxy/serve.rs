//! `cs-tui serve` (the app-server and switching proxy without the dashboard) and
//! `cs-tui switch NAME` (ask a running session to switch).

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use color_eyre::eyre::{Result, WrapErr, bail, eyre};
use tokio::signal::unix::{SignalKind, signal};

use crate::cli::GlobalArgs;
use crate::errors::{WithHint, with_hint};
use crate::proxy::events::{ProxyCommand, ProxyEvent};
use crate::proxy::ipc;
use crate::proxy::session::{ProxyListener, Session, SessionOptions};
use crate::proxy::store_directory::StoreDirectory;

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Where to listen: a loopback port (port 0 picks a free one; clients need the bearer
    /// token), or `unix://PATH`, a socket only our own user may connect to (no token).
    #[arg(
        long,
        default_value = "127.0.0.1:0",
        value_name = "127.0.0.1:PORT|unix://PATH"
    )]
    pub listen: String,
    /// Where to write the proxy's bearer token: a new file (created 0600; an existing file or
    /// a link is refused), removed at exit. Default: the session's runtime directory under the
    /// store.
    #[arg(long, value_name = "PATH")]
    pub token_file: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct SwitchArgs {
    /// Account name, id, or unique id prefix; `best` picks the best other account.
    pub account: String,
}

/// Options every session shares, from the config file and the environment.
pub fn session_options(
    global: &GlobalArgs,
    config: &crate::config::Config,
    store_dir: PathBuf,
) -> Result<SessionOptions> {
    Ok(SessionOptions {
        codex_bin: global.codex_bin.clone(),
        codex_home: crate::paths::codex_home()?,
        store_dir,
        policy: (&config.switch).into(),
        usage_poll: config.polling.usage_interval(),
        listen: "127.0.0.1:0".parse().expect("a valid address"),
        token_file: None,
        hidden_rerun: config.switch.hidden_rerun,
    })
}

pub fn run_serve(global: &GlobalArgs, args: ServeArgs) -> Result<ExitCode> {
    let store_dir = crate::paths::store_dir()?;
    let (_guard, _log) = crate::logging::init(
        &store_dir.join("logs"),
        "serve",
        global.log_level.as_deref(),
    )?;
    let runtime = tokio::runtime::Runtime::new().wrap_err("starting the async runtime")?;
    runtime.block_on(serve(global, args, store_dir))
}

async fn serve(global: &GlobalArgs, args: ServeArgs, store_dir: PathBuf) -> Result<ExitCode> {
    // First: a signal while the session starts must still end it cleanly (token file and
    // sockets removed), once it has started.
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut hangup = signal(SignalKind::hangup())?;
    let listen = parse_listen(&args.listen)?;
    if matches!(listen, Listen::Unix(_)) && args.token_file.is_some() {
        return Err(with_hint(
            eyre!("--token-file goes with a loopback port, not with --listen unix://"),
            "a unix socket admits only your own user and needs no token",
        ));
    }
    let config = crate::config::Config::load(&store_dir.join(crate::config::CONFIG_FILE))?;
    let mut options = session_options(global, &config, store_dir.clone())?;
    options.token_file = args.token_file;
    if let Some(imported) =
        crate::accounts::import_codex_auth_if_empty(&crate::accounts::Store::open(&store_dir))?
    {
        eprintln!("imported {} from $CODEX_HOME/auth.json", imported.name);
    }
    let listener = match listen {
        Listen::Tcp(addr) => {
            options.listen = addr;
            ProxyListener::bind(addr).await?
        }
        Listen::Unix(path) => ProxyListener::bind_unix(&path)?,
    };
    let dir = StoreDirectory::from_env(&store_dir)?;
    let session = Session::start(listener, options, dir).await?;
    let mut events = session.subscribe();
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening {}", session.url())?;
        if let Some(token_file) = session.token_file() {
            writeln!(out, "token-file {}", token_file.display())?;
        }
        out.flush()?;
    }
    let code = loop {
        tokio::select! {
            event = events.recv() => match event {
                Ok(event) => {
                    // An app-server that is being restarted is not the end of the session.
                    let exited = matches!(
                        event,
                        ProxyEvent::AppServerExited {
                            restarting: false,
                            ..
                        } | ProxyEvent::SessionFailed { .. }
                    );
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "{}", serde_json::to_string(&event)?)?;
                    out.flush()?;
                    if exited {
                        break ExitCode::FAILURE;
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(n, "serve output lagged behind events");
                }
                Err(_) => break ExitCode::FAILURE,
            },
            _ = interrupt.recv() => break ExitCode::SUCCESS,
            _ = terminate.recv() => break ExitCode::SUCCESS,
            _ = hangup.recv() => break ExitCode::SUCCESS,
        }
    };
    session.shutdown().await;
    // A refresh under way may hold a rotated refresh token that must reach the store first.
    crate::accounts::stop_retrying_refreshes();
    crate::accounts::settle_refreshes(&crate::accounts::Store::open(&store_dir)).await;
    Ok(code)
}

/// Where `serve` listens.
#[derive(Debug, PartialEq, Eq)]
enum Listen {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

fn parse_listen(text: &str) -> Result<Listen> {
    if let Some(path) = text.strip_prefix("unix://") {
        if path.is_empty() {
            return Err(with_hint(
                eyre!("--listen unix:// needs a path"),
                "e.g. --listen unix:///run/user/1000/cs-tui.sock",
            ));
        }
        let path = std::path::absolute(path)
            .wrap_err_with(|| format!("--listen {text}: cannot make the path absolute"))?;
        return Ok(Listen::Unix(path));
    }
    text.parse()
        .map(Listen::Tcp)
        .map_err(|_| eyre!("--listen {text} is not an address"))
        .hint("use 127.0.0.1:PORT or unix://PATH")
}

pub fn run_switch(_global: &GlobalArgs, args: SwitchArgs) -> Result<ExitCode> {
    let store_dir = crate::paths::store_dir()?;
    let command = if args.account == "best" {
        ProxyCommand::SwitchBest
    } else {
        let file = crate::accounts::Store::open(&store_dir).load()?;
        let account = file.resolve(&args.account)?;
        ProxyCommand::SwitchTo {
            account_id: account.id.clone(),
        }
    };
    let sockets = ipc::session_sockets(&store_dir);
    if sockets.is_empty() {
        return Err(with_hint(
            eyre!("no cs-tui session is running"),
            "start one with `cs-tui` or `cs-tui serve`; `cs-tui accounts use NAME` picks the account the next session starts on",
        ));
    }
    let runtime = tokio::runtime::Runtime::new()?;
    let mut ok = false;
    for socket in sockets {
        match runtime.block_on(ipc::send(&socket, &command)) {
            Ok(answer) if answer.ok => {
                println!("{}", answer.message);
                ok = true;
            }
            Ok(answer) => eprintln!("error: {}", answer.message),
            Err(err) => tracing::debug!("stale session socket {}: {err:#}", socket.display()),
        }
    }
    if !ok {
        bail!("no running session accepted the switch");
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_takes_a_loopback_port_or_a_unix_path() {
        assert_eq!(
            parse_listen("127.0.0.1:8765").unwrap(),
            Listen::Tcp("127.0.0.1:8765".parse().unwrap())
        );
        assert_eq!(
            parse_listen("unix:///run/x.sock").unwrap(),
            Listen::Unix("/run/x.sock".into())
        );
        let relative = parse_listen("unix://x.sock").unwrap();
        assert_eq!(
            relative,
            Listen::Unix(std::env::current_dir().unwrap().join("x.sock"))
        );
        assert!(parse_listen("unix://").is_err());
        assert!(parse_listen("localhost").is_err());
    }
}
