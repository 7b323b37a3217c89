//! The audit trail: one event per action, written by the AuditActor to an [`AuditSink`].
//!
//! Events are cast straight to the actor (never through an `OutputPort`, which drops
//! messages for a lagging subscriber). A caller that must not acknowledge an action
//! before its event is kept passes an ack port; the actor answers it after the sink
//! accepted the batch.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::broadcast;
use uuid::Uuid;

use crate::caller::{Caller, Peer};
use crate::traits::AuditSink;
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
    /// A switch whose new backend gave no link: the share stays on its old backend.
    #[serde(rename = "share.switch_failed")]
    ShareSwitchFailed,
    /// An action on a live share (extend, revoke, switch) was refused; the share is
    /// unchanged.
    #[serde(rename = "share.refused")]
    ShareRefused,
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
            AuditKind::ShareSwitchFailed => "share.switch_failed",
            AuditKind::ShareRefused => "share.refused",
            AuditKind::HandoffRequested => "handoff.requested",
            AuditKind::HandoffApproved => "handoff.approved",
            AuditKind::HandoffDenied => "handoff.denied",
            AuditKind::HandoffCompleted => "handoff.completed",
            AuditKind::HandoffRefused => "handoff.refused",
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

pub enum AuditMsg {
    /// Keep this event; answer `ack` once the sink holds it (Err: the sink failed).
    Record(AuditEvent, Option<RpcReplyPort<Result<(), String>>>),
    /// Answer once everything received before is in the sink.
    Flush(RpcReplyPort<()>),
}

/// Whether the audit sink is keeping events. Shared with the root (which refuses new
/// shares while it fails) and with status and metrics.
#[derive(Default)]
pub struct AuditHealth {
    error: parking_lot::Mutex<Option<String>>,
}

impl AuditHealth {
    /// The sink's last error, while it is failing.
    pub fn error(&self) -> Option<String> {
        self.error.lock().clone()
    }

    fn set(&self, error: Option<String>) {
        metrics::gauge!("termshare_audit_healthy").set(if error.is_some() { 0.0 } else { 1.0 });
        *self.error.lock() = error;
    }
}

/// The AuditActor: the cast target of every lifecycle event. It hands events, in
/// order, to a writer task that owns the sink and commits in groups: it waits for one
/// event, takes every event that queued up meanwhile (up to `max_batch`), appends them
/// in one write (and one fsync, for the durable sink) on a blocking thread, then
/// acknowledges them all. Under load a batch is whatever arrived during the previous
/// commit; idle, an event is committed at once: no timer adds latency. Ids and
/// sequence numbers are assigned at commit, so a failed write leaves no gap.
pub struct AuditActor;

pub struct AuditArgs {
    pub sink: Box<dyn AuditSink>,
    pub subscribers: broadcast::Sender<AuditEvent>,
    pub health: Arc<AuditHealth>,
    pub max_batch: usize,
}

enum WriterJob {
    Record(AuditEvent, Option<RpcReplyPort<Result<(), String>>>),
    Flush(RpcReplyPort<()>),
}

/// Who waits for a batch to be committed.
enum Waiting {
    Ack(RpcReplyPort<Result<(), String>>),
    Flush(RpcReplyPort<()>),
}

pub struct AuditState {
    /// Closing this queue ends the writer once it has written what is queued.
    jobs: tokio::sync::mpsc::UnboundedSender<WriterJob>,
}

async fn writer_loop(
    mut sink: Box<dyn AuditSink>,
    mut jobs: tokio::sync::mpsc::UnboundedReceiver<WriterJob>,
    subscribers: broadcast::Sender<AuditEvent>,
    health: Arc<AuditHealth>,
    max_batch: usize,
) {
    let mut next_seq = sink.next_seq();
    while let Some(first) = jobs.recv().await {
        let mut batch = vec![first];
        while batch.len() < max_batch {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        // Split the batch: the events to write, and who is waiting for them.
        let mut events = Vec::with_capacity(batch.len());
        let mut waiting = Vec::with_capacity(batch.len());
        for job in batch {
            match job {
                WriterJob::Record(mut e, ack) => {
                    e.id = Uuid::now_v7();
                    e.seq = next_seq + events.len() as u64;
                    events.push(e);
                    if let Some(ack) = ack {
                        waiting.push(Waiting::Ack(ack));
                    }
                }
                WriterJob::Flush(reply) => waiting.push(Waiting::Flush(reply)),
            }
        }
        metrics::gauge!("termshare_audit_queue_depth").decrement(events.len() as f64);
        let result = if events.is_empty() {
            Ok(())
        } else if crate::faultpoints::check("audit.append").is_some() {
            Err("injected audit failure (fail point audit.append)".to_string())
        } else {
            // File I/O and fsync block: keep them off the runtime's workers.
            let (back, events_back, result) = match tokio::task::spawn_blocking(move || {
                let r = sink.append(&events);
                (sink, events, r)
            })
            .await
            {
                Ok(done) => done,
                Err(e) => {
                    tracing::error!(error = %e, "the audit writer panicked; audit stops");
                    health.set(Some(format!("audit writer panicked: {e}")));
                    return;
                }
            };
            sink = back;
            events = events_back;
            result
        };
        match &result {
            Ok(()) => {
                next_seq += events.len() as u64;
                if health.error().is_some() {
                    tracing::warn!("the audit log keeps events again");
                }
                health.set(None);
                metrics::histogram!("termshare_audit_batch_size").record(events.len() as f64);
                for e in events {
                    // Nobody listening is fine.
                    let _ = subscribers.send(e);
                }
            }
            Err(e) => {
                metrics::counter!("termshare_audit_failures_total").increment(1);
                tracing::error!(error = %e, lost = events.len(), "the audit sink refused a batch");
                health.set(Some(e.clone()));
            }
        }
        for w in waiting {
            match w {
                Waiting::Ack(ack) => {
                    let _ = ack.send(result.clone());
                }
                Waiting::Flush(reply) => {
                    let _ = reply.send(());
                }
            }
        }
    }
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
        let (jobs, rx) = tokio::sync::mpsc::unbounded_channel();
        args.health.set(None);
        tokio::spawn(writer_loop(
            args.sink,
            rx,
            args.subscribers,
            args.health,
            args.max_batch.max(1),
        ));
        Ok(AuditState { jobs })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let job = match msg {
            AuditMsg::Record(event, ack) => WriterJob::Record(event, ack),
            AuditMsg::Flush(reply) => WriterJob::Flush(reply),
        };
        state
            .jobs
            .send(job)
            .map_err(|_| "the audit writer is gone")?;
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
