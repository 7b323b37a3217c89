//! What reopening the audit log repairs, so that the record stays true after a crash:
//!
//! - a torn last line (a crash in the middle of a write) is cut off;
//! - shares a crash left open (`share.requested` or `share.started`, never an end) get
//!   a `share.ended` with cause `termshare restarted`, so every start has exactly one
//!   end. Only a writer that holds the log alone (an exclusive `flock`) may say that:
//!   a share another live termshare is running is not over. That writer then records
//!   `service.started` with `checkpoint: true`: no share before that line is open, so
//!   the next recovery reads only from there on (the log can be years long).
//!
//! Every writer holds a shared `flock` on the log for its life; a writer that could
//! not take it exclusively at its start records `service.started` with
//! `checkpoint: false` and leaves recovery to the next writer that is alone.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;

use termshare_actors::{AuditEvent, AuditKind};
use uuid::Uuid;

/// The cause written on a share a crash left open.
pub const RESTARTED: &str = "termshare restarted";

/// More open shares than this in the part of the log that is read means the log is
/// not one termshare wrote; recovery refuses it rather than hold an unbounded table.
const MAX_OPEN: usize = 100_000;

/// Cut a torn last line; the last sequence number in the file (0: none) and how many
/// bytes were cut. Reads only the tail.
pub(super) fn cut_torn_line(file: &mut File) -> std::io::Result<(u64, u64)> {
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok((0, 0));
    }
    let mut torn_bytes = 0;
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
        if torn_bytes == 0 && complete < tail.len() {
            torn_bytes = (tail.len() - complete) as u64;
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
            return Ok((seq, torn_bytes));
        }
        if start == 0 {
            return Ok((0, torn_bytes));
        }
        window *= 4;
    }
}

/// The shares open since the last checkpoint: for each, its first event there (to
/// name its principal, terminal and backend), in the order they appear.
pub(super) fn open_shares(file: &File) -> std::io::Result<Vec<AuditEvent>> {
    let from = after_last_checkpoint(file)?;
    let mut reader = BufReader::new(file);
    reader.seek(SeekFrom::Start(from))?;
    let mut open: HashMap<Uuid, AuditEvent> = HashMap::new();
    let mut order = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        // Only share lines matter: skip the rest without parsing them.
        if memchr::memmem::find(&line, b"\"kind\":\"share.").is_none() {
            continue;
        }
        let Ok(event) = serde_json::from_slice::<AuditEvent>(&line) else {
            continue;
        };
        match event.kind {
            kind if kind.is_terminal() => {
                open.remove(&event.correlation_id);
            }
            AuditKind::ShareRequested | AuditKind::ShareStarted
                if !open.contains_key(&event.correlation_id) =>
            {
                if open.len() >= MAX_OPEN {
                    return Err(std::io::Error::other(format!(
                        "more than {MAX_OPEN} shares open at once: not a log termshare wrote"
                    )));
                }
                order.push(event.correlation_id);
                open.insert(event.correlation_id, event);
            }
            _ => {}
        }
    }
    Ok(order
        .into_iter()
        .filter_map(|id| open.remove(&id))
        .collect())
}

/// The offset just past the last `service.started` that is a checkpoint (0 if none),
/// found by reading the file backwards in blocks.
fn after_last_checkpoint(file: &File) -> std::io::Result<u64> {
    const BLOCK: u64 = 64 * 1024;
    let len = file.metadata()?.len();
    let mut end = len;
    // The start of the line that the previous (later) block began in the middle of.
    let mut carry: Vec<u8> = Vec::new();
    while end > 0 {
        let start = end.saturating_sub(BLOCK);
        let mut buf = vec![0; (end - start) as usize];
        file.read_exact_at(&mut buf, start)?;
        buf.extend_from_slice(&carry);
        // Complete lines are those after the first newline (or all, at the start).
        let first_break = if start == 0 {
            0
        } else {
            match buf.iter().position(|&b| b == b'\n') {
                Some(i) => i + 1,
                None => {
                    carry = buf;
                    end = start;
                    continue;
                }
            }
        };
        let mut line_end = buf.len();
        while line_end > first_break {
            let line_start = buf[first_break..line_end - 1]
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(first_break, |i| first_break + i + 1);
            if is_checkpoint(&buf[line_start..line_end]) {
                return Ok(start + line_end as u64);
            }
            line_end = line_start;
        }
        buf.truncate(first_break);
        carry = buf;
        end = start;
    }
    Ok(0)
}

fn is_checkpoint(line: &[u8]) -> bool {
    if memchr::memmem::find(line, b"\"kind\":\"service.started\"").is_none() {
        return false;
    }
    serde_json::from_slice::<AuditEvent>(line).is_ok_and(|e| {
        e.kind == AuditKind::ServiceStarted && e.details.get("checkpoint") == Some(&true.into())
    })
}

/// `share.ended` for a share a crash left open, from its first event.
pub(super) fn ended(open: &AuditEvent) -> AuditEvent {
    let mut e = AuditEvent::new(AuditKind::ShareEnded, open.correlation_id)
        .detail("cause", RESTARTED)
        .detail("last_known", open.kind.as_str())
        .detail("since_seq", open.seq);
    e.principal = open.principal.clone();
    e.terminal = open.terminal.clone();
    e.backend = open.backend.clone();
    e
}

/// The last sequence number in the file, without changing it (for a writer that is
/// not alone: a line that looks torn may be another writer's write in progress).
pub(super) fn last_seq(file: &File) -> std::io::Result<u64> {
    let len = file.metadata()?.len();
    let mut window: u64 = 64 * 1024;
    loop {
        let start = len.saturating_sub(window);
        let mut tail = vec![0; (len - start) as usize];
        file.read_exact_at(&mut tail, start)?;
        let found = tail
            .split(|&b| b == b'\n')
            .rev()
            .filter_map(|l| serde_json::from_slice::<AuditEvent>(l).ok())
            .map(|e| e.seq)
            .next();
        match found {
            Some(seq) => return Ok(seq),
            None if start == 0 => return Ok(0),
            None => window *= 4,
        }
    }
}
