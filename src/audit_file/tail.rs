//! Following the audit log from a position, for the fleet's shipper.
//!
//! The reader has its own descriptor of the log ([`super::JsonlFileSink::tail`]) and
//! reads only up to the length the sink last committed (written and, in `batched`
//! mode too, synced): bytes of a write that failed and was cut back are never read,
//! a line being written is never read half, and nothing a power loss could take back
//! leaves the host.
//! The file is the source of truth; this is a cursor over it, so whatever the reader
//! falls behind by (a database outage) costs disk that is there anyway, not memory.

use std::fs::File;
use std::os::unix::fs::FileExt;

use serde_json::Value;
use thiserror::Error;
use tokio::sync::watch;

/// What the log holds for good: its length and the last event's seq.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Committed {
    /// Bytes of whole, successfully appended lines.
    pub len: u64,
    /// The seq of the last of them (0: none).
    pub last_seq: u64,
}

/// One event as the log has it: its seq and the line's JSON object, unchanged.
#[derive(Clone, Debug, PartialEq)]
pub struct TailedEvent {
    /// The event's position in the log.
    pub seq: u64,
    /// The whole line, parsed (the same object `termshare audit --json` prints).
    pub object: Value,
}

/// Events read from the log, and where the read ended.
#[derive(Debug, Default)]
pub struct Batch {
    /// In file order.
    pub events: Vec<TailedEvent>,
    /// Lines in the range that did not parse (a log's reader skips them too).
    pub skipped: usize,
    /// The offset just past the last line read.
    end: u64,
    /// The seq of the last event read.
    last_seq: u64,
}

/// Why the log could not be followed.
#[derive(Debug, Error)]
pub enum TailError {
    /// Reading the file failed.
    #[error("reading the audit log: {0}")]
    Io(#[from] std::io::Error),
    /// A line longer than any event termshare writes: not its log.
    #[error("the audit log has a line of over {0} bytes at offset {1}")]
    LineTooLong(usize, u64),
}

/// Whole lines (each with its start offset), and the offset after the last one.
type Lines = (Vec<(u64, Vec<u8>)>, u64);

/// The longest line read whole (an event is well under 64 KiB).
const MAX_LINE: usize = 4 << 20;
/// Bytes read per step.
const CHUNK: usize = 256 << 10;

/// A cursor over the committed part of the audit log.
pub struct LogTail {
    file: File,
    committed: watch::Receiver<Committed>,
    /// Where the next read starts.
    offset: u64,
    /// Every event up to this seq has been consumed.
    consumed_seq: u64,
}

impl LogTail {
    pub(super) fn new(file: File, committed: watch::Receiver<Committed>) -> Self {
        LogTail {
            file,
            committed,
            offset: 0,
            consumed_seq: 0,
        }
    }

    /// What the log holds for good now.
    pub fn committed(&self) -> Committed {
        *self.committed.borrow()
    }

    /// The seq up to which events have been consumed.
    pub fn consumed_seq(&self) -> u64 {
        self.consumed_seq
    }

    /// A handle that sees each commit, for waiting without holding the cursor.
    pub fn commits(&self) -> watch::Receiver<Committed> {
        self.committed.clone()
    }

    /// Position the cursor just after the event with seq `seq` (on the first line
    /// whose seq is greater). Reads the log from its start.
    pub fn seek_after(&mut self, seq: u64) -> Result<(), TailError> {
        self.offset = 0;
        self.consumed_seq = 0;
        let limit = self.committed().len;
        while self.offset < limit {
            let (lines, end) = self.read_lines(limit, CHUNK)?;
            if lines.is_empty() {
                break;
            }
            for (start, line) in lines {
                if line_seq(&line).is_some_and(|s| s > seq) {
                    self.offset = start;
                    self.consumed_seq = seq;
                    return Ok(());
                }
            }
            self.offset = end;
        }
        self.consumed_seq = seq;
        Ok(())
    }

    /// Up to `max_events` events after the cursor, from committed bytes only. The
    /// cursor moves only on [`LogTail::consume`], once they are shipped.
    pub fn read(&mut self, max_events: usize) -> Result<Batch, TailError> {
        let limit = self.committed().len;
        let saved = self.offset;
        let mut batch = Batch {
            end: self.offset,
            last_seq: self.consumed_seq,
            ..Batch::default()
        };
        while batch.events.len() < max_events && self.offset < limit {
            let (lines, _) = self.read_lines(limit, CHUNK)?;
            if lines.is_empty() {
                break;
            }
            for (start, line) in lines {
                if batch.events.len() >= max_events {
                    break;
                }
                let end = start + line.len() as u64 + 1;
                match serde_json::from_slice::<Value>(&line) {
                    Ok(object) => match object.get("seq").and_then(Value::as_u64) {
                        Some(seq) if seq > batch.last_seq => {
                            batch.last_seq = seq;
                            batch.events.push(TailedEvent { seq, object });
                        }
                        // Already consumed (a seek lands on a line boundary).
                        Some(_) => {}
                        None => batch.skipped += 1,
                    },
                    Err(_) => batch.skipped += 1,
                }
                batch.end = end;
                self.offset = end;
            }
        }
        self.offset = saved;
        Ok(batch)
    }

    /// The batch is shipped: move the cursor past it.
    pub fn consume(&mut self, batch: &Batch) {
        self.offset = batch.end;
        self.consumed_seq = batch.last_seq;
    }

    /// Whole lines from the cursor (their start offsets), within `limit` bytes of
    /// the file, reading about `want` bytes; and the offset after the last one.
    fn read_lines(&self, limit: u64, want: usize) -> Result<Lines, TailError> {
        let mut want = want;
        loop {
            let len = (limit - self.offset).min(want as u64) as usize;
            let mut buf = vec![0u8; len];
            let mut got = 0;
            while got < len {
                match self
                    .file
                    .read_at(&mut buf[got..], self.offset + got as u64)?
                {
                    0 => break,
                    n => got += n,
                }
            }
            buf.truncate(got);
            let Some(last_nl) = buf.iter().rposition(|&b| b == b'\n') else {
                if got as u64 == limit - self.offset || got < len {
                    // The committed length always ends a line; nothing whole here.
                    return Ok((Vec::new(), self.offset));
                }
                if want >= MAX_LINE {
                    return Err(TailError::LineTooLong(MAX_LINE, self.offset));
                }
                want *= 4;
                continue;
            };
            let mut lines = Vec::new();
            let mut start = 0usize;
            for line in buf[..last_nl].split(|&b| b == b'\n') {
                if !line.is_empty() {
                    lines.push((self.offset + start as u64, line.to_vec()));
                }
                start += line.len() + 1;
            }
            return Ok((lines, self.offset + last_nl as u64 + 1));
        }
    }
}

/// A line's `seq`, read without building the whole event.
fn line_seq(line: &[u8]) -> Option<u64> {
    #[derive(serde::Deserialize)]
    struct SeqOnly {
        seq: u64,
    }
    serde_json::from_slice::<SeqOnly>(line).ok().map(|s| s.seq)
}

impl Batch {
    /// The seq of the last event in the batch (the cursor's, if it is empty).
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }
}

#[cfg(test)]
mod tests {
    use crate::audit_file::JsonlFileSink;
    use crate::config::Durability;
    use termshare_actors::{AuditEvent, AuditKind, AuditSink};

    fn append(sink: &mut JsonlFileSink, n: usize) {
        let first = sink.next_seq();
        let events: Vec<AuditEvent> = (0..n)
            .map(|i| {
                let mut e = AuditEvent::new(AuditKind::ShareRequested, uuid::Uuid::now_v7());
                e.seq = first + i as u64;
                e
            })
            .collect();
        sink.append(&events).unwrap();
    }

    #[test]
    fn reads_what_was_committed_in_batches_and_resumes_after_a_seq() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let mut sink = JsonlFileSink::open(&path, Durability::Durable).unwrap();
        append(&mut sink, 10);
        let mut tail = sink.tail().unwrap();
        let last = tail.committed().last_seq;
        assert_eq!(last, 11, "service.started, then 10 events");
        let first = tail.read(4).unwrap();
        assert_eq!(
            first.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
            [1, 2, 3, 4]
        );
        // Not consumed: the same batch again.
        assert_eq!(tail.read(4).unwrap().events[0].seq, 1);
        tail.consume(&first);
        let rest = tail.read(100).unwrap();
        assert_eq!(rest.events.first().map(|e| e.seq), Some(5));
        assert_eq!(rest.last_seq(), 11);
        tail.consume(&rest);
        assert!(tail.read(100).unwrap().events.is_empty());

        append(&mut sink, 3);
        let more = tail.read(100).unwrap();
        assert_eq!(
            more.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
            [12, 13, 14]
        );
        assert_eq!(more.events[0].object["kind"], "share.requested");

        // A new reader resumes after seq 7.
        let mut again = sink.tail().unwrap();
        again.seek_after(7).unwrap();
        assert_eq!(again.read(1).unwrap().events[0].seq, 8);
        // After the last one: nothing to read until more is committed.
        again.seek_after(14).unwrap();
        assert!(again.read(10).unwrap().events.is_empty());
    }

    #[test]
    fn in_batched_mode_only_synced_events_are_committed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let mut sink = JsonlFileSink::open(&path, Durability::Batched).unwrap();
        let tail = sink.tail().unwrap();
        assert_eq!(tail.committed().last_seq, 1, "service.started is synced");
        // Within a second of the last sync: written, not synced, not committed.
        append(&mut sink, 3);
        assert_eq!(tail.committed().last_seq, 1);
        drop(sink); // service.stopped is synced, and with it everything before
        assert_eq!(tail.committed().last_seq, 5);
    }

    #[test]
    fn bytes_past_the_committed_length_are_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let sink = JsonlFileSink::open(&path, Durability::Durable).unwrap();
        let mut tail = sink.tail().unwrap();
        // Someone else's half-written line (or a write about to be cut back).
        use std::io::Write;
        let mut raw = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        raw.write_all(b"{\"seq\":99,\"kind\":\"share.requested\"}\n{\"seq\":100")
            .unwrap();
        let batch = tail.read(10).unwrap();
        assert_eq!(
            batch.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
            [1],
            "only service.started was committed"
        );
    }
}
