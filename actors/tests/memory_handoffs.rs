//! Memory stays bounded under many handoffs: 10,000 requested and timed out leave the
//! process within 10 MB of where it started. The only test in its binary, so nothing
//! else moves the resident set it measures; real clock (the step timers run for real).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{rss_kib, CountingSink};
use termshare_actors::testing::{ChainPolicy, FakeBackend, FakeHost, FakeWorld};
use termshare_actors::{
    AccessMode, AuditKind, Caller, HandoffRequest, Identity, ReceiverShare, ServiceDeps, Settings,
    ShareError, ShareService,
};

const TOTAL: usize = 10_000;
const WAVE: usize = 500;

fn request(n: usize, reason: String) -> HandoffRequest {
    let from: termshare_actors::Principal = format!("human:u{n}").parse().unwrap();
    HandoffRequest {
        terminal: "dev".parse().unwrap(),
        from: from.into(),
        to: "agent:claude".parse().unwrap(),
        reason,
        backend: None,
        ttl: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_timed_out_handoffs_leave_memory_where_it_was() {
    let sink = CountingSink::default();
    let svc = ShareService::start(
        ServiceDeps {
            backends: vec![Arc::new(FakeBackend::new(
                "fake",
                Arc::new(FakeWorld::default()),
            ))],
            policy: Arc::new(ChainPolicy {
                approvers: vec!["human:owner".into()],
                step_timeout: Duration::from_millis(500),
                agent_access: AccessMode::ReadOnly,
                receiver_share: ReceiverShare::Required,
            }),
            host: Arc::new(FakeHost::with(&["dev"])),
            audit_sink: Box::new(sink.clone()),
            fingerprint_key: common::key(),
        },
        Settings::default(),
    )
    .await
    .unwrap();
    // Bad input first: a reason too long to keep is refused and changes nothing.
    let err = svc
        .handoff_request(request(0, "x".repeat(60 * 1024)))
        .await
        .unwrap_err();
    assert!(matches!(err, ShareError::Invalid(_)), "{err}");

    // One small wave first: the runtime's threads (and their allocator arenas) exist
    // before the baseline is taken, so it measures handoffs, not thread start-up.
    let mut requested = 0;
    let mut wave = |n: usize| {
        let from = requested;
        requested += n;
        from..requested
    };
    let warm_up = wave(100);
    for n in warm_up.clone() {
        svc.handoff_request(request(n, format!("warm-up {n}")))
            .await
            .unwrap();
    }
    while sink.count(AuditKind::HandoffDenied) < warm_up.end {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = rss_kib();

    let mut after_each = Vec::new();
    for _ in 0..TOTAL / WAVE {
        let this = wave(WAVE);
        for n in this.clone() {
            // Each reason as long as allowed, each one different.
            let reason = format!("{n:08}{}", "r".repeat(1016));
            svc.handoff_request(request(n, reason)).await.unwrap();
        }
        // Every request of the wave times out at its first step.
        while sink.count(AuditKind::HandoffDenied) < this.end {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        after_each.push(rss_kib());
    }
    assert_eq!(sink.count(AuditKind::HandoffRequested), TOTAL + 100);
    // What is still kept to be shown is bounded.
    let operator = Caller::new(
        "human:root".parse().unwrap(),
        Identity::local_user(
            termshare_actors::Peer {
                uid: 0,
                user: Some("root".into()),
                pid: None,
            },
            vec!["human:root".parse().unwrap()],
            true,
        ),
    );
    let kept = svc.handoff_list(operator).await.unwrap();
    assert_eq!(kept.len(), termshare_actors::HANDOFFS_KEPT);
    assert!(kept.iter().all(|h| h.state.as_str() == "timed_out"));

    // (Measured when the last wave had timed out, before the listing's own copy.)
    let after = *after_each.last().unwrap();
    eprintln!("RSS: {before} KiB before, {after} KiB after {TOTAL} handoffs; after each wave: {after_each:?}");
    assert!(
        after <= before + 10 * 1024,
        "RSS grew from {before} KiB to {after} KiB"
    );
    // And flat: the second half of the run adds (next to) nothing.
    let half = after_each[after_each.len() / 2];
    assert!(
        after <= half + 2 * 1024,
        "RSS still grows: {half} KiB half-way, {after} KiB at the end"
    );
    svc.shutdown().await;
}
