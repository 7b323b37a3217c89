//! The audit writer: one task that owns the sink and commits in groups.
//!
//! It waits for one job, takes every job that queued up meanwhile (up to `max_batch`),
//! appends the events in one write (and one fsync, for the durable sink) on a blocking
//! thread, then acknowledges them all. Under load a batch is whatever arrived during
//! the previous commit; idle, an event is committed at once: no timer adds latency.
//! Ids and sequence numbers are assigned at commit, so a failed write leaves no gap,
//! and an event its sender withdrew (see [`super::AuditAck`]) is skipped, never
//! written.

use std::sync::Arc;

use ractor::RpcReplyPort;
use tokio::sync::broadcast;
use uuid::Uuid;

use super::{AckSlot, AuditEvent, AuditHealth, ShareFeeds};
use crate::traits::AuditSink;

pub(crate) enum Job {
    Record(AuditEvent, Option<AckSlot>),
    Flush(RpcReplyPort<()>),
}

/// Who waits for a batch to be committed.
enum Waiting {
    Ack(AckSlot),
    Flush(RpcReplyPort<()>),
}

pub(crate) async fn run(
    mut sink: Box<dyn AuditSink>,
    mut jobs: tokio::sync::mpsc::UnboundedReceiver<Job>,
    subscribers: broadcast::Sender<AuditEvent>,
    feeds: Arc<ShareFeeds>,
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
        let mut taken = 0isize;
        for job in batch {
            match job {
                Job::Record(mut e, ack) => {
                    taken += 1;
                    if let Some(ack) = ack {
                        if !ack.claim() {
                            continue; // withdrawn by its sender: never written
                        }
                        waiting.push(Waiting::Ack(ack));
                    }
                    e.id = Uuid::now_v7();
                    e.seq = next_seq + events.len() as u64;
                    events.push(e);
                }
                Job::Flush(reply) => waiting.push(Waiting::Flush(reply)),
            }
        }
        let result = if events.is_empty() {
            Ok(())
        } else if let Some(after) = crate::faultpoints::check("audit.append") {
            // `return(MS)`: a disk that takes that long to fail.
            if let Some(ms) = after.and_then(|a| a.parse().ok()) {
                tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
            }
            Err("injected audit failure (fail point audit.append)".to_string())
        } else {
            // File I/O and fsync block: keep them off the runtime's workers. While
            // the write runs, the health knows since when (a stalled disk shows).
            *health.writing_since.lock() = Some(std::time::Instant::now());
            let written = if tokio::runtime::Handle::current().runtime_flavor()
                == tokio::runtime::RuntimeFlavor::MultiThread
            {
                // In place: this thread gives its other tasks to another worker and
                // writes itself. A hop to a blocking-pool thread and back took
                // 0.03-1.6 ms on a busy 2-core machine, on every share's start
                // (BENCHMARKS.md, issue 18). A panic is caught as the pool would.
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    tokio::task::block_in_place(|| {
                        let r = sink.append(&events);
                        (sink, events, r)
                    })
                }))
                .map_err(|_| "the sink panicked while writing in place".to_string())
            } else {
                // A current-thread runtime (tests under the paused clock) cannot
                // write in place.
                tokio::task::spawn_blocking(move || {
                    let r = sink.append(&events);
                    (sink, events, r)
                })
                .await
                .map_err(|e| e.to_string())
            };
            *health.writing_since.lock() = None;
            match written {
                Ok((back, events_back, result)) => {
                    sink = back;
                    events = events_back;
                    result
                }
                Err(e) => {
                    tracing::error!(error = %e, "the audit writer panicked; audit stops");
                    health.set(Some(format!("audit writer panicked: {e}")));
                    feeds.close_all();
                    return;
                }
            }
        };
        health.add_queued(-taken);
        match &result {
            Ok(()) => {
                next_seq += events.len() as u64;
                if health.error().is_some() {
                    tracing::warn!("the audit log keeps events again");
                }
                health.set(None);
                metrics::histogram!("termshare_audit_batch_size").record(events.len() as f64);
                for e in events {
                    feeds.publish(&e);
                    // Nobody listening is fine.
                    let _ = subscribers.send(e);
                }
            }
            Err(e) => {
                metrics::counter!("termshare_audit_failures_total").increment(1);
                tracing::error!(error = %e, lost = events.len(), "the audit sink refused a batch");
                health.set(Some(e.clone()));
                feeds.unrecorded(&events);
            }
        }
        for w in waiting {
            match w {
                Waiting::Ack(ack) => ack.answer(result.clone()),
                Waiting::Flush(reply) => {
                    let _ = reply.send(());
                }
            }
        }
    }
    // Nobody sends any more: no feed will get another event.
    feeds.close_all();
}
