//! What the core knows of the accounts, as a peer asks for it (`pool_snapshot`): a pure
//! getter over the state.

use std::time::Instant;

use chrono::{DateTime, Utc};

use crate::proxy::pool::wire::{KnownLimits, PoolSnapshot};

use super::state::{CoreState, Now};

impl CoreState {
    /// Every account whose limits are known, with when they were read and heard.
    pub(crate) fn pool_snapshot(&self, now: Now) -> PoolSnapshot {
        let mut accounts: Vec<KnownLimits> = self
            .snapshots
            .iter()
            .map(|(id, limits)| KnownLimits {
                account: id.clone(),
                quota: limits.quota().cloned().unwrap_or_default(),
                families: limits.others().cloned().collect(),
                read_at: self.usage_at.get(id).map(|at| wall_of(*at, now)),
                heard_at: self.heard_live.get(id).map(|at| wall_of(*at, now)),
                limit_hit: self.limit_reported.contains(id),
            })
            .collect();
        accounts.sort_by(|a, b| a.account.cmp(&b.account));
        PoolSnapshot { accounts }
    }
}

/// The wall time of a past monotonic instant (one machine, one clock).
fn wall_of(at: Instant, now: Now) -> DateTime<Utc> {
    let ago = now.mono.saturating_duration_since(at);
    now.wall - chrono::Duration::from_std(ago).unwrap_or(chrono::Duration::zero())
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use super::*;
    use crate::proxy::core::CoreConfig;
    use crate::proxy::policy::PolicyConfig;
    use crate::quota::{AccountLimits, RateLimitSnapshot, RateLimitWindow};

    #[test]
    fn the_snapshot_holds_what_is_known_and_when() {
        let now = Now {
            mono: Instant::now() + Duration::from_secs(100),
            wall: DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
        };
        let quota = RateLimitSnapshot {
            primary: Some(RateLimitWindow {
                used_percent: 42.0,
                window_duration_mins: Some(300),
                resets_at: None,
            }),
            ..RateLimitSnapshot::default()
        };
        let config = CoreConfig {
            policy: PolicyConfig::default(),
            usage_poll: Duration::from_secs(300),
            history_path: PathBuf::from("/nonexistent"),
        };
        let mut state = CoreState::new(
            config,
            Vec::new(),
            "bob".into(),
            Some(AccountLimits::full([quota.clone()])),
        );
        state
            .snapshots
            .insert("alice".into(), AccountLimits::full([quota.clone()]));
        state
            .usage_at
            .insert("alice".into(), now.mono - Duration::from_secs(30));
        state
            .heard_live
            .insert("bob".into(), now.mono - Duration::from_secs(2));
        state.limit_reported.insert("bob".into());

        let snapshot = state.pool_snapshot(now);
        let ids: Vec<_> = snapshot
            .accounts
            .iter()
            .map(|a| a.account.to_string())
            .collect();
        assert_eq!(ids, ["alice", "bob"]);
        let (alice, bob) = (&snapshot.accounts[0], &snapshot.accounts[1]);
        assert_eq!(alice.quota, quota);
        assert_eq!(
            alice.read_at,
            Some(now.wall - chrono::Duration::seconds(30))
        );
        assert_eq!(alice.heard_at, None);
        assert!(!alice.limit_hit);
        assert_eq!(bob.heard_at, Some(now.wall - chrono::Duration::seconds(2)));
        assert!(bob.limit_hit);
        // No secret can be in it: it is numbers and ids.
        let json = serde_json::to_string(&snapshot).unwrap();
        assert!(json.contains("\"limit_hit\":true"), "{json}");
    }
}
