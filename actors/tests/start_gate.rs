//! The overlapped start: the terminal check, the request's record and the worker's
//! spawn run together, and the link leaves termshare only once all three are done.
//! Each failure of one of them ends the start with its worker gone and no link
//! announced.

mod common;

use std::sync::atomic::Ordering::SeqCst;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use termshare_actors::testing::{FakeBackend, FakeHost, FakeWorld, FlakySink};
use termshare_actors::{AuditKind, ServiceDeps, Settings, ShareError, ShareId, ShareService};
use tokio::time::Instant;

#[tokio::test(start_paused = true)]
async fn the_worker_starts_while_the_terminal_is_checked_and_its_link_waits_for_the_check() {
    let h = harness(allow(), Settings::default()).await;
    *h.host.size_hint.lock() = Some((80, 24));
    *h.host.check_delay.lock() = Duration::from_millis(50);
    let svc = Arc::new(h.svc);
    let t0 = Instant::now();
    let sharing = {
        let svc = svc.clone();
        tokio::spawn(async move { svc.share(req("dev")).await })
    };
    tokio::time::sleep(Duration::from_millis(10)).await;
    // 10 ms in: the worker runs (and has its link), the check has 40 ms to go.
    assert_eq!(h.world.starts.load(SeqCst), 1);
    assert_eq!(h.world.live_count(), 1);
    assert!(
        !sharing.is_finished(),
        "the link left before the check answered"
    );
    let info = sharing.await.unwrap().unwrap();
    assert!(
        t0.elapsed() >= Duration::from_millis(50),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(*h.world.start_sizes.lock(), [Some((80, 24))]);
    assert_eq!(
        kinds_of(&h.audit, info.share_id),
        [AuditKind::ShareRequested, AuditKind::ShareStarted]
    );
    Arc::into_inner(svc).unwrap().shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_terminal_missing_despite_its_hint_kills_the_started_worker_and_shows_nothing() {
    let h = harness(allow(), Settings::default()).await;
    // The host saw a terminal of this size once; it has closed since.
    *h.host.size_hint.lock() = Some((80, 24));
    *h.host.check_delay.lock() = Duration::from_millis(50);
    let mut badges = h.svc.badges();
    badges.borrow_and_update();
    let mut events = h.svc.subscribe();
    let err = h.svc.share(req("gone")).await.unwrap_err();
    assert!(matches!(err, ShareError::UnknownTerminal { .. }), "{err}");
    assert_eq!(h.world.starts.load(SeqCst), 1, "the worker had started");
    assert_eq!(h.world.live_count(), 0, "and is gone");
    assert!(!badges.has_changed().unwrap(), "a badge was published");
    assert!(h.svc.list().await.unwrap().is_empty());
    let requested = events.recv().await.unwrap();
    let id = ShareId(requested.correlation_id);
    let failed = wait_for(&mut events, id, AuditKind::ShareFailed).await;
    let cause = failed.details["cause"].as_str().unwrap();
    assert!(cause.contains("gone"), "{cause}");
    assert_eq!(
        kinds_of(&h.audit, id),
        [AuditKind::ShareRequested, AuditKind::ShareFailed],
        "never share.started"
    );
    h.svc.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_terminal_found_at_another_size_starts_the_worker_again_at_that_size() {
    let h = harness(allow(), Settings::default()).await;
    *h.host.size_hint.lock() = Some((80, 24));
    *h.host.size.lock() = Some((120, 40));
    *h.host.check_delay.lock() = Duration::from_millis(10);
    *h.world.link_delay.lock() = Some(Duration::from_millis(50));
    let info = h.svc.share(req("dev")).await.unwrap();
    assert_eq!(
        *h.world.start_sizes.lock(),
        [Some((80, 24)), Some((120, 40))]
    );
    assert_eq!(h.world.live_count(), 1, "the first worker is gone");
    // The link is the second worker's (`/s1`: the world's second start).
    assert!(info.links.link.ends_with("/s1"), "{}", info.links.link);
    h.svc.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn without_a_hint_the_worker_waits_for_the_check_and_gets_the_terminal_size() {
    let h = harness(allow(), Settings::default()).await;
    *h.host.size.lock() = Some((132, 43));
    *h.host.check_delay.lock() = Duration::from_millis(30);
    let svc = Arc::new(h.svc);
    let sharing = {
        let svc = svc.clone();
        tokio::spawn(async move { svc.share(req("dev")).await })
    };
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(
        h.world.starts.load(SeqCst),
        0,
        "started before its size was known"
    );
    sharing.await.unwrap().unwrap();
    assert_eq!(*h.world.start_sizes.lock(), [Some((132, 43))]);
    Arc::into_inner(svc).unwrap().shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_start_revoked_midway_leaves_no_worker_and_announces_no_link() {
    let h = harness(allow(), Settings::default()).await;
    *h.host.size_hint.lock() = Some((80, 24));
    *h.world.link_delay.lock() = Some(Duration::from_secs(1));
    let mut events = h.svc.subscribe();
    let svc = Arc::new(h.svc);
    let sharing = {
        let svc = svc.clone();
        tokio::spawn(async move { svc.share(req("dev")).await })
    };
    let requested = events.recv().await.unwrap();
    assert_eq!(requested.kind, AuditKind::ShareRequested);
    let id = ShareId(requested.correlation_id);
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(h.world.live_count(), 1, "the worker is starting");
    svc.revoke(id, p("human:alice")).await.unwrap();
    assert_eq!(h.world.live_count(), 0);
    assert!(sharing.await.unwrap().is_err(), "a link was handed out");
    assert_eq!(
        kinds_of(&h.audit, id),
        [AuditKind::ShareRequested, AuditKind::ShareRevoked]
    );
    Arc::into_inner(svc).unwrap().shutdown().await;
}

/// Real time: the flaky sink's writes block a thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_cannot_be_recorded_stops_the_started_worker_unannounced() {
    let sink = FlakySink::default();
    // The request's write takes 200 ms and then fails: the worker is up by then.
    sink.failing.store(true, SeqCst);
    *sink.delay.lock() = Duration::from_millis(200);
    let world = Arc::new(FakeWorld::default());
    let host = Arc::new(FakeHost::with(&["dev"]));
    *host.size_hint.lock() = Some((80, 24));
    let svc = ShareService::start(
        ServiceDeps {
            backends: vec![Arc::new(FakeBackend::new("fake", world.clone()))],
            policy: Arc::new(allow()),
            host,
            audit_sink: Box::new(sink.clone()),
            fingerprint_key: key(),
        },
        Settings::default(),
    )
    .await
    .unwrap();
    let svc = Arc::new(svc);
    let sharing = {
        let svc = svc.clone();
        tokio::spawn(async move { svc.share(req("dev")).await })
    };
    // The worker starts while the request is being written.
    let t0 = std::time::Instant::now();
    while world.starts.load(SeqCst) == 0 {
        assert!(t0.elapsed() < Duration::from_secs(5), "no worker started");
        tokio::task::yield_now().await;
    }
    let err = sharing.await.unwrap().unwrap_err();
    assert!(matches!(err, ShareError::AuditUnavailable(_)), "{err}");
    assert_eq!(world.live_count(), 0, "the started worker is gone");
    assert!(svc.list().await.unwrap().is_empty());
    // The disk recovers: nothing of the failed start was kept, and a new share starts.
    sink.failing.store(false, SeqCst);
    *sink.delay.lock() = Duration::ZERO;
    svc.share(req("dev")).await.unwrap();
    Arc::into_inner(svc).unwrap().shutdown().await;
    let kinds: Vec<AuditKind> = sink.events.lock().iter().map(|e| e.kind).collect();
    assert!(
        kinds
            .iter()
            .filter(|k| **k == AuditKind::ShareStarted)
            .count()
            == 1,
        "{kinds:?}"
    );
}
