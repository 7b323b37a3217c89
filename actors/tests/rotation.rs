//! Link rotation under tokio's paused clock: a rotation is on the record and the share
//! takes its new links whenever the worker does it, even after the caller stopped
//! waiting or the share began to end; one rotation at a time.

mod common;

use std::time::Duration;

use common::*;
use termshare_actors::audit::MemorySink;
use termshare_actors::{AuditKind, EndReason, Settings, ShareError, ShareId};

/// Who a record says acted (`details.by`).
fn by(e: &termshare_actors::AuditEvent) -> Option<&str> {
    e.details.get("by").and_then(|b| b.as_str())
}

/// The share's `share.rotated` records.
fn rotations(audit: &MemorySink, id: ShareId) -> Vec<termshare_actors::AuditEvent> {
    audit
        .events
        .lock()
        .iter()
        .filter(|e| e.correlation_id == id.0 && e.kind == AuditKind::ShareRotated)
        .cloned()
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_rotation_gives_new_links_keeps_the_share_and_is_on_the_record() {
    let h = harness(allow(), Settings::default()).await;
    let info = h.svc.share(req("dev")).await.unwrap();
    let mut audit = h.svc.subscribe();
    let rotated = h.svc.rotate(info.share_id, p("human:alice")).await.unwrap();
    assert_ne!(rotated.links.link, info.links.link);
    assert_eq!(rotated.share_id, info.share_id);
    assert_eq!(rotated.expires_at, info.expires_at);
    let record = wait_for(&mut audit, info.share_id, AuditKind::ShareRotated).await;
    assert_eq!(by(&record), Some("human:alice"));
    assert_ne!(record.details["old_link_fp"], record.details["link_fp"]);
    assert_eq!(h.svc.list().await.unwrap()[0].links, rotated.links);
    h.svc.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_worker_that_rotates_after_the_caller_gave_up_still_moves_the_share_to_its_new_link() {
    let h = harness(allow(), Settings::default()).await;
    let info = h.svc.share(req("dev")).await.unwrap();
    let mut audit = h.svc.subscribe();
    // Slower than the rotation's deadline (the revoke deadline, 5 s).
    *h.world.rotate_delay.lock() = Duration::from_secs(8);
    let given_up = h.svc.rotate(info.share_id, p("human:alice")).await;
    assert!(
        matches!(given_up, Err(ShareError::Backend(_))),
        "{given_up:?}"
    );
    assert!(
        rotations(&h.audit, info.share_id).is_empty(),
        "not rotated yet"
    );
    // The worker gets there in the end: the record says so, the share has the link.
    let record = wait_for(&mut audit, info.share_id, AuditKind::ShareRotated).await;
    assert_eq!(by(&record), None, "nobody was waiting for it any more");
    let now = h.svc.list().await.unwrap().remove(0);
    assert_ne!(now.links, info.links, "the share still had the dead link");
    assert!(now.links.link.ends_with("/r1"), "{:?}", now.links);
    h.svc.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_rotation_done_while_the_share_ends_is_still_on_the_record() {
    let h = harness(allow(), Settings::default()).await;
    let svc = std::sync::Arc::new(h.svc);
    let info = svc.share(req("dev")).await.unwrap();
    let mut audit = svc.subscribe();
    *h.world.rotate_delay.lock() = Duration::from_secs(1);
    let rotating = {
        let svc = svc.clone();
        let id = info.share_id;
        tokio::spawn(async move { svc.rotate(id, p("human:alice")).await })
    };
    // The revoke comes while the worker is rotating; the worker finishes, then stops.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let report = svc.revoke(info.share_id, p("human:bob")).await.unwrap();
    assert_eq!(report.reason, EndReason::Revoked);
    assert!(rotating.await.unwrap().is_err(), "the share ended");
    let record = wait_for(&mut audit, info.share_id, AuditKind::ShareRotated).await;
    assert_eq!(by(&record), Some("human:alice"));
    assert_eq!(record.details["serving"], false);
    assert_eq!(rotations(&h.audit, info.share_id).len(), 1);
    std::sync::Arc::into_inner(svc).unwrap().shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn one_rotation_at_a_time() {
    let h = harness(allow(), Settings::default()).await;
    let svc = std::sync::Arc::new(h.svc);
    let info = svc.share(req("dev")).await.unwrap();
    let mut audit = svc.subscribe();
    *h.world.rotate_delay.lock() = Duration::from_secs(1);
    let first = {
        let svc = svc.clone();
        let id = info.share_id;
        tokio::spawn(async move { svc.rotate(id, p("human:alice")).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let second = svc.rotate(info.share_id, p("human:alice")).await;
    assert!(matches!(second, Err(ShareError::Invalid(_))), "{second:?}");
    assert!(first.await.unwrap().is_ok());
    // Once done, the next is welcome.
    assert!(svc.rotate(info.share_id, p("human:alice")).await.is_ok());
    // Each rotation is on the record (written after the worker reported it, so wait
    // for the records rather than count them at once).
    wait_for(&mut audit, info.share_id, AuditKind::ShareRotated).await;
    wait_for(&mut audit, info.share_id, AuditKind::ShareRotated).await;
    assert_eq!(rotations(&h.audit, info.share_id).len(), 2);
    std::sync::Arc::into_inner(svc).unwrap().shutdown().await;
}
