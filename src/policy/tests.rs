use super::*;
use termshare_actors::{BackendName, Principal, TerminalName};

fn ask(p: &Policy, who: &str, term: &str, backend: &str, access: AccessMode) -> PolicyDecision {
    let (who, term, backend): (Principal, TerminalName, BackendName) = (
        who.parse().unwrap(),
        term.parse().unwrap(),
        BackendName::new(backend),
    );
    p.evaluate(&PolicyQuery {
        principal: &who,
        terminal: &term,
        backend: &backend,
        access,
    })
}

const POLICY: &str = r#"
[[rule]]
id = "no-agent-writes"
effect = "deny"
principals = ["agent:*"]
terminals = ["*"]
backends = ["*"]
access = ["read-write"]

[[rule]]
id = "team"
effect = "allow"
principals = ["human:*", "agent:*"]
terminals = ["dev-*"]
backends = ["tty-share", "tmate"]
access = ["read-only", "read-write"]
max_ttl = "2h"
max_concurrent = 1
"#;

#[test]
fn first_match_decides_and_no_match_denies() {
    let p = Policy::parse(POLICY).unwrap();
    use AccessMode::*;
    match ask(&p, "human:alice", "dev-1", "tty-share", ReadWrite) {
        PolicyDecision::Allow(g) => {
            assert_eq!(g.rule_id, "team");
            assert_eq!(g.max_ttl, Some(Duration::from_secs(7200)));
            assert_eq!(g.max_concurrent, Some(1));
        }
        d => panic!("{d:?}"),
    }
    assert!(matches!(
        ask(&p, "agent:bot", "dev-1", "tty-share", ReadWrite),
        PolicyDecision::Deny { rule_id: Some(r), .. } if r == "no-agent-writes"
    ));
    assert!(matches!(
        ask(&p, "agent:bot", "dev-1", "tty-share", ReadOnly),
        PolicyDecision::Allow(_)
    ));
    // Not covered: terminal, backend.
    for (t, b) in [("prod", "tty-share"), ("dev-1", "upterm")] {
        match ask(&p, "human:alice", t, b, ReadOnly) {
            PolicyDecision::Deny {
                rule_id: None,
                reason,
            } => {
                assert!(reason.contains("no policy rule allows"), "{reason}")
            }
            d => panic!("{d:?}"),
        }
    }
}

#[test]
fn handoff_rules_give_the_approval_chain() {
    let p = Policy::parse(
        r#"
[[handoff]]
id = "human-to-agent"
from = ["human:*"]
to = ["agent:*"]
terminals = ["*"]
approvers = ["human:owner", "human:lead"]
step_timeout = "2m"
agent_access = "read-only"
"#,
    )
    .unwrap();
    let (a, b, t) = (
        "human:x".parse().unwrap(),
        "agent:y".parse().unwrap(),
        "dev".parse().unwrap(),
    );
    let g = p.handoff(&a, &b, &t).unwrap();
    assert_eq!(g.approvers, ["human:owner", "human:lead"]);
    assert_eq!(g.step_timeout, Duration::from_secs(120));
    assert_eq!(g.agent_access, AccessMode::ReadOnly);
    // A receiver's share is part of the handoff unless the rule says otherwise.
    assert_eq!(g.receiver_share, ReceiverShare::Required);
    let optional = Policy::parse(
        "[[handoff]]\nid=\"h\"\nfrom=[\"*\"]\nto=[\"*\"]\nterminals=[\"*\"]\napprovers=[\"human:a\"]\nstep_timeout=\"1m\"\nagent_access=\"read-only\"\nreceiver_share=\"optional\"",
    )
    .unwrap();
    assert_eq!(
        optional.handoff(&a, &b, &t).unwrap().receiver_share,
        ReceiverShare::Optional
    );
    let err = p.handoff(&b, &a, &t).unwrap_err();
    assert!(err.contains("no handoff rule lets agent:y"), "{err}");
    for bad in [
        "[[handoff]]\nid=\"h\"\nfrom=[]\nto=[]\nterminals=[]\napprovers=[]\nstep_timeout=\"1m\"\nagent_access=\"read-only\"",
        "[[handoff]]\nid=\"h\"\nfrom=[]\nto=[]\nterminals=[]\napprovers=[\"lead\"]\nstep_timeout=\"1m\"\nagent_access=\"read-only\"",
        "[[handoff]]\nid=\"h\"\nfrom=[]\nto=[]\nterminals=[]\napprovers=[\"human:a\"]\nstep_timeout=\"soon\"\nagent_access=\"read-only\"",
        "[[handoff]]\nid=\"h\"\nfrom=[]\nto=[]\nterminals=[]\napprovers=[\"human:a\"]\nstep_timeout=\"1m\"\nagent_access=\"all\"",
        "[[handoff]]\nid=\"h\"\nfrom=[]\nto=[]\nterminals=[]\napprovers=[\"human:a\"]\nstep_timeout=\"1m\"\nagent_access=\"read-only\"\nreceiver_share=\"sometimes\"",
    ] {
        assert!(Policy::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn empty_policy_denies() {
    assert!(matches!(
        ask(
            &Policy::default(),
            "human:a",
            "x",
            "tmate",
            AccessMode::ReadOnly
        ),
        PolicyDecision::Deny { .. }
    ));
}

#[test]
fn bad_files_are_typed_errors() {
    for bad in [
        "[[rule]]\nid = \"a\"",                                 // missing lists
        "[[rule]]\nid=\"a\"\neffect=\"maybe\"\nprincipals=[]\nterminals=[]\nbackends=[]\naccess=[]",
        "[[rule]]\nid=\"a\"\neffect=\"allow\"\nprincipals=[]\nterminals=[]\nbackends=[]\naccess=[\"rw\"]",
        "[[rule]]\nid=\"a\"\neffect=\"allow\"\nprincipals=[]\nterminals=[]\nbackends=[]\naccess=[]\nmax_ttl=\"soon\"",
        "[[rule]]\nid=\"a\"\neffect=\"allow\"\nprincipals=[]\nterminals=[]\nbackends=[]\naccess=[]\ncolour=1",
        "not toml at all [",
    ] {
        assert!(Policy::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn identities_name_a_user_once_with_real_principals() {
    let p = Policy::parse(
        "[[identity]]\nuid = 1001\nprincipals = [\"human:alice\", \"agent:alice-bot\"]\n\
         [[identity]]\nuser = \"root\"\nprincipals = [\"human:ops\"]\n",
    )
    .unwrap();
    let alice = p.identity_of(1001).unwrap();
    assert_eq!(alice.principals[0].as_str(), "human:alice");
    assert_eq!(
        p.identity_of(0).unwrap().principals[0].as_str(),
        "human:ops"
    );
    assert!(p.identity_of(4242).is_none());
    for bad in [
        "[[identity]]\nprincipals = [\"human:a\"]",
        "[[identity]]\nuid = 1\nuser = \"root\"\nprincipals = [\"human:a\"]",
        "[[identity]]\nuid = 1\nprincipals = []",
        "[[identity]]\nuid = 1\nprincipals = [\"human:*\"]",
        "[[identity]]\nuser = \"no-such-user-here\"\nprincipals = [\"human:a\"]",
        "[[identity]]\nuid = 1\nprincipals = [\"human:a\"]\n[[identity]]\nuid = 1\nprincipals = [\"human:b\"]",
    ] {
        assert!(Policy::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn globs() {
    assert!(glob_match("*", ""));
    assert!(glob_match("human:*", "human:alice"));
    assert!(glob_match("a*c*e", "abcde"));
    assert!(!glob_match("a*c", "abd"));
    assert!(!glob_match("human:al", "human:alice"));
}
