//! From the request to the announced link, under one deadline.
//!
//! 1. `Begin`: the request's event goes to the audit log first (a share that cannot be
//!    put on the record does not start), and the terminal is checked, both off the
//!    mailbox; a timer is set for the whole start's deadline (stamped when the request
//!    reached termshare).
//! 2. `Prepared`: the worker is spawned, with what is left of the deadline as its link
//!    timeout. From the fork on, its process belongs to a guard in the worker actor.
//! 3. `Ready`: the link is there. If the caller has given up meanwhile, the share ends
//!    without ever being announced. Otherwise `share.started` goes to the log.
//! 4. `Announced`: once it is kept, the caller is answered, if still waiting; a
//!    caller who left in that moment gets its share stopped rather than left running
//!    with a link nobody holds.
//!
//! The deadline ends a start still going at any of these steps, unannounced.

use ractor::ActorRef;
use serde_json::json;

use super::{next_generation, Phase, SessionMsg, SessionState};
use crate::audit::{self, AuditKind};
use crate::error::{human, ShareError};
use crate::types::{EndReason, Links, ShareState};

/// How long starting a recording may take before the share fails closed.
const RECORDING_START: std::time::Duration = std::time::Duration::from_secs(2);

impl SessionState {
    pub(super) fn begin(&mut self, myself: &ActorRef<SessionMsg>) {
        if !matches!(self.phase, Phase::Preparing { .. }) {
            return;
        }
        // Sent now, in order: anything this share records later comes after it.
        let Some(requested) = self.requested.take() else {
            return;
        };
        let ack = audit::send(&self.ctx.audit, requested);
        let timeout = self.ctx.settings.audit_timeout;
        let (size, me) = (self.size, myself.clone());
        self.run(async move {
            let prepared = match ack.wait(timeout).await {
                // Fail closed: a share whose request is not on the record does not
                // start. (This write is also how a recovered log is noticed.)
                Err(e) => Err(ShareError::AuditUnavailable(format!(
                    "{e}; new shares are refused until the audit log keeps events again"
                ))),
                // The terminal was checked before admission.
                Ok(()) => Ok(size),
            };
            let _ = me.cast(SessionMsg::Prepared(prepared));
        });
        let (me, at) = (myself.clone(), self.start_deadline);
        self.run(async move {
            tokio::time::sleep_until(at).await;
            let _ = me.cast(SessionMsg::StartDeadline);
        });
    }

    pub(super) async fn prepared(
        &mut self,
        myself: &ActorRef<SessionMsg>,
        result: Result<Option<(u16, u16)>, ShareError>,
    ) {
        let Phase::Preparing { reply } = &mut self.phase else {
            return;
        };
        let size = match result {
            Ok(size) => size,
            Err(e) => {
                if matches!(e, ShareError::AuditUnavailable(_)) {
                    metrics::counter!("termshare_shares_denied_total").increment(1);
                }
                self.fail_start(myself, e).await;
                return;
            }
        };
        if reply.as_ref().is_none_or(|r| r.is_closed()) {
            self.caller_left(myself).await;
            return;
        }
        let reply = reply.take();
        self.phase = Phase::Starting { reply };
        let generation = next_generation(&mut self.generations);
        self.worker_generation = generation;
        self.worker_ready = false;
        self.worker_pid = None;
        self.info.worker_pid = None;
        match self
            .spawn_worker(
                myself,
                self.backend.clone(),
                generation,
                size,
                self.start_deadline,
            )
            .await
        {
            Ok(worker) => self.worker = Some(worker),
            Err(e) => self.fail_start(myself, e).await,
        }
    }

    /// The caller stopped waiting before the share was announced: it ends, and is
    /// never announced (no `share.started`).
    async fn caller_left(&mut self, myself: &ActorRef<SessionMsg>) {
        let cause = "the caller stopped waiting before the share started".to_string();
        self.end_now(myself, EndReason::Failed(cause)).await;
    }

    pub(super) async fn start_deadline_passed(&mut self, myself: &ActorRef<SessionMsg>) {
        if matches!(
            self.phase,
            Phase::Preparing { .. } | Phase::Starting { .. } | Phase::Announcing { .. }
        ) {
            let err = ShareError::StartTimedOut {
                after: human(self.ctx.settings.start_budget()),
            };
            self.fail_start(myself, err).await;
        }
    }

    /// The worker has its link: announce the share, unless its caller has left.
    pub(super) async fn ready(&mut self, myself: &ActorRef<SessionMsg>, links: Links) {
        let Phase::Starting { reply } = &mut self.phase else {
            return;
        };
        if reply.as_ref().is_none_or(|r| r.is_closed()) {
            self.caller_left(myself).await;
            return;
        }
        let reply = reply.take();
        self.info.links = links;
        let fingerprints = self.ctx.fingerprints.clone();
        let mut event = self
            .event(AuditKind::ShareStarted)
            .asked_by(&self.requested_by)
            .detail("access", self.info.access.as_str())
            .detail("rule_id", self.info.rule_id.as_str())
            .detail("link_fp", fingerprints.fingerprint(&self.info.links.link))
            .detail("worker_pid", json!(self.worker_pid))
            .detail(
                "expires_at",
                humantime::format_rfc3339_millis(self.info.expires_at).to_string(),
            );
        if let Some(ro) = &self.info.links.read_only_link {
            event = event.detail("read_only_link_fp", fingerprints.fingerprint(ro));
        }
        self.phase = Phase::Announcing { reply };
        self.announce(myself, event);
    }

    /// Send `event` (`share.started` or `share.switched`) and post `Announced` once it
    /// is kept.
    pub(super) fn announce(&mut self, myself: &ActorRef<SessionMsg>, event: audit::AuditEvent) {
        let ack = audit::send(&self.ctx.audit, event);
        let (timeout, me, generation) = (
            self.ctx.settings.audit_timeout,
            myself.clone(),
            self.worker_generation,
        );
        self.run(async move {
            let result = ack.wait(timeout).await;
            let _ = me.cast(SessionMsg::Announced { generation, result });
        });
    }

    pub(super) async fn announced(
        &mut self,
        myself: &ActorRef<SessionMsg>,
        generation: u64,
        result: Result<(), String>,
    ) {
        if generation != self.worker_generation {
            return;
        }
        if self.switch_announced(myself, &result).await {
            return;
        }
        let Phase::Announcing { reply } = &mut self.phase else {
            return;
        };
        let reply = reply.take();
        if let Err(e) = result {
            // Fail closed: a share off the record does not run.
            let cause = format!("its start could not be put on the record: {e}");
            if let Some(reply) = reply {
                let _ = reply.send(Err(ShareError::AuditUnavailable(format!(
                    "{e}; the share was stopped, as it could not be put on the record"
                ))));
            }
            self.end_now(myself, EndReason::Failed(cause)).await;
            return;
        }
        let Some(reply) = reply.filter(|r| !r.is_closed()) else {
            // On the record, but nobody holds its link: stop it.
            let cause = "the caller stopped waiting before the link was delivered".to_string();
            self.end_now(myself, EndReason::Failed(cause)).await;
            return;
        };
        if self.record {
            // Before the link is handed out: nobody watches a share meant to be
            // recorded unrecorded. (A local process spawn, bounded.)
            let host = self.ctx.host.clone();
            let started =
                tokio::time::timeout(RECORDING_START, host.record(&self.info.terminal, self.id()))
                    .await;
            match started {
                Ok(Ok(mut recording)) => {
                    if let Some(failed) = recording.failure() {
                        // A recording that stops ends the share: it is never watched
                        // unrecorded.
                        let me = myself.clone();
                        self.run(async move {
                            if let Ok(why) = failed.await {
                                let _ = me.cast(SessionMsg::RecordingFailed(why));
                            }
                        });
                    }
                    self.recording = Some(recording);
                }
                failed => {
                    let why = match failed {
                        Ok(Err(why)) => why,
                        _ => format!("it did not start within {}", human(RECORDING_START)),
                    };
                    let cause = format!("the recording could not be started: {why}");
                    let err = ShareError::Backend(crate::BackendError::Unavailable {
                        backend: self.info.backend.to_string(),
                        reason: cause.clone(),
                    });
                    // The caller hears of it once the worker is gone.
                    self.end_now(myself, EndReason::Failed(cause)).await;
                    let _ = reply.send(Err(err));
                    return;
                }
            }
        }
        self.phase = Phase::Active;
        self.info.state = ShareState::Active;
        if let Some(timeout) = self.join.timeout {
            let me = myself.clone();
            self.run(async move {
                tokio::time::sleep(timeout).await;
                let _ = me.cast(SessionMsg::JoinTimeout);
            });
        }
        self.count_active(true);
        let backend = self.info.backend.to_string();
        metrics::counter!("termshare_shares_started_total", "backend" => backend.clone())
            .increment(1);
        metrics::histogram!("termshare_start_to_link_seconds", "backend" => backend)
            .record(self.started.elapsed().as_secs_f64());
        self.publish();
        let _ = reply.send(Ok(self.info.clone()));
    }

    /// A start that failed before its announcement: audit it once, with its cause, and
    /// answer the caller with the error itself. (A switch that fails goes back to its
    /// old worker instead.)
    pub(super) async fn fail_start(&mut self, myself: &ActorRef<SessionMsg>, error: ShareError) {
        if matches!(self.phase, Phase::Switching(_)) {
            self.fail_switch(myself, error).await;
            return;
        }
        let reply = match &mut self.phase {
            Phase::Preparing { reply }
            | Phase::Starting { reply }
            | Phase::Announcing { reply } => reply.take(),
            _ => None,
        };
        self.end_now(myself, EndReason::Failed(error.to_string()))
            .await;
        if let Some(reply) = reply {
            let _ = reply.send(Err(error));
        }
    }
}
