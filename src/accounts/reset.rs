//! What redeeming a rate-limit reset credit did (docs/protocol.md §9). The redemption itself —
//! through a running session, or a short-lived app-server — is `cs-tui accounts reset`'s
//! (`commands::reset`).

/// What a redemption did, as the app-server reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The account's windows were cleared.
    Reset,
    /// The backend found no exhausted window.
    NothingToReset,
    /// The account has no credit (left).
    NoCredit,
    /// The credit was redeemed already.
    AlreadyRedeemed,
    /// An outcome this version does not know.
    Other(String),
}

impl Outcome {
    pub(crate) fn parse(outcome: &str) -> Self {
        match outcome {
            "reset" => Self::Reset,
            "nothingToReset" => Self::NothingToReset,
            "noCredit" => Self::NoCredit,
            "alreadyRedeemed" => Self::AlreadyRedeemed,
            other => Self::Other(other.to_owned()),
        }
    }
}
