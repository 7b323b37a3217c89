//! How results are printed: tables and lines for people, one JSON object per line
//! with `--json`; and the exit on a closed stdout.

use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use serde_json::{json, Map, Value};
use termshare::actors::{AuditEvent, AuditKind};
use termshare::exit;

/// `println!` for a command whose output is the point: when stdout is a closed pipe
/// (`termshare audit | head -1`) the reader has what it wanted, so the command ends
/// quietly with exit 0 (not a panic, not an error). Only where nothing is left to clean
/// up: a foreground share prints with `say!`.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout().lock(), $($arg)*) {
            $crate::output::stdout_failed(e);
        }
    }};
}

/// `println!` that never ends the process: a foreground share whose stdout went away
/// keeps running until Ctrl-C or its TTL, and then stops its worker.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

pub fn stdout_failed(e: std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(exit::OK);
    }
    eprintln!("termshare: cannot write to stdout: {e}");
    std::process::exit(exit::INTERNAL);
}

/// Print `msg` on stderr and exit with `code`.
pub fn fail(code: i32, msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("termshare: {msg}");
    ExitCode::from(code as u8)
}

pub fn str_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// "4m 59s" until an RFC 3339 time; "expired" once past.
pub fn countdown(at: &Value) -> String {
    let Some(t) = at
        .as_str()
        .and_then(|s| humantime::parse_rfc3339_weak(s).ok())
    else {
        return "-".into();
    };
    match t.duration_since(SystemTime::now()) {
        Ok(left) => humantime::format_duration(Duration::from_secs(left.as_secs())).to_string(),
        Err(_) => "expired".into(),
    }
}

pub fn print_table(header: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let parts: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out!("{}", parts.join("  ").trim_end());
    };
    line(header.iter().map(|s| s.to_string()).collect());
    for r in rows {
        line(r);
    }
}

pub fn print_audit_warning(audit: &Value) {
    if audit["healthy"] == json!(false) {
        out!(
            "AUDIT LOG FAILING: {} (new shares are refused)",
            str_of(&audit["error"])
        );
    }
}

/// Each terminal's badge: its live shares, then its latest handoff (with the step and
/// the approver it waits for).
pub fn print_badges(board: &Value) {
    let mut rows = Vec::new();
    let mut handoffs = Vec::new();
    if let Value::Object(terminals) = board {
        for (terminal, badge) in terminals {
            let h = &badge["handoff"];
            if h.is_object() {
                // `step` counts from 1; the approvers are one per step.
                let waiting = h["step"]
                    .as_u64()
                    .and_then(|s| h["approvers"].get(usize::try_from(s).ok()?.checked_sub(1)?))
                    .map(str_of)
                    .unwrap_or_else(|| "-".into());
                handoffs.push(vec![
                    terminal.clone(),
                    str_of(&h["handoff_id"]),
                    format!("{} -> {}", str_of(&h["from"]), str_of(&h["to"])),
                    str_of(&h["state"]),
                    match h["step"].as_u64() {
                        Some(step) => format!("{step} of {}", str_of(&h["of"])),
                        None => "-".into(),
                    },
                    waiting,
                ]);
            }
            for s in badge["shares"].as_array().into_iter().flatten() {
                rows.push(vec![
                    terminal.clone(),
                    str_of(&s["share_id"]),
                    str_of(&s["backend"]),
                    str_of(&s["access"]),
                    match s["participants"].as_u64() {
                        Some(n) => n.to_string(),
                        None => "unknown".into(),
                    },
                    str_of(&s["state"]),
                    countdown(&s["expires_at"]),
                ]);
            }
        }
    }
    if rows.is_empty() {
        out!("no live shares");
    } else {
        print_table(
            &[
                "TERMINAL",
                "SHARE",
                "BACKEND",
                "ACCESS",
                "PARTICIPANTS",
                "STATE",
                "EXPIRES IN",
            ],
            rows,
        );
    }
    if !handoffs.is_empty() {
        out!("");
        print_table(
            &[
                "TERMINAL",
                "HANDOFF",
                "FROM -> TO",
                "STATE",
                "STEP",
                "WAITING FOR",
            ],
            handoffs,
        );
    }
}

pub fn print_share(share: &Value, as_json: bool, foreground: bool) {
    if as_json {
        say!("{share}");
        return;
    }
    say!(
        "share {} of terminal {} over {} ({})",
        str_of(&share["share_id"]),
        str_of(&share["terminal"]),
        str_of(&share["backend"]),
        str_of(&share["access"])
    );
    say!("link:           {}", str_of(&share["link"]));
    if share.get("read_only_link").is_some() {
        say!("read-only link: {}", str_of(&share["read_only_link"]));
    }
    say!(
        "expires at:     {} (in {})",
        str_of(&share["expires_at"]),
        countdown(&share["expires_at"])
    );
    if foreground {
        say!("Ctrl-C revokes the share.");
    }
}

pub fn print_event(e: &AuditEvent, as_json: bool) {
    if as_json {
        let mut o = Map::new();
        o.insert("kind".into(), json!(e.kind.as_str()));
        o.insert("share_id".into(), json!(e.correlation_id.to_string()));
        o.insert(
            "at".into(),
            json!(humantime::format_rfc3339_millis(e.at).to_string()),
        );
        for (k, v) in &e.details {
            o.insert(k.clone(), v.clone());
        }
        say!("{}", Value::Object(o));
    } else {
        let d = |k: &str| e.details.get(k).map(|v| v.to_string()).unwrap_or_default();
        match e.kind {
            AuditKind::ShareGraceWarning => {
                say!("warning: the share ends in {} ms", d("remaining_ms"))
            }
            AuditKind::ShareRevoked | AuditKind::ShareExpired | AuditKind::ShareStopped => {
                say!(
                    "{}: worker stopped in {} ms (escalated: {}, deadline met: {})",
                    e.kind.as_str().trim_start_matches("share."),
                    d("elapsed_ms"),
                    d("escalated"),
                    d("deadline_met")
                )
            }
            AuditKind::ShareFailed => say!("failed: {}", d("cause")),
            AuditKind::ShareJoined => say!(
                "joined: participant {} ({} watching)",
                d("participant"),
                d("participants")
            ),
            AuditKind::ShareLeft => say!(
                "left: participant {} ({} watching)",
                d("participant"),
                d("participants")
            ),
            other => say!("{}", other.as_str()),
        }
    }
}
