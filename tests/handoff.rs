//! Handoffs through the daemon and the CLI, with the context captured from a real tmux
//! terminal, between real local users: each step of a chain needs another person, and
//! the kernel (not a flag) says who each caller is. These tests add users, so they need
//! root (`scripts/test.sh` runs them as root).

mod common;

use std::time::Duration;

use common::users::{SharedDaemon, TestUsers};
use common::*;
use serde_json::Value;

/// Agents may not write; everyone may share over tty-share; two handoff rules whose
/// chains differ by direction.
fn policy_text() -> String {
    format!(
        "{}{}{HANDOFFS}",
        NO_AGENT_WRITES,
        allow_all(&["tty-share"], "1h")
    )
}

const HANDOFFS: &str = r#"
[[handoff]]
id = "human-to-agent"
from = ["human:*"]
to = ["agent:*"]
terminals = ["*"]
approvers = ["human:owner", "human:lead"]
step_timeout = "2m"
agent_access = "read-write"

[[handoff]]
id = "agent-to-human"
from = ["agent:*"]
to = ["human:*"]
terminals = ["*"]
approvers = ["human:lead", "human:owner"]
step_timeout = "2m"
agent_access = "read-only"
"#;

/// Users: alice and claude hand off; owner and lead approve; bob receives; boss may
/// act as both approvers; mallory is nobody's party.
fn setup() -> (Tmux, TestUsers, SharedDaemon) {
    let host = Tmux::new("S");
    let users = TestUsers::new(&["alice", "claude", "owner", "lead", "bob", "boss", "mallory"]);
    let identities = users.identities(&[
        ("alice", &["human:alice"]),
        ("claude", &["agent:claude"]),
        ("owner", &["human:owner"]),
        ("lead", &["human:lead"]),
        ("bob", &["human:bob"]),
        ("boss", &["human:owner", "human:lead"]),
        ("mallory", &["human:mallory"]),
    ]);
    let shared = SharedDaemon::start(&host, &users, &policy_text(), &identities);
    (host, users, shared)
}

fn kinds_for(host: &Tmux, id: &str) -> Vec<String> {
    host.audit()
        .iter()
        .filter(|e| e["correlation_id"] == id)
        .map(|e| e["kind"].as_str().unwrap().to_owned())
        .collect()
}

/// The uid on each audit event of handoff `id`, in order.
fn peers_for(host: &Tmux, id: &str) -> Vec<Option<u64>> {
    host.audit()
        .iter()
        .filter(|e| e["correlation_id"] == id)
        .map(|e| e["peer"]["uid"].as_u64())
        .collect()
}

/// claude hands terminal S to human:bob; the handoff's id.
fn agent_hands_to_bob(users: &TestUsers, d: &SharedDaemon) -> String {
    let requested = d.json_as(
        users.user("claude"),
        &["handoff", "request", "S", "--to", "human:bob"],
    );
    requested["handoff_id"].as_str().unwrap().to_owned()
}

fn type_and_see(host: &Tmux, text: &str, expect: &str) {
    host.type_line(text);
    let seen = wait_until(Duration::from_secs(5), || host.screen().contains(expect));
    assert!(
        seen.is_some(),
        "the host never showed {expect}:\n{}",
        host.screen()
    );
}

#[test]
#[ignore = "needs root: adds users"]
fn human_to_agent_through_two_approvals_hands_over_context_and_a_read_only_share() {
    let (host, users, d) = setup();
    let (alice, owner, lead, boss, claude) = (
        users.user("alice"),
        users.user("owner"),
        users.user("lead"),
        users.user("boss"),
        users.user("claude"),
    );
    type_and_see(
        &host,
        "cd /tmp && echo HANDOFF_MARK_$((6*7))",
        "HANDOFF_MARK_42",
    );

    let requested = d.json_as(
        alice,
        &[
            "handoff",
            "request",
            "S",
            "--to",
            "agent:claude",
            "--reason",
            "finish the release",
            "--backend",
            "tty-share",
        ],
    );
    let id = requested["handoff_id"].as_str().unwrap().to_owned();
    assert_eq!(requested["state"], "pending");
    assert_eq!(
        requested["from"], "human:alice",
        "alice acts as her own principal"
    );
    assert_eq!(
        requested["approvers"],
        serde_json::json!(["human:owner", "human:lead"])
    );

    // The wrong approver for step 1 is refused.
    let (code, _, err) = d.run_as(lead, &["handoff", "approve", &id]);
    assert_eq!(code, termshare::exit::DENIED, "{err}");
    assert!(
        err.contains("step 1 is for human:owner to approve, not human:lead"),
        "{err}"
    );
    // boss may act as both approvers: it approves step 1 ...
    let step2 = d.json_as(boss, &["handoff", "approve", &id, "--as", "human:owner"]);
    assert_eq!(
        (step2["state"].as_str(), step2["step"].as_u64()),
        (Some("pending"), Some(2))
    );
    // ... and may not approve step 2 as well: each step needs another person.
    let (code, _, err) = d.run_as(boss, &["handoff", "approve", &id, "--as", "human:lead"]);
    assert_eq!(code, termshare::exit::DENIED, "{err}");
    assert!(err.contains("already approved step 1"), "{err}");
    // owner's identity cannot claim to be the lead.
    let (code, _, err) = d.run_as(owner, &["handoff", "approve", &id, "--as", "human:lead"]);
    assert_eq!(code, termshare::exit::DENIED, "{err}");
    assert!(
        err.contains("may act as human:owner, not as human:lead"),
        "{err}"
    );
    let badge = d.json_as(alice, &["status"]);
    assert_eq!(badge["badges"]["S"]["handoff"]["state"], "pending");

    let done = d.json_as(lead, &["handoff", "approve", &id]);
    assert_eq!(done["state"], "completed");
    // The approver sees the outcome, not the package (that is the receiver's).
    assert!(done.get("package").is_none(), "{done}");
    let received = d.json_as(claude, &["handoff", "show", &id]);
    let package = &received["package"];
    assert!(
        package["scrollback"]
            .as_str()
            .unwrap()
            .contains("HANDOFF_MARK_42"),
        "{package}"
    );
    assert_eq!(package["cwd"], "/tmp");
    assert_eq!(package["command"], "bash");
    assert_eq!(
        (package["cols"].as_u64(), package["rows"].as_u64()),
        (Some(120), Some(30))
    );
    // Agents may not write here: the receiver's share is read-only.
    assert_eq!(package["access"], "read-only");
    let share_id = package["share_id"].as_str().unwrap();
    let shares: Vec<Value> = d
        .run_as(claude, &["list", "--json"])
        .1
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let share = shares.iter().find(|s| s["share_id"] == share_id).unwrap();
    assert_eq!(
        (share["access"].as_str(), share["principal"].as_str()),
        (Some("read-only"), Some("agent:claude"))
    );
    assert_eq!(share["link"], package["link"]);
    // The requester sees how it ended, without the receiver's link.
    let shown = d.json_as(alice, &["handoff", "show", &id]);
    assert_eq!(shown["state"], "completed");
    assert!(shown.get("package").is_none(), "{shown}");
    // Someone who is no party to it sees nothing of it.
    let (code, _, err) = d.run_as(users.user("mallory"), &["handoff", "show", &id]);
    assert_eq!(code, termshare::exit::NOT_FOUND, "{err}");
    assert_eq!(
        d.json_as(claude, &["status"])["badges"]["S"]["handoff"]["state"],
        "completed"
    );
    assert_eq!(
        kinds_for(&host, &id),
        [
            "handoff.requested",
            "handoff.refused",
            "handoff.approved",
            "handoff.refused",
            "handoff.refused",
            "handoff.approved",
            "handoff.completed"
        ]
    );
    // Every step names the peer who took it, as the kernel reported it.
    let uid = |short: &str| Some(users.user(short).uid as u64);
    assert_eq!(
        peers_for(&host, &id),
        [
            uid("alice"),
            uid("lead"),
            uid("boss"),
            uid("boss"),
            uid("owner"),
            uid("lead"),
            uid("lead")
        ]
    );
    // The scrollback itself is not copied into the audit log; its size is.
    let completed = host
        .audit()
        .into_iter()
        .find(|e| e["kind"] == "handoff.completed")
        .unwrap();
    assert!(completed["details"]["scrollback_lines"].as_u64().unwrap() >= 1);
    assert!(!completed.to_string().contains("HANDOFF_MARK_42"));
    d.daemon.stop();
}

#[test]
#[ignore = "needs root: adds users"]
fn a_receiver_share_the_terminal_has_no_room_for_fails_the_handoff_visibly() {
    let (host, users, d) = setup();
    let (alice, bob, claude) = (users.user("alice"), users.user("bob"), users.user("claude"));
    // bob's share takes the terminal's one slot.
    let busy = d.json_as(bob, &["share", "S", "--backend", "tty-share"]);
    let requested = d.json_as(
        alice,
        &[
            "handoff",
            "request",
            "S",
            "--to",
            "agent:claude",
            "--backend",
            "tty-share",
        ],
    );
    let id = requested["handoff_id"].as_str().unwrap().to_owned();
    d.json_as(users.user("owner"), &["handoff", "approve", &id]);
    let (code, _, err) = d.run_as(users.user("lead"), &["handoff", "approve", &id]);
    // The receiver's share's own exit code, and words that say the handoff failed.
    assert_eq!(code, termshare::exit::LIMIT_REACHED, "{err}");
    assert!(err.contains(&format!("handoff {id} failed")), "{err}");
    assert!(err.contains("already has 1 live share"), "{err}");
    let shown = d.json_as(claude, &["handoff", "show", &id]);
    assert_eq!(shown["state"], "failed");
    assert!(shown.get("package").is_none(), "{shown}");
    assert_eq!(
        kinds_for(&host, &id),
        [
            "handoff.requested",
            "handoff.approved",
            "handoff.approved",
            "handoff.failed"
        ]
    );
    // Only bob's share is live.
    let live: Vec<String> = d
        .run_as(bob, &["list", "--json"])
        .1
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["share_id"].to_string())
        .collect();
    assert_eq!(live, [busy["share_id"].to_string()]);
    d.daemon.stop();
}

#[test]
#[ignore = "needs root: adds users"]
fn agent_to_human_denied_at_step_two_is_a_clear_error_then_approved_the_same_way() {
    let (host, users, d) = setup();
    let (lead, owner, bob) = (users.user("lead"), users.user("owner"), users.user("bob"));
    type_and_see(&host, "echo AGENT_WORK_$((7*6))", "AGENT_WORK_42");

    let denied_id = agent_hands_to_bob(&users, &d);
    d.json_as(lead, &["handoff", "approve", &denied_id]);
    let denied = d.json_as(
        owner,
        &["handoff", "deny", &denied_id, "--reason", "bob is on leave"],
    );
    assert_eq!(denied["state"], "denied");
    // The receiver learns the outcome.
    let seen = d.json_as(bob, &["handoff", "show", &denied_id]);
    assert_eq!(seen["state"], "denied");
    let (code, _, err) = d.run_as(owner, &["handoff", "approve", &denied_id]);
    assert_eq!(code, termshare::exit::EXPIRED, "{err}");
    assert!(
        err.contains("denied at step 2 by human:owner: bob is on leave"),
        "{err}"
    );
    assert_eq!(
        kinds_for(&host, &denied_id),
        ["handoff.requested", "handoff.approved", "handoff.denied"]
    );

    let id = agent_hands_to_bob(&users, &d);
    d.json_as(lead, &["handoff", "approve", &id]);
    let done = d.json_as(owner, &["handoff", "approve", &id]);
    assert_eq!(done["state"], "completed");
    let package = d.json_as(bob, &["handoff", "show", &id])["package"].clone();
    assert!(package["scrollback"]
        .as_str()
        .unwrap()
        .contains("AGENT_WORK_42"));
    assert_eq!(
        package["access"], "read-write",
        "a human receiver may write"
    );
    // The operator (the daemon's user) sees every handoff.
    let (code, list, _) = d.daemon.run(&["handoff", "list"]);
    assert_eq!(code, 0);
    assert!(list.contains(&denied_id) && list.contains(&id), "{list}");
    d.daemon.stop();
}

#[test]
#[ignore = "needs root: adds users"]
fn a_handoff_no_rule_covers_is_denied_and_so_is_a_claim_outside_the_callers_identity() {
    let (host, users, d) = setup();
    let (code, _, err) = d.run_as(
        users.user("claude"),
        &["handoff", "request", "S", "--to", "agent:x"],
    );
    assert_eq!(code, termshare::exit::DENIED, "{err}");
    assert!(
        err.contains("no handoff rule lets agent:claude hand terminal S to agent:x"),
        "{err}"
    );
    // alice may not request in the owner's name.
    let alice = users.user("alice");
    let (code, _, err) = d.run_as(
        alice,
        &[
            "handoff",
            "request",
            "S",
            "--to",
            "agent:claude",
            "--as",
            "human:owner",
        ],
    );
    assert_eq!(code, termshare::exit::DENIED, "{err}");
    assert!(
        err.contains("may act as human:alice, not as human:owner"),
        "{err}"
    );
    let refused = host
        .audit()
        .into_iter()
        .rev()
        .find(|e| e["kind"] == "handoff.denied")
        .unwrap();
    assert_eq!(refused["peer"]["uid"].as_u64(), Some(alice.uid as u64));
    assert!(refused["peer"]["pid"].as_u64().is_some());
    d.daemon.stop();
}

#[test]
#[ignore = "needs root: adds users"]
fn the_requester_cannot_approve_its_own_handoff() {
    let host = Tmux::new("S");
    let users = TestUsers::new(&["alice", "lead"]);
    // alice may also act as the first approver.
    let identities = users.identities(&[
        ("alice", &["human:alice", "human:owner"]),
        ("lead", &["human:lead"]),
    ]);
    let d = SharedDaemon::start(&host, &users, &policy_text(), &identities);
    let id = d.json_as(
        users.user("alice"),
        &["handoff", "request", "S", "--to", "agent:claude"],
    )["handoff_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (code, _, err) = d.run_as(
        users.user("alice"),
        &["handoff", "approve", &id, "--as", "human:owner"],
    );
    assert_eq!(code, termshare::exit::DENIED, "{err}");
    assert!(err.contains("the requester cannot approve"), "{err}");
    assert_eq!(
        d.json_as(users.user("lead"), &["handoff", "show", &id])["step"],
        1
    );
    d.daemon.stop();
}

/// Seconds from `started_at` to `expires_at` of a share as `list --json` shows it.
fn ttl_secs(share: &Value) -> i64 {
    let at = |k: &str| {
        let t = share[k].as_str().unwrap();
        humantime::parse_rfc3339(t).unwrap_or_else(|e| panic!("{k} = {t}: {e}"))
    };
    at("expires_at")
        .duration_since(at("started_at"))
        .unwrap()
        .as_secs() as i64
}

#[test]
#[ignore = "needs root: adds users"]
fn a_handoff_may_set_the_receiver_shares_ttl_within_the_receivers_max_ttl() {
    let (host, users, d) = setup();
    let (alice, owner, lead, claude) = (
        users.user("alice"),
        users.user("owner"),
        users.user("lead"),
        users.user("claude"),
    );
    let args = |ttl| {
        [
            "handoff",
            "request",
            "S",
            "--to",
            "agent:claude",
            "--backend",
            "tty-share",
            "--ttl",
            ttl,
        ]
    };
    // Past the receiver's max_ttl (1h): refused at the request, before any approver
    // is asked, and no handoff is recorded.
    let (code, _, err) = d.run_as(alice, &args("2h"));
    assert_eq!(code, termshare::exit::DENIED, "{err}");
    assert!(err.contains("max") && err.contains("1h"), "{err}");
    let (code, _, err) = d.run_as(
        alice,
        &[
            "handoff",
            "request",
            "S",
            "--to",
            "agent:claude",
            "--ttl",
            "20m",
        ],
    );
    assert_eq!(
        code,
        termshare::exit::INVALID,
        "a ttl without a backend: {err}"
    );
    assert!(err.contains("backend"), "{err}");
    let (code, listed, _) = d.run_as(alice, &["handoff", "list", "--json"]);
    assert_eq!(code, 0);
    assert_eq!(
        listed.lines().count(),
        0,
        "a refused request was kept: {listed}"
    );

    let id = d.json_as(alice, &args("20m"))["handoff_id"]
        .as_str()
        .unwrap()
        .to_owned();
    d.json_as(owner, &["handoff", "approve", &id]);
    let done = d.json_as(lead, &["handoff", "approve", &id]);
    assert_eq!(done["state"], "completed", "{done}");
    let package = d.json_as(claude, &["handoff", "show", &id])["package"].clone();
    let share_id = package["share_id"].as_str().expect("a receiver share");
    let shares: Vec<Value> = d
        .run_as(claude, &["list", "--json"])
        .1
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let share = shares.iter().find(|s| s["share_id"] == share_id).unwrap();
    assert!(
        (20 * 60 - 2..=20 * 60).contains(&ttl_secs(share)),
        "the receiver's share lives {} s, not 20 min: {share}",
        ttl_secs(share)
    );
    let requested = host
        .audit()
        .into_iter()
        .find(|e| e["kind"] == "handoff.requested" && e["correlation_id"] == id.as_str())
        .unwrap();
    assert_eq!(requested["details"]["receiver_ttl"], "20m", "{requested}");
    d.daemon.stop();
}
