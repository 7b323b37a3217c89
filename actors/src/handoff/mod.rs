//! Handoffs: a terminal handed from one principal to another (human → agent, agent →
//! human) through an ordered approval chain.
//!
//! The policy's `[[handoff]]` rule gives the chain: each step names who may approve it
//! and waits at most `step_timeout`. A denial or a timeout at any step ends the
//! handoff. When the last step approves, the terminal's context is captured from the
//! real host terminal and handed to the receiver as a [`HandoffPackage`]; if the
//! request named a backend, a share for the receiver is started too, read-only when
//! the receiver is an agent whose write access the rule or the share policy forbids.
//! Every step is audited under the handoff's id (and its terminal's live share, if
//! any, in `details.share_id`).
//!
//! The HandoffManager is one actor beside the root: the single writer of every
//! handoff's state, so an approval and a timeout of the same step cannot both win.

mod actor;
mod completion;
mod manager;
mod record;

use completion::complete;
use manager::{check_reason, live_shares};
use record::describe_end;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::Serialize;
use serde_json::json;
use tokio::task::JoinHandle;

use crate::audit::{record, record_acked, AuditEvent, AuditKind, AuditMsg};
use crate::caller::{Caller, Identity, Peer};
use crate::error::{human, ShareError};
use crate::root::RootMsg;
use crate::traits::{
    HandoffGrant, PolicyDecision, PolicyGate, PolicyQuery, ReceiverShare, TerminalHost,
};
use crate::types::{
    glob_match, AccessMode, BackendName, HandoffId, Principal, ShareId, ShareInfo, ShareRequest,
    TerminalName,
};

/// What a requester asks for. `from` is who hands the terminal off (its identity may
/// approve no step of the chain).
#[derive(Clone, Debug)]
pub struct HandoffRequest {
    /// The terminal handed off.
    pub terminal: TerminalName,
    /// Who hands it off.
    pub from: Caller,
    /// Who receives it.
    pub to: Principal,
    /// Why, for the approvers and the record (at most [`MAX_REASON`] bytes).
    pub reason: String,
    /// Start a share for the receiver over this backend once approved.
    pub backend: Option<BackendName>,
    /// How long the receiver's share lives (needs `backend`); `None`: the default TTL.
    /// The policy's `max_ttl` for the receiver bounds it, checked at the request and
    /// again when the share starts.
    pub ttl: Option<std::time::Duration>,
}

impl HandoffRequest {
    /// Hand `terminal` from `from` to `to`, with no share for the receiver.
    pub fn new(
        terminal: TerminalName,
        from: impl Into<Caller>,
        to: Principal,
        reason: impl Into<String>,
    ) -> Self {
        HandoffRequest {
            terminal,
            from: from.into(),
            to,
            reason: reason.into(),
            backend: None,
            ttl: None,
        }
    }

    /// Start a share for the receiver over `backend` once the chain approves.
    pub fn backend(mut self, backend: BackendName) -> Self {
        self.backend = Some(backend);
        self
    }

    /// The receiver's share lives this long (bounded by the policy).
    pub fn ttl(mut self, ttl: std::time::Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }
}

/// Where a handoff stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HandoffState {
    /// Waiting for its current step's approval.
    Pending,
    /// The last step approved; the context is being captured.
    Completing,
    /// Every step approved and the receiver's package is ready.
    Completed,
    /// The current step's approver or the receiver said no.
    Denied,
    /// A step was not approved within the rule's `step_timeout`.
    TimedOut,
    /// Every step approved, but nothing could be handed over (context capture or the
    /// receiver's required share failed, or the completion could not be recorded).
    Failed,
}

impl HandoffState {
    /// The state's name as the protocol and badges write it (`pending`, `timed_out`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            HandoffState::Pending => "pending",
            HandoffState::Completing => "completing",
            HandoffState::Completed => "completed",
            HandoffState::Denied => "denied",
            HandoffState::TimedOut => "timed_out",
            HandoffState::Failed => "failed",
        }
    }
}

/// What the receiver gets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HandoffPackage {
    /// The terminal's working directory (its active pane's) at completion.
    pub cwd: String,
    /// The foreground command of the terminal's active pane.
    pub command: String,
    /// The terminal's last lines (the service's `handoff_scrollback_lines`).
    pub scrollback: String,
    /// The terminal's width in columns.
    pub cols: u16,
    /// The terminal's height in rows.
    pub rows: u16,
    /// The access the receiver is granted.
    pub access: AccessMode,
    /// The share for the receiver (when the request named a backend), else the share
    /// live on the terminal, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub share_id: Option<ShareId>,
    /// The receiver's link, when a share was started for it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    /// Why no share could be started for the receiver, when one was asked for and the
    /// rule makes it optional (`receiver_share = "optional"`); a required one that
    /// cannot start fails the handoff instead.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub share_error: Option<String>,
}

/// One approved step of a handoff's chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Approval {
    /// The principal that approved it.
    pub by: Principal,
    /// When it was approved.
    #[serde(serialize_with = "crate::types::rfc3339_seconds")]
    pub at: SystemTime,
}

/// How a handoff ended without completing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Refusal {
    /// The step (1-based) it ended at.
    pub step: usize,
    /// Who denied it; `None` for a timeout or a failure.
    pub by: Option<Principal>,
    /// Why: the denier's reason, the timeout, or the failure's cause.
    pub reason: String,
}

/// A handoff as anyone involved may see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HandoffView {
    /// The handoff's id.
    pub handoff_id: HandoffId,
    /// Where it stands.
    pub state: HandoffState,
    /// The terminal handed off.
    pub terminal: TerminalName,
    /// Who hands it off.
    pub from: Principal,
    /// Who receives it.
    pub to: Principal,
    /// Why, as the requester gave it (may be empty).
    pub reason: String,
    /// The policy's `[[handoff]]` rule that gave the chain.
    pub rule_id: String,
    /// Who may approve each step, in order: principal patterns (`human:*`).
    pub approvers: Vec<String>,
    /// The step waiting for approval (1-based), while pending.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<usize>,
    /// The steps approved so far, in order.
    pub approvals: Vec<Approval>,
    /// How it ended, once denied, timed out or failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refusal: Option<Refusal>,
    /// What the receiver gets, once completed; shown only to the receiver and the
    /// operator.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub package: Option<HandoffPackage>,
}

pub type HandoffReply = RpcReplyPort<Result<HandoffView, ShareError>>;

pub enum HandoffMsg {
    Request(HandoffRequest, HandoffReply),
    Approve {
        id: HandoffId,
        by: Caller,
        reply: HandoffReply,
    },
    Deny {
        id: HandoffId,
        by: Caller,
        reason: Option<String>,
        reply: HandoffReply,
    },
    /// A handoff as `Caller` may see it (a party to it, or the operator).
    Show(HandoffId, Caller, HandoffReply),
    /// The handoffs `Caller` is a party to (all of them for the operator).
    List(Caller, RpcReplyPort<Result<Vec<HandoffView>, ShareError>>),
    /// From a step's timer.
    StepTimedOut {
        id: HandoffId,
        step: usize,
    },
    /// From the completion task.
    Completed {
        id: HandoffId,
        package: Result<HandoffPackage, ShareError>,
    },
}

pub struct HandoffManager;

pub struct HandoffArgs {
    pub policy: Arc<dyn PolicyGate>,
    pub host: Arc<dyn TerminalHost>,
    pub audit: ActorRef<AuditMsg>,
    pub root: ActorRef<RootMsg>,
    pub audit_timeout: Duration,
    /// Lines of scrollback in a package.
    pub scrollback_lines: usize,
    /// How long starting the receiver's share may take.
    pub share_timeout: Duration,
    /// Every backend the service has (to decide a receiver's access when the request
    /// names none).
    pub backends: Vec<BackendName>,
    /// Where each terminal's latest handoff is shown.
    pub board: crate::badge::BadgeBoard,
    /// New handoffs are refused while the audit log cannot keep up.
    pub audit_health: Arc<crate::audit::AuditHealth>,
    /// Handoffs waiting for approval: in all, and per requesting identity.
    pub max_pending: usize,
    pub max_pending_per_requester: usize,
}

/// Ended handoffs kept to be shown (`handoff show`); older ones are forgotten (the
/// audit log keeps them).
pub const ENDED_KEPT: usize = 1024;
/// The longest reason a request or a denial may carry.
pub const MAX_REASON: usize = 1024;

/// One handoff as the manager keeps it: its view and what deciding its steps needs.
struct Handoff {
    view: HandoffView,
    grant: HandoffGrant,
    backend: Option<BackendName>,
    /// The receiver share's TTL, when the request set one.
    ttl: Option<std::time::Duration>,
    /// The share live on the terminal when requested (for the audit record).
    live_share: Option<ShareId>,
    /// Who asked: their identity may approve nothing.
    requester: Identity,
    /// The identity behind each approval so far: one identity, one step.
    approver_keys: Vec<String>,
    /// The process whose approval completed the chain (on the receiver share's events).
    completed_by: Option<Peer>,
    timer: Option<JoinHandle<()>>,
    /// The approver whose approval completes the handoff waits for the package.
    completing_reply: Option<(HandoffReply, Caller)>,
    /// Who the receiver's share is started as (to stop it if the completion cannot be
    /// recorded).
    receiver: Option<Caller>,
}

/// The HandoffManager's state: the single writer of every handoff.
pub struct ManagerState {
    args: HandoffArgs,
    /// Pending and recently ended handoffs: at most `max_pending` + ENDED_KEPT.
    handoffs: HashMap<HandoffId, Handoff>,
    /// Ended handoffs, oldest first: past ENDED_KEPT the oldest is forgotten.
    ended: VecDeque<HandoffId>,
}
