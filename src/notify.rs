//! Desktop notifications (`[notify]`): what deserves one, said once, and how it is delivered.
//!
//! [`Decider::decide`] is pure: it reads the session's [`ProxyEvent`]s (as the panel and
//! `serve` do) and returns at most one [`Notice`] per event, keeping what it needs to say each
//! thing once: a switch once, a threshold once per crossing per window per account, "no account
//! available" once until an account is usable again, a reset once per exhaustion. Delivery is
//! apart: [`terminal_bytes`] for the outer terminal (OSC 9, OSC 777, the bell; wrapped for tmux
//! passthrough; `serve`, with no terminal, uses only the command), [`run_command`] for a program run without a shell, with a timeout, on its own
//! task. A notice's text holds account names, window names and percentages, never a token, and
//! is stripped of control characters.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;

use chrono::{DateTime, Local, Utc};

use crate::account_id::AccountId;
use crate::config::{NotifyConfig, NotifyMethod};
use crate::proxy::events::{AccountRef, ProxyEvent};
use crate::quota::{RateLimitSnapshot, WindowKind};

/// Longest title or body a notice carries, in characters.
const MAX_TEXT_CHARS: usize = 200;

/// What a notice is about (`{event}` in the command's arguments).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NoticeKind {
    Switch,
    Threshold,
    NoAccount,
    Reset,
}

impl NoticeKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Switch => "switch",
            Self::Threshold => "threshold",
            Self::NoAccount => "no_account",
            Self::Reset => "reset",
        }
    }
}

/// One notification, its text already sanitized.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Notice {
    pub(crate) kind: NoticeKind,
    pub(crate) title: String,
    pub(crate) body: String,
}

impl Notice {
    fn new(kind: NoticeKind, title: String, body: String) -> Self {
        Self {
            kind,
            title: sanitize(&title),
            body: sanitize(&body),
        }
    }
}

/// Text safe inside an escape sequence and a notification: no control characters (an account
/// name with `ESC` or `BEL` in it cannot end the sequence or start another), bounded length.
pub(crate) fn sanitize(text: &str) -> String {
    let mut out: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_TEXT_CHARS)
        .collect();
    if text.chars().count() > MAX_TEXT_CHARS {
        out.pop();
        out.push('…');
    }
    out
}

/// The threshold state of one window of one account.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Crossing {
    /// The window's reset time: a new window starts over.
    resets_at: Option<i64>,
    /// The highest threshold already at or below the window's use (0: none).
    level: f64,
}

/// Decides which events notify, and remembers what was said.
#[derive(Debug)]
pub(crate) struct Decider {
    config: NotifyConfig,
    /// Sorted ascending, without duplicates.
    thresholds: Vec<f64>,
    active: Option<AccountId>,
    crossings: HashMap<(AccountId, WindowKind), Crossing>,
    /// Accounts at a limit, with when they are usable again (unix seconds) if known.
    exhausted: HashMap<AccountId, Option<i64>>,
    /// "No account available" was said and nothing has been usable since.
    no_account_said: bool,
    /// Switches already said: (to, when).
    switches: HashSet<(AccountId, DateTime<Utc>)>,
}

impl Decider {
    pub(crate) fn new(config: &NotifyConfig) -> Self {
        let mut thresholds = config.thresholds.clone();
        thresholds.retain(|t| t.is_finite());
        thresholds.sort_by(f64::total_cmp);
        thresholds.dedup();
        Self {
            config: config.clone(),
            thresholds,
            active: None,
            crossings: HashMap::new(),
            exhausted: HashMap::new(),
            no_account_said: false,
            switches: HashSet::new(),
        }
    }

    /// The notice `event` deserves, if any. Pure: the event's own time is the only clock.
    pub(crate) fn decide(&mut self, event: &ProxyEvent) -> Option<Notice> {
        match event {
            ProxyEvent::ActiveAccount { account, .. } => {
                self.active = Some(account.id.clone());
                None
            }
            ProxyEvent::SwitchDone {
                from,
                to,
                reason,
                at,
                ..
            } => {
                self.active = Some(to.id.clone());
                self.no_account_said = false;
                // The same switch reported twice is still one switch.
                if !self.switches.insert((to.id.clone(), *at)) || !self.config.on_switch {
                    return None;
                }
                let body = match from {
                    Some(from) => format!("{} → {}: {}", from.name, to.name, reason.describe()),
                    None => format!("now on {}: {}", to.name, reason.describe()),
                };
                Some(Notice::new(
                    NoticeKind::Switch,
                    format!("cs-tui: switched to {}", to.name),
                    body,
                ))
            }
            ProxyEvent::NoAccountAvailable {
                reason,
                earliest_reset,
                ..
            } => {
                if self.no_account_said {
                    return None;
                }
                self.no_account_said = true;
                if !self.config.on_no_account {
                    return None;
                }
                let when = earliest_reset
                    .map(|t| {
                        format!(
                            "; the first account is usable again at {}",
                            t.with_timezone(&Local).format("%a %H:%M")
                        )
                    })
                    .unwrap_or_default();
                Some(Notice::new(
                    NoticeKind::NoAccount,
                    "cs-tui: no account available".to_owned(),
                    format!("{}{when}", reason.describe()),
                ))
            }
            ProxyEvent::UsageLimitHit { account, .. } => {
                self.exhausted.entry(account.id.clone()).or_insert(None);
                None
            }
            ProxyEvent::RateLimitsUpdated {
                account,
                snapshot,
                at,
                ..
            } => {
                let reset = self.track_exhaustion(account, snapshot, *at);
                let threshold = self.track_thresholds(account, snapshot);
                // One notice per event: a reset matters more than a threshold (and a window
                // that just reset crossed none).
                reset.or(threshold)
            }
            _ => None,
        }
    }

    /// A reset: an account known exhausted shows a snapshot with room again, read no earlier
    /// than its reset time (a stale read cannot announce a reset).
    fn track_exhaustion(
        &mut self,
        account: &AccountRef,
        snapshot: &RateLimitSnapshot,
        at: DateTime<Utc>,
    ) -> Option<Notice> {
        // An empty snapshot (numbers not known yet) says nothing either way.
        snapshot.windows().next()?;
        if snapshot.is_exhausted() {
            let until = snapshot.available_again_at();
            let entry = self.exhausted.entry(account.id.clone()).or_insert(until);
            if until.is_some() {
                *entry = until;
            }
            return None;
        }
        let until = *self.exhausted.get(&account.id)?;
        if until.is_some_and(|until| at.timestamp() < until) {
            return None;
        }
        self.exhausted.remove(&account.id);
        self.no_account_said = false;
        if !self.config.on_reset {
            return None;
        }
        Some(Notice::new(
            NoticeKind::Reset,
            format!("cs-tui: {} is available again", account.name),
            format!(
                "{}'s limit reset: {:.0}% used",
                account.name,
                snapshot
                    .windows()
                    .map(|w| w.used_percent)
                    .fold(0.0, f64::max)
            ),
        ))
    }

    /// A threshold: the active account's tightest window reached a threshold it had not
    /// reached in this window. Every window's level is kept, so one crossing says one thing.
    fn track_thresholds(
        &mut self,
        account: &AccountRef,
        snapshot: &RateLimitSnapshot,
    ) -> Option<Notice> {
        let mut crossed: Option<(f64, WindowKind, f64)> = None;
        let tightest = snapshot
            .windows()
            .map(|w| w.used_percent)
            .fold(0.0, f64::max);
        for window in snapshot.windows() {
            let used = window.used_percent;
            let reached = self
                .thresholds
                .iter()
                .copied()
                .filter(|t| *t <= used)
                .fold(0.0, f64::max);
            let key = (account.id.clone(), window.kind());
            let state = self.crossings.entry(key).or_insert(Crossing {
                resets_at: window.resets_at,
                level: 0.0,
            });
            if is_new_window(state.resets_at, window.resets_at) {
                state.level = 0.0;
            }
            state.resets_at = window.resets_at;
            if reached > state.level
                && used >= tightest
                && crossed.is_none_or(|(_, _, best)| used > best)
            {
                crossed = Some((reached, window.kind(), used));
            }
            // Use that fell back (a window that reset early) arms the thresholds above again.
            state.level = reached;
        }
        let (threshold, kind, used) = crossed?;
        // At the limit itself the switch (or "no account available") that follows is the one
        // notice: a threshold is a warning before it.
        if !self.config.on_threshold
            || self.active.as_ref() != Some(&account.id)
            || snapshot.is_exhausted()
        {
            return None;
        }
        Some(Notice::new(
            NoticeKind::Threshold,
            format!("cs-tui: {} at {used:.0}%", account.name),
            format!(
                "{}'s {} window passed {threshold:.0}%",
                account.name,
                kind.label()
            ),
        ))
    }
}

/// A reset time this much later is a new window; less is the jitter of a reset time the
/// app-server computes from "resets in N seconds" at each read.
const NEW_WINDOW_SECS: i64 = 600;

/// Whether a window's reset time moved to a new window.
fn is_new_window(before: Option<i64>, now: Option<i64>) -> bool {
    matches!((before, now), (Some(before), Some(now)) if now > before + NEW_WINDOW_SECS)
}

/// What `notice` writes to the outer terminal with `methods`; `tmux`: inside tmux, where the
/// sequences go through its passthrough. (`serve` has no terminal and never calls this.)
pub(crate) fn terminal_bytes(notice: &Notice, methods: &[NotifyMethod], tmux: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for method in methods {
        match method {
            NotifyMethod::Osc9 => {
                out.extend(osc9(&format!("{}: {}", notice.title, notice.body), tmux));
            }
            NotifyMethod::Osc777 => {
                // `;` separates the fields.
                let title = notice.title.replace(';', ",");
                let seq = format!("\x1b]777;notify;{title};{}\x07", notice.body);
                out.extend(wrap_for_tmux(seq.as_bytes(), tmux));
            }
            NotifyMethod::Bell => out.push(0x07),
            NotifyMethod::Command => {}
        }
    }
    out
}

/// `OSC 9 ; text BEL`, the text stripped of control characters, wrapped for tmux when asked.
pub(crate) fn osc9(text: &str, tmux: bool) -> Vec<u8> {
    let clean: String = text.chars().filter(|c| !c.is_control()).collect();
    wrap_for_tmux(format!("\x1b]9;{clean}\x07").as_bytes(), tmux)
}

/// tmux's passthrough: `ESC Ptmux; <the sequence, each ESC doubled> ESC \`. tmux hands it to
/// the terminal outside when `allow-passthrough` is on, and drops it otherwise.
fn wrap_for_tmux(sequence: &[u8], tmux: bool) -> Vec<u8> {
    if !tmux {
        return sequence.to_vec();
    }
    let mut out = b"\x1bPtmux;".to_vec();
    for &byte in sequence {
        if byte == 0x1b {
            out.push(0x1b);
        }
        out.push(byte);
    }
    out.extend_from_slice(b"\x1b\\");
    out
}

/// `true` when `$TMUX` says we run inside tmux.
pub(crate) fn inside_tmux() -> bool {
    std::env::var_os("TMUX").is_some_and(|v| !v.is_empty())
}

/// The command's arguments with `{title}`, `{body}` and `{event}` filled in.
pub(crate) fn command_args(template: &[String], notice: &Notice) -> Vec<String> {
    template
        .iter()
        .map(|arg| {
            arg.replace("{title}", &notice.title)
                .replace("{body}", &notice.body)
                .replace("{event}", notice.kind.as_str())
        })
        .collect()
}

/// Runs the `command` method for `notice` on its own task: no shell, no input, output
/// discarded, killed (with its process group) after `timeout`. Returns at once; a command
/// that cannot start or fails is logged, never raised. Call on a tokio runtime.
pub(crate) fn run_command(config: &NotifyConfig, notice: &Notice) {
    if !config.methods.contains(&NotifyMethod::Command) {
        return;
    }
    let args = command_args(&config.command, notice);
    let Some((program, rest)) = args.split_first() else {
        return;
    };
    let (mut command, _) = crate::process::command_dying_with_us(OsStr::new(program));
    command
        .args(rest)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let timeout = config.command_timeout();
    let program = program.clone();
    let event = notice.kind.as_str();
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(err) => {
            tracing::warn!(program, event, "notify command did not start: {err}");
            return;
        }
    };
    tokio::spawn(async move {
        match tokio::time::timeout(timeout, child.wait()).await {
            Ok(Ok(status)) if status.success() => {
                tracing::debug!(program, event, "notify command done");
            }
            Ok(Ok(status)) => tracing::warn!(program, event, %status, "notify command failed"),
            Ok(Err(err)) => tracing::warn!(program, event, "notify command: {err}"),
            Err(_) => {
                tracing::warn!(
                    program,
                    event,
                    ?timeout,
                    "notify command timed out; killing it"
                );
                if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
                    let _ = crate::process::signal_group(pid, nix::sys::signal::Signal::SIGKILL);
                }
                let _ = child.wait().await;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chrono::TimeZone as _;

    use super::*;
    use crate::proxy::events::SwitchReason;
    use crate::quota::RateLimitWindow;

    fn account(name: &str) -> AccountRef {
        AccountRef {
            id: AccountId::from(format!("id-{name}")),
            name: name.to_owned(),
        }
    }

    fn at(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + secs, 0).unwrap()
    }

    /// A snapshot with a 5-hour window at `five` % and a weekly one at `week` %, resetting
    /// at `five_reset` and a fixed weekly time.
    fn snapshot(five: f64, five_reset: i64, week: f64) -> RateLimitSnapshot {
        RateLimitSnapshot {
            primary: Some(RateLimitWindow {
                used_percent: five,
                window_duration_mins: Some(300),
                resets_at: Some(five_reset),
            }),
            secondary: Some(RateLimitWindow {
                used_percent: week,
                window_duration_mins: Some(10_080),
                resets_at: Some(1_800_500_000),
            }),
            ..RateLimitSnapshot::default()
        }
    }

    fn limits(name: &str, snapshot: RateLimitSnapshot, secs: i64) -> ProxyEvent {
        ProxyEvent::RateLimitsUpdated {
            account: account(name),
            snapshot,
            families: Vec::new(),
            at: at(secs),
        }
    }

    fn active(name: &str) -> ProxyEvent {
        ProxyEvent::ActiveAccount {
            account: account(name),
            at: at(0),
        }
    }

    fn switch(from: &str, to: &str, secs: i64) -> ProxyEvent {
        ProxyEvent::SwitchDone {
            from: Some(account(from)),
            to: account(to),
            reason: SwitchReason::UsageLimit,
            elapsed_ms: 120,
            at: at(secs),
        }
    }

    fn no_account(secs: i64) -> ProxyEvent {
        ProxyEvent::NoAccountAvailable {
            reason: SwitchReason::UsageLimit,
            earliest_reset: None,
            at: at(secs),
        }
    }

    fn kinds(decider: &mut Decider, events: &[ProxyEvent]) -> Vec<Option<NoticeKind>> {
        events
            .iter()
            .map(|e| decider.decide(e).map(|n| n.kind))
            .collect()
    }

    #[test]
    fn a_switch_notifies_once_and_says_who_and_why() {
        let mut d = Decider::new(&NotifyConfig::default());
        d.decide(&active("alice"));
        let notice = d.decide(&switch("alice", "bob", 10)).expect("a notice");
        assert_eq!(notice.kind, NoticeKind::Switch);
        assert_eq!(notice.title, "cs-tui: switched to bob");
        assert_eq!(notice.body, "alice → bob: usage limit reached");
        // The same switch again is not a second switch; the next one is.
        assert_eq!(d.decide(&switch("alice", "bob", 10)), None);
        assert!(d.decide(&switch("bob", "alice", 20)).is_some());
        // Started, deferred, failed: no notice (only a done switch is one).
        let started = ProxyEvent::SwitchStarted {
            from: Some(account("alice")),
            to: account("bob"),
            reason: SwitchReason::Manual,
            at: at(30),
        };
        assert_eq!(d.decide(&started), None);
    }

    #[test]
    fn thresholds_notify_once_per_crossing_per_window_per_account() {
        let mut d = Decider::new(&NotifyConfig::default());
        let reset = 1_800_010_000;
        let got = kinds(
            &mut d,
            &[
                active("alice"),
                limits("alice", snapshot(50.0, reset, 10.0), 1),
                limits("alice", snapshot(79.9, reset, 10.0), 2),
                limits("alice", snapshot(80.0, reset, 10.0), 3),
                limits("alice", snapshot(85.0, reset, 10.0), 4),
                limits("alice", snapshot(90.0, reset, 10.0), 5),
                limits("alice", snapshot(96.0, reset, 10.0), 6),
                limits("alice", snapshot(97.0, reset, 10.0), 7),
            ],
        );
        let t = Some(NoticeKind::Threshold);
        assert_eq!(got, [None, None, None, t, None, None, t, None]);

        // A new window (another reset time) arms the thresholds again.
        let next = reset + 18_000;
        assert_eq!(
            kinds(
                &mut d,
                &[
                    limits("alice", snapshot(5.0, next, 10.0), 8),
                    limits("alice", snapshot(81.0, next, 10.0), 9),
                ]
            ),
            [None, t]
        );
        // A reset time that wobbles by seconds between reads is the same window.
        assert_eq!(
            kinds(
                &mut d,
                &[
                    limits("alice", snapshot(82.0, next + 1, 10.0), 10),
                    limits("alice", snapshot(82.5, next - 2, 10.0), 11),
                    limits("alice", snapshot(83.0, next + 3, 10.0), 12),
                ]
            ),
            [None, None, None]
        );
        // Jumping over both thresholds at once is one notice, naming the higher.
        let mut d = Decider::new(&NotifyConfig::default());
        d.decide(&active("alice"));
        let notice = d
            .decide(&limits("alice", snapshot(99.0, reset, 10.0), 1))
            .unwrap();
        assert_eq!(notice.title, "cs-tui: alice at 99%");
        assert_eq!(notice.body, "alice's 5h window passed 95%");
        // Straight to the limit: no threshold notice (the switch that follows is the one),
        // and the crossing is spent.
        let mut d = Decider::new(&NotifyConfig::default());
        d.decide(&active("alice"));
        assert_eq!(
            d.decide(&limits("alice", snapshot(100.0, reset, 10.0), 1)),
            None
        );
        assert_eq!(
            d.decide(&limits("alice", snapshot(100.0, reset, 10.0), 2)),
            None
        );
    }

    #[test]
    fn the_tightest_window_speaks_and_other_accounts_do_not() {
        let mut d = Decider::new(&NotifyConfig::default());
        d.decide(&active("alice"));
        // Weekly is the tightest: its crossing is the notice; the 5-hour one, crossed in the
        // same read, is not said later either.
        let notice = d
            .decide(&limits("alice", snapshot(82.0, 1_800_010_000, 96.0), 1))
            .unwrap();
        assert_eq!(notice.body, "alice's weekly window passed 95%");
        assert_eq!(
            d.decide(&limits("alice", snapshot(83.0, 1_800_010_000, 96.0), 2)),
            None
        );
        // bob is not the active account: his reads never notify a threshold, and his levels
        // are kept, so becoming active does not announce an old crossing.
        assert_eq!(
            d.decide(&limits("bob", snapshot(90.0, 1_800_010_000, 10.0), 3)),
            None
        );
        d.decide(&switch("alice", "bob", 4));
        assert_eq!(
            d.decide(&limits("bob", snapshot(91.0, 1_800_010_000, 10.0), 5)),
            None
        );
        assert!(
            d.decide(&limits("bob", snapshot(95.0, 1_800_010_000, 10.0), 6))
                .is_some()
        );
    }

    #[test]
    fn custom_thresholds_are_sorted_and_each_crossed_once() {
        let config = NotifyConfig {
            thresholds: vec![90.0, 50.0, 50.0],
            ..NotifyConfig::default()
        };
        let mut d = Decider::new(&config);
        let r = 1_800_010_000;
        let got = kinds(
            &mut d,
            &[
                active("alice"),
                limits("alice", snapshot(55.0, r, 0.0), 1),
                limits("alice", snapshot(80.0, r, 0.0), 2),
                limits("alice", snapshot(90.0, r, 0.0), 3),
            ],
        );
        let t = Some(NoticeKind::Threshold);
        assert_eq!(got, [None, t, None, t]);
    }

    #[test]
    fn no_account_notifies_once_until_something_is_usable_again() {
        let mut d = Decider::new(&NotifyConfig::default());
        let n = Some(NoticeKind::NoAccount);
        assert_eq!(
            kinds(&mut d, &[no_account(1), no_account(2), no_account(3)]),
            [n, None, None]
        );
        d.decide(&switch("alice", "bob", 4));
        assert_eq!(kinds(&mut d, &[no_account(5)]), [n]);
        let with_reset = ProxyEvent::NoAccountAvailable {
            reason: SwitchReason::UsageLimit,
            earliest_reset: Some(at(0)),
            at: at(6),
        };
        assert_eq!(d.decide(&with_reset), None);
    }

    #[test]
    fn an_exhausted_account_that_resets_notifies_once_and_a_stale_read_does_not() {
        let mut d = Decider::new(&NotifyConfig::default());
        d.decide(&active("bob"));
        let until = 1_800_000_100;
        // alice at 100 % until `until`.
        assert_eq!(
            d.decide(&limits("alice", snapshot(100.0, until, 40.0), 1)),
            None
        );
        // A read before her reset time with lower numbers is stale: no reset.
        assert_eq!(
            d.decide(&limits("alice", snapshot(20.0, until, 40.0), 50)),
            None
        );
        // After it, with room: one reset notice.
        let notice = d
            .decide(&limits("alice", snapshot(0.0, until + 18_000, 40.0), 100))
            .unwrap();
        assert_eq!(notice.kind, NoticeKind::Reset);
        assert_eq!(notice.title, "cs-tui: alice is available again");
        assert_eq!(
            d.decide(&limits("alice", snapshot(1.0, until + 18_000, 40.0), 101)),
            None
        );
        // A limit hit (no numbers) marks her exhausted too; the next read with room resets.
        d.decide(&ProxyEvent::UsageLimitHit {
            account: account("alice"),
            session: None,
            at: at(200),
        });
        assert_eq!(
            kinds(
                &mut d,
                &[limits("alice", snapshot(2.0, until + 18_000, 40.0), 300)]
            ),
            [Some(NoticeKind::Reset)]
        );
        // A reset ends "no account available": the next one is said again.
        assert!(d.decide(&no_account(400)).is_some());
        d.decide(&limits("carol", snapshot(100.0, 0, 0.0), 401));
        d.decide(&limits("carol", snapshot(0.0, 18_000, 0.0), 402));
        assert!(d.decide(&no_account(403)).is_some());
    }

    #[test]
    fn events_turned_off_say_nothing_but_still_keep_state() {
        let config = NotifyConfig {
            on_switch: false,
            on_threshold: false,
            on_no_account: false,
            on_reset: false,
            ..NotifyConfig::default()
        };
        let mut d = Decider::new(&config);
        let r = 1_800_010_000;
        let got = kinds(
            &mut d,
            &[
                active("alice"),
                switch("alice", "bob", 1),
                limits("bob", snapshot(99.0, r, 0.0), 2),
                no_account(3),
                limits("alice", snapshot(100.0, 0, 0.0), 4),
                limits("alice", snapshot(0.0, 18_000, 0.0), 5),
            ],
        );
        assert!(got.iter().all(Option::is_none), "{got:?}");
    }

    #[test]
    fn names_with_control_characters_cannot_break_out_of_the_sequence() {
        let mut d = Decider::new(&NotifyConfig::default());
        let evil = "mallory\x1b]52;c;aGk=\x07\x1b\\\u{9b}2J";
        let notice = d
            .decide(&ProxyEvent::SwitchDone {
                from: None,
                to: AccountRef {
                    id: AccountId::from("id-m".to_owned()),
                    name: evil.to_owned(),
                },
                reason: SwitchReason::Manual,
                elapsed_ms: 1,
                at: at(1),
            })
            .unwrap();
        for text in [&notice.title, &notice.body] {
            assert!(!text.chars().any(char::is_control), "{text:?}");
        }
        let all = [NotifyMethod::Osc9, NotifyMethod::Osc777, NotifyMethod::Bell];
        for tmux in [false, true] {
            let bytes = terminal_bytes(&notice, &all, tmux);
            // Exactly the sequences we write: two BEL-terminated OSCs and a bell; no other
            // ESC or BEL from the name.
            let bels = bytes.iter().filter(|b| **b == 0x07).count();
            assert_eq!(bels, 3, "{}", String::from_utf8_lossy(&bytes));
        }
        // Long names are cut.
        assert!(sanitize(&"x".repeat(1000)).chars().count() <= MAX_TEXT_CHARS);
    }

    #[test]
    fn the_terminal_bytes_of_each_method_outside_and_inside_tmux() {
        let notice = Notice::new(
            NoticeKind::Switch,
            "cs-tui: switched to bob".to_owned(),
            "alice → bob; manual".to_owned(),
        );
        let osc9 = terminal_bytes(&notice, &[NotifyMethod::Osc9], false);
        assert_eq!(
            osc9,
            "\x1b]9;cs-tui: switched to bob: alice → bob; manual\x07".as_bytes()
        );
        let wrapped = terminal_bytes(&notice, &[NotifyMethod::Osc9], true);
        assert_eq!(
            wrapped,
            "\x1bPtmux;\x1b\x1b]9;cs-tui: switched to bob: alice → bob; manual\x07\x1b\\"
                .as_bytes()
        );
        let osc777 = terminal_bytes(&notice, &[NotifyMethod::Osc777], false);
        assert_eq!(
            osc777,
            "\x1b]777;notify;cs-tui: switched to bob;alice → bob; manual\x07".as_bytes()
        );
        assert_eq!(
            terminal_bytes(&notice, &[NotifyMethod::Bell], true),
            b"\x07"
        );
        // The command method writes nothing to the terminal.
        assert!(terminal_bytes(&notice, &[NotifyMethod::Command], false).is_empty());
        assert!(terminal_bytes(&notice, &[], false).is_empty());
    }

    #[test]
    fn command_arguments_are_filled_in_without_a_shell() {
        let notice = Notice::new(
            NoticeKind::Threshold,
            "cs-tui: alice at 80%".to_owned(),
            "$(rm -rf ~); `x`".to_owned(),
        );
        let template =
            ["notify-send", "-a", "cs-tui", "{title}", "{body} [{event}]"].map(String::from);
        assert_eq!(
            command_args(&template, &notice),
            [
                "notify-send",
                "-a",
                "cs-tui",
                "cs-tui: alice at 80%",
                "$(rm -rf ~); `x` [threshold]"
            ]
        );
    }

    #[tokio::test]
    async fn the_command_runs_off_the_caller_and_a_hung_one_is_killed() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let notice = Notice::new(NoticeKind::Reset, "t".to_owned(), "b".to_owned());
        let config = NotifyConfig {
            methods: vec![NotifyMethod::Command],
            command: vec![
                "sh".to_owned(),
                "-c".to_owned(),
                format!("printf '%s|%s' \"$0\" \"$1\" > {}", out.display()),
                "{event}".to_owned(),
                "{body}".to_owned(),
            ],
            ..NotifyConfig::default()
        };
        run_command(&config, &notice);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while std::fs::read_to_string(&out).unwrap_or_default() != "reset|b" {
            assert!(tokio::time::Instant::now() < deadline, "the command ran");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }

        // A command that never ends: run_command returns at once, and the command is killed
        // after its timeout.
        let pid_file = dir.path().join("pid");
        let hung = NotifyConfig {
            methods: vec![NotifyMethod::Command],
            command: vec![
                "sh".to_owned(),
                "-c".to_owned(),
                format!("echo $$ > {}; exec sleep 1000", pid_file.display()),
            ],
            command_timeout_secs: 1,
            ..NotifyConfig::default()
        };
        let started = std::time::Instant::now();
        run_command(&hung, &notice);
        assert!(started.elapsed() < Duration::from_secs(1), "did not block");
        let pid = loop {
            if let Some(pid) = std::fs::read_to_string(&pid_file)
                .ok()
                .and_then(|s| s.trim().parse::<i32>().ok())
            {
                break pid;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the command started"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let proc = format!("/proc/{pid}");
        // Gone, or a zombie about to be reaped.
        loop {
            let state = std::fs::read_to_string(format!("{proc}/stat")).unwrap_or_default();
            if state.is_empty() || state.contains(") Z") {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "the command killed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        // A program that does not exist: logged, nothing raised.
        let missing = NotifyConfig {
            methods: vec![NotifyMethod::Command],
            command: vec!["/nonexistent/notify-send".to_owned()],
            ..NotifyConfig::default()
        };
        run_command(&missing, &notice);
    }
}
