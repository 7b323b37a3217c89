//! The root's tables: live shares by id, by terminal and by session actor, ended
//! shares (bounded), and the badge board they feed.

use super::*;

impl RootState {
    /// Republish one terminal's badge (after a share of it started, changed or ended).
    pub(super) fn publish_badge(&self, terminal: &TerminalName) {
        let shares: Vec<BadgeShare> = self
            .per_terminal
            .get(terminal)
            .into_iter()
            .flatten()
            .filter_map(|id| self.shares.get(id))
            .filter(|e| e.shown)
            .map(|e| BadgeShare::from(&e.info))
            .collect();
        self.board.set_shares(terminal, shares);
    }

    /// A receiver that hears `id`'s end reason: at once if it has ended, else when it
    /// does.
    pub(super) fn when_ended(
        &mut self,
        id: ShareId,
    ) -> Result<tokio::sync::oneshot::Receiver<ShareEnd>, ShareError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if let Some(end) = self.ended.get(&id) {
            let _ = tx.send(end.clone());
            return Ok(rx);
        }
        if !self.shares.contains_key(&id) {
            return Err(ShareError::NotFound(id));
        }
        let waiters = self.end_waiters.entry(id).or_default();
        waiters.retain(|w| !w.is_closed());
        if waiters.len() >= MAX_END_WAITERS {
            return Err(ShareError::ServiceFull {
                what: "waiters for this share's end",
                limit: MAX_END_WAITERS,
            });
        }
        waiters.push(tx);
        Ok(rx)
    }

    pub(super) fn remember_end(&mut self, id: ShareId, end: ShareEnd) {
        for waiter in self.end_waiters.remove(&id).into_iter().flatten() {
            let _ = waiter.send(end.clone());
        }
        if let Some(entry) = self.shares.remove(&id) {
            self.by_actor.remove(&entry.session.get_id());
            let terminal = entry.info.terminal;
            if let Some(set) = self.per_terminal.get_mut(&terminal) {
                set.remove(&id);
                if set.is_empty() {
                    self.per_terminal.remove(&terminal);
                }
            }
            if entry.shown {
                self.publish_badge(&terminal);
            }
            if self.bursts.ended_burst(self.shares.len()) {
                crate::memory::give_back_soon();
            }
        }
        if self.ended.insert(id, end).is_none() {
            self.ended_order.push_back(id);
            if self.ended_order.len() > ENDED_MEMORY {
                if let Some(old) = self.ended_order.pop_front() {
                    self.ended.remove(&old);
                }
            }
        }
    }

    /// The error for an operation on a share that is not live.
    pub(super) fn gone(&self, id: ShareId) -> ShareError {
        match self.ended.get(&id).map(|e| &e.reason) {
            Some(reason) => ShareError::ShareEnded(id, reason.clone()),
            None => ShareError::NotFound(id),
        }
    }

    pub(super) fn denied_event(
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
}

pub(super) fn ended_error(id: ShareId, reason: Option<&EndReason>) -> ShareError {
    match reason {
        Some(reason) => ShareError::ShareEnded(id, reason.clone()),
        None => ShareError::ShareEnding(id),
    }
}
