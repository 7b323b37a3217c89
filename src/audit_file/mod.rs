//! The durable audit log: an append-only JSON-lines file.
//!
//! - Writing: one `write` per batch (with `O_APPEND` a batch lands whole), then, in
//!   `durable` mode, one `fdatasync` per batch (group commit: the AuditActor's writer
//!   batches whatever queued up during the previous commit). In `batched` mode the
//!   file is synced at most once a second, and events are acknowledged before that.
//! - A failed write is cut back to the last good length, so a partial line never sits
//!   in front of the next good one.
//! - Reopening ([`recovery`]): a torn last line (a crash mid-write) is cut off with a
//!   warning; every complete line before it stays. Numbering continues from the last
//!   kept event. Shares a crash left open get `share.ended` (cause `termshare
//!   restarted`), then `service.started` marks the start; a clean stop writes
//!   `service.stopped`.
//! - Reading ([`read_events`]): lines that do not parse are skipped and counted.
//! - The file and its directory are reached without following symlinks, must be the
//!   user's and writable by nobody else, and are created 0600 and 0700
//!   ([`crate::secure_fs`]): the torn-line repair truncates, so it must never land on
//!   someone else's file through a planted symlink.
//! - Beside the log lives the installation's fingerprint key ([`load_fingerprint_key`]).

mod recovery;

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg, OFlag};
use termshare_actors::{AuditEvent, AuditKind, AuditSink, FingerprintKey};
use uuid::Uuid;

use crate::config::Durability;
use crate::secure_fs::{self, SafeDir, Trust, UnsafePath};

pub use recovery::RESTARTED;

pub struct JsonlFileSink {
    path: PathBuf,
    /// Held with a shared `flock` for the sink's life: a writer that starts while this
    /// one runs knows not to end its shares ([`recovery`]).
    file: Flock<File>,
    /// This writer's `service.started` / `service.stopped` correlation id.
    instance: Uuid,
    /// Write `service.stopped` when dropped (false only in tests that play a crash).
    stop_on_drop: bool,
    durability: Durability,
    /// The file's length after the last successful append.
    good_len: u64,
    next_seq: u64,
    last_sync: Instant,
}

/// What reopening found and did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Bytes of a torn last line that were cut off.
    pub torn_bytes: u64,
    /// The last sequence number in the file before this start (0: none).
    pub last_seq: u64,
    /// Shares a crash had left open, now ended with `share.ended`.
    pub ended_shares: usize,
    /// Whether this writer had the log alone at its start (and so could end them); if
    /// not, another termshare was writing it and recovery waits for a later start.
    pub alone: bool,
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
        let file = dir.open_file(&name, OFlag::O_CREAT | OFlag::O_RDWR | OFlag::O_APPEND)?;
        let io = |source| UnsafePath::Io {
            path: path.to_path_buf(),
            source,
        };
        // Alone (exclusive) for the repair, then shared with other writers.
        let (mut file, alone) = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(locked) => (locked, true),
            Err((file, nix::errno::Errno::EWOULDBLOCK)) => (
                Flock::lock(file, FlockArg::LockShared).map_err(|(_, e)| io(e.into()))?,
                false,
            ),
            Err((_, e)) => return Err(io(e.into())),
        };
        let mut recovery = Recovery {
            alone,
            ..Recovery::default()
        };
        if alone {
            // Only a writer that has the log alone may cut its tail.
            let (last_seq, torn) = recovery::cut_torn_line(&mut file).map_err(io)?;
            (recovery.last_seq, recovery.torn_bytes) = (last_seq, torn);
        } else {
            recovery.last_seq = recovery::last_seq(&file).map_err(io)?;
        }
        if recovery.torn_bytes > 0 {
            tracing::warn!(
                path = %path.display(),
                bytes = recovery.torn_bytes,
                "cut off a torn last line of the audit log (a crash during a write)"
            );
        }
        let good_len = file.metadata().map_err(io)?.len();
        let mut sink = JsonlFileSink {
            path: path.to_path_buf(),
            file,
            instance: Uuid::now_v7(),
            stop_on_drop: true,
            durability,
            good_len,
            next_seq: recovery.last_seq + 1,
            last_sync: Instant::now(),
        };
        let mut events = Vec::new();
        if alone {
            let open = recovery::open_shares(&sink.file).map_err(io)?;
            recovery.ended_shares = open.len();
            events.extend(open.iter().map(recovery::ended));
        }
        let mut started = AuditEvent::new(AuditKind::ServiceStarted, sink.instance)
            .detail("pid", std::process::id())
            .detail("version", env!("CARGO_PKG_VERSION"))
            .detail("checkpoint", alone)
            .detail("ended_shares", recovery.ended_shares);
        if !alone {
            started = started.detail(
                "recovery",
                "skipped: another termshare is writing this log; a later start that has it alone ends what a crash left open",
            );
        }
        events.push(started);
        sink.append_now(events)
            .map_err(|e| io(std::io::Error::other(e)))?;
        if recovery.ended_shares > 0 {
            tracing::warn!(
                path = %path.display(),
                shares = recovery.ended_shares,
                "shares left open by a crash are recorded as ended ({})",
                recovery::RESTARTED
            );
        }
        if alone {
            sink.file
                .relock(FlockArg::LockSharedNonblock)
                .map_err(|e| io(e.into()))?;
        }
        Ok((sink, recovery))
    }

    /// Number and write events of the sink's own (recovery, start, stop), durably.
    fn append_now(&mut self, mut events: Vec<AuditEvent>) -> Result<(), String> {
        for (i, e) in events.iter_mut().enumerate() {
            e.id = Uuid::now_v7();
            e.seq = self.next_seq + i as u64;
        }
        let durability = self.durability;
        self.durability = Durability::Durable;
        let result = self.append(&events);
        self.durability = durability;
        result
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Go as a kill -9 would: the file (and its lock) closed, no `service.stopped`.
    #[cfg(test)]
    fn crash(mut self) {
        self.stop_on_drop = false;
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

/// A clean stop: the service has ended its shares and written out its queue before
/// the sink goes (the AuditActor's writer drops it last).
impl Drop for JsonlFileSink {
    fn drop(&mut self) {
        if !self.stop_on_drop {
            return;
        }
        let stopped = AuditEvent::new(AuditKind::ServiceStopped, self.instance)
            .detail("pid", std::process::id());
        if let Err(e) = self.append_now(vec![stopped]) {
            tracing::error!(error = %e, "could not record service.stopped");
        }
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
        // Its own service.started is line 1.
        assert_eq!(sink.next_seq(), 2);
        sink.append(&[event(2), event(3)]).unwrap();
        drop(sink); // service.stopped is 4
                    // A crash in the middle of the fifth line.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(br#"{"id":"0190","at":"2026-"#).unwrap();
        drop(f);
        let (sink, rec) = JsonlFileSink::open_with_recovery(&path, Durability::Durable).unwrap();
        assert_eq!(rec.last_seq, 4);
        assert!(rec.torn_bytes > 0);
        // The two requests never ended: 5 and 6 end them, 7 is service.started.
        assert_eq!(rec.ended_shares, 2);
        assert_eq!(sink.next_seq(), 8);
        let (events, bad) = read_events(&path).unwrap();
        assert_eq!((events.len(), bad), (7, 0));
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
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open("/dev/full")
            .unwrap();
        let mut sink = JsonlFileSink {
            path: "/dev/full".into(),
            file: Flock::lock(file, FlockArg::LockSharedNonblock).unwrap(),
            instance: Uuid::now_v7(),
            stop_on_drop: true,
            durability: Durability::Durable,
            good_len: 0,
            next_seq: 1,
            last_sync: Instant::now(),
        };
        let err = sink.append(&[event(1)]).unwrap_err();
        assert!(err.contains("No space left"), "{err}");
    }

    /// A log as a crash leaves it: these lines, written as they are, no sink involved.
    fn crashed_log(lines: &[AuditEvent]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .unwrap();
        let path = dir.path().join("audit.jsonl");
        let mut text = Vec::new();
        for (i, e) in lines.iter().enumerate() {
            let mut e = e.clone();
            e.seq = i as u64 + 1;
            serde_json::to_writer(&mut text, &e).unwrap();
            text.push(b'\n');
        }
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        (dir, path)
    }

    fn share_event(kind: AuditKind, id: ShareId) -> AuditEvent {
        AuditEvent::new(kind, id)
            .terminal(&"dev".parse().unwrap())
            .principal(&"human:alice".parse().unwrap())
    }

    fn ends_of(path: &Path) -> Vec<(Uuid, String)> {
        read_events(path)
            .unwrap()
            .0
            .into_iter()
            .filter(|e| e.kind == AuditKind::ShareEnded)
            .map(|e| {
                (
                    e.correlation_id,
                    e.details["cause"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }

    #[test]
    fn a_restart_ends_what_a_crash_left_open_once() {
        let (a, b, c, d) = (
            ShareId::new(),
            ShareId::new(),
            ShareId::new(),
            ShareId::new(),
        );
        let (_dir, path) = crashed_log(&[
            share_event(AuditKind::ShareRequested, a),
            share_event(AuditKind::ShareStarted, a),
            share_event(AuditKind::ShareRequested, b),
            share_event(AuditKind::ShareDenied, b),
            share_event(AuditKind::ShareRequested, c),
            share_event(AuditKind::ShareStarted, c),
            share_event(AuditKind::ShareRevoked, c),
            // Killed in the middle of starting d.
            share_event(AuditKind::ShareRequested, d),
        ]);
        let (sink, rec) = JsonlFileSink::open_with_recovery(&path, Durability::Durable).unwrap();
        assert!(rec.alone);
        assert_eq!((rec.last_seq, rec.ended_shares), (8, 2));
        assert_eq!(sink.next_seq(), 12, "two ends and service.started");
        drop(sink);
        let restarted = RESTARTED.to_owned();
        assert_eq!(ends_of(&path), [(a.0, restarted.clone()), (d.0, restarted)]);
        let events = read_events(&path).unwrap().0;
        let kinds: Vec<_> = events[8..].iter().map(|e| e.kind).collect();
        assert_eq!(
            kinds,
            [
                AuditKind::ShareEnded,
                AuditKind::ShareEnded,
                AuditKind::ServiceStarted,
                AuditKind::ServiceStopped
            ]
        );
        assert_eq!(events[8].terminal.as_ref().unwrap().as_str(), "dev");
        assert_eq!(events[10].correlation_id, events[11].correlation_id);
        // Another restart ends nothing twice.
        let (_, rec) = JsonlFileSink::open_with_recovery(&path, Durability::Durable).unwrap();
        assert_eq!(rec.ended_shares, 0);
        assert_eq!(ends_of(&path).len(), 2);
    }

    #[test]
    fn a_writer_that_is_not_alone_ends_nothing_of_the_running_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log/audit.jsonl");
        let (mut running, rec) =
            JsonlFileSink::open_with_recovery(&path, Durability::Durable).unwrap();
        assert!(rec.alone);
        let live = ShareId::new();
        let mut started = share_event(AuditKind::ShareStarted, live);
        started.seq = running.next_seq();
        running.append(&[started]).unwrap();
        // A second termshare on the same log while the first runs.
        let (second, rec) = JsonlFileSink::open_with_recovery(&path, Durability::Durable).unwrap();
        assert!(!rec.alone);
        assert_eq!(rec.ended_shares, 0);
        assert!(ends_of(&path).is_empty(), "the running share is not over");
        drop(second);
        // The first crashes (its lock goes with its file, no service.stopped).
        running.crash();
        let (_, rec) = JsonlFileSink::open_with_recovery(&path, Durability::Durable).unwrap();
        assert!(rec.alone);
        assert_eq!(ends_of(&path), [(live.0, RESTARTED.to_owned())]);
    }

    #[test]
    fn recovery_reads_from_the_last_checkpoint_across_many_blocks() {
        let before = ShareId::new();
        let after = ShareId::new();
        let filler = |n: usize| -> Vec<AuditEvent> {
            (0..n)
                .map(|i| {
                    AuditEvent::new(AuditKind::HandoffRequested, ShareId::new())
                        .detail("reason", format!("{i:06} {}", "x".repeat(200)))
                })
                .collect()
        };
        let mut lines = vec![share_event(AuditKind::ShareStarted, before)];
        lines.extend(filler(1000));
        // A checkpoint: nothing before it is open (the line above is, on purpose, to
        // show it is not read).
        lines.push(
            AuditEvent::new(AuditKind::ServiceStarted, Uuid::now_v7()).detail("checkpoint", true),
        );
        lines.extend(filler(500));
        lines.push(share_event(AuditKind::ShareStarted, after));
        // More than a block (64 KiB) of later lines, and a later start that was not
        // alone (not a checkpoint).
        lines.extend(filler(600));
        lines.push(
            AuditEvent::new(AuditKind::ServiceStarted, Uuid::now_v7()).detail("checkpoint", false),
        );
        lines.extend(filler(600));
        let (_dir, path) = crashed_log(&lines);
        assert!(std::fs::metadata(&path).unwrap().len() > 4 * 64 * 1024);
        let (_, rec) = JsonlFileSink::open_with_recovery(&path, Durability::Durable).unwrap();
        assert_eq!(rec.ended_shares, 1);
        assert_eq!(ends_of(&path), [(after.0, RESTARTED.to_owned())]);
    }
}
