//! Typed errors. Every refusal names what was wrong so that an operator can act on it.

use std::time::Duration;

use thiserror::Error;

use crate::types::{BackendName, HandoffId, RevokeReport, ShareId, TerminalName};

/// A value that failed validation. Nothing was changed.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[error("invalid {what} `{value}`: {why}")]
pub struct InvalidInput {
    pub what: String,
    pub value: String,
    pub why: String,
}

impl InvalidInput {
    pub fn new(what: &str, value: &str, why: &str) -> Self {
        // Cap the echoed value: hostile input should not flood an error line.
        let value: String = value.chars().take(80).collect();
        InvalidInput {
            what: what.to_owned(),
            value,
            why: why.to_owned(),
        }
    }
}

/// Errors a backend reports when starting or running a worker.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum BackendError {
    /// The backend cannot be used here: binary missing, configuration incomplete.
    #[error("backend {backend} is unavailable: {reason}")]
    Unavailable { backend: String, reason: String },
    /// No link arrived in time; nothing of the worker is left running.
    #[error("backend {backend} gave no link within {after:?}: {detail}")]
    LinkTimeout {
        backend: String,
        after: Duration,
        detail: String,
    },
    /// The worker process could not be started or died before giving a link.
    #[error("backend {backend} failed to start: {detail}")]
    StartFailed { backend: String, detail: String },
    /// The share request cannot be expressed for this backend.
    #[error("backend {backend} cannot serve this share: {detail}")]
    Unsupported { backend: String, detail: String },
}

/// Errors of the share API. Each maps to a distinct CLI exit code.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum ShareError {
    #[error(transparent)]
    Invalid(#[from] InvalidInput),
    #[error("denied: {reason}")]
    Denied {
        rule_id: Option<String>,
        reason: String,
    },
    #[error("requested ttl {requested} is above the policy maximum {max} (rule {rule_id})")]
    TtlAboveMax {
        requested: String,
        max: String,
        rule_id: String,
    },
    #[error("terminal {terminal} already has {limit} live share(s), its limit")]
    LimitReached { terminal: TerminalName, limit: u32 },
    /// The service runs as many shares (or holds as many pending handoffs) as it may.
    #[error("termshare already holds {limit} {what}, its limit")]
    ServiceFull { what: &'static str, limit: usize },
    #[error("unknown backend `{0}`")]
    UnknownBackend(BackendName),
    #[error("unknown terminal `{terminal}`: {detail}")]
    UnknownTerminal {
        terminal: TerminalName,
        detail: String,
    },
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error("no live share {0}")]
    NotFound(ShareId),
    /// The whole start (record, terminal check, link, announcement) took longer than
    /// its deadline: the share was stopped and never announced.
    #[error("the share did not start within {after}; it was stopped, unannounced")]
    StartTimedOut { after: String },
    #[error("share {0} has expired")]
    ShareExpired(ShareId),
    #[error("share {0} is ending")]
    ShareEnding(ShareId),
    #[error("share {0} has already ended ({1})")]
    ShareEnded(ShareId, crate::types::EndReason),
    #[error("share {share_id}: extending by {by} would end it {total} after its start, above the policy maximum {max}")]
    ExtendAboveMax {
        share_id: ShareId,
        by: String,
        total: String,
        max: String,
    },
    /// The share ended, but its worker was not gone within the revoke deadline: it was
    /// killed late. Never reported as a success.
    #[error("share {}: the worker was gone only after {:?}, past the revoke deadline (killed)", .0.share_id, .0.elapsed)]
    RevokeDeadlineMissed(Box<RevokeReport>),
    #[error("no handoff {0}")]
    HandoffNotFound(HandoffId),
    #[error("handoff {handoff_id} is over: {state}")]
    HandoffClosed {
        handoff_id: HandoffId,
        state: String,
    },
    #[error("handoff {handoff_id}: step {step} is for {expected} to approve, not {got}")]
    NotApprover {
        handoff_id: HandoffId,
        step: usize,
        expected: String,
        got: String,
    },
    /// Every step approved, but the handoff could not be carried out (the context could
    /// not be captured, or the receiver's required share did not start). Nothing was
    /// handed over; the audit has `handoff.failed`.
    #[error("handoff {handoff_id} failed: {cause}")]
    HandoffFailed {
        handoff_id: HandoffId,
        cause: Box<ShareError>,
    },
    #[error("the audit log refused the event: {0}")]
    AuditUnavailable(String),
    #[error("the share service is shutting down")]
    ShuttingDown,
    #[error("internal error: {0}")]
    Internal(String),
}

impl ShareError {
    pub fn internal(e: impl std::fmt::Display) -> Self {
        ShareError::Internal(e.to_string())
    }
}

/// Format a duration the way the policy and config files write them.
pub fn human(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}
