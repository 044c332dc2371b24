//! Frames are requested, not timed: any change marks the screen dirty, and the scheduler turns
//! a burst of requests into one draw. Nothing dirty, no deadline, no wake-up.
//!
//! The rate is held by a token bucket: a frame is due at once while a token is left, and
//! tokens come back at [`SUSTAINED_FPS`] up to [`BURST`]. So after a quiet spell the frames that
//! follow input or a reply are drawn the moment they are complete, and a flood settles at
//! `SUSTAINED_FPS`; no one-second window ever holds more than `BURST + SUSTAINED_FPS` =
//! [`MAX_FPS`] frames. A fixed 60 fps grid instead held each frame up to 16.7 ms behind Codex,
//! which draws at up to 120 fps while it works: measured with `cargo bench --bench pane`
//! (section e), Enter-to-reply took 1.17x plain codex on the grid and 1.04x without it.

use std::time::{Duration, Instant};

/// The most frames drawn in any one second.
pub const MAX_FPS: u32 = BURST + SUSTAINED_FPS;
/// Frames that may be drawn back to back after a quiet spell.
pub const BURST: u32 = 10;
/// The rate a continuous stream of changes is drawn at.
pub const SUSTAINED_FPS: u32 = 50;
/// How long a change that is not urgent (the panel's numbers) may wait for a frame the pane
/// asks for anyway: during a turn Codex redraws often, and the proxy's half-dozen events per
/// turn then cost no frames of their own.
pub const SOON: Duration = Duration::from_millis(50);

#[derive(Clone, Debug)]
pub struct FrameScheduler {
    burst: f64,
    per_second: f64,
    /// Tokens left as of `counted_at`.
    tokens: f64,
    counted_at: Option<Instant>,
    dirty: bool,
    /// A change that may wait until then (see [`SOON`]).
    soon: Option<Instant>,
}

impl Default for FrameScheduler {
    fn default() -> Self {
        Self::new(BURST, SUSTAINED_FPS)
    }
}

impl FrameScheduler {
    pub fn new(burst: u32, sustained_fps: u32) -> Self {
        Self {
            burst: f64::from(burst.max(1)),
            per_second: f64::from(sustained_fps.max(1)),
            tokens: f64::from(burst.max(1)),
            counted_at: None,
            dirty: true,
            soon: None,
        }
    }

    /// Something changed on screen.
    pub fn request(&mut self) {
        self.dirty = true;
    }

    /// Something changed that can wait a little: it is drawn with the next frame, or within
    /// [`SOON`] of `now`.
    pub fn request_soon(&mut self, now: Instant) {
        self.soon.get_or_insert(now + SOON);
    }

    pub fn is_dirty(&self) -> bool {
        self.dirty || self.soon.is_some()
    }

    /// When to draw next, or `None` when nothing changed. `hold_until` defers the frame while
    /// the child is inside a synchronized update, so a half-written frame is never shown.
    pub fn deadline(&self, hold_until: Option<Instant>) -> Option<Instant> {
        let wanted = match (self.dirty, self.soon) {
            (true, _) => None,
            (false, Some(soon)) => Some(soon),
            (false, None) => return None,
        };
        let token = self.counted_at.map(|at| {
            let missing = (1.0 - self.tokens).max(0.0);
            at + Duration::from_secs_f64(missing / self.per_second)
        });
        let earliest = match (token, wanted) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        match (earliest, hold_until) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => Some(a.or(b).unwrap_or_else(Instant::now)),
        }
    }

    /// A frame was drawn at `now`.
    pub fn drew(&mut self, now: Instant) {
        let refilled = self.counted_at.map_or(self.burst, |at| {
            let elapsed = now.saturating_duration_since(at).as_secs_f64();
            (self.tokens + elapsed * self.per_second).min(self.burst)
        });
        self.tokens = refilled - 1.0;
        self.counted_at = Some(now);
        self.dirty = false;
        self.soon = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Draws whenever a frame is due while the screen changes every `step`, for `span`;
    /// returns when the frames were drawn.
    fn flood(
        s: &mut FrameScheduler,
        start: Instant,
        step: Duration,
        span: Duration,
    ) -> Vec<Instant> {
        let mut drawn = Vec::new();
        let mut now = start;
        while now < start + span {
            s.request();
            if s.deadline(None).is_some_and(|due| due <= now) {
                s.drew(now);
                drawn.push(now);
            }
            now += step;
        }
        drawn
    }

    #[test]
    fn the_first_frame_is_due_at_once_and_idle_means_no_wake_up() {
        let mut s = FrameScheduler::default();
        let t0 = Instant::now();
        assert!(s.deadline(None).is_some_and(|due| due <= Instant::now()));
        s.drew(t0);
        assert_eq!(s.deadline(None), None, "idle: no wake-up");
        for _ in 0..100 {
            s.request();
        }
        assert_eq!(
            s.deadline(None),
            Some(t0),
            "one change after a draw: due at once"
        );
    }

    #[test]
    fn after_a_quiet_spell_a_burst_is_drawn_at_once_then_the_rate_holds() {
        let mut s = FrameScheduler::default();
        let t0 = Instant::now();
        s.drew(t0);
        for i in 1..BURST {
            s.request();
            let due = s.deadline(None).unwrap();
            assert!(due <= t0, "frame {i} of the burst waits");
            s.drew(t0);
        }
        s.request();
        let due = s.deadline(None).unwrap();
        let wait = due - t0;
        let expected = Duration::from_secs(1) / SUSTAINED_FPS;
        assert!(
            wait.abs_diff(expected) < Duration::from_micros(10),
            "{wait:?}"
        );
        // A second of quiet refills the bucket.
        s.drew(due);
        s.request();
        let later = due + Duration::from_secs(1);
        s.drew(later);
        s.request();
        assert_eq!(s.deadline(None), Some(later));
    }

    #[test]
    fn no_second_holds_more_than_max_fps_frames() {
        // Codex draws every 8 ms while it works; a flood changes the screen every 0.5 ms.
        for step in [Duration::from_millis(8), Duration::from_micros(500)] {
            let mut s = FrameScheduler::default();
            let t0 = Instant::now();
            let drawn = flood(&mut s, t0, step, Duration::from_secs(5));
            for (i, first) in drawn.iter().enumerate() {
                let in_window = drawn[i..]
                    .iter()
                    .take_while(|t| **t < *first + Duration::from_secs(1))
                    .count();
                assert!(
                    in_window <= MAX_FPS as usize,
                    "{in_window} frames in a second"
                );
            }
            let last_second = drawn
                .iter()
                .filter(|t| **t >= t0 + Duration::from_secs(4))
                .count();
            assert!(
                last_second.abs_diff(SUSTAINED_FPS as usize) <= 1,
                "sustained {last_second} fps at step {step:?}"
            );
        }
    }

    #[test]
    fn synchronized_updates_hold_the_frame() {
        let mut s = FrameScheduler::default();
        let t0 = Instant::now();
        s.drew(t0);
        s.request();
        let hold = t0 + Duration::from_millis(100);
        assert_eq!(s.deadline(Some(hold)), Some(hold));
        let early = t0 + Duration::from_millis(1);
        assert_eq!(s.deadline(Some(early)), Some(early));
    }

    #[test]
    fn a_change_that_can_wait_rides_on_the_next_frame_or_goes_soon() {
        let mut s = FrameScheduler::default();
        let t0 = Instant::now();
        s.drew(t0);
        s.request_soon(t0);
        assert_eq!(s.deadline(None), Some(t0 + SOON), "waits for company");
        assert!(s.is_dirty());
        s.request();
        assert_eq!(
            s.deadline(None),
            Some(t0),
            "the pane's frame takes it along"
        );
        s.drew(t0);
        assert_eq!(s.deadline(None), None, "and both are done");
        // A later non-urgent change does not push an earlier one back.
        s.request_soon(t0);
        s.request_soon(t0 + Duration::from_millis(30));
        assert_eq!(s.deadline(None), Some(t0 + SOON));
    }
}
