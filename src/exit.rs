//! The CLI's exit codes: one per kind of failure, so scripts can tell them apart.

use termshare_actors::{BackendError, EndReason, ShareError};

/// Success.
pub const OK: i32 = 0;
/// Internal error (a bug, or the service went away).
pub const INTERNAL: i32 = 1;
/// Invalid input: a bad flag, config file or policy file. (clap uses 2 as well.)
pub const INVALID: i32 = 2;
/// The policy denied the share (including a TTL above the rule's maximum).
pub const DENIED: i32 = 3;
/// The backend cannot be used or failed to start (binary missing, start failed).
pub const BACKEND_UNAVAILABLE: i32 = 4;
/// The backend gave no link in time (relay unreachable).
pub const LINK_TIMEOUT: i32 = 5;
/// No such terminal, share or backend.
pub const NOT_FOUND: i32 = 6;
/// The terminal already has as many live shares as its limit.
pub const LIMIT_REACHED: i32 = 7;
/// The share has expired or already ended (e.g. extend after expiry, revoke twice).
pub const EXPIRED: i32 = 8;
/// The audit log cannot keep events: nothing is acknowledged (fail closed).
pub const AUDIT_UNAVAILABLE: i32 = 9;
/// A revoke ended the share only after its deadline (the worker had to be killed late).
pub const REVOKE_DEADLINE_MISSED: i32 = 10;
/// No daemon answers on the control socket (for commands that need one).
pub const NO_DAEMON: i32 = 11;
/// The fleet database cannot be reached or has no fleet schema (`termshare fleet`).
pub const FLEET_UNAVAILABLE: i32 = 12;

/// The exit code of an error.
pub fn code(e: &ShareError) -> i32 {
    classify(e).1
}

/// Each kind of failure's stable name (the protocol's `error.code`) and exit code, in
/// one table so the two never disagree.
pub fn classify(e: &ShareError) -> (&'static str, i32) {
    match e {
        ShareError::Invalid(_) => ("invalid", INVALID),
        ShareError::Denied { .. }
        | ShareError::TtlAboveMax { .. }
        | ShareError::ExtendAboveMax { .. } => ("denied", DENIED),
        ShareError::LimitReached { .. } | ShareError::ServiceFull { .. } => {
            ("limit_reached", LIMIT_REACHED)
        }
        ShareError::UnknownBackend(_)
        | ShareError::UnknownTerminal { .. }
        | ShareError::NotFound(_)
        | ShareError::HandoffNotFound(_) => ("not_found", NOT_FOUND),
        ShareError::Backend(BackendError::LinkTimeout { .. }) => ("link_timeout", LINK_TIMEOUT),
        ShareError::StartTimedOut { .. } => ("start_timed_out", LINK_TIMEOUT),
        ShareError::Backend(BackendError::Unsupported { .. }) => ("invalid", INVALID),
        ShareError::Backend(_) => ("backend_unavailable", BACKEND_UNAVAILABLE),
        ShareError::ShareEnded(_, EndReason::Expired) => ("expired", EXPIRED),
        ShareError::ShareEnding(_) => ("ending", EXPIRED),
        ShareError::ShareEnded(..) => ("ended", EXPIRED),
        ShareError::AuditUnavailable(_) => ("audit_unavailable", AUDIT_UNAVAILABLE),
        ShareError::RevokeDeadlineMissed(_) => ("revoke_deadline_missed", REVOKE_DEADLINE_MISSED),
        ShareError::NotApprover { .. } => ("not_approver", DENIED),
        ShareError::HandoffClosed { .. } => ("handoff_closed", EXPIRED),
        // The cause's own code: a receiver share at the terminal's limit exits 7.
        ShareError::HandoffFailed { cause, .. } => ("handoff_failed", code(cause)),
        ShareError::ShuttingDown => ("shutting_down", INTERNAL),
        ShareError::NoAnswer { .. } => ("timeout", INTERNAL),
        ShareError::Internal(_) => ("internal", INTERNAL),
    }
}
