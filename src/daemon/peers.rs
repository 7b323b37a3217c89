//! Who is on the other end of a connection, and as whom it may act.
//!
//! The kernel tells the peer's uid and pid (SO_PEERCRED); the policy's `[[identity]]`
//! entries map a uid to the principals it may act as. `--as` (the request's `as`)
//! only picks one of those; the tree refuses any other claim, and audits it with the
//! peer. The daemon's own user is the operator: it owns the terminals, may act on
//! every share, and is `human:<its user name>` unless an entry says otherwise. Other
//! users reach the daemon only through `[service] socket_group`, and only with an
//! entry of their own.

use std::collections::BTreeMap;

use termshare_actors::{
    glob_match, Badge, Badges, Caller, Identity, InvalidInput, Peer, Principal, ShareError,
};

use crate::policy::{IdentityEntry, Policy};

/// The uid → principals map of one daemon.
#[derive(Clone, Debug)]
pub struct PeerMap {
    owner_uid: u32,
    owner_principals: Vec<Principal>,
    entries: Vec<IdentityEntry>,
    /// Whether other users can reach the socket at all (`socket_group`).
    others_allowed: bool,
}

/// A user's name, as the system knows it.
pub fn user_name(uid: u32) -> Option<String> {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name)
}

/// `human:<name of uid>`, or `human:uid-N` when the name is not a valid principal name.
pub fn default_principal(uid: u32) -> Principal {
    user_name(uid)
        .and_then(|n| format!("human:{n}").parse().ok())
        .unwrap_or_else(|| {
            format!("human:uid-{uid}")
                .parse()
                .expect("a valid principal name")
        })
}

impl PeerMap {
    /// The map of `policy`'s identities; `others_allowed` when `socket_group` is set.
    pub fn new(policy: &Policy, others_allowed: bool) -> Self {
        let owner_uid = nix::unistd::geteuid().as_raw();
        let owner_principals = match policy.identity_of(owner_uid) {
            Some(entry) => entry.principals.clone(),
            None => vec![default_principal(owner_uid)],
        };
        PeerMap {
            owner_uid,
            owner_principals,
            entries: policy.identities.clone(),
            others_allowed,
        }
    }

    /// The identity of the peer `uid` (with its `pid`), or why it is turned away.
    pub fn identify(&self, uid: u32, pid: Option<i32>) -> Result<Identity, String> {
        let peer = Peer {
            uid,
            user: user_name(uid),
            pid,
        };
        if uid == self.owner_uid {
            return Ok(Identity::local_user(
                peer,
                self.owner_principals.clone(),
                true,
            ));
        }
        if !self.others_allowed {
            return Err(format!(
                "{peer} is not the daemon's user, and [service] socket_group is not set"
            ));
        }
        match self.entries.iter().find(|e| e.uid == uid) {
            Some(e) => Ok(Identity::local_user(peer, e.principals.clone(), false)),
            None => Err(format!(
                "{peer} has no [[identity]] in the daemon's policy; ask its operator for one"
            )),
        }
    }
}

/// The caller of one request: the principal it names (`as`), or its identity's first.
/// Whether the identity may act as it is checked by the tree (and audited there).
pub fn caller(identity: &Identity, claimed: Option<&str>) -> Result<Caller, ShareError> {
    let principal =
        match claimed {
            Some(p) => p.parse::<Principal>()?,
            None => identity.principals().first().cloned().ok_or_else(|| {
                InvalidInput::new("principal", "", "this identity may act as nobody")
            })?,
        };
    Ok(Caller::new(principal, identity.clone()))
}

/// The part of the badge board `identity` may see: everything for the operator;
/// for others, the shares they own and the handoffs they are a party to.
pub fn visible_board(board: &Badges, identity: &Identity) -> Badges {
    if identity.is_operator() {
        return board.clone();
    }
    let mine = |p: &Principal| identity.may_act_as(p);
    let mut out = BTreeMap::new();
    for (terminal, badge) in board {
        let shares: Vec<_> = badge
            .shares
            .iter()
            .filter(|s| mine(&s.principal))
            .cloned()
            .collect();
        let handoff = badge
            .handoff
            .as_ref()
            .filter(|h| {
                mine(&h.from)
                    || mine(&h.to)
                    || identity.principals().iter().any(|p| {
                        h.approvers
                            .iter()
                            .any(|pattern| glob_match(pattern, p.as_str()))
                    })
            })
            .cloned();
        if !shares.is_empty() || handoff.is_some() {
            out.insert(terminal.clone(), Badge { shares, handoff });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_owner_is_the_operator_others_need_an_entry_and_the_group() {
        let me = nix::unistd::geteuid().as_raw();
        let policy = Policy::parse(&format!(
            "[[identity]]\nuid = {other}\nprincipals = [\"human:bob\", \"agent:bot\"]\n",
            other = me + 4242
        ))
        .unwrap();
        let closed = PeerMap::new(&policy, false);
        let owner = closed.identify(me, Some(1)).unwrap();
        assert!(owner.is_operator());
        assert_eq!(owner.principals()[0], default_principal(me));
        assert!(
            closed.identify(me + 4242, Some(2)).is_err(),
            "no socket_group"
        );
        let open = PeerMap::new(&policy, true);
        let bob = open.identify(me + 4242, Some(2)).unwrap();
        assert!(!bob.is_operator());
        assert_eq!(caller(&bob, None).unwrap().principal.as_str(), "human:bob");
        assert_eq!(
            caller(&bob, Some("agent:bot")).unwrap().principal.as_str(),
            "agent:bot"
        );
        // A claim outside the identity is built, and refused by the tree's check.
        assert!(caller(&bob, Some("human:alice"))
            .unwrap()
            .check_claim()
            .is_err());
        assert!(open.identify(me + 4243, Some(3)).is_err(), "no entry");
    }
}
