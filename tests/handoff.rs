//! Handoffs through the daemon and the CLI, with the context captured from a real tmux
//! terminal.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

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
terminals = ["*"]
backends = ["tty-share"]
access = ["read-only", "read-write"]
max_ttl = "1h"

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

fn setup() -> (Tmux, Daemon) {
    let host = Tmux::new("S");
    let policy = host.dir.path().join("handoff-policy.toml");
    std::fs::write(&policy, POLICY).unwrap();
    let daemon = Daemon::start_with_policy(&host, &policy, "");
    (host, daemon)
}

fn kinds_for(host: &Tmux, id: &str) -> Vec<String> {
    host.audit()
        .iter()
        .filter(|e| e["correlation_id"] == id)
        .map(|e| e["kind"].as_str().unwrap().to_owned())
        .collect()
}

/// `handoff request S --to human:bob --as agent:claude`; the handoff's id.
fn agent_hands_to_bob(daemon: &Daemon) -> String {
    let requested = daemon.json(&[
        "handoff",
        "request",
        "S",
        "--to",
        "human:bob",
        "--as",
        "agent:claude",
    ]);
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
fn human_to_agent_through_two_approvals_hands_over_context_and_a_read_only_share() {
    let (host, daemon) = setup();
    type_and_see(
        &host,
        "cd /tmp && echo HANDOFF_MARK_$((6*7))",
        "HANDOFF_MARK_42",
    );

    let requested = daemon.json(&[
        "handoff",
        "request",
        "S",
        "--to",
        "agent:claude",
        "--as",
        "human:alice",
        "--reason",
        "finish the release",
        "--backend",
        "tty-share",
    ]);
    let id = requested["handoff_id"].as_str().unwrap().to_owned();
    assert_eq!(requested["state"], "pending");
    assert_eq!(
        requested["approvers"],
        serde_json::json!(["human:owner", "human:lead"])
    );

    // The wrong approver for step 1 is refused.
    let (code, _, err) = daemon.run(&["handoff", "approve", &id, "--as", "human:lead"]);
    assert_eq!(code, termshare::exit::DENIED, "{err}");
    assert!(
        err.contains("step 1 is for human:owner to approve, not human:lead"),
        "{err}"
    );

    let step2 = daemon.json(&["handoff", "approve", &id, "--as", "human:owner"]);
    assert_eq!(
        (step2["state"].as_str(), step2["step"].as_u64()),
        (Some("pending"), Some(2))
    );
    let badge = daemon.json(&["status"]);
    assert_eq!(badge["badges"]["S"]["handoff"]["state"], "pending");

    let done = daemon.json(&["handoff", "approve", &id, "--as", "human:lead"]);
    assert_eq!(done["state"], "completed");
    let package = &done["package"];
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
    let shares: Vec<Value> = daemon
        .run(&["list", "--json"])
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

    let shown = daemon.json(&["handoff", "show", &id]);
    assert_eq!(shown["package"], done["package"]);
    assert_eq!(
        daemon.json(&["status"])["badges"]["S"]["handoff"]["state"],
        "completed"
    );
    assert_eq!(
        kinds_for(&host, &id),
        [
            "handoff.requested",
            "handoff.approved",
            "handoff.approved",
            "handoff.completed"
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
    daemon.stop();
}

#[test]
fn agent_to_human_denied_at_step_two_is_a_clear_error_then_approved_the_same_way() {
    let (host, daemon) = setup();
    type_and_see(&host, "echo AGENT_WORK_$((7*6))", "AGENT_WORK_42");

    let denied_id = agent_hands_to_bob(&daemon);
    daemon.json(&["handoff", "approve", &denied_id, "--as", "human:lead"]);
    let denied = daemon.json(&[
        "handoff",
        "deny",
        &denied_id,
        "--as",
        "human:owner",
        "--reason",
        "bob is on leave",
    ]);
    assert_eq!(denied["state"], "denied");
    let (code, _, err) = daemon.run(&["handoff", "approve", &denied_id, "--as", "human:owner"]);
    assert_eq!(code, termshare::exit::EXPIRED, "{err}");
    assert!(
        err.contains("denied at step 2 by human:owner: bob is on leave"),
        "{err}"
    );
    assert_eq!(
        kinds_for(&host, &denied_id),
        ["handoff.requested", "handoff.approved", "handoff.denied"]
    );

    let id = agent_hands_to_bob(&daemon);
    daemon.json(&["handoff", "approve", &id, "--as", "human:lead"]);
    let done = daemon.json(&["handoff", "approve", &id, "--as", "human:owner"]);
    assert_eq!(done["state"], "completed");
    assert!(done["package"]["scrollback"]
        .as_str()
        .unwrap()
        .contains("AGENT_WORK_42"));
    assert_eq!(
        done["package"]["access"], "read-write",
        "a human receiver may write"
    );
    let (code, list, _) = daemon.run(&["handoff", "list"]);
    assert_eq!(code, 0);
    assert!(list.contains(&denied_id) && list.contains(&id), "{list}");
    daemon.stop();
}

#[test]
fn a_handoff_no_rule_covers_is_denied() {
    let (_host, daemon) = setup();
    let (code, _, err) = daemon.run(&[
        "handoff", "request", "S", "--to", "agent:x", "--as", "agent:y",
    ]);
    assert_eq!(code, termshare::exit::DENIED, "{err}");
    assert!(
        err.contains("no handoff rule lets agent:y hand terminal S to agent:x"),
        "{err}"
    );
    daemon.stop();
}
