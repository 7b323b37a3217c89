//! `ShareService`: the handle a runtime holds. It starts the tree (`start.rs`), turns
//! every operation into a bounded call (handoffs in `handoffs.rs`), and shuts the tree
//! down.

use std::sync::Arc;
use std::time::Duration;

use ractor::{ActorCell, ActorRef, RpcReplyPort};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

use crate::badge::Badges;
use crate::error::human;

use crate::audit::{AuditEvent, AuditHealth, AuditMsg, ShareEvents, ShareEventsError, ShareFeeds};
use crate::caller::Caller;
use crate::error::ShareError;
use crate::handoff::HandoffMsg;
use crate::root::RootMsg;
use crate::settings::Settings;
use crate::traits::{AuditSink, Backend, PolicyGate, TerminalHost};
use crate::types::{BackendName, FingerprintKey, RevokeReport, ShareId, ShareInfo, ShareRequest};

/// Everything the tree needs from the outside world.
pub struct ServiceDeps {
    /// The backends shares may use, each under its own name.
    pub backends: Vec<Arc<dyn Backend>>,
    /// Who may share what, and the handoff chains.
    pub policy: Arc<dyn PolicyGate>,
    /// The terminals (tmux in production).
    pub host: Arc<dyn TerminalHost>,
    /// Where the audit log is kept.
    pub audit_sink: Box<dyn AuditSink>,
    /// Keys the fingerprints of links in audit events (per installation, kept secret).
    pub fingerprint_key: FingerprintKey,
}

/// The running supervision tree and its API: every call is a message to its actors,
/// bounded in time and in how many may be in flight. Cheap to share behind an `Arc`;
/// [`ShareService::shutdown`] ends every share and stops the tree.
pub struct ShareService {
    root: ActorRef<RootMsg>,
    handoffs: ActorRef<HandoffMsg>,
    handoffs_task: JoinHandle<()>,
    root_task: JoinHandle<()>,
    audit: ActorRef<AuditMsg>,
    audit_task: JoinHandle<()>,
    events: broadcast::Sender<AuditEvent>,
    /// Each live share's own events, for [`ShareService::events`].
    feeds: Arc<ShareFeeds>,
    badges: watch::Receiver<Badges>,
    audit_health: Arc<AuditHealth>,
    settings: Settings,
    /// The terminals, checked before a share reaches the root.
    host: Arc<dyn TerminalHost>,
    /// Permits for calls in progress (`Settings::max_in_flight`): the bound on what the
    /// root's and the handoff manager's mailboxes can hold.
    in_flight: Arc<tokio::sync::Semaphore>,
    /// Revokes have permits of their own: an end never waits behind new work.
    ends_in_flight: Arc<tokio::sync::Semaphore>,
}

/// Slack on top of the operation's own deadline before a call is declared lost.
const CALL_SLACK: Duration = Duration::from_secs(2);

impl ShareService {
    /// Every actor of the tree now: the root, the audit log, the handoff manager, and
    /// below the root each share's session, worker and timer. For a runtime that
    /// watches its subsystems, and for tests that check that none outlives a kill.
    pub fn actors(&self) -> Vec<ActorCell> {
        let mut all = vec![
            self.root.get_cell(),
            self.audit.get_cell(),
            self.handoffs.get_cell(),
        ];
        let mut i = 0;
        while i < all.len() {
            let children = all[i].get_children();
            all.extend(children);
            i += 1;
        }
        all
    }

    /// The settings the tree runs with.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Every audit event as it is kept. A subscriber that lags loses events here (the
    /// audit file does not): this stream is for display, not for the record.
    pub fn subscribe(&self) -> broadcast::Receiver<AuditEvent> {
        self.events.subscribe()
    }

    /// Events handed to the audit writer and not yet written.
    pub fn audit_queue(&self) -> usize {
        self.audit_health.queued()
    }

    /// `Some(error)` while the audit sink fails to keep events (new shares are refused
    /// then; live shares keep their TTL and can be revoked).
    pub fn audit_error(&self) -> Option<String> {
        self.audit_health.error()
    }

    /// `Some(why)` while new work is refused for the audit log's sake: its sink fails,
    /// its queue is past its high-water mark, or a write has stalled.
    pub fn audit_refusal(&self) -> Option<String> {
        self.audit_health.refusal()
    }

    /// The live badge board: one badge per terminal with live shares, republished on
    /// every lifecycle change. `changed().await` on the receiver wakes on each one.
    pub fn badges(&self) -> watch::Receiver<Badges> {
        self.badges.clone()
    }

    async fn ask<T: Send + 'static>(
        &self,
        timeout: Duration,
        msg: impl FnOnce(RpcReplyPort<Result<T, ShareError>>) -> RootMsg,
    ) -> Result<T, ShareError> {
        self.ask_with(&self.in_flight, timeout, msg).await
    }

    async fn ask_with<T: Send + 'static>(
        &self,
        permits: &tokio::sync::Semaphore,
        timeout: Duration,
        msg: impl FnOnce(RpcReplyPort<Result<T, ShareError>>) -> RootMsg,
    ) -> Result<T, ShareError> {
        let _permit = permits
            .acquire()
            .await
            .map_err(|_| ShareError::ShuttingDown)?;
        match self.root.call(msg, Some(timeout)).await {
            Ok(ractor::rpc::CallResult::Success(r)) => r,
            Ok(ractor::rpc::CallResult::Timeout) => Err(ShareError::NoAnswer {
                actor: "root",
                after: human(timeout),
            }),
            Ok(ractor::rpc::CallResult::SenderError) => Err(ShareError::Internal(
                "the share's session ended before answering".into(),
            )),
            Err(_) => Err(ShareError::ShuttingDown),
        }
    }

    /// Start a share; returns once its link is known (or the start failed). The whole
    /// start has one deadline, [`Settings::start_budget`] from now: a start still going
    /// then is stopped and never announced, so a caller that gets no link never leaves
    /// a share running behind it.
    pub async fn share(&self, request: ShareRequest) -> Result<ShareInfo, ShareError> {
        let budget = self.settings.start_budget();
        let start_deadline = tokio::time::Instant::now() + budget;
        // The start's budget, then the stop and record of a start that ran out of it.
        let t = budget + self.settings.revoke_deadline + self.settings.audit_timeout + CALL_SLACK;
        // The terminal's check starts now and runs beside admission, the request's
        // record and the worker's spawn; the link is held until it answers.
        let terminal =
            crate::root::TerminalCheck::start(self.host.clone(), request.terminal.clone());
        self.ask(t, |reply| RootMsg::Share {
            request,
            start_deadline,
            terminal,
            reply,
        })
        .await
    }

    /// Move a share's expiry `by` later (relative to its current expiry), within its
    /// rule's `max_ttl` counted from the share's start. `caller` must own the share or
    /// be the operator; a `Principal` is taken as vouched for by the embedder.
    pub async fn extend(
        &self,
        share_id: ShareId,
        by: Duration,
        caller: impl Into<Caller>,
    ) -> Result<ShareInfo, ShareError> {
        let caller = caller.into();
        self.ask(self.settings.audit_timeout + CALL_SLACK, |reply| {
            RootMsg::Extend {
                share_id,
                by,
                caller,
                reply,
            }
        })
        .await
    }

    /// Give a share a new link and cut off everyone who joined through the old one
    /// (within the revoke deadline); the share keeps its id, TTL and badge. The way to
    /// remove a participant who should not be there. Answers with the new links.
    pub async fn rotate(
        &self,
        share_id: ShareId,
        caller: impl Into<Caller>,
    ) -> Result<ShareInfo, ShareError> {
        let caller = caller.into();
        // As long as a switch may take: where the worker cannot rotate in place, a
        // rotation is a new session on the same backend.
        let t = self.settings.revoke_deadline
            + self.settings.link_timeout
            + self.settings.audit_timeout
            + CALL_SLACK * 2;
        self.ask(t, |reply| RootMsg::Rotate {
            share_id,
            caller,
            reply,
        })
        .await
    }

    /// End a share now; the report says how long it took and whether it escalated.
    pub async fn revoke(
        &self,
        share_id: ShareId,
        caller: impl Into<Caller>,
    ) -> Result<RevokeReport, ShareError> {
        let caller = caller.into();
        // Stamped here: the deadline counts from the request's arrival, however long
        // it waits anywhere inside.
        let requested_at = tokio::time::Instant::now();
        let t = self.settings.revoke_deadline + self.settings.audit_timeout + CALL_SLACK;
        self.ask_with(&self.ends_in_flight, t, |reply| RootMsg::Revoke {
            share_id,
            caller,
            reply,
            requested_at,
        })
        .await
    }

    /// Move a live share to another backend. The new backend passes the same admission
    /// as a new share; the new worker starts while the old one still serves, and the
    /// old one is reaped once the new one has its link. If the new one fails, the share
    /// stays on the old backend (`share.switch_failed`) and the error is returned.
    pub async fn switch(
        &self,
        share_id: ShareId,
        backend: BackendName,
        caller: impl Into<Caller>,
    ) -> Result<ShareInfo, ShareError> {
        let caller = caller.into();
        // The new worker's start (link timeout + the record of the request), then the
        // old worker's stop (revoke deadline), then the record of the switch.
        let t = self.settings.revoke_deadline
            + self.settings.link_timeout
            + self.settings.audit_timeout
            + CALL_SLACK * 2;
        self.ask(t, |reply| RootMsg::Switch {
            share_id,
            backend,
            caller,
            reply,
        })
        .await
    }

    /// Every event of a live share, typed, as it went on the record: what happened so
    /// far (its start, then the latest), then each new one, ending with
    /// [`crate::ShareEvent::Ended`]. Not lossy: a subscriber that falls a whole queue
    /// behind is cut off with [`ShareEventsError::Lagged`], never skipped silently; a
    /// replay that leaves events out says how many ([`ShareEventsError::Skipped`]); an
    /// end the audit log could not keep still ends the stream
    /// ([`ShareEventsError::EndNotRecorded`]). For a share that has already ended,
    /// [`ShareService::ended`] says how.
    pub fn events(&self, share_id: ShareId) -> Result<ShareEvents, ShareEventsError> {
        self.feeds.subscribe(share_id)
    }

    /// Wait until the share has ended, and say how: why, and how its worker was
    /// stopped. The one way to learn it (the event stream of
    /// [`ShareService::subscribe`] may drop events for a slow reader). The future
    /// borrows nothing: spawn it, keep it, drop it.
    pub fn ended(
        &self,
        share_id: ShareId,
    ) -> impl std::future::Future<Output = Result<crate::types::ShareEnd, ShareError>> + Send + 'static
    {
        let root = self.root.clone();
        async move {
            let waiting = match root
                .call(
                    |reply| RootMsg::WhenEnded(share_id, reply),
                    Some(CALL_SLACK),
                )
                .await
            {
                Ok(ractor::rpc::CallResult::Success(r)) => r?,
                Ok(ractor::rpc::CallResult::Timeout) => {
                    return Err(ShareError::NoAnswer {
                        actor: "root",
                        after: human(CALL_SLACK),
                    })
                }
                Ok(_) => return Err(ShareError::ShuttingDown),
                Err(_) => return Err(ShareError::ShuttingDown),
            };
            waiting.await.map_err(|_| ShareError::ShuttingDown)
        }
    }

    /// Every live share (starting, live or ending), as the root's table has it now.
    pub async fn list(&self) -> Result<Vec<ShareInfo>, ShareError> {
        self.ask(CALL_SLACK, RootMsg::List).await
    }

    /// End every share (as `stopped`), wait for every worker to be reaped, flush the
    /// audit log, and stop the tree.
    pub async fn shutdown(self) -> Vec<RevokeReport> {
        let t = self.settings.revoke_deadline + self.settings.audit_timeout + CALL_SLACK * 2;
        let reports = match self.root.call(RootMsg::Shutdown, Some(t)).await {
            Ok(ractor::rpc::CallResult::Success(r)) => r,
            _ => {
                // Killing the root kills every session and worker actor; their Drop
                // guards kill the process groups.
                self.root.kill();
                Vec::new()
            }
        };
        let _ = self.root_task.await;
        self.handoffs.stop(None);
        let _ = self.handoffs_task.await;
        let _ = self
            .audit
            .call(AuditMsg::Flush, Some(self.settings.audit_timeout))
            .await;
        self.audit.stop(None);
        let _ = self.audit_task.await;
        // What the shares held is free now: give it back (crate::memory).
        crate::memory::give_back().await;
        reports
    }
}

mod handoffs;
mod start;
