//! Stand-in policies (allow all, deny all, an approval chain) and an audit sink that
//! fails on demand.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use crate::traits::{Grant, PolicyDecision, PolicyGate, PolicyQuery};
use crate::types::{AccessMode, TerminalName};

/// A policy of one rule that allows everything, with optional bounds.
pub struct AllowAll {
    /// The rule's `max_ttl`.
    pub max_ttl: Option<Duration>,
    /// The rule's `max_concurrent`.
    pub max_concurrent: Option<u32>,
    /// The rule's `require_join_restriction`.
    pub require_join_restriction: bool,
}

impl PolicyGate for AllowAll {
    fn evaluate(&self, _q: &PolicyQuery<'_>) -> PolicyDecision {
        PolicyDecision::Allow(Grant {
            rule_id: "allow-all".into(),
            max_ttl: self.max_ttl,
            max_concurrent: self.max_concurrent,
            require_join_restriction: self.require_join_restriction,
            record: false,
            max_join_timeout: None,
            max_participants: None,
        })
    }
}

/// A policy with no rules: denies everything.
pub struct DenyAll;

impl PolicyGate for DenyAll {
    fn evaluate(&self, _q: &PolicyQuery<'_>) -> PolicyDecision {
        PolicyDecision::Deny {
            rule_id: None,
            reason: "no rule allows this share".into(),
        }
    }
}

/// A sink that keeps events in memory, records each batch's size, and fails on demand
/// (a full disk).
#[derive(Clone, Default)]
pub struct FlakySink {
    /// Every event kept, in order.
    pub events: Arc<Mutex<Vec<crate::audit::AuditEvent>>>,
    /// The size of each batch written.
    pub batches: Arc<Mutex<Vec<usize>>>,
    /// While set, every write fails (a full disk).
    pub failing: Arc<std::sync::atomic::AtomicBool>,
    /// Each write takes this long (a slow disk).
    pub delay: Arc<Mutex<Duration>>,
}

impl crate::traits::AuditSink for FlakySink {
    fn append(&mut self, events: &[crate::audit::AuditEvent]) -> Result<(), String> {
        let delay = *self.delay.lock();
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        if self.failing.load(Ordering::SeqCst) {
            return Err("No space left on device (injected)".into());
        }
        self.batches.lock().push(events.len());
        self.events.lock().extend_from_slice(events);
        Ok(())
    }
}

/// Allows every share except agents writing, and hands any terminal between any pair
/// through the given approval chain.
pub struct ChainPolicy {
    /// The chain's approvers, in step order.
    pub approvers: Vec<String>,
    /// How long each step waits for its approver.
    pub step_timeout: Duration,
    /// The access an agent receiver gets at most.
    pub agent_access: AccessMode,
    /// Whether the receiver's share must start for the handoff to complete.
    pub receiver_share: crate::traits::ReceiverShare,
}

impl PolicyGate for ChainPolicy {
    fn evaluate(&self, q: &PolicyQuery<'_>) -> PolicyDecision {
        if q.principal.kind() == "agent" && q.access == AccessMode::ReadWrite {
            return PolicyDecision::Deny {
                rule_id: Some("no-agent-writes".into()),
                reason: "agents may not write".into(),
            };
        }
        PolicyDecision::Allow(Grant {
            rule_id: "chain".into(),
            max_ttl: None,
            max_concurrent: None,
            require_join_restriction: false,
            record: false,
            max_join_timeout: None,
            max_participants: None,
        })
    }

    fn handoff(
        &self,
        _from: &crate::types::Principal,
        _to: &crate::types::Principal,
        _terminal: &TerminalName,
    ) -> Result<crate::traits::HandoffGrant, String> {
        Ok(crate::traits::HandoffGrant {
            rule_id: "chain".into(),
            approvers: self.approvers.clone(),
            step_timeout: self.step_timeout,
            agent_access: self.agent_access,
            receiver_share: self.receiver_share,
        })
    }
}
