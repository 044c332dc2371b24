//! The turn ledger: one JSON line per turn in `<store>/ledger.jsonl`, from every session on the
//! store.
//!
//! The tokens are the app-server's: each `thread/tokenUsage/updated` notification
//! (docs/protocol.md §3) carries `tokenUsage.last`, the usage of the model response just
//! finished (`inputTokens`, `cachedInputTokens`, `outputTokens`), and `tokenUsage.total`, the
//! thread's running sum. A turn's tokens are the sum of the `last`s of its notifications; one
//! whose `total` equals the thread's previous one repeats it and is not counted again.
//!
//! The file is private (0600) and each line is one `write` with `O_APPEND`, so sessions'
//! lines interleave whole. It is bounded: once it reaches [`ROTATE_BYTES`] it becomes
//! `ledger.1.jsonl` (replacing the one before) under `<store>/locks/ledger.lock`, so two
//! sessions never rotate twice.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use color_eyre::eyre::{Result, WrapErr};
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::proxy::events::AccountRef;
use crate::proxy::rpc::TurnPurpose;

pub const LEDGER_FILE: &str = "ledger.jsonl";
pub const LEDGER_ROTATED_FILE: &str = "ledger.1.jsonl";
const LOCK_FILE: &str = "ledger.lock";
/// The size at which the ledger is rotated.
pub const ROTATE_BYTES: u64 = 8 * 1024 * 1024;

/// One turn: a line of the ledger.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TurnRecord {
    /// When the turn started.
    pub at: DateTime<Utc>,
    /// The session's id (its runtime directory's name).
    pub session: String,
    /// The account the turn started on.
    pub account: Option<AccountRef>,
    pub model: Option<String>,
    pub thread_id: String,
    pub turn_id: String,
    pub input_tokens: u64,
    pub cached_input_tokens: u64,
    pub output_tokens: u64,
    pub duration_ms: u64,
    /// The turn is the hidden re-run of one that hit a usage limit.
    pub rerun: bool,
    /// `turn/completed`'s status: `completed`, `failed`, `interrupted`.
    pub status: Option<String>,
    /// What the turn was for: `user`, or `title` for the TUI's title generation. Lines written
    /// before the field existed are user turns.
    #[serde(default)]
    pub purpose: TurnPurpose,
}

/// Where a session writes its ledger lines.
#[derive(Clone, Debug)]
pub struct Ledger {
    pub path: PathBuf,
    pub lock_dir: PathBuf,
    pub rotate_bytes: u64,
}

impl Ledger {
    /// The ledger of the store in `store_dir`.
    pub fn in_store(store_dir: &Path) -> Self {
        Self {
            path: store_dir.join(LEDGER_FILE),
            lock_dir: store_dir.join("locks"),
            rotate_bytes: ROTATE_BYTES,
        }
    }

    /// Appends a record, rotating first when the file is full.
    pub fn append(&self, record: &TurnRecord) -> Result<()> {
        let mut line = serde_json::to_string(record).wrap_err("serializing a turn record")?;
        line.push('\n');
        let _lock = self.lock()?;
        let size = std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0);
        if size > 0 && size + line.len() as u64 > self.rotate_bytes {
            let rotated = self.path.with_file_name(LEDGER_ROTATED_FILE);
            std::fs::rename(&self.path, &rotated).wrap_err_with(|| {
                format!("rotating {} to {}", self.path.display(), rotated.display())
            })?;
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
            .open(&self.path)
            .wrap_err_with(|| format!("opening {}", self.path.display()))?;
        file.write_all(line.as_bytes())
            .wrap_err_with(|| format!("appending to {}", self.path.display()))
    }

    fn lock(&self) -> Result<Flock<std::fs::File>> {
        crate::paths::ensure_private_dir(&self.lock_dir)
            .wrap_err_with(|| format!("creating {}", self.lock_dir.display()))?;
        crate::paths::lock_file(&self.lock_dir.join(LOCK_FILE), FlockArg::LockExclusive)
    }
}

/// What reading a JSON-lines file found: the records, oldest first, and how many lines did
/// not parse.
#[derive(Debug)]
pub struct Lines<T> {
    pub records: Vec<T>,
    pub skipped: usize,
}

impl<T> Default for Lines<T> {
    fn default() -> Self {
        Self {
            records: Vec::new(),
            skipped: 0,
        }
    }
}

/// Reads the rotated ledger and then the current one.
pub fn read_all(store_dir: &Path) -> Result<Lines<TurnRecord>> {
    let mut read = Lines::default();
    for name in [LEDGER_ROTATED_FILE, LEDGER_FILE] {
        read_lines(&store_dir.join(name), &mut read)?;
    }
    Ok(read)
}

/// Adds a JSON-lines file's records to `read`; a line that does not parse is counted and
/// skipped, a missing file is empty.
pub fn read_lines<T: serde::de::DeserializeOwned>(path: &Path, read: &mut Lines<T>) -> Result<()> {
    let text = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(err).wrap_err_with(|| format!("reading {}", path.display())),
    };
    for line in text.split(|b| *b == b'\n') {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice(line) {
            Ok(record) => read.records.push(record),
            Err(_) => read.skipped += 1,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::account_id::AccountId;

    fn record(i: u64) -> TurnRecord {
        TurnRecord {
            at: DateTime::from_timestamp(1_800_000_000 + i as i64, 0).unwrap(),
            session: "s1".into(),
            account: Some(AccountRef {
                id: AccountId::new("a1"),
                name: "alice".into(),
            }),
            model: Some("gpt-5".into()),
            thread_id: "t".into(),
            turn_id: format!("u{i}"),
            input_tokens: i,
            cached_input_tokens: 0,
            output_tokens: 1,
            duration_ms: 5,
            rerun: false,
            status: Some("completed".into()),
            purpose: TurnPurpose::User,
        }
    }

    #[test]
    fn a_line_from_before_the_purpose_field_reads_as_a_user_turn() {
        let dir = tempfile::tempdir().unwrap();
        // A line as cs-tui wrote it before turns had a purpose.
        let old = r#"{"at":"2026-12-02T18:16:02.648Z","session":"s1","account":{"id":"a1","name":"alice"},"model":"gpt-5","thread_id":"t","turn_id":"u1","input_tokens":12,"cached_input_tokens":0,"output_tokens":3,"duration_ms":88,"rerun":false,"status":"completed"}"#;
        let mut title = record(2);
        title.purpose = TurnPurpose::Title;
        let new = serde_json::to_string(&title).unwrap();
        assert!(new.contains(r#""purpose":"title""#), "{new}");
        let user = serde_json::to_string(&record(3)).unwrap();
        assert!(user.contains(r#""purpose":"user""#), "{user}");
        // A purpose this version does not know is a line that does not parse, not a user turn.
        let unknown = new.replace(r#""purpose":"title""#, r#""purpose":"compaction""#);
        std::fs::write(
            dir.path().join(LEDGER_FILE),
            format!("{old}\n{new}\n{user}\n{unknown}\n"),
        )
        .unwrap();
        let read = read_all(dir.path()).unwrap();
        let purposes: Vec<_> = read.records.iter().map(|r| r.purpose).collect();
        assert_eq!(
            purposes,
            [TurnPurpose::User, TurnPurpose::Title, TurnPurpose::User]
        );
        assert_eq!(read.records[0].input_tokens, 12);
        assert_eq!(read.skipped, 1);
    }

    #[test]
    fn appends_private_lines_and_skips_garbage_with_a_count() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::in_store(dir.path());
        ledger.append(&record(1)).unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&ledger.path)
            .unwrap()
            .write_all(b"{broken\n\xff\xfe\n")
            .unwrap();
        ledger.append(&record(2)).unwrap();
        let read = read_all(dir.path()).unwrap();
        assert_eq!(read.records, vec![record(1), record(2)]);
        assert_eq!(read.skipped, 2);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&ledger.path)
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn a_symlink_in_place_of_the_lock_or_the_ledger_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::in_store(dir.path());
        let target = dir.path().join("elsewhere");
        std::fs::create_dir(&ledger.lock_dir).unwrap();
        std::os::unix::fs::symlink(&target, ledger.lock_dir.join(LOCK_FILE)).unwrap();
        let err = format!("{:#}", ledger.append(&record(1)).unwrap_err());
        assert!(err.contains("is a symbolic link"), "{err}");
        assert!(!ledger.path.exists() && !target.exists());

        std::fs::remove_file(ledger.lock_dir.join(LOCK_FILE)).unwrap();
        std::os::unix::fs::symlink(&target, &ledger.path).unwrap();
        assert!(ledger.append(&record(1)).is_err());
        assert!(!target.exists());
    }

    #[test]
    fn rotates_by_size_once_and_keeps_one_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut ledger = Ledger::in_store(dir.path());
        let line = serde_json::to_string(&record(0)).unwrap().len() as u64 + 1;
        // Room for three lines per file.
        ledger.rotate_bytes = 3 * line + 2;
        for i in 0..8 {
            ledger.append(&record(i)).unwrap();
        }
        let current = std::fs::read_to_string(&ledger.path).unwrap();
        let old = std::fs::read_to_string(dir.path().join(LEDGER_ROTATED_FILE)).unwrap();
        assert_eq!(current.lines().count(), 2, "{current}");
        assert_eq!(old.lines().count(), 3, "{old}");
        let read = read_all(dir.path()).unwrap();
        let turns: Vec<_> = read.records.iter().map(|r| r.input_tokens).collect();
        assert_eq!(turns, vec![3, 4, 5, 6, 7]);
    }

    #[test]
    fn concurrent_writers_interleave_whole_lines_and_rotate_once_per_fill() {
        let dir = tempfile::tempdir().unwrap();
        let mut ledger = Ledger::in_store(dir.path());
        let line = serde_json::to_string(&record(7)).unwrap().len() as u64 + 1;
        ledger.rotate_bytes = 1000 * line;
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let ledger = ledger.clone();
                std::thread::spawn(move || {
                    for _ in 0..300 {
                        ledger.append(&record(7)).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let read = read_all(dir.path()).unwrap();
        assert_eq!(read.skipped, 0);
        // 1200 lines, 1000 a file: one rotation, nothing lost.
        assert_eq!(read.records.len(), 1200);
        let current = std::fs::read_to_string(&ledger.path).unwrap();
        assert_eq!(current.lines().count(), 200);
    }
}
