//! The audit trail: one event per action, written by the AuditActor to an [`AuditSink`].
//!
//! Events are cast straight to the actor (never through an `OutputPort`, which drops
//! messages for a lagging subscriber). A caller that must not acknowledge an action
//! before its event is kept passes an ack port; the actor answers it after the sink
//! accepted the batch.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::broadcast;
use uuid::Uuid;

use crate::traits::AuditSink;
use crate::types::{BackendName, Principal, ShareId, TerminalName};

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
    pub correlation_id: ShareId,
    pub kind: AuditKind,
    pub principal: Option<Principal>,
    pub terminal: Option<TerminalName>,
    pub backend: Option<BackendName>,
    pub details: BTreeMap<String, Value>,
}

impl AuditEvent {
    pub fn new(kind: AuditKind, correlation_id: ShareId) -> Self {
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
        }
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

pub enum AuditMsg {
    /// Keep this event; answer `ack` once the sink holds it (Err: the sink failed).
    Record(AuditEvent, Option<RpcReplyPort<Result<(), String>>>),
    /// Answer once everything received before is in the sink.
    Flush(RpcReplyPort<()>),
}

pub struct AuditActor;

pub struct AuditArgs {
    pub sink: Box<dyn AuditSink>,
    pub subscribers: broadcast::Sender<AuditEvent>,
}

pub struct AuditState {
    sink: Box<dyn AuditSink>,
    next_seq: u64,
    subscribers: broadcast::Sender<AuditEvent>,
}

impl Actor for AuditActor {
    type Msg = AuditMsg;
    type State = AuditState;
    type Arguments = AuditArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: AuditArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(AuditState {
            sink: args.sink,
            next_seq: 1,
            subscribers: args.subscribers,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            AuditMsg::Record(mut event, ack) => {
                metrics::gauge!("termshare_audit_queue_depth").decrement(1.0);
                event.id = Uuid::now_v7();
                event.seq = state.next_seq;
                let result = state.sink.append(std::slice::from_ref(&event));
                match &result {
                    Ok(()) => {
                        state.next_seq += 1;
                        // Nobody listening is fine.
                        let _ = state.subscribers.send(event);
                    }
                    Err(e) => {
                        metrics::counter!("termshare_audit_failures_total").increment(1);
                        tracing::error!(error = %e, "audit sink refused an event")
                    }
                }
                if let Some(ack) = ack {
                    let _ = ack.send(result);
                }
            }
            AuditMsg::Flush(reply) => {
                let _ = reply.send(());
            }
        }
        Ok(())
    }
}

/// Record an event and wait until the sink holds it (bounded by `timeout`).
pub async fn record_acked(
    audit: &ActorRef<AuditMsg>,
    event: AuditEvent,
    timeout: Duration,
) -> Result<(), String> {
    metrics::gauge!("termshare_audit_queue_depth").increment(1.0);
    match audit
        .call(|tx| AuditMsg::Record(event, Some(tx)), Some(timeout))
        .await
    {
        Ok(ractor::rpc::CallResult::Success(r)) => r,
        Ok(ractor::rpc::CallResult::Timeout) => Err("the audit log did not answer in time".into()),
        Ok(ractor::rpc::CallResult::SenderError) | Err(_) => Err("the audit log is gone".into()),
    }
}

/// Record without waiting (events whose action has no caller to acknowledge to).
pub fn record(audit: &ActorRef<AuditMsg>, event: AuditEvent) {
    metrics::gauge!("termshare_audit_queue_depth").increment(1.0);
    if let Err(e) = audit.cast(AuditMsg::Record(event, None)) {
        tracing::error!(error = %e, "audit actor is gone; event lost");
    }
}

/// An in-memory sink, for tests and embedders that keep events themselves.
#[derive(Clone, Default)]
pub struct MemorySink {
    pub events: std::sync::Arc<parking_lot::Mutex<Vec<AuditEvent>>>,
}

impl AuditSink for MemorySink {
    fn append(&mut self, events: &[AuditEvent]) -> Result<(), String> {
        self.events.lock().extend_from_slice(events);
        Ok(())
    }
}
