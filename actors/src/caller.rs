//! Who acts, and what proves it.
//!
//! Every operation carries a [`Caller`]: the principal it acts as, and the [`Identity`]
//! behind it. The tree never takes a principal on someone's word:
//! - over the daemon's socket the identity comes from the kernel (the peer's uid from
//!   SO_PEERCRED), mapped through the policy's `[[identity]]` entries to the principals
//!   that uid may act as;
//! - through the library API the embedding runtime vouches for the principal
//!   ([`Identity::vouched`], also what `From<Principal>` gives).
//!
//! Admission checks that the caller's identity may act as the principal it claims
//! ([`Caller::check_claim`]) before anything else; a handoff's approval chain needs a
//! different identity per step ([`Identity::key`]), never the requester's or the
//! receiver's.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::types::{Principal, ShareInfo};

/// The local process behind a request, as the kernel reported it (SO_PEERCRED). It is
/// written on every audit event of an action taken over the socket.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Peer {
    /// The process's user id.
    pub uid: u32,
    /// The uid's user name, when the system knows one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The process id, when the kernel gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.user {
            Some(user) => write!(f, "uid {} ({user})", self.uid),
            None => write!(f, "uid {}", self.uid),
        }
    }
}

/// What proves who acts: a stable key (two callers with the same key are the same
/// person), the principals it may act as, and the process behind it when known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    key: String,
    principals: Vec<Principal>,
    peer: Option<Peer>,
    operator: bool,
    /// Set when the action carries out a fleet revoke order (`termshare fleet revoke`).
    fleet_order: Option<FleetOrder>,
}

/// A revoke ordered through the fleet database: the order's id and the PostgreSQL role
/// that recorded it. Who may order is decided by the database's grants, so the role
/// is the proven identity here; the audit event names both (`by`, `fleet_order`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FleetOrder {
    /// The order's id (`revoke_orders.order_id`).
    pub order_id: uuid::Uuid,
    /// The database role that inserted the order (`revoke_orders.ordered_by`).
    pub ordered_by: String,
}

impl Identity {
    /// A local user proven by the kernel. `operator` is true for the daemon's own
    /// user, who owns the terminals and may act on every share.
    pub fn local_user(peer: Peer, principals: Vec<Principal>, operator: bool) -> Self {
        Identity {
            key: format!("uid:{}", peer.uid),
            principals,
            peer: Some(peer),
            operator,
            fleet_order: None,
        }
    }

    /// The embedding runtime vouches that the caller is `principal`, and may act on
    /// every share (it owns the subsystem).
    pub fn vouched(principal: &Principal) -> Self {
        Identity {
            key: format!("vouched:{principal}"),
            principals: vec![principal.clone()],
            peer: None,
            operator: true,
            fleet_order: None,
        }
    }

    /// The daemon carrying out a fleet revoke `order` on a share of `owner`: the
    /// database's grants decided who may order it; the daemon acts on any share.
    pub fn fleet_order(order: FleetOrder, owner: &Principal) -> Self {
        Identity {
            key: format!("fleet:{}", order.order_id),
            principals: vec![owner.clone()],
            peer: None,
            operator: true,
            fleet_order: Some(order),
        }
    }

    /// The fleet order this action carries out, if any.
    pub fn order(&self) -> Option<&FleetOrder> {
        self.fleet_order.as_ref()
    }

    /// The receiver of a completed handoff: the approval chain vouches for it, for the
    /// one share the handoff starts. `peer` is the process whose approval completed it.
    pub(crate) fn handoff_receiver(
        handoff: impl fmt::Display,
        receiver: &Principal,
        peer: Option<Peer>,
    ) -> Self {
        Identity {
            key: format!("handoff:{handoff}"),
            principals: vec![receiver.clone()],
            peer,
            operator: false,
            fleet_order: None,
        }
    }

    /// Two callers with the same key are the same person (`uid:1001`,
    /// `vouched:human:alice`).
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Every principal this identity may act as.
    pub fn principals(&self) -> &[Principal] {
        &self.principals
    }

    /// The process behind it, when it came over the socket (or approved a handoff).
    pub fn peer(&self) -> Option<&Peer> {
        self.peer.as_ref()
    }

    /// The daemon's own user, or the embedder: may act on any share.
    pub fn is_operator(&self) -> bool {
        self.operator
    }

    /// Whether `principal` is one of [`Identity::principals`] (exactly; no globs).
    pub fn may_act_as(&self, principal: &Principal) -> bool {
        self.principals.contains(principal)
    }

    fn describe(&self) -> String {
        match &self.peer {
            Some(peer) => peer.to_string(),
            None => self.key.clone(),
        }
    }
}

/// A principal, and the identity that proves the caller may act as it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The principal the caller claims to act as.
    pub principal: Principal,
    /// What proves (or fails to prove) that claim.
    pub identity: Identity,
}

impl Caller {
    /// `identity` acting as `principal`; the claim is checked at admission, not here.
    pub fn new(principal: Principal, identity: Identity) -> Self {
        Caller {
            principal,
            identity,
        }
    }

    /// The process behind the caller's identity, if known.
    pub fn peer(&self) -> Option<&Peer> {
        self.identity.peer()
    }

    /// `Err(why)` when the identity may not act as the principal it claims.
    pub fn check_claim(&self) -> Result<(), String> {
        if self.identity.may_act_as(&self.principal) {
            return Ok(());
        }
        let allowed: Vec<&str> = self
            .identity
            .principals
            .iter()
            .map(Principal::as_str)
            .collect();
        Err(format!(
            "{} may act as {}, not as {}",
            self.identity.describe(),
            if allowed.is_empty() {
                "nobody".to_string()
            } else {
                allowed.join(", ")
            },
            self.principal
        ))
    }

    /// May this caller see the links of, extend, switch or revoke `share`? Its owner
    /// (an identity that may act as the share's principal) and the operator may.
    pub fn may_manage(&self, share: &ShareInfo) -> bool {
        self.identity.operator || self.identity.may_act_as(&share.principal)
    }
}

/// The embedder vouches for the principal (library API).
impl From<Principal> for Caller {
    fn from(principal: Principal) -> Self {
        let identity = Identity::vouched(&principal);
        Caller {
            principal,
            identity,
        }
    }
}

impl From<&Principal> for Caller {
    fn from(principal: &Principal) -> Self {
        principal.clone().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Principal {
        s.parse().unwrap()
    }

    #[test]
    fn a_claim_outside_the_identity_is_refused_with_who_asked() {
        let peer = Peer {
            uid: 1001,
            user: Some("bob".into()),
            pid: Some(42),
        };
        let id = Identity::local_user(peer, vec![p("human:bob")], false);
        assert!(Caller::new(p("human:bob"), id.clone())
            .check_claim()
            .is_ok());
        let err = Caller::new(p("human:alice"), id).check_claim().unwrap_err();
        assert_eq!(
            err,
            "uid 1001 (bob) may act as human:bob, not as human:alice"
        );
    }

    #[test]
    fn the_embedder_vouches_for_its_principal() {
        let c: Caller = p("agent:claude").into();
        assert!(c.check_claim().is_ok());
        assert!(c.identity.is_operator());
        assert_eq!(c.identity.key(), "vouched:agent:claude");
        assert!(c.peer().is_none());
    }
}
