//! The policy seam: who may share which terminal, how, and who may hand it over.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::types::{AccessMode, BackendName, Principal, TerminalName};

/// What the policy is asked.
#[derive(Clone, Debug)]
pub struct PolicyQuery<'a> {
    /// Whom the share would belong to.
    pub principal: &'a Principal,
    /// The terminal to share.
    pub terminal: &'a TerminalName,
    /// The backend asked for.
    pub backend: &'a BackendName,
    /// The access asked for.
    pub access: AccessMode,
}

/// What an allowing rule grants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// The rule that allowed the share.
    pub rule_id: String,
    /// The longest TTL the share may have in all, extensions included.
    pub max_ttl: Option<Duration>,
    /// Live shares per terminal the rule allows (the config's limit holds if lower).
    pub max_concurrent: Option<u32>,
    /// Only backends that restrict who may join (authorized keys, GitHub users) may
    /// serve this share.
    pub require_join_restriction: bool,
    /// The share is recorded, whether or not it asked to be.
    pub record: bool,
    /// The longest join timeout the share may have; one is then required (the rule's
    /// maximum when the request names none).
    pub max_join_timeout: Option<Duration>,
    /// The most participants the share may let in; a limit is then required (this one
    /// when the request names none).
    pub max_participants: Option<u32>,
}

/// The policy's answer to a [`PolicyQuery`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PolicyDecision {
    /// A rule allows the share, within its grant.
    Allow(Grant),
    /// A rule denies it, or no rule matches.
    Deny {
        /// The denying rule; `None` when no rule matched.
        rule_id: Option<String>,
        /// Why, for the operator.
        reason: String,
    },
}

/// What an allowing handoff rule grants: an ordered approval chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandoffGrant {
    /// The `[[handoff]]` rule that allowed it.
    pub rule_id: String,
    /// Principal patterns (`human:lead`, `human:*`), one per step, in order.
    pub approvers: Vec<String>,
    /// How long each step may wait for its approver.
    pub step_timeout: std::time::Duration,
    /// The most an agent receiver gets.
    pub agent_access: AccessMode,
    /// Whether the handoff fails when the receiver's share (asked for with a backend)
    /// cannot start.
    pub receiver_share: ReceiverShare,
}

/// The `[[handoff]]` rule's `receiver_share`: is the receiver's share part of the
/// handoff, or a convenience it can go without?
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReceiverShare {
    /// No share, no handoff: a share that cannot start fails the handoff
    /// (`handoff.failed`, the share's own exit code).
    #[default]
    Required,
    /// The handoff completes without it; the package says why in `share_error`.
    Optional,
}

/// Decides whether a share may start, and who must approve a handoff. Deny by
/// default: no matching rule denies.
pub trait PolicyGate: Send + Sync + 'static {
    /// Whether the share `query` describes may start, and within what bounds.
    fn evaluate(&self, query: &PolicyQuery<'_>) -> PolicyDecision;

    /// The approval chain for handing `terminal` from `from` to `to`; `Err` names why
    /// no rule allows it.
    fn handoff(
        &self,
        _from: &Principal,
        _to: &Principal,
        _terminal: &TerminalName,
    ) -> Result<HandoffGrant, String> {
        Err("no handoff rule covers this pair".into())
    }
}
