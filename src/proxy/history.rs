//! The switch history: one JSON line per switch in `<store>/switch-history.jsonl`.

use std::io::Write as _;
use std::path::Path;

use chrono::{DateTime, Utc};
use color_eyre::eyre::{Result, WrapErr};
use serde::{Deserialize, Serialize};

use crate::proxy::events::{AccountRef, SwitchReason};
use crate::quota::RateLimitSnapshot;

pub const HISTORY_FILE: &str = "switch-history.jsonl";

/// The numbers behind a switch decision, for one account.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct UsageNumbers {
    pub five_hour_percent: Option<f64>,
    pub five_hour_resets_at: Option<i64>,
    pub weekly_percent: Option<f64>,
    pub weekly_resets_at: Option<i64>,
}

impl UsageNumbers {
    pub fn from_snapshot(snapshot: &RateLimitSnapshot) -> Self {
        Self {
            five_hour_percent: snapshot.five_hour().map(|w| w.used_percent),
            five_hour_resets_at: snapshot.five_hour().and_then(|w| w.resets_at),
            weekly_percent: snapshot.weekly().map(|w| w.used_percent),
            weekly_resets_at: snapshot.weekly().and_then(|w| w.resets_at),
        }
    }
}

/// One switch: a line of the history file, and an entry of the dashboard's switch log (which
/// also lists switches that failed).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SwitchRecord {
    pub at: DateTime<Utc>,
    pub from: Option<AccountRef>,
    pub to: AccountRef,
    pub reason: SwitchReason,
    pub from_usage: Option<UsageNumbers>,
    pub to_usage: Option<UsageNumbers>,
    pub elapsed_ms: u64,
    /// `None` when it worked, else the error. Only the dashboard holds failed switches; the
    /// file's lines (all switches that happened) have no such field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Appends a record (the file is created 0600).
pub fn append(path: &Path, record: &SwitchRecord) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut line = serde_json::to_string(record).wrap_err("serializing a switch record")?;
    line.push('\n');
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .wrap_err_with(|| format!("opening {}", path.display()))?;
    // One write of a whole line: O_APPEND keeps concurrent sessions' lines intact.
    file.write_all(line.as_bytes())
        .wrap_err_with(|| format!("appending to {}", path.display()))
}

/// The last `n` records; lines that do not parse are skipped.
pub fn read_recent(path: &Path, n: usize) -> Vec<SwitchRecord> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut records: Vec<SwitchRecord> = text
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    let start = records.len().saturating_sub(n);
    records.drain(..start);
    records
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::account_id::AccountId;

    #[test]
    fn appends_and_reads_back_skipping_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(HISTORY_FILE);
        for i in 0..3 {
            append(
                &path,
                &SwitchRecord {
                    at: Utc::now(),
                    from: None,
                    to: AccountRef {
                        id: AccountId::new(format!("id{i}")),
                        name: format!("n{i}"),
                    },
                    reason: SwitchReason::Manual,
                    from_usage: None,
                    to_usage: Some(UsageNumbers::default()),
                    elapsed_ms: i,
                    error: None,
                },
            )
            .unwrap();
        }
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{broken\n")
            .unwrap();
        let recent = read_recent(&path, 2);
        assert_eq!(recent.len(), 2);
        assert_eq!(recent[1].to.id, "id2");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn lines_written_before_the_record_was_shared_still_read_and_write_the_same() {
        let old = r#"{"at":"2026-11-30T10:00:00Z","from":{"id":"a1","name":"alice"},"to":{"id":"b2","name":"bob"},"reason":{"kind":"soft_threshold","window":"5-hour","used_percent":96.0,"threshold":95.0},"from_usage":{"five_hour_percent":96.0,"five_hour_resets_at":1800000000,"weekly_percent":40.0,"weekly_resets_at":null},"to_usage":null,"elapsed_ms":812}"#;
        let record: SwitchRecord = serde_json::from_str(old).unwrap();
        assert_eq!(record.to.name, "bob");
        assert_eq!(record.error, None);
        assert_eq!(
            serde_json::to_string(&record).unwrap(),
            old,
            "byte-compatible"
        );
    }
}
