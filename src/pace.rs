//! Pace and time-to-exhaustion of a rate-limit window: plain functions over plain numbers.
//!
//! Times are unix seconds, percentages 0–100.

use crate::quota::RateLimitWindow;

/// How far a window is ahead of (or behind) an even burn: the share of the window's time that
/// has passed, minus the share of its quota used. Positive = in reserve, negative = in deficit.
pub(crate) fn pace(window: &RateLimitWindow, now: i64) -> Option<f64> {
    let length = i64::from(window.window_duration_mins?) * 60;
    if length <= 0 {
        return None;
    }
    let remaining = window.resets_at?.saturating_sub(now).clamp(0, length);
    let elapsed = length - remaining;
    let expected = elapsed as f64 / length as f64 * 100.0;
    Some(expected - window.used_percent)
}

/// One observation of a window's use.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct UsageSample {
    pub at: i64,
    pub used_percent: f64,
}

/// Look back at most this far for the current burn rate.
pub(crate) const BURN_LOOKBACK_SECS: i64 = 60 * 60;
/// A rate needs samples at least this far apart to mean anything.
pub(crate) const MIN_BURN_SPAN_SECS: i64 = 60;

/// The samples of the window's current period (after its last drop in use: samples before
/// it belong to an earlier window, which reset) within [`BURN_LOOKBACK_SECS`]: the first and
/// the last. `None` without samples.
fn lookback_span(samples: &[UsageSample], now: i64) -> Option<(UsageSample, UsageSample)> {
    let start = samples
        .windows(2)
        .rposition(|pair| pair[1].used_percent < pair[0].used_percent)
        .map_or(0, |i| i + 1);
    let current = &samples[start..];
    let last = *current.last()?;
    let first = current
        .iter()
        .find(|s| s.at >= now - BURN_LOOKBACK_SECS)
        .copied()
        .unwrap_or(last);
    Some((first, last))
}

/// The runway forecasts on a window's burn only once its samples span this long and rose:
/// the backend reports whole percentage points, so a rise over a shorter span (or a minute
/// without one) says next to nothing about the pace.
pub(crate) const MIN_MEASURED_SPAN_SECS: i64 = 10 * 60;
/// A window whose samples have not risen over this long counts as not burning (under two
/// points an hour).
pub(crate) const FLAT_SPAN_SECS: i64 = 30 * 60;
/// A rise of this many points is measured over any span of at least [`MIN_BURN_SPAN_SECS`]:
/// whole-point readings then err by at most a fifth.
pub(crate) const MEASURED_RISE_POINTS: f64 = 5.0;

/// What one window's samples say about its burn, for the runway.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Burn {
    /// The samples span too little time to tell (under [`MIN_MEASURED_SPAN_SECS`], or under
    /// [`FLAT_SPAN_SECS`] without a rise, unless they rose [`MEASURED_RISE_POINTS`]).
    TooFewSamples,
    /// No rise over at least [`FLAT_SPAN_SECS`]: not burning.
    Flat,
    /// A rise over at least [`MIN_MEASURED_SPAN_SECS`], or of at least
    /// [`MEASURED_RISE_POINTS`] over at least [`MIN_BURN_SPAN_SECS`]: percentage points per
    /// second.
    Rising(f64),
}

impl Burn {
    /// The burn of one account's window from its samples (oldest first), over the last
    /// [`BURN_LOOKBACK_SECS`] of its current period.
    pub(crate) fn measure(samples: &[UsageSample], now: i64) -> Burn {
        let Some((first, last)) = lookback_span(samples, now) else {
            return Burn::TooFewSamples;
        };
        let span = last.at - first.at;
        let rise = last.used_percent - first.used_percent;
        let measured = span >= MIN_MEASURED_SPAN_SECS
            || (span >= MIN_BURN_SPAN_SECS && rise >= MEASURED_RISE_POINTS);
        if measured && rise > 0.0 {
            Burn::Rising(rise / span as f64)
        } else if span >= FLAT_SPAN_SECS {
            Burn::Flat
        } else {
            Burn::TooFewSamples
        }
    }

    /// The pool's burn of one window from its accounts' burns: the sum of every rising one;
    /// with none rising, the serving account's (`active`: it is the one that would burn), or
    /// without one, flat if any account's samples are.
    pub(crate) fn of_pool(active: Option<Burn>, others: impl IntoIterator<Item = Burn>) -> Burn {
        let all: Vec<Burn> = active.into_iter().chain(others).collect();
        let rising: Vec<f64> = all
            .iter()
            .filter_map(|b| match b {
                Burn::Rising(rate) => Some(*rate),
                _ => None,
            })
            .collect();
        if !rising.is_empty() {
            return Burn::Rising(rising.iter().sum());
        }
        match active {
            Some(burn) => burn,
            None if all.contains(&Burn::Flat) => Burn::Flat,
            None => Burn::TooFewSamples,
        }
    }

    /// The rate the runway walks with: `None` while too few samples tell.
    pub(crate) fn rate(self) -> Option<f64> {
        match self {
            Burn::TooFewSamples => None,
            Burn::Flat => Some(0.0),
            Burn::Rising(rate) => Some(rate),
        }
    }
}

/// When a window runs out.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Exhaustion {
    /// Already at 100 %.
    Exhausted,
    /// At the current rate it runs out at this time, before it resets.
    At(i64),
    /// At the current rate it lasts until it resets.
    LastsUntilReset,
    /// The burn is not measured yet (or neither it nor the reset is known).
    Unknown,
}

/// When `window` runs out at `rate` percentage points per second.
pub(crate) fn time_to_exhaustion(
    window: &RateLimitWindow,
    rate: Option<f64>,
    now: i64,
) -> Exhaustion {
    if window.used_percent >= 100.0 {
        return Exhaustion::Exhausted;
    }
    // An unknown burn says nothing; a burn of zero lasts.
    let Some(rate) = rate else {
        return Exhaustion::Unknown;
    };
    let runs_out = (rate > 0.0)
        // (`as` saturates: a rate near zero means "never", not an overflow.)
        .then(|| now.saturating_add((window.headroom() / rate).ceil() as i64));
    match (runs_out, window.resets_at) {
        (Some(at), Some(reset)) if at < reset => Exhaustion::At(at),
        (Some(at), None) => Exhaustion::At(at),
        (_, Some(_)) => Exhaustion::LastsUntilReset,
        (None, None) => Exhaustion::Unknown,
    }
}

/// One window of an account in the pool's runway: how much is used, when it resets, and how
/// fast the pool burns it while the account serves.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct RunwayWindow {
    pub used_percent: f64,
    pub resets_at: Option<i64>,
    /// The window's length, so a reset can be followed by the next one.
    pub length_secs: Option<i64>,
    /// Percentage points per second while this account serves.
    pub rate: f64,
}

/// One usable account of the pool, in the order the pool uses them (the active one first).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct RunwayAccount {
    pub name: String,
    pub windows: Vec<RunwayWindow>,
}

/// How long the pool lasts at the current pace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Runway {
    /// The samples do not yet span enough time to measure a burn of every window the pool
    /// has ([`Burn::TooFewSamples`]): no forecast yet.
    TooFewSamples,
    /// Nothing burns: nothing to forecast.
    Idle,
    /// No account runs dry before `until` (the forecast's horizon).
    KeepsUp { until: i64 },
    /// Every account is dry from `at`, and no reset is known to follow.
    LastsUntil { at: i64 },
    /// Every account is dry from `from` (now or later) until `until`, when `then` resets.
    DryGap { from: i64, until: i64, then: String },
}

/// How far ahead the runway looks (a week: [`describe_runway`] says so).
pub(crate) const RUNWAY_HORIZON_SECS: i64 = 7 * 86_400;

/// Walks the pool forward from `now`: the serving account burns its windows at their rates
/// until one is full, then the next usable account (in `accounts`' order) serves; a window
/// that resets is empty again and resets once more a window's length later. Returns when the
/// pool first runs dry (and what ends the dry spell), or that it keeps up for
/// [`RUNWAY_HORIZON_SECS`].
pub(crate) fn runway(accounts: &[RunwayAccount], now: i64) -> Runway {
    const FULL: f64 = 100.0 - 1e-9;
    let mut pool: Vec<RunwayAccount> = accounts.to_vec();
    let end = now.saturating_add(RUNWAY_HORIZON_SECS);
    let mut t = now;
    // Resets that are already due (numbers older than their reset) happened.
    apply_resets(&mut pool, t);
    let usable = |a: &RunwayAccount| a.windows.iter().all(|w| w.used_percent < FULL);
    // A pool that is dry now is dry whatever the pace.
    let dry_now = !pool.is_empty() && !pool.iter().any(usable);
    if !dry_now && !pool.iter().flat_map(|a| &a.windows).any(|w| w.rate > 0.0) {
        return Runway::Idle;
    }
    let mut serving: Option<usize> = None;
    // Each step ends at a window filling up or resetting; the horizon bounds the walk, and
    // so does this (a guard against windows with absurd lengths).
    for _ in 0..100_000 {
        if t >= end {
            return Runway::KeepsUp { until: end };
        }
        if serving.is_none_or(|i| !usable(&pool[i])) {
            serving = pool.iter().position(usable);
        }
        let next_reset = pool
            .iter()
            .flat_map(|a| &a.windows)
            .filter_map(|w| w.resets_at)
            .filter(|&r| r > t)
            .min();
        let Some(index) = serving else {
            // Dry: wait for resets until an account is usable again.
            let from = t;
            loop {
                let Some(reset) = pool
                    .iter()
                    .flat_map(|a| &a.windows)
                    .filter_map(|w| w.resets_at)
                    .filter(|&r| r > t)
                    .min()
                else {
                    return Runway::LastsUntil { at: from };
                };
                t = reset;
                apply_resets(&mut pool, t);
                if let Some(back) = pool.iter().find(|a| usable(a)) {
                    return Runway::DryGap {
                        from,
                        until: t,
                        then: back.name.clone(),
                    };
                }
            }
        };
        let fill_at = |w: &RunwayWindow| {
            (w.rate > 0.0)
                .then(|| t.saturating_add(((100.0 - w.used_percent) / w.rate).ceil() as i64))
        };
        let fills = pool[index].windows.iter().filter_map(fill_at).min();
        let step_end = [fills, next_reset, Some(end)]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(end);
        let elapsed = (step_end - t) as f64;
        for w in &mut pool[index].windows {
            let full = fill_at(w).is_some_and(|at| at <= step_end);
            w.used_percent = if full {
                100.0
            } else {
                (w.used_percent + w.rate * elapsed).min(100.0)
            };
        }
        t = step_end;
        apply_resets(&mut pool, t);
    }
    Runway::KeepsUp { until: t }
}

/// Empties every window whose reset is due at `t` and moves its reset a length on.
fn apply_resets(pool: &mut [RunwayAccount], t: i64) {
    for w in pool.iter_mut().flat_map(|a| &mut a.windows) {
        while let Some(reset) = w.resets_at.filter(|&r| r <= t) {
            w.used_percent = 0.0;
            w.resets_at = w
                .length_secs
                .filter(|&l| l > 0)
                .map(|l| reset + l * ((t - reset) / l + 1));
        }
    }
}

/// The pool's runway from each usable account's quota (the serving account first) and the
/// pool's burns of the 5-hour and weekly windows. Other windows do not enter: the burns are
/// measured on these two. No forecast ([`Runway::TooFewSamples`]) while the burn of a window
/// the pool has is not measured yet.
pub(crate) fn pool_runway<'a>(
    accounts: impl IntoIterator<Item = (&'a str, &'a crate::quota::RateLimitSnapshot)>,
    five_hour: Burn,
    weekly: Burn,
    now: i64,
) -> Runway {
    let mut unmeasured = false;
    let accounts: Vec<RunwayAccount> = accounts
        .into_iter()
        .map(|(name, snapshot)| RunwayAccount {
            name: name.to_owned(),
            windows: [
                (snapshot.five_hour(), five_hour),
                (snapshot.weekly(), weekly),
            ]
            .into_iter()
            .filter_map(|(window, burn)| {
                let window = window?;
                unmeasured |= burn == Burn::TooFewSamples;
                Some(RunwayWindow {
                    used_percent: window.used_percent,
                    resets_at: window.resets_at,
                    length_secs: window.window_duration_mins.map(|m| i64::from(m) * 60),
                    rate: burn.rate().unwrap_or(0.0).max(0.0),
                })
            })
            .collect(),
        })
        .filter(|a| !a.windows.is_empty())
        .collect();
    match runway(&accounts, now) {
        // Dry now: that needs no burn.
        dry @ (Runway::DryGap { from: at, .. } | Runway::LastsUntil { at }) if at <= now => dry,
        _ if unmeasured => Runway::TooFewSamples,
        walk => walk,
    }
}

/// The runway in words, with times written by `clock`: "pool lasts until Fri 14:00 at this
/// pace", "pool dry 13:10–14:02, then alice resets".
pub(crate) fn describe_runway(runway: &Runway, now: i64, clock: impl Fn(i64) -> String) -> String {
    match runway {
        Runway::TooFewSamples | Runway::Idle => "pool: no burn measured yet".to_owned(),
        Runway::KeepsUp { .. } => "pool lasts over a week at this pace".to_owned(),
        Runway::LastsUntil { at } => format!("pool lasts until {} at this pace", clock(*at)),
        Runway::DryGap { from, until, then } if *from <= now => {
            format!("pool dry until {}, then {then} resets", clock(*until))
        }
        Runway::DryGap { from, until, then } => format!(
            "pool dry {}–{}, then {then} resets",
            clock(*from),
            clock(*until)
        ),
    }
}

/// `2h 13m`, `45m`, `3d 4h`, `<1m`.
pub(crate) fn format_duration(secs: i64) -> String {
    let secs = secs.max(0);
    let (days, hours, minutes) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60);
    if days > 0 {
        format!("{days}d {hours}h")
    } else if hours > 0 {
        format!("{hours}h {minutes:02}m")
    } else if minutes > 0 {
        format!("{minutes}m")
    } else {
        "<1m".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn five_hour(used: f64, resets_in: i64) -> RateLimitWindow {
        RateLimitWindow {
            used_percent: used,
            window_duration_mins: Some(300),
            resets_at: Some(NOW + resets_in),
        }
    }

    #[test]
    fn pace_against_an_even_burn() {
        // (used, seconds to reset, expected pace)
        let table = [
            (0.0, 5 * 3600, 0.0),     // window just opened
            (50.0, 150 * 60, 0.0),    // half the time, half the quota
            (38.0, 150 * 60, 12.0),   // 12 % in reserve
            (58.0, 150 * 60, -8.0),   // 8 % in deficit
            (90.0, 0, 10.0),          // at the reset
            (10.0, 10 * 3600, -10.0), // reset further than the window: nothing elapsed
        ];
        for (used, resets_in, want) in table {
            let got = pace(&five_hour(used, resets_in), NOW).unwrap();
            assert!(
                (got - want).abs() < 1e-9,
                "{used} {resets_in}: {got} != {want}"
            );
        }
        let unknown = RateLimitWindow {
            used_percent: 10.0,
            window_duration_mins: None,
            resets_at: Some(NOW),
        };
        assert_eq!(pace(&unknown, NOW), None);
    }

    fn samples(points: &[(i64, f64)]) -> Vec<UsageSample> {
        points
            .iter()
            .map(|&(at, used_percent)| UsageSample {
                at: NOW + at,
                used_percent,
            })
            .collect()
    }

    #[test]
    fn a_burn_is_measured_after_its_look_back_and_last_reset() {
        let rising = |burn: Burn| match burn {
            Burn::Rising(rate) => rate,
            other => panic!("not measured: {other:?}"),
        };
        // 10 points in 10 minutes = 1 point/minute.
        let rate = rising(Burn::measure(
            &samples(&[(-600, 20.0), (-300, 25.0), (0, 30.0)]),
            NOW,
        ));
        assert!((rate - 1.0 / 60.0).abs() < 1e-12);
        assert_eq!(
            Burn::measure(&samples(&[(0, 30.0)]), NOW),
            Burn::TooFewSamples
        );
        assert_eq!(Burn::measure(&[], NOW), Burn::TooFewSamples);
        // Samples older than the look-back are ignored.
        let rate = rising(Burn::measure(
            &samples(&[(-7200, 0.0), (-1200, 50.0), (0, 70.0)]),
            NOW,
        ));
        assert!((rate - 20.0 / 1200.0).abs() < 1e-12);
        // A drop means the window reset: only what came after counts.
        assert_eq!(
            Burn::measure(&samples(&[(-900, 90.0), (-600, 2.0), (-590, 3.0)]), NOW),
            Burn::TooFewSamples
        );
        let rate = rising(Burn::measure(
            &samples(&[(-900, 90.0), (-600, 2.0), (0, 12.0)]),
            NOW,
        ));
        assert!((rate - 10.0 / 600.0).abs() < 1e-12);
    }

    #[test]
    fn a_big_rise_is_measured_within_minutes_a_small_one_is_not() {
        // Whole-point readings: 14 points in two minutes is a burn (a reading errs by at most
        // a point); 2 points in two minutes is not yet.
        assert_eq!(
            Burn::measure(&samples(&[(-120, 58.0), (0, 72.0)]), NOW),
            Burn::Rising(14.0 / 120.0)
        );
        assert_eq!(
            Burn::measure(&samples(&[(-120, 58.0), (0, 60.0)]), NOW),
            Burn::TooFewSamples
        );
        // Under a minute, even a big rise says nothing.
        assert_eq!(
            Burn::measure(&samples(&[(-30, 20.0), (0, 30.0)]), NOW),
            Burn::TooFewSamples
        );
    }

    #[test]
    fn a_burn_is_measured_on_ten_minutes_with_a_rise() {
        let measure = |points: &[(i64, f64)]| Burn::measure(&samples(points), NOW);
        let table = [
            ("no samples", vec![], Burn::TooFewSamples),
            ("one read", vec![(0, 20.0)], Burn::TooFewSamples),
            // The case that forecast "over a week": a few minutes of reads.
            (
                "a rise over 3 minutes",
                vec![(-180, 20.0), (0, 22.0)],
                Burn::TooFewSamples,
            ),
            (
                "flat for 5 minutes",
                vec![(-300, 20.0), (0, 20.0)],
                Burn::TooFewSamples,
            ),
            (
                "flat for 20 minutes: not yet idle",
                vec![(-1200, 20.0), (0, 20.0)],
                Burn::TooFewSamples,
            ),
            (
                "a rise over 10 minutes",
                vec![(-600, 20.0), (-300, 20.0), (0, 23.0)],
                Burn::Rising(3.0 / 600.0),
            ),
            (
                "flat for half an hour",
                vec![(-1800, 20.0), (0, 20.0)],
                Burn::Flat,
            ),
            (
                "only the last hour counts",
                vec![(-7200, 10.0), (-3000, 20.0), (0, 20.0)],
                Burn::Flat,
            ),
            (
                "a reset 5 minutes ago starts over",
                vec![(-3000, 90.0), (-300, 1.0), (0, 3.0)],
                Burn::TooFewSamples,
            ),
        ];
        for (name, points, want) in table {
            assert_eq!(measure(&points), want, "{name}");
        }
    }

    #[test]
    fn the_pool_burn_waits_for_the_serving_account() {
        use Burn::{Flat, Rising, TooFewSamples};
        let table = [
            // Rising accounts add up, whatever the others say.
            (Some(Rising(1.0)), vec![Rising(2.0), Flat], Rising(3.0)),
            (Some(TooFewSamples), vec![Rising(2.0)], Rising(2.0)),
            // A session minutes old on alice, bob idle for hours: no measure yet.
            (Some(TooFewSamples), vec![Flat, Flat], TooFewSamples),
            (Some(Flat), vec![TooFewSamples], Flat),
            (None, vec![TooFewSamples, Flat], Flat),
            (None, vec![TooFewSamples], TooFewSamples),
            (None, vec![], TooFewSamples),
        ];
        for (active, others, want) in table {
            assert_eq!(
                Burn::of_pool(active, others.clone()),
                want,
                "{active:?} {others:?}"
            );
        }
    }

    #[test]
    fn no_runway_until_every_window_of_the_pool_is_measured() {
        use crate::quota::RateLimitSnapshot;
        let both = RateLimitSnapshot {
            primary: Some(five_hour(50.0, 4 * 3600)),
            secondary: Some(RateLimitWindow {
                used_percent: 30.0,
                window_duration_mins: Some(7 * 1440),
                resets_at: Some(NOW + 3 * 86_400),
            }),
            ..Default::default()
        };
        let per_min = |p: f64| Burn::Rising(p / 60.0);
        let run = |five: Burn, week: Burn| pool_runway([("alice", &both)], five, week, NOW);
        // The 5-hour window rises, the weekly one is not measured yet: no forecast (with it
        // taken as 0, a slow 5-hour burn "lasts over a week").
        assert_eq!(
            run(per_min(0.1), Burn::TooFewSamples),
            Runway::TooFewSamples
        );
        assert_eq!(
            run(Burn::TooFewSamples, per_min(0.01)),
            Runway::TooFewSamples
        );
        // Flat for half an hour is measured: not burning.
        assert_eq!(run(Burn::Flat, Burn::Flat), Runway::Idle);
        assert_eq!(
            run(per_min(1.0), Burn::Flat),
            Runway::DryGap {
                from: NOW + 50 * 60,
                until: NOW + 4 * 3600,
                then: "alice".into()
            }
        );
        // A pool dry now is dry now, measured or not.
        let full = RateLimitSnapshot {
            primary: Some(five_hour(100.0, 3600)),
            ..Default::default()
        };
        assert_eq!(
            pool_runway(
                [("alice", &full)],
                Burn::TooFewSamples,
                Burn::TooFewSamples,
                NOW
            ),
            Runway::DryGap {
                from: NOW,
                until: NOW + 3600,
                then: "alice".into()
            }
        );
        // A window no account has does not wait to be measured.
        let weekly_only = RateLimitSnapshot {
            primary: both.secondary,
            ..Default::default()
        };
        assert_eq!(
            pool_runway(
                [("alice", &weekly_only)],
                Burn::TooFewSamples,
                Burn::Flat,
                NOW
            ),
            Runway::Idle
        );
    }

    #[test]
    fn exhaustion_at_the_current_rate() {
        let per_minute = |p: f64| Some(p / 60.0);
        let table = [
            // 50 % left at 1 %/min = 50 min, reset in 2 h: runs out first.
            (
                five_hour(50.0, 7200),
                per_minute(1.0),
                Exhaustion::At(NOW + 3000),
            ),
            // 50 % left at 0.1 %/min = 500 min > reset: lasts.
            (
                five_hour(50.0, 7200),
                per_minute(0.1),
                Exhaustion::LastsUntilReset,
            ),
            // No burn: lasts.
            (
                five_hour(50.0, 7200),
                Some(0.0),
                Exhaustion::LastsUntilReset,
            ),
            // An unknown burn: nothing to say.
            (five_hour(50.0, 7200), None, Exhaustion::Unknown),
            (
                five_hour(100.0, 7200),
                per_minute(1.0),
                Exhaustion::Exhausted,
            ),
        ];
        for (window, rate, want) in table {
            assert_eq!(
                time_to_exhaustion(&window, rate, NOW),
                want,
                "{window:?} {rate:?}"
            );
        }
        let no_reset = RateLimitWindow {
            used_percent: 40.0,
            window_duration_mins: Some(300),
            resets_at: None,
        };
        assert_eq!(
            time_to_exhaustion(&no_reset, None, NOW),
            Exhaustion::Unknown
        );
        assert_eq!(
            time_to_exhaustion(&no_reset, per_minute(2.0), NOW),
            Exhaustion::At(NOW + 1800)
        );
    }

    const MIN: i64 = 60;
    const HOUR: i64 = 3600;
    const DAY: i64 = 86_400;

    fn win(used: f64, resets_in: Option<i64>, length: Option<i64>, per_min: f64) -> RunwayWindow {
        RunwayWindow {
            used_percent: used,
            resets_at: resets_in.map(|r| NOW + r),
            length_secs: length,
            rate: per_min / 60.0,
        }
    }

    fn acct(name: &str, windows: Vec<RunwayWindow>) -> RunwayAccount {
        RunwayAccount {
            name: name.to_owned(),
            windows,
        }
    }

    #[test]
    fn runway_of_the_pool() {
        let five = Some(5 * HOUR);
        let week = Some(7 * DAY);
        let gap = |from: i64, until: i64, then: &str| Runway::DryGap {
            from: NOW + from,
            until: NOW + until,
            then: then.to_owned(),
        };
        let table: Vec<(&str, Vec<RunwayAccount>, Runway)> = vec![
            (
                "no burn",
                vec![acct("alice", vec![win(50.0, Some(4 * HOUR), five, 0.0)])],
                Runway::Idle,
            ),
            ("no accounts", vec![], Runway::Idle),
            (
                "one account: dry after 50 min until its reset",
                vec![acct("alice", vec![win(50.0, Some(4 * HOUR), five, 1.0)])],
                gap(50 * MIN, 4 * HOUR, "alice"),
            ),
            (
                "one account, no reset known",
                vec![acct("alice", vec![win(50.0, None, None, 1.0)])],
                Runway::LastsUntil { at: NOW + 50 * MIN },
            ),
            (
                "a slow burn keeps up through the horizon",
                vec![acct("alice", vec![win(50.0, Some(4 * HOUR), five, 0.1)])],
                Runway::KeepsUp {
                    until: NOW + RUNWAY_HORIZON_SECS,
                },
            ),
            (
                // alice fills at 50 min; bob serves, resets at 2 h (70 % used then), fills at
                // 220 min; alice is back at 4 h.
                "staggered resets",
                vec![
                    acct("alice", vec![win(50.0, Some(4 * HOUR), five, 1.0)]),
                    acct("bob", vec![win(0.0, Some(2 * HOUR), five, 1.0)]),
                ],
                gap(220 * MIN, 4 * HOUR, "alice"),
            ),
            (
                "dry now, until the first reset",
                vec![
                    acct("alice", vec![win(100.0, Some(HOUR), five, 1.0)]),
                    acct("bob", vec![win(100.0, Some(3 * HOUR), five, 1.0)]),
                ],
                gap(0, HOUR, "alice"),
            ),
            (
                // 10 %/day: alice's 10 % last a day, bob's 5 % half a day; alice resets at 3 d.
                "weekly-only plans",
                vec![
                    acct("alice", vec![win(90.0, Some(3 * DAY), week, 10.0 / 1440.0)]),
                    acct("bob", vec![win(95.0, Some(5 * DAY), week, 10.0 / 1440.0)]),
                ],
                gap(DAY + DAY / 2, 3 * DAY, "alice"),
            ),
            (
                // The weekly window fills in 10 minutes; the 5-hour reset does not help.
                "the tightest window decides",
                vec![acct(
                    "alice",
                    vec![
                        win(0.0, Some(5 * HOUR), five, 1.0),
                        win(99.0, Some(3 * DAY), week, 0.1),
                    ],
                )],
                gap(10 * MIN, 3 * DAY, "alice"),
            ),
            (
                "dry now needs no burn",
                vec![acct("alice", vec![win(100.0, Some(HOUR), five, 0.0)])],
                gap(0, HOUR, "alice"),
            ),
            (
                "a reset already due counts as done",
                vec![acct("alice", vec![win(100.0, Some(-MIN), five, 1.0)])],
                gap(100 * MIN, 5 * HOUR - MIN, "alice"),
            ),
        ];
        for (name, accounts, want) in table {
            assert_eq!(runway(&accounts, NOW), want, "{name}");
        }
    }

    #[test]
    fn runway_in_words() {
        let clock = |t: i64| format!("T{}", (t - NOW) / 60);
        let table = [
            (Runway::Idle, "pool: no burn measured yet"),
            (Runway::TooFewSamples, "pool: no burn measured yet"),
            (
                Runway::KeepsUp {
                    until: NOW + RUNWAY_HORIZON_SECS,
                },
                "pool lasts over a week at this pace",
            ),
            (
                Runway::LastsUntil { at: NOW + 60 },
                "pool lasts until T1 at this pace",
            ),
            (
                Runway::DryGap {
                    from: NOW + 60,
                    until: NOW + 120,
                    then: "alice".into(),
                },
                "pool dry T1–T2, then alice resets",
            ),
            (
                Runway::DryGap {
                    from: NOW,
                    until: NOW + 120,
                    then: "bob".into(),
                },
                "pool dry until T2, then bob resets",
            ),
        ];
        for (runway, want) in table {
            assert_eq!(describe_runway(&runway, NOW, clock), want);
        }
    }

    #[test]
    fn durations_read_like_a_person_writes_them() {
        let table = [
            (0, "<1m"),
            (59, "<1m"),
            (60, "1m"),
            (45 * 60, "45m"),
            (2 * 3600 + 13 * 60, "2h 13m"),
            (3600 + 5 * 60, "1h 05m"),
            (3 * 86_400 + 4 * 3600 + 59, "3d 4h"),
            (-5, "<1m"),
        ];
        for (secs, want) in table {
            assert_eq!(format_duration(secs), want);
        }
    }
}
