//! The composition root: parses the command line, builds one [`Env`] — the store directory,
//! the config, the logger, the tokio runtime, the HTTP client, the codex binary — and hands it
//! to the one handler of the command. Only this module (and `main`) imports [`crate::cli`].
//!
//! - `accounts`: `cs-tui accounts …` (`reset`: `accounts reset`);
//! - `status`: `cs-tui status`;
//! - `switch`: `cs-tui switch NAME [--session S]`;
//! - `sessions`: `cs-tui sessions`;
//! - `serve`: `cs-tui serve`;
//! - `doctor`: `cs-tui doctor`;
//! - `demo`: `cs-tui demo`;
//! - `package`: `cs-tui completions SHELL` and `cs-tui man`;
//! - `version`: `cs-tui --version`;
//! - `dashboard`: `cs-tui [CODEX ARGS]`.

mod accounts;
mod dashboard;
mod demo;
mod doctor;
mod history;
mod output;
mod package;
mod reset;
mod serve;
mod sessions;
mod status;
mod switch;
mod version;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::OnceLock;
use std::time::Duration;

use clap::Parser as _;
use color_eyre::eyre::{Result, WrapErr, eyre};
use tracing_appender::non_blocking::WorkerGuard;

use crate::accounts::{Account, Store};
use crate::cli::{Cli, Command, GlobalArgs};
use crate::config::Config;
use crate::proxy::session::SessionOptions;

/// Parses the command line and runs it.
pub fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    if let Some(code) = crate::process::reaper::run_if_asked(&args) {
        return code;
    }
    crate::process::reaper::enable();
    let cli = Cli::parse_from(args);
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            crate::errors::print_error(&err);
            ExitCode::FAILURE
        }
    }
}

/// Builds the [`Env`] the command needs and runs the command's handler.
pub fn run(cli: Cli) -> Result<ExitCode> {
    let Cli {
        version,
        global,
        command,
        codex_args,
    } = cli;
    // The demo's sandbox points the environment at itself, so it comes first: before the
    // runtime's threads exist, and before the store directory is read from that environment.
    let sandbox = match &command {
        // SAFETY: no other thread exists yet (the runtime starts in `Env::new`).
        Some(Command::Demo(_)) => Some(unsafe { crate::demo::Sandbox::create() }?),
        _ => None,
    };
    let setup = match &command {
        Some(Command::Accounts(_) | Command::Status(_)) => Setup::logged("accounts"),
        Some(Command::Serve(_)) => Setup::logged("serve"),
        Some(Command::Switch(_) | Command::Sessions(_) | Command::History(_)) => Setup {
            store_required: true,
            config_first: false,
            log: None,
        },
        // The doctor reports a missing store directory as a check; the others need none.
        Some(Command::Doctor(_) | Command::Completions(_) | Command::Man(_)) => Setup::bare(),
        // `--version` (which clap lets through only without codex arguments or a subcommand).
        None if version => Setup::bare(),
        // The terminal belongs to the dashboard: a logger that cannot start is not an error.
        // Its config is read first: a broken one stops it before anything is written.
        None | Some(Command::Demo(_)) => Setup {
            store_required: true,
            config_first: true,
            log: Some(Log {
                name: "cs-tui",
                required: false,
            }),
        },
    };
    let env = Env::new(&global, setup)?;
    if version {
        return version::run(&env);
    }
    match command {
        Some(Command::Accounts(cmd)) => accounts::run(&env, cmd),
        Some(Command::Status(args)) => status::run(&env, args),
        Some(Command::Switch(args)) => switch::run(&env, args),
        Some(Command::Sessions(args)) => sessions::run(&env, args),
        Some(Command::History(args)) => history::run(&env, args),
        Some(Command::Serve(args)) => serve::run(&env, args),
        Some(Command::Doctor(args)) => doctor::run(&env, args),
        Some(Command::Completions(args)) => package::completions(&args),
        Some(Command::Man(args)) => package::man(&args),
        Some(Command::Demo(args)) => demo::run(env, sandbox.expect("made above"), &args),
        None => dashboard::run(env, codex_args),
    }
}

/// What a command needs of its [`Env`].
struct Setup {
    /// Fail at once without a store directory.
    store_required: bool,
    /// Read the config before anything else (else on first use).
    config_first: bool,
    /// Where it logs, if it does.
    log: Option<Log>,
}

impl Setup {
    /// No store needed, no config read, no log.
    fn bare() -> Self {
        Self {
            store_required: false,
            config_first: false,
            log: None,
        }
    }

    fn logged(name: &'static str) -> Self {
        Self {
            store_required: true,
            config_first: false,
            log: Some(Log {
                name,
                required: true,
            }),
        }
    }
}

/// A log file: `<store>/logs/<name>.log`.
struct Log {
    name: &'static str,
    /// A logger that cannot start is an error (else it is skipped).
    required: bool,
}

/// What every command is given, built once per process.
pub struct Env {
    /// The store directory, or why there is none (`$CS_TUI_HOME` unset and no config dir).
    store_dir: std::result::Result<PathBuf, String>,
    /// The codex binary to run (`--codex-bin`, `CS_TUI_CODEX_BIN`).
    codex_bin: OsString,
    config: OnceLock<Config>,
    http: OnceLock<reqwest::Client>,
    /// The one async runtime.
    runtime: tokio::runtime::Runtime,
    /// Keeps the logger's buffered lines until exit.
    _log: Option<WorkerGuard>,
}

impl Env {
    fn new(global: &GlobalArgs, setup: Setup) -> Result<Self> {
        let store_dir = crate::paths::store_dir();
        let store_dir = match store_dir {
            Ok(dir) => Ok(dir),
            Err(err) if setup.store_required => return Err(err),
            Err(err) => Err(format!("{err:#}")),
        };
        let config = OnceLock::new();
        if setup.config_first
            && let Ok(dir) = &store_dir
        {
            let _ = config.set(Config::load(&dir.join(crate::config::CONFIG_FILE))?);
        }
        let log = match (setup.log, &store_dir) {
            (Some(log), Ok(dir)) => {
                let level = global.log_level.as_deref();
                match crate::logging::init(&dir.join("logs"), log.name, level) {
                    Ok((guard, _)) => Some(guard),
                    Err(_) if !log.required => None,
                    Err(err) => return Err(err),
                }
            }
            _ => None,
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .wrap_err("starting the async runtime")?;
        Ok(Self {
            store_dir,
            codex_bin: global.codex_bin.clone(),
            config,
            http: OnceLock::new(),
            runtime,
            _log: log,
        })
    }

    /// The store directory: `$CS_TUI_HOME`, else `~/.config/cs-tui`.
    pub fn store_dir(&self) -> Result<&Path> {
        match &self.store_dir {
            Ok(dir) => Ok(dir),
            Err(message) => Err(eyre!("{message}")),
        }
    }

    /// The account store in [`Self::store_dir`].
    pub fn store(&self) -> Result<Store> {
        Ok(Store::open(self.store_dir()?))
    }

    pub fn codex_bin(&self) -> &OsString {
        &self.codex_bin
    }

    pub fn runtime(&self) -> &tokio::runtime::Runtime {
        &self.runtime
    }

    /// `<store>/config.toml`, read on first use (a command that needs no config is not
    /// stopped by a broken one).
    pub fn config(&self) -> Result<&Config> {
        if let Some(config) = self.config.get() {
            return Ok(config);
        }
        let config = Config::load(&self.store_dir()?.join(crate::config::CONFIG_FILE))?;
        Ok(self.config.get_or_init(|| config))
    }

    /// The client for every backend request (usage, tokens, reset credits, the doctor's
    /// probe), built on first use. It says what Codex's app-server says (the `User-Agent` the
    /// last session learned, [`crate::accounts::user_agent`]), and nothing when that is
    /// unknown: the backend is not told of cs-tui.
    pub fn http(&self) -> Result<&reqwest::Client> {
        if let Some(client) = self.http.get() {
            return Ok(client);
        }
        let mut builder = reqwest::Client::builder().connect_timeout(Duration::from_secs(10));
        if let Ok(dir) = &self.store_dir
            && let Some(user_agent) = crate::accounts::user_agent::load(dir)
        {
            builder = builder.user_agent(user_agent);
        }
        let client = builder.build().wrap_err("creating the HTTP client")?;
        Ok(self.http.get_or_init(|| client))
    }

    /// On first run — no store yet — imports the current Codex login
    /// (`$CODEX_HOME/auth.json`). The one place that does; each command says so its own way.
    pub fn import_codex_login(&self) -> Result<Option<Account>> {
        crate::accounts::import_codex_auth_if_empty(&self.store()?)
    }

    /// The options of a session (the dashboard's or `serve`'s), from the config file and the
    /// environment.
    pub fn session_options(&self) -> Result<SessionOptions> {
        let config = self.config()?;
        Ok(SessionOptions {
            codex_bin: self.codex_bin.clone(),
            codex_home: crate::paths::session_codex_home()?,
            store_dir: self.store_dir()?.to_owned(),
            policy: (&config.switch).into(),
            usage_poll: config.polling.usage_interval(),
            listen: "127.0.0.1:0".parse().expect("a valid address"),
            token_file: None,
            hidden_rerun: config.switch.hidden_rerun,
            kind: crate::proxy::pool::SessionKind::Dashboard,
            cwd: std::env::current_dir().unwrap_or_default(),
            placement: config.pool.placement,
            pool: !crate::proxy::pool::disabled_by_env(),
        })
    }

    /// Sends a command to every running session, best effort. For commands that run outside
    /// any session.
    pub fn announce(&self, command: &crate::proxy::events::ProxyCommand) {
        if let Ok(dir) = self.store_dir() {
            self.runtime.block_on(crate::ipc::announce(dir, command));
        }
    }
}

/// The exit code of a command stopped by Ctrl-C.
const INTERRUPTED: u8 = 130;

impl Env {
    /// Runs `work` until it ends or Ctrl-C comes (`None`). A token refresh under way is not
    /// cancelled by that: it runs on its own task, and [`Self::finish_refreshes`] waits for
    /// it.
    fn until_interrupted<T>(&self, work: impl std::future::Future<Output = T>) -> Option<T> {
        let out = self.runtime.block_on(async {
            tokio::select! {
                out = work => Some(out),
                Ok(()) = tokio::signal::ctrl_c() => None,
            }
        });
        if out.is_none() {
            eprintln!("Interrupted.");
        }
        out
    }

    /// Before a command that refreshed tokens exits: lets a refresh under way store its
    /// answer (see [`crate::accounts::settle_refreshes`]); a second Ctrl-C stops waiting.
    /// Returns whether every rotated token was stored.
    fn finish_refreshes(&self, store: &Store) -> bool {
        crate::accounts::stop_retrying_refreshes();
        self.runtime.block_on(async {
            tokio::select! {
                saved = crate::accounts::settle_refreshes(store) => saved,
                Ok(()) = tokio::signal::ctrl_c() => {
                    eprintln!("Interrupted again: not waiting for the token refresh under way.");
                    false
                }
            }
        })
    }
}
