//! The audit trail: one event per action, written by the AuditActor to an [`AuditSink`].
//!
//! Events are cast straight to the actor (never through an `OutputPort`, which drops
//! messages for a lagging subscriber). A caller that must not acknowledge an action
//! before its event is kept passes an ack port; the actor answers it after the sink
//! accepted the batch.

mod ack;
mod event;
mod feeds;
mod writer;

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::broadcast;

use crate::traits::AuditSink;

pub(crate) use ack::AckSlot;
pub(crate) use ack::{record, record_acked, send, Withdrawal};
pub use event::{AuditEvent, AuditKind};
pub(crate) use feeds::ShareFeeds;
pub use feeds::{
    ShareEvent, ShareEvents, ShareEventsError, ShareUpdate, FEED_QUEUE, HISTORY, MAX_FEEDS,
    MAX_SUBSCRIBERS,
};

/// Events queued for the writer beyond which new work is refused (each live share can
/// still end: its events are few and bounded by the shares).
pub const QUEUE_HIGH_WATER: usize = 8192;
/// A write that has not finished after this long means a stalled disk: new work is
/// refused until it finishes.
pub const STALL: Duration = Duration::from_secs(2);

pub(crate) enum AuditMsg {
    /// Keep this event; with an ack slot, answer it once the sink holds it (Err: the
    /// sink failed) and skip the event if its sender withdrew it first.
    Record(AuditEvent, Option<AckSlot>),
    /// Answer once everything received before is in the sink.
    Flush(RpcReplyPort<()>),
}

/// Whether the audit sink is keeping events, and keeping up. Shared with the root and
/// the handoff manager (which refuse new work while it fails or falls behind) and with
/// status and metrics.
#[derive(Default)]
pub struct AuditHealth {
    error: parking_lot::Mutex<Option<String>>,
    /// Events handed to the writer and not yet written (or skipped).
    queued: std::sync::atomic::AtomicUsize,
    /// When the write in progress started, if one is.
    writing_since: parking_lot::Mutex<Option<std::time::Instant>>,
}

impl AuditHealth {
    /// The sink's last error, while it is failing.
    pub fn error(&self) -> Option<String> {
        self.error.lock().clone()
    }

    /// Why new work must be refused before it is tried, if it must: the queue is past
    /// its high-water mark, or a write has hung (a stalled disk). Memory then stays
    /// flat: only the live shares' own events queue up. A sink that fails fast (a full
    /// disk) is not in here: each new request's own record fails at once and is
    /// refused, and the first that succeeds is how a recovered disk is noticed.
    pub fn refusal(&self) -> Option<String> {
        let queued = self.queued();
        if queued > QUEUE_HIGH_WATER {
            return Some(format!(
                "the audit log is {queued} events behind; new work is refused until it catches up"
            ));
        }
        if let Some(since) = *self.writing_since.lock() {
            if since.elapsed() > STALL {
                return Some(format!(
                    "the audit log's disk has not finished a write for {:.1}s (stalled); new work is refused",
                    since.elapsed().as_secs_f64()
                ));
            }
        }
        None
    }

    /// Events handed to the writer and not yet written (or skipped).
    pub fn queued(&self) -> usize {
        self.queued.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn set(&self, error: Option<String>) {
        metrics::gauge!("termshare_audit_healthy").set(if error.is_some() { 0.0 } else { 1.0 });
        *self.error.lock() = error;
    }

    fn add_queued(&self, n: isize) {
        let now = if n >= 0 {
            self.queued
                .fetch_add(n as usize, std::sync::atomic::Ordering::Relaxed)
                + n as usize
        } else {
            self.queued
                .fetch_sub((-n) as usize, std::sync::atomic::Ordering::Relaxed)
                - (-n) as usize
        };
        metrics::gauge!("termshare_audit_queue_depth").set(now as f64);
    }
}

/// The AuditActor: the cast target of every lifecycle event. It hands events, in
/// order, to a writer task that owns the sink and commits in groups: it waits for one
/// event, takes every event that queued up meanwhile (up to `max_batch`), appends them
/// in one write (and one fsync, for the durable sink) on a blocking thread, then
/// acknowledges them all. Under load a batch is whatever arrived during the previous
/// commit; idle, an event is committed at once: no timer adds latency. Ids and
/// sequence numbers are assigned at commit, so a failed write leaves no gap.
pub(crate) struct AuditActor;

pub(crate) struct AuditArgs {
    pub sink: Box<dyn AuditSink>,
    pub subscribers: broadcast::Sender<AuditEvent>,
    /// Each live share's events, for its owner.
    pub feeds: Arc<ShareFeeds>,
    pub health: Arc<AuditHealth>,
    pub max_batch: usize,
}

pub(crate) struct AuditState {
    /// Closing this queue ends the writer once it has written what is queued.
    jobs: Option<tokio::sync::mpsc::UnboundedSender<writer::Job>>,
    health: Arc<AuditHealth>,
    /// The writer: a stop waits for it to write out what is queued.
    writer: Option<tokio::task::JoinHandle<()>>,
}

/// How long a stop waits for the writer to write out what is queued.
const DRAIN: Duration = Duration::from_secs(30);

impl Actor for AuditActor {
    type Msg = AuditMsg;
    type State = AuditState;
    type Arguments = AuditArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: AuditArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        // The queue is bounded in effect: new work is refused once it passes
        // QUEUE_HIGH_WATER (AuditHealth::refusal); what queues after that are the live
        // shares' own events, bounded by the shares.
        let (jobs, rx) = tokio::sync::mpsc::unbounded_channel();
        args.health.set(None);
        let writer = tokio::spawn(writer::run(
            args.sink,
            rx,
            args.subscribers,
            args.feeds,
            args.health.clone(),
            args.max_batch.max(1),
        ));
        Ok(AuditState {
            jobs: Some(jobs),
            health: args.health,
            writer: Some(writer),
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // Nothing queued is lost on a stop: close the queue and let the writer finish
        // (bounded, for a disk that never answers).
        state.jobs.take();
        if let Some(writer) = state.writer.take() {
            if tokio::time::timeout(DRAIN, writer).await.is_err() {
                tracing::error!(
                    "the audit writer did not finish within {DRAIN:?}; events may be lost"
                );
            }
        }
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let job = match msg {
            AuditMsg::Record(event, ack) => {
                state.health.add_queued(1);
                writer::Job::Record(event, ack)
            }
            AuditMsg::Flush(reply) => writer::Job::Flush(reply),
        };
        state
            .jobs
            .as_ref()
            .ok_or("the audit log is stopping")?
            .send(job)
            .map_err(|_| "the audit writer is gone")?;
        Ok(())
    }
}

/// The audit log on its own, outside a [`crate::ShareService`]: the same writer
/// (group commit, acknowledgements, sequence numbers) over any sink. For benchmarks of
/// a sink, and for embedders that want termshare's writer for events of their own.
#[derive(Clone)]
pub struct AuditLog {
    actor: ActorRef<AuditMsg>,
    task: Arc<parking_lot::Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

impl AuditLog {
    /// Start a writer over `sink`, committing up to `max_batch` events per write.
    pub async fn start(sink: Box<dyn AuditSink>, max_batch: usize) -> Result<AuditLog, String> {
        let (actor, task) = Actor::spawn(
            None,
            AuditActor,
            AuditArgs {
                sink,
                subscribers: broadcast::channel(16).0,
                feeds: Arc::default(),
                health: Arc::new(AuditHealth::default()),
                max_batch,
            },
        )
        .await
        .map_err(|e| e.to_string())?;
        Ok(AuditLog {
            actor,
            task: Arc::new(parking_lot::Mutex::new(Some(task))),
        })
    }

    /// Keep `event`: returns once the sink holds it. After `timeout` the error says so,
    /// and the event is still written (it has happened).
    pub async fn record(&self, event: AuditEvent, timeout: Duration) -> Result<(), String> {
        record_acked(&self.actor, event, timeout).await
    }

    /// Write out what is queued, then stop.
    pub async fn stop(&self) {
        self.actor.stop(None);
        let task = self.task.lock().take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

/// An in-memory sink, for tests and embedders that keep events themselves.
#[derive(Clone, Default)]
pub struct MemorySink {
    /// Every event appended so far, in order; clones share it.
    pub events: std::sync::Arc<parking_lot::Mutex<Vec<AuditEvent>>>,
}

impl AuditSink for MemorySink {
    fn append(&mut self, events: &[AuditEvent]) -> Result<(), String> {
        self.events.lock().extend_from_slice(events);
        Ok(())
    }
}
