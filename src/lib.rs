//! termshare: share a live terminal safely.
//!
//! The supervision tree lives in [`termshare_actors`] (re-exported as [`actors`]); this
//! crate is the real-world side: backend adapters over OS processes ([`backends`],
//! [`process`]), the host terminal ([`terminal`]), the policy file ([`policy`]), the
//! config file ([`config`]), the audit file ([`audit_file`]), the daemon and its
//! protocol ([`daemon`], [`protocol`], [`client`]), and [`Termshare`], which wires them
//! into a running service.
//!
//! A runtime links this crate and drives [`Termshare`]: start it from a [`Config`] and
//! a [`Policy`], then `share`, `list`, `extend`, `switch`, `revoke` (all on
//! [`termshare_actors::ShareService`], which `Termshare` derefs to), follow `badges()`
//! and `subscribe()`, and `shutdown()` at the end. `examples/embed.rs` is a complete,
//! runnable program (`cargo run --example embed`).

pub mod audit_file;
pub mod backends;
pub mod client;
pub mod config;
pub mod daemon;
pub mod exit;
pub mod metrics_endpoint;
pub mod netdiag;
pub mod policy;
pub mod process;
pub mod protocol;
pub mod terminal;

use std::sync::Arc;

pub use termshare_actors as actors;
use termshare_actors::{Backend, RevokeReport, ServiceDeps, ShareService};
use thiserror::Error;

use crate::audit_file::JsonlFileSink;
use crate::backends::tmate::TmateBackend;
use crate::backends::tty_share::TtyShareBackend;
use crate::backends::upterm::UptermBackend;
use crate::config::Config;
use crate::policy::Policy;
use crate::process::ProcessSpawner;
use crate::terminal::TmuxHost;

#[derive(Debug, Error)]
pub enum StartError {
    #[error("invalid config: {0}")]
    Config(String),
    #[error("cannot open the audit log {path}: {source}")]
    Audit {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot start the process spawner: {0}")]
    Spawner(std::io::Error),
    #[error(transparent)]
    Service(#[from] termshare_actors::ShareError),
}

/// A running termshare subsystem: the supervision tree with the real backends.
pub struct Termshare {
    service: ShareService,
    spawner: Arc<ProcessSpawner>,
}

impl Termshare {
    /// Start from a config and a policy. Must run inside a multi-threaded tokio runtime.
    pub async fn start(config: &Config, policy: Policy) -> Result<Self, StartError> {
        Self::start_with(config, policy, |_, backends| backends).await
    }

    /// Like [`Termshare::start`], but `wrap` may replace or wrap the real backends
    /// before the tree sees them (the chaos harness injects faults this way: through
    /// the same `Backend` trait, over the same production code paths).
    pub async fn start_with(
        config: &Config,
        policy: Policy,
        wrap: impl FnOnce(&Arc<ProcessSpawner>, Vec<Arc<dyn Backend>>) -> Vec<Arc<dyn Backend>>,
    ) -> Result<Self, StartError> {
        let settings = config.settings().map_err(StartError::Config)?;
        let spawner = ProcessSpawner::new().map_err(StartError::Spawner)?;
        let listen = config
            .backends
            .tty_share
            .listen
            .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
        let backends: Vec<Arc<dyn Backend>> = vec![
            Arc::new(TtyShareBackend::new(spawner.clone(), listen)),
            Arc::new(TmateBackend::new(spawner.clone(), config.tmate())),
            Arc::new(UptermBackend::new(spawner.clone(), config.upterm())),
        ];
        let backends = wrap(&spawner, backends);
        let mut host = TmuxHost::new(
            config
                .terminal
                .tmux_socket
                .as_deref()
                .map(|p| config.resolve(p)),
        );
        if let Some(a) = &config.terminal.attach {
            host.attach = a.clone();
        }
        if let Some(a) = &config.terminal.attach_read_only {
            host.attach_read_only = a.clone();
        }
        let audit_path = config.audit_path();
        let sink = JsonlFileSink::open(&audit_path, config.audit.durability.unwrap_or_default())
            .map_err(|source| StartError::Audit {
                path: audit_path.display().to_string(),
                source,
            })?;
        let service = ShareService::start(
            ServiceDeps {
                backends,
                policy: Arc::new(policy),
                host: Arc::new(host),
                audit_sink: Box::new(sink),
            },
            settings,
        )
        .await?;
        Ok(Termshare { service, spawner })
    }

    pub fn service(&self) -> &ShareService {
        &self.service
    }

    /// Process groups of live workers (for operators and tests).
    pub fn live_process_groups(&self) -> Vec<i32> {
        self.spawner.registry().live()
    }

    /// SIGKILL every live worker process group now (a last resort: no audit, no
    /// graceful stop).
    pub fn kill_workers(&self) {
        self.spawner.registry().kill_all();
    }

    /// Stop every share, reap every worker, flush the audit log. Any worker group still
    /// registered afterwards is killed as a backstop.
    pub async fn shutdown(self) -> Vec<RevokeReport> {
        let reports = self.service.shutdown().await;
        self.spawner.registry().kill_all();
        reports
    }
}

impl std::ops::Deref for Termshare {
    type Target = ShareService;
    fn deref(&self) -> &ShareService {
        &self.service
    }
}
