//! The host's live shares as the fleet view holds them (`termshare.live_shares`).

use std::time::SystemTime;

use serde_json::Value;
use termshare_actors::{ShareId, ShareInfo};
use uuid::Uuid;

/// One live share as the view holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct LiveRow {
    principal: String,
    terminal: String,
    backend: String,
    access: String,
    state: String,
    participants: Option<i32>,
    started_at: SystemTime,
    expires_at: SystemTime,
}

impl LiveRow {
    pub(super) fn of(s: &ShareInfo) -> Self {
        let word = |v: Value| v.as_str().unwrap_or_default().to_owned();
        LiveRow {
            principal: s.principal.to_string(),
            terminal: s.terminal.to_string(),
            backend: s.backend.to_string(),
            access: word(serde_json::to_value(s.access).unwrap_or_default()),
            state: word(serde_json::to_value(s.state).unwrap_or_default()),
            participants: s.participants.map(|n| n.min(i32::MAX as u32) as i32),
            started_at: s.started_at,
            expires_at: s.expires_at,
        }
    }
}

/// Live rows as columns, for `unnest`.
#[derive(Default)]
pub(super) struct LiveColumns {
    pub(super) share_id: Vec<Uuid>,
    pub(super) principal: Vec<String>,
    pub(super) terminal: Vec<String>,
    pub(super) backend: Vec<String>,
    pub(super) access: Vec<String>,
    pub(super) state: Vec<String>,
    pub(super) participants: Vec<Option<i32>>,
    pub(super) started_at: Vec<SystemTime>,
    pub(super) expires_at: Vec<SystemTime>,
}

impl LiveColumns {
    pub(super) fn push(&mut self, id: ShareId, row: &LiveRow) {
        self.share_id.push(id.into());
        self.principal.push(row.principal.clone());
        self.terminal.push(row.terminal.clone());
        self.backend.push(row.backend.clone());
        self.access.push(row.access.clone());
        self.state.push(row.state.clone());
        self.participants.push(row.participants);
        self.started_at.push(row.started_at);
        self.expires_at.push(row.expires_at);
    }
}
