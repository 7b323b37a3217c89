//! From the request to the announced link, under one deadline.
//!
//! Three things run together from the request's arrival, since none depends on
//! another: the terminal's check (started by the service, a tmux round trip), the
//! `share.requested` record (an fsync), and the worker's spawn. The spawn needs the
//! terminal's size: with the host's last-seen size it starts at once, and a check that
//! finds another size starts it again; with none, it waits for the check.
//!
//! The link is held by [`StartGate`] until all three are done: the request is on the
//! record (a share that cannot be put on the record does not start), the terminal is
//! known to exist, and the worker has its link. A start failing any of them ends
//! unannounced: its worker's process group is killed, no link leaves termshare, and
//! (for a missing terminal) no badge or listing ever showed it.
//!
//! Then `share.started` goes to the log; once it is kept (`Announced`), the caller is
//! answered, if still waiting; a caller who left in that moment gets its share stopped
//! rather than left running with a link nobody holds. The deadline ends a start still
//! going at any step, unannounced.

use ractor::ActorRef;
use serde_json::json;

use super::{next_generation, Phase, SessionMsg, SessionState};
use crate::audit::{self, AuditKind};
use crate::error::{human, ShareError};
use crate::types::{EndReason, Links, ShareState};

/// How long starting a recording may take before the share fails closed.
const RECORDING_START: std::time::Duration = std::time::Duration::from_secs(2);

/// What a new share's link waits for before it may leave termshare.
#[derive(Default)]
pub(super) struct StartGate {
    /// `share.requested` is kept.
    requested_kept: bool,
    /// The terminal is there, and the worker was started at its size.
    terminal_known: bool,
    /// The worker's link, held until both of the above.
    links: Option<Links>,
}

impl StartGate {
    pub(super) fn terminal_known(&self) -> bool {
        self.terminal_known
    }
}

impl SessionState {
    pub(super) async fn begin(&mut self, myself: &ActorRef<SessionMsg>) {
        if !matches!(self.phase, Phase::Preparing { .. }) {
            return;
        }
        // Sent now, in order: anything this share records later comes after it.
        let Some(requested) = self.requested.take() else {
            return;
        };
        let ack = audit::send(&self.ctx.audit, requested);
        let timeout = self.ctx.settings.audit_timeout;
        let me = myself.clone();
        self.run(async move {
            // Fail closed: a share whose request is not on the record does not start.
            // (This write is also how a recovered log is noticed.)
            let kept = ack.wait(timeout).await.map_err(|e| {
                ShareError::AuditUnavailable(format!(
                    "{e}; new shares are refused until the audit log keeps events again"
                ))
            });
            let _ = me.cast(SessionMsg::RequestKept(kept));
        });
        if let Some(check) = self.terminal_check.take() {
            let (me, terminal) = (myself.clone(), self.info.terminal.clone());
            self.run(async move {
                let checked = check
                    .outcome()
                    .await
                    .map_err(|detail| ShareError::UnknownTerminal { terminal, detail });
                let _ = me.cast(SessionMsg::TerminalChecked(checked));
            });
        }
        let (me, at) = (myself.clone(), self.start_deadline);
        self.run(async move {
            tokio::time::sleep_until(at).await;
            let _ = me.cast(SessionMsg::StartDeadline);
        });
        if let Some(size) = self.ctx.host.size_hint(&self.info.terminal) {
            self.start_worker(myself, Some(size)).await;
        }
    }

    /// Spawn the start's worker at `size` (a new generation: a worker started before
    /// at another size is stopped, and its events are ignored from now on).
    async fn start_worker(&mut self, myself: &ActorRef<SessionMsg>, size: Option<(u16, u16)>) {
        let reply = match &mut self.phase {
            Phase::Preparing { reply } | Phase::Starting { reply } => reply.take(),
            _ => return,
        };
        if reply.as_ref().is_none_or(|r| r.is_closed()) {
            self.caller_left(myself).await;
            return;
        }
        self.phase = Phase::Starting { reply };
        if let Some(old) = self.worker.take() {
            // Killed, not stopped: it never had a link, and its guard kills its group.
            old.kill();
        }
        self.gate.links = None;
        let generation = next_generation(&mut self.generations);
        self.worker_generation = generation;
        self.worker_ready = false;
        self.worker_pid = None;
        self.info.worker_pid = None;
        self.size = size;
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

    pub(super) async fn request_kept(
        &mut self,
        myself: &ActorRef<SessionMsg>,
        result: Result<(), ShareError>,
    ) {
        if !matches!(self.phase, Phase::Preparing { .. } | Phase::Starting { .. }) {
            return;
        }
        match result {
            Ok(()) => {
                self.gate.requested_kept = true;
                self.release_link(myself).await;
            }
            Err(e) => {
                metrics::counter!("termshare_shares_denied_total").increment(1);
                self.fail_start(myself, e).await;
            }
        }
    }

    pub(super) async fn terminal_checked(
        &mut self,
        myself: &ActorRef<SessionMsg>,
        result: Result<Option<(u16, u16)>, ShareError>,
    ) {
        if !matches!(self.phase, Phase::Preparing { .. } | Phase::Starting { .. }) {
            return;
        }
        let size = match result {
            Ok(size) => size,
            Err(e) => {
                self.fail_start(myself, e).await;
                return;
            }
        };
        self.gate.terminal_known = true;
        // Now it may be shown (starting) on the terminal's badge and in listings.
        self.publish();
        let started_at = match self.phase {
            Phase::Starting { .. } => Some(self.size),
            _ => None,
        };
        match started_at {
            // Started at the size the terminal has (or the check cannot tell).
            Some(at) if size.is_none() || size == at => self.release_link(myself).await,
            // Not started yet, or at a size the terminal no longer has.
            _ => self.start_worker(myself, size).await,
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

    /// The worker has its link: it is held until the request is on the record and the
    /// terminal known.
    pub(super) async fn ready(&mut self, myself: &ActorRef<SessionMsg>, links: Links) {
        if !matches!(self.phase, Phase::Starting { .. }) {
            return;
        }
        self.gate.links = Some(links);
        self.release_link(myself).await;
    }

    /// Announce the share once its gate is open, unless its caller has left.
    async fn release_link(&mut self, myself: &ActorRef<SessionMsg>) {
        let Phase::Starting { reply } = &mut self.phase else {
            return;
        };
        if !(self.gate.requested_kept && self.gate.terminal_known && self.gate.links.is_some()) {
            return;
        }
        if reply.as_ref().is_none_or(|r| r.is_closed()) {
            self.caller_left(myself).await;
            return;
        }
        let reply = reply.take();
        self.info.links = self.gate.links.take().unwrap_or_default();
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
