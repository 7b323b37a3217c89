//! Join rules under tokio's paused clock: a share nobody joins ends at its join
//! timeout (as expired, cause `join_timeout`); one somebody joined lives to its TTL;
//! the rules need a backend that sees each participant.

mod common;

use std::time::Duration;

use common::*;
use termshare_actors::{
    AuditKind, BackendName, EndReason, Settings, ShareError, ShareId, ShareRequest,
};
use tokio::time::Instant;

fn counting(ttl: u64) -> ShareRequest {
    ShareRequest::new(
        "dev".parse().unwrap(),
        BackendName::new("fake-counting"),
        p("human:alice"),
    )
    .ttl(Duration::from_secs(ttl))
    .grace(vec![])
}

/// The `cause` detail of the share's end event.
fn end_cause(h: &Harness, id: ShareId) -> Option<String> {
    h.audit
        .events
        .lock()
        .iter()
        .find(|e| e.correlation_id == id.0 && e.kind == AuditKind::ShareExpired)
        .and_then(|e| {
            e.details
                .get("cause")
                .and_then(|c| c.as_str().map(str::to_owned))
        })
}

#[tokio::test(start_paused = true)]
async fn a_share_nobody_joins_ends_at_its_join_timeout() {
    let h = harness(allow(), Settings::default()).await;
    let t0 = Instant::now();
    let info = h
        .svc
        .share(counting(60).join_timeout(Duration::from_secs(3)))
        .await
        .unwrap();
    assert_eq!(info.participants, Some(0));
    let end = h.svc.ended(info.share_id).await.unwrap();
    assert_eq!(end.reason, EndReason::Expired);
    let at = t0.elapsed();
    assert!(
        at >= Duration::from_secs(3) && at < Duration::from_millis(3100),
        "{at:?}"
    );
    assert_eq!(
        end_cause(&h, info.share_id).as_deref(),
        Some("join_timeout")
    );
    assert_eq!(h.world.live_count(), 0);
    h.svc.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_share_somebody_joined_lives_to_its_ttl_even_after_they_leave() {
    let h = harness(allow(), Settings::default()).await;
    let t0 = Instant::now();
    let info = h
        .svc
        .share(counting(60).join_timeout(Duration::from_secs(3)))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(h.world.participant(info.share_id, 1, true));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(h.world.participant(info.share_id, 1, false));
    let end = h.svc.ended(info.share_id).await.unwrap();
    assert_eq!(end.reason, EndReason::Expired);
    assert!(
        t0.elapsed() >= Duration::from_secs(60),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(end_cause(&h, info.share_id), None);
    h.svc.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn join_rules_need_a_backend_that_sees_participants_and_sane_values() {
    let h = harness(allow(), Settings::default()).await;
    let over_fake = req("dev").join_timeout(Duration::from_secs(3));
    let err = h.svc.share(over_fake).await.unwrap_err();
    assert!(matches!(err, ShareError::Invalid(_)), "{err}");
    assert!(err.to_string().contains("cannot tell"), "{err}");
    let err = h
        .svc
        .share(counting(60).max_participants(0))
        .await
        .unwrap_err();
    assert!(matches!(err, ShareError::Invalid(_)), "{err}");
    let too_long = counting(60).join_timeout(Duration::from_secs(60));
    let err = h.svc.share(too_long).await.unwrap_err();
    assert!(
        err.to_string().contains("shorter than the share's TTL"),
        "{err}"
    );
    assert_eq!(h.world.live_count(), 0, "nothing was started");
    h.svc.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn the_configured_join_timeout_applies_only_where_participants_are_seen() {
    let settings = Settings {
        default_join_timeout: Some(Duration::from_secs(5)),
        ..Settings::default()
    };
    let h = harness(allow(), settings).await;
    let counted = h.svc.share(counting(60)).await.unwrap();
    let uncounted = h.svc.share(req("ops")).await.unwrap();
    let end = h.svc.ended(counted.share_id).await.unwrap();
    assert_eq!(end.reason, EndReason::Expired);
    assert_eq!(
        end_cause(&h, counted.share_id).as_deref(),
        Some("join_timeout")
    );
    // The other backend cannot tell who joined: its share lives on.
    let live = h.svc.list().await.unwrap();
    assert!(live.iter().any(|s| s.share_id == uncounted.share_id));
    assert_eq!(uncounted.participants, None, "unknown, never a guessed 0");
    h.svc.shutdown().await;
}

/// Allows everything, with the join maxima of a rule.
struct Maxima;

impl termshare_actors::PolicyGate for Maxima {
    fn evaluate(&self, _q: &termshare_actors::PolicyQuery<'_>) -> termshare_actors::PolicyDecision {
        termshare_actors::PolicyDecision::Allow(termshare_actors::Grant {
            rule_id: "watched".into(),
            max_ttl: None,
            max_concurrent: None,
            require_join_restriction: false,
            record: false,
            max_join_timeout: Some(Duration::from_secs(5)),
            max_participants: Some(2),
        })
    }
}

#[tokio::test(start_paused = true)]
async fn a_rules_maxima_bound_the_request_and_apply_when_it_names_none() {
    let h = harness(Maxima, Settings::default()).await;
    // Above either maximum: denied, nothing started.
    let err = h
        .svc
        .share(counting(60).join_timeout(Duration::from_secs(10)))
        .await
        .unwrap_err();
    assert!(matches!(err, ShareError::Denied { .. }), "{err}");
    let err = h
        .svc
        .share(counting(60).max_participants(3))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("above the maximum 2"), "{err}");
    // Over a backend that cannot count, the rule cannot be kept: refused.
    let err = h.svc.share(req("ops")).await.unwrap_err();
    assert!(matches!(err, ShareError::Invalid(_)), "{err}");
    assert_eq!(h.world.live_count(), 0);
    // Naming none: the rule's maxima apply (the share ends at 5 s, unjoined).
    let t0 = Instant::now();
    let info = h.svc.share(counting(60)).await.unwrap();
    let end = h.svc.ended(info.share_id).await.unwrap();
    assert_eq!(end.reason, EndReason::Expired);
    assert!(t0.elapsed() >= Duration::from_secs(5) && t0.elapsed() < Duration::from_secs(6));
    assert_eq!(
        end_cause(&h, info.share_id).as_deref(),
        Some("join_timeout")
    );
    // A TTL shorter than the rule's maximum join timeout: nothing to time, the TTL
    // ends the share first (not refused for a timeout it never asked for).
    let t0 = Instant::now();
    let short = h.svc.share(counting(4)).await.unwrap();
    let end = h.svc.ended(short.share_id).await.unwrap();
    assert_eq!(end.reason, EndReason::Expired);
    assert!(t0.elapsed() >= Duration::from_secs(4) && t0.elapsed() < Duration::from_secs(5));
    assert_eq!(end_cause(&h, short.share_id), None);
    h.svc.shutdown().await;
}
