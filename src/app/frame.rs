//! Frames are requested, not timed: any change marks the screen dirty, and the scheduler turns
//! a burst of requests into one draw, at most [`MAX_FPS`] times a second. Nothing dirty, no
//! deadline, no wake-up.

use std::time::{Duration, Instant};

pub const MAX_FPS: u32 = 60;

#[derive(Clone, Debug)]
pub struct FrameScheduler {
    min_interval: Duration,
    last_draw: Option<Instant>,
    dirty: bool,
}

impl Default for FrameScheduler {
    fn default() -> Self {
        Self::new(MAX_FPS)
    }
}

impl FrameScheduler {
    pub fn new(max_fps: u32) -> Self {
        Self {
            min_interval: Duration::from_secs(1) / max_fps.max(1),
            last_draw: None,
            dirty: true,
        }
    }

    /// Something changed on screen.
    pub fn request(&mut self) {
        self.dirty = true;
    }

    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// When to draw next, or `None` when nothing changed. `hold_until` defers the frame while
    /// the child is inside a synchronized update, so a half-written frame is never shown.
    pub fn deadline(&self, hold_until: Option<Instant>) -> Option<Instant> {
        if !self.dirty {
            return None;
        }
        let earliest = self.last_draw.map(|t| t + self.min_interval);
        match (earliest, hold_until) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => Some(a.or(b).unwrap_or_else(Instant::now)),
        }
    }

    /// A frame was drawn at `now`.
    pub fn drew(&mut self, now: Instant) {
        self.last_draw = Some(now);
        self.dirty = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_coalesce_and_the_rate_is_capped() {
        let mut s = FrameScheduler::new(60);
        let t0 = Instant::now();
        assert!(s.deadline(None).is_some(), "the first frame is due at once");
        s.drew(t0);
        assert_eq!(s.deadline(None), None, "idle: no wake-up");
        for _ in 0..100 {
            s.request();
        }
        let due = s.deadline(None).unwrap();
        assert_eq!(due, t0 + Duration::from_secs(1) / 60);
        s.drew(due);
        assert_eq!(s.deadline(None), None);
    }

    #[test]
    fn synchronized_updates_hold_the_frame() {
        let mut s = FrameScheduler::new(60);
        let t0 = Instant::now();
        s.drew(t0);
        s.request();
        let hold = t0 + Duration::from_millis(100);
        assert_eq!(s.deadline(Some(hold)), Some(hold));
        let early = t0 + Duration::from_millis(1);
        assert_eq!(
            s.deadline(Some(early)),
            Some(t0 + Duration::from_secs(1) / 60)
        );
    }
}
