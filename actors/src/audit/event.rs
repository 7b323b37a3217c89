//! What one audit line says: the kinds of action, and the event itself.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::caller::{Caller, Peer};
use crate::types::{BackendName, Principal, TerminalName};

/// What an audit line records; written as its name (`share.started`, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AuditKind {
    /// A share was asked for; written before its `share.denied` or `share.started`.
    #[serde(rename = "share.requested")]
    ShareRequested,
    /// A share request was refused (claim, terminal, policy or limits); `details.reason`
    /// says why.
    #[serde(rename = "share.denied")]
    ShareDenied,
    /// A share's worker has its link: the share is live.
    #[serde(rename = "share.started")]
    ShareStarted,
    /// A share reached one of its grace thresholds before expiry (`details.remaining_ms`).
    #[serde(rename = "share.grace_warning")]
    ShareGraceWarning,
    /// A share's expiry was moved later (`details.by_ms`, `details.expires_at`).
    #[serde(rename = "share.extended")]
    ShareExtended,
    /// A share was ended by its owner or the operator.
    #[serde(rename = "share.revoked")]
    ShareRevoked,
    /// A share's TTL ran out and it ended.
    #[serde(rename = "share.expired")]
    ShareExpired,
    /// A share ended because the service shut down.
    #[serde(rename = "share.stopped")]
    ShareStopped,
    /// A share ended because its worker died, hung or could not start, or its terminal
    /// went away; `details.cause` says which.
    #[serde(rename = "share.failed")]
    ShareFailed,
    /// A share moved to another backend (`details.from`, `details.to`); the new worker
    /// has its link and the old one was stopped.
    #[serde(rename = "share.switched")]
    ShareSwitched,
    /// A participant connected (where the backend tells): its id and a keyed
    /// fingerprint of where it came from.
    #[serde(rename = "share.joined")]
    ShareJoined,
    /// A participant left, or was cut off by the share's end or a switch (`cause`).
    #[serde(rename = "share.left")]
    ShareLeft,
    /// A participant was turned away at the share's `max_participants`.
    #[serde(rename = "share.join_refused")]
    ShareJoinRefused,
    /// The share got a new link; everyone on the old one was cut off (fingerprints of
    /// both links).
    #[serde(rename = "share.rotated")]
    ShareRotated,
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
    /// A handoff was asked for (`details.denied` when the policy refused it at once).
    #[serde(rename = "handoff.requested")]
    HandoffRequested,
    /// A step of a handoff's chain was approved (`details.step` of `details.of`).
    #[serde(rename = "handoff.approved")]
    HandoffApproved,
    /// A handoff ended without completing: denied by an approver or its receiver,
    /// refused by the policy (step 0), or a step timed out (`details.timed_out`).
    #[serde(rename = "handoff.denied")]
    HandoffDenied,
    /// The chain approved and the receiver's package (and share, if asked for) is ready.
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
    /// The kind's name as the audit log writes it (`share.started`, ...).
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
            AuditKind::ShareJoined => "share.joined",
            AuditKind::ShareLeft => "share.left",
            AuditKind::ShareJoinRefused => "share.join_refused",
            AuditKind::ShareRotated => "share.rotated",
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
    /// Unique id (a UUIDv7), assigned when the event is committed; nil until then.
    pub id: Uuid,
    /// When the event was created (RFC 3339 with milliseconds in the log).
    #[serde(with = "humantime_serde_compat")]
    pub at: SystemTime,
    /// Position in the log, assigned at commit; numbering continues across restarts.
    pub seq: u64,
    /// The share's id; for a handoff step, the handoff's id (its share, if any, is in
    /// `details.share_id`).
    pub correlation_id: Uuid,
    /// What happened.
    pub kind: AuditKind,
    /// Whom it concerns: a share's owner, or who took a handoff step (the receiver
    /// for `handoff.completed` and `handoff.failed`); `None` for a step's timeout.
    pub principal: Option<Principal>,
    /// The terminal concerned, if any.
    pub terminal: Option<TerminalName>,
    /// The share's backend, if any.
    pub backend: Option<BackendName>,
    /// What else the kind records (`reason`, `cause`, `rule_id`, `by`, ...).
    pub details: BTreeMap<String, Value>,
    /// The local process that asked for the action, for actions taken over the
    /// daemon's socket (the kernel's word, not the caller's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<Peer>,
}

impl AuditEvent {
    /// An event of `kind` about `correlation_id` (a share's or handoff's id), stamped
    /// now; `id` and `seq` are set when it is committed.
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
    /// process behind it, when it came over the socket. A fleet revoke order is
    /// `by: "fleet:ROLE"` (the database role that ordered it) with `fleet_order`.
    pub fn by(self, caller: &Caller) -> Self {
        let event = self.asked_by(caller);
        match caller.identity.order() {
            Some(order) => event
                .detail("by", format!("fleet:{}", order.ordered_by))
                .detail("fleet_order", order.order_id.to_string()),
            None => event.detail("by", caller.principal.as_str()),
        }
    }

    /// The process behind the action (`peer`), when it came over the socket; for events
    /// whose `principal` already names who acted.
    pub fn asked_by(mut self, caller: &Caller) -> Self {
        self.peer = caller.peer().cloned();
        self
    }

    /// Whom the event concerns (`principal`).
    pub fn principal(mut self, p: &Principal) -> Self {
        self.principal = Some(p.clone());
        self
    }
    /// The terminal concerned (`terminal`).
    pub fn terminal(mut self, t: &TerminalName) -> Self {
        self.terminal = Some(t.clone());
        self
    }
    /// The share's backend (`backend`).
    pub fn backend(mut self, b: &BackendName) -> Self {
        self.backend = Some(b.clone());
        self
    }
    /// Set `details[key]` to `value` (replacing any earlier value).
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
