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
use crate::caller::Caller;
use crate::error::{human, ShareError};
use crate::root::RootMsg;
use crate::settings::Settings;
use crate::traits::{Backend, TerminalHost, TerminateOutcome, WorkerSpec};
use crate::ttl::{TtlEvent, TtlMsg, TtlTimer};
use crate::types::{
    EndReason, FingerprintKey, Links, RevokeReport, ShareId, ShareInfo, ShareState,
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
    /// Move the deadline by `by`, within `max_ttl` (the allowing rule's bound, counted
    /// from the share's start).
    Extend {
        by: Duration,
        max_ttl: Option<Duration>,
        caller: Caller,
        reply: ShareReply,
    },
    /// End the share (revoke, stop, shutdown). Replies with the report.
    End {
        reason: EndReason,
        by: Option<Caller>,
        reply: Option<EndReply>,
    },
    /// Move the share to another backend (admitted by the root): the new worker starts
    /// while the old one still serves, and the old one is stopped only once the new one
    /// has its link. A new worker that fails leaves the share on the old one.
    Switch {
        backend: Arc<dyn Backend>,
        rule_id: String,
        max_ttl: Option<Duration>,
        caller: Caller,
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
    /// Keys the fingerprints of links in audit events.
    pub fingerprints: FingerprintKey,
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
    /// Who asked for the share (its peer goes on the `share.started` event).
    pub caller: Caller,
}

enum Phase {
    Starting {
        reply: Option<ShareReply>,
    },
    Active,
    /// A new worker is starting while `old` still serves the share.
    Switching {
        by: Caller,
        old: Box<OldWorker>,
        reply: Option<ShareReply>,
    },
    Ended,
}

/// The worker a switch is moving away from, and what the share had with it: kept
/// until the new worker has its link, and put back if it never gets one.
struct OldWorker {
    /// `None` once the old worker has exited by itself during the switch.
    worker: Option<ActorRef<WorkerMsg>>,
    generation: u64,
    pid: Option<u32>,
    tells_participants: bool,
    backend: Arc<dyn Backend>,
    links: Links,
    rule_id: String,
    max_ttl: Option<Duration>,
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
    /// Who asked for the share.
    requested_by: Caller,
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
        let worker = self.worker.take();
        let ready = self.worker_ready;
        stop_worker(self.id(), worker, ready, deadline, grace).await
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
        by: Option<Caller>,
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
        let was_starting = matches!(self.phase, Phase::Starting { .. });
        let (pending, starting_worker) = match std::mem::replace(&mut self.phase, Phase::Ended) {
            Phase::Starting { reply } => (reply, None),
            // Mid-switch the old worker is the one serving: the record and the report
            // are about it, and the new one, still starting, is stopped with it.
            Phase::Switching { reply, old, .. } => (reply, self.go_back_to(*old)),
            Phase::Active | Phase::Ended => (None, None),
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
        let (outcome, mut stopped_in_time) = self.stop_worker(deadline, grace).await;
        if starting_worker.is_some() {
            let (_, in_time) =
                stop_worker(self.id(), starting_worker, false, deadline, grace).await;
            stopped_in_time &= in_time;
        }
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
        if let Some(caller) = &by {
            event = event.by(caller);
        } else if was_starting {
            // A start that fails is still the requester's action.
            event = event.asked_by(&self.requested_by);
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

    /// The host terminal's size (when known), or the error that it does not exist.
    async fn terminal_size(&self) -> Result<Option<(u16, u16)>, ShareError> {
        self.ctx
            .host
            .check(&self.info.terminal)
            .await
            .map_err(|detail| ShareError::UnknownTerminal {
                terminal: self.info.terminal.clone(),
                detail,
            })
    }

    /// A start that failed before a link: audit it once, with its cause, and answer the
    /// caller with the backend's own error. (A switch that fails goes back to its old
    /// worker instead: [`SessionState::fail_switch`].)
    async fn fail_start(&mut self, myself: &ActorRef<SessionMsg>, error: ShareError) {
        if matches!(self.phase, Phase::Switching { .. }) {
            self.fail_switch(myself, error).await;
            return;
        }
        let reply = match &mut self.phase {
            Phase::Starting { reply } => reply.take(),
            _ => None,
        };
        self.end(myself, EndReason::Failed(error.to_string()), None, None)
            .await;
        if let Some(reply) = reply {
            let _ = reply.send(Err(error));
        }
    }

    /// A switch whose new worker gave no link: the share goes back to the old worker,
    /// which never stopped serving, and the caller gets the backend's error. If the old
    /// worker died meanwhile, nothing serves the share any more: it fails.
    async fn fail_switch(&mut self, myself: &ActorRef<SessionMsg>, error: ShareError) {
        let Phase::Switching { by, old, reply } = std::mem::replace(&mut self.phase, Phase::Active)
        else {
            return;
        };
        let to = self.info.backend.clone();
        // The failed worker's actor has stopped (or was never spawned).
        let _ = self.go_back_to(*old);
        let old_alive = self.worker.is_some();
        record(
            &self.ctx.audit,
            self.event(AuditKind::ShareSwitchFailed)
                .by(&by)
                .detail("from", self.info.backend.as_str())
                .detail("to", to.as_str())
                .detail("cause", error.to_string())
                .detail(
                    "still_on",
                    json!(old_alive.then(|| self.info.backend.as_str())),
                ),
        );
        // The root's view (list, badges, admission) follows the share back.
        let _ = self.ctx.root.cast(RootMsg::Updated(self.info.clone()));
        if let Some(reply) = reply {
            let _ = reply.send(Err(error));
        }
        if !old_alive {
            let cause = format!("the worker exited during a switch to {to}, which failed");
            self.end(myself, EndReason::Failed(cause), None, None).await;
        }
    }

    /// Put the share back on the worker a switch was moving away from (it never
    /// stopped serving); returns the new worker, if one was spawned.
    fn go_back_to(&mut self, old: OldWorker) -> Option<ActorRef<WorkerMsg>> {
        let new = std::mem::replace(&mut self.worker, old.worker);
        self.backend = old.backend;
        self.info.backend = self.backend.name();
        self.info.links = old.links;
        self.info.rule_id = old.rule_id;
        self.max_ttl = old.max_ttl;
        self.worker_generation = old.generation;
        self.worker_pid = old.pid;
        self.worker_tells_participants = old.tells_participants;
        self.worker_ready = true;
        new
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
            requested_by: args.caller,
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
                let size = match state.terminal_size().await {
                    Ok(size) => size,
                    Err(err) => {
                        state.fail_start(&myself, err).await;
                        return Ok(());
                    }
                };
                if let Err(e) = state.spawn_worker(&myself, size).await {
                    state.fail_start(&myself, e).await;
                }
            }
            SessionMsg::Worker { generation, event } => {
                if let Phase::Switching { old, .. } = &mut state.phase {
                    if generation == old.generation {
                        // The worker being switched away from ended by itself: the
                        // switch carries on; if it fails, the share fails with it.
                        if matches!(event, WorkerEvent::Exited(_) | WorkerEvent::Hung(_)) {
                            if let Some(w) = old.worker.take() {
                                w.kill();
                            }
                        }
                        return Ok(());
                    }
                }
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
                max_ttl,
                caller,
                reply,
            } => {
                let result = extend(state, by, max_ttl, &caller).await;
                let _ = reply.send(result);
            }
            SessionMsg::End { reason, by, reply } => {
                state.end(&myself, reason, by, reply).await;
            }
            SessionMsg::Switch {
                backend,
                rule_id,
                max_ttl,
                caller,
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
                // The root admitted the switch against the share's life as it knew it;
                // an extension may have landed since: the new rule must still hold.
                let total = state.deadline.saturating_duration_since(state.started);
                if let Some(max) = max_ttl.filter(|max| total > *max) {
                    let err = ShareError::TtlAboveMax {
                        requested: human(total),
                        max: human(max),
                        rule_id,
                    };
                    record(
                        &state.ctx.audit,
                        state
                            .event(AuditKind::ShareRefused)
                            .by(&caller)
                            .detail("action", "switch")
                            .detail("reason", err.to_string()),
                    );
                    let _ = reply.send(Err(err));
                    return Ok(());
                }
                // Make before break: the old worker keeps serving (and the share keeps
                // its links) until the new one has its own.
                let old = Box::new(OldWorker {
                    worker: state.worker.take(),
                    generation: state.worker_generation,
                    pid: state.worker_pid,
                    tells_participants: state.worker_tells_participants,
                    backend: std::mem::replace(&mut state.backend, backend),
                    links: state.info.links.clone(),
                    rule_id: std::mem::replace(&mut state.info.rule_id, rule_id),
                    max_ttl: std::mem::replace(&mut state.max_ttl, max_ttl),
                });
                state.info.backend = state.backend.name();
                state.phase = Phase::Switching {
                    by: caller,
                    old,
                    reply: Some(reply),
                };
                let size = match state.terminal_size().await {
                    Ok(size) => size,
                    Err(err) => {
                        state.fail_start(&myself, err).await;
                        return Ok(());
                    }
                };
                if let Err(e) = state.spawn_worker(&myself, size).await {
                    state.fail_switch(&myself, e).await;
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
            if let Phase::Switching { old, .. } = &mut state.phase {
                if old
                    .worker
                    .as_ref()
                    .is_some_and(|w| w.get_id() == cell.get_id())
                {
                    old.worker = None; // its process guard went with it
                    return Ok(());
                }
                if is_worker {
                    // The new worker crashed while starting: back to the old one.
                    state.worker = None;
                    let err = ShareError::Internal(format!("the new worker crashed: {err}"));
                    state.fail_switch(&myself, err).await;
                    return Ok(());
                }
            }
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
    let fingerprints = state.ctx.fingerprints.clone();
    let link_fp = fingerprints.fingerprint(&state.info.links.link);
    match std::mem::replace(&mut state.phase, Phase::Active) {
        Phase::Starting { reply } => {
            let backend = state.info.backend.to_string();
            metrics::counter!("termshare_shares_started_total", "backend" => backend.clone())
                .increment(1);
            metrics::histogram!("termshare_start_to_link_seconds", "backend" => backend)
                .record(state.started.elapsed().as_secs_f64());
            let mut event = state
                .event(AuditKind::ShareStarted)
                .asked_by(&state.requested_by)
                .detail("access", state.info.access.as_str())
                .detail("rule_id", state.info.rule_id.as_str())
                .detail("link_fp", link_fp)
                .detail("worker_pid", json!(state.worker_pid))
                .detail(
                    "expires_at",
                    humantime::format_rfc3339_millis(state.info.expires_at).to_string(),
                );
            if let Some(ro) = &state.info.links.read_only_link {
                event = event.detail("read_only_link_fp", fingerprints.fingerprint(ro));
            }
            audited = announce(state, event, reply).await;
        }
        Phase::Switching { by, old, reply } => {
            // The new worker serves: now stop the old one, within the revoke deadline.
            let deadline = Instant::now() + state.ctx.settings.revoke_deadline;
            let grace = state.ctx.settings.terminate_grace;
            let (stopped, in_time) =
                stop_worker(state.id(), old.worker, true, deadline, grace).await;
            let event = state
                .event(AuditKind::ShareSwitched)
                .by(&by)
                .detail("from", old.backend.name().as_str())
                .detail("to", state.info.backend.as_str())
                .detail("old_worker_pid", json!(old.pid))
                .detail("old_worker_stopped", in_time)
                .detail("old_worker_already_gone", stopped.already_gone)
                .detail("old_worker_escalated", stopped.escalated)
                .detail("old_link_fp", fingerprints.fingerprint(&old.links.link))
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
    max_ttl: Option<Duration>,
    caller: &Caller,
) -> Result<ShareInfo, ShareError> {
    match state.phase {
        Phase::Ended => {
            return Err(match state.ended.get() {
                Some(EndReason::Expired) => ShareError::ShareExpired(state.id()),
                Some(reason) => ShareError::ShareEnded(state.id(), reason.clone()),
                None => ShareError::ShareEnding(state.id()),
            })
        }
        // Mid-switch, which rule bounds the share is not settled yet: extend after.
        Phase::Switching { .. } => {
            return Err(crate::error::InvalidInput::new(
                "extension",
                &state.id().to_string(),
                "the share is switching backends; extend it once the switch is done",
            )
            .into())
        }
        Phase::Active | Phase::Starting { .. } => {}
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
    if let Some(max) = max_ttl {
        if total > max {
            let err = ShareError::ExtendAboveMax {
                share_id: state.id(),
                by: human(by),
                total: human(total),
                max: human(max),
            };
            record(
                &state.ctx.audit,
                state
                    .event(AuditKind::ShareRefused)
                    .by(caller)
                    .detail("action", "extend")
                    .detail("by_ms", by.as_millis() as u64)
                    .detail("reason", err.to_string()),
            );
            return Err(err);
        }
    }
    // On the record first: an extension the log cannot keep does not happen.
    let event = state
        .event(AuditKind::ShareExtended)
        .by(caller)
        .detail("by_ms", by.as_millis() as u64)
        .detail(
            "expires_at",
            humantime::format_rfc3339_millis(state.info.expires_at + by).to_string(),
        );
    record_acked(&state.ctx.audit, event, state.ctx.settings.audit_timeout)
        .await
        .map_err(ShareError::AuditUnavailable)?;
    state.deadline = new_deadline;
    state.max_ttl = max_ttl;
    state.info.expires_at += by;
    if state.info.state == ShareState::Expiring {
        state.info.state = ShareState::Active;
    }
    state.arm_ttl();
    let _ = state.ctx.root.cast(RootMsg::Updated(state.info.clone()));
    Ok(state.info.clone())
}

/// Stop `worker` within what is left of `deadline`, after `grace` for a graceful stop.
/// Returns how it went and whether it was gone in time. A worker still starting
/// (`ready` false) is busy with its start: killing its actor drops the start future
/// and, with it, every process it spawned.
async fn stop_worker(
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
            },
            true,
        );
    };
    let left = deadline.saturating_duration_since(Instant::now());
    if !ready {
        let ok = worker.kill_and_wait(Some(left)).await.is_ok();
        return (
            TerminateOutcome {
                escalated: true,
                already_gone: false,
            },
            ok,
        );
    }
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
            tracing::error!(%share, "worker missed the stop deadline");
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
