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
//! - The file and its directory are reached without following symlinks, must be the
//!   user's and writable by nobody else, and are created 0600 and 0700
//!   ([`crate::secure_fs`]): the torn-line repair truncates, so it must never land on
//!   someone else's file through a planted symlink.
//! - Beside the log lives the installation's fingerprint key ([`load_fingerprint_key`]).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use termshare_actors::{AuditEvent, AuditSink, FingerprintKey};

use crate::config::Durability;
use crate::secure_fs::{self, SafeDir, Trust, UnsafePath};

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
    pub fn open(path: &Path, durability: Durability) -> Result<Self, UnsafePath> {
        Ok(Self::open_with_recovery(path, durability)?.0)
    }

    pub fn open_with_recovery(
        path: &Path,
        durability: Durability,
    ) -> Result<(Self, Recovery), UnsafePath> {
        let (dir, name) = log_dir(path)?;
        let mut file = dir.open_file(&name, OFlag::O_CREAT | OFlag::O_RDWR | OFlag::O_APPEND)?;
        let io = |source| UnsafePath::Io {
            path: path.to_path_buf(),
            source,
        };
        let recovery = recover(&mut file).map_err(io)?;
        if recovery.torn_bytes > 0 {
            tracing::warn!(
                path = %path.display(),
                bytes = recovery.torn_bytes,
                "cut off a torn last line of the audit log (a crash during a write)"
            );
        }
        let good_len = file.metadata().map_err(io)?.len();
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

/// The log's directory, reached and created safely, and the log's file name.
fn log_dir(path: &Path) -> Result<(SafeDir, String), UnsafePath> {
    let abs = std::path::absolute(path).map_err(|source| UnsafePath::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let (Some(parent), Some(name)) = (abs.parent(), abs.file_name().and_then(|n| n.to_str()))
    else {
        return Err(UnsafePath::Kind {
            path: abs,
            expected: "file path",
        });
    };
    Ok((
        secure_fs::open_dir(parent, true, Trust::default())?,
        name.to_owned(),
    ))
}

/// The installation's key for link fingerprints: `fingerprint.key` (32 random bytes,
/// 0600) beside the audit log, made on first use. Audit events name links only by
/// HMAC under this key, so a fingerprint cannot be recomputed from a guessed link.
pub fn load_fingerprint_key(audit_path: &Path) -> Result<FingerprintKey, UnsafePath> {
    let (dir, _) = log_dir(audit_path)?;
    let path = dir.path().join("fingerprint.key");
    let io = |source| UnsafePath::Io {
        path: path.clone(),
        source,
    };
    match dir.open_file(
        "fingerprint.key",
        OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY,
    ) {
        Ok(mut f) => {
            let key = FingerprintKey::random();
            f.write_all(key.as_bytes()).map_err(io)?;
            f.sync_all().map_err(io)?;
            return Ok(key);
        }
        Err(UnsafePath::Io { source, .. })
            if source.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    // Made by another instance, perhaps a moment ago: wait briefly for its 32 bytes.
    for _ in 0..50 {
        let mut bytes = Vec::new();
        dir.open_file("fingerprint.key", OFlag::O_RDONLY)?
            .read_to_end(&mut bytes)
            .map_err(io)?;
        if let Ok(key) = <[u8; 32]>::try_from(bytes.as_slice()) {
            return Ok(FingerprintKey::from_bytes(key));
        }
        if bytes.len() > 32 {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Err(io(std::io::Error::other(
        "not a termshare fingerprint key (32 bytes); remove it to make a new one",
    )))
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
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
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
    fn a_symlink_at_the_log_path_is_refused_and_its_target_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("passwd-copy");
        std::fs::write(&target, "root:x:0:0:root:/root:/bin/bash\ntorn").unwrap();
        let log = dir.path().join("audit.jsonl");
        std::os::unix::fs::symlink(&target, &log).unwrap();
        let err = JsonlFileSink::open(&log, Durability::Durable)
            .err()
            .unwrap();
        assert!(matches!(err, UnsafePath::Symlink { .. }), "{err}");
        assert_eq!(
            std::fs::read_to_string(&target).unwrap(),
            "root:x:0:0:root:/root:/bin/bash\ntorn"
        );
    }

    #[test]
    fn the_fingerprint_key_is_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("state/audit.jsonl");
        let a = load_fingerprint_key(&log).unwrap();
        let b = load_fingerprint_key(&log).unwrap();
        assert_eq!(a, b);
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(dir.path().join("state/fingerprint.key")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(meta.len(), 32);
    }

    #[test]
    fn a_failing_disk_is_an_error_not_a_panic() {
        // /dev/full accepts the open and fails every write with ENOSPC.
        let mut sink = JsonlFileSink {
            path: "/dev/full".into(),
            file: std::fs::OpenOptions::new()
                .append(true)
                .open("/dev/full")
                .unwrap(),
            durability: Durability::Durable,
            good_len: 0,
            next_seq: 1,
            last_sync: Instant::now(),
        };
        let err = sink.append(&[event(1)]).unwrap_err();
        assert!(err.contains("No space left"), "{err}");
    }
}
