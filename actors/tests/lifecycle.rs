//! What a report, an event and the clock say is what happened, under tokio's paused
//! clock: a revoke is never kept waiting behind slower work, its elapsed time counts
//! from the request, a start whose caller left is never announced, and one deadline
//! bounds the whole start.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use termshare_actors::{AuditKind, BackendName, Settings, ShareError};
use tokio::time::Instant;

/// A revoke's report, checked against the deadline from the request.
fn assert_in_time(report: &termshare_actors::RevokeReport, asked: Instant) {
    let settings = Settings::default();
    assert!(report.deadline_met, "{report:?}");
    assert!(report.elapsed <= settings.revoke_deadline, "{report:?}");
    // The report's elapsed is the whole time since the request, not a part of it.
    assert!(report.elapsed <= asked.elapsed(), "{report:?}");
}

#[tokio::test(start_paused = true)]
async fn a_revoke_while_a_grace_notice_hangs_is_not_kept_waiting() {
    let h = harness(allow(), Settings::default()).await;
    // tmux takes 30 s to show the notice (it would have held the session before).
    *h.host.notify_delay.lock() = Duration::from_secs(30);
    let mut r = req("dev");
    r.ttl = Some(Duration::from_secs(60));
    r.grace = Some(vec![Duration::from_secs(50)]);
    let info = h.svc.share(r).await.unwrap();
    // Just past the grace threshold (at 10 s): the notice is being shown, and would be
    // given up at 11 s.
    tokio::time::sleep(Duration::from_millis(10_500)).await;
    let asked = Instant::now();
    let report = h.svc.revoke(info.share_id, p("human:alice")).await.unwrap();
    assert_in_time(&report, asked);
    assert!(
        asked.elapsed() < Duration::from_millis(100),
        "{:?}",
        asked.elapsed()
    );
    assert_eq!(h.world.live_count(), 0);
    // The share ended before the notice was shown: no warning is on the record.
    assert_eq!(
        kinds_of(&h.audit, info.share_id),
        [
            AuditKind::ShareRequested,
            AuditKind::ShareStarted,
            AuditKind::ShareRevoked
        ]
    );
    h.svc.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_revoke_during_a_switch_ends_within_its_deadline_from_the_request() {
    let h = harness(allow(), Settings::default()).await;
    let info = h.svc.share(req("dev")).await.unwrap();
    let svc = Arc::new(h.svc);
    let switching = {
        let (svc, id) = (svc.clone(), info.share_id);
        tokio::spawn(async move {
            svc.switch(id, BackendName::new("fake-b"), p("human:alice"))
                .await
        })
    };
    while h.world.live_count() < 2 {
        tokio::task::yield_now().await;
    }
    let asked = Instant::now();
    let report = svc.revoke(info.share_id, p("human:alice")).await.unwrap();
    assert_in_time(&report, asked);
    assert_eq!(h.world.live_count(), 0);
    assert!(switching.await.unwrap().is_err());
    Arc::into_inner(svc).unwrap().shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_start_whose_caller_gave_up_is_never_announced() {
    let h = harness(allow(), Settings::default()).await;
    // The backend takes 5 s to give its link; the caller waits 1 s and leaves.
    *h.world.link_delay.lock() = Some(Duration::from_secs(5));
    let mut events = h.svc.subscribe();
    let gave_up = tokio::time::timeout(Duration::from_secs(1), h.svc.share(req("dev"))).await;
    assert!(gave_up.is_err(), "the caller should have given up");
    let requested = loop {
        let e = events.recv().await.unwrap();
        if e.kind == AuditKind::ShareRequested {
            break e;
        }
    };
    let id = termshare_actors::ShareId(requested.correlation_id);
    let failed = wait_for(&mut events, id, AuditKind::ShareFailed).await;
    assert!(
        failed.details["cause"]
            .as_str()
            .unwrap()
            .contains("stopped waiting"),
        "{failed:?}"
    );
    assert_eq!(
        kinds_of(&h.audit, id),
        [AuditKind::ShareRequested, AuditKind::ShareFailed],
        "never share.started"
    );
    assert_eq!(h.world.live_count(), 0, "no worker left");
    assert!(h.svc.list().await.unwrap().is_empty());
    h.svc.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn one_deadline_bounds_the_whole_start() {
    let h = harness(allow(), Settings::default()).await;
    *h.world.never_link.lock() = true;
    let t0 = Instant::now();
    let err = h.svc.share(req("dev")).await.unwrap_err();
    let budget = Settings::default().start_budget();
    assert!(t0.elapsed() <= budget, "{:?} > {budget:?}", t0.elapsed());
    assert!(
        matches!(
            err,
            ShareError::Backend(termshare_actors::BackendError::LinkTimeout { .. })
                | ShareError::StartTimedOut { .. }
        ),
        "{err}"
    );
    assert_eq!(h.world.live_count(), 0);
    h.svc.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn new_links_from_a_reconnected_relay_replace_the_shares_and_are_on_the_record() {
    let h = harness(allow(), Settings::default()).await;
    let mut events = h.svc.subscribe();
    let info = h.svc.share(req("dev")).await.unwrap();
    let new_link = "fake://relay-after-reconnect/7f3a";
    assert!(h.world.relink(info.share_id, new_link));
    let relinked = wait_for(&mut events, info.share_id, AuditKind::ShareRelinked).await;
    // By fingerprint only, old and new.
    let key = key();
    assert_eq!(relinked.details["link_fp"], key.fingerprint(new_link));
    assert_eq!(
        relinked.details["old_link_fp"],
        key.fingerprint(&info.links.link)
    );
    assert!(!serde_json::to_string(&relinked).unwrap().contains(new_link));
    // The share answers with the new link now.
    let listed = h.svc.list().await.unwrap();
    assert_eq!(listed[0].links.link, new_link);
    // The same link again changes nothing and records nothing.
    assert!(h.world.relink(info.share_id, new_link));
    h.svc.revoke(info.share_id, p("human:alice")).await.unwrap();
    assert_eq!(
        kinds_of(&h.audit, info.share_id),
        [
            AuditKind::ShareRequested,
            AuditKind::ShareStarted,
            AuditKind::ShareRelinked,
            AuditKind::ShareRevoked
        ]
    );
    h.svc.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn ended_is_heard_however_the_share_ends_and_after_it_ended() {
    let h = harness(allow(), Settings::default()).await;
    let svc = Arc::new(h.svc);
    let info = svc.share(req("dev")).await.unwrap();
    // The future borrows nothing: it can be spawned as it is.
    let waiting = tokio::spawn(svc.ended(info.share_id));
    let report = svc.revoke(info.share_id, p("human:alice")).await.unwrap();
    let end = waiting.await.unwrap().unwrap();
    assert_eq!(end.reason, termshare_actors::EndReason::Revoked);
    // With the same report the revoke returned.
    assert_eq!(end.report.as_ref(), Some(&report));
    // Asked after the end: at once.
    assert_eq!(
        svc.ended(info.share_id).await.unwrap().reason,
        termshare_actors::EndReason::Revoked
    );
    // Expiry, with no event stream read at all.
    let mut r = req("ops");
    r.ttl = Some(Duration::from_secs(5));
    let short = svc.share(r).await.unwrap();
    assert_eq!(
        svc.ended(short.share_id).await.unwrap().reason,
        termshare_actors::EndReason::Expired
    );
    assert!(matches!(
        svc.ended(termshare_actors::ShareId::new()).await,
        Err(ShareError::NotFound(_))
    ));
    Arc::into_inner(svc).unwrap().shutdown().await;
}
