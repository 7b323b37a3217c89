//! Typed errors. Every refusal names what was wrong so that an operator can act on it.

use std::time::Duration;

use thiserror::Error;

use crate::types::{BackendName, HandoffId, RevokeReport, ShareId, TerminalName};

/// A value that failed validation. Nothing was changed.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[error("invalid {what} `{value}`: {why}")]
pub struct InvalidInput {
    /// What the value is (`ttl`, `terminal name`, ...).
    pub what: String,
    /// The offending value, cut to 80 characters.
    pub value: String,
    /// Why it was refused.
    pub why: String,
}

impl InvalidInput {
    /// An error for `value` of `what`; the echoed value is capped at 80 characters.
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
    Unavailable {
        /// The backend's name.
        backend: String,
        /// What is missing, and what to set.
        reason: String,
    },
    /// No link arrived in time; nothing of the worker is left running.
    #[error("backend {backend} gave no link within {after:?}: {detail}")]
    LinkTimeout {
        /// The backend's name.
        backend: String,
        /// The link timeout that passed.
        after: Duration,
        /// The backend's own account of why no link came.
        detail: String,
    },
    /// The worker process could not be started or died before giving a link.
    #[error("backend {backend} failed to start: {detail}")]
    StartFailed {
        /// The backend's name.
        backend: String,
        /// What failed, with the program's own output where there is some.
        detail: String,
    },
    /// The share request cannot be expressed for this backend.
    #[error("backend {backend} cannot serve this share: {detail}")]
    Unsupported {
        /// The backend's name.
        backend: String,
        /// What in the request it cannot serve.
        detail: String,
    },
}

/// Errors of the share API. Each maps to a distinct CLI exit code.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum ShareError {
    /// A value in the request failed validation.
    #[error(transparent)]
    Invalid(#[from] InvalidInput),
    /// The policy, a required join restriction, or the caller's unproven claim refused it.
    #[error("denied: {reason}")]
    Denied {
        /// The policy rule that decided, if one did.
        rule_id: Option<String>,
        /// Why, for the operator.
        reason: String,
    },
    /// The share's TTL, counted from its start, exceeds the allowing rule's `max_ttl`.
    #[error("requested ttl {requested} is above the policy maximum {max} (rule {rule_id})")]
    TtlAboveMax {
        /// The TTL asked for.
        requested: String,
        /// The rule's maximum.
        max: String,
        /// The rule that allowed the share.
        rule_id: String,
    },
    /// The terminal already has as many live shares as the config or rule allows.
    #[error("terminal {terminal} already has {limit} live share(s), its limit")]
    LimitReached {
        /// The terminal asked for.
        terminal: TerminalName,
        /// The per-terminal limit in force.
        limit: u32,
    },
    /// The service runs as many shares (or holds as many pending handoffs) as it may.
    #[error("termshare already holds {limit} {what}, its limit")]
    ServiceFull {
        /// What is full (`live shares`, `pending handoffs`, ...).
        what: &'static str,
        /// The limit reached.
        limit: usize,
    },
    /// No backend of that name is registered.
    #[error("unknown backend `{0}`")]
    UnknownBackend(BackendName),
    /// The terminal host found no such terminal, or could not check it.
    #[error("unknown terminal `{terminal}`: {detail}")]
    UnknownTerminal {
        /// The terminal asked for.
        terminal: TerminalName,
        /// The terminal host's answer.
        detail: String,
    },
    /// The backend could not be used or could not start the worker.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// No live share has this id, and none that ended recently did.
    #[error("no live share {0}")]
    NotFound(ShareId),
    /// The whole start (record, terminal check, link, announcement) took longer than
    /// its deadline: the share was stopped and never announced.
    #[error("the share did not start within {after}; it was stopped, unannounced")]
    StartTimedOut {
        /// The start budget that passed.
        after: String,
    },
    /// The share is already being stopped, so it cannot be changed.
    #[error("share {0} is ending")]
    ShareEnding(ShareId),
    /// The share has ended (expired, revoked, stopped, failed...), so it can no longer
    /// be acted on; the reason says how. One variant for every way of ending, so a
    /// caller matches `ShareEnded(_, EndReason::Expired)` for an expiry.
    #[error("share {0} has already ended ({1})")]
    ShareEnded(ShareId, crate::types::EndReason),
    /// An extension would take the share's total TTL past the rule's `max_ttl`.
    #[error("share {share_id}: extending by {by} would end it {total} after its start, above the policy maximum {max}")]
    ExtendAboveMax {
        /// The share asked to be extended.
        share_id: ShareId,
        /// The extension asked for.
        by: String,
        /// The TTL from the share's start it would have.
        total: String,
        /// The rule's maximum.
        max: String,
    },
    /// The share ended, but its worker was not gone within the revoke deadline: it was
    /// killed late. Never reported as a success.
    #[error("share {}: the worker was gone only after {:?}, past the revoke deadline (killed)", .0.share_id, .0.elapsed)]
    RevokeDeadlineMissed(Box<RevokeReport>),
    /// No handoff has this id.
    #[error("no handoff {0}")]
    HandoffNotFound(HandoffId),
    /// The handoff is no longer pending, so it takes no approval or denial.
    #[error("handoff {handoff_id} is over: {state}")]
    HandoffClosed {
        /// The handoff.
        handoff_id: HandoffId,
        /// How it ended.
        state: String,
    },
    /// The caller does not match the approver the handoff's current step names.
    #[error("handoff {handoff_id}: step {step} is for {expected} to approve, not {got}")]
    NotApprover {
        /// The handoff.
        handoff_id: HandoffId,
        /// The approval step waiting (from 1).
        step: usize,
        /// The approver pattern of that step.
        expected: String,
        /// The principal that tried to approve.
        got: String,
    },
    /// Every step approved, but the handoff could not be carried out (the context could
    /// not be captured, or the receiver's required share did not start). Nothing was
    /// handed over; the audit has `handoff.failed`.
    #[error("handoff {handoff_id} failed: {cause}")]
    HandoffFailed {
        /// The handoff.
        handoff_id: HandoffId,
        /// What failed.
        cause: Box<ShareError>,
    },
    /// The audit log could not keep the event in time: termshare fails closed.
    #[error("the audit log refused the event: {0}")]
    AuditUnavailable(String),
    /// The service is stopping and takes no new work.
    #[error("the share service is shutting down")]
    ShuttingDown,
    /// An actor did not answer a call within its time: the service is overloaded or
    /// stuck. Nothing is known of whether the call took effect.
    #[error("no answer from the {actor} within {after}")]
    NoAnswer {
        /// Which actor was asked (`root`, `handoff manager`).
        actor: &'static str,
        /// How long the call waited.
        after: String,
    },
    /// A failure no other variant covers: an actor that would not spawn, a worker that crashed.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ShareError {
    /// [`ShareError::Internal`] from anything displayable.
    pub fn internal(e: impl std::fmt::Display) -> Self {
        ShareError::Internal(e.to_string())
    }
}

/// Format a duration the way the policy and config files write them.
pub fn human(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}
