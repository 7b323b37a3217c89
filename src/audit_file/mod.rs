//! The durable audit log: an append-only JSON-lines file.
//!
//! - Writing: one `write` per batch (with `O_APPEND` a batch lands whole), then, in
//!   `durable` mode, one `fdatasync` per batch (group commit: the AuditActor's writer
//!   batches whatever queued up during the previous commit). In `batched` mode the
//!   file is synced at most once a second, and events are acknowledged before that.
//! - A failed write is cut back to the last good length, so a partial line never sits
//!   in front of the next good one.
//! - Reopening (`recovery`): a torn last line (a crash mid-write) is cut off with a
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
mod tail;

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
pub use tail::{Batch, Committed, LogTail, TailError, TailedEvent};

/// The audit log file as an [`AuditSink`]: appends batches, records its own start and stop.
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
    /// What is in the file for good (length, last seq), for readers that follow it
    /// ([`JsonlFileSink::tail`]): published after each successful append.
    committed: tokio::sync::watch::Sender<Committed>,
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

    /// [`JsonlFileSink::open`], also returning what reopening found and did.
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
            committed: tokio::sync::watch::Sender::new(Committed {
                len: good_len,
                last_seq: recovery.last_seq,
            }),
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

    /// The log file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A reader that follows what this sink commits (the fleet's shipper): its own
    /// descriptor of the same file, reading only bytes a successful append left there,
    /// so a write cut back after a failure is never read.
    pub fn tail(&self) -> std::io::Result<LogTail> {
        let file = self.file.try_clone()?;
        Ok(LogTail::new(file, self.committed.subscribe()))
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
        // Readers (the fleet's shipper) see only what is on disk: in `batched` mode
        // a power loss may take back what was not synced, and the database must
        // never hold an event the log lost.
        if sync_now {
            self.committed.send_replace(Committed {
                len: self.good_len,
                last_seq: self.next_seq - 1,
            });
        }
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
mod tests;
