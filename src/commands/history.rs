//! `cs-tui history`: the turns of the ledger and the switches of the switch history, with each
//! account's totals.

use std::collections::BTreeMap;
use std::process::ExitCode;

use chrono::{DateTime, Utc};
use color_eyre::eyre::{Result, WrapErr};
use serde::Serialize;

use super::Env;
use super::output::{emit, emit_json, table, yes_no};
use crate::cli::HistoryArgs;
use crate::proxy::events::AccountRef;
use crate::proxy::history::{HISTORY_FILE, SwitchRecord};
use crate::proxy::ledger::{self, Lines, TurnRecord};

/// One account's totals: `turns` counts the user's turns, `title_turns` the TUI's title
/// generation; the tokens are every turn's.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub(super) struct Totals {
    pub account: String,
    pub id: String,
    pub turns: u64,
    pub title_turns: u64,
    pub input_tokens: u64,
    pub cached_input_tokens: u64,
    pub output_tokens: u64,
    pub reruns: u64,
    pub switches_away: u64,
}

#[derive(Debug, Serialize)]
pub(super) struct HistoryJson {
    pub turns: Vec<TurnRecord>,
    pub switches: Vec<SwitchRecord>,
    pub totals: Vec<Totals>,
    /// Lines of the ledger and the switch history that did not parse.
    pub skipped_lines: usize,
}

/// Where `--since DURATION` starts. A duration reaching back beyond what a date can hold
/// (`--since 99999999999d`) means everything.
fn since_cutoff(now: DateTime<Utc>, since: std::time::Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(since)
        .ok()
        .and_then(|back| now.checked_sub_signed(back))
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

pub(super) fn run(env: &Env, args: HistoryArgs) -> Result<ExitCode> {
    let since = args.since.map(|d| since_cutoff(Utc::now(), d));
    let history = read(env.store_dir()?, since, args.account.as_deref())?;
    if history.skipped_lines > 0 {
        eprintln!(
            "cs-tui: skipped {} line(s) that did not parse in {} or {}",
            history.skipped_lines,
            ledger::LEDGER_FILE,
            HISTORY_FILE
        );
    }
    if args.json {
        emit_json(&history)?;
    } else if args.csv {
        emit(&to_csv(&history)?)?;
    } else {
        emit(&render(&history))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The store's turns and switches since `since`, of `account` if given, with the totals.
pub(super) fn read(
    store_dir: &std::path::Path,
    since: Option<DateTime<Utc>>,
    account: Option<&str>,
) -> Result<HistoryJson> {
    let turns = ledger::read_all(store_dir)?;
    let mut switches = Lines::default();
    ledger::read_lines(&store_dir.join(HISTORY_FILE), &mut switches)?;
    Ok(select(turns, switches, since, account))
}

fn matches(account: Option<&AccountRef>, wanted: &str) -> bool {
    account.is_some_and(|a| a.name.eq_ignore_ascii_case(wanted) || a.id == wanted)
}

/// Filters by time and account and adds up each account's totals.
pub(super) fn select(
    turns: Lines<TurnRecord>,
    switches: Lines<SwitchRecord>,
    since: Option<DateTime<Utc>>,
    account: Option<&str>,
) -> HistoryJson {
    let after = |at: DateTime<Utc>| since.is_none_or(|s| at >= s);
    let turn_list: Vec<TurnRecord> = turns
        .records
        .into_iter()
        .filter(|t| after(t.at) && account.is_none_or(|a| matches(t.account.as_ref(), a)))
        .collect();
    let switch_list: Vec<SwitchRecord> = switches
        .records
        .into_iter()
        .filter(|s| {
            after(s.at)
                && account.is_none_or(|a| matches(s.from.as_ref(), a) || matches(Some(&s.to), a))
        })
        .collect();
    let mut totals: BTreeMap<String, Totals> = BTreeMap::new();
    for turn in &turn_list {
        let Some(a) = &turn.account else { continue };
        let t = totals.entry(a.id.to_string()).or_insert_with(|| Totals {
            account: a.name.clone(),
            id: a.id.to_string(),
            ..Totals::default()
        });
        if turn.purpose.is_title() {
            t.title_turns += 1;
        } else {
            t.turns += 1;
        }
        t.input_tokens += turn.input_tokens;
        t.cached_input_tokens += turn.cached_input_tokens;
        t.output_tokens += turn.output_tokens;
        t.reruns += u64::from(turn.rerun);
    }
    for switch in &switch_list {
        let Some(a) = &switch.from else { continue };
        if account.is_some_and(|wanted| !matches(Some(a), wanted)) {
            continue;
        }
        let t = totals.entry(a.id.to_string()).or_insert_with(|| Totals {
            account: a.name.clone(),
            id: a.id.to_string(),
            ..Totals::default()
        });
        t.switches_away += 1;
    }
    let mut totals: Vec<Totals> = totals.into_values().collect();
    totals.sort_by(|a, b| a.account.cmp(&b.account).then(a.id.cmp(&b.id)));
    HistoryJson {
        turns: turn_list,
        switches: switch_list,
        totals,
        skipped_lines: turns.skipped + switches.skipped,
    }
}

fn name(account: Option<&AccountRef>) -> String {
    account.map_or_else(|| "-".to_owned(), |a| a.name.clone())
}

fn time(at: DateTime<Utc>) -> String {
    at.with_timezone(&chrono::Local)
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

/// The session id's first eight characters, as `cs-tui sessions` shows them.
fn short(session: &str) -> String {
    session.chars().take(8).collect()
}

/// The STATUS cell: how the turn ended, and `(title)` for the TUI's title generation.
fn status(turn: &TurnRecord) -> String {
    let ended = turn.status.as_deref().unwrap_or("-");
    if turn.purpose.is_title() {
        format!("{ended} (title)")
    } else {
        ended.to_owned()
    }
}

pub(super) fn render(history: &HistoryJson) -> String {
    let mut text = String::new();
    if history.turns.is_empty() {
        text.push_str("No turns recorded.\n");
    } else {
        let rows = history
            .turns
            .iter()
            .map(|t| {
                vec![
                    time(t.at),
                    short(&t.session),
                    name(t.account.as_ref()),
                    t.model.clone().unwrap_or_else(|| "-".to_owned()),
                    t.input_tokens.to_string(),
                    t.cached_input_tokens.to_string(),
                    t.output_tokens.to_string(),
                    format!("{:.1}s", t.duration_ms as f64 / 1000.0),
                    yes_no(t.rerun),
                    status(t),
                ]
            })
            .collect();
        text.push_str(&table(
            &[
                "TIME", "SESSION", "ACCOUNT", "MODEL", "IN", "CACHED", "OUT", "TOOK", "RE-RUN",
                "STATUS",
            ],
            rows,
        ));
    }
    text.push('\n');
    if history.switches.is_empty() {
        text.push_str("No switches recorded.\n");
    } else {
        let rows = history
            .switches
            .iter()
            .map(|s| {
                vec![
                    time(s.at),
                    name(s.from.as_ref()),
                    s.to.name.clone(),
                    s.reason.describe(),
                ]
            })
            .collect();
        text.push_str(&table(&["TIME", "FROM", "TO", "REASON"], rows));
    }
    if !history.totals.is_empty() {
        text.push('\n');
        let rows = history
            .totals
            .iter()
            .map(|t| {
                vec![
                    t.account.clone(),
                    t.turns.to_string(),
                    t.title_turns.to_string(),
                    t.input_tokens.to_string(),
                    t.cached_input_tokens.to_string(),
                    t.output_tokens.to_string(),
                    t.reruns.to_string(),
                    t.switches_away.to_string(),
                ]
            })
            .collect();
        text.push_str(&table(
            &[
                "ACCOUNT",
                "TURNS",
                "TITLE TURNS",
                "IN",
                "CACHED",
                "OUT",
                "RE-RUNS",
                "SWITCHES AWAY",
            ],
            rows,
        ));
    }
    text
}

/// The CSV columns. New ones go at the end, so a column keeps its position.
const CSV_HEADER: [&str; 19] = [
    "kind",
    "at",
    "session",
    "account",
    "account_id",
    "model",
    "input_tokens",
    "cached_input_tokens",
    "output_tokens",
    "duration_ms",
    "rerun",
    "status",
    "to_account",
    "reason",
    "turns",
    "reruns",
    "switches_away",
    "purpose",
    "title_turns",
];

/// One CSV table: a row per turn (`kind` `turn`), per switch (`switch`: `account` is the one
/// left, `to_account` the one taken) and per account's totals (`total`: `turns` the user's,
/// `title_turns` the TUI's title generation).
fn to_csv(history: &HistoryJson) -> Result<String> {
    let mut out = csv::Writer::from_writer(Vec::new());
    out.write_record(CSV_HEADER)?;
    let id = |a: Option<&AccountRef>| a.map(|a| a.id.to_string()).unwrap_or_default();
    let account = |a: Option<&AccountRef>| a.map(|a| a.name.clone()).unwrap_or_default();
    for t in &history.turns {
        out.write_record([
            "turn".to_owned(),
            t.at.to_rfc3339(),
            t.session.clone(),
            account(t.account.as_ref()),
            id(t.account.as_ref()),
            t.model.clone().unwrap_or_default(),
            t.input_tokens.to_string(),
            t.cached_input_tokens.to_string(),
            t.output_tokens.to_string(),
            t.duration_ms.to_string(),
            t.rerun.to_string(),
            t.status.clone().unwrap_or_default(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            t.purpose.as_str().to_owned(),
            String::new(),
        ])?;
    }
    for s in &history.switches {
        out.write_record([
            "switch".to_owned(),
            s.at.to_rfc3339(),
            String::new(),
            account(s.from.as_ref()),
            id(s.from.as_ref()),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            s.elapsed_ms.to_string(),
            String::new(),
            String::new(),
            s.to.name.clone(),
            s.reason.describe(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
        ])?;
    }
    for t in &history.totals {
        out.write_record([
            "total".to_owned(),
            String::new(),
            String::new(),
            t.account.clone(),
            t.id.clone(),
            String::new(),
            t.input_tokens.to_string(),
            t.cached_input_tokens.to_string(),
            t.output_tokens.to_string(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            t.turns.to_string(),
            t.reruns.to_string(),
            t.switches_away.to_string(),
            String::new(),
            t.title_turns.to_string(),
        ])?;
    }
    let bytes = out.into_inner().wrap_err("writing CSV")?;
    String::from_utf8(bytes).wrap_err("CSV is not UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::account_id::AccountId;
    use crate::proxy::events::SwitchReason;
    use crate::proxy::rpc::TurnPurpose;

    fn who(name: &str) -> AccountRef {
        AccountRef {
            id: AccountId::new(format!("id-{name}")),
            name: name.to_owned(),
        }
    }

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    fn turn(name: &str, secs: i64, tokens: u64, rerun: bool) -> TurnRecord {
        TurnRecord {
            at: at(secs),
            session: "s".into(),
            account: Some(who(name)),
            model: None,
            thread_id: "t".into(),
            turn_id: "u".into(),
            input_tokens: tokens,
            cached_input_tokens: 1,
            output_tokens: 2,
            duration_ms: 3,
            rerun,
            status: None,
            purpose: TurnPurpose::User,
        }
    }

    fn title_turn(name: &str, secs: i64, tokens: u64) -> TurnRecord {
        TurnRecord {
            thread_id: "title-thread".into(),
            status: Some("completed".into()),
            purpose: TurnPurpose::Title,
            ..turn(name, secs, tokens, false)
        }
    }

    fn switch(from: &str, to: &str, secs: i64) -> SwitchRecord {
        SwitchRecord {
            at: at(secs),
            from: Some(who(from)),
            to: who(to),
            reason: SwitchReason::UsageLimit,
            from_usage: None,
            to_usage: None,
            elapsed_ms: 9,
            error: None,
        }
    }

    fn input() -> (Lines<TurnRecord>, Lines<SwitchRecord>) {
        (
            Lines {
                records: vec![
                    turn("alice", 0, 10, false),
                    turn("alice", 100, 20, false),
                    turn("bob", 200, 40, true),
                ],
                skipped: 2,
            },
            Lines {
                records: vec![switch("alice", "bob", 150)],
                skipped: 1,
            },
        )
    }

    #[test]
    fn totals_per_account_with_reruns_and_switches_away() {
        let (turns, switches) = input();
        let h = select(turns, switches, None, None);
        assert_eq!(h.skipped_lines, 3);
        assert_eq!(h.totals.len(), 2);
        let alice = &h.totals[0];
        assert_eq!(
            (
                alice.account.as_str(),
                alice.turns,
                alice.input_tokens,
                alice.cached_input_tokens
            ),
            ("alice", 2, 30, 2)
        );
        assert_eq!((alice.reruns, alice.switches_away), (0, 1));
        let bob = &h.totals[1];
        assert_eq!(
            (bob.turns, bob.input_tokens, bob.reruns, bob.switches_away),
            (1, 40, 1, 0)
        );
        let csv = to_csv(&h).unwrap();
        assert_eq!(csv.lines().count(), 1 + 3 + 1 + 2, "{csv}");
        assert!(
            csv.contains("total,,,alice,id-alice,,30,2,4,,,,,,2,0,1"),
            "{csv}"
        );
    }

    #[test]
    fn since_and_account_filter_turns_switches_and_totals() {
        let (turns, switches) = input();
        let h = select(turns, switches, Some(at(100)), Some("ALICE"));
        assert_eq!(h.turns.len(), 1);
        assert_eq!(h.turns[0].input_tokens, 20);
        assert_eq!(h.switches.len(), 1);
        assert_eq!(
            h.totals.len(),
            1,
            "bob, the switch's other end, has no totals row"
        );
        assert_eq!((h.totals[0].turns, h.totals[0].switches_away), (1, 1));
        let (turns, switches) = input();
        let h = select(turns, switches, None, Some("id-bob"));
        assert_eq!(h.turns.len(), 1);
        assert_eq!(h.switches.len(), 1, "the switch to bob");
        assert_eq!(h.totals.len(), 1);
        assert_eq!(h.totals[0].switches_away, 0);
    }

    /// A title turn's tokens count in its account's totals; the turn itself counts as a title
    /// turn, not as one of the user's.
    #[test]
    fn title_turns_are_counted_apart_and_their_tokens_with_the_rest() {
        let (mut turns, switches) = input();
        turns.records.insert(1, title_turn("alice", 1, 5));
        let h = select(turns, switches, None, None);
        let alice = &h.totals[0];
        assert_eq!(
            (alice.turns, alice.title_turns, alice.input_tokens),
            (2, 1, 35)
        );
        assert_eq!((h.totals[1].turns, h.totals[1].title_turns), (1, 0));
        let json = serde_json::to_value(&h).unwrap();
        assert_eq!(json["turns"][1]["purpose"], "title");
        assert_eq!(json["turns"][0]["purpose"], "user");
        assert_eq!(json["totals"][0]["title_turns"], 1);
        assert_eq!(json["totals"][0]["turns"], 2);

        let text = render(&h);
        let rows: Vec<&str> = text.lines().collect();
        assert!(rows[0].contains("STATUS"), "{text}");
        assert!(rows[2].ends_with("completed (title)"), "{text}");
        assert!(
            !rows[1].contains("title") && !rows[3].contains("title"),
            "{text}"
        );
        let totals = text
            .lines()
            .skip_while(|l| !l.starts_with("ACCOUNT"))
            .collect::<Vec<_>>();
        assert!(
            totals[0].starts_with("ACCOUNT  TURNS  TITLE TURNS  IN"),
            "{text}"
        );
        assert!(
            totals[1].starts_with("alice    2      1            35"),
            "{text}"
        );
    }

    /// The CSV keeps every column where it was and adds `purpose` (turn rows) and
    /// `title_turns` (total rows) at the end.
    #[test]
    fn csv_appends_purpose_and_title_turns_after_the_old_columns() {
        let (mut turns, switches) = input();
        turns.records.insert(1, title_turn("alice", 1, 5));
        let csv = to_csv(&select(turns, switches, None, None)).unwrap();
        let mut reader = csv::Reader::from_reader(csv.as_bytes());
        let header: Vec<String> = reader
            .headers()
            .unwrap()
            .iter()
            .map(str::to_owned)
            .collect();
        assert_eq!(
            header.join(","),
            "kind,at,session,account,account_id,model,input_tokens,cached_input_tokens,\
             output_tokens,duration_ms,rerun,status,to_account,reason,turns,reruns,\
             switches_away,purpose,title_turns"
        );
        let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
        let kinds_and_purposes: Vec<(&str, &str, &str)> =
            rows.iter().map(|r| (&r[0], &r[17], &r[18])).collect();
        assert_eq!(
            kinds_and_purposes,
            [
                ("turn", "user", ""),
                ("turn", "title", ""),
                ("turn", "user", ""),
                ("turn", "user", ""),
                ("switch", "", ""),
                ("total", "", "1"),
                ("total", "", "0"),
            ]
        );
        // The old columns of alice's totals row: user turns in `turns`, every turn's tokens.
        assert_eq!(
            rows[5].iter().take(17).collect::<Vec<_>>().join(","),
            "total,,,alice,id-alice,,35,3,6,,,,,,2,0,1"
        );
    }

    #[test]
    fn since_reaching_back_beyond_any_date_means_everything() {
        let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let hour = std::time::Duration::from_secs(3600);
        assert_eq!(since_cutoff(now, hour).timestamp(), 1_800_000_000 - 3600);
        for huge in [
            std::time::Duration::from_secs(99_999_999_999 * 86_400),
            std::time::Duration::MAX,
        ] {
            assert_eq!(since_cutoff(now, huge), DateTime::<Utc>::MIN_UTC);
        }
    }
}
