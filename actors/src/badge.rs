//! Live share badges: one per terminal, listing its live shares. The root publishes the
//! whole board on a `watch` channel whenever a share starts, changes state, or ends;
//! subscribers (the CLI's `status --watch`, a runtime's UI) redraw on each change.
//! A `watch` keeps only the latest board, which is what a display wants.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::Serialize;

use crate::handoff::{HandoffState, HandoffView};
use crate::types::{
    AccessMode, BackendName, HandoffId, Principal, ShareId, ShareInfo, ShareState, TerminalName,
};

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BadgeShare {
    pub share_id: ShareId,
    /// Whose share it is.
    pub principal: Principal,
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
            principal: i.principal.clone(),
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

/// The latest handoff of a terminal, as its badge shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BadgeHandoff {
    pub handoff_id: HandoffId,
    pub from: Principal,
    pub to: Principal,
    pub state: HandoffState,
    /// The step waiting for approval, while pending.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<usize>,
    pub of: usize,
    /// The approval chain (principal patterns, one per step).
    pub approvers: Vec<String>,
}

impl From<&HandoffView> for BadgeHandoff {
    fn from(v: &HandoffView) -> Self {
        BadgeHandoff {
            handoff_id: v.handoff_id,
            from: v.from.clone(),
            to: v.to.clone(),
            state: v.state,
            step: v.step,
            of: v.approvers.len(),
            approvers: v.approvers.clone(),
        }
    }
}

/// A terminal's badge: its live shares and its latest handoff. Terminals with neither
/// have none.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Badge {
    pub shares: Vec<BadgeShare>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handoff: Option<BadgeHandoff>,
}

/// Every badge, by terminal.
pub type Badges = BTreeMap<TerminalName, Badge>;
