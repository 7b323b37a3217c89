//! One handoff's record: its audit events, who may see it and approve its steps.

use super::*;

impl Handoff {
    pub(super) fn event(&self, kind: AuditKind) -> AuditEvent {
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
    pub(super) fn visible_to(&self, caller: &Caller) -> bool {
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
    pub(super) fn view_for(&self, caller: &Caller) -> HandoffView {
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
    pub(super) fn refuse_approver(&self, by: &Caller, step: usize) -> Option<ShareError> {
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

    pub(super) fn cancel_timer(&mut self) {
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

pub(super) fn describe_end(view: &HandoffView) -> String {
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
