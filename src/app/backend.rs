//! The seam between the dashboard and the switching proxy.
//!
//! The dashboard needs four things from whatever sits in front of Codex: where Codex connects
//! (`--remote` URL and the token's variable), a stream of [`ProxyEvent`]s, a way to send
//! [`ProxyCommand`]s, and the stored accounts to list. [`start_backend`] is the one place that
//! builds them.

use std::any::Any;

use color_eyre::eyre::Result;
use tokio::sync::mpsc;

use crate::app::dashboard::AccountView;
use crate::app::launcher::RemoteTarget;
use crate::cli::GlobalArgs;
use crate::config::Config;
use crate::errors::with_hint;
use crate::proxy::events::{ProxyCommand, ProxyEvent};
use crate::secret::Secret;

/// Set to `1` to run plain `codex` in the pane, without the proxy (no quota, no switching).
/// A development path: it lets the pane be used and tested on its own.
pub const NO_PROXY_ENV: &str = "CS_TUI_NO_PROXY";

/// Where Codex connects, and the token it must present there.
#[derive(Debug)]
pub struct RemoteEndpoint {
    /// `ws://127.0.0.1:PORT` of the proxy.
    pub url: String,
    /// The environment variable Codex reads the token from (`--remote-auth-token-env`).
    pub token_env: String,
    /// The proxy's bearer token. Only ever placed in the child's environment.
    pub token: Secret,
}

impl RemoteEndpoint {
    pub fn target(&self) -> RemoteTarget {
        RemoteTarget {
            url: self.url.clone(),
            token_env: self.token_env.clone(),
        }
    }
}

/// Everything the dashboard gets from the proxy.
pub struct SessionBackend {
    /// `None`: plain Codex without `--remote` (the [`NO_PROXY_ENV`] path).
    pub remote: Option<RemoteEndpoint>,
    /// What the proxy did or saw. A closed channel is fine (nothing more will come).
    pub events: mpsc::UnboundedReceiver<ProxyEvent>,
    /// What the user asks of the proxy (hotkeys, picker).
    pub commands: mpsc::UnboundedSender<ProxyCommand>,
    /// The stored accounts, for the panel and the picker.
    pub accounts: Vec<AccountView>,
    /// Kept alive until Codex has exited, then dropped: put the proxy's handle here so its
    /// `Drop` stops the app-server.
    pub guard: Option<Box<dyn Any + Send>>,
}

impl SessionBackend {
    /// No proxy: events never come, commands go nowhere.
    pub fn direct() -> Self {
        let (_, events) = mpsc::unbounded_channel();
        let (commands, _) = mpsc::unbounded_channel();
        Self {
            remote: None,
            events,
            commands,
            accounts: Vec::new(),
            guard: None,
        }
    }

    pub fn is_direct(&self) -> bool {
        self.remote.is_none()
    }
}

/// Starts whatever sits in front of Codex for this session.
///
/// The proxy (issue 4) and the account store (issue 3) plug in here: start the app-server and
/// the proxy with `config.switch`/`config.polling`, log in the best account, and return its
/// endpoint, event/command channels, the store's accounts and a guard.
pub async fn start_backend(_global: &GlobalArgs, _config: &Config) -> Result<SessionBackend> {
    if std::env::var_os(NO_PROXY_ENV).is_some_and(|v| !v.is_empty() && v != "0") {
        return Ok(SessionBackend::direct());
    }
    Err(with_hint(
        color_eyre::eyre::eyre!("the switching proxy is not available in this build"),
        format!("set {NO_PROXY_ENV}=1 to run plain codex in the pane without switching"),
    ))
}
