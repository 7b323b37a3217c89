//! Requests, approvals and denials: each step on the record before the state moves.

use super::*;

/// A reason as typed, if it is short enough to keep.
pub(super) fn check_reason(reason: &str) -> Result<(), ShareError> {
    if reason.len() > MAX_REASON {
        let why = format!("at most {MAX_REASON} bytes (got {})", reason.len());
        return Err(crate::error::InvalidInput::new("reason", reason, &why).into());
    }
    Ok(())
}

/// The root's view of a terminal's live shares, for the package and the audit.
pub(super) async fn live_shares(root: &ActorRef<RootMsg>) -> Vec<ShareInfo> {
    match root.call(RootMsg::List, Some(Duration::from_secs(2))).await {
        Ok(ractor::rpc::CallResult::Success(Ok(list))) => list,
        _ => Vec::new(),
    }
}

impl ManagerState {
    /// Record what has happened (a denial, a timeout): written however late.
    pub(super) async fn audit(&self, event: AuditEvent) -> Result<(), ShareError> {
        record_acked(&self.args.audit, event, self.args.audit_timeout)
            .await
            .map_err(ShareError::AuditUnavailable)
    }

    /// Record what happens only if it is on the record (a request, an approval, a
    /// completion): withdrawn if the log does not take it in time, so a step reported
    /// as not done never shows up later.
    pub(super) async fn audit_first(&self, event: AuditEvent) -> Result<(), ShareError> {
        crate::audit::send(&self.args.audit, event)
            .wait(self.args.audit_timeout)
            .await
            .map_err(ShareError::AuditUnavailable)
    }

    /// Put a refused approval or denial on the record (the handoff is unchanged).
    pub(super) fn refused(&self, h: &Handoff, action: &str, by: &Caller, err: &ShareError) {
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
    pub(super) fn retire(&mut self, id: HandoffId) {
        self.ended.push_back(id);
        while self.ended.len() > ENDED_KEPT {
            if let Some(old) = self.ended.pop_front() {
                self.handoffs.remove(&old);
            }
        }
    }

    /// A TTL for the receiver's share is checked at the request, so the chain is not
    /// walked for a share that could never start: it needs a backend, must be within
    /// termshare's bounds, and within the `max_ttl` the policy gives the receiver
    /// (checked again, with the then policy, when the share starts).
    fn check_receiver_ttl(&self, req: &HandoffRequest) -> Result<(), ShareError> {
        let Some(ttl) = req.ttl else {
            return Ok(());
        };
        let invalid =
            |why: &str| ShareError::from(crate::error::InvalidInput::new("ttl", &human(ttl), why));
        let Some(backend) = &req.backend else {
            return Err(invalid("is for the receiver's share: name its backend too"));
        };
        if ttl.is_zero() || ttl > crate::settings::MAX_DURATION {
            return Err(invalid("must be positive and at most a year"));
        }
        let decision = self.args.policy.evaluate(&PolicyQuery {
            principal: &req.to,
            terminal: &req.terminal,
            backend,
            access: AccessMode::ReadOnly,
        });
        if let PolicyDecision::Allow(grant) = decision {
            if let Some(max) = grant.max_ttl.filter(|max| ttl > *max) {
                return Err(ShareError::TtlAboveMax {
                    requested: human(ttl),
                    max: human(max),
                    rule_id: grant.rule_id,
                });
            }
        }
        Ok(())
    }

    /// Why no new handoff may be asked for now, if so.
    pub(super) fn refuse_new(&self, requester: &Identity) -> Result<(), ShareError> {
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

    pub(super) fn publish(&self, h: &Handoff) {
        self.args.board.set_handoff(&h.view);
    }

    pub(super) fn arm_step(&mut self, myself: &ActorRef<HandoffMsg>, id: HandoffId) {
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

    pub(super) fn get(&self, id: HandoffId) -> Result<&Handoff, ShareError> {
        self.handoffs
            .get(&id)
            .ok_or(ShareError::HandoffNotFound(id))
    }

    /// Only a pending handoff takes approvals and denials.
    pub(super) fn pending(&mut self, id: HandoffId) -> Result<&mut Handoff, ShareError> {
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

    pub(super) async fn request(
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
        self.check_receiver_ttl(&req)?;
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
            ttl: req.ttl,
            live_share,
            requester: req.from.identity.clone(),
            approver_keys: Vec::new(),
            completed_by: None,
            timer: None,
            completing_reply: None,
            receiver: None,
        };
        let mut event = h
            .event(AuditKind::HandoffRequested)
            .principal(&h.view.from)
            .asked_by(&req.from)
            .detail("reason", h.view.reason.as_str())
            .detail("rule_id", h.view.rule_id.as_str())
            .detail("approvers", json!(h.view.approvers));
        if let Some(ttl) = h.ttl {
            event = event.detail("receiver_ttl", human(ttl));
        }
        self.audit_first(event).await?;
        let view = h.view.clone();
        self.publish(&h);
        self.handoffs.insert(id, h);
        self.arm_step(myself, id);
        Ok(view)
    }

    pub(super) async fn approve(
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
                    h.ttl,
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

    pub(super) async fn refuse(
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
}
