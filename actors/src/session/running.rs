//! A live share's own events: its TTL armed and re-armed, grace notices, new links,
//! its worker's exit.

use super::*;

impl SessionState {
    pub(super) fn arm_ttl(&mut self) {
        self.ttl_generation += 1;
        if let Some(ttl) = &self.ttl {
            let _ = ttl.cast(TtlMsg::Arm {
                deadline: self.deadline,
                thresholds: self.grace.clone(),
                generation: self.ttl_generation,
            });
        }
    }

    /// The worker's backend handed out new links while it ran: the share answers with
    /// them from now on, and the record says so (by fingerprint).
    pub(super) fn relinked(&mut self, links: crate::types::Links) {
        if links == self.info.links {
            return;
        }
        let fingerprints = &self.ctx.fingerprints;
        let mut event = AuditEvent::new(AuditKind::ShareRelinked, self.info.share_id)
            .principal(&self.info.principal)
            .terminal(&self.info.terminal)
            .backend(&self.info.backend)
            .detail(
                "old_link_fp",
                fingerprints.fingerprint(&self.info.links.link),
            )
            .detail("link_fp", fingerprints.fingerprint(&links.link));
        if let Some(ro) = &links.read_only_link {
            event = event.detail("read_only_link_fp", fingerprints.fingerprint(ro));
        }
        crate::audit::record(&self.ctx.audit, event);
        self.info.links = links;
        self.publish();
    }

    /// Ask the worker for a new link, off the mailbox. One rotation at a time.
    pub(super) fn rotate(&mut self, caller: Caller, reply: ShareReply) {
        let (Phase::Active, Some(worker)) = (&self.phase, self.worker.clone()) else {
            let err = ShareError::ShareEnding(self.id());
            let _ = reply.send(Err(err));
            return;
        };
        if !self.backend.rotates_in_place() {
            // A new session on the same backend, make before break: the old worker,
            // and everyone on it, goes once the new link is there.
            let purpose = super::switch::Purpose::Rotate {
                on_old_link: self.joined.len(),
            };
            let (me, backend) = (self.myself.clone(), self.backend.clone());
            let (rule_id, max_ttl) = (self.info.rule_id.clone(), self.max_ttl);
            self.switch(&me, backend, rule_id, max_ttl, caller, reply, purpose);
            return;
        }
        if self.rotation.is_some() {
            let err = crate::error::InvalidInput::new(
                "rotation",
                &self.id().to_string(),
                "the share is already getting a new link; ask again once it has it",
            );
            let _ = reply.send(Err(err.into()));
            return;
        }
        self.rotation = Some(super::PendingRotation {
            caller,
            generation: self.worker_generation,
            on_old_link: self.joined.len(),
        });
        let me = self.myself.clone();
        let within = self.ctx.settings.revoke_deadline;
        self.run(async move {
            let result = match worker.call(WorkerMsg::Rotate, Some(within)).await {
                Ok(ractor::rpc::CallResult::Success(r)) => r,
                _ => Err(format!(
                    "the worker did not rotate within {}",
                    human(within)
                )),
            };
            let _ = me.cast(SessionMsg::RotateAnswered { result, reply });
        });
    }

    /// Worker `generation` rotated: everyone on the old link is cut off. That happened,
    /// whatever else did meanwhile (the caller gave up waiting, the share began to
    /// switch or end), so it always goes on the record; the share answers with the new
    /// links if that worker still serves it.
    pub(super) fn rotated(&mut self, generation: u64, links: crate::types::Links) {
        let asked = self.rotation.take_if(|r| r.generation == generation);
        let serving = generation == self.worker_generation && !matches!(self.phase, Phase::Ended);
        let fingerprints = &self.ctx.fingerprints;
        let mut event = self
            .event(AuditKind::ShareRotated)
            .detail(
                "old_link_fp",
                fingerprints.fingerprint(&self.info.links.link),
            )
            .detail("link_fp", fingerprints.fingerprint(&links.link));
        event = match &asked {
            Some(r) => event
                .by(&r.caller)
                .detail("participants_cut_off", r.on_old_link),
            None => event.detail("participants_cut_off", self.joined.len()),
        };
        if !serving {
            event = event.detail("serving", false);
        }
        crate::audit::record(&self.ctx.audit, event);
        if serving {
            self.info.links = links;
            self.publish();
        }
    }

    /// The worker's answer to a rotation: the share (with its new links, which came
    /// first), or why not.
    pub(super) fn rotate_answered(&mut self, result: Result<(), String>, reply: ShareReply) {
        match result {
            Ok(()) if matches!(self.phase, Phase::Ended) => {
                let _ = reply.send(Err(ShareError::ShareEnding(self.id())));
            }
            Ok(()) => {
                let _ = reply.send(Ok(self.info.clone()));
            }
            Err(detail) => {
                // Given up on; should the worker still rotate, its report is recorded
                // (without a caller) and the share takes its links.
                self.rotation = None;
                let err = ShareError::Backend(crate::error::BackendError::Unsupported {
                    backend: self.info.backend.to_string(),
                    detail,
                });
                let _ = reply.send(Err(err));
            }
        }
    }

    /// The worker reports each join and leave (or not): the share's count starts at 0
    /// (or is unknown, never a guessed 0).
    pub(super) fn counting_participants(&mut self, counts: bool) {
        self.joined.clear();
        self.info.participants = counts.then_some(0);
        self.publish();
    }

    /// A participant joined or left: the count, the badge and the record follow.
    pub(super) fn participant(&mut self, event: crate::traits::ParticipantEvent) {
        use crate::traits::ParticipantEvent;
        let (kind, id, origin) = match event {
            ParticipantEvent::Joined { id, origin } => {
                if self.joined.len() >= MAX_TRACKED_PARTICIPANTS {
                    tracing::error!(share = %self.id(), "too many participants to track");
                    return;
                }
                if !self.joined.insert(id) {
                    return; // reported twice
                }
                self.ever_joined = true;
                (AuditKind::ShareJoined, id, Some(origin))
            }
            ParticipantEvent::Left { id } => {
                if !self.joined.remove(&id) {
                    return; // never counted (or already gone with a switch)
                }
                (AuditKind::ShareLeft, id, None)
            }
            ParticipantEvent::Refused { origin, why, also } => {
                let event = self
                    .event(AuditKind::ShareJoinRefused)
                    .detail("cause", why.as_str())
                    .detail("refused", u64::from(also) + 1)
                    .detail("participants", self.joined.len())
                    .detail(
                        "max_participants",
                        serde_json::json!(self.join.max_participants),
                    )
                    .detail("origin_fp", self.ctx.fingerprints.fingerprint(&origin));
                crate::audit::record(&self.ctx.audit, event);
                return;
            }
        };
        self.info.participants = Some(self.joined.len() as u32);
        let mut event = self
            .event(kind)
            .detail("participant", id)
            .detail("participants", self.joined.len());
        if let Some(origin) = origin {
            event = event.detail("origin_fp", self.ctx.fingerprints.fingerprint(&origin));
        }
        crate::audit::record(&self.ctx.audit, event);
        self.publish();
    }

    /// Every participant still counted was cut off (the share ended or moved): each
    /// gets its `share.left`, with why.
    pub(super) fn participants_gone(&mut self, cause: &str) {
        let gone = std::mem::take(&mut self.joined);
        let mut left = gone.len();
        for id in gone {
            left -= 1;
            let event = self
                .event(AuditKind::ShareLeft)
                .detail("participant", id)
                .detail("participants", left)
                .detail("cause", cause);
            crate::audit::record(&self.ctx.audit, event);
        }
        if self.info.participants.is_some() {
            self.info.participants = Some(0);
        }
    }

    /// Tell the root (badges, listings) how the share is now. Not before its terminal
    /// is known: a share of a terminal that turns out missing is never shown.
    pub(super) fn publish(&self) {
        if !self.gate.terminal_known() {
            return;
        }
        let _ = self.ctx.root.cast(RootMsg::Updated(self.info.clone()));
    }

    pub(super) fn count_active(&mut self, active: bool) {
        if let Some(b) = self.counted_active.take() {
            metrics::gauge!("termshare_active_shares", "backend" => b).decrement(1.0);
        }
        if active {
            let b = self.info.backend.to_string();
            metrics::gauge!("termshare_active_shares", "backend" => b.clone()).increment(1.0);
            self.counted_active = Some(b);
        }
    }

    /// A grace threshold passed: mark the share expiring and show the notice off the
    /// mailbox; its record follows once it is known whether anyone was shown it.
    pub(super) fn grace(
        &mut self,
        myself: &ActorRef<SessionMsg>,
        remaining: Duration,
        generation: u64,
    ) {
        if generation != self.ttl_generation || matches!(self.phase, Phase::Ended) {
            return;
        }
        if self.info.state == ShareState::Active {
            self.info.state = ShareState::Expiring;
            self.publish();
        }
        let message = format!(
            "termshare: this share of {} ends in {}",
            self.info.terminal,
            human(remaining)
        );
        let (host, terminal, me) = (
            self.ctx.host.clone(),
            self.info.terminal.clone(),
            myself.clone(),
        );
        self.run(async move {
            let shown =
                tokio::time::timeout(Duration::from_secs(1), host.notify(&terminal, &message))
                    .await;
            let _ = me.cast(SessionMsg::GraceNoticed {
                generation,
                remaining,
                notified: matches!(shown, Ok(Ok(()))),
            });
        });
    }

    /// The current worker exited: find out (off the mailbox) whether its terminal went
    /// with it, then end the share.
    pub(super) fn worker_exited(&mut self, myself: &ActorRef<SessionMsg>, status: WorkerExit) {
        self.worker = None;
        metrics::counter!("termshare_worker_crashes_total").increment(1);
        if status.by_signal {
            // Killed, not ended by itself: its terminal closing is not why, and the
            // share fails now, without a tmux round trip.
            let generation = self.worker_generation;
            let _ = myself.cast(SessionMsg::WorkerGone {
                generation,
                status,
                terminal_closed: false,
            });
            return;
        }
        let (check, me, generation) = (
            self.check_terminal(),
            myself.clone(),
            self.worker_generation,
        );
        self.run(async move {
            let terminal_closed = check.await.is_err();
            let _ = me.cast(SessionMsg::WorkerGone {
                generation,
                status,
                terminal_closed,
            });
        });
    }
}
