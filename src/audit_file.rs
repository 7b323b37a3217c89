//! The durable audit log: an append-only JSON-lines file.
//!
//! - Writing: one `write` per batch (with `O_APPEND` a batch lands whole), then, in
//!   `durable` mode, one `fdatasync` per batch (group commit: the AuditActor's writer
//!   batches whatever queued up during the previous commit). In `batched` mode the
//!   file is synced at most once a second, and events are acknowledged before that.
//! - A failed write is cut back to the last good length, so a partial line never sits
//!   in front of the next good one.
//! - Reopening: a torn last line (a crash mid-write) is cut off with a warning; every
//!   complete line before it stays. Numbering continues from the last kept event.
//! - Reading ([`read_events`]): lines that do not parse are skipped and counted.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use termshare_actors::{AuditEvent, AuditSink};

use crate::config::Durability;

pub struct JsonlFileSink {
    path: PathBuf,
    file: File,
    durability: Durability,
    /// The file's length after the last successful append.
    good_len: u64,
    next_seq: u64,
    last_sync: Instant,
}

/// What reopening found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Bytes of a torn last line that were cut off.
    pub torn_bytes: u64,
    /// The last sequence number in the file (0: none).
    pub last_seq: u64,
}

impl JsonlFileSink {
    /// Opens (creating it, mode 0600, and its directory, mode 0700) for appending,
    /// after cutting off a torn last line.
    pub fn open(path: &Path, durability: Durability) -> std::io::Result<Self> {
        Ok(Self::open_with_recovery(path, durability)?.0)
    }

    pub fn open_with_recovery(
        path: &Path,
        durability: Durability,
    ) -> std::io::Result<(Self, Recovery)> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
        }
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .mode(0o600)
            .open(path)?;
        let recovery = recover(&mut file)?;
        if recovery.torn_bytes > 0 {
            tracing::warn!(
                path = %path.display(),
                bytes = recovery.torn_bytes,
                "cut off a torn last line of the audit log (a crash during a write)"
            );
        }
        let good_len = file.metadata()?.len();
        Ok((
            JsonlFileSink {
                path: path.to_path_buf(),
                file,
                durability,
                good_len,
                next_seq: recovery.last_seq + 1,
                last_sync: Instant::now(),
            },
            recovery,
        ))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Cut a torn last line, and find the last sequence number, reading only the tail.
fn recover(file: &mut File) -> std::io::Result<Recovery> {
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(Recovery::default());
    }
    let mut rec = Recovery::default();
    let mut window: u64 = 64 * 1024;
    loop {
        let start = len.saturating_sub(window);
        let mut tail = Vec::new();
        file.seek(SeekFrom::Start(start))?;
        Read::by_ref(file)
            .take(len - start)
            .read_to_end(&mut tail)?;
        let complete = match tail.iter().rposition(|&b| b == b'\n') {
            Some(i) => i + 1,
            None if start > 0 => {
                window *= 4; // one line longer than the window: look further back
                continue;
            }
            None => 0,
        };
        if rec.torn_bytes == 0 && complete < tail.len() {
            rec.torn_bytes = (tail.len() - complete) as u64;
            file.set_len(start + complete as u64)?;
            file.sync_data()?;
        }
        let lines = tail[..complete].split(|&b| b == b'\n');
        if let Some(seq) = lines
            .rev()
            .filter_map(|l| serde_json::from_slice::<AuditEvent>(l).ok())
            .map(|e| e.seq)
            .next()
        {
            rec.last_seq = seq;
            return Ok(rec);
        }
        if start == 0 {
            return Ok(rec);
        }
        window *= 4;
    }
}

impl AuditSink for JsonlFileSink {
    fn append(&mut self, events: &[AuditEvent]) -> Result<(), String> {
        let mut buf = Vec::with_capacity(events.len() * 320);
        for e in events {
            serde_json::to_writer(&mut buf, e).map_err(|e| e.to_string())?;
            buf.push(b'\n');
        }
        let fail = |sink: &mut Self, what: &str, e: std::io::Error| {
            // Leave no partial line in front of the next good one.
            let _ = sink.file.set_len(sink.good_len);
            format!("{}: {what}: {e}", sink.path.display())
        };
        if let Err(e) = self.file.write_all(&buf) {
            return Err(fail(self, "write", e));
        }
        let sync_now = match self.durability {
            Durability::Durable => true,
            Durability::Batched => self.last_sync.elapsed() >= Duration::from_secs(1),
        };
        if sync_now {
            if let Err(e) = self.file.sync_data() {
                return Err(fail(self, "fsync", e));
            }
            self.last_sync = Instant::now();
        }
        self.good_len += buf.len() as u64;
        self.next_seq = events.last().map_or(self.next_seq, |e| e.seq + 1);
        Ok(())
    }

    fn next_seq(&self) -> u64 {
        self.next_seq
    }
}

/// Every event in the log, in order, and how many lines did not parse.
pub fn read_events(path: &Path) -> std::io::Result<(Vec<AuditEvent>, usize)> {
    let text = std::fs::read(path)?;
    let mut bad = 0;
    let events = text
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .filter_map(|l| match serde_json::from_slice(l) {
            Ok(e) => Some(e),
            Err(_) => {
                bad += 1;
                None
            }
        })
        .collect();
    Ok((events, bad))
}

#[cfg(test)]
mod tests {
    use super::*;
    use termshare_actors::{AuditKind, ShareId};

    fn event(seq: u64) -> AuditEvent {
        let mut e = AuditEvent::new(AuditKind::ShareRequested, ShareId::new());
        e.seq = seq;
        e
    }

    #[test]
    fn a_torn_last_line_is_cut_and_numbering_continues() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/audit.jsonl");
        let mut sink = JsonlFileSink::open(&path, Durability::Durable).unwrap();
        assert_eq!(sink.next_seq(), 1);
        sink.append(&[event(1), event(2)]).unwrap();
        // A crash in the middle of the third line.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(br#"{"id":"0190","at":"2026-"#).unwrap();
        drop((f, sink));
        let (sink, rec) = JsonlFileSink::open_with_recovery(&path, Durability::Durable).unwrap();
        assert_eq!(rec.last_seq, 2);
        assert!(rec.torn_bytes > 0);
        assert_eq!(sink.next_seq(), 3);
        let (events, bad) = read_events(&path).unwrap();
        assert_eq!((events.len(), bad), (2, 0));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn a_failing_disk_is_an_error_not_a_panic() {
        // /dev/full accepts the open and fails every write with ENOSPC.
        let mut sink = JsonlFileSink {
            path: "/dev/full".into(),
            file: OpenOptions::new().append(true).open("/dev/full").unwrap(),
            durability: Durability::Durable,
            good_len: 0,
            next_seq: 1,
            last_sync: Instant::now(),
        };
        let err = sink.append(&[event(1)]).unwrap_err();
        assert!(err.contains("No space left"), "{err}");
    }
}
