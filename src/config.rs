//! The dashboard's configuration: `<store dir>/config.toml`.
//!
//! Every field has a default (documented in README.md and `assets/config.example.toml`), so a
//! missing file, or a file that sets only one key, is a complete configuration. Unknown keys are
//! rejected so a typo is reported instead of silently ignored.

use std::path::{Path, PathBuf};
use std::time::Duration;

use color_eyre::eyre::{Result, WrapErr};
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use serde::{Deserialize, Deserializer, Serialize};

use crate::errors::WithHint;

/// The file name inside the store directory.
pub const CONFIG_FILE: &str = "config.toml";

/// The widest panel allowed (columns).
pub const MAX_PANEL_WIDTH: u16 = 500;
/// The most scrollback allowed: ~200 MB of typical lines (README: 10,000 take ~20 MB).
pub const MAX_SCROLLBACK_LINES: usize = 100_000;
/// The longest polling interval allowed: a day.
pub const MAX_INTERVAL_SECS: u64 = 86_400;

/// Everything the user can set.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The key that starts a hotkey (`Ctrl+]` then `s`, `n`, `p`, `?`, `q`).
    pub prefix_key: PrefixKey,
    pub panel: PanelConfig,
    pub switch: SwitchConfig,
    pub polling: PollingConfig,
    pub pane: PaneConfig,
    pub pool: PoolConfig,
    pub notify: NotifyConfig,
}

/// Where the quota panel sits and how wide it is.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PanelConfig {
    /// Columns the side panel takes.
    pub width: u16,
    /// `right` or `left`.
    pub side: PanelSide,
    /// Whether the panel is shown at start (`Ctrl+]` `p` toggles it).
    pub visible: bool,
    /// Below this many terminal columns the panel collapses to a one-line status bar, so the
    /// pane keeps a usable width.
    pub collapse_below_columns: u16,
}

impl Default for PanelConfig {
    fn default() -> Self {
        Self {
            width: 44,
            side: PanelSide::Right,
            visible: true,
            collapse_below_columns: 120,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PanelSide {
    Left,
    Right,
}

/// When the proxy switches accounts on its own.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SwitchConfig {
    /// Switch at the next turn boundary once the 5-hour window is at least this full (percent).
    pub five_hour_threshold: f64,
    /// Switch at the next turn boundary once the weekly window is at least this full (percent).
    pub weekly_threshold: f64,
    /// Re-run a turn that failed on a usage limit on the new account, hiding the failure
    /// (docs/protocol.md §8). Read by the proxy.
    pub hidden_rerun: bool,
}

impl Default for SwitchConfig {
    fn default() -> Self {
        Self {
            five_hour_threshold: 95.0,
            weekly_threshold: 98.0,
            hidden_rerun: true,
        }
    }
}

/// How often usage is re-read.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PollingConfig {
    /// Seconds between `/wham/usage` reads of every account (the active one too: a full read
    /// tells which windows it still has).
    pub usage_interval_secs: u64,
    /// `active_interval_secs`, which older versions documented but never acted on: a file
    /// that still sets it loads, and the value (whatever it is) is ignored, with one log line.
    /// The active account's quota comes from the session's own stream.
    #[serde(rename = "active_interval_secs", skip_serializing)]
    legacy_active_interval: Option<serde::de::IgnoredAny>,
}

impl Default for PollingConfig {
    fn default() -> Self {
        Self {
            usage_interval_secs: 300,
            legacy_active_interval: None,
        }
    }
}

impl PollingConfig {
    pub fn usage_interval(&self) -> Duration {
        Duration::from_secs(self.usage_interval_secs.max(1))
    }
}

/// Most thresholds `[notify]` takes.
const MAX_NOTIFY_THRESHOLDS: usize = 10;
/// Longest a notification command may run, in seconds.
const MAX_NOTIFY_TIMEOUT_SECS: u64 = 300;

/// Desktop notifications: on a switch, a threshold crossed, no account left, an account reset.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NotifyConfig {
    /// How to notify; `[]` turns notifications off. `serve` has no terminal: only `command`.
    pub methods: Vec<NotifyMethod>,
    /// Percentages of the active account's tightest window that notify when crossed.
    pub thresholds: Vec<f64>,
    pub on_switch: bool,
    pub on_threshold: bool,
    pub on_no_account: bool,
    pub on_reset: bool,
    /// The program and its arguments for the `command` method, run without a shell;
    /// `{title}`, `{body}` and `{event}` in an argument are replaced.
    pub command: Vec<String>,
    /// Seconds the command may run before it is killed.
    pub command_timeout_secs: u64,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        Self {
            methods: vec![NotifyMethod::Osc9],
            thresholds: vec![80.0, 95.0],
            on_switch: true,
            on_threshold: true,
            on_no_account: true,
            on_reset: true,
            command: Vec::new(),
            command_timeout_secs: 10,
        }
    }
}

impl NotifyConfig {
    pub fn command_timeout(&self) -> Duration {
        Duration::from_secs(self.command_timeout_secs)
    }

    fn check(&self) -> Result<(), String> {
        if self.thresholds.len() > MAX_NOTIFY_THRESHOLDS {
            return Err(format!(
                "notify.thresholds: at most {MAX_NOTIFY_THRESHOLDS} thresholds"
            ));
        }
        for &value in &self.thresholds {
            if !(value.is_finite() && value > 0.0 && value <= 100.0) {
                return Err(format!(
                    "notify.thresholds: {value} must be a percentage above 0, at most 100"
                ));
            }
        }
        if self.methods.contains(&NotifyMethod::Command) && self.command.is_empty() {
            return Err(
                "notify.methods has \"command\" but notify.command is empty; \
                 e.g. command = [\"notify-send\", \"{title}\", \"{body}\"]"
                    .to_owned(),
            );
        }
        if self.command.first().is_some_and(|p| p.trim().is_empty()) {
            return Err("notify.command: the program is empty".to_owned());
        }
        if !(1..=MAX_NOTIFY_TIMEOUT_SECS).contains(&self.command_timeout_secs) {
            return Err(format!(
                "notify.command_timeout_secs = {}: must be from 1 to {MAX_NOTIFY_TIMEOUT_SECS}",
                self.command_timeout_secs
            ));
        }
        Ok(())
    }
}

/// One way to notify.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotifyMethod {
    /// `OSC 9`, a desktop notification through the outer terminal (iTerm2, WezTerm, kitty,
    /// foot, Windows Terminal, …), passed through tmux.
    Osc9,
    /// `OSC 777;notify` (urxvt, VTE terminals such as GNOME Terminal, foot).
    Osc777,
    /// The terminal's bell.
    Bell,
    /// Runs `notify.command`.
    Command,
}

/// How the sessions on one store share the accounts.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PoolConfig {
    /// Which account a new session (or an automatic switch) takes, counting the sessions
    /// already on each.
    pub placement: Placement,
}

/// How sessions are placed on accounts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Placement {
    /// Headroom divided by the sessions already there plus one: sessions spread out.
    #[default]
    Spread,
    /// Everyone on one account until it nears its limit.
    Fill,
}

/// The embedded terminal.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PaneConfig {
    /// Lines of scrollback the pane keeps (mouse wheel / Shift+PgUp scroll through them).
    pub scrollback_lines: usize,
}

impl Default for PaneConfig {
    fn default() -> Self {
        Self {
            scrollback_lines: 10_000,
        }
    }
}

/// The hotkey prefix, written like `ctrl+]`, `ctrl+a`, `ctrl+space` or `f12`.
///
/// Matched by the bytes a terminal sends for it (the key router encodes [`PrefixKey::key`]),
/// because terminals report one byte in several ways: `Ctrl+]` arrives from crossterm as `Ctrl+5`
/// (both are 0x1d).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrefixKey {
    text: String,
    key: KeyEvent,
}

impl Default for PrefixKey {
    fn default() -> Self {
        Self::parse("ctrl+]").expect("the default prefix parses")
    }
}

impl PrefixKey {
    /// Parses `ctrl+]`, `Ctrl+A`, `alt+x`, `ctrl+space`, `f1`…`f12`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let lower = text.trim().to_ascii_lowercase();
        let mut modifiers = KeyModifiers::NONE;
        let mut rest = lower.as_str();
        loop {
            if let Some(r) = rest.strip_prefix("ctrl+").or(rest.strip_prefix("c-")) {
                modifiers |= KeyModifiers::CONTROL;
                rest = r;
            } else if let Some(r) = rest.strip_prefix("alt+").or(rest.strip_prefix("m-")) {
                modifiers |= KeyModifiers::ALT;
                rest = r;
            } else {
                break;
            }
        }
        let code = match rest {
            "space" => KeyCode::Char(' '),
            "esc" | "escape" => KeyCode::Esc,
            f if f.starts_with('f') && f.len() > 1 => {
                let n: u8 = f[1..]
                    .parse()
                    .map_err(|_| format!("unknown key {text:?}"))?;
                if !(1..=12).contains(&n) {
                    return Err(format!("unknown key {text:?} (F1–F12)"));
                }
                KeyCode::F(n)
            }
            s if s.chars().count() == 1 => KeyCode::Char(s.chars().next().unwrap_or(']')),
            _ => {
                return Err(format!(
                    "unknown key {text:?}; write it like ctrl+] or ctrl+a"
                ));
            }
        };
        if modifiers.is_empty() && matches!(code, KeyCode::Char(_)) {
            return Err(format!(
                "prefix key {text:?} is a plain character, which would swallow typing; \
                 add ctrl+ or alt+"
            ));
        }
        // Every key this grammar accepts (a character, Esc, F1–F12, with Ctrl and Alt) has a
        // terminal encoding, which is what the key router compares (`app/input.rs`);
        // `properties.rs` checks that against the encoder.
        Ok(Self {
            text: text.trim().to_owned(),
            key: KeyEvent::new(code, modifiers),
        })
    }

    /// The key, for the router to encode: a key event with the same bytes is the prefix.
    pub fn key(&self) -> &KeyEvent {
        &self.key
    }

    /// As the user wrote it, for the footer and the help (`Ctrl+]`).
    pub fn label(&self) -> String {
        self.text
            .split('+')
            .map(|part| {
                let mut chars = part.chars();
                match chars.next() {
                    Some(first) if part.len() > 1 => {
                        first.to_uppercase().chain(chars).collect::<String>()
                    }
                    _ => part.to_owned(),
                }
            })
            .collect::<Vec<_>>()
            .join("+")
    }
}

impl Serialize for PrefixKey {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for PrefixKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl Config {
    /// Parses a config file's text, and checks every value is in its range.
    pub fn from_toml(text: &str) -> Result<Self, toml::de::Error> {
        let config: Self = toml::from_str(text)?;
        config
            .check_ranges()
            .map_err(<toml::de::Error as serde::de::Error>::custom)?;
        Ok(config)
    }

    /// Values the types allow but cs-tui cannot use: a threshold that is not a percentage,
    /// a size that would take the machine's memory, an interval a timer cannot hold.
    fn check_ranges(&self) -> Result<(), String> {
        for (key, value) in [
            (
                "switch.five_hour_threshold",
                self.switch.five_hour_threshold,
            ),
            ("switch.weekly_threshold", self.switch.weekly_threshold),
        ] {
            if !(value.is_finite() && (0.0..=100.0).contains(&value)) {
                return Err(format!(
                    "{key} = {value}: must be a percentage from 0 to 100"
                ));
            }
        }
        if !(1..=MAX_PANEL_WIDTH).contains(&self.panel.width) {
            return Err(format!(
                "panel.width = {}: must be from 1 to {MAX_PANEL_WIDTH} columns",
                self.panel.width
            ));
        }
        if self.pane.scrollback_lines > MAX_SCROLLBACK_LINES {
            return Err(format!(
                "pane.scrollback_lines = {}: at most {MAX_SCROLLBACK_LINES} (about 200 MB)",
                self.pane.scrollback_lines
            ));
        }
        self.notify.check()?;
        let interval = self.polling.usage_interval_secs;
        if !(1..=MAX_INTERVAL_SECS).contains(&interval) {
            return Err(format!(
                "polling.usage_interval_secs = {interval}: must be from 1 to \
                 {MAX_INTERVAL_SECS} seconds (a day)"
            ));
        }
        Ok(())
    }

    /// `<store dir>/config.toml`.
    pub fn default_path() -> Result<PathBuf> {
        Ok(crate::paths::store_dir()?.join(CONFIG_FILE))
    }

    /// Reads the config at `path`; a missing file means every default.
    pub fn load(path: &Path) -> Result<Self> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(err) => {
                return Err(err).wrap_err_with(|| format!("reading {}", path.display()));
            }
        };
        let config = Self::from_toml(&text)
            .wrap_err_with(|| format!("parsing {}", path.display()))
            .hint(
                "fix the file or delete it to use the defaults; \
                 assets/config.example.toml lists every key",
            )?;
        for key in config.ignored_keys() {
            tracing::warn!(file = %path.display(), key, "config key is no longer used; ignored");
        }
        Ok(config)
    }

    /// Keys the file sets that older versions knew and this one accepts but ignores.
    pub fn ignored_keys(&self) -> Vec<&'static str> {
        let mut keys = Vec::new();
        if self.polling.legacy_active_interval.is_some() {
            keys.push("polling.active_interval_secs");
        }
        keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_every_default() {
        let config = Config::from_toml("").unwrap();
        assert_eq!(config, Config::default());
        assert_eq!(
            *config.prefix_key.key(),
            KeyEvent::new(KeyCode::Char(']'), KeyModifiers::CONTROL)
        );
        assert_eq!(config.prefix_key.label(), "Ctrl+]");
        assert_eq!(config.panel.width, 44);
        assert_eq!(config.panel.side, PanelSide::Right);
        assert_eq!(config.switch.five_hour_threshold, 95.0);
        assert_eq!(config.switch.weekly_threshold, 98.0);
        assert!(config.switch.hidden_rerun);
        assert_eq!(config.polling.usage_interval(), Duration::from_secs(300));
        assert_eq!(config.pane.scrollback_lines, 10_000);
    }

    #[test]
    fn example_file_parses_and_equals_the_defaults() {
        let example = include_str!("../assets/config.example.toml");
        assert_eq!(Config::from_toml(example).unwrap(), Config::default());
    }

    #[test]
    fn partial_file_keeps_other_defaults() {
        let config = Config::from_toml(
            "prefix_key = \"ctrl+a\"\n[panel]\nside = \"left\"\n[switch]\nweekly_threshold = 90\n",
        )
        .unwrap();
        assert_eq!(
            *config.prefix_key.key(),
            KeyEvent::new(KeyCode::Char('a'), KeyModifiers::CONTROL)
        );
        assert_eq!(config.panel.side, PanelSide::Left);
        assert_eq!(config.panel.width, 44);
        assert_eq!(config.switch.weekly_threshold, 90.0);
        assert_eq!(config.switch.five_hour_threshold, 95.0);
    }

    #[test]
    fn the_retired_active_interval_key_still_loads_and_is_reported_as_ignored() {
        // Older versions documented `polling.active_interval_secs` and never acted on it: a
        // file that sets it, to any value the old range check allowed or not, still loads
        // with every other value as written.
        for value in ["60", "0", "18446744073709551615", "\"1m\""] {
            let text =
                format!("[polling]\nusage_interval_secs = 120\nactive_interval_secs = {value}\n");
            let config = Config::from_toml(&text).expect(&text);
            assert_eq!(config.polling.usage_interval(), Duration::from_secs(120));
            assert_eq!(config.ignored_keys(), ["polling.active_interval_secs"]);
        }
        assert!(Config::default().ignored_keys().is_empty());
        assert!(
            Config::from_toml("[polling]\nusage_interval_secs = 5")
                .unwrap()
                .ignored_keys()
                .is_empty()
        );
        // Only where it was: elsewhere it is a typo like any other.
        assert!(Config::from_toml("[switch]\nactive_interval_secs = 60").is_err());
        // And through `load`, as the dashboard, `serve` and `doctor` read it.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CONFIG_FILE);
        std::fs::write(
            &path,
            "[polling]\nactive_interval_secs = 60\n[panel]\nwidth = 50\n",
        )
        .unwrap();
        let config = Config::load(&path).unwrap();
        assert_eq!(config.panel.width, 50);
        assert_eq!(config.ignored_keys(), ["polling.active_interval_secs"]);
    }

    #[test]
    fn typos_and_bad_keys_are_errors() {
        assert!(Config::from_toml("prefix = \"ctrl+a\"").is_err());
        assert!(Config::from_toml("[panel]\nwidht = 3").is_err());
        assert!(Config::from_toml("prefix_key = \"a\"").is_err());
        assert!(Config::from_toml("prefix_key = \"ctrl+banana\"").is_err());
        assert!(Config::from_toml("[panel]\nside = \"top\"").is_err());
    }

    #[test]
    fn values_out_of_range_are_errors_that_name_the_key() {
        let table = [
            (
                "[switch]\nfive_hour_threshold = nan",
                "switch.five_hour_threshold",
            ),
            (
                "[switch]\nfive_hour_threshold = inf",
                "switch.five_hour_threshold",
            ),
            ("[switch]\nweekly_threshold = -1", "switch.weekly_threshold"),
            (
                "[switch]\nweekly_threshold = 100.5",
                "switch.weekly_threshold",
            ),
            ("[panel]\nwidth = 0", "panel.width"),
            ("[panel]\nwidth = 65535", "panel.width"),
            (
                "[pane]\nscrollback_lines = 18446744073709551615",
                "pane.scrollback_lines",
            ),
            (
                "[polling]\nusage_interval_secs = 0",
                "polling.usage_interval_secs",
            ),
        ];
        for (text, key) in table {
            let err = Config::from_toml(text).expect_err(text).to_string();
            assert!(err.contains(key), "{text}: {err}");
        }
        // The edges are fine.
        let edges = "[switch]\nfive_hour_threshold = 0\nweekly_threshold = 100\n\
                     [pane]\nscrollback_lines = 100000\n[polling]\nusage_interval_secs = 86400\n";
        Config::from_toml(edges).unwrap();
        // Integers that do not fit the type are parse errors, not panics.
        assert!(Config::from_toml("[panel]\nwidth = 70000").is_err());
        assert!(Config::from_toml("[pane]\nscrollback_lines = -1").is_err());
    }

    #[test]
    fn notify_section_defaults_and_checks() {
        let config = Config::default().notify;
        assert_eq!(config.methods, [NotifyMethod::Osc9]);
        assert_eq!(config.thresholds, [80.0, 95.0]);
        assert!(config.on_switch && config.on_threshold && config.on_no_account && config.on_reset);
        assert_eq!(config.command_timeout(), Duration::from_secs(10));
        let set = Config::from_toml(
            "[notify]\nmethods = [\"osc777\", \"bell\", \"command\"]\nthresholds = [50, 99.5]\n\
             on_reset = false\ncommand = [\"notify-send\", \"{title}\", \"{body}\"]\n\
             command_timeout_secs = 3\n",
        )
        .unwrap()
        .notify;
        assert_eq!(
            set.methods,
            [
                NotifyMethod::Osc777,
                NotifyMethod::Bell,
                NotifyMethod::Command
            ]
        );
        assert_eq!(set.thresholds, [50.0, 99.5]);
        assert!(!set.on_reset && set.on_switch);
        assert_eq!(set.command, ["notify-send", "{title}", "{body}"]);
        // Off entirely.
        assert!(
            Config::from_toml("[notify]\nmethods = []")
                .unwrap()
                .notify
                .methods
                .is_empty()
        );
        let bad = [
            ("[notify]\nmethods = [\"popup\"]", "popup"),
            ("[notify]\nthresholds = [0]", "notify.thresholds"),
            ("[notify]\nthresholds = [101]", "notify.thresholds"),
            ("[notify]\nthresholds = [nan]", "notify.thresholds"),
            (
                "[notify]\nthresholds = [1,2,3,4,5,6,7,8,9,10,11]",
                "notify.thresholds",
            ),
            ("[notify]\nmethods = [\"command\"]", "notify.command"),
            ("[notify]\ncommand = [\"\"]", "notify.command"),
            (
                "[notify]\ncommand_timeout_secs = 0",
                "notify.command_timeout_secs",
            ),
            (
                "[notify]\ncommand_timeout_secs = 301",
                "notify.command_timeout_secs",
            ),
            ("[notify]\non_swtich = true", "on_swtich"),
        ];
        for (text, needle) in bad {
            let err = Config::from_toml(text).expect_err(text).to_string();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }

    #[test]
    fn missing_file_is_default_and_bad_file_names_itself() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CONFIG_FILE);
        assert_eq!(Config::load(&path).unwrap(), Config::default());
        std::fs::write(&path, "[panel]\nwidth = \"wide\"").unwrap();
        let err = crate::errors::render_error(&Config::load(&path).unwrap_err());
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(err.contains("hint:"), "{err}");
    }
}
