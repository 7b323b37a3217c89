//! RootSupervisor: owns the share table and the per-terminal limits.
//!
//! Admission (policy, TTL bound, limit) happens here, in one mailbox, so two racing
//! requests for one terminal cannot both pass the limit. Nothing is spawned for a
//! request that is refused. Each admitted share gets a ShareSession, linked here: a
//! session that crashes is audited as failed and its children (and so its worker
//! process) are killed, while every other share carries on.

mod actor;
mod admission;
mod requests;
mod state;

use state::ended_error;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::badge::BadgeShare;

use crate::audit::{record, record_acked, AuditEvent, AuditHealth, AuditKind, AuditMsg};
use crate::caller::Caller;
use crate::error::{human, ShareError};
use crate::session::{EndReply, ServiceCtx, SessionArgs, SessionMsg, ShareReply, ShareSession};
use crate::settings::Settings;
use crate::traits::{Backend, PolicyDecision, PolicyGate, PolicyQuery, TerminalHost};
use crate::types::{
    AccessMode, BackendName, EndReason, FingerprintKey, Links, Principal, RevokeReport, ShareEnd,
    ShareId, ShareInfo, ShareRequest, ShareState, TerminalName,
};

/// How many ended shares the root remembers, to answer "expired" rather than "unknown".
const ENDED_MEMORY: usize = 4096;
/// Waiters for one share's end (each is a caller of `ShareService::ended`).
const MAX_END_WAITERS: usize = 64;

pub enum RootMsg {
    /// A new share; the whole start must be done by `start_deadline` (counted from the
    /// request's arrival at the API).
    Share {
        request: ShareRequest,
        start_deadline: Instant,
        /// The terminal's check, started when the request arrived: it runs beside
        /// the request's record and the worker's spawn, and the share's session holds
        /// the link until it says the terminal is there.
        terminal: TerminalCheck,
        reply: ShareReply,
    },
    Extend {
        share_id: ShareId,
        by: Duration,
        caller: Caller,
        reply: ShareReply,
    },
    /// Give a share a new link, cutting off everyone who joined through the old one.
    Rotate {
        share_id: ShareId,
        caller: Caller,
        reply: ShareReply,
    },
    /// End a share now; its deadline counts from `requested_at`, the request's arrival.
    Revoke {
        share_id: ShareId,
        caller: Caller,
        reply: EndReply,
        requested_at: Instant,
    },
    Switch {
        share_id: ShareId,
        backend: BackendName,
        caller: Caller,
        reply: ShareReply,
    },
    List(RpcReplyPort<Result<Vec<ShareInfo>, ShareError>>),
    /// Hear once the share has ended: the receiver gets its end reason (at once if it
    /// has ended already; `NotFound` if it is unknown or long forgotten).
    WhenEnded(
        ShareId,
        RpcReplyPort<Result<tokio::sync::oneshot::Receiver<ShareEnd>, ShareError>>,
    ),
    /// End every share (as `stopped`), then stop the root.
    Shutdown(RpcReplyPort<Vec<RevokeReport>>),
    /// From a session: its link arrived or its info changed.
    Updated(ShareInfo),
    /// From a session: it has ended and is draining.
    Ended {
        share_id: ShareId,
        reason: EndReason,
        /// How its worker was stopped.
        report: RevokeReport,
    },
}

pub struct RootSupervisor;

pub struct RootArgs {
    pub backends: HashMap<BackendName, Arc<dyn Backend>>,
    pub policy: Arc<dyn PolicyGate>,
    pub host: Arc<dyn TerminalHost>,
    pub audit: ActorRef<AuditMsg>,
    pub settings: Settings,
    pub board: crate::badge::BadgeBoard,
    pub fingerprints: FingerprintKey,
    /// Whether the audit log keeps up: new work is refused while it does not.
    pub audit_health: Arc<AuditHealth>,
}

/// What admission is asked about: a new share, or a live share moving to another
/// backend. Both pass the same checks ("one gate").
struct AdmissionQuery<'a> {
    /// The share's owner (the policy's subject).
    principal: &'a Principal,
    terminal: &'a TerminalName,
    backend: &'a BackendName,
    access: AccessMode,
    /// The share's whole life counted from its start: the requested TTL of a new share,
    /// what a live share already has for a switch. `max_ttl` bounds it.
    total_ttl: Duration,
    /// A live share being moved: it already counts toward its terminal's limit.
    moving: Option<ShareId>,
    /// Join rules need a backend that counts participants.
    join: crate::types::JoinRules,
}

struct Admitted {
    grant: crate::traits::Grant,
    backend: Arc<dyn Backend>,
    /// The join rules the share gets: the request's, within the rule's maxima.
    join: crate::types::JoinRules,
}

/// A refusal: the error for the caller and the rule that decided, if any.
type Refusal = (ShareError, Option<String>);

struct Entry {
    session: ActorRef<SessionMsg>,
    info: ShareInfo,
    /// The share's join rules as admitted (a switch keeps them; the config's default
    /// join timeout is not among them).
    join: crate::types::JoinRules,
    /// Whether the share is recorded (a switch cannot add a recording).
    record: bool,
    ended: Arc<OnceLock<EndReason>>,
    /// Its terminal is known to exist (its session said so, with its first update):
    /// until then the share is on no badge and in no listing, since a share of a
    /// terminal that turns out missing must never have been shown.
    shown: bool,
}

pub struct RootState {
    backends: HashMap<BackendName, Arc<dyn Backend>>,
    policy: Arc<dyn PolicyGate>,
    ctx: Arc<ServiceCtx>,
    audit_health: Arc<AuditHealth>,
    shares: HashMap<ShareId, Entry>,
    /// Each live session's actor, to its share: a supervision event finds its share in
    /// O(1) (ending n shares is O(n), not O(n²)).
    by_actor: HashMap<ractor::ActorId, ShareId>,
    /// Live shares of each terminal: the limit's count and the badge's rows.
    per_terminal: HashMap<TerminalName, BTreeSet<ShareId>>,
    /// Each terminal's latest handoff, for its badge.
    /// Where each terminal's share rows are published.
    board: crate::badge::BadgeBoard,
    /// Ended shares (the last ENDED_MEMORY), for late callers and `ended()`.
    ended: HashMap<ShareId, ShareEnd>,
    ended_order: VecDeque<ShareId>,
    /// Who waits to hear that a live share ended ([`RootMsg::WhenEnded`]), at most
    /// MAX_END_WAITERS per share.
    end_waiters: HashMap<ShareId, Vec<tokio::sync::oneshot::Sender<ShareEnd>>>,
    shutting_down: bool,
    /// The live count's peak, to give memory back once a burst has ended.
    bursts: crate::memory::BurstWatch,
}

/// A terminal check under way (a task running [`check_terminal`]), started when a
/// share request arrives so that the tmux round trip overlaps the rest of the start.
/// Dropping it stops the check.
pub(crate) struct TerminalCheck(tokio::task::JoinHandle<Result<Option<(u16, u16)>, String>>);

impl TerminalCheck {
    pub(crate) fn start(host: Arc<dyn TerminalHost>, terminal: TerminalName) -> Self {
        TerminalCheck(tokio::spawn(async move {
            crate::faultpoints::pause("terminal.check").await;
            check_terminal(host.as_ref(), &terminal).await
        }))
    }

    /// The terminal's size (when known), or why it is not there.
    pub(crate) async fn outcome(mut self) -> Result<Option<(u16, u16)>, String> {
        (&mut self.0)
            .await
            .unwrap_or_else(|e| Err(format!("the terminal check did not finish: {e}")))
    }
}

impl Drop for TerminalCheck {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Is `terminal` there, and how big is it? Asked off the root's mailbox (a tmux round
/// trip must not hold up other requests), bounded by TERMINAL_CHECK.
pub(crate) async fn check_terminal(
    host: &dyn TerminalHost,
    terminal: &TerminalName,
) -> Result<Option<(u16, u16)>, String> {
    match tokio::time::timeout(crate::settings::TERMINAL_CHECK, host.check(terminal)).await {
        Ok(result) => result,
        Err(_) => Err(format!(
            "the terminal host did not answer within {}",
            human(crate::settings::TERMINAL_CHECK)
        )),
    }
}
