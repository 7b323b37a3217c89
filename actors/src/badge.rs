//! Live share badges: one per terminal, listing its live shares. The root publishes the
//! whole board on a `watch` channel whenever a share starts, changes state, or ends;
//! subscribers (the CLI's `status --watch`, a runtime's UI) redraw on each change.
//! A `watch` keeps only the latest board, which is what a display wants.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::Serialize;

use crate::types::{AccessMode, BackendName, ShareId, ShareInfo, ShareState, TerminalName};

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BadgeShare {
    pub share_id: ShareId,
    pub backend: BackendName,
    pub access: AccessMode,
    pub participants: Option<u32>,
    pub state: ShareState,
    #[serde(serialize_with = "rfc3339")]
    pub expires_at: SystemTime,
}

impl From<&ShareInfo> for BadgeShare {
    fn from(i: &ShareInfo) -> Self {
        BadgeShare {
            share_id: i.share_id,
            backend: i.backend.clone(),
            access: i.access,
            participants: i.participants,
            state: i.state,
            expires_at: i.expires_at,
        }
    }
}

fn rfc3339<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&humantime::format_rfc3339_seconds(*t).to_string())
}

/// A terminal's badge. Terminals without live shares have none.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Badge {
    pub shares: Vec<BadgeShare>,
}

/// Every badge, by terminal.
pub type Badges = BTreeMap<TerminalName, Badge>;
