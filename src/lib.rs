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
pub mod launch;
pub mod limits;
pub mod metrics_endpoint;
pub mod netdiag;
pub mod netns;
pub mod paths;
pub mod policy;
pub mod process;
pub mod protocol;
pub mod secure_fs;
pub mod terminal;

use std::sync::Arc;

pub use termshare_actors as actors;
use termshare_actors::{Backend, RevokeReport, ServiceDeps, ShareService};
use thiserror::Error;

use crate::audit_file::JsonlFileSink;
use crate::backends::tmate::TmateBackend;
use crate::backends::tty_share::{Isolation, TtyShareBackend};
use crate::backends::upterm::UptermBackend;
use crate::config::Config;
use crate::launch::Resolved;
use crate::paths::{InstanceDir, PathError};
use crate::policy::Policy;
use crate::process::ProcessSpawner;
use crate::secure_fs::UnsafePath;
use crate::terminal::TmuxHost;

#[derive(Debug, Error)]
pub enum StartError {
    #[error("invalid config: {0}")]
    Config(String),
    #[error(transparent)]
    Path(#[from] PathError),
    #[error("cannot open the audit log {path}: {source}")]
    Audit { path: String, source: UnsafePath },
    #[error("cannot make termshare's runtime directory: {0}")]
    Runtime(UnsafePath),
    #[error("cannot start the process spawner: {0}")]
    Spawner(std::io::Error),
    #[error(transparent)]
    Service(#[from] termshare_actors::ShareError),
}

/// A running termshare subsystem: the supervision tree with the real backends.
pub struct Termshare {
    /// `None` only once `shutdown` has taken it.
    service: Option<ShareService>,
    spawner: Arc<ProcessSpawner>,
    /// Backends' scratch directories live here; removed when termshare stops.
    _instance: Arc<InstanceDir>,
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
        let instance =
            Arc::new(InstanceDir::create(&config.runtime_dir()?).map_err(StartError::Runtime)?);
        let programs = Programs::resolve(config);
        let tty = &config.backends.tty_share;
        let listen = tty
            .listen
            .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
        let isolation = if tty.local_users_may_join {
            Isolation::LocalUsersMayJoin
        } else {
            Isolation::PrivateNetwork
        };
        let backends: Vec<Arc<dyn Backend>> = vec![
            Arc::new(TtyShareBackend::new(
                spawner.clone(),
                programs.tty_share,
                listen,
                isolation,
            )),
            Arc::new(TmateBackend::new(
                spawner.clone(),
                config.tmate(),
                programs.tmate,
                instance.clone(),
            )),
            Arc::new(UptermBackend::new(
                spawner.clone(),
                config.upterm(),
                programs.upterm,
                instance.clone(),
            )),
        ];
        let backends = wrap(&spawner, backends);
        let host = tmux_host(config, programs.tmux, spawner.env().clone())?;
        let audit_path = config.audit_path()?;
        let audit_err = |source| StartError::Audit {
            path: audit_path.display().to_string(),
            source,
        };
        let sink = JsonlFileSink::open(&audit_path, config.audit.durability.unwrap_or_default())
            .map_err(audit_err)?;
        let fingerprint_key = audit_file::load_fingerprint_key(&audit_path).map_err(audit_err)?;
        let service = ShareService::start(
            ServiceDeps {
                backends,
                policy: Arc::new(policy),
                host: Arc::new(host),
                audit_sink: Box::new(sink),
                fingerprint_key,
            },
            settings,
        )
        .await?;
        Ok(Termshare {
            service: Some(service),
            spawner,
            _instance: instance,
        })
    }

    pub fn service(&self) -> &ShareService {
        self.service
            .as_ref()
            .expect("the service lives until shutdown")
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
    pub async fn shutdown(mut self) -> Vec<RevokeReport> {
        let Some(service) = self.service.take() else {
            return Vec::new();
        };
        let reports = service.shutdown().await;
        self.spawner.registry().kill_all();
        reports
    }
}

/// The programs termshare runs, resolved once at start (config pins win over `PATH`).
pub struct Programs {
    pub tmux: Resolved,
    pub tty_share: Resolved,
    pub tmate: Resolved,
    pub upterm: Resolved,
}

impl Programs {
    pub fn resolve(config: &Config) -> Programs {
        Programs {
            tmux: Resolved::resolve("tmux", config.terminal.tmux.as_deref()),
            tty_share: Resolved::resolve(
                backends::tty_share::NAME,
                config.backends.tty_share.program.as_deref(),
            ),
            tmate: Resolved::resolve(
                backends::tmate::NAME,
                config.backends.tmate.program.as_deref(),
            ),
            upterm: {
                let program = config.upterm().program;
                let pinned = program
                    .contains('/')
                    .then(|| std::path::PathBuf::from(&program));
                Resolved::resolve(&program, pinned.as_deref())
            },
        }
    }
}

/// The tmux host of `config`: its server's socket, and the attach templates with their
/// program resolved to an absolute path (a `tmux` template also names the socket).
fn tmux_host(
    config: &Config,
    tmux: Resolved,
    env: Arc<launch::CleanEnv>,
) -> Result<TmuxHost, StartError> {
    let tmux = tmux
        .path()
        .map(std::path::Path::to_path_buf)
        .ok_or_else(|| StartError::Config(format!("tmux: {}", tmux.describe())))?;
    let socket = match &config.terminal.tmux_socket {
        Some(p) => config.resolve(p),
        None => TmuxHost::default_socket(),
    };
    let host = TmuxHost::new(tmux.clone(), socket.clone(), env);
    if config.terminal.attach.is_none() && config.terminal.attach_read_only.is_none() {
        return Ok(host);
    }
    let resolve = |key: &str, argv: &[String]| -> Result<Vec<String>, StartError> {
        let mut argv = argv.to_vec();
        if argv.first().map(String::as_str) == Some("tmux") {
            argv[0] = tmux.to_string_lossy().into_owned();
            if !argv.iter().any(|a| a == "-S" || a == "-L") {
                argv.splice(
                    1..1,
                    ["-S".to_string(), socket.to_string_lossy().into_owned()],
                );
            }
        } else if let Some(first) = argv.first_mut() {
            let found = Resolved::resolve(first, None);
            *first = found
                .path()
                .ok_or_else(|| StartError::Config(format!("{key}: {}", found.describe())))?
                .to_string_lossy()
                .into_owned();
        }
        Ok(argv)
    };
    let rw = match &config.terminal.attach {
        Some(a) => resolve("terminal.attach", a)?,
        None => host.attach_template(false).to_vec(),
    };
    let ro = match &config.terminal.attach_read_only {
        Some(a) => resolve("terminal.attach_read_only", a)?,
        None => host.attach_template(true).to_vec(),
    };
    Ok(host.with_attach(rw, ro))
}

/// An embedder that drops termshare without `shutdown()` (or unwinds past it) leaves no
/// worker behind: every live worker's process group is killed here, at once. Nothing
/// can be awaited in `drop`, so these ends are not recorded as revokes: the shares'
/// sessions record the workers' exits if the runtime still runs, and otherwise the next
/// start records `share.ended` for them ([`audit_file`]).
impl Drop for Termshare {
    fn drop(&mut self) {
        if self.service.is_none() {
            return; // shut down properly
        }
        let live = self.spawner.registry().live();
        if !live.is_empty() {
            tracing::warn!(
                groups = live.len(),
                "termshare dropped without shutdown(): killing its workers"
            );
            self.spawner.registry().kill_all();
        }
    }
}

impl std::ops::Deref for Termshare {
    type Target = ShareService;
    fn deref(&self) -> &ShareService {
        self.service()
    }
}
