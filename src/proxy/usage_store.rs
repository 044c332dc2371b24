//! Every account's usage samples, kept across sessions in `<store>/usage.jsonl` (0600), so
//! the burn-down chart and the runway forecast start from what earlier sessions saw.
//!
//! One JSON object a line (`{"at":…,"account":…,"five_hour":…,"weekly":…}`), at most one a
//! [`RESOLUTION_SECS`] per account from each session, kept [`RETENTION_SECS`]. Several sessions
//! append at once: each line is one `write` under an exclusive `flock`, and the file is
//! compacted (old and surplus lines dropped) into a temporary file renamed over it, under the
//! same lock. An appender that took the lock checks that its descriptor is still the file at
//! the path, so no line goes to a file a compaction replaced. A line that does not parse (a
//! torn write after a crash) is skipped, never fatal.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::account_id::AccountId;
use crate::proxy::events::ProxyEvent;

/// At most one sample per account this often from one session.
pub(crate) const RESOLUTION_SECS: i64 = 5 * 60;
/// Samples older than this are dropped.
pub(crate) const RETENTION_SECS: i64 = 14 * 86_400;
/// The file is compacted when it grows past this (about 14 days of ten accounts written by
/// two sessions each).
const COMPACT_BYTES: u64 = 8 * 1024 * 1024;

const FILE: &str = "usage.jsonl";

/// One stored sample: an account's used percent of its 5-hour and weekly windows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredSample {
    pub at: i64,
    pub account: AccountId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub five_hour: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weekly: Option<f64>,
}

/// `<store>/usage.jsonl`.
pub(crate) fn path(store_dir: &Path) -> PathBuf {
    store_dir.join(FILE)
}

/// The samples of the last [`RETENTION_SECS`] before `now`, oldest first, one per account and
/// [`RESOLUTION_SECS`] (the last of each). A missing file is no samples; lines that do not
/// parse are skipped.
pub fn load(store_dir: &Path, now: i64) -> Vec<StoredSample> {
    match File::open(path(store_dir)) {
        Ok(file) => match read_lines(&file) {
            Ok(samples) => thin(samples, now),
            Err(err) => {
                tracing::warn!("cannot read the usage samples: {err}");
                Vec::new()
            }
        },
        Err(err) => {
            if err.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!("cannot read the usage samples: {err}");
            }
            Vec::new()
        }
    }
}

/// Every sample in `file`, skipping lines that do not parse. A read error fails the whole
/// read, so a compaction never rewrites the file from part of it.
fn read_lines(file: &File) -> std::io::Result<Vec<StoredSample>> {
    let mut skipped = 0usize;
    let mut samples = Vec::new();
    // Split on bytes: a line that is not UTF-8 is one bad line, not the end of the file.
    for line in BufReader::new(file).split(b'\n') {
        let line = line?;
        if line.trim_ascii().is_empty() {
            continue;
        }
        match serde_json::from_slice::<StoredSample>(&line) {
            Ok(sample) => samples.push(sample),
            Err(_) => skipped += 1,
        }
    }
    if skipped > 0 {
        tracing::warn!(
            skipped,
            "usage samples: lines that do not parse were skipped"
        );
    }
    Ok(samples)
}

/// Keeps the retention and the resolution, oldest first.
fn thin(samples: Vec<StoredSample>, now: i64) -> Vec<StoredSample> {
    let mut buckets: BTreeMap<(AccountId, i64), StoredSample> = BTreeMap::new();
    for sample in samples {
        if sample.at < now - RETENTION_SECS || sample.at > now + RESOLUTION_SECS {
            continue;
        }
        let key = (
            sample.account.clone(),
            sample.at.div_euclid(RESOLUTION_SECS),
        );
        match buckets.get(&key) {
            Some(kept) if kept.at > sample.at => {}
            _ => {
                buckets.insert(key, sample);
            }
        }
    }
    let mut kept: Vec<StoredSample> = buckets.into_values().collect();
    kept.sort_by(|a, b| a.at.cmp(&b.at).then_with(|| a.account.cmp(&b.account)));
    kept
}

/// Opens the file for appending (created 0600, never through a link) and takes its lock,
/// reopening when a compaction replaced it meanwhile.
fn open_locked(store_dir: &Path) -> std::io::Result<Flock<File>> {
    let path = path(store_dir);
    loop {
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
            .open(&path)?;
        let locked = Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, errno)| errno)?;
        let ours = locked.metadata()?;
        match std::fs::symlink_metadata(&path) {
            Ok(now) if now.ino() == ours.ino() && now.dev() == ours.dev() => return Ok(locked),
            // Replaced (or removed) while we waited for the lock: open the new one.
            _ => continue,
        }
    }
}

/// Appends `samples` in one write, compacting first when the file has grown too big.
pub(crate) fn append(store_dir: &Path, samples: &[StoredSample], now: i64) -> std::io::Result<()> {
    if samples.is_empty() {
        return Ok(());
    }
    let mut text = String::new();
    for sample in samples {
        text.push_str(&serde_json::to_string(sample).map_err(std::io::Error::other)?);
        text.push('\n');
    }
    let mut locked = open_locked(store_dir)?;
    if locked.metadata()?.len() > COMPACT_BYTES {
        compact_locked(store_dir, &locked, now)?;
        drop(locked);
        locked = open_locked(store_dir)?;
    }
    locked.write_all(text.as_bytes())
}

/// Rewrites the file to the retention and resolution, holding `locked` (the file's lock).
fn compact_locked(store_dir: &Path, locked: &Flock<File>, now: i64) -> std::io::Result<()> {
    let file: &File = locked;
    let kept = thin(read_lines(file)?, now);
    let temp = store_dir.join(format!("{FILE}.{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&temp);
    let mut out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(&temp)?;
    let mut text = String::new();
    for sample in &kept {
        text.push_str(&serde_json::to_string(sample).map_err(std::io::Error::other)?);
        text.push('\n');
    }
    let written = out
        .write_all(text.as_bytes())
        .and_then(|()| out.sync_all())
        .and_then(|()| std::fs::rename(&temp, path(store_dir)));
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    written
}

/// Compacts the file now (a session does so once at its start).
pub(crate) fn compact(store_dir: &Path, now: i64) -> std::io::Result<()> {
    if !path(store_dir).exists() {
        return Ok(());
    }
    let locked = open_locked(store_dir)?;
    compact_locked(store_dir, &locked, now)
}

/// Decides which of a session's rate-limit updates are written: one per account and
/// [`RESOLUTION_SECS`], counted from the last stored sample of that account.
#[derive(Debug, Default)]
pub(crate) struct Recorder {
    last_written: BTreeMap<AccountId, i64>,
}

impl Recorder {
    pub(crate) fn new(stored: &[StoredSample]) -> Self {
        let mut last_written = BTreeMap::new();
        for s in stored {
            let at = last_written.entry(s.account.clone()).or_insert(s.at);
            *at = (*at).max(s.at);
        }
        Self { last_written }
    }

    /// The sample to write for `event`, if any.
    pub(crate) fn observe(&mut self, event: &ProxyEvent) -> Option<StoredSample> {
        let ProxyEvent::RateLimitsUpdated {
            account,
            snapshot,
            at,
            ..
        } = event
        else {
            return None;
        };
        let sample = StoredSample {
            at: at.timestamp(),
            account: account.id.clone(),
            five_hour: snapshot.five_hour().map(|w| w.used_percent),
            weekly: snapshot.weekly().map(|w| w.used_percent),
        };
        if sample.five_hour.is_none() && sample.weekly.is_none() {
            return None;
        }
        if self
            .last_written
            .get(&sample.account)
            .is_some_and(|&last| sample.at < last + RESOLUTION_SECS)
        {
            return None;
        }
        self.last_written.insert(sample.account.clone(), sample.at);
        Some(sample)
    }
}

/// Writes the session's samples from its events until they end. The file work runs on a
/// thread of its own (a lock held by a stopped session must not hold up the runtime or its
/// shutdown); the thread ends when the events do.
pub fn spawn_recorder(store_dir: &Path, mut events: broadcast::Receiver<ProxyEvent>) {
    let now = chrono::Utc::now().timestamp();
    let mut recorder = Recorder::new(&load(store_dir, now));
    let (tx, rx) = std::sync::mpsc::channel::<StoredSample>();
    let dir = store_dir.to_owned();
    let writer = std::thread::Builder::new()
        .name("usage-samples".to_owned())
        .spawn(move || {
            if let Err(err) = compact(&dir, chrono::Utc::now().timestamp()) {
                tracing::warn!("cannot compact the usage samples: {err}");
            }
            while let Ok(sample) = rx.recv() {
                let mut batch = vec![sample];
                batch.extend(rx.try_iter());
                if let Err(err) = append(&dir, &batch, chrono::Utc::now().timestamp()) {
                    tracing::warn!("cannot keep the usage samples: {err}");
                }
            }
        });
    if let Err(err) = writer {
        tracing::warn!("usage samples are not kept: {err}");
        return;
    }
    tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(event) => {
                    if let Some(sample) = recorder.observe(&event)
                        && tx.send(sample).is_err()
                    {
                        break;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => break,
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::events::AccountRef;
    use crate::quota::{RateLimitSnapshot, RateLimitWindow};
    use chrono::TimeZone as _;
    use std::os::unix::fs::PermissionsExt as _;

    const NOW: i64 = 1_800_000_000;

    fn sample(account: &str, at: i64, used: f64) -> StoredSample {
        StoredSample {
            at: NOW + at,
            account: AccountId::new(account),
            five_hour: Some(used),
            weekly: Some(used / 10.0),
        }
    }

    #[test]
    fn samples_survive_and_keep_their_bounds() {
        let dir = tempfile::tempdir().unwrap();
        append(
            dir.path(),
            &[
                sample("a", -RETENTION_SECS - 1, 1.0), // too old
                sample("a", -600, 10.0),
                sample("a", -599, 11.0), // same 5-minute bucket: the later one is kept
                sample("b", -300, 50.0),
            ],
            NOW,
        )
        .unwrap();
        // Another writer's torn line is skipped, the lines after it are not.
        let mut file = OpenOptions::new()
            .append(true)
            .open(path(dir.path()))
            .unwrap();
        file.write_all(b"{\"at\":18000").unwrap();
        file.write_all(b"\n").unwrap();
        append(dir.path(), &[sample("a", 0, 12.0)], NOW).unwrap();
        let mode = std::fs::metadata(path(dir.path()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);

        let loaded = load(dir.path(), NOW);
        assert_eq!(
            loaded,
            vec![
                sample("a", -599, 11.0),
                sample("b", -300, 50.0),
                sample("a", 0, 12.0)
            ]
        );
        compact(dir.path(), NOW).unwrap();
        assert_eq!(load(dir.path(), NOW), loaded);
        let text = std::fs::read_to_string(path(dir.path())).unwrap();
        assert_eq!(text.lines().count(), 3, "compacted: {text}");
        let mode = std::fs::metadata(path(dir.path()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(load(&dir.path().join("missing"), NOW).is_empty());
    }

    #[test]
    fn a_link_in_its_place_is_never_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "keep me\n").unwrap();
        std::os::unix::fs::symlink(&victim, path(dir.path())).unwrap();
        assert!(append(dir.path(), &[sample("a", 0, 1.0)], NOW).is_err());
        assert!(compact(dir.path(), NOW).is_err());
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me\n");
        // Nor does a file of garbage stop a load.
        std::fs::remove_file(path(dir.path())).unwrap();
        std::fs::write(path(dir.path()), [0xff_u8, 0xfe, b'\n', b'{', b'\n']).unwrap();
        assert!(load(dir.path(), NOW).is_empty());
        append(dir.path(), &[sample("a", 0, 1.0)], NOW).unwrap();
        // The samples after a line that is not UTF-8 are kept, by a load and a compaction.
        assert_eq!(load(dir.path(), NOW), vec![sample("a", 0, 1.0)]);
        compact(dir.path(), NOW).unwrap();
        assert_eq!(load(dir.path(), NOW), vec![sample("a", 0, 1.0)]);
    }

    #[test]
    fn concurrent_appenders_lose_no_line() {
        let dir = tempfile::tempdir().unwrap();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let dir = dir.path().to_owned();
                std::thread::spawn(move || {
                    for i in 0..50 {
                        let s = sample(&format!("acct{t}"), -(i * RESOLUTION_SECS), 1.0);
                        append(&dir, &[s], NOW).unwrap();
                        if i % 10 == 0 {
                            compact(&dir, NOW).unwrap();
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(load(dir.path(), NOW).len(), 200);
    }

    #[test]
    fn the_recorder_writes_one_sample_per_account_and_resolution() {
        let five = |used: f64| RateLimitSnapshot {
            primary: Some(RateLimitWindow {
                used_percent: used,
                window_duration_mins: Some(300),
                resets_at: Some(NOW + 3600),
            }),
            ..Default::default()
        };
        let event = |account: &str, at: i64, used: f64| ProxyEvent::RateLimitsUpdated {
            account: AccountRef {
                id: AccountId::new(account),
                name: account.to_owned(),
            },
            snapshot: five(used),
            families: Vec::new(),
            at: chrono::Utc.timestamp_opt(NOW + at, 0).unwrap(),
        };
        let mut recorder = Recorder::new(&[sample("a", -100, 5.0)]);
        // Within the resolution of the stored sample: not written.
        assert_eq!(recorder.observe(&event("a", 0, 6.0)), None);
        let written = recorder.observe(&event("a", 200, 7.0)).unwrap();
        assert_eq!((written.at, written.five_hour), (NOW + 200, Some(7.0)));
        assert_eq!(recorder.observe(&event("a", 300, 8.0)), None);
        assert!(recorder.observe(&event("b", 300, 1.0)).is_some());
        assert_eq!(
            recorder.observe(&ProxyEvent::TurnsRunning {
                running: 1,
                title_turns: 0,
                at: chrono::Utc::now()
            }),
            None
        );
    }
}
