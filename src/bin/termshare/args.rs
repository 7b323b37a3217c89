//! The command line's shape (clap): every command, flag and argument.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "termshare", version, about = "Share a live terminal safely")]
pub struct Cli {
    /// Config file (TOML); every key is optional.
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// The daemon's control socket (default: $XDG_RUNTIME_DIR/termshare.sock).
    #[arg(long, global = true)]
    pub socket: Option<PathBuf>,
    /// One JSON object per line instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Share a terminal (a tmux session): through the daemon if one runs, else in the
    /// foreground until its TTL ends or Ctrl-C (--daemon or --foreground to choose).
    Share(ShareArgs),
    /// Run the daemon: the subsystem behind the control socket.
    Serve {
        /// Policy file (TOML); without one every share is denied.
        #[arg(long)]
        policy: Option<PathBuf>,
        /// Check the config and policy, print what would be served, and exit.
        #[arg(long)]
        check: bool,
    },
    /// List the daemon's live shares.
    List,
    /// Extend a share's TTL by DURATION (bounded by its rule's max_ttl).
    Extend {
        share: String,
        #[arg(value_parser = parse_duration)]
        duration: Duration,
        #[arg(long = "as")]
        principal: Option<String>,
    },
    /// End a share now and print the revoke report.
    Revoke {
        share: String,
        #[arg(long = "as")]
        principal: Option<String>,
    },
    /// Give a share a new link; everyone who joined through the old one is cut off.
    Rotate {
        share: String,
        #[arg(long = "as")]
        principal: Option<String>,
    },
    /// Move a share to another backend (the old worker is reaped first).
    Switch {
        share: String,
        #[arg(long)]
        backend: String,
        #[arg(long = "as")]
        principal: Option<String>,
    },
    /// Show each terminal's badge; with --watch, redraw on every change.
    Status {
        #[arg(long)]
        watch: bool,
    },
    /// Read the audit log (the config's `[audit] path`), filtered; --follow tails it.
    Audit(AuditArgs),
    /// Play a share's recording (asciicast v2, from --record) on this terminal.
    Replay(ReplayArgs),
    /// Print the lane panel's address, signed in as you (one use, two minutes).
    Panel {
        /// Open it in the desktop's browser (xdg-open) too.
        #[arg(long)]
        open: bool,
    },
    /// Hand a terminal to another principal through the policy's approval chain.
    #[command(subcommand)]
    Handoff(HandoffCommand),
    /// The fleet, through its PostgreSQL database (`[fleet] database`).
    #[command(subcommand)]
    Fleet(FleetCommand),
}

#[derive(Subcommand)]
pub enum FleetCommand {
    /// Every host and its live shares (a host whose lease lapsed: unreachable).
    List {
        #[command(flatten)]
        db: FleetDb,
        /// Only this host.
        #[arg(long)]
        host: Option<String>,
        /// Only this principal's shares.
        #[arg(long)]
        principal: Option<String>,
        /// Only shares over this backend.
        #[arg(long)]
        backend: Option<String>,
    },
    /// The fleet's audit: `termshare audit`'s filters, plus --host.
    Audit {
        #[command(flatten)]
        db: FleetDb,
        /// Only this host's events.
        #[arg(long)]
        host: Option<String>,
        #[command(flatten)]
        filter: AuditFilterArgs,
        /// At most this many events (the earliest that match).
        #[arg(long, default_value_t = 10_000)]
        limit: i64,
    },
    /// Revoke the matching shares on every host; waits for each live host's answer.
    Revoke {
        #[command(flatten)]
        db: FleetDb,
        /// Every share of this principal.
        #[arg(long)]
        principal: Option<String>,
        /// Every share on this host.
        #[arg(long)]
        host: Option<String>,
        /// This share.
        #[arg(long)]
        share: Option<String>,
        /// Why, kept with the order.
        #[arg(long)]
        reason: Option<String>,
        /// How long to wait for the hosts' answers.
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        timeout: Duration,
    },
}

#[derive(clap::Args)]
pub struct FleetDb {
    /// The database (a libpq URI or key=value string); default: the config's
    /// `[fleet] database`. A password here is visible to other local users in the
    /// process list: prefer the environment variable, a service file or the config.
    #[arg(long, env = "TERMSHARE_FLEET_DATABASE", hide_env_values = true)]
    pub database: Option<String>,
}

#[derive(clap::Args)]
pub struct AuditFilterArgs {
    /// Only events of this share or handoff (correlation id).
    #[arg(long, alias = "correlation")]
    pub share: Option<String>,
    /// Only events of this terminal.
    #[arg(long)]
    pub terminal: Option<String>,
    /// Only events of this kind (`share.revoked`, or just `revoked`).
    #[arg(long)]
    pub kind: Option<String>,
    /// Only events at or after this time: RFC 3339, or a duration meaning "ago" (10m).
    #[arg(long)]
    pub since: Option<String>,
    /// Only events before this time (same forms as --since).
    #[arg(long)]
    pub until: Option<String>,
}

#[derive(Subcommand)]
pub enum HandoffCommand {
    /// Ask to hand TERMINAL to --to; prints the handoff and its approvers.
    Request {
        terminal: String,
        #[arg(long)]
        to: String,
        #[arg(long = "as")]
        principal: Option<String>,
        #[arg(long)]
        reason: Option<String>,
        /// Also start a share for the receiver over this backend once approved.
        #[arg(long)]
        backend: Option<String>,
        /// The receiver share's time to live, e.g. 20m (needs --backend; bounded by
        /// the receiver's max_ttl; default from config).
        #[arg(long, value_parser = parse_duration)]
        ttl: Option<Duration>,
    },
    /// Approve the handoff's current step.
    Approve {
        handoff: String,
        #[arg(long = "as")]
        principal: Option<String>,
    },
    /// Deny the handoff at its current step.
    Deny {
        handoff: String,
        #[arg(long = "as")]
        principal: Option<String>,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Show a handoff, with its package once completed.
    Show { handoff: String },
    /// List handoffs.
    List,
}

#[derive(clap::Args)]
pub struct AuditArgs {
    #[command(flatten)]
    pub filter: AuditFilterArgs,
    /// Keep printing events as they are written.
    #[arg(long)]
    pub follow: bool,
    /// Read this file instead of the config's audit log.
    #[arg(long)]
    pub file: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct ShareArgs {
    /// The terminal: a tmux session name.
    pub terminal: String,
    /// tty-share, tmate or upterm.
    #[arg(long)]
    pub backend: String,
    /// Time to live, e.g. 30m (default from config: 30m).
    #[arg(long, value_parser = parse_duration)]
    pub ttl: Option<Duration>,
    /// Grace warnings before expiry, e.g. 5m,1m (default from config).
    #[arg(long, value_delimiter = ',', value_parser = parse_duration)]
    pub grace: Option<Vec<Duration>>,
    /// read-only or read-write.
    #[arg(long, default_value = "read-write")]
    pub access: String,
    /// End the share if nobody joined within this, e.g. 5m (tty-share; default from
    /// config: none).
    #[arg(long, value_parser = parse_duration)]
    pub join_timeout: Option<Duration>,
    /// Let at most N participants in at once; the next is refused (tty-share).
    #[arg(long)]
    pub max_participants: Option<u32>,
    /// Record what the terminal shows, as an asciicast v2 file (`[recording] dir`).
    #[arg(long)]
    pub record: bool,
    /// Who shares: human:NAME or agent:NAME (default human:$USER).
    #[arg(long = "as")]
    pub principal: Option<String>,
    /// Policy file for a foreground share (a daemon applies its own).
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// Share through the daemon, or fail (exit 11) if none answers.
    #[arg(long, conflicts_with = "foreground")]
    pub daemon: bool,
    /// Share in the foreground (this process runs it), even if a daemon answers.
    #[arg(long)]
    pub foreground: bool,
}

/// A positive duration, as the config writes them (`30m`, `1h30m`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    termshare::actors::settings::parse_duration(s)
}

#[derive(clap::Args)]
pub struct ReplayArgs {
    /// The recording (the end event's `recording_path`).
    pub file: PathBuf,
    /// Play this many times as fast.
    #[arg(long, default_value_t = 1.0)]
    pub speed: f64,
    /// Shorten every pause to at most this long (e.g. 2s).
    #[arg(long, value_parser = parse_duration)]
    pub idle_limit: Option<Duration>,
    /// Print everything at once, without the timing.
    #[arg(long)]
    pub no_wait: bool,
    /// Play only if the file's SHA-256 is this (the end event's `recording_sha256`).
    #[arg(long)]
    pub expect_sha256: Option<String>,
}
