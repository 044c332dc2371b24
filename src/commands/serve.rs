//! `cs-tui serve`: the app-server and switching proxy without the dashboard.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use color_eyre::eyre::{Result, WrapErr, eyre};
use tokio::signal::unix::{SignalKind, signal};

use super::Env;
use crate::cli::ServeArgs;
use crate::errors::{WithHint, with_hint};
use crate::proxy::events::ProxyEvent;
use crate::proxy::metrics::{self, MetricsListener};
use crate::proxy::session::{ProxyListener, Session};
use crate::proxy::store_directory::StoreDirectory;

pub(super) fn run(env: &Env, args: ServeArgs) -> Result<ExitCode> {
    env.runtime().block_on(serve(env, args))
}

async fn serve(env: &Env, args: ServeArgs) -> Result<ExitCode> {
    let store_dir = env.store_dir()?.to_owned();
    // First: a signal while the session starts must still end it cleanly (token file and
    // sockets removed), once it has started.
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut hangup = signal(SignalKind::hangup())?;
    let listen = parse_listen(&args.listen)?;
    let metrics_addr = args
        .metrics
        .as_deref()
        .map(metrics::parse_address)
        .transpose()?;
    if matches!(listen, Listen::Unix(_)) && args.token_file.is_some() {
        return Err(with_hint(
            eyre!("--token-file goes with a loopback port, not with --listen unix://"),
            "a unix socket admits only your own user and needs no token",
        ));
    }
    let mut options = env.session_options()?;
    options.token_file = args.token_file;
    options.kind = crate::proxy::pool::SessionKind::Serve;
    if let Some(imported) = env.import_codex_login()? {
        eprintln!("imported {} from $CODEX_HOME/auth.json", imported.name);
    }
    let listener = match listen {
        Listen::Tcp(addr) => {
            options.listen = addr;
            ProxyListener::bind(addr).await?
        }
        Listen::Unix(path) => ProxyListener::bind_unix(&path)?,
    };
    // Bound before the session starts: a port in use is an error before anything runs.
    let metrics = match metrics_addr {
        Some(addr) => Some(MetricsListener::bind(addr).await?),
        None => None,
    };
    let dir = StoreDirectory::from_env(&store_dir)?;
    let session = Session::start(listener, options, dir).await?;
    let mut events = session.subscribe();
    crate::proxy::usage_store::spawn_recorder(&store_dir, session.subscribe());
    let metrics_addr = metrics.as_ref().map(MetricsListener::local_addr);
    // The server is aborted when dropped, at the end of serve.
    let (mut metrics, _metrics_server) = match metrics.map(MetricsListener::start) {
        Some((metrics, server)) => (Some(metrics), Some(server)),
        None => (None, None),
    };
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening {}", session.url())?;
        if let Some(token_file) = session.token_file() {
            writeln!(out, "token-file {}", token_file.display())?;
        }
        if let Some(addr) = metrics_addr {
            writeln!(out, "metrics http://{addr}/metrics")?;
        }
        out.flush()?;
    }
    // No terminal here: of `[notify]`'s methods only the command applies.
    let notify = env.config()?.notify.clone();
    let mut notifier = crate::notify::Decider::new(&notify);
    let code = loop {
        tokio::select! {
            event = events.recv() => match event {
                Ok(event) => {
                    if let Some(metrics) = &mut metrics {
                        metrics.observe(&event);
                    }
                    // An app-server that is being restarted is not the end of the session.
                    let exited = matches!(
                        event,
                        ProxyEvent::AppServerExited {
                            restarting: false,
                            ..
                        } | ProxyEvent::SessionFailed { .. }
                    );
                    if let Some(notice) = notifier.decide(&event) {
                        crate::notify::run_command(&notify, &notice);
                    }
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
