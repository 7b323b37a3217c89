//! ShareSession: one per share, the single writer of that share's state.
//!
//! Every change to a share (link arrived, extension, expiry tick, revoke, switch, worker
//! exit or crash) is a message in this actor's mailbox, so they are serialized: an
//! extension that arrives after expiry sees the share ended, and an expiry tick armed
//! before an extension carries an old generation and is ignored.
//!
//! No handler waits on anything slow. Writing an event to a stalled disk, asking tmux
//! about the terminal, showing a notice, stopping the worker a switch moves away from:
//! each runs in a task of its own that posts its outcome back as a message. So a
//! revoke is never queued behind other work; it is handled next, and its deadline is
//! counted from the moment the request reached termshare, not from when the session
//! got to it. Ending is the one step that waits (on the worker's stop and its record):
//! nothing comes after it.
//!
//! The modules: [`start`] (from the request to the announced link, under one
//! deadline), [`extend`], [`switch`] (make before break) and [`end`].

mod end;
mod extend;
mod start;
mod switch;

use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::audit::{record, AuditEvent, AuditKind, AuditMsg};
use crate::caller::Caller;
use crate::error::{human, ShareError};
use crate::root::RootMsg;
use crate::settings::Settings;
use crate::traits::{Backend, TerminalHost, WorkerExit, WorkerSpec};
use crate::ttl::{TtlEvent, TtlMsg, TtlTimer};
use crate::types::{EndReason, FingerprintKey, RevokeReport, ShareId, ShareInfo, ShareState};
use crate::worker::{BackendWorker, WorkerArgs, WorkerEvent, WorkerMsg};

use switch::Switch;

pub type ShareReply = RpcReplyPort<Result<ShareInfo, ShareError>>;
pub type EndReply = RpcReplyPort<Result<RevokeReport, ShareError>>;

pub enum SessionMsg {
    /// Sent to itself once spawned: record the request, check the terminal.
    Begin,
    /// The request is on the record and the terminal checked (its size), or why not.
    Prepared(Result<Option<(u16, u16)>, ShareError>),
    Worker {
        generation: u64,
        event: WorkerEvent,
    },
    /// The event announcing worker `generation` (`share.started`, `share.switched`)
    /// is kept, or could not be.
    Announced {
        generation: u64,
        result: Result<(), String>,
    },
    /// The whole start has run out of time.
    StartDeadline,
    Ttl(TtlEvent),
    /// A grace notice was shown (or not) to those attached to the terminal.
    GraceNoticed {
        generation: u64,
        remaining: Duration,
        notified: bool,
    },
    /// Move the deadline by `by`, within `max_ttl` (the allowing rule's bound, counted
    /// from the share's start).
    Extend {
        by: Duration,
        max_ttl: Option<Duration>,
        caller: Caller,
        reply: ShareReply,
    },
    /// The extension in flight is on the record (or not).
    ExtendRecorded(Result<(), String>),
    /// The current worker has exited; `terminal_closed` when its terminal is gone too.
    WorkerGone {
        generation: u64,
        status: WorkerExit,
        terminal_closed: bool,
    },
    /// End the share (revoke, stop, shutdown). Replies with the report. `requested_at`
    /// is when the request reached termshare: the deadline counts from there.
    End {
        reason: EndReason,
        by: Option<Caller>,
        reply: Option<EndReply>,
        requested_at: Instant,
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
    /// The terminal was checked for a switch's new worker.
    SwitchChecked(Result<Option<(u16, u16)>, ShareError>),
    /// The worker a switch moved away from is stopped (`in_time`: within the revoke
    /// deadline).
    OldStopped {
        outcome: crate::traits::TerminateOutcome,
        in_time: bool,
    },
    Info(RpcReplyPort<ShareInfo>),
    /// Work the session ran off its mailbox panicked.
    TaskPanicked(String),
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
    /// When the whole start must be done (from the request's arrival): a start still
    /// going then fails, unannounced.
    pub start_deadline: Instant,
}

enum Phase {
    /// The request's record and the terminal check are under way.
    Preparing {
        reply: Option<ShareReply>,
    },
    /// The worker is starting.
    Starting {
        reply: Option<ShareReply>,
    },
    /// The link is known; `share.started` is being kept, then the caller hears.
    Announcing {
        reply: Option<ShareReply>,
    },
    Active,
    /// A switch is under way; the share stays on its current worker until it is done.
    Switching(Box<Switch>),
    Ended,
}

pub struct ShareSession;

pub struct SessionState {
    /// This session, for the tasks it runs.
    myself: ActorRef<SessionMsg>,
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
    /// The generation of `worker`: its events carry it.
    worker_generation: u64,
    /// The last generation given out (start and switches take the next).
    generations: u64,
    /// The current worker has reported its link (it is not in the middle of starting).
    worker_ready: bool,
    worker_pid: Option<u32>,
    worker_tells_participants: bool,
    ended: Arc<OnceLock<EndReason>>,
    /// Taken by `Begin`, which sends it first.
    requested: Option<AuditEvent>,
    /// Who asked for the share.
    requested_by: Caller,
    start_deadline: Instant,
    /// Tasks working for this session (the start's timer, a notice, a check): aborted
    /// when it ends. Finished ones are dropped as new ones come.
    tasks: Vec<JoinHandle<()>>,
    /// Extensions: the one being recorded and those waiting for it.
    extensions: extend::Extensions,
    /// The caller of a switch whose `share.switched` is being recorded.
    switch_reply: Option<ShareReply>,
    /// The backend label under which this share counts in `termshare_active_shares`.
    counted_active: Option<String>,
}

/// However the session ends (stopped, killed, crashed), its tasks end with it.
impl Drop for SessionState {
    fn drop(&mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
    }
}

/// Workers are numbered by generation: every spawn takes the next.
fn next_generation(counter: &mut u64) -> u64 {
    *counter += 1;
    *counter
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

    /// Run `work` off the mailbox; it posts its outcome back as a message. A panic in
    /// it is the session's own: it fails the session (and so its share), contained by
    /// the root as any session crash is.
    fn run(&mut self, work: impl std::future::Future<Output = ()> + Send + 'static) {
        self.tasks.retain(|t| !t.is_finished());
        let me = self.myself.clone();
        self.tasks.push(tokio::spawn(async move {
            /// Aborting the watcher must abort the work too.
            struct AbortOnDrop(JoinHandle<()>);
            impl Drop for AbortOnDrop {
                fn drop(&mut self) {
                    self.0.abort();
                }
            }
            let mut work = AbortOnDrop(tokio::spawn(work));
            if let Err(e) = (&mut work.0).await {
                if e.is_panic() {
                    let _ = me.cast(SessionMsg::TaskPanicked(format!("{e}")));
                }
            }
        }));
    }

    /// The host terminal's size (when known), or the error that it does not exist.
    fn check_terminal(
        &self,
    ) -> impl std::future::Future<Output = Result<Option<(u16, u16)>, ShareError>> {
        let host = self.ctx.host.clone();
        let terminal = self.info.terminal.clone();
        async move {
            host.check(&terminal)
                .await
                .map_err(|detail| ShareError::UnknownTerminal { terminal, detail })
        }
    }

    /// Spawn a BackendWorker for `backend`, numbered `generation`, with what is left
    /// of the start's deadline to produce its link.
    async fn spawn_worker(
        &self,
        myself: &ActorRef<SessionMsg>,
        backend: Arc<dyn Backend>,
        generation: u64,
        size: Option<(u16, u16)>,
    ) -> Result<ActorRef<WorkerMsg>, ShareError> {
        let left = self
            .start_deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        let spec = WorkerSpec {
            share_id: self.info.share_id,
            terminal: self.info.terminal.clone(),
            access: self.info.access,
            attach: self
                .ctx
                .host
                .attach_command(&self.info.terminal, self.info.access),
            size,
            link_timeout: self.ctx.settings.link_timeout.min(left),
        };
        let (worker, _) = Actor::spawn_linked(
            None,
            BackendWorker,
            WorkerArgs {
                backend,
                spec,
                session: myself.clone(),
                generation,
                probe_interval: self.ctx.settings.probe_interval,
                heartbeat_timeout: self.ctx.settings.heartbeat_timeout,
            },
            myself.get_cell(),
        )
        .await
        .map_err(ShareError::internal)?;
        Ok(worker)
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

    /// The worker's backend handed out new links while it ran: the share answers with
    /// them from now on, and the record says so (by fingerprint).
    fn relinked(&mut self, links: crate::types::Links) {
        if links == self.info.links {
            return;
        }
        let fingerprints = &self.ctx.fingerprints;
        let mut event = AuditEvent::new(AuditKind::ShareRelinked, self.info.share_id)
            .principal(&self.info.principal)
            .terminal(&self.info.terminal)
            .backend(&self.info.backend)
            .detail(
                "old_link_fp",
                fingerprints.fingerprint(&self.info.links.link),
            )
            .detail("link_fp", fingerprints.fingerprint(&links.link));
        if let Some(ro) = &links.read_only_link {
            event = event.detail("read_only_link_fp", fingerprints.fingerprint(ro));
        }
        crate::audit::record(&self.ctx.audit, event);
        self.info.links = links;
        self.publish();
    }

    fn publish(&self) {
        let _ = self.ctx.root.cast(RootMsg::Updated(self.info.clone()));
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

    /// A grace threshold passed: mark the share expiring and show the notice off the
    /// mailbox; its record follows once it is known whether anyone was shown it.
    fn grace(&mut self, myself: &ActorRef<SessionMsg>, remaining: Duration, generation: u64) {
        if generation != self.ttl_generation || matches!(self.phase, Phase::Ended) {
            return;
        }
        if self.info.state == ShareState::Active {
            self.info.state = ShareState::Expiring;
            self.publish();
        }
        let message = format!(
            "termshare: this share of {} ends in {}",
            self.info.terminal,
            human(remaining)
        );
        let (host, terminal, me) = (
            self.ctx.host.clone(),
            self.info.terminal.clone(),
            myself.clone(),
        );
        self.run(async move {
            let shown =
                tokio::time::timeout(Duration::from_secs(1), host.notify(&terminal, &message))
                    .await;
            let _ = me.cast(SessionMsg::GraceNoticed {
                generation,
                remaining,
                notified: matches!(shown, Ok(Ok(()))),
            });
        });
    }

    /// The current worker exited: find out (off the mailbox) whether its terminal went
    /// with it, then end the share.
    fn worker_exited(&mut self, myself: &ActorRef<SessionMsg>, status: WorkerExit) {
        self.worker = None;
        metrics::counter!("termshare_worker_crashes_total").increment(1);
        let (check, me, generation) = (
            self.check_terminal(),
            myself.clone(),
            self.worker_generation,
        );
        self.run(async move {
            let terminal_closed = check.await.is_err();
            let _ = me.cast(SessionMsg::WorkerGone {
                generation,
                status,
                terminal_closed,
            });
        });
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
            myself: myself.clone(),
            deadline: now + args.ttl,
            started: now,
            info: args.info,
            ctx: args.ctx,
            backend: args.backend,
            phase: Phase::Preparing {
                reply: Some(args.reply),
            },
            max_ttl: args.max_ttl,
            grace: args.grace,
            ttl_generation: 0,
            ttl: None,
            worker: None,
            worker_generation: 0,
            generations: 0,
            worker_ready: false,
            worker_pid: None,
            worker_tells_participants: false,
            ended: args.ended,
            requested: Some(args.requested),
            requested_by: args.caller,
            start_deadline: args.start_deadline,
            tasks: Vec::new(),
            extensions: extend::Extensions::default(),
            switch_reply: None,
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
        if let Some(stall) = crate::faultpoints::check("session.stall") {
            // The chaos harness's busy session: every message waits this long.
            let ms = stall.and_then(|a| a.parse().ok()).unwrap_or(1000);
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        crate::faultpoints::check("session.handle");
        match msg {
            SessionMsg::Begin => state.begin(&myself),
            SessionMsg::Prepared(result) => state.prepared(&myself, result).await,
            SessionMsg::StartDeadline => state.start_deadline_passed(&myself).await,
            SessionMsg::Announced { generation, result } => {
                state.announced(&myself, generation, result).await
            }
            SessionMsg::Worker { generation, event } => {
                if state.switch_event(&myself, generation, &event).await {
                    return Ok(());
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
                        state.ready(&myself, links).await;
                    }
                    WorkerEvent::StartFailed(e) => {
                        state.worker = None;
                        state.fail_start(&myself, ShareError::Backend(e)).await;
                    }
                    WorkerEvent::Hung { silent, detail } => {
                        metrics::counter!("termshare_worker_crashes_total").increment(1);
                        let cause = format!(
                            "heartbeat timeout: {detail}, for {}",
                            human(Duration::from_millis(silent.as_millis() as u64))
                        );
                        state.end_now(&myself, EndReason::Failed(cause)).await;
                    }
                    WorkerEvent::Exited(status) => state.worker_exited(&myself, status),
                    WorkerEvent::Relinked(links) => state.relinked(links),
                }
            }
            SessionMsg::WorkerGone {
                generation,
                status,
                terminal_closed,
            } => {
                if generation == state.worker_generation && !matches!(state.phase, Phase::Ended) {
                    let reason = if terminal_closed {
                        EndReason::TerminalClosed
                    } else {
                        EndReason::Failed(format!("worker {}", status.description))
                    };
                    state.end_now(&myself, reason).await;
                }
            }
            SessionMsg::Ttl(TtlEvent::Expired { generation }) => {
                state.expired(&myself, generation).await
            }
            SessionMsg::Ttl(TtlEvent::Grace {
                remaining,
                generation,
            }) => state.grace(&myself, remaining, generation),
            SessionMsg::GraceNoticed {
                generation,
                remaining,
                notified,
            } => {
                // A share that ended meanwhile was not warned: its end is the record.
                if generation == state.ttl_generation && !matches!(state.phase, Phase::Ended) {
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
            } => state.extend(&myself, by, max_ttl, caller, reply),
            SessionMsg::ExtendRecorded(result) => state.extend_recorded(&myself, result).await,
            SessionMsg::End {
                reason,
                by,
                reply,
                requested_at,
            } => state.end(&myself, reason, by, reply, requested_at).await,
            SessionMsg::Switch {
                backend,
                rule_id,
                max_ttl,
                caller,
                reply,
            } => state.switch(&myself, backend, rule_id, max_ttl, caller, reply),
            SessionMsg::SwitchChecked(result) => state.switch_checked(&myself, result).await,
            SessionMsg::OldStopped { outcome, in_time } => {
                state.old_stopped(&myself, outcome, in_time)
            }
            SessionMsg::Info(reply) => {
                let _ = reply.send(state.info.clone());
            }
            SessionMsg::TaskPanicked(e) => {
                return Err(format!("a task of the session panicked: {e}").into());
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
            if state.switch_child_failed(&myself, &cell, &err).await {
                return Ok(());
            }
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
                state.end_now(&myself, EndReason::Failed(cause)).await;
            } else if is_ttl {
                // Without a timer the TTL cannot be enforced: fail closed.
                state.ttl = None;
                let cause = format!("ttl timer crashed: {err}");
                state.end_now(&myself, EndReason::Failed(cause)).await;
            }
        }
        Ok(())
    }
}
