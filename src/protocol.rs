//! The control protocol of `termshare serve`: JSON lines over a Unix socket.
//!
//! Version 1. One request per line, each an object with `"v": 1`, an `"id"` (string or
//! number, echoed back) and a `"cmd"`; unknown fields are errors. Every request gets
//! exactly one response line:
//!
//! ```text
//! → {"v":1,"id":1,"cmd":"share","terminal":"S","backend":"tty-share","ttl":"30m"}
//! ← {"v":1,"id":1,"ok":true,"result":{"share_id":"…","link":"…",…}}
//! → {"v":1,"id":2,"cmd":"revoke","share_id":"nope"}
//! ← {"v":1,"id":2,"ok":false,"error":{"code":"invalid","exit":2,"message":"…"}}
//! ```
//!
//! Commands: `ping`, `share {terminal, backend, ttl?, grace?, access?, as?}`, `list`,
//! `extend {share_id, by, as?}`, `revoke {share_id, as?}`, `switch {share_id, backend,
//! as?}`, `status`, `handoff_request {terminal, to, as?, reason?, backend?}`,
//! `handoff_approve {handoff_id, as?}`, `handoff_deny {handoff_id, as?, reason?}`,
//! `handoff_show {handoff_id}`, `handoff_list`, and `watch`, which answers once and
//! then streams
//! `{"v":1,"id":…,"event":"badges","badges":{…}}` on every badge change until the
//! client disconnects. A line that is not JSON, too long (64 KiB), or not a request
//! gets an error response with `"id": null` when no id could be read.

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use termshare_actors::{RevokeReport, ShareError, ShareInfo};

use crate::exit;

/// The protocol version this daemon speaks; every request's `v` must equal it.
pub const VERSION: u64 = 1;
/// Longest request line accepted; longer lines are answered with `line_too_long`.
pub const MAX_LINE: usize = 64 * 1024;

/// What a request asks for: its `cmd` (in snake case) and that command's fields.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(tag = "cmd", rename_all = "snake_case", deny_unknown_fields)]
pub enum Command {
    /// Check the daemon is up; answers `{"version","protocol"}`.
    Ping {},
    /// Start a share; answers with the share (see [`share_json`]) once its link is known.
    Share {
        /// The host terminal to share (a tmux session by default).
        terminal: String,
        /// The backend that serves the share (`tty-share`, `tmate`, `upterm`, ...).
        backend: String,
        /// How long the share lives (`30m`); absent: the daemon's default TTL.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ttl: Option<String>,
        /// Warn this long before expiry (`["5m","1m"]`); absent: the daemon's warnings.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        grace: Option<Vec<String>>,
        /// `read-only` or `read-write`; absent: `read-write`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        access: Option<String>,
        /// Act as this principal; absent: the caller's first principal.
        #[serde(rename = "as", default, skip_serializing_if = "Option::is_none")]
        principal: Option<String>,
        /// End the share if nobody joined within this (`5m`); absent: the config's
        /// `[ttl] join_timeout`, if any. Needs a backend that counts participants.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        join_timeout: Option<String>,
        /// Let at most this many participants in at once; absent: no limit.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_participants: Option<u32>,
        /// Record what the terminal shows (asciicast v2); absent: false.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        record: bool,
    },
    /// The live shares the caller may manage (their links are secrets), as an array.
    List {},
    /// Move a share's expiry later, within its rule's `max_ttl`; answers with the share.
    Extend {
        /// The share to extend.
        share_id: String,
        /// How much later than its current expiry (`15m`).
        by: String,
        /// Act as this principal; absent: the caller's first principal.
        #[serde(rename = "as", default, skip_serializing_if = "Option::is_none")]
        principal: Option<String>,
    },
    /// End a share now; answers with the revoke's report (see [`report_json`]).
    Revoke {
        /// The share to end.
        share_id: String,
        /// Act as this principal; absent: the caller's first principal.
        #[serde(rename = "as", default, skip_serializing_if = "Option::is_none")]
        principal: Option<String>,
    },
    /// Give a share a new link, cutting off everyone who joined through the old one;
    /// answers with the share and its new link.
    Rotate {
        /// The share to rotate.
        share_id: String,
        /// Act as this principal; absent: the caller's first principal.
        #[serde(rename = "as", default, skip_serializing_if = "Option::is_none")]
        principal: Option<String>,
    },
    /// Move a live share to another backend, make-before-break; answers with the share.
    Switch {
        /// The share to move.
        share_id: String,
        /// The backend to move it to.
        backend: String,
        /// Act as this principal; absent: the caller's first principal.
        #[serde(rename = "as", default, skip_serializing_if = "Option::is_none")]
        principal: Option<String>,
    },
    /// The badges the caller may see and the audit log's health: `{"badges","audit"}`.
    Status {},
    /// Answer once, then stream a `badges` event on every badge change until the
    /// client sends anything or disconnects.
    Watch {},
    /// The lane panel's address with a fresh one-time secret for the asking identity:
    /// `{"url"}`. An error when the daemon serves no panel (`[panel] listen`).
    Panel {},
    /// Ask to hand a terminal to another principal through the policy's approval
    /// chain; answers with the pending handoff (see [`handoff_json`]).
    HandoffRequest {
        /// The host terminal handed off.
        terminal: String,
        /// Who receives it (`human:NAME` or `agent:NAME`).
        to: String,
        /// Hand off as this principal; absent: the caller's first principal.
        #[serde(rename = "as", default, skip_serializing_if = "Option::is_none")]
        principal: Option<String>,
        /// Why, for the approvers and the audit log; absent: empty.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        /// Start a share for the receiver over this backend once approved; absent: no
        /// new share.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        backend: Option<String>,
        /// The receiver share's TTL (`20m`); needs `backend`; absent: the default TTL.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ttl: Option<String>,
    },
    /// Approve a handoff's current step; answers with the handoff (after the last step,
    /// once its package is ready).
    HandoffApprove {
        /// The handoff to approve.
        handoff_id: String,
        /// Approve as this principal; absent: the caller's first principal.
        #[serde(rename = "as", default, skip_serializing_if = "Option::is_none")]
        principal: Option<String>,
    },
    /// Deny a pending handoff (as its current step's approver or its receiver), ending it.
    HandoffDeny {
        /// The handoff to deny.
        handoff_id: String,
        /// Deny as this principal; absent: the caller's first principal.
        #[serde(rename = "as", default, skip_serializing_if = "Option::is_none")]
        principal: Option<String>,
        /// Why; absent: "denied by PRINCIPAL".
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// One handoff, if the caller is a party to it (the package only for its receiver).
    HandoffShow {
        /// The handoff to show.
        handoff_id: String,
    },
    /// The handoffs the caller is a party to (all of them for the operator), as an array.
    HandoffList {},
}

/// A parsed request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// The request's `id` (a string of at most 128 characters, or a number), echoed back.
    pub id: Value,
    /// What the request asks for.
    pub command: Command,
}

/// A protocol-level error: the line could not be understood as a request.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// The line is not valid JSON; holds the parser's message.
    #[error("the line is not valid JSON: {0}")]
    BadJson(String),
    /// The line is JSON but not an object.
    #[error("the request must be a JSON object")]
    NotAnObject,
    /// `v` is not [`VERSION`]; holds the value sent (at most 20 characters).
    #[error("unsupported protocol version {0}; this daemon speaks version 1")]
    UnsupportedVersion(String),
    /// The request has no `v`.
    #[error("the request has no `v` (protocol version)")]
    MissingVersion,
    /// `id` is missing, or neither a number nor a string of at most 128 characters.
    #[error("the request needs an `id` (a string of at most 128 characters, or a number)")]
    BadId,
    /// Unknown `cmd`, or a missing, mistyped or unknown field; holds why (at most 300
    /// characters).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The line is longer than [`MAX_LINE`].
    #[error("the line is longer than {MAX_LINE} bytes")]
    LineTooLong,
}

impl ProtocolError {
    /// The response's `error.code`: `bad_json`, `bad_request`, `unsupported_version` or
    /// `line_too_long`.
    pub fn code(&self) -> &'static str {
        match self {
            ProtocolError::BadJson(_) => "bad_json",
            ProtocolError::NotAnObject | ProtocolError::BadId | ProtocolError::MissingVersion => {
                "bad_request"
            }
            ProtocolError::UnsupportedVersion(_) => "unsupported_version",
            ProtocolError::BadRequest(_) => "bad_request",
            ProtocolError::LineTooLong => "line_too_long",
        }
    }
}

/// Parse one request line. On error, returns the request's id when it could be read.
pub fn parse_request(line: &[u8]) -> Result<Request, (Value, ProtocolError)> {
    let value: Value = serde_json::from_slice(line)
        .map_err(|e| (Value::Null, ProtocolError::BadJson(e.to_string())))?;
    let Value::Object(mut obj) = value else {
        return Err((Value::Null, ProtocolError::NotAnObject));
    };
    let id = match obj.remove("id") {
        Some(Value::String(s)) if s.chars().count() <= 128 => Value::String(s),
        Some(Value::Number(n)) => Value::Number(n),
        _ => return Err((Value::Null, ProtocolError::BadId)),
    };
    match obj.remove("v") {
        Some(Value::Number(n)) if n.as_u64() == Some(VERSION) => {}
        Some(other) => {
            let shown: String = other.to_string().chars().take(20).collect();
            return Err((id, ProtocolError::UnsupportedVersion(shown)));
        }
        None => return Err((id, ProtocolError::MissingVersion)),
    }
    let command = Command::deserialize(Value::Object(obj)).map_err(|e| {
        let msg: String = e.to_string().chars().take(300).collect();
        (id.clone(), ProtocolError::BadRequest(msg))
    })?;
    Ok(Request { id, command })
}

/// `{"v":1,"id":…,"ok":true,"result":…}`
pub fn ok(id: &Value, result: Value) -> Value {
    json!({"v": VERSION, "id": id, "ok": true, "result": result})
}

/// `{"v":1,"id":…,"ok":false,"error":{"code","exit","message"}}`
pub fn error(id: &Value, code: &str, exit_code: i32, message: &str) -> Value {
    json!({"v": VERSION, "id": id, "ok": false,
           "error": {"code": code, "exit": exit_code, "message": message}})
}

/// The error response to a line that is not a valid request (exit code 2, invalid).
pub fn protocol_error(id: &Value, e: &ProtocolError) -> Value {
    error(id, e.code(), exit::INVALID, &e.to_string())
}

/// The error response to a failed command, with the error's stable code and exit code.
pub fn share_error(id: &Value, e: &ShareError) -> Value {
    error(id, share_error_code(e), exit::code(e), &e.to_string())
}

/// A stable machine-readable name for each kind of failure.
pub fn share_error_code(e: &ShareError) -> &'static str {
    exit::classify(e).0
}

fn rfc3339(t: std::time::SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// A share as the owner sees it: `{"share_id","terminal","backend","access","link",
/// "read_only_link"?,"expires_at", "state","principal","started_at","participants",
/// "worker_pid"?}`.
pub fn share_json(info: &ShareInfo) -> Value {
    let mut o = Map::new();
    o.insert("share_id".into(), json!(info.share_id.to_string()));
    o.insert("terminal".into(), json!(info.terminal.as_str()));
    o.insert("backend".into(), json!(info.backend.as_str()));
    o.insert("access".into(), json!(info.access.as_str()));
    o.insert("link".into(), json!(info.links.link));
    if let Some(ro) = &info.links.read_only_link {
        o.insert("read_only_link".into(), json!(ro));
    }
    o.insert("expires_at".into(), json!(rfc3339(info.expires_at)));
    o.insert("state".into(), json!(info.state.as_str()));
    o.insert("principal".into(), json!(info.principal.as_str()));
    o.insert("started_at".into(), json!(rfc3339(info.started_at)));
    o.insert("participants".into(), json!(info.participants));
    if let Some(pid) = info.worker_pid {
        o.insert("worker_pid".into(), json!(pid));
    }
    Value::Object(o)
}

/// A handoff as its parties see it: `{"handoff_id","state","terminal","from","to",
/// "reason","rule_id","approvers":[…],"step"?,"approvals":[…],"refusal"?,"package"?}`.
pub fn handoff_json(view: &termshare_actors::HandoffView) -> Value {
    serde_json::to_value(view).unwrap_or(Value::Null)
}

/// A revoke's report: `{"share_id","reason","elapsed_ms","escalated","already_gone",
/// "participants_before","participants_after","deadline_met"}` (a count is null where
/// the backend cannot tell).
pub fn report_json(r: &RevokeReport) -> Value {
    json!({
        "share_id": r.share_id.to_string(),
        "reason": r.reason.to_string(),
        "elapsed_ms": r.elapsed.as_secs_f64() * 1000.0,
        "escalated": r.escalated,
        "already_gone": r.already_gone,
        "participants_before": r.participants_before,
        "participants_after": r.participants_after,
        "deadline_met": r.deadline_met,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_share_request_parses() {
        let r = parse_request(
            br#"{"v":1,"id":"a","cmd":"share","terminal":"S","backend":"tty-share","ttl":"30m","as":"human:x"}"#,
        )
        .unwrap();
        assert_eq!(r.id, json!("a"));
        assert_eq!(
            parse_request(br#"{"v":1,"id":2,"cmd":"list"}"#)
                .unwrap()
                .command,
            Command::List {}
        );
        assert!(
            matches!(r.command, Command::Share { ref principal, .. } if principal.as_deref() == Some("human:x"))
        );
    }

    #[test]
    fn bad_lines_are_typed_errors() {
        let cases: &[(&[u8], &str)] = &[
            (b"not json", "bad_json"),
            (b"[1,2]", "bad_request"),
            (br#"{"v":1,"cmd":"list"}"#, "bad_request"),
            (br#"{"v":2,"id":1,"cmd":"list"}"#, "unsupported_version"),
            (br#"{"id":1,"cmd":"list"}"#, "bad_request"),
            (br#"{"v":1,"id":1,"cmd":"format_disk"}"#, "bad_request"),
            (
                br#"{"v":1,"id":1,"cmd":"list","extra":true}"#,
                "bad_request",
            ),
            (
                br#"{"v":1,"id":1,"cmd":"revoke","share_id":7}"#,
                "bad_request",
            ),
            (
                br#"{"v":1,"id":1,"cmd":"share","terminal":"S"}"#,
                "bad_request",
            ),
            (br#"{"v":1,"id":{"x":1},"cmd":"list"}"#, "bad_request"),
            (b"\xff\xfe", "bad_json"),
        ];
        for (line, code) in cases {
            let (_, e) = parse_request(line).unwrap_err();
            assert_eq!(e.code(), *code, "{}", String::from_utf8_lossy(line));
        }
    }

    #[test]
    fn the_id_is_echoed_when_it_could_be_read() {
        let (id, _) = parse_request(br#"{"v":1,"id":42,"cmd":"nope"}"#).unwrap_err();
        assert_eq!(id, json!(42));
    }
}
