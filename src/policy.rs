//! The policy file: ordered rules, first match decides, no match denies.
//!
//! ```toml
//! [[rule]]
//! id = "team-shares"
//! effect = "allow"                      # or "deny"
//! principals = ["human:*"]
//! terminals = ["*"]
//! backends = ["tty-share", "tmate", "upterm"]
//! access = ["read-only", "read-write"]
//! max_ttl = "2h"
//! max_concurrent = 1
//! require_join_restriction = false      # true: only backends with authorized keys
//! record = false                        # true: every share it allows is recorded
//! max_join_timeout = "10m"              # every share gets a join timeout, at most this
//! max_participants = 3                  # every share gets a participant limit, at most this
//! ```
//! A rule without a matcher list matches nothing on that dimension: every list must be
//! written out, so that a rule cannot allow more than it says.
//!
//! `[[identity]]` entries say which principals a local user may act as over the
//! daemon's socket (the user is proven by the kernel, not by a flag):
//! ```toml
//! [[identity]]
//! user = "alice"                     # or uid = 1001
//! principals = ["human:alice"]       # the first is the default; `--as` picks another
//! ```
//! The daemon's own user may act as `human:<its user name>` unless an entry says
//! otherwise; any other user without an entry is turned away.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use termshare_actors::settings::parse_duration;
use termshare_actors::{
    AccessMode, Grant, PolicyDecision, PolicyGate, PolicyQuery, Principal, ReceiverShare,
};
use thiserror::Error;

use crate::secure_fs::UnsafePath;

mod builder;
pub use builder::PolicyBuilder;

/// Why a policy could not be used.
#[derive(Debug, Error)]
pub enum PolicyError {
    /// The file passed the safety checks but could not be read (missing, no permission).
    #[error("cannot read policy file {path}: {source}")]
    Read {
        /// The policy file, as given.
        path: String,
        /// The I/O error reading it.
        source: std::io::Error,
    },
    /// The file's text is not a valid policy ([`PolicyError::Invalid`], with the file named).
    #[error("policy file {path} is not valid: {message}")]
    Parse {
        /// The policy file, as given.
        path: String,
        /// What is wrong, naming the rule.
        message: String,
    },
    /// A policy text or a policy built in code that does not hold together.
    #[error("invalid policy: {0}")]
    Invalid(String),
    /// Someone else could change the file: it decides who gets in, so it is not read.
    #[error("policy file refused: {0}")]
    Unsafe(#[from] UnsafePath),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default)]
    rule: Vec<RawRule>,
    #[serde(default)]
    handoff: Vec<RawHandoff>,
    #[serde(default)]
    identity: Vec<RawIdentity>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIdentity {
    user: Option<String>,
    uid: Option<u32>,
    principals: Vec<String>,
}

/// An `[[identity]]` entry: a local user and the principals it may act as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentityEntry {
    /// The user's uid (`uid`, or `user` looked up when the policy was read).
    pub uid: u32,
    /// The name it was written with, if any (for messages).
    pub user: Option<String>,
    /// In the file's order: the first is the default.
    pub principals: Vec<Principal>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHandoff {
    id: String,
    from: Vec<String>,
    to: Vec<String>,
    terminals: Vec<String>,
    approvers: Vec<String>,
    step_timeout: String,
    agent_access: AccessMode,
    /// `"required"` (the default) or `"optional"`.
    #[serde(default)]
    receiver_share: ReceiverShare,
}

/// A `[[handoff]]` rule: who may hand which terminals to whom, approved by whom.
#[derive(Clone, Debug)]
pub struct HandoffRule {
    /// `id`: names the rule in audit events and messages.
    pub id: String,
    from: Vec<String>,
    to: Vec<String>,
    terminals: Vec<String>,
    /// `approvers`: principal patterns, one per approval step, in order.
    pub approvers: Vec<String>,
    /// `step_timeout`: how long each step may wait for its approver.
    pub step_timeout: Duration,
    /// `agent_access`: the most an agent receiver gets.
    pub agent_access: AccessMode,
    /// `receiver_share`: whether the receiver's share must start for the handoff to complete.
    pub receiver_share: ReceiverShare,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    id: String,
    effect: Effect,
    principals: Vec<String>,
    terminals: Vec<String>,
    backends: Vec<String>,
    access: Vec<AccessMode>,
    max_ttl: Option<String>,
    max_concurrent: Option<u32>,
    #[serde(default)]
    require_join_restriction: bool,
    #[serde(default)]
    record: bool,
    max_join_timeout: Option<String>,
    max_participants: Option<u32>,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Effect {
    Allow,
    Deny,
}

/// A `[[rule]]`: what it matches, whether it allows, and the bounds of what it allows.
#[derive(Clone, Debug)]
pub struct Rule {
    /// `id`: unique; names the rule in denials and audit events.
    pub id: String,
    allow: bool,
    principals: Vec<String>,
    terminals: Vec<String>,
    backends: Vec<String>,
    access: Vec<AccessMode>,
    /// `max_ttl`: the longest a share may live from its start, extensions included.
    pub max_ttl: Option<Duration>,
    /// `max_concurrent`: live shares per terminal (the config's limit holds if lower).
    pub max_concurrent: Option<u32>,
    /// `require_join_restriction`: only backends that restrict who may join (default false).
    pub require_join_restriction: bool,
    /// `record`: every share this rule allows is recorded (default false).
    pub record: bool,
    /// `max_join_timeout`: every share gets a join timeout, at most this.
    pub max_join_timeout: Option<Duration>,
    /// `max_participants`: every share gets a participant limit, at most this.
    pub max_participants: Option<u32>,
}

/// A parsed policy. `Policy::default()` has no rules and denies everything.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    /// The `[[rule]]`s, in order: the first that matches decides.
    pub rules: Vec<Rule>,
    /// The `[[handoff]]` rules, in order: the first that matches applies.
    pub handoffs: Vec<HandoffRule>,
    /// The `[[identity]]` entries, at most one per uid.
    pub identities: Vec<IdentityEntry>,
    /// Where it came from, for denial messages.
    pub source: Option<String>,
}

impl Policy {
    /// Read and check the file at `path`, refusing one others could change.
    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        let p = path.display().to_string();
        // Read through checks: a file someone else may change is not read at all.
        let text = crate::secure_fs::read_trusted_file(path).map_err(|e| match e {
            UnsafePath::Io { source, .. } => PolicyError::Read {
                path: p.clone(),
                source,
            },
            unsafe_path => PolicyError::Unsafe(unsafe_path),
        })?;
        let mut policy = Self::parse(&text).map_err(|e| match e {
            PolicyError::Invalid(message) => PolicyError::Parse {
                path: p.clone(),
                message,
            },
            other => other,
        })?;
        policy.source = Some(p);
        Ok(policy)
    }

    /// A policy from its TOML text (`[[rule]]`, `[[handoff]]`, `[[identity]]`).
    pub fn parse(text: &str) -> Result<Self, PolicyError> {
        let file: PolicyFile =
            toml::from_str(text).map_err(|e| PolicyError::Invalid(e.to_string()))?;
        Self::from_file(file).map_err(PolicyError::Invalid)
    }

    /// A policy built in code, checked like a file: see [`PolicyBuilder`].
    pub fn builder() -> PolicyBuilder {
        PolicyBuilder::default()
    }

    fn from_file(file: PolicyFile) -> Result<Self, String> {
        let mut handoffs = Vec::with_capacity(file.handoff.len());
        for h in file.handoff {
            if h.id.trim().is_empty() {
                return Err("a handoff rule has an empty id".into());
            }
            if h.approvers.is_empty() {
                return Err(format!("handoff rule `{}` has no approvers", h.id));
            }
            for a in &h.approvers {
                if !(a.starts_with("human:") || a.starts_with("agent:")) {
                    return Err(format!(
                        "handoff rule `{}`: approver `{a}` must be a principal pattern (human:… or agent:…)",
                        h.id
                    ));
                }
            }
            let step_timeout = parse_duration(&h.step_timeout)
                .map_err(|e| format!("handoff rule `{}`: step_timeout {e}", h.id))?;
            handoffs.push(HandoffRule {
                id: h.id,
                from: h.from,
                to: h.to,
                terminals: h.terminals,
                approvers: h.approvers,
                step_timeout,
                agent_access: h.agent_access,
                receiver_share: h.receiver_share,
            });
        }
        let mut rules = Vec::with_capacity(file.rule.len());
        let mut seen = std::collections::HashSet::new();
        for r in file.rule {
            if r.id.trim().is_empty() {
                return Err("a rule has an empty id".into());
            }
            if !seen.insert(r.id.clone()) {
                return Err(format!("rule id `{}` is used twice", r.id));
            }
            let max_ttl = match &r.max_ttl {
                Some(s) => {
                    Some(parse_duration(s).map_err(|e| format!("rule `{}`: max_ttl {e}", r.id))?)
                }
                None => None,
            };
            let max_join_timeout = match &r.max_join_timeout {
                Some(s) => Some(
                    parse_duration(s)
                        .map_err(|e| format!("rule `{}`: max_join_timeout {e}", r.id))?,
                ),
                None => None,
            };
            if r.max_participants == Some(0) {
                return Err(format!(
                    "rule `{}`: max_participants must be at least 1",
                    r.id
                ));
            }
            if r.max_concurrent == Some(0) && r.effect == Effect::Allow {
                return Err(format!(
                    "rule `{}`: max_concurrent 0 would allow nothing; use effect = \"deny\"",
                    r.id
                ));
            }
            rules.push(Rule {
                id: r.id,
                allow: r.effect == Effect::Allow,
                principals: r.principals,
                terminals: r.terminals,
                backends: r.backends,
                access: r.access,
                max_ttl,
                max_concurrent: r.max_concurrent,
                require_join_restriction: r.require_join_restriction,
                record: r.record,
                max_join_timeout,
                max_participants: r.max_participants,
            });
        }
        let identities = parse_identities(file.identity)?;
        Ok(Policy {
            rules,
            handoffs,
            identities,
            source: None,
        })
    }

    /// The `[[identity]]` entry of `uid`, if the policy has one.
    pub fn identity_of(&self, uid: u32) -> Option<&IdentityEntry> {
        self.identities.iter().find(|i| i.uid == uid)
    }
}

fn parse_identities(raw: Vec<RawIdentity>) -> Result<Vec<IdentityEntry>, String> {
    let mut out: Vec<IdentityEntry> = Vec::with_capacity(raw.len());
    for r in raw {
        let (uid, user) = match (r.user, r.uid) {
            (Some(name), None) => {
                let found = nix::unistd::User::from_name(&name)
                    .map_err(|e| format!("identity user `{name}`: {e}"))?
                    .ok_or_else(|| format!("identity user `{name}`: no such user"))?;
                (found.uid.as_raw(), Some(name))
            }
            (None, Some(uid)) => (uid, None),
            _ => return Err("an [[identity]] needs exactly one of `user` or `uid`".into()),
        };
        let who = user.clone().unwrap_or_else(|| format!("uid {uid}"));
        if r.principals.is_empty() {
            return Err(format!("identity {who} has no principals"));
        }
        let principals = r
            .principals
            .iter()
            .map(|p| {
                p.parse::<Principal>()
                    .map_err(|e| format!("identity {who}: {e} (no globs: name each principal)"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if out.iter().any(|i| i.uid == uid) {
            return Err(format!("uid {uid} has two [[identity]] entries"));
        }
        out.push(IdentityEntry {
            uid,
            user,
            principals,
        });
    }
    Ok(out)
}

pub use termshare_actors::glob_match;

fn any_match(patterns: &[String], text: &str) -> bool {
    patterns.iter().any(|p| glob_match(p, text))
}

impl PolicyGate for Policy {
    fn handoff(
        &self,
        from: &termshare_actors::Principal,
        to: &termshare_actors::Principal,
        terminal: &termshare_actors::TerminalName,
    ) -> Result<termshare_actors::HandoffGrant, String> {
        self.handoffs
            .iter()
            .find(|h| {
                any_match(&h.from, from.as_str())
                    && any_match(&h.to, to.as_str())
                    && any_match(&h.terminals, terminal.as_str())
            })
            .map(|h| termshare_actors::HandoffGrant {
                rule_id: h.id.clone(),
                approvers: h.approvers.clone(),
                step_timeout: h.step_timeout,
                agent_access: h.agent_access,
                receiver_share: h.receiver_share,
            })
            .ok_or_else(|| format!("no handoff rule lets {from} hand terminal {terminal} to {to}"))
    }

    fn evaluate(&self, q: &PolicyQuery<'_>) -> PolicyDecision {
        for rule in &self.rules {
            let matches = any_match(&rule.principals, q.principal.as_str())
                && any_match(&rule.terminals, q.terminal.as_str())
                && any_match(&rule.backends, q.backend.as_str())
                && rule.access.contains(&q.access);
            if !matches {
                continue;
            }
            return if rule.allow {
                PolicyDecision::Allow(Grant {
                    rule_id: rule.id.clone(),
                    max_ttl: rule.max_ttl,
                    max_concurrent: rule.max_concurrent,
                    require_join_restriction: rule.require_join_restriction,
                    record: rule.record,
                    max_join_timeout: rule.max_join_timeout,
                    max_participants: rule.max_participants,
                })
            } else {
                PolicyDecision::Deny {
                    rule_id: Some(rule.id.clone()),
                    reason: format!("rule `{}` denies this share", rule.id),
                }
            };
        }
        PolicyDecision::Deny {
            rule_id: None,
            reason: format!(
                "no policy rule allows {} to share terminal {} over {} {} ({})",
                q.principal,
                q.terminal,
                q.backend,
                q.access,
                match &self.source {
                    Some(s) if !self.rules.is_empty() =>
                        format!("{} rule(s) in {s} checked", self.rules.len()),
                    Some(s) => format!("{s} has no rules"),
                    None => "no policy file was given".into(),
                }
            ),
        }
    }
}

#[cfg(test)]
mod tests;
