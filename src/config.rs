//! The config file (TOML, every key optional). Defaults need no file at all for
//! tty-share on loopback. Relative paths are taken from the config file's directory.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use termshare_actors::settings::parse_duration;
use termshare_actors::Settings;
use thiserror::Error;

use crate::backends::tmate::TmateSettings;
use crate::backends::upterm::UptermSettings;
use crate::paths::{self, PathError};
use crate::secure_fs::UnsafePath;

mod fleet;
mod sections;
pub use fleet::{check_host_id, host_id_from_machine_id, FleetSettings};
pub use sections::*;

/// Why a config file could not be used.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file passed the safety checks but could not be read (missing, no permission).
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The config file, as given.
        path: String,
        /// The I/O error reading it.
        source: std::io::Error,
    },
    /// The file's text is not a valid config ([`ConfigError::Invalid`], with the file named).
    #[error("config file {path} is not valid: {message}")]
    Parse {
        /// The config file, as given.
        path: String,
        /// What is wrong, naming the key.
        message: String,
    },
    /// Not TOML termshare reads, or a value it cannot use (a bad duration, a limit of
    /// 0, a deadline over 5 s, ...): the message names the key.
    #[error("invalid config: {0}")]
    Invalid(String),
    /// The file could be changed by someone else: it decides who gets in, so it is
    /// not read.
    #[error("config file refused: {0}")]
    Unsafe(#[from] UnsafePath),
    /// A path the config leaves out has no default here (no `HOME` or XDG variable).
    #[error(transparent)]
    Path(#[from] PathError),
}

/// The whole config file; unknown keys are refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `link_timeout`: how long a backend may take to produce its link (default 10s).
    pub link_timeout: Option<String>,
    /// `policy`: the policy file; absent, every share is denied.
    pub policy: Option<PathBuf>,
    /// `[ttl]`: share lifetimes.
    #[serde(default)]
    pub ttl: TtlSection,
    /// `[limits]`: how many shares may run.
    #[serde(default)]
    pub limits: LimitsSection,
    /// `[revoke]`: how fast a revoke must disconnect everyone.
    #[serde(default)]
    pub revoke: RevokeSection,
    /// `[access]`: who may join a share.
    #[serde(default)]
    pub access: AccessSection,
    /// `[handoff]`: what a handoff package carries.
    #[serde(default)]
    pub handoff: HandoffSection,
    /// `[heartbeat]`: detection of hung workers.
    #[serde(default)]
    pub heartbeat: HeartbeatSection,
    /// `[terminal]`: the tmux server and the attach commands.
    #[serde(default)]
    pub terminal: TerminalSection,
    /// `[audit]`: the audit log file.
    #[serde(default)]
    pub audit: AuditSection,
    /// `[recording]`: where `--record` shares' files go.
    #[serde(default)]
    pub recording: RecordingSection,
    /// `[panel]`: the lane panel, a web page of live badges and actions.
    #[serde(default)]
    pub panel: PanelSection,
    /// `[service]`: the daemon's socket, directories, metrics and logging.
    #[serde(default)]
    pub service: ServiceSection,
    /// `[backends.*]`: each backend's program and settings.
    #[serde(default)]
    pub backends: BackendsSection,
    /// `[fleet]`: audit shipping, the fleet view and fleet revoke through PostgreSQL;
    /// absent: one host, one file, no database.
    pub fleet: Option<FleetSection>,
    /// The directory relative paths are resolved against.
    #[serde(skip)]
    pub base_dir: PathBuf,
}

fn duration(key: &str, v: &Option<String>, default: Duration) -> Result<Duration, String> {
    match v {
        None => Ok(default),
        Some(s) => parse_duration(s).map_err(|e| format!("{key} {e}")),
    }
}

impl Config {
    /// Read, parse and validate the file at `path`, refusing one others could change.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let p = path.display().to_string();
        // Read through checks: a file someone else may change is not read at all.
        let text = crate::secure_fs::read_trusted_file(path).map_err(|e| match e {
            UnsafePath::Io { source, .. } => ConfigError::Read {
                path: p.clone(),
                source,
            },
            unsafe_path => ConfigError::Unsafe(unsafe_path),
        })?;
        let mut config = Self::parse(&text).map_err(|e| match e {
            ConfigError::Invalid(message) => ConfigError::Parse {
                path: p.clone(),
                message,
            },
            other => other,
        })?;
        config.base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Ok(config)
    }

    /// Parse and validate (every duration and value is checked here, not at use).
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let config: Config =
            toml::from_str(text).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        config.settings()?;
        config.fleet().map_err(ConfigError::Invalid)?;
        Ok(config)
    }

    /// The policy the config's `policy` key names, read with the same checks as the
    /// config; with no `policy` key, the empty policy, which denies every share.
    pub fn load_policy(&self) -> Result<crate::policy::Policy, crate::policy::PolicyError> {
        match &self.policy {
            Some(p) => crate::policy::Policy::load(&self.resolve(p)),
            None => Ok(crate::policy::Policy::default()),
        }
    }

    /// `p` as given if absolute, else taken from the config file's directory.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }

    /// The actor tree's settings this config gives (defaults for what it leaves out).
    pub fn settings(&self) -> Result<Settings, ConfigError> {
        self.checked_settings().map_err(ConfigError::Invalid)
    }

    fn checked_settings(&self) -> Result<Settings, String> {
        let d = Settings::default();
        let grace = match &self.ttl.grace {
            None => d.grace.clone(),
            Some(list) => list
                .iter()
                .map(|g| duration("ttl.grace", &Some(g.clone()), Duration::ZERO))
                .collect::<Result<_, _>>()?,
        };
        let revoke_deadline =
            duration("revoke.deadline", &self.revoke.deadline, d.revoke_deadline)?;
        if revoke_deadline > Duration::from_secs(5) {
            return Err("revoke.deadline may be at most 5s".into());
        }
        let terminate_grace = duration("revoke.grace", &self.revoke.grace, d.terminate_grace)?;
        if terminate_grace >= revoke_deadline {
            // SIGKILL comes at `grace`: past the deadline, every revoke of a worker
            // that ignores SIGTERM would miss it.
            return Err(format!(
                "revoke.grace ({}) must be below revoke.deadline ({}): the kill after the grace must land within the deadline",
                termshare_actors::error::human(terminate_grace),
                termshare_actors::error::human(revoke_deadline)
            ));
        }
        let probe_interval = duration(
            "heartbeat.interval",
            &self.heartbeat.interval,
            d.probe_interval,
        )?;
        let heartbeat_timeout = duration(
            "heartbeat.timeout",
            &self.heartbeat.timeout,
            d.heartbeat_timeout,
        )?;
        if probe_interval > heartbeat_timeout {
            return Err("heartbeat.interval must not exceed heartbeat.timeout".into());
        }
        let serving_interval = duration(
            "heartbeat.serving_interval",
            &self.heartbeat.serving_interval,
            d.serving_interval,
        )?;
        if serving_interval < Duration::from_millis(100) {
            return Err("heartbeat.serving_interval must be at least 100ms".into());
        }
        let per_terminal_limit = self.limits.per_terminal.unwrap_or(d.per_terminal_limit);
        if per_terminal_limit == 0 {
            return Err("limits.per_terminal must be at least 1".into());
        }
        for (key, argv) in [
            ("terminal.attach", &self.terminal.attach),
            ("terminal.attach_read_only", &self.terminal.attach_read_only),
        ] {
            if let Some(argv) = argv {
                if argv.is_empty() || argv[0].is_empty() {
                    return Err(format!("{key} must name a program"));
                }
            }
        }
        self.metrics_addr()?;
        if let Some(ip) = self.backends.tty_share.listen {
            if !ip.is_loopback() && !self.backends.tty_share.expose_beyond_loopback {
                return Err(format!(
                    "backends.tty_share.listen = \"{ip}\" is reachable from other hosts; \
                     set backends.tty_share.expose_beyond_loopback = true if that is meant"
                ));
            }
        }
        for (key, path) in [
            ("terminal.tmux", &self.terminal.tmux),
            (
                "backends.tty_share.program",
                &self.backends.tty_share.program,
            ),
            ("backends.tmate.program", &self.backends.tmate.program),
        ] {
            if path.as_ref().is_some_and(|p| !p.is_absolute()) {
                return Err(format!("{key} must be an absolute path"));
            }
        }
        if let Some(s) = &self.backends.upterm.server {
            if !(s.starts_with("ssh://") || s.starts_with("ws://") || s.starts_with("wss://")) {
                return Err(format!(
                    "backends.upterm.server `{s}` must be an ssh://, ws:// or wss:// URL"
                ));
            }
        }
        if let Some(key) = &self.backends.upterm.server_ca_key {
            crate::backends::upterm::check_ca_key(key)
                .map_err(|e| format!("backends.upterm.{e}"))?;
        }
        Ok(Settings {
            default_ttl: duration("ttl.default", &self.ttl.default, d.default_ttl)?,
            default_join_timeout: match &self.ttl.join_timeout {
                None => None,
                Some(_) => Some(duration(
                    "ttl.join_timeout",
                    &self.ttl.join_timeout,
                    Duration::ZERO,
                )?),
            },
            grace,
            per_terminal_limit,
            link_timeout: duration("link_timeout", &self.link_timeout, d.link_timeout)?,
            revoke_deadline,
            terminate_grace,
            require_join_restriction: self.access.require_join_restriction,
            probe_interval,
            heartbeat_timeout,
            serving_interval,
            handoff_scrollback_lines: match self.handoff.scrollback_lines {
                Some(0) => return Err("handoff.scrollback_lines must be at least 1".into()),
                Some(n) if n > 100_000 => {
                    return Err("handoff.scrollback_lines may be at most 100000".into())
                }
                Some(n) => n,
                None => d.handoff_scrollback_lines,
            },
            ..d
        })
    }

    /// The tmate backend's settings, paths resolved.
    pub fn tmate(&self) -> TmateSettings {
        let t = &self.backends.tmate;
        TmateSettings {
            server_host: t.server_host.clone(),
            server_port: t.server_port,
            server_rsa_fingerprint: t.server_rsa_fingerprint.clone(),
            server_ed25519_fingerprint: t.server_ed25519_fingerprint.clone(),
            authorized_keys: t.authorized_keys.as_deref().map(|p| self.resolve(p)),
        }
    }

    /// The upterm backend's settings, defaults filled in and paths resolved.
    pub fn upterm(&self) -> UptermSettings {
        let u = &self.backends.upterm;
        let d = UptermSettings::default();
        UptermSettings {
            program: u.program.clone().unwrap_or(d.program),
            server: u.server.clone().unwrap_or(d.server),
            server_ca_key: u.server_ca_key.clone(),
            known_hosts: u.known_hosts.as_deref().map(|p| self.resolve(p)),
            private_key: u.private_key.as_deref().map(|p| self.resolve(p)),
            authorized_keys: u.authorized_keys.as_deref().map(|p| self.resolve(p)),
            github_users: u.github_users.clone(),
        }
    }

    /// `--socket`, else `[service] socket`, else `$XDG_RUNTIME_DIR/termshare.sock` (or
    /// the state directory's, without XDG_RUNTIME_DIR).
    pub fn socket_path(&self, flag: Option<&Path>) -> Result<PathBuf, PathError> {
        match flag
            .map(Path::to_path_buf)
            .or_else(|| self.service.socket.as_deref().map(|p| self.resolve(p)))
        {
            Some(p) => Ok(p),
            None => paths::default_socket(),
        }
    }

    /// `[service] runtime_dir`, else the default runtime directory.
    pub fn runtime_dir(&self) -> Result<PathBuf, PathError> {
        match &self.service.runtime_dir {
            Some(p) => Ok(self.resolve(p)),
            None => paths::runtime_dir("service.runtime_dir"),
        }
    }

    /// `[service] metrics`, checked to be a loopback `HOST:PORT`.
    pub fn metrics_addr(&self) -> Result<Option<std::net::SocketAddr>, String> {
        let Some(s) = &self.service.metrics else {
            return Ok(None);
        };
        let addr: std::net::SocketAddr = s
            .parse()
            .map_err(|_| format!("service.metrics `{s}` must be IP:PORT, e.g. 127.0.0.1:9464"))?;
        if !addr.ip().is_loopback() {
            return Err(format!("service.metrics `{s}` must be a loopback address"));
        }
        Ok(Some(addr))
    }

    /// `[panel] listen`, checked: loopback unless `expose_beyond_loopback = true`.
    /// `None`: the daemon serves no panel.
    pub fn panel_addr(&self) -> Result<Option<std::net::SocketAddr>, String> {
        let Some(s) = &self.panel.listen else {
            return Ok(None);
        };
        let addr: std::net::SocketAddr = s
            .parse()
            .map_err(|_| format!("panel.listen `{s}` must be IP:PORT, e.g. 127.0.0.1:7681"))?;
        if addr.ip().is_unspecified() {
            // The page only answers requests for its own address (DNS rebinding):
            // it must have one.
            return Err(format!(
                "panel.listen `{s}` must name one address (e.g. 127.0.0.1:7681), not all of them"
            ));
        }
        if !addr.ip().is_loopback() && !self.panel.expose_beyond_loopback {
            return Err(format!(
                "panel.listen `{s}` is not a loopback address: the panel is plain HTTP; \
                 set [panel] expose_beyond_loopback = true to serve it there anyway"
            ));
        }
        Ok(Some(addr))
    }

    /// `[fleet]`, checked: the database string is there, the host id is a plain
    /// name, the lease a duration of 1s to 1h. `None`: no fleet.
    pub fn fleet(&self) -> Result<Option<FleetSettings>, String> {
        let Some(f) = &self.fleet else {
            return Ok(None);
        };
        let database = match f.database.as_deref().map(str::trim) {
            Some(d) if !d.is_empty() => d.to_owned(),
            _ => {
                return Err(
                    "fleet.database is required in [fleet]: a libpq URI or key=value string".into(),
                )
            }
        };
        let host_id = match &f.host_id {
            Some(h) => check_host_id(h).map_err(|why| format!("fleet.host_id `{h}`: {why}"))?,
            None => host_id_from_machine_id(Path::new("/etc/machine-id"))
                .map_err(|e| format!("fleet.host_id is not set and {e}; set it"))?,
        };
        let lease = duration("fleet.lease", &f.lease, Duration::from_secs(10))?;
        if !(Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&lease) {
            return Err(format!(
                "fleet.lease must be from 1s to 1h, not {}",
                humantime::format_duration(lease)
            ));
        }
        Ok(Some(FleetSettings {
            database,
            host_id,
            lease,
        }))
    }

    /// Where recordings go: `[recording] dir`, else the state directory's
    /// `recordings/`.
    pub fn recordings_dir(&self) -> Result<PathBuf, PathError> {
        match &self.recording.dir {
            Some(p) => Ok(self.resolve(p)),
            None => paths::state_dir("recording.dir").map(|d| d.join("recordings")),
        }
    }

    /// The audit log's path: `[audit] path`, else the state directory's `audit.jsonl`.
    pub fn audit_path(&self) -> Result<PathBuf, PathError> {
        match &self.audit.path {
            Some(p) => Ok(self.resolve(p)),
            None => paths::state_dir("audit.path").map(|d| d.join("audit.jsonl")),
        }
    }
}

#[cfg(test)]
mod tests;
