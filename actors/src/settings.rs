//! Service-wide settings the tree needs (the config file maps onto these).

use std::time::Duration;

/// The longest TTL, extension or timeout anything accepts: far beyond any real share,
/// and far from the overflow of `Instant` and `SystemTime` arithmetic.
pub const MAX_DURATION: Duration = Duration::from_secs(366 * 24 * 3600);

/// A duration as the config, the policy, the protocol and the CLI write them (`30m`,
/// `1h30m`): positive and at most [`MAX_DURATION`]. The error says what was wrong with
/// the text; the caller says where it was.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("`{s}`: {e}"))?;
    if d.is_zero() || d > MAX_DURATION {
        return Err(format!("`{s}`: must be positive and at most a year"));
    }
    Ok(d)
}

/// Limits and timings of the whole tree; [`Settings::default`] is what an empty config gives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// TTL of a share that asks for none.
    pub default_ttl: Duration,
    /// Join timeout of a share that asks for none, over a backend that counts
    /// participants (and shorter than the share's TTL); `None`: none.
    pub default_join_timeout: Option<Duration>,
    /// Grace warnings: this long before expiry (a threshold above the TTL is skipped).
    pub grace: Vec<Duration>,
    /// Live shares per terminal; a policy rule's `max_concurrent` may lower it.
    pub per_terminal_limit: u32,
    /// How long a backend may take to produce its link.
    pub link_timeout: Duration,
    /// A revoke must have disconnected everyone within this.
    pub revoke_deadline: Duration,
    /// Graceful stop period before SIGKILL of the worker's process group.
    pub terminate_grace: Duration,
    /// How long an action waits for its audit event to be kept.
    pub audit_timeout: Duration,
    /// How often a worker the kernel cannot watch is probed (in-process workers; a
    /// real worker's stops come from SIGCHLD).
    pub probe_interval: Duration,
    /// A worker stopped, or not answering its serving probe, for this long is declared
    /// hung, killed, and its share fails.
    pub heartbeat_timeout: Duration,
    /// How often a worker's serving probe runs (a request to the worker: what an idle
    /// share costs). After a failure it retries every third of the timeout, so a
    /// worker that stopped serving is seen within this, the timeout, a third of the
    /// timeout and the probe's own 1 s bound.
    pub serving_interval: Duration,
    /// Refuse every share on a backend that does not restrict who may join.
    pub require_join_restriction: bool,
    /// Most audit events committed in one write (group commit).
    pub audit_max_batch: usize,
    /// Lines of scrollback a handoff package carries.
    pub handoff_scrollback_lines: usize,
    /// Live shares across every terminal: a bound on the tree's tables and on the
    /// processes termshare runs.
    pub max_live_shares: usize,
    /// Handoffs waiting for approval, in all.
    pub max_pending_handoffs: usize,
    /// Handoffs waiting for approval that one identity asked for.
    pub max_pending_handoffs_per_requester: usize,
    /// API calls in progress at once; more wait their turn. Bounds the root's and the
    /// handoff manager's mailboxes (ractor's are unbounded).
    pub max_in_flight: usize,
}

/// The most a terminal check may take (tmux answers in milliseconds; this bounds it).
pub const TERMINAL_CHECK: Duration = Duration::from_secs(3);

impl Settings {
    /// How long a whole start may take, from the request's arrival to the announced
    /// link: the request's record, the terminal check, the link, the announcement's
    /// record. A start still going then fails, and is never announced; the API caller
    /// waits this long (and the end's own stop) for its answer.
    pub fn start_budget(&self) -> Duration {
        self.audit_timeout * 2 + TERMINAL_CHECK + self.link_timeout
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            default_ttl: Duration::from_secs(30 * 60),
            default_join_timeout: None,
            grace: vec![Duration::from_secs(5 * 60), Duration::from_secs(60)],
            per_terminal_limit: 1,
            link_timeout: Duration::from_secs(10),
            revoke_deadline: Duration::from_secs(5),
            terminate_grace: Duration::from_secs(1),
            audit_timeout: Duration::from_secs(5),
            probe_interval: Duration::from_millis(100),
            heartbeat_timeout: Duration::from_secs(3),
            serving_interval: Duration::from_secs(10),
            require_join_restriction: false,
            audit_max_batch: 1024,
            handoff_scrollback_lines: 200,
            max_live_shares: 10_000,
            max_pending_handoffs: 4096,
            max_pending_handoffs_per_requester: 256,
            max_in_flight: 1024,
        }
    }
}
