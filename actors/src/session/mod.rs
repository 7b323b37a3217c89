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
//! The modules: [`actor`] (the message loop), [`start`] (from the request to the
//! announced link, under one deadline), [`running`] (TTL, grace notices, new links, the
//! worker's exit), [`extend`], [`switch`] (make before break) and [`end`].

mod actor;
mod end;
mod extend;
mod running;
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
    /// Sent to itself once spawned: record the request, wait for the terminal's
    /// check, and spawn the worker if the terminal's size is already known.
    Begin,
    /// `share.requested` is kept, or why not.
    RequestKept(Result<(), ShareError>),
    /// The terminal is there (its size, when known), or why not.
    TerminalChecked(Result<Option<(u16, u16)>, ShareError>),
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
    /// The join timeout passed: the share ends unless somebody joined.
    JoinTimeout,
    /// The share's recording cannot go on (why): the share ends, failed.
    RecordingFailed(String),
    /// Give the share a new link (authorized by the root).
    Rotate {
        caller: Caller,
        reply: ShareReply,
    },
    /// The worker's answer to a rotation (its new links came before, as
    /// [`WorkerEvent::Rotated`]), or why there is none.
    RotateAnswered {
        result: Result<(), String>,
        reply: ShareReply,
    },
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
    /// The terminal's check, under way since the request arrived.
    pub terminal: crate::root::TerminalCheck,
    /// The join timeout and participant limit asked for.
    pub join: crate::types::JoinRules,
    /// Record what the terminal shows.
    pub record: bool,
}

enum Phase {
    /// The terminal's size is not known yet: the worker waits for its check.
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

/// A rotation asked of a worker: who asked, and what is known when it was asked.
pub(crate) struct PendingRotation {
    caller: Caller,
    /// The worker asked (its `Rotated` report carries it).
    generation: u64,
    /// Participants counted when it was asked (all on the old link): leaves of the cut
    /// connections and joins through the new link race the worker's report.
    on_old_link: usize,
}

/// Participants one session keeps track of at once (a backend's own limit is lower:
/// the tty-share link front lets 64 connections in).
pub(crate) const MAX_TRACKED_PARTICIPANTS: usize = 1024;

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
    /// Participants connected now, by the id their join carried, when the worker
    /// reports joins and leaves (at most [`MAX_TRACKED_PARTICIPANTS`]).
    joined: std::collections::BTreeSet<u64>,
    /// The join timeout and participant limit.
    join: crate::types::JoinRules,
    /// Somebody joined at least once (a join timeout then no longer applies).
    ever_joined: bool,
    /// Why the share ends, beyond its reason (`join_timeout`), for the end event.
    end_cause: Option<&'static str>,
    /// Record what the terminal shows (asked for).
    record: bool,
    /// The recording in progress, finished at the end.
    recording: Option<Box<dyn crate::traits::Recording>>,
    ended: Arc<OnceLock<EndReason>>,
    /// Taken by `Begin`, which sends it first.
    requested: Option<AuditEvent>,
    /// Who asked for the share.
    requested_by: Caller,
    start_deadline: Instant,
    /// The terminal's check, taken by `Begin`.
    terminal_check: Option<crate::root::TerminalCheck>,
    /// The terminal size the current worker was started with.
    size: Option<(u16, u16)>,
    /// What the start's link waits for.
    gate: start::StartGate,
    /// Tasks working for this session (the start's timer, a notice, a check): aborted
    /// when it ends. Finished ones are dropped as new ones come.
    tasks: Vec<JoinHandle<()>>,
    /// Extensions: the one being recorded and those waiting for it.
    extensions: extend::Extensions,
    /// The rotation asked of the worker and not yet done (one at a time).
    rotation: Option<PendingRotation>,
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

    /// Spawn a BackendWorker for `backend`, numbered `generation`, with until
    /// `deadline` to produce its link (a start's is what is left of the whole start's;
    /// a switch has its own).
    async fn spawn_worker(
        &self,
        myself: &ActorRef<SessionMsg>,
        backend: Arc<dyn Backend>,
        generation: u64,
        size: Option<(u16, u16)>,
        deadline: Instant,
    ) -> Result<ActorRef<WorkerMsg>, ShareError> {
        let left = deadline
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
            max_participants: self.join.max_participants,
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
                serving_interval: self.ctx.settings.serving_interval,
            },
            myself.get_cell(),
        )
        .await
        .map_err(ShareError::internal)?;
        Ok(worker)
    }
}
