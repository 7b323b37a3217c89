//! Handoffs through the approval chain, under tokio's paused clock.

use std::sync::Arc;
use std::time::Duration;

use termshare_actors::audit::MemorySink;
use termshare_actors::testing::{ChainPolicy, DenyAll, FakeBackend, FakeHost, FakeWorld};
use termshare_actors::{
    AccessMode, AuditKind, BackendName, HandoffRequest, HandoffState, PolicyGate, ReceiverShare,
    ServiceDeps, Settings, ShareError, ShareService,
};

struct Harness {
    svc: ShareService,
    host: Arc<FakeHost>,
    world: Arc<FakeWorld>,
    audit: MemorySink,
}

async fn harness(policy: impl PolicyGate) -> Harness {
    let audit = MemorySink::default();
    harness_with(policy, audit.clone(), Box::new(audit)).await
}

/// `audit` is what the test reads; `sink` what the service writes to (the same events,
/// or a sink that fails on demand).
async fn harness_with(
    policy: impl PolicyGate,
    audit: MemorySink,
    sink: Box<dyn termshare_actors::AuditSink>,
) -> Harness {
    let world = Arc::new(FakeWorld::default());
    let host = Arc::new(FakeHost::with(&["dev"]));
    let svc = ShareService::start(
        ServiceDeps {
            backends: vec![Arc::new(FakeBackend::new("fake", world.clone()))],
            policy: Arc::new(policy),
            host: host.clone(),
            audit_sink: sink,
            fingerprint_key: termshare_actors::FingerprintKey::random(),
        },
        Settings::default(),
    )
    .await
    .unwrap();
    Harness {
        svc,
        host,
        world,
        audit,
    }
}

fn chain() -> ChainPolicy {
    ChainPolicy {
        approvers: vec!["human:owner".into(), "human:lead".into()],
        step_timeout: Duration::from_secs(120),
        agent_access: AccessMode::ReadWrite,
        receiver_share: ReceiverShare::Required,
    }
}

fn request(from: &str, to: &str, backend: Option<&str>) -> HandoffRequest {
    HandoffRequest {
        terminal: "dev".parse().unwrap(),
        from: p(from).into(),
        to: to.parse().unwrap(),
        reason: "take over the build".into(),
        backend: backend.map(BackendName::new),
        ttl: None,
    }
}

fn p(s: &str) -> termshare_actors::Principal {
    s.parse().unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_two_step_chain_completes_with_the_terminals_context() {
    let h = harness(chain()).await;
    *h.host.screen.lock() = "old line\n$ make test\nMARKER 1234\n".into();
    let pending = h
        .svc
        .handoff_request(request("human:alice", "agent:claude", None))
        .await
        .unwrap();
    assert_eq!(
        (pending.state, pending.step),
        (HandoffState::Pending, Some(1))
    );
    let id = pending.handoff_id;
    // Step 1 is the owner's: anyone else is refused, and nothing moves.
    let err = h
        .svc
        .handoff_approve(id, p("human:lead"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ShareError::NotApprover { step: 1, .. }),
        "{err}"
    );
    let step2 = h.svc.handoff_approve(id, p("human:owner")).await.unwrap();
    assert_eq!(step2.step, Some(2));
    let done = h.svc.handoff_approve(id, p("human:lead")).await.unwrap();
    assert_eq!(done.state, HandoffState::Completed);
    let package = done.package.unwrap();
    assert!(package.scrollback.contains("MARKER 1234"), "{package:?}");
    assert_eq!(
        (package.cwd.as_str(), package.cols, package.rows),
        ("/home/fake", 80, 24)
    );
    // The policy forbids agents to write: the agent gets read-only.
    assert_eq!(package.access, AccessMode::ReadOnly);
    let events: Vec<_> = h
        .audit
        .events
        .lock()
        .iter()
        .filter(|e| e.correlation_id == id.0)
        .cloned()
        .collect();
    let kinds: Vec<AuditKind> = events.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            AuditKind::HandoffRequested,
            // The wrong approver's try is on the record; the handoff did not move.
            AuditKind::HandoffRefused,
            AuditKind::HandoffApproved,
            AuditKind::HandoffApproved,
            AuditKind::HandoffCompleted
        ]
    );
    assert_eq!(events[1].principal.as_ref().unwrap().as_str(), "human:lead");
    assert_eq!(events[3].principal.as_ref().unwrap().as_str(), "human:lead");
    // The badge shows the completed handoff.
    let board = h.svc.badges().borrow().clone();
    let badge = &board[&"dev".parse().unwrap()];
    assert_eq!(
        badge.handoff.as_ref().unwrap().state,
        HandoffState::Completed
    );
    h.svc.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_denial_at_step_two_ends_the_handoff_with_a_clear_error() {
    let h = harness(chain()).await;
    let id = h
        .svc
        .handoff_request(request("human:alice", "agent:claude", None))
        .await
        .unwrap()
        .handoff_id;
    h.svc.handoff_approve(id, p("human:owner")).await.unwrap();
    let denied = h
        .svc
        .handoff_deny(id, p("human:lead"), Some("not during the release".into()))
        .await
        .unwrap();
    assert_eq!(denied.state, HandoffState::Denied);
    assert_eq!(denied.refusal.as_ref().unwrap().step, 2);
    let err = h
        .svc
        .handoff_approve(id, p("human:lead"))
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("denied at step 2 by human:lead: not during the release"),
        "{msg}"
    );
    assert!(h
        .svc
        .handoff_show(id, p("human:owner"))
        .await
        .unwrap()
        .package
        .is_none());
    let last = h.audit.events.lock().last().unwrap().clone();
    assert_eq!(
        (last.kind, last.correlation_id),
        (AuditKind::HandoffDenied, id.0)
    );
    h.svc.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_step_left_unanswered_times_out() {
    let h = harness(chain()).await;
    let id = h
        .svc
        .handoff_request(request("agent:claude", "human:alice", None))
        .await
        .unwrap()
        .handoff_id;
    h.svc.handoff_approve(id, p("human:owner")).await.unwrap();
    tokio::time::sleep(Duration::from_secs(121)).await;
    let view = h.svc.handoff_show(id, p("human:owner")).await.unwrap();
    assert_eq!(view.state, HandoffState::TimedOut);
    assert!(view
        .refusal
        .unwrap()
        .reason
        .contains("step 2 was not approved within 2m"));
    h.svc.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn without_a_handoff_rule_it_is_denied_and_audited() {
    let h = harness(DenyAll).await;
    let err = h
        .svc
        .handoff_request(request("human:alice", "agent:claude", None))
        .await
        .unwrap_err();
    assert!(matches!(err, ShareError::Denied { .. }), "{err}");
    let kinds: Vec<AuditKind> = h.audit.events.lock().iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [AuditKind::HandoffRequested, AuditKind::HandoffDenied]
    );
    h.svc.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn an_agent_receiver_gets_a_read_only_share_when_it_may_not_write() {
    let h = harness(chain()).await;
    let id = h
        .svc
        .handoff_request(request("human:alice", "agent:claude", Some("fake")))
        .await
        .unwrap()
        .handoff_id;
    h.svc.handoff_approve(id, p("human:owner")).await.unwrap();
    let done = h.svc.handoff_approve(id, p("human:lead")).await.unwrap();
    let package = done.package.unwrap();
    let share_id = package.share_id.expect("a share for the receiver");
    assert!(package.link.unwrap().starts_with("fake://"));
    let shares = h.svc.list().await.unwrap();
    let share = shares.iter().find(|s| s.share_id == share_id).unwrap();
    assert_eq!(share.access, AccessMode::ReadOnly);
    assert_eq!(share.principal.as_str(), "agent:claude");
    assert_eq!(h.world.live_count(), 1);
    h.svc.shutdown().await;
}

/// A local user proven by the kernel, allowed `principals`.
fn user(uid: u32, name: &str, principals: &[&str]) -> termshare_actors::Identity {
    termshare_actors::Identity::local_user(
        termshare_actors::Peer {
            uid,
            user: Some(name.into()),
            pid: Some(4000 + uid as i32),
        },
        principals.iter().map(|s| p(s)).collect(),
        false,
    )
}

fn as_(principal: &str, identity: &termshare_actors::Identity) -> termshare_actors::Caller {
    termshare_actors::Caller::new(p(principal), identity.clone())
}

#[tokio::test(start_paused = true)]
async fn one_identity_cannot_approve_two_steps_of_a_chain() {
    let h = harness(chain()).await;
    let mut events = h.svc.subscribe();
    let alice = user(1001, "alice", &["human:alice"]);
    // One person who may act as both approvers of the chain.
    let boss = user(1002, "boss", &["human:owner", "human:lead"]);
    let mut req = request("human:alice", "agent:claude", None);
    req.from = as_("human:alice", &alice);
    let id = h.svc.handoff_request(req).await.unwrap().handoff_id;
    let step2 = h
        .svc
        .handoff_approve(id, as_("human:owner", &boss))
        .await
        .unwrap();
    assert_eq!(step2.step, Some(2));
    let err = h
        .svc
        .handoff_approve(id, as_("human:lead", &boss))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ShareError::Denied { reason, .. } if reason.contains("already approved step 1")),
        "{err}"
    );
    let view = h.svc.handoff_show(id, p("human:owner")).await.unwrap();
    assert_eq!((view.state, view.step), (HandoffState::Pending, Some(2)));
    // The refusal is on the record with the peer that tried.
    let refused = loop {
        let e = events.recv().await.expect("audit stream");
        if e.kind == AuditKind::HandoffRefused {
            break e;
        }
    };
    assert_eq!(refused.peer.as_ref().map(|p| p.uid), Some(1002));
    // Someone else may approve step 2.
    let lead = user(1003, "lead", &["human:lead"]);
    let done = h
        .svc
        .handoff_approve(id, as_("human:lead", &lead))
        .await
        .unwrap();
    assert_eq!(done.state, HandoffState::Completed);
    let approvals: Vec<_> = h
        .audit
        .events
        .lock()
        .iter()
        .filter(|e| e.kind == AuditKind::HandoffApproved)
        .map(|e| e.peer.as_ref().map(|p| p.uid))
        .collect();
    assert_eq!(approvals, [Some(1002), Some(1003)]);
    h.svc.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn the_requester_and_the_receiver_cannot_approve() {
    let h = harness(chain()).await;
    // The requester may also act as the first approver; the receiver as the second.
    let alice = user(1001, "alice", &["human:alice", "human:owner"]);
    let claude = user(1004, "claude", &["agent:claude", "human:lead"]);
    let mut req = request("human:alice", "agent:claude", None);
    req.from = as_("human:alice", &alice);
    let id = h.svc.handoff_request(req).await.unwrap().handoff_id;
    let err = h
        .svc
        .handoff_approve(id, as_("human:owner", &alice))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("the requester cannot approve"),
        "{err}"
    );
    let owner = user(1002, "owner", &["human:owner"]);
    h.svc
        .handoff_approve(id, as_("human:owner", &owner))
        .await
        .unwrap();
    let err = h
        .svc
        .handoff_approve(id, as_("human:lead", &claude))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("the receiver cannot approve"),
        "{err}"
    );
    // A claim the identity does not prove is refused as well.
    let err = h
        .svc
        .handoff_approve(id, as_("human:lead", &owner))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("may act as human:owner, not as human:lead"),
        "{err}"
    );
    // The receiver sees how it went: pending at step 2, and no package yet.
    let view = h
        .svc
        .handoff_show(id, as_("agent:claude", &claude))
        .await
        .unwrap();
    assert_eq!((view.state, view.step), (HandoffState::Pending, Some(2)));
    // Someone who is no party to it does not see it at all.
    let mallory = user(1666, "mallory", &["human:mallory"]);
    assert!(matches!(
        h.svc.handoff_show(id, as_("human:mallory", &mallory)).await,
        Err(ShareError::HandoffNotFound(_))
    ));
    assert!(h
        .svc
        .handoff_list(as_("human:mallory", &mallory))
        .await
        .unwrap()
        .is_empty());
    h.svc.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn only_the_receiver_sees_the_package() {
    let h = harness(chain()).await;
    let alice = user(1001, "alice", &["human:alice"]);
    let claude = user(1004, "claude", &["agent:claude"]);
    let mut req = request("human:alice", "agent:claude", None);
    req.from = as_("human:alice", &alice);
    let id = h.svc.handoff_request(req).await.unwrap().handoff_id;
    for (who, name) in [(1002, "human:owner"), (1003, "human:lead")] {
        h.svc
            .handoff_approve(id, as_(name, &user(who, "x", &[name])))
            .await
            .unwrap();
    }
    let receiver = h
        .svc
        .handoff_show(id, as_("agent:claude", &claude))
        .await
        .unwrap();
    assert_eq!(receiver.state, HandoffState::Completed);
    assert!(receiver.package.is_some());
    let requester = h
        .svc
        .handoff_show(id, as_("human:alice", &alice))
        .await
        .unwrap();
    assert_eq!(requester.state, HandoffState::Completed);
    assert!(requester.package.is_none(), "the package is the receiver's");
    h.svc.shutdown().await;
}

fn kinds_of(audit: &MemorySink, id: termshare_actors::HandoffId) -> Vec<AuditKind> {
    audit
        .events
        .lock()
        .iter()
        .filter(|e| e.correlation_id == id.0)
        .map(|e| e.kind)
        .collect()
}

/// The terminal already has its one live share: the receiver's cannot start.
async fn terminal_at_its_limit(h: &Harness) {
    let busy = termshare_actors::ShareRequest {
        terminal: "dev".parse().unwrap(),
        backend: BackendName::new("fake"),
        access: AccessMode::ReadOnly,
        caller: p("human:bob").into(),
        ttl: None,
        grace: None,
        join: Default::default(),
        record: false,
    };
    h.svc.share(busy).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_receiver_share_that_cannot_start_fails_the_handoff() {
    let h = harness(chain()).await;
    terminal_at_its_limit(&h).await;
    let id = h
        .svc
        .handoff_request(request("human:alice", "agent:claude", Some("fake")))
        .await
        .unwrap()
        .handoff_id;
    h.svc.handoff_approve(id, p("human:owner")).await.unwrap();
    let err = h
        .svc
        .handoff_approve(id, p("human:lead"))
        .await
        .unwrap_err();
    match &err {
        ShareError::HandoffFailed { handoff_id, cause } => {
            assert_eq!(*handoff_id, id);
            assert!(
                matches!(**cause, ShareError::LimitReached { .. }),
                "{cause}"
            );
        }
        other => panic!("expected a failed handoff, got {other}"),
    }
    let view = h.svc.handoff_show(id, p("agent:claude")).await.unwrap();
    assert_eq!(view.state, HandoffState::Failed);
    assert!(view.package.is_none(), "nothing was handed over");
    assert!(view.refusal.unwrap().reason.contains("limit"));
    assert_eq!(
        kinds_of(&h.audit, id),
        [
            AuditKind::HandoffRequested,
            AuditKind::HandoffApproved,
            AuditKind::HandoffApproved,
            AuditKind::HandoffFailed
        ]
    );
    // Only bob's share runs.
    assert_eq!(h.world.live_count(), 1);
    // It is over: no more approvals.
    assert!(matches!(
        h.svc.handoff_approve(id, p("human:lead")).await,
        Err(ShareError::HandoffClosed { .. })
    ));
    h.svc.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn an_optional_receiver_share_lets_the_handoff_complete_and_says_why_not() {
    let h = harness(ChainPolicy {
        receiver_share: ReceiverShare::Optional,
        ..chain()
    })
    .await;
    terminal_at_its_limit(&h).await;
    let id = h
        .svc
        .handoff_request(request("human:alice", "agent:claude", Some("fake")))
        .await
        .unwrap()
        .handoff_id;
    h.svc.handoff_approve(id, p("human:owner")).await.unwrap();
    let done = h.svc.handoff_approve(id, p("human:lead")).await.unwrap();
    assert_eq!(done.state, HandoffState::Completed);
    let package = done.package.unwrap();
    assert!(package.share_id.is_none() && package.link.is_none());
    assert!(
        package.share_error.as_deref().unwrap().contains("limit"),
        "{package:?}"
    );
    let events = h.audit.events.lock().clone();
    let completed = events
        .iter()
        .find(|e| e.kind == AuditKind::HandoffCompleted)
        .unwrap();
    assert_eq!(completed.details["receiver_share"], "optional");
    h.svc.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_last_approval_the_log_cannot_take_leaves_the_handoff_pending() {
    let audit = MemorySink::default();
    let sink = termshare_actors::testing::FlakySink {
        events: audit.events.clone(),
        ..Default::default()
    };
    let failing = sink.failing.clone();
    let h = harness_with(chain(), audit, Box::new(sink)).await;
    let id = h
        .svc
        .handoff_request(request("human:alice", "agent:claude", Some("fake")))
        .await
        .unwrap()
        .handoff_id;
    h.svc.handoff_approve(id, p("human:owner")).await.unwrap();
    failing.store(true, std::sync::atomic::Ordering::SeqCst);
    let err = h
        .svc
        .handoff_approve(id, p("human:lead"))
        .await
        .unwrap_err();
    assert!(matches!(err, ShareError::AuditUnavailable(_)), "{err}");
    // Not `completing` forever: still waiting for step 2, and nothing started.
    let view = h.svc.handoff_show(id, p("agent:claude")).await.unwrap();
    assert_eq!((view.state, view.step), (HandoffState::Pending, Some(2)));
    assert_eq!(h.world.live_count(), 0);
    // Once the disk is back, the same approval goes through.
    failing.store(false, std::sync::atomic::Ordering::SeqCst);
    let done = h.svc.handoff_approve(id, p("human:lead")).await.unwrap();
    assert_eq!(done.state, HandoffState::Completed);
    assert_eq!(h.world.live_count(), 1);
    assert_eq!(
        kinds_of(&h.audit, id),
        [
            AuditKind::HandoffRequested,
            AuditKind::HandoffApproved,
            AuditKind::HandoffApproved,
            AuditKind::HandoffCompleted
        ]
    );
    h.svc.shutdown().await;
}
