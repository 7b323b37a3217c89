//! Starting [`ShareService`]: the AuditActor first (everything after it is audited),
//! then the RootSupervisor and the HandoffManager, on their own or linked under a
//! runtime's supervisor.

use std::collections::HashMap;
use std::sync::Arc;

use ractor::{Actor, ActorCell, ActorRef};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use super::{ServiceDeps, ShareService};
use crate::audit::{AuditActor, AuditArgs, AuditHealth, ShareFeeds};
use crate::error::ShareError;
use crate::handoff::{HandoffArgs, HandoffManager};
use crate::root::{RootArgs, RootSupervisor};
use crate::settings::Settings;
use crate::traits::Backend;
use crate::types::BackendName;

/// Spawn an actor on its own, or linked under `supervisor`.
async fn spawn<A: Actor>(
    actor: A,
    args: A::Arguments,
    supervisor: Option<&ActorCell>,
) -> Result<(ActorRef<A::Msg>, JoinHandle<()>), ShareError> {
    match supervisor {
        Some(sup) => Actor::spawn_linked(None, actor, args, sup.clone()).await,
        None => Actor::spawn(None, actor, args).await,
    }
    .map_err(ShareError::internal)
}

impl ShareService {
    /// Start the tree on its own (its actors supervised by nobody but each other).
    /// Stop it with [`ShareService::shutdown`].
    pub async fn start(deps: ServiceDeps, settings: Settings) -> Result<Self, ShareError> {
        Self::start_with(deps, settings, None).await
    }

    /// Start the tree linked under the caller's own ractor `supervisor`: it receives
    /// the supervision events of termshare's top actors (the root, the audit log, the
    /// handoff manager), so a termshare failure is the runtime's to handle, and when
    /// the supervisor dies its children die with it (and with them every share's
    /// worker, whose process group its guard kills).
    pub async fn start_linked(
        deps: ServiceDeps,
        settings: Settings,
        supervisor: ActorCell,
    ) -> Result<Self, ShareError> {
        Self::start_with(deps, settings, Some(supervisor)).await
    }

    async fn start_with(
        deps: ServiceDeps,
        settings: Settings,
        supervisor: Option<ActorCell>,
    ) -> Result<Self, ShareError> {
        let sup = supervisor.as_ref();
        let (events, _) = broadcast::channel(1024);
        let feeds = Arc::new(ShareFeeds::default());
        let audit_health = Arc::new(AuditHealth::default());
        let (audit, audit_task) = spawn(
            AuditActor,
            AuditArgs {
                sink: deps.audit_sink,
                subscribers: events.clone(),
                feeds: feeds.clone(),
                health: audit_health.clone(),
                max_batch: settings.audit_max_batch,
            },
            sup,
        )
        .await?;
        let (board, badges) = crate::badge::BadgeBoard::new();
        let backends: HashMap<BackendName, Arc<dyn Backend>> =
            deps.backends.into_iter().map(|b| (b.name(), b)).collect();
        let backend_names: Vec<BackendName> = backends.keys().cloned().collect();
        let (root, root_task) = spawn(
            RootSupervisor,
            RootArgs {
                backends,
                policy: deps.policy.clone(),
                host: deps.host.clone(),
                audit: audit.clone(),
                settings: settings.clone(),
                board: board.clone(),
                fingerprints: deps.fingerprint_key,
                audit_health: audit_health.clone(),
            },
            sup,
        )
        .await?;
        let (handoffs, handoffs_task) = spawn(
            HandoffManager,
            HandoffArgs {
                policy: deps.policy,
                host: deps.host.clone(),
                audit: audit.clone(),
                root: root.clone(),
                audit_timeout: settings.audit_timeout,
                scrollback_lines: settings.handoff_scrollback_lines,
                share_timeout: settings.start_budget(),
                backends: backend_names,
                audit_health: audit_health.clone(),
                board,
                max_pending: settings.max_pending_handoffs,
                max_pending_per_requester: settings.max_pending_handoffs_per_requester,
            },
            sup,
        )
        .await?;
        Ok(ShareService {
            root,
            handoffs,
            handoffs_task,
            root_task,
            audit,
            audit_task,
            events,
            feeds,
            badges,
            audit_health,
            host: deps.host.clone(),
            in_flight: Arc::new(tokio::sync::Semaphore::new(settings.max_in_flight.max(1))),
            ends_in_flight: Arc::new(tokio::sync::Semaphore::new(settings.max_in_flight.max(1))),
            settings,
        })
    }
}
