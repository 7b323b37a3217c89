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
    duration_ms, EndReason, FingerprintKey, Links, RevokeReport, ShareInfo, ShareRequest,
    ShareState,
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
