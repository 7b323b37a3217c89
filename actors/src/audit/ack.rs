//! Waiting for an event to be kept, without ever leaving a lie behind.
//!
//! Two kinds of action wait for their record:
//! - An action that must not happen off the record (a start, an extension, an
//!   approval) sends its event and waits with [`AuditAck::wait`]. If the wait runs
//!   out, the event is *withdrawn*: the writer skips it, so an action reported as not
//!   done never shows up in the log later. The writer claims an event when it takes it
//!   into a batch; from then on it cannot be withdrawn, and the sender waits for the
//!   write's outcome (a stalled disk makes that wait bounded too, and says so).
//! - An action that has happened whatever the disk does (a share ended: its worker is
//!   gone; a request was denied) must be on the record however late:
//!   [`record_acked`] waits, bounded, and never withdraws; a slow disk only makes the
//!   caller hear that the record is not yet kept.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ractor::ActorRef;
use tokio::sync::oneshot;

use super::{AuditEvent, AuditMsg};

const PENDING: u8 = 0;
const CLAIMED: u8 = 1;
const WITHDRAWN: u8 = 2;

/// The writer's side of one acknowledged event.
pub struct AckSlot {
    state: Arc<AtomicU8>,
    tx: oneshot::Sender<Result<(), String>>,
}

impl AckSlot {
    /// Take the event into a batch; `false` when its sender withdrew it (skip it).
    pub(crate) fn claim(&self) -> bool {
        self.state
            .compare_exchange(PENDING, CLAIMED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    pub(crate) fn answer(self, result: Result<(), String>) {
        let _ = self.tx.send(result);
    }
}

/// The sender's side: wait until the event is kept.
pub(crate) struct AuditAck {
    state: Arc<AtomicU8>,
    rx: oneshot::Receiver<Result<(), String>>,
}

/// Send `event` to be kept; the returned ack tells when (and whether) it was.
pub(crate) fn send(audit: &ActorRef<AuditMsg>, event: AuditEvent) -> AuditAck {
    let state = Arc::new(AtomicU8::new(PENDING));
    let (tx, rx) = oneshot::channel();
    let slot = AckSlot {
        state: state.clone(),
        tx,
    };
    if audit.cast(AuditMsg::Record(event, Some(slot))).is_err() {
        // The actor is gone: the slot went with the message, so `rx` reports it.
        tracing::error!("audit actor is gone; event not kept");
    }
    AuditAck { state, rx }
}

/// A handle on one sent event that can withdraw it while the writer has not taken it.
#[derive(Clone)]
pub(crate) struct Withdrawal {
    state: Arc<AtomicU8>,
}

impl Withdrawal {
    /// `true` when the event is withdrawn (it will never be written); `false` when the
    /// writer already has it (it is written, or being written).
    pub fn withdraw(&self) -> bool {
        let before =
            self.state
                .compare_exchange(PENDING, WITHDRAWN, Ordering::AcqRel, Ordering::Acquire);
        matches!(before, Ok(_) | Err(WITHDRAWN))
    }
}

impl AuditAck {
    /// A handle to withdraw the event from elsewhere (e.g. when the action it records
    /// is overtaken before its record is kept).
    pub fn withdrawal(&self) -> Withdrawal {
        Withdrawal {
            state: self.state.clone(),
        }
    }

    /// `Ok` once the event is in the sink. After `timeout` the event is withdrawn if
    /// the writer has not taken it yet (it will never be written); if the writer has,
    /// its outcome is awaited for another `timeout`, and then reported as unknown.
    pub async fn wait(mut self, timeout: Duration) -> Result<(), String> {
        match tokio::time::timeout(timeout, &mut self.rx).await {
            Ok(Ok(result)) => return result,
            Ok(Err(_)) => return Err("the audit log is gone".into()),
            Err(_) => {}
        }
        if self
            .state
            .compare_exchange(PENDING, WITHDRAWN, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            return Err(format!(
                "the audit log did not take the event within {timeout:?} (withdrawn: it will not be written)"
            ));
        }
        match tokio::time::timeout(timeout, &mut self.rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err("the audit log is gone".into()),
            Err(_) => Err(format!(
                "the audit log has been writing for over {:?}: the disk is stalled, and this event may still be written",
                timeout * 2
            )),
        }
    }
}

/// Record the event of something that has happened, and wait (up to `timeout`) until
/// the sink holds it. It is never withdrawn: if the wait runs out, it is still written
/// once the disk takes it, and the error says it is not yet kept.
pub(crate) async fn record_acked(
    audit: &ActorRef<AuditMsg>,
    event: AuditEvent,
    timeout: Duration,
) -> Result<(), String> {
    let mut ack = send(audit, event);
    match tokio::time::timeout(timeout, &mut ack.rx).await {
        Ok(Ok(result)) => result,
        Ok(Err(_)) => Err("the audit log is gone".into()),
        Err(_) => Err(format!(
            "the audit log did not keep the event within {timeout:?} (it is still queued and will be written)"
        )),
    }
}

/// Record without waiting (events whose action has no caller to acknowledge to).
pub(crate) fn record(audit: &ActorRef<AuditMsg>, event: AuditEvent) {
    if let Err(e) = audit.cast(AuditMsg::Record(event, None)) {
        tracing::error!(error = %e, "audit actor is gone; event lost");
    }
}
