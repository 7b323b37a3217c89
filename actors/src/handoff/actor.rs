//! The HandoffManager actor: one message at a time, so an approval and a timeout of
//! the same step cannot both win.

use super::*;

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
