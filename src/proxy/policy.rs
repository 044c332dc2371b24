//! When to switch accounts and to which one: pure functions over plain data.

use serde::{Deserialize, Serialize};

use crate::account_id::AccountId;
use crate::proxy::events::SwitchReason;
use crate::quota::{RateLimitSnapshot, RateLimitWindow, WindowKind};

/// The knobs of the switch policy (the config file's `[switch]` table).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    /// Switch at the next turn boundary once the 5-hour window reaches this percentage.
    pub soft_five_hour_percent: f64,
    /// Switch at the next turn boundary once the weekly window reaches this percentage.
    pub soft_weekly_percent: f64,
    /// An account switched away from automatically is not switched back to for this long
    /// (unless a manual switch asks for it), so two accounts never ping-pong.
    pub cooldown_secs: i64,
    /// Candidates whose bottleneck headroom is within this many points count as equal; the one
    /// whose limiting window resets first wins (its quota would otherwise go unused).
    pub headroom_tie_points: f64,
    /// `/wham/usage` older than this is fetched again before choosing.
    pub usage_stale_secs: i64,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            soft_five_hour_percent: 95.0,
            soft_weekly_percent: 98.0,
            cooldown_secs: 600,
            headroom_tie_points: 5.0,
            usage_stale_secs: 120,
        }
    }
}

impl From<&crate::config::SwitchConfig> for PolicyConfig {
    /// The thresholds from the config file's `[switch]`, everything else at its default.
    fn from(switch: &crate::config::SwitchConfig) -> Self {
        Self {
            soft_five_hour_percent: switch.five_hour_threshold,
            soft_weekly_percent: switch.weekly_threshold,
            ..Default::default()
        }
    }
}

/// Why a rate-limit snapshot asks for a switch: a hard limit first, else a soft threshold.
pub fn trigger_for_snapshot(
    snapshot: &RateLimitSnapshot,
    config: &PolicyConfig,
) -> Option<SwitchReason> {
    if let Some(kind) = &snapshot.rate_limit_reached_type {
        return Some(SwitchReason::HardLimit {
            detail: kind.clone(),
        });
    }
    if let Some(w) = snapshot.windows().find(|w| w.is_exhausted()) {
        return Some(SwitchReason::HardLimit {
            detail: format!("{} window at 100%", w.kind().label()),
        });
    }
    if snapshot
        .credits
        .as_ref()
        .is_some_and(crate::quota::Credits::is_exhausted)
    {
        return Some(SwitchReason::HardLimit {
            detail: "credits exhausted".to_owned(),
        });
    }
    soft_trigger(snapshot, config)
}

fn soft_trigger(snapshot: &RateLimitSnapshot, config: &PolicyConfig) -> Option<SwitchReason> {
    let over = |w: &RateLimitWindow, threshold: f64| {
        (w.used_percent >= threshold).then(|| SwitchReason::SoftThreshold {
            window: w.kind().label(),
            used_percent: w.used_percent,
            threshold,
        })
    };
    snapshot
        .five_hour()
        .and_then(|w| over(w, config.soft_five_hour_percent))
        .or_else(|| {
            snapshot
                .weekly()
                .and_then(|w| over(w, config.soft_weekly_percent))
        })
}

/// An account the policy may pick.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    pub id: AccountId,
    pub name: String,
    /// Excluded from automatic switching by the user.
    pub enabled: bool,
    /// Its refresh token was rejected; it needs `cs-tui accounts add` again.
    pub needs_login: bool,
    /// Its last known quota, if any.
    pub snapshot: Option<RateLimitSnapshot>,
    /// When the session last switched away from it automatically (unix seconds).
    pub switched_away_at: Option<i64>,
    /// The workspace it is a seat of (its ChatGPT account id: seats of one workspace share
    /// it, and share a workspace limit).
    pub workspace: Option<String>,
}

/// Workspaces whose limit (`workspace_*`) some account has hit: every seat of them is out.
fn limited_workspaces(candidates: &[Candidate]) -> Vec<&str> {
    candidates
        .iter()
        .filter(|c| {
            c.snapshot
                .as_ref()
                .is_some_and(|s| s.workspace_limit().is_some())
        })
        .filter_map(|c| c.workspace.as_deref())
        .collect()
}

/// Why `candidate` cannot be used although its own numbers may look fine: another seat of its
/// workspace hit the workspace's limit. Names that seat.
pub fn shared_workspace_limit<'a>(
    candidate: &Candidate,
    candidates: &'a [Candidate],
) -> Option<&'a Candidate> {
    let workspace = candidate.workspace.as_deref()?;
    candidates.iter().find(|c| {
        c.id != candidate.id
            && c.workspace.as_deref() == Some(workspace)
            && c.snapshot
                .as_ref()
                .is_some_and(|s| s.workspace_limit().is_some())
    })
}

/// What the policy decided.
#[derive(Clone, Debug, PartialEq)]
pub enum Choice {
    /// Switch to this account id.
    Switch { to: AccountId },
    /// Nobody is usable: stay, and say when the first account resets (unix seconds).
    NoneAvailable { earliest_reset: Option<i64> },
}

/// Whether the switch was asked for by the user (cooldown and the enabled flag do not apply to
/// an explicitly named account) or decided automatically.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Automatic,
    Manual,
}

/// Percentage points left in the tighter of the 5-hour and weekly windows (100 when unknown).
pub fn bottleneck_headroom(snapshot: Option<&RateLimitSnapshot>) -> f64 {
    let Some(snapshot) = snapshot else {
        return 100.0;
    };
    snapshot
        .windows()
        .filter(|w| matches!(w.kind(), WindowKind::FiveHour | WindowKind::Weekly))
        .map(RateLimitWindow::headroom)
        .fold(100.0, f64::min)
}

/// When the limiting window of an account resets (unix seconds).
fn bottleneck_reset(snapshot: Option<&RateLimitSnapshot>) -> Option<i64> {
    let snapshot = snapshot?;
    snapshot
        .windows()
        .filter(|w| matches!(w.kind(), WindowKind::FiveHour | WindowKind::Weekly))
        .min_by(|a, b| a.headroom().total_cmp(&b.headroom()))
        .and_then(|w| w.resets_at)
}

fn usable(candidate: &Candidate, config: &PolicyConfig) -> bool {
    !candidate.needs_login
        && candidate
            .snapshot
            .as_ref()
            .is_none_or(|s| !s.is_exhausted() && trigger_for_snapshot(s, config).is_none())
}

/// The accounts an automatic choice may take, `exclude` aside (the active account, or the one
/// a switch leaves): enabled, logged in, neither exhausted nor over a soft threshold, out of
/// their cooldown, and not a seat of a workspace whose limit some seat has hit.
pub fn eligible<'a>(
    candidates: &'a [Candidate],
    exclude: Option<&AccountId>,
    now: i64,
    config: &PolicyConfig,
) -> Vec<&'a Candidate> {
    let limited = limited_workspaces(candidates);
    candidates
        .iter()
        .filter(|c| Some(&c.id) != exclude)
        .filter(|c| c.enabled)
        // A workspace limit is shared by every seat of that workspace.
        .filter(|c| c.workspace.as_deref().is_none_or(|w| !limited.contains(&w)))
        .filter(|c| {
            c.switched_away_at
                .is_none_or(|t| now.saturating_sub(t) >= config.cooldown_secs)
        })
        .filter(|c| usable(c, config))
        .collect()
}

/// When the limiting window of an account resets (unix seconds), `i64::MAX` when unknown: an
/// account whose quota resets sooner is used first (its quota would otherwise go unused).
pub fn reset_order(candidate: &Candidate) -> i64 {
    bottleneck_reset(candidate.snapshot.as_ref()).unwrap_or(i64::MAX)
}

/// Picks the best account other than `active` for an automatic switch.
///
/// Among the [`eligible`] accounts, the largest bottleneck headroom wins; within
/// `headroom_tie_points` of the best, the earliest reset wins.
pub fn choose_best(
    candidates: &[Candidate],
    active: Option<&AccountId>,
    now: i64,
    config: &PolicyConfig,
) -> Choice {
    let eligible = eligible(candidates, active, now, config);
    let Some(best_headroom) = eligible
        .iter()
        .map(|c| bottleneck_headroom(c.snapshot.as_ref()))
        .max_by(f64::total_cmp)
    else {
        return Choice::NoneAvailable {
            earliest_reset: earliest_reset(candidates, active),
        };
    };
    let winner = eligible
        .iter()
        .filter(|c| {
            best_headroom - bottleneck_headroom(c.snapshot.as_ref()) <= config.headroom_tie_points
        })
        .min_by(|a, b| {
            reset_order(a).cmp(&reset_order(b)).then_with(|| {
                bottleneck_headroom(b.snapshot.as_ref())
                    .total_cmp(&bottleneck_headroom(a.snapshot.as_ref()))
            })
        })
        .expect("the best candidate is within the tie band");
    Choice::Switch {
        to: winner.id.clone(),
    }
}

/// Checks a manual switch to a named account: refused when it is the active one or needs a
/// login. Cooldown and the enabled flag do not apply: the user asked for it. Exhaustion is
/// checked later, on fresh numbers (the cached ones may predate a reset).
pub fn check_manual(candidate: &Candidate, active: Option<&AccountId>) -> Result<(), String> {
    if Some(&candidate.id) == active {
        return Err(format!("{} is already the active account", candidate.name));
    }
    if candidate.needs_login {
        return Err(format!(
            "{} needs a new login (cs-tui accounts add {})",
            candidate.name, candidate.name
        ));
    }
    Ok(())
}

/// The earliest time any account other than `active` becomes usable again.
pub fn earliest_reset(candidates: &[Candidate], active: Option<&AccountId>) -> Option<i64> {
    candidates
        .iter()
        .filter(|c| Some(&c.id) != active && !c.needs_login)
        .filter_map(|c| c.snapshot.as_ref()?.available_again_at())
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quota::Credits;

    fn snap(five: Option<(f64, i64)>, week: Option<(f64, i64)>) -> RateLimitSnapshot {
        let w = |(used, reset): (f64, i64), mins| RateLimitWindow {
            used_percent: used,
            window_duration_mins: Some(mins),
            resets_at: Some(reset),
        };
        RateLimitSnapshot {
            primary: five.map(|f| w(f, 300)),
            secondary: week.map(|f| w(f, 10080)),
            ..Default::default()
        }
    }

    fn cand(id: &str, snapshot: Option<RateLimitSnapshot>) -> Candidate {
        Candidate {
            id: id.into(),
            name: id.to_owned(),
            enabled: true,
            needs_login: false,
            snapshot,
            switched_away_at: None,
            workspace: Some(format!("ws-{id}")),
        }
    }

    #[test]
    fn triggers_table() {
        let config = PolicyConfig::default();
        let typed = RateLimitSnapshot {
            rate_limit_reached_type: Some("workspace_owner_credits_depleted".into()),
            ..Default::default()
        };
        let broke = RateLimitSnapshot {
            credits: Some(Credits {
                has_credits: false,
                unlimited: false,
                balance: Some("0".into()),
            }),
            ..Default::default()
        };
        let cases: Vec<(&str, RateLimitSnapshot, Option<&str>)> = vec![
            ("fresh", snap(Some((10.0, 1)), Some((20.0, 2))), None),
            ("5h at 94", snap(Some((94.0, 1)), None), None),
            ("5h at 95", snap(Some((95.0, 1)), None), Some("soft:5h")),
            ("weekly at 97", snap(None, Some((97.0, 1))), None),
            (
                "weekly at 98",
                snap(None, Some((98.0, 1))),
                Some("soft:weekly"),
            ),
            ("5h at 100", snap(Some((100.0, 1)), None), Some("hard")),
            (
                "weekly at 100",
                snap(Some((5.0, 1)), Some((100.0, 1))),
                Some("hard"),
            ),
            ("limit type", typed, Some("hard")),
            ("no credits", broke, Some("hard")),
        ];
        for (name, snapshot, want) in cases {
            let got = trigger_for_snapshot(&snapshot, &config).map(|r| match r {
                SwitchReason::HardLimit { .. } => "hard".to_owned(),
                SwitchReason::SoftThreshold { window, .. } => format!("soft:{window}"),
                other => format!("{other:?}"),
            });
            assert_eq!(got.as_deref(), want, "{name}");
        }
    }

    #[test]
    fn weekly_window_in_primary_triggers_as_weekly() {
        let snapshot = RateLimitSnapshot {
            primary: Some(RateLimitWindow {
                used_percent: 96.0,
                window_duration_mins: Some(10080),
                resets_at: None,
            }),
            ..Default::default()
        };
        // 96 % is past the 5-hour threshold but not the weekly one.
        assert_eq!(
            trigger_for_snapshot(&snapshot, &PolicyConfig::default()),
            None
        );
    }

    #[test]
    fn choice_table() {
        let config = PolicyConfig::default();
        let now = 1_000;
        let mut cooling = cand("cooling", Some(snap(Some((0.0, 50)), None)));
        cooling.switched_away_at = Some(now - 10);
        let mut cooled = cand("cooled", Some(snap(Some((0.0, 50)), None)));
        cooled.switched_away_at = Some(now - 601);
        let mut disabled = cand("disabled", Some(snap(Some((0.0, 1)), None)));
        disabled.enabled = false;
        let mut locked_out = cand("locked", None);
        locked_out.needs_login = true;

        let cases: Vec<(&str, Vec<Candidate>, Choice)> = vec![
            (
                "largest bottleneck headroom wins",
                vec![
                    cand("a", Some(snap(Some((10.0, 500)), Some((60.0, 900))))),
                    cand("b", Some(snap(Some((40.0, 100)), Some((90.0, 900))))),
                    cand("c", Some(snap(Some((30.0, 400)), Some((50.0, 900))))),
                ],
                Choice::Switch { to: "c".into() },
            ),
            (
                "close headroom: the earlier reset wins",
                vec![
                    cand("late", Some(snap(Some((20.0, 9000)), None))),
                    cand("soon", Some(snap(Some((23.0, 3000)), None))),
                ],
                Choice::Switch { to: "soon".into() },
            ),
            (
                "the active account is never chosen",
                vec![
                    cand("active", Some(snap(Some((0.0, 1)), None))),
                    cand("x", None),
                ],
                Choice::Switch { to: "x".into() },
            ),
            (
                "exhausted, over soft threshold, disabled and needs-login are skipped",
                vec![
                    cand("dead", Some(snap(Some((100.0, 700)), None))),
                    cand("hot", Some(snap(Some((96.0, 300)), None))),
                    disabled.clone(),
                    locked_out.clone(),
                    cand("ok", Some(snap(Some((80.0, 800)), None))),
                ],
                Choice::Switch { to: "ok".into() },
            ),
            (
                "cooldown blocks ping-pong, an expired cooldown does not",
                vec![cooling.clone(), cooled.clone()],
                Choice::Switch {
                    to: "cooled".into(),
                },
            ),
            (
                "nobody usable: earliest reset among the others",
                vec![
                    cand("active", Some(snap(Some((100.0, 10)), None))),
                    cand("d1", Some(snap(Some((100.0, 700)), None))),
                    cand("d2", Some(snap(Some((100.0, 500)), Some((100.0, 5000))))),
                    cand("d3", Some(snap(Some((100.0, 600)), None))),
                ],
                Choice::NoneAvailable {
                    earliest_reset: Some(600),
                },
            ),
            (
                "no other account at all",
                vec![cand("active", None)],
                Choice::NoneAvailable {
                    earliest_reset: None,
                },
            ),
        ];
        for (name, candidates, want) in cases {
            assert_eq!(
                choose_best(&candidates, Some(&"active".into()), now, &config),
                want,
                "{name}"
            );
        }
    }

    #[test]
    fn a_workspace_limit_rules_out_every_seat_of_that_workspace() {
        let config = PolicyConfig::default();
        let seat = |id: &str, snapshot: RateLimitSnapshot| {
            let mut c = cand(id, Some(snapshot));
            c.workspace = Some("ws-team".into());
            c
        };
        let mut hit = snap(Some((40.0, 100)), Some((30.0, 900)));
        hit.rate_limit_reached_type = Some("workspace_member_usage_limit_reached".into());
        let alice = seat("active", hit);
        // Bob's own numbers look fine: the workspace's limit is not in them yet.
        let bob = seat("bob", snap(Some((5.0, 100)), None));
        let carol = cand("carol", Some(snap(Some((60.0, 100)), None)));
        assert_eq!(
            choose_best(
                &[alice.clone(), bob.clone(), carol],
                Some(&"active".into()),
                0,
                &config
            ),
            Choice::Switch { to: "carol".into() }
        );
        assert!(matches!(
            choose_best(
                &[alice.clone(), bob.clone()],
                Some(&"active".into()),
                0,
                &config
            ),
            Choice::NoneAvailable { .. }
        ));
        let all = [alice, bob.clone()];
        assert_eq!(
            shared_workspace_limit(&bob, &all).map(|c| c.id.as_str()),
            Some("active")
        );
        // A personal limit (rate_limit_reached) does not touch the other seats.
        let mut personal = snap(Some((100.0, 100)), None);
        personal.rate_limit_reached_type = Some("rate_limit_reached".into());
        let alice = seat("active", personal);
        assert_eq!(
            choose_best(&[alice, bob], Some(&"active".into()), 0, &config),
            Choice::Switch { to: "bob".into() }
        );
    }

    #[test]
    fn manual_checks() {
        let mut c = cand("bob", Some(snap(Some((10.0, 1)), None)));
        c.enabled = false;
        c.switched_away_at = Some(0);
        assert_eq!(check_manual(&c, Some(&"alice".into())), Ok(()));
        assert!(check_manual(&c, Some(&"bob".into())).is_err());
        c.needs_login = true;
        assert!(
            check_manual(&c, Some(&"alice".into()))
                .unwrap_err()
                .contains("accounts add")
        );
        let dead = cand("dead", Some(snap(Some((100.0, 1)), None)));
        assert_eq!(
            check_manual(&dead, None),
            Ok(()),
            "exhaustion is checked on fresh numbers"
        );
    }
}
