//! Domain types shared by the whole tree: who asks, for which terminal, through which
//! backend, and what a share looks like once it runs.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use uuid::Uuid;

use crate::caller::Caller;
use crate::error::InvalidInput;

/// The identity of one share. UUIDv7, so ids sort by creation time in logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ShareId(pub Uuid);

impl ShareId {
    pub fn new() -> Self {
        ShareId(Uuid::now_v7())
    }
}

impl From<ShareId> for Uuid {
    fn from(id: ShareId) -> Uuid {
        id.0
    }
}

/// Lets `event.correlation_id == share_id` read as it means.
impl PartialEq<ShareId> for Uuid {
    fn eq(&self, other: &ShareId) -> bool {
        *self == other.0
    }
}

impl Default for ShareId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for ShareId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for ShareId {
    type Err = InvalidInput;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s)
            .map(ShareId)
            .map_err(|_| InvalidInput::new("share id", s, "expected a UUID"))
    }
}

/// The identity of one handoff (UUIDv7). Its audit events carry it as correlation id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct HandoffId(pub Uuid);

impl HandoffId {
    pub fn new() -> Self {
        HandoffId(Uuid::now_v7())
    }
}

impl Default for HandoffId {
    fn default() -> Self {
        Self::new()
    }
}

impl From<HandoffId> for Uuid {
    fn from(id: HandoffId) -> Uuid {
        id.0
    }
}

impl fmt::Display for HandoffId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for HandoffId {
    type Err = InvalidInput;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s)
            .map(HandoffId)
            .map_err(|_| InvalidInput::new("handoff id", s, "expected a UUID"))
    }
}

/// `*` matches any run of characters (including none); everything else literally.
/// Used for principal, terminal and backend patterns in the policy.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && p[pi] != '*' && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Who acts: `human:NAME` or `agent:NAME`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Principal(String);

impl Principal {
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// `human` or `agent`.
    pub fn kind(&self) -> &str {
        self.0.split_once(':').map(|(k, _)| k).unwrap_or("")
    }
}

impl FromStr for Principal {
    type Err = InvalidInput;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| InvalidInput::new("principal", s, why);
        let (kind, name) = s
            .split_once(':')
            .ok_or_else(|| bad("expected human:NAME or agent:NAME"))?;
        if kind != "human" && kind != "agent" {
            return Err(bad("the kind must be `human` or `agent`"));
        }
        if name.is_empty() || name.len() > 64 || !name.chars().all(is_name_char) {
            return Err(bad(
                "the name must be 1-64 characters of letters, digits, `.`, `_`, `-`, `@`",
            ));
        }
        Ok(Principal(s.to_owned()))
    }
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@')
}

impl TryFrom<String> for Principal {
    type Error = InvalidInput;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Principal> for String {
    fn from(p: Principal) -> String {
        p.0
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The name of a host terminal (a tmux session by default). Restricted to characters
/// that tmux takes literally in a target (`.` and `:` select windows and panes there)
/// and that survive tty-share's whitespace splitting of `--args`. A name may not start
/// with what tmux's target syntax reads as something other than a session name (`@1`
/// is a window id, `$1` a session id, `%1` a pane id, `+`/`-` window offsets) or what a
/// program would read as an option (`-x`): `termshare share @1` must never reach
/// another session than the one it checked. (Attach targets are also written `=NAME`,
/// which tmux matches exactly; this is the second lock.)
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TerminalName(String);

impl TerminalName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for TerminalName {
    type Err = InvalidInput;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty()
            || s.len() > 64
            || !s
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '@' | '+'))
        {
            return Err(InvalidInput::new(
                "terminal",
                s,
                "must be 1-64 characters of letters, digits, `_`, `-`, `@`, `+`",
            ));
        }
        if s.starts_with(['@', '$', '%', '+', '-', '=', '~', '!', '{']) {
            return Err(InvalidInput::new(
                "terminal",
                s,
                "must not start with `@`, `+` or `-`, which tmux or the attach program would \
                 read as a window id, a window offset or an option rather than a session name",
            ));
        }
        Ok(TerminalName(s.to_owned()))
    }
}

impl TryFrom<String> for TerminalName {
    type Error = InvalidInput;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<TerminalName> for String {
    fn from(t: TerminalName) -> String {
        t.0
    }
}

impl fmt::Display for TerminalName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A backend's registered name: `tty-share`, `tmate`, `upterm` (or `fake` in tests).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BackendName(pub String);

impl BackendName {
    pub fn new(name: impl Into<String>) -> Self {
        BackendName(name.into())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for BackendName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether participants may type into the shared terminal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AccessMode {
    #[serde(rename = "read-only")]
    ReadOnly,
    #[serde(rename = "read-write")]
    ReadWrite,
}

impl AccessMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AccessMode::ReadOnly => "read-only",
            AccessMode::ReadWrite => "read-write",
        }
    }
}

impl FromStr for AccessMode {
    type Err = InvalidInput;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "read-only" => Ok(AccessMode::ReadOnly),
            "read-write" => Ok(AccessMode::ReadWrite),
            _ => Err(InvalidInput::new(
                "access",
                s,
                "expected `read-only` or `read-write`",
            )),
        }
    }
}

impl fmt::Display for AccessMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a caller asks for. `ttl` and `grace` fall back to the service settings. The
/// share belongs to `caller.principal`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShareRequest {
    pub terminal: TerminalName,
    pub backend: BackendName,
    pub access: AccessMode,
    pub caller: Caller,
    pub ttl: Option<Duration>,
    pub grace: Option<Vec<Duration>>,
}

impl ShareRequest {
    /// A read-write share with the service's default TTL and grace warnings, by a
    /// principal the embedder vouches for (or any [`Caller`]).
    pub fn new(terminal: TerminalName, backend: BackendName, caller: impl Into<Caller>) -> Self {
        ShareRequest {
            terminal,
            backend,
            access: AccessMode::ReadWrite,
            caller: caller.into(),
            ttl: None,
            grace: None,
        }
    }

    /// The principal the share will belong to.
    pub fn principal(&self) -> &Principal {
        &self.caller.principal
    }
}

/// The links a backend hands out. They are secrets: only the owner sees them; logs and
/// audit events carry [`fingerprint`]s.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Links {
    pub link: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_only_link: Option<String>,
}

impl Links {
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
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        FingerprintKey(bytes)
    }

    /// A fresh random key (for tests and for a new installation).
    pub fn random() -> Self {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).expect("the kernel's random source is available");
        FingerprintKey(bytes)
    }

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
    pub share_id: ShareId,
    pub terminal: TerminalName,
    pub backend: BackendName,
    pub access: AccessMode,
    pub principal: Principal,
    pub links: Links,
    pub started_at: SystemTime,
    pub expires_at: SystemTime,
    /// The policy rule that allowed the share.
    pub rule_id: String,
    pub state: ShareState,
    /// Participants connected, when the backend tells.
    pub participants: Option<u32>,
}

/// Where a live share is in its life (what a badge shows).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShareState {
    /// Admitted; waiting for the backend's link.
    Starting,
    Active,
    /// A grace warning has fired: the share ends soon unless extended.
    Expiring,
    /// Being stopped (revoke, expiry, failure).
    Ending,
}

impl ShareState {
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
    Expired,
    Revoked,
    Stopped,
    Failed(String),
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
    pub share_id: ShareId,
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
    /// Whether everything was done within the revoke deadline.
    pub deadline_met: bool,
}

/// Serialize a duration as whole milliseconds (`elapsed_ms` style fields).
pub mod duration_ms {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64() * 1000.0)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let ms = f64::deserialize(d)?;
        if !ms.is_finite() || ms < 0.0 {
            return Err(serde::de::Error::custom("duration must be >= 0"));
        }
        Ok(Duration::from_secs_f64(ms / 1000.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn principals_are_checked() {
        assert!("human:alice".parse::<Principal>().is_ok());
        assert!("agent:claude-1".parse::<Principal>().is_ok());
        for bad in ["alice", "robot:x", "human:", "human:a b", "agent:x;rm"] {
            assert!(bad.parse::<Principal>().is_err(), "{bad}");
        }
    }

    #[test]
    fn terminal_names_refuse_tmux_target_syntax_and_spaces() {
        assert!("dev-1".parse::<TerminalName>().is_ok());
        assert!("alice@box".parse::<TerminalName>().is_ok());
        for bad in [
            "",
            "a.b",
            "a:b",
            "a b",
            &"x".repeat(65),
            "@1",
            "$1",
            "%1",
            "+1",
            "-t",
            "=x",
        ] {
            assert!(bad.parse::<TerminalName>().is_err(), "{bad}");
        }
    }

    #[test]
    fn fingerprint_is_12_hex_stable_and_keyed() {
        let key = FingerprintKey::random();
        let f = key.fingerprint("http://127.0.0.1:1/s/local/");
        assert_eq!(f.len(), 12);
        assert_eq!(f, key.fingerprint("http://127.0.0.1:1/s/local/"));
        assert_ne!(f, key.fingerprint("http://127.0.0.1:2/s/local/"));
        // Another installation's key gives another fingerprint of the same link.
        assert_ne!(
            f,
            FingerprintKey::random().fingerprint("http://127.0.0.1:1/s/local/")
        );
        assert_eq!(format!("{key:?}"), "FingerprintKey(..)");
    }
}
