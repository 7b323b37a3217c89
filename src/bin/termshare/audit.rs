//! `audit`: read the audit log (the config's `[audit] path`), filtered, and with
//! `--follow` keep printing what is written.

use std::process::ExitCode;
use std::time::SystemTime;

use serde_json::json;
use termshare::actors::AuditEvent;
use termshare::config::Config;
use termshare::exit;

use crate::args::{AuditArgs, AuditFilterArgs};
use crate::output::fail;

/// An RFC 3339 time, or a duration meaning that long ago.
pub fn parse_when(s: &str) -> Result<SystemTime, String> {
    if let Ok(t) = humantime::parse_rfc3339_weak(s) {
        return Ok(t);
    }
    let ago = humantime::parse_duration(s)
        .map_err(|_| format!("`{s}` is neither an RFC 3339 time nor a duration"))?;
    SystemTime::now()
        .checked_sub(ago)
        .ok_or_else(|| format!("`{s}` is too long ago"))
}

/// `--share`, `--terminal`, `--kind`, `--since`, `--until`, checked (the fleet's
/// audit takes the same).
pub struct AuditFilter {
    pub share: Option<uuid::Uuid>,
    pub terminal: Option<String>,
    pub kind: Option<String>,
    pub since: Option<SystemTime>,
    pub until: Option<SystemTime>,
}

impl AuditFilter {
    pub fn new(a: &AuditFilterArgs) -> Result<Self, String> {
        let share = a
            .share
            .as_deref()
            .map(|s| uuid::Uuid::parse_str(s).map_err(|_| format!("--share `{s}` is not an id")))
            .transpose()?;
        let kind = a.kind.as_ref().map(|k| {
            if k.contains('.') {
                k.clone()
            } else {
                format!("share.{k}")
            }
        });
        Ok(AuditFilter {
            share,
            terminal: a.terminal.clone(),
            kind,
            since: a.since.as_deref().map(parse_when).transpose()?,
            until: a.until.as_deref().map(parse_when).transpose()?,
        })
    }

    fn accepts(&self, e: &AuditEvent) -> bool {
        self.share.is_none_or(|id| {
            e.correlation_id == id || e.details.get("share_id") == Some(&json!(id.to_string()))
        }) && self
            .terminal
            .as_deref()
            .is_none_or(|t| e.terminal.as_ref().is_some_and(|et| et.as_str() == t))
            && self
                .kind
                .as_deref()
                .is_none_or(|k| e.kind.as_str() == k || k == format!("share.{}", e.kind.as_str()))
            && self.since.is_none_or(|t| e.at >= t)
            && self.until.is_none_or(|t| e.at < t)
    }
}

pub fn print_audit_line(e: &AuditEvent, as_json: bool) {
    if as_json {
        out!("{}", serde_json::to_string(e).unwrap_or_default());
        return;
    }
    out!("{}", audit_line_text(e));
}

/// One event as a line of text: seq, time, kind, correlation id, principal,
/// terminal, backend, details.
pub fn audit_line_text(e: &AuditEvent) -> String {
    let details: Vec<String> = e.details.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!(
        "{:>6}  {}  {:<20}  {}  {}  {}  {}  {}",
        e.seq,
        humantime::format_rfc3339_millis(e.at),
        e.kind.as_str(),
        e.correlation_id,
        e.principal.as_ref().map_or("-", |p| p.as_str()),
        e.terminal.as_ref().map_or("-", |t| t.as_str()),
        e.backend.as_ref().map_or("-", |b| b.as_str()),
        details.join(" ")
    )
}

pub async fn audit(config: &Config, args: AuditArgs, as_json: bool) -> ExitCode {
    let filter = match AuditFilter::new(&args.filter) {
        Ok(f) => f,
        Err(e) => return fail(exit::INVALID, e),
    };
    let path = match args.file.clone().map_or_else(|| config.audit_path(), Ok) {
        Ok(p) => p,
        Err(e) => return fail(exit::INVALID, e),
    };
    let mut file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) => {
            return fail(
                exit::NOT_FOUND,
                format!("cannot open the audit log {}: {e}", path.display()),
            )
        }
    };
    // With --follow, the kernel says when the file changes (inotify): no polling.
    let mut changes = None;
    if args.follow {
        match watch_file(&path) {
            Ok(w) => changes = Some(w),
            Err(e) => {
                return fail(
                    exit::INTERNAL,
                    format!("cannot watch {}: {e}", path.display()),
                )
            }
        }
    }
    let mut pending: Vec<u8> = Vec::new();
    let mut bad = 0usize;
    loop {
        let mut chunk = Vec::new();
        if let Err(e) = std::io::Read::read_to_end(&mut file, &mut chunk) {
            return fail(exit::INTERNAL, format!("reading {}: {e}", path.display()));
        }
        pending.extend_from_slice(&chunk);
        // Only complete lines: a line being written (or torn) waits for its newline.
        if let Some(end) = pending.iter().rposition(|&b| b == b'\n') {
            let complete: Vec<u8> = pending.drain(..=end).collect();
            for line in complete.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                match serde_json::from_slice::<AuditEvent>(line) {
                    Ok(e) if filter.accepts(&e) => print_audit_line(&e, as_json),
                    Ok(_) => {}
                    Err(_) => bad += 1,
                }
            }
        }
        let Some((_watcher, rx)) = changes.as_mut() else {
            break;
        };
        // Like `tail -f`: look for more once the file has changed.
        if rx.recv().await.is_none() {
            break;
        }
    }
    if bad > 0 {
        eprintln!("termshare: skipped {bad} line(s) of the audit log that did not parse");
    }
    ExitCode::SUCCESS
}

/// A watcher of `path` (kept alive with the receiver) that sends a unit per change.
fn watch_file(
    path: &std::path::Path,
) -> notify::Result<(notify::RecommendedWatcher, tokio::sync::mpsc::Receiver<()>)> {
    use notify::Watcher;
    // One pending wake-up is enough: each wake-up reads to the end of the file.
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|e| e.kind.is_modify() || e.kind.is_create()) {
            let _ = tx.try_send(());
        }
    })?;
    watcher.watch(path, notify::RecursiveMode::NonRecursive)?;
    Ok((watcher, rx))
}
