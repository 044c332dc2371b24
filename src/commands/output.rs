//! What the commands print: stdout that tolerates a closed pipe, aligned tables, relative times.

use std::io::{BufRead as _, IsTerminal as _, Write as _};

use chrono::{DateTime, Utc};
use color_eyre::eyre::{Result, WrapErr, eyre};
use serde::Serialize;

use crate::accounts::{Account, AccountsFile};
use crate::errors::with_hint;

/// Writes to stdout; a closed pipe (`| head`) is not an error.
pub(super) fn emit(text: &str) -> Result<()> {
    emit_bytes(text.as_bytes())
}

/// [`emit`] for bytes (a generated script or manual page).
pub(super) fn emit_bytes(bytes: &[u8]) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.wrap_err("writing to stdout"),
    }
}

pub(super) fn emit_json(value: &impl Serialize) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value).wrap_err("formatting JSON")?;
    text.push('\n');
    emit(&text)
}

pub(super) fn active_marker(file: &AccountsFile, account: &Account) -> String {
    if file.active.as_ref() == Some(&account.id) {
        "*".into()
    } else {
        String::new()
    }
}

pub(super) fn yes_no(value: bool) -> String {
    if value { "yes" } else { "no" }.to_owned()
}

/// An aligned table; the last column is not padded.
pub(super) fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        let last = cells.len().saturating_sub(1);
        for (i, (cell, width)) in cells.iter().zip(&widths).enumerate() {
            if *width == 0 {
                continue;
            }
            out.push_str(cell);
            if i < last {
                out.push_str(&" ".repeat(width - cell.chars().count() + 2));
            }
        }
        out.trim_end().to_owned() + "\n"
    };
    let mut text = line(headers.to_vec());
    for row in &rows {
        text.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    text
}

/// "in 2h 13m", "3d ago", "just now".
pub(super) fn relative_time(at: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let delta = at - now;
    let secs = delta.num_seconds();
    if secs.abs() < 60 {
        return if secs >= 0 { "in <1m" } else { "just now" }.to_owned();
    }
    let total_minutes = secs.unsigned_abs() / 60;
    let (days, hours, minutes) = (
        total_minutes / 1440,
        total_minutes / 60 % 24,
        total_minutes % 60,
    );
    let span = match (days, hours) {
        (0, 0) => format!("{minutes}m"),
        (0, h) if minutes == 0 => format!("{h}h"),
        (0, h) => format!("{h}h {minutes}m"),
        (d, 0) => format!("{d}d"),
        (d, h) => format!("{d}d {h}h"),
    };
    if secs > 0 {
        format!("in {span}")
    } else {
        format!("{span} ago")
    }
}

/// Asks `question` on the terminal and reads the answer: yes only for `y` or `yes`. Without a
/// terminal on stdin nothing is asked: the error says `not {doing} without confirmation` and
/// hints at `{command} --yes`.
pub(super) fn confirm(question: &str, doing: &str, command: &str) -> Result<bool> {
    if !std::io::stdin().is_terminal() {
        return Err(with_hint(
            eyre!("not {doing} without confirmation: stdin is not a terminal"),
            format!("run `{command} --yes`"),
        ));
    }
    eprint!("{question} [y/N] ");
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .wrap_err("reading the answer")?;
    Ok(matches!(
        answer.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;

    #[test]
    fn relative_times_read_naturally() {
        let now = Utc::now();
        let cases = [
            (TimeDelta::seconds(20), "in <1m"),
            (TimeDelta::seconds(-20), "just now"),
            (TimeDelta::minutes(5), "in 5m"),
            (TimeDelta::minutes(-125), "2h 5m ago"),
            (TimeDelta::hours(3), "in 3h"),
            (TimeDelta::days(3) + TimeDelta::hours(4), "in 3d 4h"),
            (TimeDelta::days(-2), "2d ago"),
        ];
        for (delta, want) in cases {
            assert_eq!(relative_time(now + delta, now), want, "{delta:?}");
        }
    }

    #[test]
    fn tables_align_and_skip_empty_columns() {
        let text = table(
            &["", "NAME", "STATE"],
            vec![
                vec!["*".into(), "alice".into(), "ok".into()],
                vec![String::new(), "bo".into(), "needs login".into()],
            ],
        );
        assert_eq!(
            text,
            "   NAME   STATE\n*  alice  ok\n   bo     needs login\n"
        );
        let no_marker = table(&["", "A"], vec![vec![String::new(), "x".into()]]);
        assert_eq!(no_marker, "A\nx\n");
    }
}
