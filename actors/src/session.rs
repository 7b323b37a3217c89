//! ShareSession: one per share, the single writer of that share's state.
//!
//! Every change to a share (link arrived, extension, expiry tick, revoke, switch, worker
//! exit or crash) is a message in this actor's mailbox, so they are serialized: an
//! extension that arrives after expiry sees the share ended, and an expiry tick armed
//! before an extension carries an old generation and is ignored.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use serde_json::json;
use tokio::time::Instant;

use crate::audit::{record, record_acked, AuditEvent, AuditKind, AuditMsg};
use crate::error::{human, ShareError};
use crate::root::RootMsg;
use crate::settings::Settings;
use crate::traits::{Backend, TerminalHost, TerminateOutcome, WorkerSpec};
use crate::ttl::{TtlEvent, TtlMsg, TtlTimer};
use crate::types::{
    fingerprint, EndReason, Links, Principal, RevokeReport, ShareId, ShareInfo, ShareState,
};
use crate::worker::{BackendWorker, WorkerArgs, WorkerEvent, WorkerMsg};

pub type ShareReply = RpcReplyPort<Result<ShareInfo, ShareError>>;
pub type EndReply = RpcReplyPort<Result<RevokeReport, ShareError>>;

pub enum SessionMsg {
    /// Sent to itself once spawned: check the terminal, start the worker.
    Begin,
    Worker {
        generation: u64,
        event: WorkerEvent,
    },
    Ttl(TtlEvent),
    Extend {
        by: Duration,
        principal: Principal,
        reply: ShareReply,
    },
    /// End the share (revoke, stop, shutdown). Replies with the report.
    End {
        reason: EndReason,
        principal: Option<Principal>,
        reply: Option<EndReply>,
    },
    /// Replace the worker with one of another backend; keeps id, TTL and links' owner.
    Switch {
        backend: Arc<dyn Backend>,
        rule_id: String,
        max_ttl: Option<Duration>,
        principal: Principal,
        reply: ShareReply,
    },
    Info(RpcReplyPort<ShareInfo>),
}

/// What every session shares with its root.
pub struct ServiceCtx {
    pub host: Arc<dyn TerminalHost>,
    pub audit: ActorRef<AuditMsg>,
    pub root: ActorRef<RootMsg>,
    pub settings: Settings,
}

pub struct SessionArgs {
    pub info: ShareInfo,
    pub ttl: Duration,
    pub max_ttl: Option<Duration>,
    pub grace: Vec<Duration>,
    pub backend: Arc<dyn Backend>,
    pub ctx: Arc<ServiceCtx>,
    pub reply: ShareReply,
    /// Set once the share has ended, read by the root for callers that race the end.
    pub ended: Arc<OnceLock<EndReason>>,
    /// The request's audit event, written before anything starts.
    pub requested: AuditEvent,
}

enum Phase {
    Starting {
        reply: Option<ShareReply>,
    },
    Active,
    Switching {
        from: String,
        by: Principal,
        stopped: TerminateOutcome,
        reply: Option<ShareReply>,
    },
    Ended,
}

pub struct ShareSession;

pub struct SessionState {
    info: ShareInfo,
    ctx: Arc<ServiceCtx>,
    backend: Arc<dyn Backend>,
    phase: Phase,
    /// Monotonic deadline; `info.expires_at` is its wall-clock image for display.
    deadline: Instant,
    started: Instant,
    max_ttl: Option<Duration>,
    grace: Vec<Duration>,
    ttl_generation: u64,
    ttl: Option<ActorRef<TtlMsg>>,
    worker: Option<ActorRef<WorkerMsg>>,
    worker_generation: u64,
    /// The current worker has reported its link (it is not in the middle of starting).
    worker_ready: bool,
    worker_pid: Option<u32>,
    worker_tells_participants: bool,
    ended: Arc<OnceLock<EndReason>>,
    /// Taken by `Begin`, which writes it first.
    requested: Option<AuditEvent>,
    /// The backend label under which this share counts in `termshare_active_shares`.
    counted_active: Option<String>,
}

impl SessionState {
    fn event(&self, kind: AuditKind) -> AuditEvent {
        AuditEvent::new(kind, self.info.share_id)
            .principal(&self.info.principal)
            .terminal(&self.info.terminal)
            .backend(&self.info.backend)
    }

    fn id(&self) -> ShareId {
        self.info.share_id
    }

    async fn spawn_worker(
        &mut self,
        myself: &ActorRef<SessionMsg>,
        size: Option<(u16, u16)>,
    ) -> Result<(), ShareError> {
        self.worker_generation += 1;
        self.worker_ready = false;
        self.worker_pid = None;
        let spec = WorkerSpec {
            share_id: self.info.share_id,
            terminal: self.info.terminal.clone(),
            access: self.info.access,
            attach: self
                .ctx
                .host
                .attach_command(&self.info.terminal, self.info.access),
            size,
            link_timeout: self.ctx.settings.link_timeout,
        };
        let (worker, _) = Actor::spawn_linked(
            None,
            BackendWorker,
            WorkerArgs {
                backend: self.backend.clone(),
                spec,
                session: myself.clone(),
                generation: self.worker_generation,
                probe_interval: self.ctx.settings.probe_interval,
                heartbeat_timeout: self.ctx.settings.heartbeat_timeout,
            },
            myself.get_cell(),
        )
        .await
        .map_err(ShareError::internal)?;
        self.worker = Some(worker);
        Ok(())
    }

    fn arm_ttl(&mut self) {
        self.ttl_generation += 1;
        if let Some(ttl) = &self.ttl {
            let _ = ttl.cast(TtlMsg::Arm {
                deadline: self.deadline,
                thresholds: self.grace.clone(),
                generation: self.ttl_generation,
            });
        }
    }

    /// Stop the current worker within what is left of `deadline`, after `grace` for a
    /// graceful stop.
    async fn stop_worker(
        &mut self,
        deadline: Instant,
        grace: Duration,
    ) -> (TerminateOutcome, bool) {
        let Some(worker) = self.worker.take() else {
            return (
                TerminateOutcome {
                    escalated: false,
                    already_gone: true,
                },
                true,
            );
        };
        if !self.worker_ready {
            // Still starting: its mailbox is busy with the start. Killing the actor
            // drops the start future and with it every process it spawned.
            let left = deadline.saturating_duration_since(Instant::now());
            let ok = worker.kill_and_wait(Some(left)).await.is_ok();
            return (
                TerminateOutcome {
                    escalated: true,
                    already_gone: false,
                },
                ok,
            );
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match worker
            .call(|reply| WorkerMsg::Terminate { grace, reply }, Some(left))
            .await
        {
            Ok(ractor::rpc::CallResult::Success(outcome)) => (outcome, true),
            Ok(ractor::rpc::CallResult::SenderError) => (
                // The worker actor went away on its own (its process exited).
                TerminateOutcome {
                    escalated: false,
                    already_gone: true,
                },
                true,
            ),
            _ => {
                // Deadline passed: kill the actor; its Drop guard SIGKILLs the group.
                tracing::error!(share = %self.info.share_id, "worker missed the stop deadline");
                worker.kill();
                (
                    TerminateOutcome {
                        escalated: true,
                        already_gone: false,
                    },
                    false,
                )
            }
        }
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

    /// The one way a share ends: stop the worker, audit, answer, tell the root, drain.
    async fn end(
        &mut self,
        myself: &ActorRef<SessionMsg>,
        reason: EndReason,
        principal: Option<Principal>,
        reply: Option<EndReply>,
    ) {
        if matches!(self.phase, Phase::Ended) {
            if let Some(reply) = reply {
                let _ = reply.send(Err(ShareError::ShareEnding(self.id())));
            }
            return;
        }
        let t0 = Instant::now();
        let deadline = t0 + self.ctx.settings.revoke_deadline;
        let pending = match std::mem::replace(&mut self.phase, Phase::Ended) {
            Phase::Starting { reply } => reply,
            Phase::Switching { reply, .. } => reply,
            Phase::Active | Phase::Ended => None,
        };
        let _ = self.ended.set(reason.clone());
        self.info.state = ShareState::Ending;
        let _ = self.ctx.root.cast(RootMsg::Updated(self.info.clone()));
        if let Some(ttl) = &self.ttl {
            let _ = ttl.cast(TtlMsg::Cancel);
        }
        let participants_before = self.participants().await;
        // A failed worker gets no graceful stop: it may be hung, and nobody is served.
        let grace = match reason {
            EndReason::Failed(_) | EndReason::TerminalClosed => Duration::ZERO,
            _ => self.ctx.settings.terminate_grace,
        };
        let (outcome, stopped_in_time) = self.stop_worker(deadline, grace).await;
        let elapsed = t0.elapsed();
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
            deadline_met: stopped_in_time && elapsed <= self.ctx.settings.revoke_deadline,
        };
        let mut event = self
            .event(reason.audit_kind())
            .detail("elapsed_ms", elapsed.as_secs_f64() * 1000.0)
            .detail("escalated", report.escalated)
            .detail("already_gone", report.already_gone)
            .detail("deadline_met", report.deadline_met)
            .detail("worker_pid", json!(self.worker_pid));
        if let Some(p) = &principal {
            event = event.detail("by", p.as_str());
        }
        if let Some(n) = participants_before {
            event = event.detail("participants_before", n);
        }
        if let EndReason::Failed(cause) = &reason {
            event = event.detail("cause", cause.as_str());
        }
        if matches!(reason, EndReason::TerminalClosed) {
            event = event.detail("cause", "terminal closed");
        }
        if !report.deadline_met {
            tracing::error!(share = %self.id(), ?elapsed, "share end missed its deadline");
            event = event.detail("error", "revoke deadline missed");
        }
        let audited = record_acked(&self.ctx.audit, event, self.ctx.settings.audit_timeout).await;
        if let Some(start_reply) = pending {
            let err = match &reason {
                EndReason::Failed(cause) => ShareError::Internal(cause.clone()),
                EndReason::Expired => ShareError::ShareExpired(self.id()),
                _ => ShareError::ShareEnding(self.id()),
            };
            let _ = start_reply.send(Err(err));
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
        });
        // Answer what is already queued (with "ended"), refuse what comes later.
        let _ = myself.drain();
    }

    /// A start (or switch) that failed before a link: audit it once, with its cause, and
    /// answer the caller with the backend's own error.
    async fn fail_start(&mut self, myself: &ActorRef<SessionMsg>, error: ShareError) {
        let reply = match &mut self.phase {
            Phase::Starting { reply } | Phase::Switching { reply, .. } => reply.take(),
            _ => None,
        };
        self.end(myself, EndReason::Failed(error.to_string()), None, None)
            .await;
        if let Some(reply) = reply {
            let _ = reply.send(Err(error));
        }
    }

    fn count_active(&mut self, active: bool) {
        if let Some(b) = self.counted_active.take() {
            metrics::gauge!("termshare_active_shares", "backend" => b).decrement(1.0);
        }
        if active {
            let b = self.info.backend.to_string();
            metrics::gauge!("termshare_active_shares", "backend" => b.clone()).increment(1.0);
            self.counted_active = Some(b);
        }
    }
}

impl Actor for ShareSession {
    type Msg = SessionMsg;
    type State = SessionState;
    type Arguments = SessionArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: SessionArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let now = Instant::now();
        let mut state = SessionState {
            deadline: now + args.ttl,
            started: now,
            info: args.info,
            ctx: args.ctx,
            backend: args.backend,
            phase: Phase::Starting {
                reply: Some(args.reply),
            },
            max_ttl: args.max_ttl,
            grace: args.grace,
            ttl_generation: 0,
            ttl: None,
            worker: None,
            worker_generation: 0,
            worker_ready: false,
            worker_pid: None,
            worker_tells_participants: false,
            ended: args.ended,
            requested: Some(args.requested),
            counted_active: None,
        };
        state.info.expires_at = SystemTime::now() + args.ttl;
        let (ttl, _) =
            Actor::spawn_linked(None, TtlTimer, myself.clone(), myself.get_cell()).await?;
        state.ttl = Some(ttl);
        state.arm_ttl();
        myself.cast(SessionMsg::Begin)?;
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        crate::faultpoints::check("session.handle");
        match msg {
            SessionMsg::Begin => {
                if matches!(state.phase, Phase::Ended) {
                    return Ok(());
                }
                // Fail closed: a share whose request cannot be put on the record does
                // not start. (This write is also how a recovered log is noticed.)
                if let Some(requested) = state.requested.take() {
                    let timeout = state.ctx.settings.audit_timeout;
                    if let Err(e) = record_acked(&state.ctx.audit, requested, timeout).await {
                        metrics::counter!("termshare_shares_denied_total").increment(1);
                        let err = ShareError::AuditUnavailable(format!(
                            "{e}; new shares are refused until the audit log keeps events again"
                        ));
                        state.fail_start(&myself, err).await;
                        return Ok(());
                    }
                }
                let size = match state.ctx.host.check(&state.info.terminal).await {
                    Ok(size) => size,
                    Err(detail) => {
                        let err = ShareError::UnknownTerminal {
                            terminal: state.info.terminal.clone(),
                            detail,
                        };
                        state.fail_start(&myself, err).await;
                        return Ok(());
                    }
                };
                if let Err(e) = state.spawn_worker(&myself, size).await {
                    state.fail_start(&myself, e).await;
                }
            }
            SessionMsg::Worker { generation, event } => {
                if generation != state.worker_generation || matches!(state.phase, Phase::Ended) {
                    return Ok(()); // from a worker replaced by a switch, or after the end
                }
                match event {
                    WorkerEvent::Ready {
                        links,
                        pid,
                        tells_participants,
                    } => {
                        state.worker_ready = true;
                        state.worker_pid = pid;
                        state.worker_tells_participants = tells_participants;
                        if let Err(e) = on_ready(state, links).await {
                            let cause = format!("its start could not be put on the record: {e}");
                            state
                                .end(&myself, EndReason::Failed(cause), None, None)
                                .await;
                        }
                    }
                    WorkerEvent::StartFailed(e) => {
                        state.worker = None;
                        state.fail_start(&myself, ShareError::Backend(e)).await;
                    }
                    WorkerEvent::Hung(silent) => {
                        metrics::counter!("termshare_worker_crashes_total").increment(1);
                        let cause = format!(
                            "heartbeat timeout: the worker did not answer for {}",
                            human(Duration::from_millis(silent.as_millis() as u64))
                        );
                        state
                            .end(&myself, EndReason::Failed(cause), None, None)
                            .await;
                    }
                    WorkerEvent::Exited(status) => {
                        state.worker = None;
                        metrics::counter!("termshare_worker_crashes_total").increment(1);
                        let reason = if state.ctx.host.check(&state.info.terminal).await.is_err() {
                            EndReason::TerminalClosed
                        } else {
                            EndReason::Failed(format!("worker {}", status.description))
                        };
                        state.end(&myself, reason, None, None).await;
                    }
                }
            }
            SessionMsg::Ttl(TtlEvent::Expired { generation }) => {
                if generation == state.ttl_generation {
                    state.end(&myself, EndReason::Expired, None, None).await;
                }
            }
            SessionMsg::Ttl(TtlEvent::Grace {
                remaining,
                generation,
            }) => {
                if generation == state.ttl_generation && !matches!(state.phase, Phase::Ended) {
                    if state.info.state == ShareState::Active {
                        state.info.state = ShareState::Expiring;
                        let _ = state.ctx.root.cast(RootMsg::Updated(state.info.clone()));
                    }
                    let message = format!(
                        "termshare: this share of {} ends in {}",
                        state.info.terminal,
                        human(remaining)
                    );
                    let notified = tokio::time::timeout(
                        Duration::from_secs(1),
                        state.ctx.host.notify(&state.info.terminal, &message),
                    )
                    .await;
                    let notified = matches!(notified, Ok(Ok(())));
                    record(
                        &state.ctx.audit,
                        state
                            .event(AuditKind::ShareGraceWarning)
                            .detail("remaining_ms", remaining.as_millis() as u64)
                            .detail("participants_notified", notified),
                    );
                }
            }
            SessionMsg::Extend {
                by,
                principal,
                reply,
            } => {
                let result = extend(state, by, &principal).await;
                let _ = reply.send(result);
            }
            SessionMsg::End {
                reason,
                principal,
                reply,
            } => {
                state.end(&myself, reason, principal, reply).await;
            }
            SessionMsg::Switch {
                backend,
                rule_id,
                max_ttl,
                principal,
                reply,
            } => {
                match state.phase {
                    Phase::Active => {}
                    Phase::Ended => {
                        let _ = reply.send(Err(ShareError::ShareEnding(state.id())));
                        return Ok(());
                    }
                    Phase::Starting { .. } | Phase::Switching { .. } => {
                        let _ =
                            reply.send(Err(ShareError::Invalid(crate::error::InvalidInput::new(
                                "switch",
                                &state.id().to_string(),
                                "the share is still starting; switch once it is active",
                            ))));
                        return Ok(());
                    }
                }
                // The old worker is stopped and reaped before the new one starts.
                let deadline = Instant::now() + state.ctx.settings.revoke_deadline;
                let grace = state.ctx.settings.terminate_grace;
                let (stopped, _) = state.stop_worker(deadline, grace).await;
                let from = state.info.backend.to_string();
                state.backend = backend;
                state.info.backend = state.backend.name();
                state.info.rule_id = rule_id;
                state.max_ttl = max_ttl;
                state.info.links = Links::default();
                state.phase = Phase::Switching {
                    from,
                    by: principal,
                    stopped,
                    reply: Some(reply),
                };
                let size = state
                    .ctx
                    .host
                    .check(&state.info.terminal)
                    .await
                    .ok()
                    .flatten();
                if let Err(e) = state.spawn_worker(&myself, size).await {
                    state.fail_start(&myself, e).await;
                }
            }
            SessionMsg::Info(reply) => {
                let _ = reply.send(state.info.clone());
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // Never let a child's end stop the session by default: decide here.
        if let SupervisionEvent::ActorFailed(cell, err) = event {
            let is_worker = state
                .worker
                .as_ref()
                .is_some_and(|w| w.get_id() == cell.get_id());
            let is_ttl = state
                .ttl
                .as_ref()
                .is_some_and(|t| t.get_id() == cell.get_id());
            if is_worker {
                state.worker = None; // its state, and so its process guard, is gone
                metrics::counter!("termshare_worker_crashes_total").increment(1);
                let cause = format!("worker crashed: {err}");
                state
                    .end(&myself, EndReason::Failed(cause), None, None)
                    .await;
            } else if is_ttl {
                // Without a timer the TTL cannot be enforced: fail closed.
                state.ttl = None;
                let cause = format!("ttl timer crashed: {err}");
                state
                    .end(&myself, EndReason::Failed(cause), None, None)
                    .await;
            }
        }
        Ok(())
    }
}

/// Returns the audit error when the start or switch could not be put on the record.
async fn on_ready(state: &mut SessionState, links: Links) -> Result<(), String> {
    let mut audited = Ok(());
    state.info.links = links;
    state.info.state = ShareState::Active;
    state.count_active(true);
    let link_fp = fingerprint(&state.info.links.link);
    match std::mem::replace(&mut state.phase, Phase::Active) {
        Phase::Starting { reply } => {
            let backend = state.info.backend.to_string();
            metrics::counter!("termshare_shares_started_total", "backend" => backend.clone())
                .increment(1);
            metrics::histogram!("termshare_start_to_link_seconds", "backend" => backend)
                .record(state.started.elapsed().as_secs_f64());
            let mut event = state
                .event(AuditKind::ShareStarted)
                .detail("access", state.info.access.as_str())
                .detail("rule_id", state.info.rule_id.as_str())
                .detail("link_fp", link_fp)
                .detail("worker_pid", json!(state.worker_pid))
                .detail(
                    "expires_at",
                    humantime::format_rfc3339_millis(state.info.expires_at).to_string(),
                );
            if let Some(ro) = &state.info.links.read_only_link {
                event = event.detail("read_only_link_fp", fingerprint(ro));
            }
            audited = announce(state, event, reply).await;
        }
        Phase::Switching {
            from,
            by,
            stopped,
            reply,
        } => {
            let event = state
                .event(AuditKind::ShareSwitched)
                .detail("by", by.as_str())
                .detail("from", from)
                .detail("to", state.info.backend.as_str())
                .detail("old_worker_stopped", true)
                .detail("old_worker_escalated", stopped.escalated)
                .detail("new_worker_pid", json!(state.worker_pid))
                .detail("link_fp", link_fp);
            audited = announce(state, event, reply).await;
        }
        other => state.phase = other,
    }
    audited
}

/// Keep the event, tell the root the share's new info, and only then answer the
/// caller: an acknowledged start or switch always has its audit event. Returns the
/// audit error, if the event could not be kept: the caller then ends the share (fail
/// closed: a share off the record does not run).
async fn announce(
    state: &SessionState,
    event: AuditEvent,
    reply: Option<ShareReply>,
) -> Result<(), String> {
    let audited = record_acked(&state.ctx.audit, event, state.ctx.settings.audit_timeout).await;
    let _ = state.ctx.root.cast(RootMsg::Updated(state.info.clone()));
    if let Some(reply) = reply {
        let _ = reply.send(match &audited {
            Ok(()) => Ok(state.info.clone()),
            Err(e) => Err(ShareError::AuditUnavailable(format!(
                "{e}; the share was stopped, as it could not be put on the record"
            ))),
        });
    }
    audited
}

async fn extend(
    state: &mut SessionState,
    by: Duration,
    principal: &Principal,
) -> Result<ShareInfo, ShareError> {
    match state.phase {
        Phase::Ended => {
            return Err(match state.ended.get() {
                Some(EndReason::Expired) => ShareError::ShareExpired(state.id()),
                Some(reason) => ShareError::ShareEnded(state.id(), reason.clone()),
                None => ShareError::ShareEnding(state.id()),
            })
        }
        Phase::Active | Phase::Starting { .. } | Phase::Switching { .. } => {}
    }
    if by.is_zero() || by > crate::settings::MAX_DURATION {
        return Err(crate::error::InvalidInput::new(
            "extension",
            &human(by),
            "must be positive and at most a year",
        )
        .into());
    }
    let new_deadline = state.deadline + by;
    let total = new_deadline - state.started;
    if let Some(max) = state.max_ttl {
        if total > max {
            return Err(ShareError::ExtendAboveMax {
                share_id: state.id(),
                by: human(by),
                total: human(total),
                max: human(max),
            });
        }
    }
    // On the record first: an extension the log cannot keep does not happen.
    let event = state
        .event(AuditKind::ShareExtended)
        .detail("by_ms", by.as_millis() as u64)
        .detail("by", principal.as_str())
        .detail(
            "expires_at",
            humantime::format_rfc3339_millis(state.info.expires_at + by).to_string(),
        );
    record_acked(&state.ctx.audit, event, state.ctx.settings.audit_timeout)
        .await
        .map_err(ShareError::AuditUnavailable)?;
    state.deadline = new_deadline;
    state.info.expires_at += by;
    if state.info.state == ShareState::Expiring {
        state.info.state = ShareState::Active;
    }
    state.arm_ttl();
    let _ = state.ctx.root.cast(RootMsg::Updated(state.info.clone()));
    Ok(state.info.clone())
}
