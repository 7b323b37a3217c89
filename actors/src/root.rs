//! RootSupervisor: owns the share table and the per-terminal limits.
//!
//! Admission (policy, TTL bound, limit) happens here, in one mailbox, so two racing
//! requests for one terminal cannot both pass the limit. Nothing is spawned for a
//! request that is refused. Each admitted share gets a ShareSession, linked here: a
//! session that crashes is audited as failed and its children (and so its worker
//! process) are killed, while every other share carries on.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::badge::{Badge, BadgeShare, Badges};

use crate::audit::{record, record_acked, AuditEvent, AuditHealth, AuditKind, AuditMsg};
use crate::caller::Caller;
use crate::error::{human, ShareError};
use crate::session::{EndReply, ServiceCtx, SessionArgs, SessionMsg, ShareReply, ShareSession};
use crate::settings::Settings;
use crate::traits::{Backend, PolicyDecision, PolicyGate, PolicyQuery, TerminalHost};
use crate::types::{
    AccessMode, BackendName, EndReason, FingerprintKey, Links, Principal, RevokeReport, ShareId,
    ShareInfo, ShareRequest, ShareState, TerminalName,
};

/// How many ended shares the root remembers, to answer "expired" rather than "unknown".
const ENDED_MEMORY: usize = 4096;

pub enum RootMsg {
    /// A new share; the whole start must be done by `start_deadline` (counted from the
    /// request's arrival at the API).
    Share {
        request: ShareRequest,
        start_deadline: Instant,
        reply: ShareReply,
    },
    Extend {
        share_id: ShareId,
        by: Duration,
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
    /// End every share (as `stopped`), then stop the root.
    Shutdown(RpcReplyPort<Vec<RevokeReport>>),
    /// From a session: its link arrived or its info changed.
    Updated(ShareInfo),
    /// From the HandoffManager: a terminal's latest handoff changed.
    HandoffBadge(crate::handoff::HandoffView),
    /// From a session: it has ended and is draining.
    Ended {
        share_id: ShareId,
        reason: EndReason,
    },
}

pub struct RootSupervisor;

pub struct RootArgs {
    pub backends: HashMap<BackendName, Arc<dyn Backend>>,
    pub policy: Arc<dyn PolicyGate>,
    pub host: Arc<dyn TerminalHost>,
    pub audit: ActorRef<AuditMsg>,
    pub settings: Settings,
    pub badges: watch::Sender<Badges>,
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
}

struct Admitted {
    grant: crate::traits::Grant,
    backend: Arc<dyn Backend>,
}

/// A refusal: the error for the caller and the rule that decided, if any.
type Refusal = (ShareError, Option<String>);

struct Entry {
    session: ActorRef<SessionMsg>,
    info: ShareInfo,
    ended: Arc<OnceLock<EndReason>>,
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
    handoffs: HashMap<TerminalName, crate::badge::BadgeHandoff>,
    badges: watch::Sender<Badges>,
    ended: HashMap<ShareId, EndReason>,
    ended_order: VecDeque<ShareId>,
    shutting_down: bool,
}

impl RootState {
    /// Republish one terminal's badge (after a share of it started, changed or ended).
    fn publish_badge(&self, terminal: &TerminalName) {
        let shares: Vec<BadgeShare> = self
            .per_terminal
            .get(terminal)
            .into_iter()
            .flatten()
            .filter_map(|id| self.shares.get(id))
            .map(|e| BadgeShare::from(&e.info))
            .collect();
        let handoff = self.handoffs.get(terminal).cloned();
        self.badges.send_if_modified(|board| {
            if shares.is_empty() && handoff.is_none() {
                board.remove(terminal).is_some()
            } else {
                let badge = Badge { shares, handoff };
                if board.get(terminal) == Some(&badge) {
                    return false;
                }
                board.insert(terminal.clone(), badge);
                true
            }
        });
    }

    fn remember_end(&mut self, id: ShareId, reason: EndReason) {
        if let Some(entry) = self.shares.remove(&id) {
            self.by_actor.remove(&entry.session.get_id());
            let terminal = entry.info.terminal;
            if let Some(set) = self.per_terminal.get_mut(&terminal) {
                set.remove(&id);
                if set.is_empty() {
                    self.per_terminal.remove(&terminal);
                }
            }
            self.publish_badge(&terminal);
        }
        if self.ended.insert(id, reason).is_none() {
            self.ended_order.push_back(id);
            if self.ended_order.len() > ENDED_MEMORY {
                if let Some(old) = self.ended_order.pop_front() {
                    self.ended.remove(&old);
                }
            }
        }
    }

    /// The error for an operation on a share that is not live.
    fn gone(&self, id: ShareId) -> ShareError {
        match self.ended.get(&id) {
            Some(EndReason::Expired) => ShareError::ShareExpired(id),
            Some(reason) => ShareError::ShareEnded(id, reason.clone()),
            None => ShareError::NotFound(id),
        }
    }

    fn denied_event(
        &self,
        req: &ShareRequest,
        id: ShareId,
        err: &ShareError,
        rule_id: Option<&str>,
    ) -> AuditEvent {
        let mut e = AuditEvent::new(AuditKind::ShareDenied, id)
            .principal(req.principal())
            .terminal(&req.terminal)
            .backend(&req.backend)
            .asked_by(&req.caller)
            .detail("access", req.access.as_str())
            .detail("reason", err.to_string());
        if let Some(rule) = rule_id {
            e = e.detail("rule_id", rule);
        }
        e
    }

    /// Admission: everything that can refuse a share or a switch, before anything is
    /// spawned: the policy rule for the backend and access, the TTL bound counted from
    /// the share's start, the join restriction, the per-terminal limit, and whether the
    /// backend can run here.
    fn admit(&self, q: &AdmissionQuery<'_>) -> Result<Admitted, Refusal> {
        if self.shutting_down {
            return Err((ShareError::ShuttingDown, None));
        }
        // Fail closed, and keep memory flat: while the log cannot keep up, nothing new
        // starts (what is live can still end).
        if let Some(why) = self.audit_health.refusal() {
            return Err((ShareError::AuditUnavailable(why), None));
        }
        if q.moving.is_none() && self.shares.len() >= self.ctx.settings.max_live_shares {
            return Err((
                ShareError::ServiceFull {
                    what: "live shares",
                    limit: self.ctx.settings.max_live_shares,
                },
                None,
            ));
        }
        let backend = self
            .backends
            .get(q.backend)
            .cloned()
            .ok_or_else(|| (ShareError::UnknownBackend(q.backend.clone()), None))?;
        let grant = match self.policy.evaluate(&PolicyQuery {
            principal: q.principal,
            terminal: q.terminal,
            backend: q.backend,
            access: q.access,
        }) {
            PolicyDecision::Allow(g) => g,
            PolicyDecision::Deny { rule_id, reason } => {
                return Err((
                    ShareError::Denied {
                        rule_id: rule_id.clone(),
                        reason,
                    },
                    rule_id,
                ))
            }
        };
        let rule = Some(grant.rule_id.clone());
        if q.total_ttl.is_zero() || q.total_ttl > crate::settings::MAX_DURATION {
            let err = crate::error::InvalidInput::new(
                "ttl",
                &human(q.total_ttl),
                "must be positive and at most a year",
            );
            return Err((err.into(), rule));
        }
        if let Some(max) = grant.max_ttl {
            if q.total_ttl > max {
                return Err((
                    ShareError::TtlAboveMax {
                        requested: human(q.total_ttl),
                        max: human(max),
                        rule_id: grant.rule_id.clone(),
                    },
                    rule,
                ));
            }
        }
        let limit = grant
            .max_concurrent
            .map_or(self.ctx.settings.per_terminal_limit, |m| {
                m.min(self.ctx.settings.per_terminal_limit)
            });
        let others = self.per_terminal.get(q.terminal).map_or(0, |s| {
            s.iter().filter(|id| Some(**id) != q.moving).count() as u32
        });
        if others >= limit {
            return Err((
                ShareError::LimitReached {
                    terminal: q.terminal.clone(),
                    limit,
                },
                rule,
            ));
        }
        if (grant.require_join_restriction || self.ctx.settings.require_join_restriction)
            && !backend.restricts_joins()
        {
            let by = if grant.require_join_restriction {
                format!("rule `{}`", grant.rule_id)
            } else {
                "the config ([access] require_join_restriction)".to_string()
            };
            return Err((
                ShareError::Denied {
                    rule_id: rule.clone(),
                    reason: format!(
                        "{by} requires a join restriction (authorized keys or GitHub users), \
                         which backend {} does not have",
                        q.backend
                    ),
                },
                rule,
            ));
        }
        backend
            .check()
            .map_err(|e| (ShareError::Backend(e), rule.clone()))?;
        Ok(Admitted { grant, backend })
    }

    /// May `caller` act on the live share `info` (extend, revoke, switch)? Its claim
    /// must be proven, and it must own the share or be the operator.
    fn authorize(&self, info: &ShareInfo, caller: &Caller) -> Result<(), ShareError> {
        let denied = |reason| ShareError::Denied {
            rule_id: None,
            reason,
        };
        caller.check_claim().map_err(denied)?;
        if !caller.may_manage(info) {
            return Err(denied(format!(
                "{} may not act on share {} of {}",
                caller.principal, info.share_id, info.principal
            )));
        }
        Ok(())
    }

    /// Put a refused action on a live share on the record (the share is unchanged).
    fn refused(&self, info: &ShareInfo, action: &str, caller: &Caller, err: &ShareError) {
        if matches!(err, ShareError::AuditUnavailable(_)) {
            // The log is what refused: another event would only queue behind it.
            return;
        }
        record(
            &self.ctx.audit,
            AuditEvent::new(AuditKind::ShareRefused, info.share_id)
                .principal(&info.principal)
                .terminal(&info.terminal)
                .backend(&info.backend)
                .by(caller)
                .detail("action", action)
                .detail("reason", err.to_string()),
        );
    }
}

impl Actor for RootSupervisor {
    type Msg = RootMsg;
    type State = RootState;
    type Arguments = RootArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: RootArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(RootState {
            backends: args.backends,
            policy: args.policy,
            ctx: Arc::new(ServiceCtx {
                host: args.host,
                audit: args.audit,
                root: myself,
                settings: args.settings,
                fingerprints: args.fingerprints,
            }),
            audit_health: args.audit_health,
            shares: HashMap::new(),
            by_actor: HashMap::new(),
            per_terminal: HashMap::new(),
            handoffs: HashMap::new(),
            badges: args.badges,
            ended: HashMap::new(),
            ended_order: VecDeque::new(),
            shutting_down: false,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            RootMsg::Share {
                request: req,
                start_deadline,
                reply,
            } => {
                let id = ShareId::new();
                metrics::counter!("termshare_shares_requested_total").increment(1);
                let requested = AuditEvent::new(AuditKind::ShareRequested, id)
                    .principal(req.principal())
                    .terminal(&req.terminal)
                    .backend(&req.backend)
                    .asked_by(&req.caller)
                    .detail("access", req.access.as_str())
                    .detail(
                        "ttl_ms",
                        serde_json::json!(req.ttl.map(|t| t.as_millis() as u64)),
                    );
                let ttl = req.ttl.unwrap_or(state.ctx.settings.default_ttl);
                let admitted = req
                    .caller
                    .check_claim()
                    .map_err(|reason| {
                        (
                            ShareError::Denied {
                                rule_id: None,
                                reason,
                            },
                            None,
                        )
                    })
                    .and_then(|()| {
                        state.admit(&AdmissionQuery {
                            principal: req.principal(),
                            terminal: &req.terminal,
                            backend: &req.backend,
                            access: req.access,
                            total_ttl: ttl,
                            moving: None,
                        })
                    });
                let Admitted { grant, backend } = match admitted {
                    Ok(admitted) => admitted,
                    Err((err @ ShareError::AuditUnavailable(_), _)) => {
                        // Nothing to put on a record that cannot keep up.
                        metrics::counter!("termshare_shares_denied_total").increment(1);
                        let _ = reply.send(Err(err));
                        return Ok(());
                    }
                    Err((err, rule_id)) => {
                        metrics::counter!("termshare_shares_denied_total").increment(1);
                        // Audit and answer off the root's mailbox: a slow disk must
                        // not hold up revokes queued behind this request.
                        let denied = state.denied_event(&req, id, &err, rule_id.as_deref());
                        let audit = state.ctx.audit.clone();
                        let timeout = state.ctx.settings.audit_timeout;
                        tokio::spawn(async move {
                            let audited = match record_acked(&audit, requested, timeout).await {
                                Ok(()) => record_acked(&audit, denied, timeout).await,
                                Err(e) => Err(e),
                            };
                            let _ = reply.send(Err(match audited {
                                Ok(()) => err,
                                Err(e) => ShareError::AuditUnavailable(e),
                            }));
                        });
                        return Ok(());
                    }
                };
                let now = SystemTime::now();
                let info = ShareInfo {
                    share_id: id,
                    terminal: req.terminal.clone(),
                    backend: req.backend.clone(),
                    access: req.access,
                    principal: req.principal().clone(),
                    links: Links::default(),
                    started_at: now,
                    expires_at: now + ttl,
                    rule_id: grant.rule_id.clone(),
                    state: ShareState::Starting,
                    participants: None,
                };
                let ended = Arc::new(OnceLock::new());
                let args = SessionArgs {
                    info: info.clone(),
                    ttl,
                    max_ttl: grant.max_ttl,
                    grace: req
                        .grace
                        .clone()
                        .unwrap_or_else(|| state.ctx.settings.grace.clone()),
                    backend,
                    ctx: state.ctx.clone(),
                    reply,
                    ended: ended.clone(),
                    requested,
                    caller: req.caller.clone(),
                    start_deadline,
                };
                // Registered in this same handler, before the next request is read, so
                // racing requests see it.
                match Actor::spawn_linked(None, ShareSession, args, myself.get_cell()).await {
                    Ok((session, _)) => {
                        state.by_actor.insert(session.get_id(), id);
                        state
                            .per_terminal
                            .entry(req.terminal.clone())
                            .or_default()
                            .insert(id);
                        state.shares.insert(
                            id,
                            Entry {
                                session,
                                info,
                                ended,
                            },
                        );
                        state.publish_badge(&req.terminal);
                    }
                    Err(e) => {
                        // The reply port went down with the failed spawn: the caller
                        // sees the session gone.
                        tracing::error!(error = %e, "could not spawn a share session");
                        record(
                            &state.ctx.audit,
                            AuditEvent::new(AuditKind::ShareFailed, id)
                                .principal(req.principal())
                                .terminal(&req.terminal)
                                .backend(&req.backend)
                                .detail("cause", format!("session did not start: {e}")),
                        );
                    }
                }
            }
            RootMsg::Extend {
                share_id,
                by,
                caller,
                reply,
            } => {
                let Some(entry) = state.shares.get(&share_id) else {
                    let _ = reply.send(Err(state.gone(share_id)));
                    return Ok(());
                };
                if let Err(err) = state.authorize(&entry.info, &caller) {
                    state.refused(&entry.info, "extend", &caller, &err);
                    let _ = reply.send(Err(err));
                    return Ok(());
                }
                if let Some(why) = state.audit_health.refusal() {
                    let _ = reply.send(Err(ShareError::AuditUnavailable(why)));
                    return Ok(());
                }
                // The rule that allows the share now bounds the extension (counted from
                // the share's start, by the session).
                let max_ttl = match state.policy.evaluate(&PolicyQuery {
                    principal: &entry.info.principal,
                    terminal: &entry.info.terminal,
                    backend: &entry.info.backend,
                    access: entry.info.access,
                }) {
                    PolicyDecision::Allow(grant) => grant.max_ttl,
                    PolicyDecision::Deny { rule_id, reason } => {
                        let err = ShareError::Denied { rule_id, reason };
                        state.refused(&entry.info, "extend", &caller, &err);
                        let _ = reply.send(Err(err));
                        return Ok(());
                    }
                };
                let ended = entry.ended.clone();
                if let Err(ractor::MessagingErr::SendErr(SessionMsg::Extend { reply, .. })) =
                    entry.session.cast(SessionMsg::Extend {
                        by,
                        max_ttl,
                        caller,
                        reply,
                    })
                {
                    let _ = reply.send(Err(ended_error(share_id, ended.get())));
                }
            }
            RootMsg::Revoke {
                share_id,
                caller,
                reply,
                requested_at,
            } => {
                let Some(entry) = state.shares.get(&share_id) else {
                    let _ = reply.send(Err(state.gone(share_id)));
                    return Ok(());
                };
                if let Err(err) = state.authorize(&entry.info, &caller) {
                    state.refused(&entry.info, "revoke", &caller, &err);
                    let _ = reply.send(Err(err));
                    return Ok(());
                }
                let ended = entry.ended.clone();
                if let Err(ractor::MessagingErr::SendErr(SessionMsg::End {
                    reply: Some(reply),
                    ..
                })) = entry.session.cast(SessionMsg::End {
                    reason: EndReason::Revoked,
                    by: Some(caller),
                    reply: Some(reply),
                    requested_at,
                }) {
                    let _ = reply.send(Err(ended_error(share_id, ended.get())));
                }
            }
            RootMsg::Switch {
                share_id,
                backend,
                caller,
                reply,
            } => {
                let Some(entry) = state.shares.get(&share_id) else {
                    let _ = reply.send(Err(state.gone(share_id)));
                    return Ok(());
                };
                let info = &entry.info;
                // The new backend passes the same gate as a new share would, for the
                // share as it is: its owner, access, and the life it already has.
                let total_ttl = info
                    .expires_at
                    .duration_since(info.started_at)
                    .unwrap_or_default();
                let admitted = state.authorize(info, &caller).and_then(|()| {
                    state
                        .admit(&AdmissionQuery {
                            principal: &info.principal,
                            terminal: &info.terminal,
                            backend: &backend,
                            access: info.access,
                            total_ttl,
                            moving: Some(share_id),
                        })
                        .map_err(|(err, _)| err)
                });
                let Admitted { grant, backend } = match admitted {
                    Ok(a) => a,
                    Err(err) => {
                        state.refused(info, "switch", &caller, &err);
                        let _ = reply.send(Err(err));
                        return Ok(());
                    }
                };
                let ended = entry.ended.clone();
                if let Err(ractor::MessagingErr::SendErr(SessionMsg::Switch { reply, .. })) =
                    entry.session.cast(SessionMsg::Switch {
                        backend,
                        rule_id: grant.rule_id,
                        max_ttl: grant.max_ttl,
                        caller,
                        reply,
                    })
                {
                    let _ = reply.send(Err(ended_error(share_id, ended.get())));
                }
            }
            RootMsg::List(reply) => {
                let mut list: Vec<ShareInfo> =
                    state.shares.values().map(|e| e.info.clone()).collect();
                list.sort_by_key(|i| i.share_id);
                let _ = reply.send(Ok(list));
            }
            RootMsg::Updated(info) => {
                if let Some(entry) = state.shares.get_mut(&info.share_id) {
                    let terminal = info.terminal.clone();
                    entry.info = info;
                    state.publish_badge(&terminal);
                }
            }
            RootMsg::HandoffBadge(view) => {
                let terminal = view.terminal.clone();
                state
                    .handoffs
                    .insert(terminal.clone(), crate::badge::BadgeHandoff::from(&view));
                state.publish_badge(&terminal);
            }
            RootMsg::Ended { share_id, reason } => {
                state.remember_end(share_id, reason);
            }
            RootMsg::Shutdown(reply) => {
                state.shutting_down = true;
                let deadline = state.ctx.settings.revoke_deadline + Duration::from_secs(1);
                let requested_at = Instant::now();
                let mut set = JoinSet::new();
                for entry in state.shares.values() {
                    let session = entry.session.clone();
                    set.spawn(async move {
                        let result = session
                            .call(
                                |tx| SessionMsg::End {
                                    reason: EndReason::Stopped,
                                    by: None,
                                    reply: Some(tx),
                                    requested_at,
                                },
                                Some(deadline),
                            )
                            .await;
                        match result {
                            Ok(ractor::rpc::CallResult::Success(Ok(report))) => Some(report),
                            Ok(ractor::rpc::CallResult::Success(Err(
                                ShareError::RevokeDeadlineMissed(report),
                            ))) => Some(*report),
                            _ => {
                                // It did not answer in time: kill it; the kill reaches
                                // its worker, whose Drop guard kills the process group.
                                session.kill();
                                None
                            }
                        }
                    });
                }
                let mut reports = Vec::new();
                while let Some(done) = set.join_next().await {
                    if let Ok(Some(report)) = done {
                        reports.push(report);
                    }
                }
                let _ = reply.send(reports);
                myself.stop(Some("shutdown".into()));
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // The default would stop the root when any share ends: handle it here instead.
        let (cell, cause) = match event {
            SupervisionEvent::ActorFailed(cell, err) => (cell, format!("session crashed: {err}")),
            SupervisionEvent::ActorTerminated(cell, _, reason) => (
                cell,
                format!(
                    "session ended without reporting ({})",
                    reason.unwrap_or_else(|| "no reason".into())
                ),
            ),
            _ => return Ok(()),
        };
        let found = state
            .by_actor
            .get(&cell.get_id())
            .and_then(|id| state.shares.get(id).map(|e| (*id, e)))
            .map(|(id, e)| (id, e.info.clone(), e.ended.get().is_some()));
        if let Some((id, info, reported)) = found {
            if reported {
                // Normal end; `Ended` may still be in the mailbox. Nothing to audit.
                return Ok(());
            }
            // A session that died without ending its share: the supervision tree has
            // already killed its children (and so its worker's process group).
            tracing::error!(share = %id, %cause, "share session failed");
            record(
                &state.ctx.audit,
                AuditEvent::new(AuditKind::ShareFailed, id)
                    .principal(&info.principal)
                    .terminal(&info.terminal)
                    .backend(&info.backend)
                    .detail("cause", cause.clone()),
            );
            state.remember_end(id, EndReason::Failed(cause));
        }
        Ok(())
    }
}

fn ended_error(id: ShareId, reason: Option<&EndReason>) -> ShareError {
    match reason {
        Some(EndReason::Expired) => ShareError::ShareExpired(id),
        Some(reason) => ShareError::ShareEnded(id, reason.clone()),
        None => ShareError::ShareEnding(id),
    }
}
