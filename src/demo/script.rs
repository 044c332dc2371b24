//! What the demo plays: three accounts with their quotas, what each user turn costs, the prompts
//! the autopilot types and the replies the simulated model streams. Pure data and arithmetic;
//! the server ([`super::backend`]) and the autopilot ([`super::pilot`]) act on it.
//!
//! The burn is chosen so the story fits in well under a minute: alice starts at 58 % of her
//! 5-hour window and each turn costs 14 points, so her third turn meets the limit (100 %), is
//! refused with a `usage_limit_reached` 429, and cs-tui continues it on bob, who has the most
//! room (carol's weekly window is nearly spent).

use super::tokens::Identity;

/// Points of the 5-hour window one user turn costs.
pub(super) const FIVE_HOUR_BURN: u8 = 14;
/// Points of the weekly window one user turn costs.
pub(super) const WEEKLY_BURN: u8 = 2;

/// One rate-limit window of a demo account.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Window {
    pub used_percent: u8,
    pub minutes: u32,
    /// Unix seconds.
    pub resets_at: i64,
}

impl Window {
    fn new(used_percent: u8, minutes: u32, resets_in_secs: i64, now: i64) -> Self {
        Self {
            used_percent,
            minutes,
            resets_at: now + resets_in_secs,
        }
    }

    /// A window past its reset time starts again empty.
    fn roll(&mut self, now: i64) {
        if now >= self.resets_at {
            self.used_percent = 0;
            let length = i64::from(self.minutes) * 60;
            let periods = (now - self.resets_at) / length + 1;
            self.resets_at += periods * length;
        }
    }
}

/// A demo account and what it has used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct DemoAccount {
    pub identity: Identity,
    pub five_hour: Window,
    pub weekly: Window,
}

impl DemoAccount {
    /// Whether a window is spent.
    pub(super) fn limited(&self) -> bool {
        self.five_hour.used_percent >= 100 || self.weekly.used_percent >= 100
    }

    /// Charges one user turn. `false`: the turn would go over a limit, so it is refused (the
    /// window that ran out now reads 100 %).
    pub(super) fn charge_turn(&mut self, now: i64) -> bool {
        self.five_hour.roll(now);
        self.weekly.roll(now);
        if self.limited() {
            return false;
        }
        let five = self.five_hour.used_percent.saturating_add(FIVE_HOUR_BURN);
        let week = self.weekly.used_percent.saturating_add(WEEKLY_BURN);
        if five >= 100 || week >= 100 {
            // Refused: nothing is charged, and the window that ran out reads full.
            if five >= 100 {
                self.five_hour.used_percent = 100;
            }
            if week >= 100 {
                self.weekly.used_percent = 100;
            }
            return false;
        }
        self.five_hour.used_percent = five;
        self.weekly.used_percent = week;
        true
    }

    /// The windows as they stand at `now` (a window past its reset reads empty).
    pub(super) fn current(&mut self, now: i64) -> &Self {
        self.five_hour.roll(now);
        self.weekly.roll(now);
        self
    }
}

/// The three demo accounts as the demo starts at `now`.
pub(super) fn accounts(now: i64) -> Vec<DemoAccount> {
    let account = |name, plan, five: (u8, i64), week: (u8, i64)| DemoAccount {
        identity: Identity { name, plan },
        five_hour: Window::new(five.0, 300, five.1, now),
        weekly: Window::new(week.0, 7 * 24 * 60, week.1, now),
    };
    vec![
        account("alice", "plus", (58, 2 * 3600 + 14 * 60), (41, 3 * 86_400)),
        account("bob", "pro", (12, 4 * 3600 + 5 * 60), (30, 5 * 86_400)),
        account("carol", "plus", (35, 3 * 3600), (92, 86_400 + 7200)),
    ]
}

/// One turn of the story the autopilot types.
pub(super) struct Turn {
    pub prompt: &'static str,
    pub reply: &'static str,
}

/// The autopilot's turns, in order: the third meets alice's limit.
pub(super) const TURNS: &[Turn] = &[
    Turn {
        prompt: "Explain what the parser in this project does",
        reply: "The parser reads the config file line by line, splits each line into a key \
                and a value, and keeps the last value of a repeated key. Errors carry the line \
                number, so a bad file points at the line to fix.",
    },
    Turn {
        prompt: "Add a --strict flag that rejects repeated keys",
        reply: "Plan: add `strict: bool` to the options, check for a repeated key before the \
                insert, and return a `RepeatedKey { line, key }` error when strict. Existing \
                callers keep the lenient default.",
    },
    Turn {
        prompt: "Write tests for the strict mode and run them",
        reply: "Added three tests: a repeated key fails in strict mode with its line number, \
                the same file passes in lenient mode, and an empty file passes in both. All \
                three pass.",
    },
    Turn {
        prompt: "Summarize what changed",
        reply: "Summary: a --strict flag, a RepeatedKey error with the line number, and three \
                tests. This turn ran on the account cs-tui switched to; the conversation went \
                on where it was.",
    },
];

/// The reply to a user message: the story's own reply for its prompts, a short note for
/// anything the user types.
pub(super) fn reply_to(prompt: &str) -> String {
    let prompt = prompt.trim();
    match TURNS.iter().find(|t| t.prompt == prompt) {
        Some(turn) => turn.reply.to_owned(),
        None => {
            let shown: String = prompt.chars().take(60).collect();
            format!(
                "This is cs-tui's demo: a simulated model answers \"{shown}\". Every turn costs \
                 the serving account {FIVE_HOUR_BURN} points of its 5-hour window; keep going \
                 to watch the next switch."
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    #[test]
    fn alices_third_turn_meets_her_limit() {
        let mut alice = accounts(NOW).remove(0);
        assert!(alice.charge_turn(NOW));
        assert!(alice.charge_turn(NOW));
        assert_eq!(alice.five_hour.used_percent, 86);
        assert!(!alice.charge_turn(NOW), "the third turn is refused");
        assert_eq!(alice.five_hour.used_percent, 100);
        assert_eq!(
            alice.weekly.used_percent, 45,
            "a refused turn costs nothing"
        );
        assert!(alice.limited());
        assert!(!alice.charge_turn(NOW), "and so is every one after it");
    }

    #[test]
    fn bob_has_the_most_room_after_alice() {
        let accounts = accounts(NOW);
        let room = |a: &DemoAccount| 100 - a.five_hour.used_percent.max(a.weekly.used_percent);
        let best = accounts[1..].iter().max_by_key(|a| room(a)).unwrap();
        assert_eq!(best.identity.name, "bob");
    }

    #[test]
    fn a_window_past_its_reset_starts_again() {
        let mut alice = accounts(NOW).remove(0);
        alice.five_hour.used_percent = 100;
        let reset = alice.five_hour.resets_at;
        assert!(!alice.charge_turn(reset - 1));
        assert!(alice.charge_turn(reset));
        assert_eq!(alice.five_hour.used_percent, FIVE_HOUR_BURN);
        assert_eq!(alice.five_hour.resets_at, reset + 300 * 60);
    }

    #[test]
    fn the_story_has_a_reply_for_each_prompt_and_one_for_anything_else() {
        for turn in TURNS {
            assert_eq!(reply_to(turn.prompt), turn.reply);
        }
        assert!(reply_to("hello there").contains("\"hello there\""));
    }
}
