//! The ShareSession actor: every change to the share is one of its messages, handled
//! one at a time; slow work runs in tasks that post their outcome back.

use super::*;

impl Actor for ShareSession {
    type Msg = SessionMsg;
    type State = SessionState;
    type Arguments = SessionArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: SessionArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let now = Instant::now();
        let mut state = SessionState {
            myself: myself.clone(),
            deadline: now + args.ttl,
            started: now,
            info: args.info,
            ctx: args.ctx,
            backend: args.backend,
            phase: Phase::Preparing {
                reply: Some(args.reply),
            },
            max_ttl: args.max_ttl,
            grace: args.grace,
            ttl_generation: 0,
            ttl: None,
            worker: None,
            worker_generation: 0,
            generations: 0,
            worker_ready: false,
            worker_pid: None,
            worker_tells_participants: false,
            joined: Default::default(),
            join: args.join,
            ever_joined: false,
            end_cause: None,
            record: args.record,
            recording: None,
            ended: args.ended,
            requested: Some(args.requested),
            requested_by: args.caller,
            start_deadline: args.start_deadline,
            terminal_check: Some(args.terminal),
            size: None,
            gate: Default::default(),
            tasks: Vec::new(),
            extensions: extend::Extensions::default(),
            switch_reply: None,
            rotation: None,
            counted_active: None,
        };
        state.info.expires_at = SystemTime::now() + args.ttl;
        let (ttl, _) =
            Actor::spawn_linked(None, TtlTimer, myself.clone(), myself.get_cell()).await?;
        state.ttl = Some(ttl);
        state.arm_ttl();
        myself.cast(SessionMsg::Begin)?;
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(stall) = crate::faultpoints::check("session.stall") {
            // The chaos harness's busy session: every message waits this long.
            let ms = stall.and_then(|a| a.parse().ok()).unwrap_or(1000);
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        crate::faultpoints::check("session.handle");
        match msg {
            SessionMsg::Begin => state.begin(&myself).await,
            SessionMsg::RequestKept(result) => state.request_kept(&myself, result).await,
            SessionMsg::TerminalChecked(result) => state.terminal_checked(&myself, result).await,
            SessionMsg::StartDeadline => state.start_deadline_passed(&myself).await,
            SessionMsg::Rotate { caller, reply } => state.rotate(caller, reply),
            SessionMsg::RotateAnswered { result, reply } => state.rotate_answered(result, reply),
            SessionMsg::JoinTimeout => {
                if !state.ever_joined && matches!(state.phase, Phase::Active | Phase::Switching(_))
                {
                    state.end_cause = Some("join_timeout");
                    state.end_now(&myself, EndReason::Expired).await;
                }
            }
            SessionMsg::RecordingFailed(why) => {
                if !matches!(state.phase, Phase::Ended) {
                    let cause = format!("the recording stopped: {why}");
                    state.end_now(&myself, EndReason::Failed(cause)).await;
                }
            }
            SessionMsg::Announced { generation, result } => {
                state.announced(&myself, generation, result).await
            }
            SessionMsg::Worker {
                generation,
                event: WorkerEvent::Rotated(links),
            } => state.rotated(generation, links),
            SessionMsg::Worker { generation, event } => {
                if state.switch_event(&myself, generation, &event).await {
                    return Ok(());
                }
                if generation != state.worker_generation || matches!(state.phase, Phase::Ended) {
                    return Ok(()); // from a worker replaced by a switch, or after the end
                }
                match event {
                    WorkerEvent::Ready {
                        links,
                        pid,
                        tells_participants,
                        counts_participants,
                    } => {
                        state.worker_ready = true;
                        state.worker_pid = pid;
                        state.info.worker_pid = pid;
                        state.worker_tells_participants = tells_participants;
                        state.counting_participants(counts_participants);
                        state.ready(&myself, links).await;
                    }
                    WorkerEvent::StartFailed(e) => {
                        state.worker = None;
                        state.fail_start(&myself, ShareError::Backend(e)).await;
                    }
                    WorkerEvent::Hung { silent, detail } => {
                        metrics::counter!("termshare_worker_crashes_total").increment(1);
                        let cause = format!(
                            "heartbeat timeout: {detail}, for {}",
                            human(Duration::from_millis(silent.as_millis() as u64))
                        );
                        state.end_now(&myself, EndReason::Failed(cause)).await;
                    }
                    WorkerEvent::NeverServed(why) => {
                        metrics::counter!("termshare_worker_crashes_total").increment(1);
                        let cause = format!("the worker never served its link: {why}");
                        state.end_now(&myself, EndReason::Failed(cause)).await;
                    }
                    WorkerEvent::Exited(status) => state.worker_exited(&myself, status),
                    WorkerEvent::Relinked(links) => state.relinked(links),
                    WorkerEvent::Rotated(links) => state.rotated(generation, links),
                    WorkerEvent::Participant(e) => state.participant(e),
                }
            }
            SessionMsg::WorkerGone {
                generation,
                status,
                terminal_closed,
            } => {
                let starting = matches!(
                    state.phase,
                    Phase::Preparing { .. } | Phase::Starting { .. }
                );
                if generation == state.worker_generation && starting && terminal_closed {
                    // Its attach client found no terminal (one that closed since its
                    // size was seen): the start fails as one of an unknown terminal.
                    let err = ShareError::UnknownTerminal {
                        terminal: state.info.terminal.clone(),
                        detail: "it is not there: the worker's attach client exited".into(),
                    };
                    state.fail_start(&myself, err).await;
                } else if generation == state.worker_generation
                    && !matches!(state.phase, Phase::Ended)
                {
                    let reason = if terminal_closed {
                        EndReason::TerminalClosed
                    } else {
                        EndReason::Failed(format!("worker {}", status.description))
                    };
                    state.end_now(&myself, reason).await;
                }
            }
            SessionMsg::Ttl(TtlEvent::Expired { generation }) => {
                state.expired(&myself, generation).await
            }
            SessionMsg::Ttl(TtlEvent::Grace {
                remaining,
                generation,
            }) => state.grace(&myself, remaining, generation),
            SessionMsg::GraceNoticed {
                generation,
                remaining,
                notified,
            } => {
                // A share that ended meanwhile was not warned: its end is the record.
                if generation == state.ttl_generation && !matches!(state.phase, Phase::Ended) {
                    // Shown on the terminal is one thing; seen by a participant only
                    // when one was there (unknown where the backend cannot tell).
                    let seen = match state.info.participants {
                        Some(n) => serde_json::json!(notified && n > 0),
                        None => serde_json::Value::Null,
                    };
                    record(
                        &state.ctx.audit,
                        state
                            .event(AuditKind::ShareGraceWarning)
                            .detail("remaining_ms", remaining.as_millis() as u64)
                            .detail("notice_shown", notified)
                            .detail("participants_notified", seen),
                    );
                }
            }
            SessionMsg::Extend {
                by,
                max_ttl,
                caller,
                reply,
            } => state.extend(&myself, by, max_ttl, caller, reply),
            SessionMsg::ExtendRecorded(result) => state.extend_recorded(&myself, result).await,
            SessionMsg::End {
                reason,
                by,
                reply,
                requested_at,
            } => state.end(&myself, reason, by, reply, requested_at).await,
            SessionMsg::Switch {
                backend,
                rule_id,
                max_ttl,
                caller,
                reply,
            } => state.switch(
                &myself,
                backend,
                rule_id,
                max_ttl,
                caller,
                reply,
                super::switch::Purpose::Switch,
            ),
            SessionMsg::SwitchChecked(result) => state.switch_checked(&myself, result).await,
            SessionMsg::OldStopped { outcome, in_time } => {
                state.old_stopped(&myself, outcome, in_time)
            }
            SessionMsg::TaskPanicked(e) => {
                return Err(format!("a task of the session panicked: {e}").into());
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // Never let a child's end stop the session by default: decide here.
        if let SupervisionEvent::ActorFailed(cell, err) = event {
            if state.switch_child_failed(&myself, &cell, &err).await {
                return Ok(());
            }
            let is_worker = state
                .worker
                .as_ref()
                .is_some_and(|w| w.get_id() == cell.get_id());
            let is_ttl = state
                .ttl
                .as_ref()
                .is_some_and(|t| t.get_id() == cell.get_id());
            if is_worker {
                state.worker = None; // its state, and so its process guard, is gone
                metrics::counter!("termshare_worker_crashes_total").increment(1);
                let cause = format!("worker crashed: {err}");
                state.end_now(&myself, EndReason::Failed(cause)).await;
            } else if is_ttl {
                // Without a timer the TTL cannot be enforced: fail closed.
                state.ttl = None;
                let cause = format!("ttl timer crashed: {err}");
                state.end_now(&myself, EndReason::Failed(cause)).await;
            }
        }
        Ok(())
    }
}
