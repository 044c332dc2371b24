//! Commands from the user (hotkeys, `cs-tui switch`, the accounts commands). Rules: a manual
//! switch is checked at once and answered in a sentence (refused with the reason, or armed:
//! now, or when the running turn ends); a reset credit is redeemed only for the active
//! account, and not while the session changes accounts or restarts its app-server.

use crate::account_id::AccountId;
use crate::proxy::events::ProxyCommand;

use super::effects::{Effect, Effects};
use super::lifecycle::AppServerState;
use super::state::{CoreState, Now};
use super::switching::Target;

impl CoreState {
    pub(super) fn command(&mut self, command: ProxyCommand, now: Now, fx: &mut Effects) {
        let answer = match command {
            ProxyCommand::SwitchTo { account_id } => {
                self.request_manual(Target::Account(account_id), now, fx)
            }
            ProxyCommand::SwitchBest => self.request_manual(Target::Best, now, fx),
            ProxyCommand::RefreshUsage => {
                self.poll_usage(true, now, fx);
                Ok("refreshing every account's usage".to_owned())
            }
            ProxyCommand::AccountsChanged => {
                fx.push(Effect::ListAccounts);
                Ok("reading the stored accounts again".to_owned())
            }
            ProxyCommand::ConsumeResetCredit {
                account_id,
                idempotency_key,
            } => {
                self.consume_reset_credit(account_id, idempotency_key, fx);
                return;
            }
        };
        fx.push(Effect::Reply(answer));
    }

    /// Redeems a reset credit of the active account on the control connection (the
    /// app-server's auth is that account's), then re-reads its usage.
    fn consume_reset_credit(
        &mut self,
        account_id: AccountId,
        idempotency_key: String,
        fx: &mut Effects,
    ) {
        if self.active.as_ref() != Some(&account_id) {
            fx.push(Effect::Reply(Err(
                crate::proxy::events::NOT_THE_ACTIVE_ACCOUNT.to_owned(),
            )));
            return;
        }
        if self.switching || self.app_server != AppServerState::Up {
            fx.push(Effect::Reply(Err(
                "the session is changing accounts or restarting its app-server; try again in a moment"
                    .to_owned(),
            )));
            return;
        }
        fx.push(Effect::RedeemResetCredit {
            account: account_id,
            idempotency_key,
        });
    }
}
