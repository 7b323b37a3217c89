//! After the last approval: capture the context, start the receiver's share, and
//! record the outcome (completed, or failed with its cause).

use super::*;

impl ManagerState {
    /// The completion task's outcome: on the record first, then the state. A failure
    /// (or a completion the log cannot take) ends the handoff as `failed`, stops the
    /// receiver's share if one was started, and answers with the cause.
    pub(super) async fn completed(
        &mut self,
        id: HandoffId,
        outcome: Result<HandoffPackage, ShareError>,
    ) {
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
    pub(super) async fn fail(&mut self, id: HandoffId, cause: ShareError) -> ShareError {
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
    pub(super) fn stop_receiver_share(&self, id: HandoffId, share: Option<ShareId>) {
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
pub(super) async fn complete(
    view: HandoffView,
    grant: HandoffGrant,
    backend: Option<BackendName>,
    ttl: Option<Duration>,
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
                ttl,
                grace: None,
                join: Default::default(),
                record: false,
            };
            let start_deadline = tokio::time::Instant::now() + share_timeout;
            let terminal = crate::root::TerminalCheck::start(host.clone(), view.terminal.clone());
            let started = match root
                .call(
                    |reply| RootMsg::Share {
                        request,
                        start_deadline,
                        terminal,
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
