//! Domain types shared by the whole tree: who asks, for which terminal, through which
//! backend, and what a share looks like once it runs.

mod ids;
mod names;
mod share;
#[cfg(test)]
mod tests;

pub use ids::{HandoffId, ShareId};
pub use names::{glob_match, AccessMode, BackendName, Principal, TerminalName};
pub use share::{
    duration_ms, EndReason, FingerprintKey, JoinRules, Links, RevokeReport, ShareEnd, ShareInfo,
    ShareRequest, ShareState,
};

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use uuid::Uuid;

use crate::caller::Caller;
use crate::error::InvalidInput;

/// A wall-clock time as RFC 3339 to the second, for serde (`serialize_with`): how
/// badges and handoffs show times.
pub(crate) fn rfc3339_seconds<S: serde::Serializer>(
    t: &SystemTime,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.serialize_str(&humantime::format_rfc3339_seconds(*t).to_string())
}
