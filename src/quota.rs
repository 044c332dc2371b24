//! Rate-limit data shared by the proxy (live snapshots from the app-server), the account layer
//! (`/wham/usage` of every account) and the UI: windows, their classification by duration,
//! and the merge rule for sparse updates.

use serde::{Deserialize, Serialize};

/// Minutes in the 5-hour window.
pub const FIVE_HOUR_MINUTES: u32 = 300;
/// Minutes in the weekly window.
pub const WEEKLY_MINUTES: u32 = 10_080;

/// Which limit a window is. Codex may put the weekly window in `primary`, so windows are
/// classified by their duration, never by their slot (docs/protocol.md §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum WindowKind {
    FiveHour,
    Weekly,
    /// Any other duration, in minutes (0 when the duration is unknown).
    Other(u32),
}

impl WindowKind {
    /// Classifies a window by its length. A small tolerance absorbs rounding of the duration.
    pub fn from_minutes(minutes: Option<u32>) -> Self {
        match minutes {
            Some(m) if m.abs_diff(FIVE_HOUR_MINUTES) <= 5 => Self::FiveHour,
            Some(m) if m.abs_diff(WEEKLY_MINUTES) <= 60 => Self::Weekly,
            Some(m) => Self::Other(m),
            None => Self::Other(0),
        }
    }

    /// The compact label of the account lists: `5h`, `wk`, `30d`, …
    pub fn short_label(self) -> String {
        match self {
            Self::Weekly => "wk".to_owned(),
            other => other.label(),
        }
    }

    pub fn label(self) -> String {
        match self {
            Self::FiveHour => "5h".to_owned(),
            Self::Weekly => "weekly".to_owned(),
            Self::Other(0) => "window".to_owned(),
            Self::Other(m) if m % 1440 == 0 => format!("{}d", m / 1440),
            Self::Other(m) if m % 60 == 0 => format!("{}h", m / 60),
            Self::Other(m) => format!("{m}m"),
        }
    }
}

/// One rate-limit window, in the app-server's shape (`usedPercent`, `windowDurationMins`,
/// `resetsAt` in unix seconds).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RateLimitWindow {
    pub used_percent: f64,
    #[serde(default)]
    pub window_duration_mins: Option<u32>,
    /// Unix seconds.
    #[serde(default)]
    pub resets_at: Option<i64>,
}

impl RateLimitWindow {
    pub fn kind(&self) -> WindowKind {
        WindowKind::from_minutes(self.window_duration_mins)
    }

    pub fn is_exhausted(&self) -> bool {
        self.used_percent >= 100.0
    }

    /// Percentage points left, clamped to 0–100.
    pub fn headroom(&self) -> f64 {
        (100.0 - self.used_percent).clamp(0.0, 100.0)
    }
}

/// Credits attached to an account.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Credits {
    pub has_credits: bool,
    pub unlimited: bool,
    #[serde(default)]
    pub balance: Option<String>,
}

impl Credits {
    /// True when the account relies on credits and has none left.
    pub fn is_exhausted(&self) -> bool {
        !self.unlimited && !self.has_credits && self.balance.as_deref().is_some_and(is_zero_balance)
    }
}

fn is_zero_balance(balance: &str) -> bool {
    balance.trim().parse::<f64>().is_ok_and(|b| b <= 0.0)
}

/// A rate-limit snapshot as the app-server sends it in `account/rateLimits/read` and
/// `account/rateLimits/updated`. Unknown fields are ignored here (the proxy forwards the
/// original bytes, never this struct).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RateLimitSnapshot {
    #[serde(default)]
    pub limit_id: Option<String>,
    #[serde(default)]
    pub limit_name: Option<String>,
    #[serde(default)]
    pub primary: Option<RateLimitWindow>,
    #[serde(default)]
    pub secondary: Option<RateLimitWindow>,
    #[serde(default)]
    pub credits: Option<Credits>,
    #[serde(default)]
    pub plan_type: Option<String>,
    #[serde(default)]
    pub rate_limit_reached_type: Option<String>,
    /// The seat's own spend control inside a workspace (`individualLimit`), when the backend
    /// sends one.
    #[serde(default)]
    pub individual_limit: Option<SpendLimit>,
}

/// A spend-control limit (`individualLimit`, from `spend_control.individual_limit` of
/// `/wham/usage`): amounts as the backend formats them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SpendLimit {
    pub limit: String,
    pub used: String,
    pub remaining_percent: f64,
    /// Unix seconds.
    #[serde(default)]
    pub resets_at: Option<i64>,
}

impl SpendLimit {
    pub fn used_percent(&self) -> f64 {
        (100.0 - self.remaining_percent).clamp(0.0, 100.0)
    }
}

/// The limit family that is the account's general quota (docs/protocol.md §9).
pub const MAIN_LIMIT_ID: &str = "codex";

/// Whether a snapshot with this `limitId` is the account's general quota: the `codex` family,
/// or a snapshot that names no family.
pub fn is_main_family(limit_id: Option<&str>) -> bool {
    limit_id.is_none_or(|id| id == MAIN_LIMIT_ID)
}

/// Whether a `rateLimitReachedType` is a workspace's limit, shared by all of its seats.
pub fn is_workspace_limit(reached_type: &str) -> bool {
    reached_type.starts_with("workspace_")
}

/// Every limit family of one account (`limitId` → snapshot). The `codex` family is the
/// account's quota: gauges, pace and every switch decision come from it; the others belong
/// to particular models and are shown only.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AccountLimits {
    main: Option<Box<RateLimitSnapshot>>,
    others: std::collections::BTreeMap<String, RateLimitSnapshot>,
}

impl AccountLimits {
    /// A full picture: what a read (`account/rateLimits/read`, `/wham/usage`) returned. Any
    /// window or family it does not hold is not there any more.
    pub fn full(snapshots: impl IntoIterator<Item = RateLimitSnapshot>) -> Self {
        let mut limits = Self::default();
        for snapshot in snapshots {
            match snapshot.limit_id.clone() {
                Some(id) if !is_main_family(Some(&id)) => {
                    limits.others.insert(id, snapshot);
                }
                _ if limits.main.is_none() => limits.main = Some(Box::new(snapshot)),
                // A second snapshot without a family: keep the `codex` one.
                _ if snapshot.limit_id.is_some() => limits.main = Some(Box::new(snapshot)),
                _ => {}
            }
        }
        limits
    }

    /// Merges a sparse `account/rateLimits/updated` into its family. Returns whether the
    /// update was of the account's quota (only those may trigger a switch).
    pub fn apply_update(&mut self, update: &RateLimitSnapshot) -> bool {
        match update.limit_id.as_deref() {
            Some(id) if !is_main_family(Some(id)) => {
                self.others.entry(id.to_owned()).or_default().merge(update);
                false
            }
            _ => {
                self.main.get_or_insert_with(Default::default).merge(update);
                true
            }
        }
    }

    /// The account's quota (the `codex` family), if known.
    pub fn quota(&self) -> Option<&RateLimitSnapshot> {
        self.main.as_deref()
    }

    /// The account's quota, created empty when unknown.
    pub fn quota_mut(&mut self) -> &mut RateLimitSnapshot {
        self.main.get_or_insert_with(Default::default)
    }

    /// The other families (model-specific limits), ordered by `limitId`.
    pub fn others(&self) -> impl Iterator<Item = &RateLimitSnapshot> {
        self.others.values()
    }
}

impl RateLimitSnapshot {
    /// Merges a sparse `account/rateLimits/updated` into this snapshot: present values replace
    /// what we knew, a null field keeps it (docs/protocol.md §3).
    ///
    /// Windows are matched by kind, so an update that moves the weekly window into `primary`
    /// does not overwrite the 5-hour numbers.
    pub fn merge(&mut self, update: &RateLimitSnapshot) {
        for window in [update.primary, update.secondary].into_iter().flatten() {
            self.put_window(window);
        }
        if update.limit_id.is_some() {
            self.limit_id.clone_from(&update.limit_id);
        }
        if update.limit_name.is_some() {
            self.limit_name.clone_from(&update.limit_name);
        }
        if update.credits.is_some() {
            self.credits.clone_from(&update.credits);
        }
        if update.plan_type.is_some() {
            self.plan_type.clone_from(&update.plan_type);
        }
        if update.rate_limit_reached_type.is_some() {
            self.rate_limit_reached_type
                .clone_from(&update.rate_limit_reached_type);
        }
        if update.individual_limit.is_some() {
            self.individual_limit.clone_from(&update.individual_limit);
        }
    }

    fn put_window(&mut self, window: RateLimitWindow) {
        let kind = window.kind();
        let known_duration = window.window_duration_mins.is_some();
        let existing = [&mut self.primary, &mut self.secondary]
            .into_iter()
            .flatten()
            .find(|existing| existing.kind() == kind || !known_duration);
        if let Some(existing) = existing {
            let mut merged = window;
            merged.window_duration_mins = window
                .window_duration_mins
                .or(existing.window_duration_mins);
            merged.resets_at = window.resets_at.or(existing.resets_at);
            *existing = merged;
            return;
        }
        if self.primary.is_none() {
            self.primary = Some(window);
        } else if self.secondary.is_none() {
            self.secondary = Some(window);
        } else {
            // Both slots hold other kinds: keep the newest in primary.
            self.primary = Some(window);
        }
    }

    /// Windows of this snapshot, whatever slot they came in.
    pub fn windows(&self) -> impl Iterator<Item = &RateLimitWindow> {
        self.primary.iter().chain(self.secondary.iter())
    }

    /// The windows this snapshot has, shortest first (unknown lengths last).
    pub fn windows_by_length(&self) -> Vec<&RateLimitWindow> {
        let mut windows: Vec<&RateLimitWindow> = self.windows().collect();
        windows.sort_by_key(|w| w.window_duration_mins.unwrap_or(u32::MAX));
        windows
    }

    pub fn window(&self, kind: WindowKind) -> Option<&RateLimitWindow> {
        self.windows().find(|w| w.kind() == kind)
    }

    pub fn five_hour(&self) -> Option<&RateLimitWindow> {
        self.window(WindowKind::FiveHour)
    }

    pub fn weekly(&self) -> Option<&RateLimitWindow> {
        self.window(WindowKind::Weekly)
    }

    /// A workspace's limit (`workspace_*`): every seat of that workspace has hit it.
    pub fn workspace_limit(&self) -> Option<&str> {
        self.rate_limit_reached_type
            .as_deref()
            .filter(|t| is_workspace_limit(t))
    }

    /// A short name for the family: its `limitName`, else its `limitId`.
    pub fn family_name(&self) -> &str {
        self.limit_name
            .as_deref()
            .or(self.limit_id.as_deref())
            .unwrap_or(MAIN_LIMIT_ID)
    }

    /// A hard limit: a window at 100 %, a limit-reached type, or credits exhausted.
    pub fn is_exhausted(&self) -> bool {
        self.windows().any(RateLimitWindow::is_exhausted)
            || self.rate_limit_reached_type.is_some()
            || self.credits.as_ref().is_some_and(Credits::is_exhausted)
    }

    /// When the account becomes usable again: the latest reset among exhausted windows,
    /// or the earliest reset at all when the limit comes from elsewhere.
    pub fn available_again_at(&self) -> Option<i64> {
        let exhausted: Vec<i64> = self
            .windows()
            .filter(|w| w.is_exhausted())
            .filter_map(|w| w.resets_at)
            .collect();
        if !exhausted.is_empty() {
            return exhausted.into_iter().max();
        }
        self.windows().filter_map(|w| w.resets_at).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(used: f64, mins: Option<u32>, reset: Option<i64>) -> RateLimitWindow {
        RateLimitWindow {
            used_percent: used,
            window_duration_mins: mins,
            resets_at: reset,
        }
    }

    #[test]
    fn windows_are_classified_by_duration() {
        let cases = [
            (Some(300), WindowKind::FiveHour),
            (Some(299), WindowKind::FiveHour),
            (Some(10080), WindowKind::Weekly),
            (Some(60), WindowKind::Other(60)),
            (None, WindowKind::Other(0)),
        ];
        for (mins, kind) in cases {
            assert_eq!(WindowKind::from_minutes(mins), kind, "{mins:?}");
        }
        assert_eq!(WindowKind::Other(1440).label(), "1d");
    }

    #[test]
    fn weekly_in_primary_is_found_as_weekly() {
        let snapshot = RateLimitSnapshot {
            primary: Some(window(40.0, Some(10080), Some(9))),
            ..Default::default()
        };
        assert_eq!(snapshot.weekly().unwrap().used_percent, 40.0);
        assert!(snapshot.five_hour().is_none());
    }

    #[test]
    fn sparse_update_keeps_what_it_does_not_mention() {
        let mut known = RateLimitSnapshot {
            limit_id: Some("codex".into()),
            primary: Some(window(10.0, Some(300), Some(100))),
            secondary: Some(window(20.0, Some(10080), Some(200))),
            credits: Some(Credits {
                has_credits: true,
                unlimited: false,
                balance: Some("5".into()),
            }),
            plan_type: Some("plus".into()),
            ..Default::default()
        };
        let update = RateLimitSnapshot {
            primary: Some(window(55.0, Some(300), None)),
            ..Default::default()
        };
        known.merge(&update);
        assert_eq!(known.five_hour().unwrap().used_percent, 55.0);
        assert_eq!(known.five_hour().unwrap().resets_at, Some(100));
        assert_eq!(known.weekly().unwrap().used_percent, 20.0);
        assert_eq!(known.plan_type.as_deref(), Some("plus"));
        assert!(known.credits.is_some());
    }

    #[test]
    fn update_with_weekly_in_primary_does_not_clobber_five_hour() {
        let mut known = RateLimitSnapshot {
            primary: Some(window(10.0, Some(300), Some(100))),
            secondary: Some(window(20.0, Some(10080), Some(200))),
            ..Default::default()
        };
        known.merge(&RateLimitSnapshot {
            primary: Some(window(30.0, Some(10080), Some(300))),
            ..Default::default()
        });
        assert_eq!(known.five_hour().unwrap().used_percent, 10.0);
        assert_eq!(known.weekly().unwrap().used_percent, 30.0);
    }

    #[test]
    fn exhaustion_has_three_causes() {
        let hundred = RateLimitSnapshot {
            primary: Some(window(100.0, Some(300), Some(50))),
            secondary: Some(window(30.0, Some(10080), Some(500))),
            ..Default::default()
        };
        assert!(hundred.is_exhausted());
        assert_eq!(hundred.available_again_at(), Some(50));

        let typed = RateLimitSnapshot {
            rate_limit_reached_type: Some("workspace_member_usage_limit_reached".into()),
            ..Default::default()
        };
        assert!(typed.is_exhausted());

        let broke = RateLimitSnapshot {
            credits: Some(Credits {
                has_credits: false,
                unlimited: false,
                balance: Some("0".into()),
            }),
            ..Default::default()
        };
        assert!(broke.is_exhausted());

        let fine = RateLimitSnapshot {
            primary: Some(window(99.0, Some(300), Some(50))),
            ..Default::default()
        };
        assert!(!fine.is_exhausted());
    }

    #[test]
    fn families_are_kept_apart_and_only_codex_is_the_quota() {
        let mut limits = AccountLimits::default();
        let codex = RateLimitSnapshot {
            limit_id: Some("codex".into()),
            primary: Some(window(42.0, Some(300), Some(100))),
            ..Default::default()
        };
        let spark = RateLimitSnapshot {
            limit_id: Some("codex_bengalfox".into()),
            limit_name: Some("GPT-5.3-Codex-Spark".into()),
            primary: Some(window(100.0, Some(300), Some(50))),
            ..Default::default()
        };
        assert!(limits.apply_update(&codex));
        assert!(!limits.apply_update(&spark), "Spark is not the quota");
        let quota = limits.quota().unwrap();
        assert_eq!(quota.five_hour().unwrap().used_percent, 42.0);
        assert!(!quota.is_exhausted());
        assert_eq!(limits.others().count(), 1);
        // A sparse update of the quota with no limitId still lands on the quota.
        assert!(limits.apply_update(&RateLimitSnapshot {
            primary: Some(window(43.0, Some(300), None)),
            ..Default::default()
        }));
        assert_eq!(
            limits.quota().unwrap().five_hour().unwrap().resets_at,
            Some(100)
        );
        // A full read replaces: the 5-hour window it lacks is gone, and so is Spark.
        let weekly_only = RateLimitSnapshot {
            limit_id: Some("codex".into()),
            primary: Some(window(30.0, Some(10080), Some(900))),
            ..Default::default()
        };
        let limits = AccountLimits::full([weekly_only]);
        assert!(limits.quota().unwrap().five_hour().is_none());
        assert_eq!(limits.others().count(), 0);
        // A backend that names no family: the snapshot without a limitId is the quota.
        let limits = AccountLimits::full([spark.clone(), RateLimitSnapshot::default()]);
        assert!(limits.quota().is_some());
        assert!(!limits.quota().unwrap().is_exhausted());
        assert!(is_workspace_limit("workspace_owner_credits_depleted"));
        assert!(!is_workspace_limit("rate_limit_reached"));
    }

    #[test]
    fn parses_the_app_server_shape() {
        let json = r#"{"limitId":"codex","limitName":null,"primary":{"usedPercent":42,
            "windowDurationMins":300,"resetsAt":1900000000},"secondary":null,
            "credits":{"hasCredits":true,"unlimited":false,"balance":"12.5"},
            "planType":"plus","rateLimitReachedType":null,"somethingNew":1}"#;
        let snapshot: RateLimitSnapshot = serde_json::from_str(json).unwrap();
        assert_eq!(snapshot.five_hour().unwrap().used_percent, 42.0);
        assert_eq!(snapshot.credits.unwrap().balance.as_deref(), Some("12.5"));
    }
}
