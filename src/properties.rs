//! Property tests over the parsers that take outside input: the method sniffer, the usage and
//! rate-limit parsers, config, argv, key and paste encoding. Each property holds for any
//! input, and none panics. The relay's handshake and frame parser are fuzzed through a real
//! relay in `tests/e2e/fuzz_relay.rs`.
//!
//! Cases per property: 64 in the normal run (well under a second each); `CS_TUI_FUZZ_CASES`
//! raises it (`scripts/fuzz`).

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::Path;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers, MediaKeyCode, ModifierKeyCode};
use proptest::prelude::*;
use serde_json::{Value, json};

use crate::app::launcher::{codex_command_args, validate_codex_args};
use crate::config::{Config, PrefixKey};
use crate::pace;
use crate::proxy::rpc::{self, Envelope, RateLimitsUpdatedParams};
use crate::pty::keys::{KeyModes, encode_key, encode_paste, wheel};
use crate::quota::RateLimitWindow;

fn cases() -> u32 {
    std::env::var("CS_TUI_FUZZ_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(64)
}

/// Numbers a backend should never send, and ordinary ones.
fn wild_i64() -> impl Strategy<Value = i64> {
    prop_oneof![
        Just(i64::MAX),
        Just(i64::MIN),
        Just(0),
        Just(-1),
        -100_000i64..100_000_000_000,
        any::<i64>(),
    ]
}

fn wild_f64() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(f64::MAX),
        Just(f64::MIN),
        Just(-0.0),
        -1000.0..1000.0f64,
        any::<f64>().prop_filter("JSON has no NaN or infinity", |f| f.is_finite()),
    ]
}

/// What the panel does with a window: none of it may panic.
fn use_window(window: &RateLimitWindow, now: i64) {
    let _ = window.kind();
    let _ = window.headroom();
    let _ = window.is_exhausted();
    let _ = pace::pace(window, now);
    let _ = pace::time_to_exhaustion(window, None, now);
    let _ = pace::time_to_exhaustion(window, Some(0.0), now);
    let _ = pace::time_to_exhaustion(window, Some(f64::MIN_POSITIVE), now);
    if let Some(reset) = window.resets_at {
        let _ = pace::format_duration(reset.saturating_sub(now));
    }
}

fn key_code() -> impl Strategy<Value = KeyCode> {
    prop_oneof![
        any::<char>().prop_map(KeyCode::Char),
        any::<u8>().prop_map(KeyCode::F),
        Just(KeyCode::Enter),
        Just(KeyCode::Backspace),
        Just(KeyCode::Tab),
        Just(KeyCode::BackTab),
        Just(KeyCode::Esc),
        Just(KeyCode::Up),
        Just(KeyCode::Down),
        Just(KeyCode::Left),
        Just(KeyCode::Right),
        Just(KeyCode::Home),
        Just(KeyCode::End),
        Just(KeyCode::PageUp),
        Just(KeyCode::PageDown),
        Just(KeyCode::Insert),
        Just(KeyCode::Delete),
        Just(KeyCode::Null),
        Just(KeyCode::CapsLock),
        Just(KeyCode::Menu),
        Just(KeyCode::Media(MediaKeyCode::Play)),
        Just(KeyCode::Modifier(ModifierKeyCode::LeftShift)),
    ]
}

/// Arguments as a shell could pass them: flags, words, non-ASCII, bytes that are not UTF-8.
fn arg() -> impl Strategy<Value = OsString> {
    prop_oneof![
        prop::sample::select(vec![
            "-",
            "--",
            "-m",
            "-C",
            "--cd",
            "--remote",
            "-é",
            "-😀x",
            "--=",
            "--cd=",
            "resume",
            "exec",
            "fork",
            "-h",
            "accounts",
            "status",
            "--timeout",
            "serve",
            "switch",
            "--json",
            "-V",
            "--version",
            "--codex-bin",
            "completions",
            "bash",
            "man",
            "--dir",
        ])
        .prop_map(OsString::from),
        "-{0,2}\\PC{0,12}".prop_map(OsString::from),
        prop::collection::vec(any::<u8>(), 0..12).prop_map(OsString::from_vec),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    // ---- the method sniffer ----

    #[test]
    fn the_sniffer_takes_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let _ = rpc::method_candidates(&bytes).count();
        let lead = rpc::lead(&bytes);
        let _ = lead.may_be_own_response(&bytes);
        let _ = rpc::sniff_own_id_bytes(&bytes);
        if let Ok(text) = std::str::from_utf8(&bytes) {
            let _ = rpc::sniff_method(text, &["turn/completed", "error"]);
            let _ = Envelope::parse(text);
        }
    }

    /// No false negative: a message whose top-level method is watched is always found,
    /// whatever else it holds (decoy `"method"` keys in strings and nested objects included).
    #[test]
    fn the_sniffer_never_misses_a_top_level_method(
        method in "[a-zA-Z_/]{1,30}",
        decoy in "\\PC{0,40}",
        id in prop::option::of(any::<i64>()),
        nested_first in any::<bool>(),
    ) {
        let mut message = serde_json::Map::new();
        if nested_first {
            message.insert("params".into(), json!({"method": decoy, "text": format!("\"method\":\"{decoy}\"")}));
        }
        message.insert("method".into(), json!(method));
        if let Some(id) = id {
            message.insert("id".into(), json!(id));
        }
        if !nested_first {
            message.insert("params".into(), json!({"method": decoy}));
        }
        let text = Value::Object(message).to_string();
        prop_assert_eq!(rpc::sniff_method(&text, &[method.as_str()]), Some(method.as_str()));
        prop_assert_eq!(Envelope::parse(&text).and_then(|e| e.method), Some(method.as_str()));
    }

    // ---- the usage and rate-limit parsers ----

    #[test]
    fn the_usage_parser_takes_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let _ = crate::accounts::usage::parse_usage(&bytes, chrono::Utc::now());
    }

    #[test]
    fn the_usage_parser_takes_any_numbers(
        used in wild_f64(), seconds in wild_i64(), after in wild_i64(), at in wild_i64(),
        now in -10_000_000_000i64..10_000_000_000,
    ) {
        let body = json!({"plan_type": "plus", "rate_limit": {
            "primary_window": {"used_percent": used, "limit_window_seconds": seconds,
                               "reset_after_seconds": after},
            "secondary_window": {"used_percent": used, "limit_window_seconds": seconds,
                                 "reset_at": at},
        }, "credits": {"has_credits": true, "balance": used}});
        let now_utc = chrono::DateTime::from_timestamp(now, 0).unwrap();
        let report = crate::accounts::usage::parse_usage(body.to_string().as_bytes(), now_utc);
        let report = report.map_err(TestCaseError::fail)?;
        for window in report.snapshot.windows() {
            prop_assert!((0.0..=100.0).contains(&window.headroom()));
            use_window(window, now);
            use_window(window, i64::MAX);
            use_window(window, i64::MIN);
        }
        let _ = report.snapshot.available_again_at();
        let _ = report.snapshot.is_exhausted();
    }

    #[test]
    fn the_rate_limit_parser_takes_any_numbers(
        used in wild_f64(), mins in any::<i64>(), resets in wild_i64(), now in wild_i64(),
    ) {
        let params = json!({"rateLimits": {
            "primary": {"usedPercent": used, "windowDurationMins": mins, "resetsAt": resets},
            "secondary": {"usedPercent": used, "resetsAt": resets},
        }});
        // Numbers out of a field's range are a parse error, never a panic.
        if let Ok(parsed) = serde_json::from_value::<RateLimitsUpdatedParams>(params) {
            let mut merged = parsed.rate_limits.clone();
            merged.merge(&parsed.rate_limits);
            for window in merged.windows() {
                use_window(window, now);
            }
            let _ = merged.available_again_at();
        }
    }

    // ---- config ----

    #[test]
    fn any_config_text_parses_or_is_an_error(text in "\\PC{0,200}") {
        let _ = Config::from_toml(&text);
    }

    #[test]
    fn config_numbers_are_accepted_exactly_in_range(
        threshold in wild_f64(), width in any::<u16>(), lines in any::<u32>(), secs in any::<u32>(),
    ) {
        let text = format!(
            "[switch]\nfive_hour_threshold = {threshold:?}\n[panel]\nwidth = {width}\n\
             [pane]\nscrollback_lines = {lines}\n[polling]\nusage_interval_secs = {secs}\n"
        );
        let in_range = (0.0..=100.0).contains(&threshold)
            && (1..=crate::config::MAX_PANEL_WIDTH).contains(&width)
            && (lines as usize) <= crate::config::MAX_SCROLLBACK_LINES
            && (1..=crate::config::MAX_INTERVAL_SECS).contains(&u64::from(secs));
        prop_assert_eq!(Config::from_toml(&text).is_ok(), in_range, "{}", text);
    }

    #[test]
    fn any_prefix_key_parses_or_is_an_error(text in "((ctrl|alt|c|m)[+-]){0,3}\\PC{0,6}") {
        if let Ok(prefix) = PrefixKey::parse(&text) {
            prop_assert!(crate::pty::keys::encode_key(prefix.key(), Default::default()).is_some());
            let _ = prefix.label();
        }
    }

    // ---- argv ----

    #[test]
    fn any_argv_parses_or_is_an_error(args in prop::collection::vec(arg(), 0..6)) {
        use clap::Parser as _;
        let mut argv = vec![OsString::from("cs-tui")];
        argv.extend(args.iter().cloned());
        let _ = crate::cli::Cli::try_parse_from(&argv);
        let _ = validate_codex_args(&args);
        if let Ok(out) = codex_command_args(&args, Path::new("/w"), None) {
            // The user's arguments all go to Codex, in order.
            let mut rest = out.iter();
            for a in &args {
                prop_assert!(rest.any(|o| o == a), "{:?} lost from {:?}", a, out);
            }
        }
    }

    // ---- key and paste encoding ----

    #[test]
    fn any_key_encodes_or_is_dropped(
        code in key_code(), bits in any::<u8>(), application_cursor in any::<bool>(),
    ) {
        let key = KeyEvent::new(code, KeyModifiers::from_bits_truncate(bits));
        if let Some(bytes) = encode_key(&key, KeyModes { application_cursor }) {
            prop_assert!(!bytes.is_empty());
        }
        let _ = wheel(bits & 1 == 0, bits & 2 == 0, KeyModes { application_cursor });
    }

    /// A bracketed paste is one paste: nothing inside can end it or start a sequence.
    #[test]
    fn a_bracketed_paste_cannot_escape_its_brackets(text in "\\PC{0,60}|[\\x1b\\[201~a-z\n]{0,60}") {
        let out = encode_paste(&text, true);
        let inner = &out[6..out.len() - 6];
        prop_assert!(out.starts_with(b"\x1b[200~") && out.ends_with(b"\x1b[201~"));
        prop_assert!(!inner.contains(&0x1b));
        let plain = encode_paste(&text, false);
        prop_assert!(!plain.contains(&b'\n'));
    }
}
