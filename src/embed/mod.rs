//! [`Termshare`]: the supervision tree wired to the real backends, host and audit
//! file, with the service API an embedding runtime calls.

use std::sync::Arc;

use std::time::Duration;

use termshare_actors::{
    AuditEvent, BackendName, Badges, Caller, HandoffId, HandoffRequest, HandoffView, RevokeReport,
    Settings, ShareEnd, ShareError, ShareId, ShareInfo, ShareRequest, ShareService,
};
use tokio::sync::{broadcast, watch};

use crate::paths::InstanceDir;
use crate::process::ProcessSpawner;

mod builder;

pub use builder::{Builder, StartError};

/// A running termshare subsystem: the supervision tree with the real backends.
pub struct Termshare {
    /// `None` only once `shutdown` has taken it.
    service: Option<ShareService>,
    spawner: Arc<ProcessSpawner>,
    /// The host terminal (tmux), for the list of its terminals.
    host: Arc<crate::terminal::TmuxHost>,
    /// Backends' scratch directories live here; removed when termshare stops.
    _instance: Arc<InstanceDir>,
    /// With `[fleet]`: a reader of the audit log for the shipper, until taken.
    #[cfg(feature = "fleet")]
    audit_tail: parking_lot::Mutex<Option<crate::audit_file::LogTail>>,
    /// With `[fleet]`, once its tasks run: how shipping and the lease are doing.
    #[cfg(feature = "fleet")]
    fleet_status: std::sync::OnceLock<Arc<crate::fleet::FleetStatus>>,
}

impl Termshare {
    fn from_parts(
        service: ShareService,
        spawner: Arc<ProcessSpawner>,
        host: Arc<crate::terminal::TmuxHost>,
        instance: Arc<InstanceDir>,
        #[cfg(feature = "fleet")] audit_tail: Option<crate::audit_file::LogTail>,
    ) -> Self {
        Termshare {
            service: Some(service),
            spawner,
            host,
            _instance: instance,
            #[cfg(feature = "fleet")]
            audit_tail: parking_lot::Mutex::new(audit_tail),
            #[cfg(feature = "fleet")]
            fleet_status: std::sync::OnceLock::new(),
        }
    }

    /// With `[fleet]`: the audit log's reader for the fleet's shipper (once).
    #[cfg(feature = "fleet")]
    pub fn take_audit_tail(&self) -> Option<crate::audit_file::LogTail> {
        self.audit_tail.lock().take()
    }

    /// Where the fleet's tasks report (set once, by whoever runs them).
    #[cfg(feature = "fleet")]
    pub fn set_fleet_status(&self, status: Arc<crate::fleet::FleetStatus>) {
        let _ = self.fleet_status.set(status);
    }

    /// With `[fleet]` running: shipping lag and lease, for `termshare status`.
    #[cfg(feature = "fleet")]
    pub fn fleet(&self) -> Option<crate::fleet::FleetReport> {
        self.fleet_status.get().map(|s| s.report())
    }

    /// Every terminal the host has (each session of its tmux server), shared or not.
    pub async fn terminals(&self) -> Result<Vec<termshare_actors::TerminalName>, String> {
        self.host.sessions().await
    }

    /// The service itself: for a harness that drives this and an in-process
    /// [`ShareService`] the same way. An embedder needs only the methods below.
    pub fn service(&self) -> &ShareService {
        self.service
            .as_ref()
            .expect("the service lives until shutdown")
    }

    /// Process groups of live workers (for operators and tests).
    pub fn live_process_groups(&self) -> Vec<i32> {
        self.spawner.registry().live()
    }

    /// Returns once no worker process is being prepared in the background (zygotes
    /// are made ahead of time after each start): for benchmarks, so that what they
    /// time does not share the CPU with it.
    pub async fn zygotes_ready(&self) {
        self.spawner.settled().await;
    }

    /// SIGKILL every live worker process group now (a last resort: no audit, no
    /// graceful stop).
    pub fn kill_workers(&self) {
        self.spawner.registry().kill_all();
    }

    /// Stop every share, reap every worker, flush the audit log. Any worker group still
    /// registered afterwards is killed as a backstop.
    pub async fn shutdown(mut self) -> Vec<RevokeReport> {
        let Some(service) = self.service.take() else {
            return Vec::new();
        };
        let reports = service.shutdown().await;
        self.spawner.close();
        reports
    }
}

/// The service API, as [`ShareService`] has it: each call goes to the running tree.
impl Termshare {
    /// Start a share; returns once its link is known (or the start failed).
    pub async fn share(&self, request: ShareRequest) -> Result<ShareInfo, ShareError> {
        self.service().share(request).await
    }

    /// Move a share's expiry `by` later, within its rule's `max_ttl`.
    pub async fn extend(
        &self,
        share_id: ShareId,
        by: Duration,
        caller: impl Into<Caller>,
    ) -> Result<ShareInfo, ShareError> {
        self.service().extend(share_id, by, caller).await
    }

    /// End a share now; the report says how long it took, counted from this call.
    pub async fn revoke(
        &self,
        share_id: ShareId,
        caller: impl Into<Caller>,
    ) -> Result<RevokeReport, ShareError> {
        self.service().revoke(share_id, caller).await
    }

    /// Move a live share to another backend, make-before-break.
    pub async fn switch(
        &self,
        share_id: ShareId,
        backend: BackendName,
        caller: impl Into<Caller>,
    ) -> Result<ShareInfo, ShareError> {
        self.service().switch(share_id, backend, caller).await
    }

    /// Wait until the share has ended, and say how (why, and how its worker was
    /// stopped). The future borrows nothing: spawn it, keep it, drop it.
    pub fn ended(
        &self,
        share_id: ShareId,
    ) -> impl std::future::Future<Output = Result<ShareEnd, ShareError>> + Send + 'static {
        self.service().ended(share_id)
    }

    /// Give a share a new link and cut off everyone who joined through the old one
    /// (see [`ShareService::rotate`]); tty-share behind its link front can.
    pub async fn rotate(
        &self,
        share_id: ShareId,
        caller: impl Into<Caller>,
    ) -> Result<ShareInfo, ShareError> {
        self.service().rotate(share_id, caller).await
    }

    /// Every event of a live share, typed, as it went on the record, ending with its
    /// end (see [`ShareService::events`]): not lossy for its owner.
    pub fn events(
        &self,
        share_id: ShareId,
    ) -> Result<termshare_actors::ShareEvents, termshare_actors::ShareEventsError> {
        self.service().events(share_id)
    }

    /// Every actor of termshare's tree now (see [`ShareService::actors`]).
    pub fn actors(&self) -> Vec<ractor::ActorCell> {
        self.service().actors()
    }

    /// The live shares.
    pub async fn list(&self) -> Result<Vec<ShareInfo>, ShareError> {
        self.service().list().await
    }

    /// Ask to hand a terminal to another principal through the policy's approval chain.
    pub async fn handoff_request(
        &self,
        request: HandoffRequest,
    ) -> Result<HandoffView, ShareError> {
        self.service().handoff_request(request).await
    }

    /// Approve the handoff's current step as `by`.
    pub async fn handoff_approve(
        &self,
        id: HandoffId,
        by: impl Into<Caller>,
    ) -> Result<HandoffView, ShareError> {
        self.service().handoff_approve(id, by).await
    }

    /// Deny the handoff at its current step.
    pub async fn handoff_deny(
        &self,
        id: HandoffId,
        by: impl Into<Caller>,
        reason: Option<String>,
    ) -> Result<HandoffView, ShareError> {
        self.service().handoff_deny(id, by, reason).await
    }

    /// A handoff as `caller` may see it.
    pub async fn handoff_show(
        &self,
        id: HandoffId,
        caller: impl Into<Caller>,
    ) -> Result<HandoffView, ShareError> {
        self.service().handoff_show(id, caller).await
    }

    /// The handoffs `caller` is a party to.
    pub async fn handoff_list(
        &self,
        caller: impl Into<Caller>,
    ) -> Result<Vec<HandoffView>, ShareError> {
        self.service().handoff_list(caller).await
    }

    /// Every audit event as it is kept (for display: a lagging subscriber loses events;
    /// the audit file does not).
    pub fn subscribe(&self) -> broadcast::Receiver<AuditEvent> {
        self.service().subscribe()
    }

    /// The live badge board, republished on every change.
    pub fn badges(&self) -> watch::Receiver<Badges> {
        self.service().badges()
    }

    /// The settings the tree runs with (from the config).
    pub fn settings(&self) -> &Settings {
        self.service().settings()
    }

    /// `Some(error)` while the audit sink fails to keep events.
    pub fn audit_error(&self) -> Option<String> {
        self.service().audit_error()
    }

    /// Events handed to the audit writer and not yet written.
    pub fn audit_queue(&self) -> usize {
        self.service().audit_queue()
    }

    /// Why new work is refused for the audit log's sake, if it is.
    pub fn audit_refusal(&self) -> Option<String> {
        self.service().audit_refusal()
    }
}

/// An embedder that drops termshare without `shutdown()` (or unwinds past it) leaves no
/// worker behind. Nothing can be awaited in `drop`, so the shutdown runs as a task on
/// the current runtime: every share ends as `share.stopped`, every worker is reaped.
/// Without a runtime, the workers' groups are killed at once, and the next start
/// records `share.ended` for those shares ([`crate::audit_file`]).
impl Drop for Termshare {
    fn drop(&mut self) {
        let Some(service) = self.service.take() else {
            return; // shut down properly
        };
        let spawner = self.spawner.clone();
        let instance = self._instance.clone();
        // The DbDropGuard pattern: the handle goes, the shutdown still happens. Every
        // share ends as `stopped` (on the record), every worker is reaped, then any
        // group left is killed; the spawner thread ends with its last handle.
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                tracing::warn!("termshare dropped without shutdown(): stopping its shares");
                runtime.spawn(async move {
                    service.shutdown().await;
                    spawner.close();
                    drop(instance);
                });
            }
            // No runtime to run the stop on: kill what runs, now.
            Err(_) => spawner.close(),
        }
    }
}
