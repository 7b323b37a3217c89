//! Switching backends, make before break.
//!
//! The share stays exactly as it is (its worker, links, backend, rule) until the switch
//! is done: the terminal is checked and the new worker started off to the side; once it
//! has its link, the old worker is stopped (off the mailbox); only then does the share
//! take the new worker, and `share.switched` goes to the record. A new worker that
//! fails leaves the share on the old one (`share.switch_failed`). A share that ends
//! mid-switch ends on the worker that served it, and the new one goes with it.

use std::sync::Arc;
use std::time::Duration;

use ractor::{ActorCell, ActorProcessingErr, ActorRef};
use serde_json::json;
use tokio::time::Instant;

use super::end::stop_worker;
use super::{next_generation, Phase, SessionMsg, SessionState, ShareReply};
use crate::audit::{record, AuditKind};
use crate::caller::Caller;
use crate::error::{human, ShareError};
use crate::traits::{Backend, TerminateOutcome};
use crate::types::{EndReason, Links, ShareId};
use crate::worker::{WorkerEvent, WorkerMsg};

/// Why a new worker replaces the share's.
#[derive(Clone, Copy)]
pub(super) enum Purpose {
    /// Another backend (`share.switched`).
    Switch,
    /// A new session on the same backend, so that the share has a new link and
    /// everyone on the old one is cut off (`share.rotated`).
    Rotate {
        /// Participants counted when it was asked (all on the old link).
        on_old_link: usize,
    },
}

/// A switch under way.
pub(super) struct Switch {
    purpose: Purpose,
    by: Caller,
    reply: Option<ShareReply>,
    backend: Arc<dyn Backend>,
    rule_id: String,
    max_ttl: Option<Duration>,
    /// The new worker, once spawned, and its generation.
    worker: Option<ActorRef<WorkerMsg>>,
    generation: u64,
    /// What the new worker gave once ready.
    ready: Option<(Links, Option<u32>, bool, bool)>,
    /// The old worker, being stopped by a task once the new one is ready.
    retiring: Option<ActorRef<WorkerMsg>>,
}

impl Switch {
    /// The share ended mid-switch: stop the new worker and the retiring old one.
    /// Returns whether both were gone by `deadline`.
    pub(super) async fn abandon(self, share: ShareId, deadline: Instant) -> bool {
        let (_, new_in_time) =
            stop_worker(share, self.worker, false, deadline, Duration::ZERO).await;
        let (_, old_in_time) =
            stop_worker(share, self.retiring, false, deadline, Duration::ZERO).await;
        new_in_time && old_in_time
    }
}

impl SessionState {
    #[allow(clippy::too_many_arguments)] // one message's fields, and why
    pub(super) fn switch(
        &mut self,
        myself: &ActorRef<SessionMsg>,
        backend: Arc<dyn Backend>,
        rule_id: String,
        max_ttl: Option<Duration>,
        caller: Caller,
        reply: ShareReply,
        purpose: Purpose,
    ) {
        match self.phase {
            Phase::Active => {}
            Phase::Ended => {
                let _ = reply.send(Err(ShareError::ShareEnding(self.id())));
                return;
            }
            _ => {
                let _ = reply.send(Err(ShareError::Invalid(crate::error::InvalidInput::new(
                    "switch",
                    &self.id().to_string(),
                    "the share is starting or already switching; switch once it is active",
                ))));
                return;
            }
        }
        // The root admitted the switch against the share's life as it knew it; an
        // extension may have landed since: the new rule must still hold.
        let total = self.deadline.saturating_duration_since(self.started);
        if let Some(max) = max_ttl.filter(|max| total > *max) {
            let err = ShareError::TtlAboveMax {
                requested: human(total),
                max: human(max),
                rule_id,
            };
            record(
                &self.ctx.audit,
                self.event(AuditKind::ShareRefused)
                    .by(&caller)
                    .detail("action", "switch")
                    .detail("reason", err.to_string()),
            );
            let _ = reply.send(Err(err));
            return;
        }
        let generation = next_generation(&mut self.generations);
        self.phase = Phase::Switching(Box::new(Switch {
            purpose,
            by: caller,
            reply: Some(reply),
            backend,
            rule_id,
            max_ttl,
            worker: None,
            generation,
            ready: None,
            retiring: None,
        }));
        let (check, me) = (self.check_terminal(), myself.clone());
        self.run(async move {
            let _ = me.cast(SessionMsg::SwitchChecked(check.await));
        });
    }

    pub(super) async fn switch_checked(
        &mut self,
        myself: &ActorRef<SessionMsg>,
        result: Result<Option<(u16, u16)>, ShareError>,
    ) {
        let Phase::Switching(switch) = &self.phase else {
            return;
        };
        let (backend, generation) = (switch.backend.clone(), switch.generation);
        let spawned = match result {
            Ok(size) => {
                // The switch's own time for a link, however long ago the share started.
                let deadline = Instant::now() + self.ctx.settings.link_timeout;
                self.spawn_worker(myself, backend, generation, size, deadline)
                    .await
            }
            Err(e) => Err(e),
        };
        match spawned {
            Ok(worker) => {
                if let Phase::Switching(switch) = &mut self.phase {
                    switch.worker = Some(worker);
                }
            }
            Err(e) => self.fail_switch(myself, e).await,
        }
    }

    /// A worker event during a switch. `true` when it was the switch's to handle.
    pub(super) async fn switch_event(
        &mut self,
        myself: &ActorRef<SessionMsg>,
        generation: u64,
        event: &WorkerEvent,
    ) -> bool {
        let Phase::Switching(switch) = &mut self.phase else {
            return false;
        };
        if generation == switch.generation {
            match event {
                WorkerEvent::Ready {
                    links,
                    pid,
                    tells_participants,
                    counts_participants,
                } => {
                    switch.ready = Some((
                        links.clone(),
                        *pid,
                        *tells_participants,
                        *counts_participants,
                    ));
                    // The new worker serves: stop the old one, off the mailbox.
                    let old = self.worker.take();
                    switch.retiring = old.clone();
                    let (share, ready, me) = (self.id(), self.worker_ready, myself.clone());
                    let deadline = Instant::now() + self.ctx.settings.revoke_deadline;
                    let grace = self.ctx.settings.terminate_grace;
                    self.run(async move {
                        let (outcome, in_time) =
                            stop_worker(share, old, ready, deadline, grace).await;
                        let _ = me.cast(SessionMsg::OldStopped { outcome, in_time });
                    });
                }
                WorkerEvent::StartFailed(e) => {
                    switch.worker = None;
                    let e = ShareError::Backend(e.clone());
                    self.fail_switch(myself, e).await;
                }
                // Handled before a switch looks (a rotation is recorded whatever else
                // goes on); the new worker is never asked to rotate.
                WorkerEvent::Rotated(_) => {}
                WorkerEvent::Relinked(links) => {
                    // The new worker's links changed before the switch completed: the
                    // share takes the latest.
                    if let Some(ready) = &mut switch.ready {
                        ready.0 = links.clone();
                    }
                }
                // Nobody has the new worker's link before the switch completes.
                WorkerEvent::Participant(_) => {}
                WorkerEvent::Exited(_) | WorkerEvent::Hung { .. } | WorkerEvent::NeverServed(_) => {
                    let cause = "the new worker stopped during a switch".to_string();
                    self.end_now(myself, EndReason::Failed(cause)).await;
                }
            }
            return true;
        }
        if generation == self.worker_generation
            && matches!(
                event,
                WorkerEvent::Exited(_) | WorkerEvent::Hung { .. } | WorkerEvent::NeverServed(_)
            )
        {
            // The worker being switched away from is gone: the switch carries on; if it
            // fails, the share fails with it.
            if switch.retiring.is_none() {
                if let Some(w) = self.worker.take() {
                    w.kill();
                }
            }
            return true;
        }
        false
    }

    /// The old worker is stopped: the share takes the new one, and the switch goes on
    /// the record (its caller hears once it is kept).
    pub(super) fn old_stopped(
        &mut self,
        myself: &ActorRef<SessionMsg>,
        outcome: TerminateOutcome,
        in_time: bool,
    ) {
        let Phase::Switching(switch) = std::mem::replace(&mut self.phase, Phase::Active) else {
            return;
        };
        let Switch {
            purpose,
            by,
            reply,
            backend,
            rule_id,
            max_ttl,
            worker,
            generation,
            ready,
            ..
        } = *switch;
        let (links, pid, tells, counts) = ready.unwrap_or_default();
        let old_backend = std::mem::replace(&mut self.backend, backend);
        let old_pid = std::mem::replace(&mut self.worker_pid, pid);
        self.info.worker_pid = pid;
        let old_link = std::mem::replace(&mut self.info.links, links);
        self.worker = worker;
        self.worker_generation = generation;
        self.worker_ready = true;
        self.worker_tells_participants = tells;
        // The old worker's participants were cut off with it; the new link is new.
        let on_old_link = self.joined.len();
        self.participants_gone(match purpose {
            Purpose::Switch => "the share moved to another backend",
            Purpose::Rotate { .. } => "the share got a new link",
        });
        self.counting_participants(counts);
        self.info.backend = self.backend.name();
        self.info.rule_id = rule_id;
        self.max_ttl = max_ttl;
        self.count_active(true);
        self.publish();
        let fingerprints = &self.ctx.fingerprints;
        let event = match purpose {
            Purpose::Switch => self
                .event(AuditKind::ShareSwitched)
                .detail("from", old_backend.name().as_str())
                .detail("to", self.info.backend.as_str()),
            Purpose::Rotate { on_old_link: asked } => self
                .event(AuditKind::ShareRotated)
                .detail("new_session", true)
                .detail("participants_cut_off", asked.max(on_old_link)),
        };
        let event = event
            .by(&by)
            .detail("old_worker_pid", json!(old_pid))
            // Stopped means gone (reaped or killed) in time, not merely signalled.
            .detail("old_worker_stopped", in_time)
            .detail("old_worker_already_gone", outcome.already_gone)
            .detail("old_worker_escalated", outcome.escalated)
            .detail("old_link_fp", fingerprints.fingerprint(&old_link.link))
            .detail("new_worker_pid", json!(self.worker_pid))
            .detail("link_fp", fingerprints.fingerprint(&self.info.links.link));
        self.switch_reply = reply;
        self.announce(myself, event);
    }

    /// The switch's record is kept (or not): answer its caller. `true` when there was a
    /// switch to answer.
    pub(super) async fn switch_announced(
        &mut self,
        myself: &ActorRef<SessionMsg>,
        result: &Result<(), String>,
    ) -> bool {
        let Some(reply) = self.switch_reply.take() else {
            return false;
        };
        match result {
            Ok(()) => {
                let _ = reply.send(Ok(self.info.clone()));
            }
            Err(e) => {
                // Fail closed: a share off the record does not run.
                let _ = reply.send(Err(ShareError::AuditUnavailable(format!(
                    "{e}; the share was stopped, as its switch could not be put on the record"
                ))));
                let cause = format!("its switch could not be put on the record: {e}");
                self.end_now(myself, EndReason::Failed(cause)).await;
            }
        }
        true
    }

    /// A switch whose new worker gave no link: the share stays on its worker, which
    /// never stopped serving, and the caller gets the error. If that worker died
    /// meanwhile, nothing serves the share any more: it fails.
    pub(super) async fn fail_switch(&mut self, myself: &ActorRef<SessionMsg>, error: ShareError) {
        let Phase::Switching(switch) = std::mem::replace(&mut self.phase, Phase::Active) else {
            return;
        };
        if let Some(w) = &switch.worker {
            w.kill(); // its guard kills whatever it started
        }
        let still_serving = self.worker.is_some();
        let action = match switch.purpose {
            Purpose::Switch => "switch",
            Purpose::Rotate { .. } => "rotate",
        };
        record(
            &self.ctx.audit,
            self.event(AuditKind::ShareSwitchFailed)
                .by(&switch.by)
                .detail("action", action)
                .detail("from", self.info.backend.as_str())
                .detail("to", switch.backend.name().as_str())
                .detail("cause", error.to_string())
                .detail(
                    "still_on",
                    json!(still_serving.then(|| self.info.backend.as_str())),
                ),
        );
        if let Some(reply) = switch.reply {
            let _ = reply.send(Err(error));
        }
        if !still_serving {
            let cause = format!(
                "the worker exited during a switch to {}, which failed",
                switch.backend.name()
            );
            self.end_now(myself, EndReason::Failed(cause)).await;
        }
    }

    /// A child actor failed during a switch. `true` when it was one of the switch's.
    pub(super) async fn switch_child_failed(
        &mut self,
        myself: &ActorRef<SessionMsg>,
        cell: &ActorCell,
        err: &ActorProcessingErr,
    ) -> bool {
        let Phase::Switching(switch) = &mut self.phase else {
            return false;
        };
        let id = cell.get_id();
        if switch.worker.as_ref().is_some_and(|w| w.get_id() == id) {
            switch.worker = None; // its state, and so its process guard, is gone
            if switch.ready.is_some() {
                let cause = format!("the new worker crashed during a switch: {err}");
                self.end_now(myself, EndReason::Failed(cause)).await;
            } else {
                let e = ShareError::Internal(format!("the new worker crashed: {err}"));
                self.fail_switch(myself, e).await;
            }
            return true;
        }
        if switch.retiring.as_ref().is_some_and(|w| w.get_id() == id) {
            switch.retiring = None; // it was being stopped anyway
            return true;
        }
        if self.worker.as_ref().is_some_and(|w| w.get_id() == id) {
            self.worker = None; // the switch carries on; see `switch_event`
            return true;
        }
        false
    }
}
