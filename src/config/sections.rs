//! The config file's sections, one struct per `[table]`, as serde reads them. Every
//! key is optional; defaults and checks are applied by [`super::Config::settings`].

use std::net::IpAddr;
use std::path::PathBuf;

use serde::Deserialize;

/// `[ttl]`: how long shares live and when their hosts are warned.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TtlSection {
    /// `default`: the TTL of a share that asks for none (default 30m).
    pub default: Option<String>,
    /// `grace`: send a warning this long before expiry, per entry (default `["5m", "1m"]`).
    pub grace: Option<Vec<String>>,
    /// `join_timeout`: a share nobody joined within this ends (default none); only for
    /// backends that count participants (tty-share), and only if shorter than the TTL.
    pub join_timeout: Option<String>,
}

/// `[limits]`: how many shares may run at once.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    /// `per_terminal`: live shares per terminal, at least 1 (default 1); a rule may lower it.
    pub per_terminal: Option<u32>,
}

/// `[revoke]`: `deadline` (default 5s, at most 5s) and `grace` before SIGKILL (1s).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeSection {
    /// `deadline`: a revoke must have disconnected everyone within this (default 5s, max 5s).
    pub deadline: Option<String>,
    /// `grace`: SIGTERM-to-SIGKILL wait for a worker, below `deadline` (default 1s).
    pub grace: Option<String>,
}

/// `[heartbeat]`: a worker that does not run (SIGSTOP) for `timeout` (default 3s), or
/// runs but does not answer its serving probe for that long, is killed and its share
/// fails. Real workers' stops come from the kernel (SIGCHLD): seen at the timeout,
/// with nothing polled meanwhile. The serving probe (a request to the worker) runs
/// every `serving_interval` (default 10s, spread over the shares: it is what an idle
/// share costs; after a failure it retries every third of the timeout), so a worker
/// that runs but stopped serving is seen within
/// `serving_interval + timeout + timeout/3 + 1 s` (each probe's own bound is 1 s). `interval` paces the process probe of workers
/// the kernel cannot watch (in-process ones).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatSection {
    /// `interval`: how often each worker is probed, at most `timeout` (default 100ms).
    pub interval: Option<String>,
    /// `timeout`: a worker not answering this long is killed (default 3s).
    pub timeout: Option<String>,
    /// `serving_interval`: how often each worker's serving probe runs (default 10s,
    /// at least 100ms).
    pub serving_interval: Option<String>,
}

/// `[handoff]`: `scrollback_lines` (default 200) a handoff package carries.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HandoffSection {
    /// `scrollback_lines`: scrollback lines in a handoff package, 1 to 100000 (default 200).
    pub scrollback_lines: Option<usize>,
}

/// `[access]`: `require_join_restriction = true` refuses backends anyone with the link
/// can join (tty-share; tmate and upterm without authorized keys or GitHub users).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessSection {
    /// `require_join_restriction`: refuse backends anyone with the link can join (default false).
    #[serde(default)]
    pub require_join_restriction: bool,
}

/// `[terminal]`: the tmux server shares attach to, and the attach commands.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TerminalSection {
    /// The tmux binary (default: `tmux` found in PATH when termshare starts).
    pub tmux: Option<PathBuf>,
    /// `tmux_socket`: the tmux server's socket (default `$TMUX_TMPDIR/tmux-UID/default`).
    pub tmux_socket: Option<PathBuf>,
    /// `attach`: argv of read-write shares, `{terminal}` replaced (default: tmux attach-session).
    pub attach: Option<Vec<String>>,
    /// `attach_read_only`: argv of read-only shares (default: tmux attach-session -r).
    pub attach_read_only: Option<Vec<String>>,
}

/// `[audit]`: where and how the audit log is written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSection {
    /// `path`: the JSONL log (default `audit.jsonl` in the state directory).
    pub path: Option<PathBuf>,
    /// `durability`: when appends are fsynced (default `durable`).
    pub durability: Option<Durability>,
}

/// `[audit] durability`: how soon an audit event is on disk.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// `durable`: each batch is fsynced before its events are acknowledged.
    #[default]
    Durable,
    /// `batched`: fsync at most once a second; events are acknowledged before it.
    Batched,
}

/// `[service]`: the daemon's socket, directories, metrics and logging.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSection {
    /// `socket`: the daemon's socket (default `$XDG_RUNTIME_DIR/termshare.sock`).
    pub socket: Option<PathBuf>,
    /// Let members of this group reach the daemon (socket 0660, its directory 0750,
    /// both that group). Absent: only the daemon's own user can.
    pub socket_group: Option<String>,
    /// For clients: the user the daemon on `socket` runs as, when it is not you (a
    /// shared daemon). The client refuses a socket whose directory or daemon belongs to
    /// anyone else.
    pub daemon_user: Option<String>,
    /// Where running instances keep their private directories (default:
    /// `$XDG_RUNTIME_DIR/termshare`, else the state directory's `run/`).
    pub runtime_dir: Option<PathBuf>,
    /// `HOST:PORT` on loopback for the Prometheus endpoint; absent: none.
    pub metrics: Option<String>,
    /// Log level or tracing filter (`info`, `termshare=debug`); `RUST_LOG` wins.
    pub log: Option<String>,
}

/// `[backends]`: one table per backend.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendsSection {
    /// `[backends.tty_share]`.
    #[serde(default)]
    pub tty_share: TtyShareSection,
    /// `[backends.tmate]`.
    #[serde(default)]
    pub tmate: TmateSection,
    /// `[backends.upterm]`.
    #[serde(default)]
    pub upterm: UptermSection,
}

/// `[backends.tty_share]`. tty-share has no authentication, so it runs in a private
/// network namespace that no local user can reach, behind termshare's link front,
/// which checks the secret in each participant's link.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TtyShareSection {
    /// The tty-share binary (default: `tty-share` found in PATH when termshare starts).
    pub program: Option<PathBuf>,
    /// The address the link front listens on (the port is ephemeral per share).
    pub listen: Option<IpAddr>,
    /// `listen` may be an address other hosts can reach.
    #[serde(default)]
    pub expose_beyond_loopback: bool,
    /// Where no private network namespace can be made (user namespaces disabled), run
    /// tty-share on loopback anyway: then ANY local user can join a share without its
    /// link. Off by default: such shares are refused.
    #[serde(default)]
    pub local_users_may_join: bool,
}

/// `[backends.tmate]`: the tmate binary and a self-hosted relay (default: tmate.io).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TmateSection {
    /// The tmate binary (default: `tmate` found in PATH when termshare starts).
    pub program: Option<PathBuf>,
    /// `server_host`: the relay's host (tmate's `tmate-server-host`).
    pub server_host: Option<String>,
    /// `server_port`: the relay's ssh port (default 22).
    pub server_port: Option<u16>,
    /// `server_rsa_fingerprint`: the relay's RSA host key fingerprint tmate checks.
    pub server_rsa_fingerprint: Option<String>,
    /// `server_ed25519_fingerprint`: the relay's ed25519 host key fingerprint tmate checks.
    pub server_ed25519_fingerprint: Option<String>,
    /// `authorized_keys`: only these ssh keys may join; absent, anyone with the link can.
    pub authorized_keys: Option<PathBuf>,
}

/// `[backends.upterm]`: the upterm binary, its uptermd server and who may join.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UptermSection {
    /// `program`: a path, or a name looked up in PATH (default `upterm`).
    pub program: Option<String>,
    /// `server`: ssh://, ws:// or wss:// URL (default `ssh://uptermd.upterm.dev:22`).
    pub server: Option<String>,
    /// The server's host CA key, `ssh-ed25519 AAAA…` (uptermd's host certificate).
    pub server_ca_key: Option<String>,
    /// `known_hosts`: copied into the share's own; must trust the server's host CA.
    pub known_hosts: Option<PathBuf>,
    /// The key upterm authenticates with; absent: a new key per share.
    pub private_key: Option<PathBuf>,
    /// `authorized_keys`: ssh keys that may join (upterm `--authorized-keys`).
    pub authorized_keys: Option<PathBuf>,
    /// `github_users`: GitHub users whose keys may join (default none).
    #[serde(default)]
    pub github_users: Vec<String>,
}

/// `[panel]`: the lane panel (`termshare panel` prints its address with a fresh
/// secret for whoever asked).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PanelSection {
    /// `listen`: `IP:PORT` the daemon serves the panel on (port 0: any free one);
    /// absent: no panel.
    pub listen: Option<String>,
    /// `expose_beyond_loopback`: let `listen` be reachable from other hosts (the panel
    /// is plain HTTP: put TLS in front of it).
    #[serde(default)]
    pub expose_beyond_loopback: bool,
}

/// `[recording]`: session recordings (`--record`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordingSection {
    /// `dir`: where the asciicast files go, one per share, 0600 (default: the state
    /// directory's `recordings/`). Must be the user's and writable by nobody else.
    pub dir: Option<PathBuf>,
    /// `max_bytes`: the most one recording may grow to (default 256 MiB). A share
    /// whose recording reaches it ends (failed): it is never watched unrecorded.
    pub max_bytes: Option<u64>,
}

/// `[fleet]`: PostgreSQL for the fleet's audit, live view and revoke orders.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetSection {
    /// `database`: a libpq URI (`postgresql://user@/termshare?host=/run/postgresql`) or
    /// key=value string (`host=/run/postgresql dbname=termshare`). TLS as libpq:
    /// `sslmode` (`disable`, `prefer`, `require`, `verify-ca`, `verify-full`) and
    /// `sslrootcert`.
    pub database: Option<String>,
    /// `host_id`: this host's name in the fleet (default: derived from /etc/machine-id).
    pub host_id: Option<String>,
    /// `lease`: a host silent this long is shown as unreachable (default 10s).
    pub lease: Option<String>,
}

/// `database` may hold a password: never printed.
impl std::fmt::Debug for FleetSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetSection")
            .field("database", &self.database.as_ref().map(|_| "<redacted>"))
            .field("host_id", &self.host_id)
            .field("lease", &self.lease)
            .finish()
    }
}
