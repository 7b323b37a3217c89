//! Live share badges: one per terminal, listing its live shares and its latest handoff.
//! [`BadgeBoard`] owns them: the root sets a terminal's share rows whenever a share
//! starts, changes state or ends, the handoff manager its handoff; the whole board goes
//! out on a `watch` channel, and subscribers (the CLI's `status --watch`, a runtime's
//! UI) redraw on each change. A `watch` keeps only the latest board, which is what a
//! display wants.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::Serialize;

use crate::handoff::{HandoffState, HandoffView};
use crate::types::{
    AccessMode, BackendName, HandoffId, Principal, ShareId, ShareInfo, ShareState, TerminalName,
};

/// One live share's row on its terminal's badge (never its links).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BadgeShare {
    /// The share's id.
    pub share_id: ShareId,
    /// Whose share it is.
    pub principal: Principal,
    /// The backend serving it.
    pub backend: BackendName,
    /// What participants may do.
    pub access: AccessMode,
    /// Participants connected, when the backend tells.
    pub participants: Option<u32>,
    /// Where the share is in its life.
    pub state: ShareState,
    /// When its TTL runs out (RFC 3339, whole seconds).
    #[serde(serialize_with = "crate::types::rfc3339_seconds")]
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

/// The latest handoff of a terminal, as its badge shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BadgeHandoff {
    /// The handoff's id.
    pub handoff_id: HandoffId,
    /// Who hands the terminal over.
    pub from: Principal,
    /// Who receives it.
    pub to: Principal,
    /// Pending, completing, or how it ended.
    pub state: HandoffState,
    /// The step waiting for approval, while pending.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<usize>,
    /// How many approval steps there are.
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
    /// The terminal's live shares.
    pub shares: Vec<BadgeShare>,
    /// Its latest handoff, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handoff: Option<BadgeHandoff>,
}

/// Every badge, by terminal.
pub type Badges = BTreeMap<TerminalName, Badge>;

/// The badge board: the one owner of every terminal's badge. The root sets a terminal's
/// share rows, the handoff manager its latest handoff, each directly (neither asks the
/// other); every change republishes the board on a `watch` channel, which keeps only
/// the latest board, what a display wants.
#[derive(Clone)]
pub(crate) struct BadgeBoard {
    parts: std::sync::Arc<parking_lot::Mutex<Parts>>,
    tx: tokio::sync::watch::Sender<Badges>,
}

/// What a badge is made of, per terminal (bounded by the terminals that exist).
#[derive(Default)]
struct Parts {
    shares: BTreeMap<TerminalName, Vec<BadgeShare>>,
    handoffs: BTreeMap<TerminalName, BadgeHandoff>,
}

impl BadgeBoard {
    pub(crate) fn new() -> (BadgeBoard, tokio::sync::watch::Receiver<Badges>) {
        let (tx, rx) = tokio::sync::watch::channel(Badges::new());
        let board = BadgeBoard {
            parts: Default::default(),
            tx,
        };
        (board, rx)
    }

    /// A terminal's live shares changed: these are its rows now.
    pub(crate) fn set_shares(&self, terminal: &TerminalName, rows: Vec<BadgeShare>) {
        let mut parts = self.parts.lock();
        if rows.is_empty() {
            parts.shares.remove(terminal);
        } else {
            parts.shares.insert(terminal.clone(), rows);
        }
        self.publish(&parts, terminal);
    }

    /// A terminal's latest handoff changed.
    pub(crate) fn set_handoff(&self, view: &HandoffView) {
        let mut parts = self.parts.lock();
        parts
            .handoffs
            .insert(view.terminal.clone(), BadgeHandoff::from(view));
        self.publish(&parts, &view.terminal);
    }

    /// Republish `terminal`'s badge (under the parts' lock, so changes go out in order).
    fn publish(&self, parts: &Parts, terminal: &TerminalName) {
        let shares = parts.shares.get(terminal).cloned().unwrap_or_default();
        let handoff = parts.handoffs.get(terminal).cloned();
        self.tx.send_if_modified(|board| {
            if shares.is_empty() && handoff.is_none() {
                board.remove(terminal).is_some()
            } else {
                let badge = Badge { shares, handoff };
                if board.get(terminal) == Some(&badge) {
                    return false;
                }
                board.insert(terminal.clone(), badge);
                true
            }
        });
    }
}
