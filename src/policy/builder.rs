//! A policy written in code: the same rules and identities as a policy file, checked
//! the same way (a runtime that builds one policy per agent need not template TOML).

use std::time::Duration;

use termshare_actors::{AccessMode, BackendName};

use super::{Effect, Policy, PolicyError, PolicyFile, RawIdentity, RawRule};

/// Builds a [`Policy`]: rules in order (the first that matches decides; none denies),
/// and identities. Each rule method adds a rule; the bounding methods (`max_ttl`,
/// `max_concurrent`, `access`, `require_join_restriction`) apply to the rule added
/// last.
///
/// ```
/// use std::time::Duration;
/// use termshare::actors::BackendName;
/// use termshare::policy::Policy;
///
/// let policy = Policy::builder()
///     .deny("no-agent-writes", &["agent:*"], &["*"], &[])
///     .allow("team", &["human:*", "agent:*"], &["dev*"], &[BackendName::TTY_SHARE])
///     .max_ttl(Duration::from_secs(3600))
///     .build()
///     .unwrap();
/// assert_eq!(policy.rules.len(), 2);
/// ```
#[derive(Default)]
pub struct PolicyBuilder {
    file: PolicyFile,
}

fn owned(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

impl PolicyBuilder {
    fn rule(
        mut self,
        effect: Effect,
        id: &str,
        principals: &[&str],
        terminals: &[&str],
        backends: &[BackendName],
    ) -> Self {
        // No backend named: every backend.
        let backends = if backends.is_empty() {
            vec!["*".to_string()]
        } else {
            backends.iter().map(|b| b.as_str().to_owned()).collect()
        };
        self.file.rule.push(RawRule {
            id: id.to_owned(),
            effect,
            principals: owned(principals),
            terminals: owned(terminals),
            backends,
            access: vec![AccessMode::ReadOnly, AccessMode::ReadWrite],
            max_ttl: None,
            max_concurrent: None,
            require_join_restriction: false,
            record: false,
            max_join_timeout: None,
            max_participants: None,
        });
        self
    }

    /// Allow `principals` (patterns: `human:*`, `agent:claude`) to share `terminals`
    /// (patterns) over `backends` (none: all), read-only and read-write.
    pub fn allow(
        self,
        id: &str,
        principals: &[&str],
        terminals: &[&str],
        backends: &[BackendName],
    ) -> Self {
        self.rule(Effect::Allow, id, principals, terminals, backends)
    }

    /// Deny what the rule matches (put it before the rules it overrides).
    pub fn deny(
        self,
        id: &str,
        principals: &[&str],
        terminals: &[&str],
        backends: &[BackendName],
    ) -> Self {
        let rule = self.rule(Effect::Deny, id, principals, terminals, backends);
        // A deny rule about writing only: narrow it with `access`.
        rule
    }

    fn last(&mut self) -> Option<&mut RawRule> {
        self.file.rule.last_mut()
    }

    /// The access modes the last rule matches.
    pub fn access(mut self, modes: &[AccessMode]) -> Self {
        if let Some(r) = self.last() {
            r.access = modes.to_vec();
        }
        self
    }

    /// The longest life a share under the last rule may have, from its start.
    pub fn max_ttl(mut self, max: Duration) -> Self {
        if let Some(r) = self.last() {
            r.max_ttl = Some(humantime::format_duration(max).to_string());
        }
        self
    }

    /// At most this many live shares of a terminal under the last rule.
    pub fn max_concurrent(mut self, max: u32) -> Self {
        if let Some(r) = self.last() {
            r.max_concurrent = Some(max);
        }
        self
    }

    /// The last rule gives every share a join timeout of at most `max`.
    pub fn max_join_timeout(mut self, max: Duration) -> Self {
        if let Some(r) = self.last() {
            r.max_join_timeout = Some(humantime::format_duration(max).to_string());
        }
        self
    }

    /// The last rule gives every share a participant limit of at most `max`.
    pub fn max_participants(mut self, max: u32) -> Self {
        if let Some(r) = self.last() {
            r.max_participants = Some(max);
        }
        self
    }

    /// The last rule has every share it allows recorded.
    pub fn record(mut self) -> Self {
        if let Some(r) = self.last() {
            r.record = true;
        }
        self
    }

    /// The last rule admits only backends that restrict who may join.
    pub fn require_join_restriction(mut self) -> Self {
        if let Some(r) = self.last() {
            r.require_join_restriction = true;
        }
        self
    }

    /// Local user `uid` may act as `principals` over the daemon's socket (the first is
    /// its default).
    pub fn identity(mut self, uid: u32, principals: &[&str]) -> Self {
        self.file.identity.push(RawIdentity {
            user: None,
            uid: Some(uid),
            principals: owned(principals),
        });
        self
    }

    /// The policy, checked as a policy file is.
    pub fn build(self) -> Result<Policy, PolicyError> {
        Policy::from_file(self.file).map_err(PolicyError::Invalid)
    }
}

#[cfg(test)]
mod tests {
    use termshare_actors::{PolicyDecision, PolicyGate, PolicyQuery};

    use super::*;

    #[test]
    fn a_files_join_maxima_and_recording_reach_the_grant() {
        let text = r#"
[[rule]]
id = "watched"
effect = "allow"
principals = ["human:*"]
terminals = ["*"]
backends = ["tty-share"]
access = ["read-only"]
record = true
max_join_timeout = "10m"
max_participants = 3
"#;
        let policy = Policy::parse(text).unwrap();
        let q = PolicyQuery {
            principal: &"human:ann".parse().unwrap(),
            terminal: &"dev".parse().unwrap(),
            backend: &BackendName::TTY_SHARE,
            access: AccessMode::ReadOnly,
        };
        let PolicyDecision::Allow(grant) = policy.evaluate(&q) else {
            panic!("denied");
        };
        assert!(grant.record);
        assert_eq!(grant.max_join_timeout, Some(Duration::from_secs(600)));
        assert_eq!(grant.max_participants, Some(3));
        let zero = text.replace("max_participants = 3", "max_participants = 0");
        assert!(Policy::parse(&zero).is_err());
        // The builder says the same.
        let built = Policy::builder()
            .allow("watched", &["human:*"], &["*"], &[BackendName::TTY_SHARE])
            .record()
            .max_join_timeout(Duration::from_secs(600))
            .max_participants(3)
            .build()
            .unwrap();
        let PolicyDecision::Allow(same) = built.evaluate(&q) else {
            panic!("denied");
        };
        assert_eq!(
            (same.record, same.max_join_timeout, same.max_participants),
            (true, Some(Duration::from_secs(600)), Some(3))
        );
    }
}
