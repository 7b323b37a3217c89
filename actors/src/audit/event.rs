//! What one audit line says: the kinds of action, and the event itself.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::caller::{Caller, Peer};
use crate::types::{BackendName, Principal, TerminalName};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AuditKind {
    #[serde(rename = "share.requested")]
    ShareRequested,
    #[serde(rename = "share.denied")]
    ShareDenied,
    #[serde(rename = "share.started")]
    ShareStarted,
    #[serde(rename = "share.grace_warning")]
    ShareGraceWarning,
    #[serde(rename = "share.extended")]
    ShareExtended,
    #[serde(rename = "share.revoked")]
    ShareRevoked,
    #[serde(rename = "share.expired")]
    ShareExpired,
    #[serde(rename = "share.stopped")]
    ShareStopped,
    #[serde(rename = "share.failed")]
    ShareFailed,
    #[serde(rename = "share.switched")]
    ShareSwitched,
    /// The backend gave the share new links while it ran (tmate after its relay
    /// reconnected): the share now answers with these (their fingerprints here).
    #[serde(rename = "share.relinked")]
    ShareRelinked,
    /// A switch whose new backend gave no link: the share stays on its old backend.
    #[serde(rename = "share.switch_failed")]
    ShareSwitchFailed,
    /// An action on a live share (extend, revoke, switch) was refused; the share is
    /// unchanged.
    #[serde(rename = "share.refused")]
    ShareRefused,
    /// The share was live when termshare stopped without ending it (a crash); written
    /// by the next start, so that every `share.started` has its end.
    #[serde(rename = "share.ended")]
    ShareEnded,
    #[serde(rename = "handoff.requested")]
    HandoffRequested,
    #[serde(rename = "handoff.approved")]
    HandoffApproved,
    #[serde(rename = "handoff.denied")]
    HandoffDenied,
    #[serde(rename = "handoff.completed")]
    HandoffCompleted,
    /// An approval or denial was refused (wrong or repeated identity); the handoff is
    /// unchanged.
    #[serde(rename = "handoff.refused")]
    HandoffRefused,
    /// The chain approved, but what it hands over could not be delivered (the context
    /// could not be captured, or the receiver's share did not start).
    #[serde(rename = "handoff.failed")]
    HandoffFailed,
    /// termshare started (with this log): shares a crash left without an end got
    /// `share.ended` just before.
    #[serde(rename = "service.started")]
    ServiceStarted,
    /// termshare stopped cleanly, every share ended.
    #[serde(rename = "service.stopped")]
    ServiceStopped,
}

impl AuditKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditKind::ShareRequested => "share.requested",
            AuditKind::ShareDenied => "share.denied",
            AuditKind::ShareStarted => "share.started",
            AuditKind::ShareGraceWarning => "share.grace_warning",
            AuditKind::ShareExtended => "share.extended",
            AuditKind::ShareRevoked => "share.revoked",
            AuditKind::ShareExpired => "share.expired",
            AuditKind::ShareStopped => "share.stopped",
            AuditKind::ShareFailed => "share.failed",
            AuditKind::ShareSwitched => "share.switched",
            AuditKind::ShareRelinked => "share.relinked",
            AuditKind::ShareSwitchFailed => "share.switch_failed",
            AuditKind::ShareRefused => "share.refused",
            AuditKind::ShareEnded => "share.ended",
            AuditKind::HandoffRequested => "handoff.requested",
            AuditKind::HandoffApproved => "handoff.approved",
            AuditKind::HandoffDenied => "handoff.denied",
            AuditKind::HandoffCompleted => "handoff.completed",
            AuditKind::HandoffRefused => "handoff.refused",
            AuditKind::HandoffFailed => "handoff.failed",
            AuditKind::ServiceStarted => "service.started",
            AuditKind::ServiceStopped => "service.stopped",
        }
    }

    /// Kinds after which the share no longer exists.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            AuditKind::ShareRevoked
                | AuditKind::ShareExpired
                | AuditKind::ShareStopped
                | AuditKind::ShareFailed
                | AuditKind::ShareEnded
                | AuditKind::ShareDenied
        )
    }
}

/// One audit line. `id` and `seq` are assigned by the AuditActor.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    pub id: Uuid,
    #[serde(with = "humantime_serde_compat")]
    pub at: SystemTime,
    pub seq: u64,
    /// The share's id; for a handoff step, the handoff's id (its share, if any, is in
    /// `details.share_id`).
    pub correlation_id: Uuid,
    pub kind: AuditKind,
    pub principal: Option<Principal>,
    pub terminal: Option<TerminalName>,
    pub backend: Option<BackendName>,
    pub details: BTreeMap<String, Value>,
    /// The local process that asked for the action, for actions taken over the
    /// daemon's socket (the kernel's word, not the caller's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<Peer>,
}

impl AuditEvent {
    pub fn new(kind: AuditKind, correlation_id: impl Into<Uuid>) -> Self {
        let correlation_id = correlation_id.into();
        AuditEvent {
            id: Uuid::nil(),
            at: SystemTime::now(),
            seq: 0,
            correlation_id,
            kind,
            principal: None,
            terminal: None,
            backend: None,
            details: BTreeMap::new(),
            peer: None,
        }
    }

    /// Who took the action: `details.by` is the principal it acted as, and `peer` the
    /// process behind it, when it came over the socket.
    pub fn by(self, caller: &Caller) -> Self {
        self.asked_by(caller)
            .detail("by", caller.principal.as_str())
    }

    /// The process behind the action (`peer`), when it came over the socket; for events
    /// whose `principal` already names who acted.
    pub fn asked_by(mut self, caller: &Caller) -> Self {
        self.peer = caller.peer().cloned();
        self
    }

    pub fn principal(mut self, p: &Principal) -> Self {
        self.principal = Some(p.clone());
        self
    }
    pub fn terminal(mut self, t: &TerminalName) -> Self {
        self.terminal = Some(t.clone());
        self
    }
    pub fn backend(mut self, b: &BackendName) -> Self {
        self.backend = Some(b.clone());
        self
    }
    pub fn detail(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.details.insert(key.to_owned(), value.into());
        self
    }
}

/// RFC 3339 timestamps with milliseconds, in UTC.
mod humantime_serde_compat {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::SystemTime;

    pub fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_rfc3339_millis(*t).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_rfc3339_weak(&s).map_err(serde::de::Error::custom)
    }
}
