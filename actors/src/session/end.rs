//! The one way a share ends: stop its worker (and a switch's other worker), put the
//! end on the record, answer, tell the root, drain.
//!
//! The revoke deadline is counted from `requested_at`, the moment the request reached
//! termshare (an expiry's or a failure's own moment otherwise). `deadline_met` is true
//! only when every worker was gone within it: a revoke that was kept waiting anywhere
//! says so.

use std::time::Duration;

use ractor::ActorRef;
use serde_json::json;

/// How long the end waits for a recording to be closed and made durable.
const RECORDING_FINISH: Duration = Duration::from_secs(2);
use tokio::time::Instant;

use super::{Phase, SessionMsg, SessionState};
use crate::audit::record_acked;
use crate::caller::Caller;
use crate::error::ShareError;
use crate::root::RootMsg;
use crate::traits::TerminateOutcome;
use crate::ttl::TtlMsg;
use crate::types::{EndReason, RevokeReport, ShareId, ShareState};
use crate::worker::WorkerMsg;

impl SessionState {
    /// End the share for a cause that arose here and now (expiry, failure).
    pub(super) async fn end_now(&mut self, myself: &ActorRef<SessionMsg>, reason: EndReason) {
        self.end(myself, reason, None, None, Instant::now()).await;
    }

    /// The TTL ran out. An extension being recorded gets its say first: the expiry is
    /// looked at again once it is settled.
    pub(super) async fn expired(&mut self, myself: &ActorRef<SessionMsg>, generation: u64) {
        if generation != self.ttl_generation {
            return; // armed before an extension: stale
        }
        if self.extensions.in_flight() {
            self.extensions.defer_expiry(generation);
            return;
        }
        self.end_now(myself, EndReason::Expired).await;
    }

    pub(super) async fn end(
        &mut self,
        myself: &ActorRef<SessionMsg>,
        reason: EndReason,
        by: Option<Caller>,
        reply: Option<super::EndReply>,
        requested_at: Instant,
    ) {
        if matches!(self.phase, Phase::Ended) {
            if let Some(reply) = reply {
                let _ = reply.send(Err(ShareError::ShareEnding(self.id())));
            }
            return;
        }
        let deadline = requested_at + self.ctx.settings.revoke_deadline;
        let was_starting = matches!(
            self.phase,
            Phase::Preparing { .. } | Phase::Starting { .. } | Phase::Announcing { .. }
        );
        let (pending, switch) = match std::mem::replace(&mut self.phase, Phase::Ended) {
            Phase::Preparing { reply }
            | Phase::Starting { reply }
            | Phase::Announcing { reply } => (reply, None),
            Phase::Switching(switch) => (None, Some(switch)),
            Phase::Active | Phase::Ended => (None, None),
        };
        for t in self.tasks.drain(..) {
            t.abort(); // notices, checks, timers: nothing more of them is wanted
        }
        let _ = self.ended.set(reason.clone());
        self.info.state = ShareState::Ending;
        self.publish();
        if let Some(ttl) = &self.ttl {
            let _ = ttl.cast(TtlMsg::Cancel);
        }
        let participants_before = self.participants().await;
        // A failed worker gets no graceful stop: it may be hung, and nobody is served.
        let grace = match reason {
            EndReason::Failed(_) | EndReason::TerminalClosed => Duration::ZERO,
            _ => self.ctx.settings.terminate_grace,
        };
        let (outcome, mut stopped_in_time) = self.stop_worker(deadline, grace).await;
        if let Some(switch) = switch {
            // A switch was under way: the share was still on the worker just stopped;
            // the new one (starting, or ready but not yet switched to) goes too.
            stopped_in_time &= switch.abandon(self.id(), deadline).await;
        }
        let elapsed = requested_at.elapsed();
        self.participants_gone("the share ended");
        self.count_active(false);
        metrics::histogram!("termshare_revoke_seconds").record(elapsed.as_secs_f64());
        metrics::counter!(match reason {
            EndReason::Expired => "termshare_shares_expired_total",
            EndReason::Revoked => "termshare_shares_revoked_total",
            EndReason::Stopped => "termshare_shares_stopped_total",
            EndReason::Failed(_) | EndReason::TerminalClosed => "termshare_shares_failed_total",
        })
        .increment(1);
        let report = RevokeReport {
            share_id: self.id(),
            reason: reason.clone(),
            elapsed,
            escalated: outcome.escalated,
            already_gone: outcome.already_gone,
            participants_before,
            participants_after: outcome.participants_after,
            deadline_met: stopped_in_time && Instant::now() <= deadline,
        };
        let for_root = report.clone();
        let mut event = self
            .event(reason.audit_kind())
            .detail("elapsed_ms", elapsed.as_secs_f64() * 1000.0)
            .detail("escalated", report.escalated)
            .detail("already_gone", report.already_gone)
            .detail("deadline_met", report.deadline_met)
            .detail("worker_pid", json!(self.worker_pid));
        if reason == EndReason::Expired {
            // How long past its TTL the share was served: its worker gone now.
            let late = Instant::now().saturating_duration_since(self.deadline);
            event = event.detail("past_deadline_ms", late.as_secs_f64() * 1000.0);
        }
        if let Some(caller) = &by {
            event = event.by(caller);
        } else if was_starting {
            // A start that fails is still the requester's action.
            event = event.asked_by(&self.requested_by);
        }
        if let Some(n) = participants_before {
            event = event.detail("participants_before", n);
        }
        if let Some(n) = report.participants_after {
            event = event.detail("participants_after", n);
        }
        if let EndReason::Failed(cause) = &reason {
            event = event.detail("cause", cause.as_str());
        }
        if let Some(cause) = self.end_cause {
            event = event.detail("cause", cause);
        }
        if let Some(recording) = self.recording.take() {
            // After the worker is gone: the file holds everything participants saw.
            match tokio::time::timeout(RECORDING_FINISH, recording.finish()).await {
                Ok(Ok(r)) => {
                    event = event
                        .detail("recording_path", r.path)
                        .detail("recording_sha256", r.sha256)
                        .detail("recording_bytes", r.bytes);
                }
                Ok(Err(e)) => event = event.detail("recording_error", e),
                Err(_) => event = event.detail("recording_error", "did not finish in time"),
            }
        }
        if matches!(reason, EndReason::TerminalClosed) {
            event = event.detail("cause", "terminal closed");
        }
        if !report.deadline_met {
            tracing::error!(share = %self.id(), ?elapsed, "share end missed its deadline");
            event = event.detail("error", "revoke deadline missed");
        }
        let audited = record_acked(&self.ctx.audit, event, self.ctx.settings.audit_timeout).await;
        let ended_error = ShareError::ShareEnded(self.id(), reason.clone());
        if let Some(start_reply) = pending {
            let err = match &reason {
                EndReason::Failed(cause) => ShareError::Internal(cause.clone()),
                _ => ended_error.clone(),
            };
            let _ = start_reply.send(Err(err));
        }
        if let Some((reply, by)) = self.extensions.refuse_all(&ended_error) {
            // Its record was already being written: it happened, before the end.
            let mut info = self.info.clone();
            info.expires_at += by;
            let _ = reply.send(Ok(info));
        }
        if let Some(reply) = self.switch_reply.take() {
            // `share.switched` went to the record before this end: the switch happened.
            let _ = reply.send(Ok(self.info.clone()));
        }
        if let Some(reply) = reply {
            let _ = reply.send(match audited {
                Ok(()) if report.deadline_met => Ok(report),
                Ok(()) => Err(ShareError::RevokeDeadlineMissed(Box::new(report))),
                Err(e) => Err(ShareError::AuditUnavailable(format!(
                    "share {} ended ({reason}), but its audit event was not kept: {e}",
                    report.share_id
                ))),
            });
        }
        let _ = self.ctx.root.cast(RootMsg::Ended {
            share_id: self.id(),
            reason,
            report: for_root,
        });
        // Answer what is already queued (with "ended"), refuse what comes later.
        let _ = myself.drain();
    }

    async fn participants(&self) -> Option<u32> {
        let worker = self.worker.as_ref()?;
        if !self.worker_ready || !self.worker_tells_participants {
            return None;
        }
        match worker
            .call(WorkerMsg::Participants, Some(Duration::from_millis(300)))
            .await
        {
            Ok(ractor::rpc::CallResult::Success(n)) => n,
            _ => None,
        }
    }

    /// Stop the current worker within what is left of `deadline`, after `grace` for a
    /// graceful stop.
    async fn stop_worker(
        &mut self,
        deadline: Instant,
        grace: Duration,
    ) -> (TerminateOutcome, bool) {
        let worker = self.worker.take();
        let ready = self.worker_ready;
        stop_worker(self.id(), worker, ready, deadline, grace).await
    }
}

/// Stop `worker` within what is left of `deadline`, after `grace` for a graceful stop.
/// Returns how it went and whether it was gone in time. A worker still starting
/// (`ready` false) is busy with its start: killing its actor drops the start future
/// and, with it, every process it spawned.
pub(super) async fn stop_worker(
    share: ShareId,
    worker: Option<ActorRef<WorkerMsg>>,
    ready: bool,
    deadline: Instant,
    grace: Duration,
) -> (TerminateOutcome, bool) {
    let Some(worker) = worker else {
        return (
            TerminateOutcome {
                escalated: false,
                already_gone: true,
                ..Default::default()
            },
            true,
        );
    };
    let left = deadline.saturating_duration_since(Instant::now());
    if !ready || left.is_zero() {
        let ok = worker
            .kill_and_wait(Some(left.max(Duration::from_millis(100))))
            .await
            .is_ok();
        return (
            TerminateOutcome {
                escalated: true,
                already_gone: false,
                ..Default::default()
            },
            ok && Instant::now() <= deadline,
        );
    }
    match worker
        .call(|reply| WorkerMsg::Terminate { grace, reply }, Some(left))
        .await
    {
        Ok(ractor::rpc::CallResult::Success(outcome)) => (outcome, Instant::now() <= deadline),
        Ok(ractor::rpc::CallResult::SenderError) => (
            // The worker actor went away on its own (its process exited).
            TerminateOutcome {
                escalated: false,
                already_gone: true,
                ..Default::default()
            },
            true,
        ),
        _ => {
            // Deadline passed: kill the actor; its Drop guard SIGKILLs the group.
            tracing::error!(%share, "worker missed the stop deadline");
            worker.kill();
            (
                TerminateOutcome {
                    escalated: true,
                    already_gone: false,
                    ..Default::default()
                },
                false,
            )
        }
    }
}
