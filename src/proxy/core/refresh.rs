//! Answers to `account/chatgptAuthTokens/refresh`. Rule: the request reaches every
//! connection; the relay drops it on client connections and the core answers it once, on its
//! control connection, with freshly refreshed tokens of the same account — the active seat of
//! the workspace it names (another account's tokens would fail the turn, docs/protocol.md §2).
//! Other server requests on the control connection get an error.

use serde_json::Value;

use crate::account_id::AccountId;
use crate::proxy::directory::DirAccount;
use crate::proxy::rpc::{RefreshParams, method};

use super::effects::{Effect, Effects};
use super::state::CoreState;

impl CoreState {
    /// A request of the app-server on the control connection.
    pub(super) fn server_request(
        &self,
        id: Value,
        request_method: &str,
        params: Value,
        fx: &mut Effects,
    ) {
        if request_method != method::TOKENS_REFRESH {
            fx.push(Effect::RespondError {
                id,
                error: format!("cs-tui's control connection does not handle {request_method}"),
            });
            return;
        }
        let params: RefreshParams = serde_json::from_value(params).unwrap_or(RefreshParams {
            previous_account_id: None,
            reason: None,
        });
        let account = refresh_target(
            &self.accounts,
            self.active.as_ref(),
            params.previous_account_id.as_deref(),
        )
        .cloned();
        fx.push(Effect::AnswerRefresh { id, account });
    }
}

/// The stored account a token refresh request is for. `previousAccountId` names a workspace,
/// and several stored accounts can be seats of it (one `chatgpt_account_id`, different users):
/// the active account when it is one of them, else the seat of the active account's user, else
/// the only one. Without `previousAccountId`, the active account.
pub(super) fn refresh_target<'a>(
    accounts: &'a [DirAccount],
    active: Option<&AccountId>,
    previous_account_id: Option<&str>,
) -> Option<&'a DirAccount> {
    let active = active.and_then(|id| accounts.iter().find(|a| a.id == *id));
    let Some(workspace) = previous_account_id else {
        return active;
    };
    let seats: Vec<&DirAccount> = accounts
        .iter()
        .filter(|a| a.chatgpt_account_id.as_deref() == Some(workspace))
        .collect();
    if let Some(active) = active.filter(|a| seats.iter().any(|s| s.id == a.id)) {
        return Some(active);
    }
    let user = active.and_then(|a| a.user_id.as_deref());
    if let Some(seat) = seats
        .iter()
        .find(|s| user.is_some() && s.user_id.as_deref() == user)
    {
        return Some(seat);
    }
    if seats.len() > 1 {
        tracing::warn!(
            seats = seats.len(),
            "a token refresh names a workspace with several stored seats, none of them active"
        );
    }
    seats.first().copied()
}
