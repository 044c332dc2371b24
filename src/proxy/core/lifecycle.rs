//! The app-server's life as the core sees it. Rules: when it exits, the relay's gate closes
//! (reconnecting clients wait) and hidden re-runs give up; a restarted app-server is logged
//! into the active account before the gate opens again; switches wait meanwhile; a restart
//! that cannot log anyone in ends the session, and says why.

use crate::account_id::AccountId;
use crate::proxy::app_server::AppServerExit;
use crate::proxy::events::{ConnectionState, ProxyEvent};
use crate::quota::AccountLimits;

use super::effects::{Effect, Effects};
use super::state::{CoreState, Now};

/// Where the app-server is in its life, as the core knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum AppServerState {
    /// Up and logged in: switches can run.
    Up,
    /// Exited; another is being started and logged in.
    Restarting,
    /// Exited for good.
    Gone,
}

impl CoreState {
    pub(super) fn emit_connection(&self, now: Now, fx: &mut Effects) {
        let state = match self.app_server {
            AppServerState::Up => ConnectionState::Ready {
                clients: self.clients.len(),
            },
            AppServerState::Restarting => ConnectionState::Starting,
            AppServerState::Gone => ConnectionState::Down,
        };
        fx.emit(ProxyEvent::Connection {
            state,
            at: now.wall,
        });
    }

    /// The app-server exited; `restarting`: the session is starting another.
    pub(super) fn app_server_exited(
        &mut self,
        exit: AppServerExit,
        restarting: bool,
        now: Now,
        fx: &mut Effects,
    ) {
        self.app_server = if restarting {
            AppServerState::Restarting
        } else {
            AppServerState::Gone
        };
        // Reconnecting clients wait at the gate until the next one is logged in.
        fx.push(Effect::SetReady(false));
        self.give_up_reruns(fx);
        fx.emit(ProxyEvent::AppServerExited {
            status: exit.status,
            stderr_tail: exit.stderr_tail,
            restarting,
            at: now.wall,
        });
        self.emit_connection(now, fx);
    }

    /// A new app-server is up: log the active account into it.
    pub(super) fn relogin(&mut self, now: Now, fx: &mut Effects) {
        let Some(account) = self
            .active
            .as_ref()
            .and_then(|id| self.accounts.iter().find(|a| &a.id == id))
            .cloned()
        else {
            self.app_server_gone(
                "restarted, but no account was active to log in".to_owned(),
                now,
                fx,
            );
            return;
        };
        fx.push(Effect::Relogin(account));
    }

    pub(super) fn relogged(
        &mut self,
        account: AccountId,
        result: Result<Option<AccountLimits>, String>,
        now: Now,
        fx: &mut Effects,
    ) {
        match result {
            Ok(snapshot) => {
                self.app_server = AppServerState::Up;
                if let Some(limits) = snapshot {
                    self.snapshots.insert(account.clone(), limits);
                    self.emit_limits(&account, now, fx);
                }
                fx.push(Effect::SetReady(true));
                fx.emit(ProxyEvent::AppServerRestarted {
                    account: self.account_ref(&account),
                    at: now.wall,
                });
                self.emit_connection(now, fx);
                self.maybe_execute(now, fx);
            }
            Err(error) => {
                tracing::error!(%error, "logging in after the app-server restart failed");
                let name = self.account_ref(&account).name;
                self.app_server_gone(
                    format!("restarted, but logging in {name} failed: {error}"),
                    now,
                    fx,
                );
            }
        }
    }

    /// A restarted app-server that cannot serve (nobody logged in): the TUI would sit on its
    /// sign-in screen, so the session is over, and says so.
    fn app_server_gone(&mut self, status: String, now: Now, fx: &mut Effects) {
        self.app_server = AppServerState::Gone;
        fx.emit(ProxyEvent::AppServerExited {
            status,
            stderr_tail: String::new(),
            restarting: false,
            at: now.wall,
        });
        self.emit_connection(now, fx);
    }
}
