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
    pub terminal: TerminalName,
    pub from: Caller,
    pub to: Principal,
    pub reason: String,
    /// Start a share for the receiver over this backend once approved.
    pub backend: Option<BackendName>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HandoffState {
    Pending,
    /// The last step approved; the context is being captured.
    Completing,
    Completed,
    Denied,
    TimedOut,
    /// Every step approved, but nothing could be handed over (context capture or the
    /// receiver's required share failed, or the completion could not be recorded).
    Failed,
}

impl HandoffState {
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
    pub cwd: String,
    pub command: String,
    pub scrollback: String,
    pub cols: u16,
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

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Approval {
    pub by: Principal,
    #[serde(serialize_with = "rfc3339")]
    pub at: SystemTime,
}

/// How a handoff ended without completing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Refusal {
    /// The step (1-based) it ended at.
    pub step: usize,
    pub by: Option<Principal>,
    pub reason: String,
}

fn rfc3339<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&humantime::format_rfc3339_seconds(*t).to_string())
}

/// A handoff as anyone involved may see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HandoffView {
    pub handoff_id: HandoffId,
    pub state: HandoffState,
    pub terminal: TerminalName,
    pub from: Principal,
    pub to: Principal,
    pub reason: String,
    pub rule_id: String,
    pub approvers: Vec<String>,
    /// The step waiting for approval (1-based), while pending.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<usize>,
    pub approvals: Vec<Approval>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refusal: Option<Refusal>,
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

struct Handoff {
    view: HandoffView,
    grant: HandoffGrant,
    backend: Option<BackendName>,
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

impl Handoff {
    fn event(&self, kind: AuditKind) -> AuditEvent {
        let mut e = AuditEvent::new(kind, self.view.handoff_id)
            .terminal(&self.view.terminal)
            .detail("handoff_id", self.view.handoff_id.to_string())
            .detail("from", self.view.from.as_str())
            .detail("to", self.view.to.as_str());
        if let Some(s) = self.live_share {
            e = e.detail("share_id", s.to_string());
        }
        e
    }

    /// Is `caller` a party to this handoff (requester, receiver, an approver of the
    /// chain) or the operator? Only they may see it.
    fn visible_to(&self, caller: &Caller) -> bool {
        let id = &caller.identity;
        id.is_operator()
            || id.key() == self.requester.key()
            || id.may_act_as(&self.view.from)
            || id.may_act_as(&self.view.to)
            || id.principals().iter().any(|p| {
                self.view
                    .approvers
                    .iter()
                    .any(|pattern| glob_match(pattern, p.as_str()))
            })
    }

    /// The view `caller` gets: the package (context and the receiver's link) only for
    /// the receiver and the operator.
    fn view_for(&self, caller: &Caller) -> HandoffView {
        let mut view = self.view.clone();
        let id = &caller.identity;
        if !(id.is_operator() || id.may_act_as(&self.view.to)) {
            view.package = None;
        }
        view
    }

    /// Why `by` may not approve the current step, if it may not: a claim its identity
    /// does not prove, a principal the step does not name, the requester or the
    /// receiver, or an identity that approved an earlier step.
    fn refuse_approver(&self, by: &Caller, step: usize) -> Option<ShareError> {
        let id = self.view.handoff_id;
        let expected = &self.view.approvers[step - 1];
        let denied = |reason: String| ShareError::Denied {
            rule_id: Some(self.view.rule_id.clone()),
            reason,
        };
        if let Err(why) = by.check_claim() {
            return Some(denied(why));
        }
        if !glob_match(expected, by.principal.as_str()) {
            return Some(ShareError::NotApprover {
                handoff_id: id,
                step,
                expected: expected.clone(),
                got: by.principal.to_string(),
            });
        }
        let who = by.identity.key();
        if who == self.requester.key() || by.identity.may_act_as(&self.view.from) {
            return Some(denied(format!(
                "{who} asked for handoff {id}; the requester cannot approve it"
            )));
        }
        if by.identity.may_act_as(&self.view.to) {
            return Some(denied(format!(
                "{who} may act as the receiver {}; the receiver cannot approve its own handoff",
                self.view.to
            )));
        }
        if let Some(earlier) = self.approver_keys.iter().position(|k| k == who) {
            return Some(denied(format!(
                "{who} already approved step {} of handoff {id}; each step needs another person",
                earlier + 1
            )));
        }
        None
    }

    fn cancel_timer(&mut self) {
        if let Some(t) = self.timer.take() {
            t.abort();
        }
    }
}

impl Drop for Handoff {
    fn drop(&mut self) {
        self.cancel_timer();
    }
}

pub struct ManagerState {
    args: HandoffArgs,
    /// Pending and recently ended handoffs: at most `max_pending` + ENDED_KEPT.
    handoffs: HashMap<HandoffId, Handoff>,
    /// Ended handoffs, oldest first: past ENDED_KEPT the oldest is forgotten.
    ended: VecDeque<HandoffId>,
}

/// A reason as typed, if it is short enough to keep.
fn check_reason(reason: &str) -> Result<(), ShareError> {
    if reason.len() > MAX_REASON {
        let why = format!("at most {MAX_REASON} bytes (got {})", reason.len());
        return Err(crate::error::InvalidInput::new("reason", reason, &why).into());
    }
    Ok(())
}

/// The root's view of a terminal's live shares, for the package and the audit.
async fn live_shares(root: &ActorRef<RootMsg>) -> Vec<ShareInfo> {
    match root.call(RootMsg::List, Some(Duration::from_secs(2))).await {
        Ok(ractor::rpc::CallResult::Success(Ok(list))) => list,
        _ => Vec::new(),
    }
}

impl ManagerState {
    /// Record what has happened (a denial, a timeout): written however late.
    async fn audit(&self, event: AuditEvent) -> Result<(), ShareError> {
        record_acked(&self.args.audit, event, self.args.audit_timeout)
            .await
            .map_err(ShareError::AuditUnavailable)
    }

    /// Record what happens only if it is on the record (a request, an approval, a
    /// completion): withdrawn if the log does not take it in time, so a step reported
    /// as not done never shows up later.
    async fn audit_first(&self, event: AuditEvent) -> Result<(), ShareError> {
        crate::audit::send(&self.args.audit, event)
            .wait(self.args.audit_timeout)
            .await
            .map_err(ShareError::AuditUnavailable)
    }

    /// Put a refused approval or denial on the record (the handoff is unchanged).
    fn refused(&self, h: &Handoff, action: &str, by: &Caller, err: &ShareError) {
        record(
            &self.args.audit,
            h.event(AuditKind::HandoffRefused)
                .principal(&by.principal)
                .asked_by(by)
                .detail("action", action)
                .detail("step", json!(h.view.step))
                .detail("reason", err.to_string()),
        );
    }

    /// A handoff reached a final state: keep it to be shown, within ENDED_KEPT.
    fn retire(&mut self, id: HandoffId) {
        self.ended.push_back(id);
        while self.ended.len() > ENDED_KEPT {
            if let Some(old) = self.ended.pop_front() {
                self.handoffs.remove(&old);
            }
        }
    }

    /// Why no new handoff may be asked for now, if so.
    fn refuse_new(&self, requester: &Identity) -> Result<(), ShareError> {
        if let Some(why) = self.args.audit_health.refusal() {
            return Err(ShareError::AuditUnavailable(why));
        }
        let pending = self
            .handoffs
            .values()
            .filter(|h| h.view.state == HandoffState::Pending);
        let (mut all, mut mine) = (0, 0);
        for h in pending {
            all += 1;
            if h.requester.key() == requester.key() {
                mine += 1;
            }
        }
        if all >= self.args.max_pending {
            return Err(ShareError::ServiceFull {
                what: "pending handoffs",
                limit: self.args.max_pending,
            });
        }
        if mine >= self.args.max_pending_per_requester {
            return Err(ShareError::ServiceFull {
                what: "pending handoffs from this requester",
                limit: self.args.max_pending_per_requester,
            });
        }
        Ok(())
    }

    fn publish(&self, h: &Handoff) {
        let _ = self.args.root.cast(RootMsg::HandoffBadge(h.view.clone()));
    }

    fn arm_step(&mut self, myself: &ActorRef<HandoffMsg>, id: HandoffId) {
        let Some(h) = self.handoffs.get_mut(&id) else {
            return;
        };
        h.cancel_timer();
        let Some(step) = h.view.step else { return };
        let me = myself.clone();
        let after = h.grant.step_timeout;
        h.timer = Some(tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let _ = me.cast(HandoffMsg::StepTimedOut { id, step });
        }));
    }

    fn get(&self, id: HandoffId) -> Result<&Handoff, ShareError> {
        self.handoffs
            .get(&id)
            .ok_or(ShareError::HandoffNotFound(id))
    }

    /// Only a pending handoff takes approvals and denials.
    fn pending(&mut self, id: HandoffId) -> Result<&mut Handoff, ShareError> {
        let h = self
            .handoffs
            .get_mut(&id)
            .ok_or(ShareError::HandoffNotFound(id))?;
        if h.view.state != HandoffState::Pending {
            return Err(ShareError::HandoffClosed {
                handoff_id: id,
                state: describe_end(&h.view),
            });
        }
        Ok(h)
    }

    async fn request(
        &mut self,
        myself: &ActorRef<HandoffMsg>,
        req: HandoffRequest,
    ) -> Result<HandoffView, ShareError> {
        check_reason(&req.reason)?;
        self.refuse_new(&req.from.identity)?;
        let id = HandoffId::new();
        let from = req.from.principal.clone();
        let requested = AuditEvent::new(AuditKind::HandoffRequested, id)
            .principal(&from)
            .terminal(&req.terminal)
            .asked_by(&req.from)
            .detail("handoff_id", id.to_string())
            .detail("from", from.as_str())
            .detail("to", req.to.as_str())
            .detail("reason", req.reason.as_str());
        if from == req.to {
            let err = crate::error::InvalidInput::new(
                "handoff",
                req.to.as_str(),
                "the receiver is the one handing off",
            );
            return Err(err.into());
        }
        if let Err(detail) = self.args.host.check(&req.terminal).await {
            return Err(ShareError::UnknownTerminal {
                terminal: req.terminal,
                detail,
            });
        }
        let claim = req.from.check_claim();
        let grant = match claim
            .and_then(|()| self.args.policy.handoff(&from, &req.to, &req.terminal))
        {
            Ok(g) if !g.approvers.is_empty() => g,
            Ok(g) => Err(format!("rule `{}` has no approvers", g.rule_id)).map_err(|reason| {
                ShareError::Denied {
                    rule_id: Some(g.rule_id.clone()),
                    reason,
                }
            })?,
            Err(reason) => {
                self.audit(
                    requested
                        .clone()
                        .detail("denied", true)
                        .detail("cause", reason.as_str()),
                )
                .await?;
                let denied = AuditEvent::new(AuditKind::HandoffDenied, id)
                    .principal(&from)
                    .terminal(&req.terminal)
                    .asked_by(&req.from)
                    .detail("handoff_id", id.to_string())
                    .detail("step", 0)
                    .detail("reason", reason.as_str());
                self.audit(denied).await?;
                return Err(ShareError::Denied {
                    rule_id: None,
                    reason,
                });
            }
        };
        let live_share = live_shares(&self.args.root)
            .await
            .into_iter()
            .find(|s| s.terminal == req.terminal)
            .map(|s| s.share_id);
        let h = Handoff {
            view: HandoffView {
                handoff_id: id,
                state: HandoffState::Pending,
                terminal: req.terminal,
                from,
                to: req.to,
                reason: req.reason,
                rule_id: grant.rule_id.clone(),
                approvers: grant.approvers.clone(),
                step: Some(1),
                approvals: Vec::new(),
                refusal: None,
                package: None,
            },
            grant,
            backend: req.backend,
            live_share,
            requester: req.from.identity.clone(),
            approver_keys: Vec::new(),
            completed_by: None,
            timer: None,
            completing_reply: None,
            receiver: None,
        };
        let event = h
            .event(AuditKind::HandoffRequested)
            .principal(&h.view.from)
            .asked_by(&req.from)
            .detail("reason", h.view.reason.as_str())
            .detail("rule_id", h.view.rule_id.as_str())
            .detail("approvers", json!(h.view.approvers));
        self.audit_first(event).await?;
        let view = h.view.clone();
        self.publish(&h);
        self.handoffs.insert(id, h);
        self.arm_step(myself, id);
        Ok(view)
    }

    async fn approve(
        &mut self,
        myself: &ActorRef<HandoffMsg>,
        id: HandoffId,
        by: Caller,
        reply: HandoffReply,
    ) {
        let result = async {
            let h = self.pending(id)?;
            let step = h.view.step.unwrap_or(1);
            if let Some(err) = h.refuse_approver(&by, step) {
                let h = &self.handoffs[&id];
                self.refused(h, "approve", &by, &err);
                return Err(err);
            }
            let last = step == h.view.approvers.len();
            let event = h
                .event(AuditKind::HandoffApproved)
                .principal(&by.principal)
                .asked_by(&by)
                .detail("step", step)
                .detail("of", h.view.approvers.len());
            // On the record first: an approval the log cannot keep does not count.
            self.audit_first(event).await?;
            let h = self.pending(id)?;
            h.view.approvals.push(Approval {
                by: by.principal.clone(),
                at: SystemTime::now(),
            });
            h.approver_keys.push(by.identity.key().to_owned());
            if last {
                h.view.step = None;
                h.view.state = HandoffState::Completing;
                h.completed_by = by.peer().cloned();
                h.cancel_timer();
            } else {
                h.view.step = Some(step + 1);
            }
            Ok(last)
        }
        .await;
        match result {
            Err(e) => {
                let _ = reply.send(Err(e));
            }
            Ok(false) => {
                self.arm_step(myself, id);
                let h = &self.handoffs[&id];
                self.publish(h);
                let _ = reply.send(Ok(h.view_for(&by)));
            }
            Ok(true) => {
                // Capture (and start the receiver's share) off the mailbox; the
                // approver's answer waits for the package.
                let Some(h) = self.handoffs.get_mut(&id) else {
                    return;
                };
                h.completing_reply = Some((reply, by.clone()));
                let receiver = Caller::new(
                    h.view.to.clone(),
                    Identity::handoff_receiver(id, &h.view.to, h.completed_by.clone()),
                );
                h.receiver = Some(receiver.clone());
                let task = complete(
                    h.view.clone(),
                    h.grant.clone(),
                    h.backend.clone(),
                    receiver,
                    self.args.backends.clone(),
                    self.args.policy.clone(),
                    self.args.host.clone(),
                    self.args.root.clone(),
                    self.args.scrollback_lines,
                    self.args.share_timeout,
                );
                let me = myself.clone();
                tokio::spawn(async move {
                    let package = task.await;
                    let _ = me.cast(HandoffMsg::Completed { id, package });
                });
                let h = &self.handoffs[&id];
                self.publish(h);
            }
        }
    }

    async fn refuse(
        &mut self,
        id: HandoffId,
        by: Option<Caller>,
        reason: String,
        state: HandoffState,
    ) -> Result<HandoffView, ShareError> {
        let h = self.pending(id)?;
        let step = h.view.step.unwrap_or(0);
        let mut event = h
            .event(AuditKind::HandoffDenied)
            .detail("step", step)
            .detail("of", h.view.approvers.len())
            .detail("reason", reason.as_str());
        if state == HandoffState::TimedOut {
            event = event.detail("timed_out", true);
        }
        match &by {
            // A person's denial is theirs to retry: if the log cannot take it, the
            // handoff is untouched and they are told so.
            Some(by) => {
                self.audit_first(event.principal(&by.principal).asked_by(by))
                    .await?
            }
            // A step's timeout has happened whatever the log says: written however late
            // (the error is logged by the caller), and the handoff ends either way.
            None => {
                if let Err(e) = self.audit(event).await {
                    tracing::error!(handoff = %id, error = %e, "timeout record is late");
                }
            }
        }
        let h = self.pending(id)?;
        h.cancel_timer();
        h.view.state = state;
        h.view.step = None;
        h.view.refusal = Some(Refusal {
            step,
            by: by.as_ref().map(|c| c.principal.clone()),
            reason,
        });
        let view = h.view.clone();
        self.publish(&self.handoffs[&id]);
        self.retire(id);
        Ok(view)
    }

    /// The completion task's outcome: on the record first, then the state. A failure
    /// (or a completion the log cannot take) ends the handoff as `failed`, stops the
    /// receiver's share if one was started, and answers with the cause.
    async fn completed(&mut self, id: HandoffId, outcome: Result<HandoffPackage, ShareError>) {
        let Some(h) = self.handoffs.get_mut(&id) else {
            return;
        };
        let reply = h.completing_reply.take();
        let result = match outcome {
            Ok(package) => {
                let mut event = h
                    .event(AuditKind::HandoffCompleted)
                    .principal(&h.view.to)
                    .detail("access", package.access.as_str())
                    .detail("cwd", package.cwd.as_str())
                    .detail("command", package.command.as_str())
                    .detail("scrollback_lines", package.scrollback.lines().count())
                    .detail("cols", package.cols)
                    .detail("rows", package.rows);
                if let Some(s) = package.share_id {
                    event = event.detail("receiver_share_id", s.to_string());
                }
                if let Some(e) = &package.share_error {
                    event = event
                        .detail("share_error", e.as_str())
                        .detail("receiver_share", "optional");
                }
                // The approval that completed the chain asked for this.
                event.peer = h.completed_by.clone();
                match self.audit_first(event).await {
                    Ok(()) => {
                        let h = self.handoffs.get_mut(&id).expect("still here");
                        h.view.state = HandoffState::Completed;
                        h.view.package = Some(package);
                        self.retire(id);
                        Ok(())
                    }
                    Err(cause) => {
                        // Not on the record, so not handed over: the receiver's share
                        // (if one was started for it) goes too.
                        if package.link.is_some() {
                            self.stop_receiver_share(id, package.share_id);
                        }
                        Err(self.fail(id, cause).await)
                    }
                }
            }
            Err(cause) => Err(self.fail(id, cause).await),
        };
        if let Some(h) = self.handoffs.get(&id) {
            self.publish(h);
        }
        if let Some((reply, approver)) = reply {
            // The approver learns the outcome; the package is the receiver's.
            let result = result.map(|()| self.handoffs[&id].view_for(&approver));
            let _ = reply.send(result);
        }
    }

    /// End a completing handoff as failed: `handoff.failed` (written however late: the
    /// failure has happened), then the state. Returns the error for the approver.
    async fn fail(&mut self, id: HandoffId, cause: ShareError) -> ShareError {
        let Some(h) = self.handoffs.get(&id) else {
            return cause;
        };
        let step = h.view.approvers.len();
        let mut event = h
            .event(AuditKind::HandoffFailed)
            .principal(&h.view.to)
            .detail("step", step)
            .detail("cause", cause.to_string());
        event.peer = h.completed_by.clone();
        if let Err(e) = self.audit(event).await {
            tracing::error!(handoff = %id, error = %e, "handoff.failed record is late");
        }
        if let Some(h) = self.handoffs.get_mut(&id) {
            h.view.state = HandoffState::Failed;
            h.view.refusal = Some(Refusal {
                step,
                by: None,
                reason: cause.to_string(),
            });
            self.retire(id);
        }
        ShareError::HandoffFailed {
            handoff_id: id,
            cause: Box::new(cause),
        }
    }

    /// Revoke the share started for a handoff's receiver, off the mailbox.
    fn stop_receiver_share(&self, id: HandoffId, share: Option<ShareId>) {
        let (Some(share_id), Some(caller)) = (
            share,
            self.handoffs.get(&id).and_then(|h| h.receiver.clone()),
        ) else {
            return;
        };
        let root = self.args.root.clone();
        let t = self.args.share_timeout;
        tokio::spawn(async move {
            let requested_at = tokio::time::Instant::now();
            let asked = root
                .call(
                    |reply| RootMsg::Revoke {
                        share_id,
                        caller,
                        reply,
                        requested_at,
                    },
                    Some(t),
                )
                .await;
            if !matches!(asked, Ok(ractor::rpc::CallResult::Success(Ok(_)))) {
                tracing::error!(handoff = %id, share = %share_id, "receiver share not revoked");
            }
        });
    }
}

/// Everything after the last approval: capture the context, decide the receiver's
/// access, and start its share when one was asked for.
#[allow(clippy::too_many_arguments)]
async fn complete(
    view: HandoffView,
    grant: HandoffGrant,
    backend: Option<BackendName>,
    receiver: Caller,
    all_backends: Vec<BackendName>,
    policy: Arc<dyn PolicyGate>,
    host: Arc<dyn TerminalHost>,
    root: ActorRef<RootMsg>,
    lines: usize,
    share_timeout: Duration,
) -> Result<HandoffPackage, ShareError> {
    let context =
        host.capture(&view.terminal, lines)
            .await
            .map_err(|e| ShareError::UnknownTerminal {
                terminal: view.terminal.clone(),
                detail: format!("its context could not be captured: {e}"),
            })?;
    // An agent gets at most the rule's agent_access, and anyone read-write only where
    // the share policy would let them write: over the requested backend, or, when none
    // was named, over at least one backend.
    let mut access = if view.to.kind() == "agent" {
        grant.agent_access
    } else {
        AccessMode::ReadWrite
    };
    if access == AccessMode::ReadWrite {
        let candidates = match &backend {
            Some(b) => vec![b.clone()],
            None => all_backends,
        };
        let may_write = candidates.iter().any(|b| {
            matches!(
                policy.evaluate(&PolicyQuery {
                    principal: &view.to,
                    terminal: &view.terminal,
                    backend: b,
                    access: AccessMode::ReadWrite,
                }),
                PolicyDecision::Allow(_)
            )
        });
        if !may_write {
            access = AccessMode::ReadOnly;
        }
    }
    let mut package = HandoffPackage {
        cwd: context.cwd,
        command: context.command,
        scrollback: context.scrollback,
        cols: context.cols,
        rows: context.rows,
        access,
        share_id: None,
        link: None,
        share_error: None,
    };
    match backend {
        Some(backend) => {
            let request = ShareRequest {
                terminal: view.terminal.clone(),
                backend,
                access,
                caller: receiver,
                ttl: None,
                grace: None,
            };
            let started = match root
                .call(
                    |reply| RootMsg::Share {
                        request,
                        start_deadline: tokio::time::Instant::now() + share_timeout,
                        reply,
                    },
                    // The start's budget, then time for a failed start's stop and
                    // record to come back as an answer.
                    Some(share_timeout * 2),
                )
                .await
            {
                Ok(ractor::rpc::CallResult::Success(result)) => result,
                Ok(ractor::rpc::CallResult::Timeout) => Err(ShareError::StartTimedOut {
                    after: human(share_timeout),
                }),
                _ => Err(ShareError::ShuttingDown),
            };
            match (started, grant.receiver_share) {
                (Ok(info), _) => {
                    package.share_id = Some(info.share_id);
                    package.link = Some(info.links.link);
                }
                (Err(e), ReceiverShare::Optional) => package.share_error = Some(e.to_string()),
                (Err(e), ReceiverShare::Required) => return Err(e),
            }
        }
        None => {
            package.share_id = live_shares(&root)
                .await
                .into_iter()
                .find(|s| s.terminal == view.terminal)
                .map(|s| s.share_id);
        }
    }
    Ok(package)
}

fn describe_end(view: &HandoffView) -> String {
    match (&view.state, &view.refusal) {
        (HandoffState::Denied, Some(r)) => format!(
            "denied at step {} by {}: {}",
            r.step,
            r.by.as_ref().map_or("-", |p| p.as_str()),
            r.reason
        ),
        (HandoffState::TimedOut, Some(r)) => format!("timed out at step {}: {}", r.step, r.reason),
        (HandoffState::Failed, Some(r)) => format!("failed after every approval: {}", r.reason),
        (state, _) => state.as_str().to_string(),
    }
}

impl Actor for HandoffManager {
    type Msg = HandoffMsg;
    type State = ManagerState;
    type Arguments = HandoffArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: HandoffArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(ManagerState {
            args,
            handoffs: HashMap::new(),
            ended: VecDeque::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            HandoffMsg::Request(req, reply) => {
                let _ = reply.send(state.request(&myself, req).await);
            }
            HandoffMsg::Approve { id, by, reply } => state.approve(&myself, id, by, reply).await,
            HandoffMsg::Deny {
                id,
                by,
                reason,
                reply,
            } => {
                let result = match reason.as_deref().map(check_reason).transpose() {
                    Err(e) => Err(e),
                    Ok(_) => match state.pending(id) {
                        Err(e) => Err(e),
                        Ok(h) => {
                            let step = h.view.step.unwrap_or(1);
                            let expected = h.view.approvers[step - 1].clone();
                            // The step's approver, or the receiver, may say no: with a claim
                            // their identity proves.
                            let refusal = match by.check_claim() {
                                Err(why) => Some(ShareError::Denied {
                                    rule_id: Some(h.view.rule_id.clone()),
                                    reason: why,
                                }),
                                Ok(())
                                    if glob_match(&expected, by.principal.as_str())
                                        || by.principal == h.view.to =>
                                {
                                    None
                                }
                                Ok(()) => Some(ShareError::NotApprover {
                                    handoff_id: id,
                                    step,
                                    expected,
                                    got: by.principal.to_string(),
                                }),
                            };
                            match refusal {
                                Some(err) => {
                                    state.refused(&state.handoffs[&id], "deny", &by, &err);
                                    Err(err)
                                }
                                None => {
                                    let why = reason
                                        .unwrap_or_else(|| format!("denied by {}", by.principal));
                                    state.refuse(id, Some(by), why, HandoffState::Denied).await
                                }
                            }
                        }
                    },
                };
                let _ = reply.send(result);
            }
            HandoffMsg::Show(id, caller, reply) => {
                let result = state.get(id).and_then(|h| {
                    if h.visible_to(&caller) {
                        Ok(h.view_for(&caller))
                    } else {
                        // Not a party: as if there were no such handoff.
                        Err(ShareError::HandoffNotFound(id))
                    }
                });
                let _ = reply.send(result);
            }
            HandoffMsg::List(caller, reply) => {
                let mut all: Vec<HandoffView> = state
                    .handoffs
                    .values()
                    .filter(|h| h.visible_to(&caller))
                    .map(|h| h.view_for(&caller))
                    .collect();
                all.sort_by_key(|v| v.handoff_id);
                let _ = reply.send(Ok(all));
            }
            HandoffMsg::StepTimedOut { id, step } => {
                let current = state.handoffs.get(&id).and_then(|h| h.view.step);
                if current == Some(step) {
                    let after = human(state.handoffs[&id].grant.step_timeout);
                    let reason = format!("step {step} was not approved within {after}");
                    if let Err(e) = state.refuse(id, None, reason, HandoffState::TimedOut).await {
                        tracing::error!(handoff = %id, error = %e, "could not record a timeout");
                    }
                }
            }
            HandoffMsg::Completed { id, package } => state.completed(id, package).await,
        }
        Ok(())
    }
}
