//! A share: what is asked for, its links (and their keyed fingerprints), how it is
//! seen while it runs, and how it ended.

use super::*;

/// What a caller asks for. `ttl` and `grace` fall back to the service settings. The
/// share belongs to `caller.principal`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShareRequest {
    /// The terminal to share.
    pub terminal: TerminalName,
    /// The backend that serves the share.
    pub backend: BackendName,
    /// What participants may do.
    pub access: AccessMode,
    /// Who asks; the share belongs to its principal.
    pub caller: Caller,
    /// How long the share lives; `None`: the service's default TTL.
    pub ttl: Option<Duration>,
    /// Grace warnings before the end; `None`: the service's.
    pub grace: Option<Vec<Duration>>,
    /// A join timeout and a participant limit, where the backend counts participants.
    pub join: JoinRules,
    /// Record what the terminal shows, start to end (asciicast v2); a share whose
    /// recording cannot be written fails (it fails closed).
    pub record: bool,
}

/// Rules on who joins a share, for backends that see each participant (tty-share
/// behind its link front); a request with any of them over another backend is refused.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinRules {
    /// A share nobody joined within this ends, as expired with cause `join_timeout`.
    pub timeout: Option<Duration>,
    /// Participants at once; the next one is refused (and `share.join_refused`).
    pub max_participants: Option<u32>,
}

impl JoinRules {
    /// Whether any rule is set.
    pub fn any(&self) -> bool {
        self.timeout.is_some() || self.max_participants.is_some()
    }
}

impl ShareRequest {
    /// A read-write share of `terminal` over `backend` for `caller`, with the
    /// service's default TTL and grace warnings; change them with the methods below.
    pub fn new(terminal: TerminalName, backend: BackendName, caller: impl Into<Caller>) -> Self {
        ShareRequest {
            terminal,
            backend,
            access: AccessMode::ReadWrite,
            caller: caller.into(),
            ttl: None,
            grace: None,
            join: JoinRules::default(),
            record: false,
        }
    }

    /// Record what the terminal shows while the share lives.
    pub fn record(mut self) -> Self {
        self.record = true;
        self
    }

    /// Read-only or read-write (the default).
    pub fn access(mut self, access: AccessMode) -> Self {
        self.access = access;
        self
    }

    /// How long the share lives (the policy's `max_ttl` bounds it).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// Grace warnings, this long before the end (none: `vec![]`).
    pub fn grace(mut self, before_end: Vec<Duration>) -> Self {
        self.grace = Some(before_end);
        self
    }

    /// End the share if nobody joined within `timeout`.
    pub fn join_timeout(mut self, timeout: Duration) -> Self {
        self.join.timeout = Some(timeout);
        self
    }

    /// Let at most `n` participants in at once.
    pub fn max_participants(mut self, n: u32) -> Self {
        self.join.max_participants = Some(n);
        self
    }

    /// The principal the share will belong to.
    pub fn principal(&self) -> &Principal {
        &self.caller.principal
    }
}

/// The links a backend hands out. They are secrets: only the owner sees them; logs and
/// audit events carry their [`FingerprintKey::fingerprint`]s.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Links {
    /// The link participants join with (read-only for a read-only share).
    pub link: String,
    /// A read-only link besides a read-write one, when the backend gives both.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_only_link: Option<String>,
}

/// Redacted: a `{:?}` of a share (in a log line, a panic message, a test failure) must
/// not print its links. (Hand-written rather than a secret-string type: the links are
/// plain strings everywhere else, where the owner is meant to read them.)
impl fmt::Debug for Links {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted = |l: &str| if l.is_empty() { "" } else { "<redacted>" };
        f.debug_struct("Links")
            .field("link", &redacted(&self.link))
            .field(
                "read_only_link",
                &self.read_only_link.as_deref().map(redacted),
            )
            .finish()
    }
}

impl Links {
    /// Just `link`, with no separate read-only link.
    pub fn new(link: impl Into<String>) -> Self {
        Links {
            link: link.into(),
            read_only_link: None,
        }
    }
}

/// The per-installation key of link fingerprints. A fingerprint is the first 12 hex
/// digits of HMAC-SHA256(key, link): enough to tell links apart in a log, and, unlike a
/// plain hash, impossible to recompute from a guess of the link (a link whose only
/// unknown is a 16-bit port would otherwise be recovered by hashing every port).
#[derive(Clone, PartialEq, Eq)]
pub struct FingerprintKey([u8; 32]);

impl FingerprintKey {
    /// The key stored on disk.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        FingerprintKey(bytes)
    }

    /// A fresh random key (for tests and for a new installation).
    pub fn random() -> Self {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).expect("the kernel's random source is available");
        FingerprintKey(bytes)
    }

    /// The key's bytes, to store it.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// 12 hex digits that name `secret` in logs and audit events.
    pub fn fingerprint(&self, secret: &str) -> String {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(secret.as_bytes());
        let digest = mac.finalize().into_bytes();
        digest.iter().take(6).map(|b| format!("{b:02x}")).collect()
    }
}

/// The key is a secret: `Debug` never prints it.
impl fmt::Debug for FingerprintKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FingerprintKey(..)")
    }
}

/// A running share as its owner sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShareInfo {
    /// The share's id.
    pub share_id: ShareId,
    /// The terminal shared.
    pub terminal: TerminalName,
    /// The backend serving it.
    pub backend: BackendName,
    /// What participants may do.
    pub access: AccessMode,
    /// Whom the share belongs to.
    pub principal: Principal,
    /// Its links (secrets; empty until the backend gives them).
    pub links: Links,
    /// When it was admitted.
    pub started_at: SystemTime,
    /// When its TTL runs out (moves with each extension).
    pub expires_at: SystemTime,
    /// The policy rule that allowed the share.
    pub rule_id: String,
    /// Where it is in its life.
    pub state: ShareState,
    /// Participants connected, when the backend tells.
    pub participants: Option<u32>,
    /// The process serving the share (its group's leader), once its worker runs.
    pub worker_pid: Option<u32>,
}

/// Where a live share is in its life (what a badge shows).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShareState {
    /// Admitted; waiting for the backend's link.
    Starting,
    /// Serving: its link has been announced.
    Active,
    /// A grace warning has fired: the share ends soon unless extended.
    Expiring,
    /// Being stopped (revoke, expiry, failure).
    Ending,
}

impl ShareState {
    /// The state's name in the protocol and on badges (`starting`, `active`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            ShareState::Starting => "starting",
            ShareState::Active => "active",
            ShareState::Expiring => "expiring",
            ShareState::Ending => "ending",
        }
    }
}

/// Why a share ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reason", content = "cause", rename_all = "snake_case")]
pub enum EndReason {
    /// Its TTL ran out.
    Expired,
    /// Its owner or the operator revoked it.
    Revoked,
    /// The service shut down.
    Stopped,
    /// Its worker died, hung or could not start; the cause says which.
    Failed(String),
    /// The shared terminal went away, taking the worker with it.
    TerminalClosed,
}

impl EndReason {
    /// The audit kind that records a share ending this way.
    pub fn audit_kind(&self) -> crate::audit::AuditKind {
        use crate::audit::AuditKind;
        match self {
            EndReason::Expired => AuditKind::ShareExpired,
            EndReason::Revoked => AuditKind::ShareRevoked,
            EndReason::Stopped => AuditKind::ShareStopped,
            EndReason::Failed(_) | EndReason::TerminalClosed => AuditKind::ShareFailed,
        }
    }
}

impl fmt::Display for EndReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EndReason::Expired => f.write_str("expired"),
            EndReason::Revoked => f.write_str("revoked"),
            EndReason::Stopped => f.write_str("stopped"),
            EndReason::Failed(cause) => write!(f, "failed: {cause}"),
            EndReason::TerminalClosed => f.write_str("terminal closed"),
        }
    }
}

/// What ending a share took: the answer to a revoke.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokeReport {
    /// The share that ended.
    pub share_id: ShareId,
    /// Why it ended.
    pub reason: EndReason,
    /// From the request to the worker being reaped.
    #[serde(with = "duration_ms")]
    pub elapsed: Duration,
    /// The graceful stop did not finish within the grace period: the group got SIGKILL.
    pub escalated: bool,
    /// The worker had already exited when the stop began.
    pub already_gone: bool,
    /// Participants connected just before the stop, where the backend tells.
    pub participants_before: Option<u32>,
    /// Participants still connected once the stop was done, where the backend tells
    /// (0: the stop cut everyone off).
    pub participants_after: Option<u32>,
    /// Whether everything was done within the revoke deadline.
    pub deadline_met: bool,
}

/// Serialize a duration as whole milliseconds (`elapsed_ms` style fields).
pub mod duration_ms {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    /// Milliseconds, as a float (sub-millisecond precision kept).
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64() * 1000.0)
    }

    /// Milliseconds, refusing negative and non-finite numbers.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let ms = f64::deserialize(d)?;
        if !ms.is_finite() || ms < 0.0 {
            return Err(serde::de::Error::custom("duration must be >= 0"));
        }
        Ok(Duration::from_secs_f64(ms / 1000.0))
    }
}

/// How a share ended: why, and, when its session ended it, how its worker was stopped
/// (the same report a revoke returns).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShareEnd {
    /// Why it ended.
    pub reason: EndReason,
    /// How its worker was stopped; `None` when its session itself failed.
    pub report: Option<RevokeReport>,
}
