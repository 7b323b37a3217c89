//! The root supervisor actor: it reads one request at a time, and supervises the
//! share sessions (a session that dies without ending its share fails it).

use super::*;

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
            board: args.board,
            ended: HashMap::new(),
            ended_order: VecDeque::new(),
            end_waiters: HashMap::new(),
            shutting_down: false,
            bursts: Default::default(),
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
                request,
                start_deadline,
                terminal,
                reply,
            } => {
                state
                    .share(&myself, request, start_deadline, terminal, reply)
                    .await
            }
            RootMsg::Extend {
                share_id,
                by,
                caller,
                reply,
            } => state.extend(share_id, by, caller, reply),
            RootMsg::Revoke {
                share_id,
                caller,
                reply,
                requested_at,
            } => state.revoke(share_id, caller, reply, requested_at),
            RootMsg::Rotate {
                share_id,
                caller,
                reply,
            } => state.rotate(share_id, caller, reply),
            RootMsg::Switch {
                share_id,
                backend,
                caller,
                reply,
            } => state.switch(share_id, backend, caller, reply),
            RootMsg::List(reply) => {
                let mut list: Vec<ShareInfo> = state
                    .shares
                    .values()
                    .filter(|e| e.shown)
                    .map(|e| e.info.clone())
                    .collect();
                list.sort_by_key(|i| i.share_id);
                let _ = reply.send(Ok(list));
            }
            RootMsg::Updated(info) => {
                if let Some(entry) = state.shares.get_mut(&info.share_id) {
                    let terminal = info.terminal.clone();
                    entry.info = info;
                    entry.shown = true;
                    state.publish_badge(&terminal);
                }
            }
            RootMsg::WhenEnded(share_id, reply) => {
                let _ = reply.send(state.when_ended(share_id));
            }
            RootMsg::Ended {
                share_id,
                reason,
                report,
            } => {
                state.remember_end(
                    share_id,
                    ShareEnd {
                        reason,
                        report: Some(report),
                    },
                );
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
            state.remember_end(
                id,
                ShareEnd {
                    reason: EndReason::Failed(cause),
                    report: None,
                },
            );
        }
        Ok(())
    }
}
