//! How a [`Termshare`] is started: [`Termshare::start`] for a config as it is, and
//! [`Builder`] for a policy built in code, a supervisor to link under, or backends
//! wrapped by a test harness.

use std::sync::Arc;

use termshare_actors::{Backend, ServiceDeps, ShareService};
use thiserror::Error;

use super::Termshare;
use crate::audit_file::JsonlFileSink;
use crate::backends::tmate::TmateBackend;
use crate::backends::upterm::UptermBackend;
use crate::config::{Config, ConfigError};
use crate::paths::{InstanceDir, PathError};
use crate::policy::{Policy, PolicyError};
use crate::process::ProcessSpawner;
use crate::programs::{tmux_host, Programs};
use crate::secure_fs::UnsafePath;

/// Why termshare did not start. Nothing is left running after any of these.
#[derive(Debug, Error)]
pub enum StartError {
    /// The config holds a value termshare cannot use.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The config's `policy` file could not be read or is not a valid policy.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// A path the config gives (or its default) cannot be used.
    #[error(transparent)]
    Path(#[from] PathError),
    /// A program the host terminal needs (tmux, an attach command) is not there.
    #[error("{key}: {reason}")]
    Program {
        /// The config key that names it (or would).
        key: String,
        /// What was found instead.
        reason: String,
    },
    /// The audit log cannot be opened safely.
    #[error("cannot open the audit log {path}: {source}")]
    Audit {
        /// The audit log's path.
        path: String,
        /// What was wrong with it.
        source: UnsafePath,
    },
    /// The private runtime directory for the backends' files cannot be made safely.
    #[error("cannot make termshare's runtime directory: {0}")]
    Runtime(UnsafePath),
    /// The thread every worker is forked from could not be started.
    #[error("cannot start the process spawner: {0}")]
    Spawner(std::io::Error),
    /// The supervision tree did not start.
    #[error(transparent)]
    Service(#[from] termshare_actors::ShareError),
}

/// Replaces or wraps the real backends before the tree sees them.
type WrapBackends =
    Box<dyn FnOnce(&Arc<ProcessSpawner>, Vec<Arc<dyn Backend>>) -> Vec<Arc<dyn Backend>> + Send>;

/// Starts a [`Termshare`] with more than a config: made by [`Termshare::builder`].
#[must_use = "a builder does nothing until `start` is awaited"]
pub struct Builder<'a> {
    /// Settings, paths, backends' options.
    config: &'a Config,
    /// `None`: the config's own `policy` file (no file: every share is denied).
    policy: Option<Policy>,
    /// The embedder's ractor supervisor, when linked.
    supervisor: Option<ractor::ActorCell>,
    /// A harness's hook over the real backends.
    wrap: Option<WrapBackends>,
    /// `None`: resolved when `start` runs.
    programs: Option<Programs>,
}

impl Termshare {
    /// Start from a config as it is: its settings, and the policy its `policy` key
    /// names (none: every share is denied, as termshare fails closed).
    pub async fn start(config: &Config) -> Result<Self, StartError> {
        Self::builder(config).start().await
    }

    /// A [`Builder`], for a policy built in code or a supervisor to link under.
    pub fn builder(config: &Config) -> Builder<'_> {
        Builder {
            config,
            policy: None,
            supervisor: None,
            wrap: None,
            programs: None,
        }
    }
}

impl<'a> Builder<'a> {
    /// Use this policy instead of the config's `policy` file (a [`Policy::builder`]
    /// one, or one parsed by the embedder).
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = Some(policy);
        self
    }

    /// Run these programs, resolved earlier. A daemon resolves them before its socket
    /// answers: "a binary planted in `PATH` after termshare started never runs" must
    /// hold from the first moment anyone can reach it, not from a moment later.
    pub fn programs(mut self, programs: Programs) -> Self {
        self.programs = Some(programs);
        self
    }

    /// Link termshare's top actors under the runtime's own ractor `supervisor`: it
    /// receives their supervision events (a termshare failure is its to handle), and
    /// when it dies, stopped or killed, they die with it, and with them every share's
    /// worker.
    pub fn linked(mut self, supervisor: ractor::ActorCell) -> Self {
        self.supervisor = Some(supervisor);
        self
    }

    /// Let `wrap` replace or wrap the real backends before the tree sees them (the
    /// chaos harness injects faults this way: through the same `Backend` trait, over
    /// the same production code paths).
    pub fn wrap_backends(
        mut self,
        wrap: impl FnOnce(&Arc<ProcessSpawner>, Vec<Arc<dyn Backend>>) -> Vec<Arc<dyn Backend>>
            + Send
            + 'static,
    ) -> Self {
        self.wrap = Some(Box::new(wrap));
        self
    }

    /// Start the subsystem: the supervision tree, the real backends, the audit file.
    /// Returns once every top actor is up. Needs a tokio runtime (multi-threaded or
    /// current-thread; the workers are reaped by it).
    pub async fn start(self) -> Result<Termshare, StartError> {
        let Builder {
            config,
            policy,
            supervisor,
            wrap,
            programs,
        } = self;
        let settings = config.settings()?;
        let policy = match policy {
            Some(policy) => policy,
            None => config.load_policy()?,
        };
        let spawner = ProcessSpawner::new().map_err(StartError::Spawner)?;
        let instance =
            Arc::new(InstanceDir::create(&config.runtime_dir()?).map_err(StartError::Runtime)?);
        let programs = programs.unwrap_or_else(|| Programs::resolve(config));
        let backends: Vec<Arc<dyn Backend>> = vec![
            tty_share_backend(config, &spawner, programs.tty_share),
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
        let backends = match wrap {
            Some(wrap) => wrap(&spawner, backends),
            None => backends,
        };
        let host = Arc::new(tmux_host(config, programs.tmux, spawner.env().clone())?);
        let audit_path = config.audit_path()?;
        let audit_err = |source| StartError::Audit {
            path: audit_path.display().to_string(),
            source,
        };
        let sink = JsonlFileSink::open(&audit_path, config.audit.durability.unwrap_or_default())
            .map_err(audit_err)?;
        let fingerprint_key =
            crate::audit_file::load_fingerprint_key(&audit_path).map_err(audit_err)?;
        // With `[fleet]`, the shipper follows what the sink commits.
        #[cfg(feature = "fleet")]
        let audit_tail = match config.fleet.is_some() {
            true => Some(sink.tail().map_err(|source| {
                audit_err(UnsafePath::Io {
                    path: audit_path.clone(),
                    source,
                })
            })?),
            false => None,
        };
        let deps = ServiceDeps {
            backends,
            policy: Arc::new(policy),
            host: host.clone(),
            audit_sink: Box::new(sink),
            fingerprint_key,
        };
        let service = match supervisor {
            Some(sup) => ShareService::start_linked(deps, settings, sup).await?,
            None => ShareService::start(deps, settings).await?,
        };
        Ok(Termshare::from_parts(
            service,
            spawner,
            host,
            instance,
            #[cfg(feature = "fleet")]
            audit_tail,
        ))
    }
}

/// The tty-share adapter as the config asks for it.
#[cfg(feature = "tty-share")]
fn tty_share_backend(
    config: &Config,
    spawner: &Arc<ProcessSpawner>,
    program: crate::launch::Resolved,
) -> Arc<dyn Backend> {
    use crate::backends::tty_share::{Isolation, TtyShareBackend};
    let tty = &config.backends.tty_share;
    let listen = tty
        .listen
        .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
    let isolation = if tty.local_users_may_join {
        Isolation::LocalUsersMayJoin
    } else {
        Isolation::PrivateNetwork
    };
    Arc::new(TtyShareBackend::new(
        spawner.clone(),
        program,
        listen,
        isolation,
    ))
}

/// Without the `tty-share` feature its shares are refused at admission, with the reason.
#[cfg(not(feature = "tty-share"))]
fn tty_share_backend(
    _config: &Config,
    _spawner: &Arc<ProcessSpawner>,
    _program: crate::launch::Resolved,
) -> Arc<dyn Backend> {
    Arc::new(crate::backends::not_built::NotBuilt {
        name: crate::backends::TTY_SHARE,
        feature: "tty-share",
    })
}
