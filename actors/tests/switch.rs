//! Switches under tokio's paused clock: one long after the share started gets its own
//! link timeout; a rotation on a backend that cannot rotate in place is a new session
//! on the same backend, make before break.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use termshare_actors::{AuditKind, BackendName, Settings, ShareEvent};

#[tokio::test(start_paused = true)]
async fn a_switch_an_hour_after_the_start_gets_its_own_link_timeout() {
    let h = harness(allow(), Settings::default()).await;
    let mut r = req("dev");
    r.ttl = Some(Duration::from_secs(7200));
    let info = h.svc.share(r).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3600)).await;
    // A relay that takes 3 s to answer (within the 10 s link timeout).
    *h.world.link_delay.lock() = Some(Duration::from_secs(3));
    let switched = h
        .svc
        .switch(info.share_id, BackendName::new("fake-b"), p("human:alice"))
        .await;
    let switched = switched.expect("the switch had no time left for its link");
    assert_eq!(switched.backend, BackendName::new("fake-b"));
    h.svc.shutdown().await;
}

/// A share on `fake-session` (a backend whose rotation is a new session), with one
/// participant in.
async fn share_with_a_participant(h: &Harness) -> termshare_actors::ShareInfo {
    let mut r = req("dev");
    r.backend = BackendName::new("fake-session");
    let info = h.svc.share(r).await.unwrap();
    let mut events = h.svc.events(info.share_id).unwrap();
    assert!(h.world.participant(info.share_id, 1, true));
    while events.next().await.unwrap().unwrap().event != ShareEvent::Joined {}
    info
}

#[tokio::test(start_paused = true)]
async fn a_rotation_on_a_backend_without_one_is_a_new_session_that_cuts_everyone_off() {
    let h = harness(allow(), Settings::default()).await;
    let info = share_with_a_participant(&h).await;
    let mut audit = h.svc.subscribe();
    let starts = h.world.starts.load(Ordering::SeqCst);
    let rotated = h.svc.rotate(info.share_id, p("human:alice")).await.unwrap();
    // A new worker with a new link; the old one, and its participant, gone.
    assert_eq!(h.world.starts.load(Ordering::SeqCst), starts + 1);
    assert_eq!(h.world.live_count(), 1);
    assert_ne!(rotated.links, info.links);
    assert_eq!(
        (rotated.share_id, rotated.expires_at),
        (info.share_id, info.expires_at)
    );
    assert_eq!(rotated.backend, info.backend);
    assert_eq!(rotated.participants, Some(0));
    let record = wait_for(&mut audit, info.share_id, AuditKind::ShareRotated).await;
    assert_eq!(record.details["new_session"], true);
    assert_eq!(record.details["participants_cut_off"], 1);
    assert_eq!(record.details["old_worker_stopped"], true);
    assert_ne!(record.details["old_link_fp"], record.details["link_fp"]);
    let left = kinds_of(&h.audit, info.share_id);
    assert!(left.contains(&AuditKind::ShareLeft), "{left:?}");
    assert!(!left.contains(&AuditKind::ShareSwitched), "{left:?}");
    h.svc.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_new_session_that_fails_leaves_the_share_and_its_participant_as_they_were() {
    let h = harness(allow(), Settings::default()).await;
    let info = share_with_a_participant(&h).await;
    let mut audit = h.svc.subscribe();
    *h.world.fail_next_start.lock() = Some(termshare_actors::BackendError::StartFailed {
        backend: "fake-session".into(),
        detail: "the relay refused a new session".into(),
    });
    let err = h
        .svc
        .rotate(info.share_id, p("human:alice"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("refused a new session"), "{err}");
    let failed = wait_for(&mut audit, info.share_id, AuditKind::ShareSwitchFailed).await;
    assert_eq!(failed.details["action"], "rotate");
    let now = h.svc.list().await.unwrap().remove(0);
    assert_eq!(now.links, info.links);
    assert_eq!(now.participants, Some(1));
    assert_eq!(h.world.live_count(), 1);
    h.svc.shutdown().await;
}
