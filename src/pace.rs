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

/// The current burn rate in percentage points per second, from samples of one window (oldest
/// first) over the last [`BURN_LOOKBACK_SECS`]. Samples before a drop in use belong to an
/// earlier window (it reset) and are ignored. `None` when the samples cannot tell.
pub(crate) fn burn_rate(samples: &[UsageSample], now: i64) -> Option<f64> {
    let start = samples
        .windows(2)
        .rposition(|pair| pair[1].used_percent < pair[0].used_percent)
        .map_or(0, |i| i + 1);
    let current = &samples[start..];
    let last = current.last()?;
    let first = current
        .iter()
        .find(|s| s.at >= now - BURN_LOOKBACK_SECS)
        .unwrap_or(last);
    let span = last.at - first.at;
    if span < MIN_BURN_SPAN_SECS {
        return None;
    }
    Some((last.used_percent - first.used_percent).max(0.0) / span as f64)
}

/// The average rate since the window opened: what an even burn so far would give. Used
/// until the session has seen enough samples of its own.
pub(crate) fn window_average_rate(window: &RateLimitWindow, now: i64) -> Option<f64> {
    let length = i64::from(window.window_duration_mins?) * 60;
    let remaining = window.resets_at?.saturating_sub(now).clamp(0, length);
    let elapsed = length - remaining;
    (elapsed >= MIN_BURN_SPAN_SECS).then(|| window.used_percent / elapsed as f64)
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
    /// Neither the rate nor the reset is known.
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
    let runs_out = rate
        .filter(|r| *r > 0.0)
        // (`as` saturates: a rate near zero means "never", not an overflow.)
        .map(|r| now.saturating_add((window.headroom() / r).ceil() as i64));
    match (runs_out, window.resets_at) {
        (Some(at), Some(reset)) if at < reset => Exhaustion::At(at),
        (Some(at), None) => Exhaustion::At(at),
        (_, Some(_)) => Exhaustion::LastsUntilReset,
        (None, None) => Exhaustion::Unknown,
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
    fn burn_rate_from_session_samples() {
        // 10 points in 10 minutes = 1 point/minute.
        let rate = burn_rate(&samples(&[(-600, 20.0), (-300, 25.0), (0, 30.0)]), NOW).unwrap();
        assert!((rate - 1.0 / 60.0).abs() < 1e-12);
        // Too short a span says nothing.
        assert_eq!(burn_rate(&samples(&[(-30, 20.0), (0, 30.0)]), NOW), None);
        assert_eq!(burn_rate(&samples(&[(0, 30.0)]), NOW), None);
        assert_eq!(burn_rate(&[], NOW), None);
        // Samples older than the look-back are ignored.
        let rate = burn_rate(&samples(&[(-7200, 0.0), (-1200, 50.0), (0, 70.0)]), NOW).unwrap();
        assert!((rate - 20.0 / 1200.0).abs() < 1e-12);
        // A drop means the window reset: only what came after counts.
        assert_eq!(
            burn_rate(&samples(&[(-900, 90.0), (-600, 2.0), (-590, 3.0)]), NOW),
            None
        );
        let rate = burn_rate(&samples(&[(-900, 90.0), (-600, 2.0), (0, 12.0)]), NOW).unwrap();
        assert!((rate - 10.0 / 600.0).abs() < 1e-12);
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
            (five_hour(50.0, 7200), None, Exhaustion::LastsUntilReset),
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

    #[test]
    fn window_average_rate_is_use_over_elapsed_time() {
        // 150 minutes elapsed, 30 % used: 0.2 %/min.
        let rate = window_average_rate(&five_hour(30.0, 150 * 60), NOW).unwrap();
        assert!((rate - 0.2 / 60.0).abs() < 1e-12);
        assert_eq!(window_average_rate(&five_hour(0.0, 5 * 3600), NOW), None);
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
