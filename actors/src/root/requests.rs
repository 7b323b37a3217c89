//! The requests the root answers itself or hands to a share's session: a new share,
//! an extension, a revoke, a switch.

use super::*;

impl RootState {
    /// A new share: admission, then a session registered before the next request is
    /// read (so racing requests see it).
    pub(super) async fn share(
        &mut self,
        myself: &ActorRef<RootMsg>,
        req: ShareRequest,
        start_deadline: Instant,
        terminal: TerminalCheck,
        reply: ShareReply,
    ) {
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
        let ttl = req.ttl.unwrap_or(self.ctx.settings.default_ttl);
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
                self.admit(&AdmissionQuery {
                    principal: req.principal(),
                    terminal: &req.terminal,
                    backend: &req.backend,
                    access: req.access,
                    total_ttl: ttl,
                    moving: None,
                    join: req.join,
                })
            });
        let Admitted {
            grant,
            backend,
            join,
        } = match admitted {
            Ok(admitted) => admitted,
            Err((err @ ShareError::AuditUnavailable(_), _)) => {
                // Nothing to put on a record that cannot keep up.
                metrics::counter!("termshare_shares_denied_total").increment(1);
                let _ = reply.send(Err(err));
                return;
            }
            Err((err, rule_id)) => {
                metrics::counter!("termshare_shares_denied_total").increment(1);
                // Audit and answer off the root's mailbox: a slow disk must
                // not hold up revokes queued behind this request.
                let denied = self.denied_event(&req, id, &err, rule_id.as_deref());
                let audit = self.ctx.audit.clone();
                let timeout = self.ctx.settings.audit_timeout;
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
                return;
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
            worker_pid: None,
        };
        // What admission allowed, before the config's default: a switch is checked
        // against it (a default is not something the share asked for).
        let admitted_join = join;
        let recorded = req.record || grant.record;
        let mut join = join;
        if join.timeout.is_none() && backend.counts_participants() {
            join.timeout = self.ctx.settings.default_join_timeout.filter(|t| *t < ttl);
        }
        let ended = Arc::new(OnceLock::new());
        let args = SessionArgs {
            info: info.clone(),
            ttl,
            max_ttl: grant.max_ttl,
            grace: req
                .grace
                .clone()
                .unwrap_or_else(|| self.ctx.settings.grace.clone()),
            backend,
            ctx: self.ctx.clone(),
            reply,
            ended: ended.clone(),
            requested,
            caller: req.caller.clone(),
            start_deadline,
            terminal,
            join,
            // A rule that requires recording records the share, asked or not.
            record: recorded,
        };
        // Registered in this same handler, before the next request is read, so
        // racing requests see it.
        match Actor::spawn_linked(None, ShareSession, args, myself.get_cell()).await {
            Ok((session, _)) => {
                self.by_actor.insert(session.get_id(), id);
                self.per_terminal
                    .entry(req.terminal.clone())
                    .or_default()
                    .insert(id);
                self.shares.insert(
                    id,
                    Entry {
                        session,
                        info,
                        ended,
                        join: admitted_join,
                        record: recorded,
                        // Shown once its session knows the terminal is there.
                        shown: false,
                    },
                );
            }
            Err(e) => {
                // The reply port went down with the failed spawn: the caller
                // sees the session gone.
                tracing::error!(error = %e, "could not spawn a share session");
                record(
                    &self.ctx.audit,
                    AuditEvent::new(AuditKind::ShareFailed, id)
                        .principal(req.principal())
                        .terminal(&req.terminal)
                        .backend(&req.backend)
                        .detail("cause", format!("session did not start: {e}")),
                );
            }
        }
    }

    /// An extension: authorized here, bounded by the rule that allows the share now,
    /// carried out by its session.
    pub(super) fn extend(
        &mut self,
        share_id: ShareId,
        by: Duration,
        caller: Caller,
        reply: ShareReply,
    ) {
        let Some(entry) = self.shares.get(&share_id) else {
            let _ = reply.send(Err(self.gone(share_id)));
            return;
        };
        if let Err(err) = self.authorize(&entry.info, &caller) {
            self.refused(&entry.info, "extend", &caller, &err);
            let _ = reply.send(Err(err));
            return;
        }
        if let Some(why) = self.audit_health.refusal() {
            let _ = reply.send(Err(ShareError::AuditUnavailable(why)));
            return;
        }
        // The rule that allows the share now bounds the extension (counted from
        // the share's start, by the session).
        let max_ttl = match self.policy.evaluate(&PolicyQuery {
            principal: &entry.info.principal,
            terminal: &entry.info.terminal,
            backend: &entry.info.backend,
            access: entry.info.access,
        }) {
            PolicyDecision::Allow(grant) => grant.max_ttl,
            PolicyDecision::Deny { rule_id, reason } => {
                let err = ShareError::Denied { rule_id, reason };
                self.refused(&entry.info, "extend", &caller, &err);
                let _ = reply.send(Err(err));
                return;
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

    /// A rotation: authorized here (the owner or the operator), carried out by the
    /// share's session and its worker.
    pub(super) fn rotate(&mut self, share_id: ShareId, caller: Caller, reply: ShareReply) {
        let Some(entry) = self.shares.get(&share_id) else {
            let _ = reply.send(Err(self.gone(share_id)));
            return;
        };
        if let Err(err) = self.authorize(&entry.info, &caller) {
            self.refused(&entry.info, "rotate", &caller, &err);
            let _ = reply.send(Err(err));
            return;
        }
        let ended = entry.ended.clone();
        if let Err(ractor::MessagingErr::SendErr(SessionMsg::Rotate { reply, .. })) =
            entry.session.cast(SessionMsg::Rotate { caller, reply })
        {
            let _ = reply.send(Err(ended_error(share_id, ended.get())));
        }
    }

    /// A revoke: authorized here, carried out by the share's session within the
    /// deadline counted from `requested_at`.
    pub(super) fn revoke(
        &mut self,
        share_id: ShareId,
        caller: Caller,
        reply: EndReply,
        requested_at: Instant,
    ) {
        let Some(entry) = self.shares.get(&share_id) else {
            let _ = reply.send(Err(self.gone(share_id)));
            return;
        };
        if let Err(err) = self.authorize(&entry.info, &caller) {
            self.refused(&entry.info, "revoke", &caller, &err);
            let _ = reply.send(Err(err));
            return;
        }
        let ended = entry.ended.clone();
        if let Err(ractor::MessagingErr::SendErr(SessionMsg::End {
            reply: Some(reply), ..
        })) = entry.session.cast(SessionMsg::End {
            reason: EndReason::Revoked,
            by: Some(caller),
            reply: Some(reply),
            requested_at,
        }) {
            let _ = reply.send(Err(ended_error(share_id, ended.get())));
        }
    }

    /// A switch: the new backend passes admission as a new share would; the session
    /// moves the share make-before-break.
    pub(super) fn switch(
        &mut self,
        share_id: ShareId,
        backend: BackendName,
        caller: Caller,
        reply: ShareReply,
    ) {
        let Some(entry) = self.shares.get(&share_id) else {
            let _ = reply.send(Err(self.gone(share_id)));
            return;
        };
        let info = &entry.info;
        // The new backend passes the same gate as a new share would, for the
        // share as it is: its owner, access, and the life it already has.
        let total_ttl = info
            .expires_at
            .duration_since(info.started_at)
            .unwrap_or_default();
        let admitted = self.authorize(info, &caller).and_then(|()| {
            self.admit(&AdmissionQuery {
                principal: &info.principal,
                terminal: &info.terminal,
                backend: &backend,
                access: info.access,
                total_ttl,
                moving: Some(share_id),
                join: entry.join,
            })
            .map_err(|(err, _)| err)
        });
        // The new backend's rule may ask for more than the share has (recording, join
        // rules): a running share cannot take those on, so the switch is refused.
        let admitted = admitted.and_then(|a| {
            if a.grant.record && !entry.record {
                return Err(ShareError::Denied {
                    rule_id: Some(a.grant.rule_id.clone()),
                    reason: format!(
                        "rule `{}` requires recording, which this share does not have; \
                         start a new share",
                        a.grant.rule_id
                    ),
                });
            }
            if a.join != entry.join {
                return Err(ShareError::Denied {
                    rule_id: Some(a.grant.rule_id.clone()),
                    reason: format!(
                        "rule `{}` sets join rules this share does not have; start a new share",
                        a.grant.rule_id
                    ),
                });
            }
            Ok(a)
        });
        let Admitted { grant, backend, .. } = match admitted {
            Ok(a) => a,
            Err(err) => {
                self.refused(info, "switch", &caller, &err);
                let _ = reply.send(Err(err));
                return;
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
}
