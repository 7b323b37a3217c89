//! The supervision tree with in-process fakes, under tokio's paused clock: admission,
//! lifecycle, TTL, revoke, switch, and containment of crashes.

use std::sync::Arc;
use std::time::Duration;

mod common;

use common::*;
use termshare_actors::testing::{AllowAll, DenyAll, FakeBackend, FakeHost, FakeWorld};
use termshare_actors::{
    AuditKind, BackendError, BackendName, EndReason, PolicyGate, ServiceDeps, Settings, ShareError,
    ShareService,
};
use tokio::time::Instant;

#[tokio::test(start_paused = true)]
async fn share_starts_a_worker_and_audits_it_under_one_correlation_id() {
    let h = harness(allow(), Settings::default()).await;
    let info = h.svc.share(req("dev")).await.unwrap();
    assert_eq!(info.links.link, format!("fake://fake/{}", info.share_id));
    assert!(h.world.live().contains(&info.share_id));
    assert_eq!(
        kinds_of(&h.audit, info.share_id),
        vec![AuditKind::ShareRequested, AuditKind::ShareStarted]
    );
    let started = h.audit.events.lock()[1].clone();
    // The link is a secret: only its fingerprint is in the record.
    let line = serde_json::to_string(&started).unwrap();
    assert!(!line.contains(&info.links.link));
    assert_eq!(
        started.details["link_fp"],
        key().fingerprint(&info.links.link)
    );
    assert_eq!(h.svc.list().await.unwrap(), vec![info]);
    h.svc.shutdown().await;
    assert_eq!(h.world.live_count(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_denied_share_starts_nothing_and_is_audited() {
    let h = harness(DenyAll, Settings::default()).await;
    let err = h.svc.share(req("dev")).await.unwrap_err();
    assert!(matches!(err, ShareError::Denied { .. }), "{err}");
    assert!(err.to_string().contains("no rule allows"));
    assert_eq!(h.world.starts.load(std::sync::atomic::Ordering::SeqCst), 0);
    let kinds: Vec<_> = h.audit.events.lock().iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        vec![AuditKind::ShareRequested, AuditKind::ShareDenied]
    );
    h.svc.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_ttl_above_the_policy_maximum_is_refused_with_both_values() {
    let h = harness(
        AllowAll {
            max_ttl: Some(Duration::from_secs(30)),
            max_concurrent: None,
            require_join_restriction: false,
        },
        Settings::default(),
    )
    .await;
    let err = h.svc.share(req("dev")).await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ShareError::TtlAboveMax { .. }));
    assert!(msg.contains("1m") && msg.contains("30s"), "{msg}");
    assert_eq!(h.world.starts.load(std::sync::atomic::Ordering::SeqCst), 0);
    h.svc.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn an_unknown_terminal_fails_its_start_with_no_badge_or_listing_ever_shown() {
    let h = harness(allow(), Settings::default()).await;
    let mut badges = h.svc.badges();
    badges.borrow_and_update();
    let err = h.svc.share(req("nosuch")).await.unwrap_err();
    assert!(matches!(err, ShareError::UnknownTerminal { .. }), "{err}");
    // The fake host knows no size for it, so the worker waited for the check.
    assert_eq!(h.world.starts.load(std::sync::atomic::Ordering::SeqCst), 0);
    // Never shown: not on the board (not even `starting` for a moment), not listed.
    assert!(!badges.has_changed().unwrap(), "a badge was published");
    assert!(badges.borrow().is_empty());
    assert!(h.svc.list().await.unwrap().is_empty());
    let svc = h.svc;
    svc.shutdown().await;
    let events = h.audit.events.lock().clone();
    let kinds: Vec<AuditKind> = events
        .iter()
        .map(|e| e.kind)
        .filter(|k| k.as_str().starts_with("share."))
        .collect();
    // Admitted, then failed at the gate: the terminal check runs beside the start.
    assert_eq!(kinds, [AuditKind::ShareRequested, AuditKind::ShareFailed]);
    let failed = &events[1];
    let cause = failed.details["cause"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(cause.contains("nosuch"), "{cause}");
}

#[tokio::test(start_paused = true)]
async fn racing_requests_for_one_terminal_admit_exactly_the_limit() {
    let h = harness(allow(), Settings::default()).await;
    let svc = Arc::new(h.svc);
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let svc = svc.clone();
        tasks.push(tokio::spawn(async move { svc.share(req("dev")).await }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(ShareError::LimitReached { terminal, limit }) => {
                assert_eq!((terminal.as_str(), limit), ("dev", 1));
            }
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(ok, 1);
    assert_eq!(h.world.live_count(), 1);
    // Another terminal is unaffected.
    svc.share(req("ops")).await.unwrap();
    Arc::into_inner(svc).unwrap().shutdown().await;
    assert_eq!(h.world.live_count(), 0);
}

#[tokio::test(start_paused = true)]
async fn revoke_stops_the_worker_and_reports() {
    let h = harness(allow(), Settings::default()).await;
    let info = h.svc.share(req("dev")).await.unwrap();
    let report = h.svc.revoke(info.share_id, p("human:bob")).await.unwrap();
    assert_eq!(report.reason, EndReason::Revoked);
    assert!(report.deadline_met && !report.escalated);
    assert_eq!(h.world.live_count(), 0);
    let kinds = kinds_of(&h.audit, info.share_id);
    assert_eq!(kinds.last(), Some(&AuditKind::ShareRevoked));
    let revoked = h.audit.events.lock().last().unwrap().clone();
    assert_eq!(revoked.details["by"], "human:bob");
    // The share is gone: a second revoke says so.
    let again = h.svc.revoke(info.share_id, p("human:bob")).await;
    assert_eq!(
        again,
        Err(ShareError::ShareEnded(info.share_id, EndReason::Revoked))
    );
    h.svc.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_hung_worker_misses_the_deadline_is_killed_and_the_miss_is_audited() {
    let settings = Settings {
        revoke_deadline: Duration::from_secs(2),
        ..Settings::default()
    };
    let h = harness(allow(), settings).await;
    let info = h.svc.share(req("dev")).await.unwrap();
    *h.world.hang_on_terminate.lock() = true;
    let t0 = Instant::now();
    let err = h
        .svc
        .revoke(info.share_id, p("human:bob"))
        .await
        .unwrap_err();
    assert!(t0.elapsed() < Duration::from_secs(3));
    let ShareError::RevokeDeadlineMissed(report) = err else {
        panic!("a missed deadline must be an error, got {err}");
    };
    assert!(!report.deadline_met && report.escalated);
    assert_eq!(h.world.live_count(), 0, "the kill dropped the worker");
    let last = h.audit.events.lock().last().unwrap().clone();
    assert_eq!(last.kind, AuditKind::ShareRevoked);
    assert_eq!(last.details["deadline_met"], false);
    assert_eq!(last.details["error"], "revoke deadline missed");
    h.svc.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn grace_warnings_then_expiry_on_the_paused_clock() {
    let h = harness(allow(), Settings::default()).await;
    let mut rx = h.svc.subscribe();
    let mut r = req("dev");
    r.ttl = Some(Duration::from_secs(6));
    r.grace = Some(vec![Duration::from_secs(3), Duration::from_secs(10)]);
    let t0 = Instant::now();
    let info = h.svc.share(r).await.unwrap();
    let grace = wait_for(&mut rx, info.share_id, AuditKind::ShareGraceWarning).await;
    assert_eq!(grace.details["remaining_ms"], 3000);
    let at = t0.elapsed();
    assert!(
        at >= Duration::from_secs(3) && at < Duration::from_millis(3100),
        "{at:?}"
    );
    wait_for(&mut rx, info.share_id, AuditKind::ShareExpired).await;
    let at = t0.elapsed();
    assert!(
        at >= Duration::from_secs(6) && at < Duration::from_millis(6100),
        "{at:?}"
    );
    assert_eq!(h.world.live_count(), 0);
    // One warning (the 10 s threshold is beyond the TTL and skipped), shown on the host.
    assert_eq!(
        kinds_of(&h.audit, info.share_id),
        vec![
            AuditKind::ShareRequested,
            AuditKind::ShareStarted,
            AuditKind::ShareGraceWarning,
            AuditKind::ShareExpired
        ]
    );
    let notices = h.host.notices.lock().clone();
    assert_eq!(notices.len(), 1);
    assert!(notices[0].1.contains("ends in 3s"), "{notices:?}");
    h.svc.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn extension_moves_the_deadline_and_a_stale_expiry_is_ignored() {
    let h = harness(allow(), Settings::default()).await;
    let mut rx = h.svc.subscribe();
    let t0 = Instant::now();
    let info = h.svc.share(req("dev")).await.unwrap();
    tokio::time::sleep(Duration::from_secs(59)).await;
    let who = p("human:alice");
    let extended = h
        .svc
        .extend(info.share_id, Duration::from_secs(30), who)
        .await
        .unwrap();
    assert_eq!(
        extended.expires_at.duration_since(info.expires_at).unwrap(),
        Duration::from_secs(30)
    );
    // The tick armed for 60 s is stale now; the share lives on to 90 s.
    wait_for(&mut rx, info.share_id, AuditKind::ShareExpired).await;
    let at = t0.elapsed();
    assert!(
        at >= Duration::from_secs(90) && at < Duration::from_millis(90_100),
        "{at:?}"
    );
    h.svc.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn extend_after_expiry_is_share_expired() {
    let h = harness(allow(), Settings::default()).await;
    let mut rx = h.svc.subscribe();
    let info = h.svc.share(req("dev")).await.unwrap();
    wait_for(&mut rx, info.share_id, AuditKind::ShareExpired).await;
    let who = p("human:alice");
    let err = h
        .svc
        .extend(info.share_id, Duration::from_secs(30), who)
        .await
        .unwrap_err();
    assert_eq!(
        err,
        ShareError::ShareEnded(info.share_id, termshare_actors::EndReason::Expired)
    );
    h.svc.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn extension_and_expiry_racing_at_the_deadline_resolve_one_way() {
    // Extend lands exactly at the deadline: either it wins (and the share lives on) or
    // the expiry wins (and the extension is ShareEnded(_, Expired)). Never both, never neither.
    let h = harness(allow(), Settings::default()).await;
    let info = h.svc.share(req("dev")).await.unwrap();
    tokio::time::sleep_until(Instant::now() + Duration::from_secs(60)).await;
    let who = p("human:alice");
    let result = h
        .svc
        .extend(info.share_id, Duration::from_secs(30), who)
        .await;
    let live = h.svc.list().await.unwrap();
    match result {
        Ok(_) => assert_eq!(live.len(), 1),
        Err(ShareError::ShareEnded(_, termshare_actors::EndReason::Expired)) => {
            assert!(live.is_empty());
            assert_eq!(h.world.live_count(), 0);
        }
        Err(e) => panic!("unexpected {e}"),
    }
    h.svc.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn extension_is_bounded_by_max_ttl_from_the_start() {
    let h = harness(
        AllowAll {
            max_ttl: Some(Duration::from_secs(90)),
            max_concurrent: None,
            require_join_restriction: false,
        },
        Settings::default(),
    )
    .await;
    let info = h.svc.share(req("dev")).await.unwrap();
    let who: termshare_actors::Principal = "human:alice".parse().unwrap();
    let err = h
        .svc
        .extend(info.share_id, Duration::from_secs(31), who.clone())
        .await
        .unwrap_err();
    assert!(matches!(err, ShareError::ExtendAboveMax { .. }), "{err}");
    h.svc
        .extend(info.share_id, Duration::from_secs(30), who)
        .await
        .unwrap();
    h.svc.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_worker_that_exits_ends_its_share_as_failed_and_others_carry_on() {
    let h = harness(allow(), Settings::default()).await;
    let mut rx = h.svc.subscribe();
    let a = h.svc.share(req("dev")).await.unwrap();
    let b = h.svc.share(req("ops")).await.unwrap();
    assert!(h.world.crash(a.share_id));
    let failed = wait_for(&mut rx, a.share_id, AuditKind::ShareFailed).await;
    assert!(
        failed.details["cause"]
            .as_str()
            .unwrap()
            .contains("SIGKILL"),
        "{failed:?}"
    );
    let live = h.svc.list().await.unwrap();
    assert_eq!(
        live.iter().map(|i| i.share_id).collect::<Vec<_>>(),
        vec![b.share_id]
    );
    assert!(h.world.live().contains(&b.share_id));
    h.svc.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_panicking_worker_actor_is_contained() {
    let h = harness(allow(), Settings::default()).await;
    let mut rx = h.svc.subscribe();
    let a = h.svc.share(req("dev")).await.unwrap();
    let b = h.svc.share(req("ops")).await.unwrap();
    *h.world.panic_on_rotate.lock() = true; // a's worker panics as it rotates
    let who: termshare_actors::Principal = "human:alice".parse().unwrap();
    let rotated = h.svc.rotate(a.share_id, who).await;
    assert!(rotated.is_err(), "{rotated:?}");
    let failed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let e = rx.recv().await.unwrap();
            if e.kind == AuditKind::ShareFailed {
                return e;
            }
        }
    })
    .await
    .unwrap();
    let cause = failed.details["cause"].as_str().unwrap().to_owned();
    assert!(
        cause.contains("worker crashed") && cause.contains("injected"),
        "{cause}"
    );
    assert_eq!(failed.correlation_id, a.share_id);
    assert_eq!(
        h.world.live(),
        [b.share_id].into_iter().collect(),
        "the crashed worker is gone"
    );
    assert_eq!(h.svc.list().await.unwrap().len(), 1);
    h.svc.shutdown().await;
    assert_eq!(h.world.live_count(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_panicking_session_is_contained_and_its_worker_killed() {
    let h = harness(allow(), Settings::default()).await;
    let mut rx = h.svc.subscribe();
    let mut r = req("dev");
    r.grace = Some(vec![Duration::from_secs(30)]);
    let a = h.svc.share(r).await.unwrap();
    let b = h.svc.share(req("ops")).await.unwrap();
    *h.host.panic_on_notify.lock() = true; // the grace warning panics inside session a
    let failed = wait_for(&mut rx, a.share_id, AuditKind::ShareFailed).await;
    assert!(failed.details["cause"]
        .as_str()
        .unwrap()
        .contains("session crashed"));
    // Killing the session killed its worker (its Drop guard ran).
    tokio::time::timeout(Duration::from_secs(5), async {
        while h.world.live().contains(&a.share_id) {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("worker of the crashed session still alive");
    assert!(h.world.live().contains(&b.share_id));
    assert_eq!(h.svc.list().await.unwrap().len(), 1);
    h.svc.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn no_link_in_time_fails_with_link_timeout_and_leaves_nothing() {
    let settings = Settings {
        link_timeout: Duration::from_secs(3),
        ..Settings::default()
    };
    let h = harness(allow(), settings).await;
    *h.world.never_link.lock() = true;
    let err = h.svc.share(req("dev")).await.unwrap_err();
    assert!(
        matches!(err, ShareError::Backend(BackendError::LinkTimeout { .. })),
        "{err}"
    );
    assert!(err.to_string().contains("not reachable"));
    assert_eq!(h.world.live_count(), 0);
    let kinds: Vec<_> = h.audit.events.lock().iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        vec![AuditKind::ShareRequested, AuditKind::ShareFailed]
    );
    // The terminal's slot is free again.
    *h.world.never_link.lock() = false;
    h.svc.share(req("dev")).await.unwrap();
    h.svc.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn revoke_during_start_kills_the_starting_worker() {
    let settings = Settings {
        link_timeout: Duration::from_secs(8),
        ..Settings::default()
    };
    let h = harness(allow(), settings).await;
    *h.world.never_link.lock() = true;
    let svc = Arc::new(h.svc);
    let starting = {
        let svc = svc.clone();
        tokio::spawn(async move { svc.share(req("dev")).await })
    };
    let id = loop {
        if let Some(id) = h.world.live().into_iter().next() {
            break id;
        }
        tokio::task::yield_now().await;
    };
    let report = svc.revoke(id, p("human:bob")).await.unwrap();
    assert!(report.deadline_met);
    assert_eq!(h.world.live_count(), 0);
    assert!(starting.await.unwrap().is_err());
    Arc::into_inner(svc).unwrap().shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn switch_starts_the_new_worker_then_reaps_the_old_one() {
    let h = harness(allow(), Settings::default()).await;
    let info = h.svc.share(req("dev")).await.unwrap();
    let starts_before = h.world.starts.load(std::sync::atomic::Ordering::SeqCst);
    let switched = h
        .svc
        .switch(info.share_id, BackendName::new("fake-b"), p("human:alice"))
        .await
        .unwrap();
    assert_eq!(switched.share_id, info.share_id);
    assert_eq!(switched.expires_at, info.expires_at, "the TTL is kept");
    assert_eq!(
        switched.links.link,
        format!("fake://fake-b/{}/s{starts_before}", info.share_id)
    );
    assert_eq!(
        h.world.starts.load(std::sync::atomic::Ordering::SeqCst),
        starts_before + 1
    );
    assert_eq!(h.world.live_count(), 1);
    let last = h.audit.events.lock().last().unwrap().clone();
    assert_eq!(last.kind, AuditKind::ShareSwitched);
    assert_eq!(
        (last.details["from"].as_str(), last.details["to"].as_str()),
        (Some("fake"), Some("fake-b"))
    );
    assert_eq!(last.details["old_worker_stopped"], true);
    h.svc.shutdown().await;
    assert_eq!(h.world.live_count(), 0);
}

#[tokio::test(start_paused = true)]
async fn shutdown_stops_every_share() {
    let h = harness(allow(), Settings::default()).await;
    let a = h.svc.share(req("dev")).await.unwrap();
    let b = h.svc.share(req("ops")).await.unwrap();
    let reports = h.svc.shutdown().await;
    assert_eq!(reports.len(), 2);
    assert!(reports.iter().all(|r| r.reason == EndReason::Stopped));
    assert_eq!(h.world.live_count(), 0);
    for id in [a.share_id, b.share_id] {
        assert_eq!(
            kinds_of(&h.audit, id).last(),
            Some(&AuditKind::ShareStopped)
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_rule_that_requires_a_join_restriction_refuses_an_open_backend() {
    let h = harness(
        AllowAll {
            max_ttl: None,
            max_concurrent: None,
            require_join_restriction: true,
        },
        Settings::default(),
    )
    .await;
    let err = h.svc.share(req("dev")).await.unwrap_err();
    assert!(matches!(err, ShareError::Denied { .. }), "{err}");
    assert!(
        err.to_string().contains("requires a join restriction"),
        "{err}"
    );
    assert_eq!(h.world.starts.load(std::sync::atomic::Ordering::SeqCst), 0);
    h.svc.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn badges_follow_the_share_through_its_life() {
    use termshare_actors::ShareState;
    let h = harness(allow(), Settings::default()).await;
    let mut badges = h.svc.badges();
    let state_of = |b: &termshare_actors::Badges| -> Option<ShareState> {
        b.get(&"dev".parse().unwrap())
            .map(|badge| badge.shares[0].state)
    };
    let mut r = req("dev");
    r.grace = Some(vec![Duration::from_secs(10)]);
    let info = h.svc.share(r).await.unwrap();
    badges.changed().await.unwrap();
    let seen = badges.borrow_and_update().clone();
    assert_eq!(state_of(&seen), Some(ShareState::Active));
    let row = &seen[&"dev".parse().unwrap()].shares[0];
    assert_eq!(
        (row.share_id, row.expires_at),
        (info.share_id, info.expires_at)
    );
    assert_eq!(row.backend.as_str(), "fake");

    // The grace warning turns it to "expiring"; an extension back to "active".
    tokio::time::sleep(Duration::from_secs(51)).await;
    badges.changed().await.unwrap();
    assert_eq!(
        state_of(&badges.borrow_and_update()),
        Some(ShareState::Expiring)
    );
    let who: termshare_actors::Principal = "human:alice".parse().unwrap();
    h.svc
        .extend(info.share_id, Duration::from_secs(60), who.clone())
        .await
        .unwrap();
    badges.changed().await.unwrap();
    assert_eq!(
        state_of(&badges.borrow_and_update()),
        Some(ShareState::Active)
    );

    h.svc.revoke(info.share_id, who).await.unwrap();
    // "ending", then gone: the last board has no badge for the terminal.
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            badges.changed().await.unwrap();
            if badges.borrow_and_update().is_empty() {
                break;
            }
        }
    })
    .await
    .expect("badge not removed after revoke");
    h.svc.shutdown().await;
}

async fn flaky_service(
    sink: termshare_actors::testing::FlakySink,
) -> (ShareService, Arc<FakeWorld>) {
    let world = Arc::new(FakeWorld::default());
    let svc = ShareService::start(
        ServiceDeps {
            backends: vec![Arc::new(FakeBackend::new("fake", world.clone()))],
            policy: Arc::new(allow()),
            host: Arc::new(FakeHost::with(&["dev", "ops"])),
            audit_sink: Box::new(sink),
            fingerprint_key: key(),
        },
        Settings::default(),
    )
    .await
    .unwrap();
    (svc, world)
}

#[tokio::test(start_paused = true)]
async fn a_failing_audit_log_refuses_new_shares_but_live_ones_still_end() {
    use std::sync::atomic::Ordering::SeqCst;
    let sink = termshare_actors::testing::FlakySink::default();
    let (svc, world) = flaky_service(sink.clone()).await;
    let live = svc.share(req("dev")).await.unwrap();
    sink.failing.store(true, SeqCst);
    let err = svc.share(req("ops")).await.unwrap_err();
    assert!(matches!(err, ShareError::AuditUnavailable(_)), "{err}");
    assert!(err.to_string().contains("No space left"), "{err}");
    assert_eq!(
        world.live_count(),
        1,
        "nothing started for the refused share"
    );
    assert!(svc.audit_error().unwrap().contains("No space left"));
    // The live share can still be revoked: its worker stops, and the caller is told
    // that the event could not be kept.
    let revoked = svc.revoke(live.share_id, p("human:bob")).await;
    assert!(
        matches!(revoked, Err(ShareError::AuditUnavailable(_))),
        "{revoked:?}"
    );
    assert_eq!(world.live_count(), 0);
    // The disk recovers: the next request is kept and the share starts.
    sink.failing.store(false, SeqCst);
    svc.share(req("ops")).await.unwrap();
    assert!(svc.audit_error().is_none());
    let seqs: Vec<u64> = sink.events.lock().iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "no gaps");
    svc.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn concurrent_events_are_committed_in_groups() {
    let sink = termshare_actors::testing::FlakySink::default();
    let (svc, _world) = flaky_service(sink.clone()).await;
    let svc = Arc::new(svc);
    let mut tasks = Vec::new();
    for i in 0..50 {
        let svc = svc.clone();
        let terminal = if i % 2 == 0 { "dev" } else { "ops" };
        tasks.push(tokio::spawn(async move { svc.share(req(terminal)).await }));
    }
    for t in tasks {
        let _ = t.await.unwrap();
    }
    let batches = sink.batches.lock().clone();
    let events: usize = batches.iter().sum();
    assert_eq!(events, sink.events.lock().len());
    assert!(
        batches.iter().any(|&b| b > 1),
        "no group commit happened: {batches:?}"
    );
    assert!(batches.len() < events, "{batches:?}");
    Arc::into_inner(svc).unwrap().shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_worker_that_stops_answering_fails_its_share_after_the_heartbeat_timeout() {
    let h = harness(allow(), Settings::default()).await;
    let mut rx = h.svc.subscribe();
    let info = h.svc.share(req("dev")).await.unwrap();
    h.world.stop(info.share_id);
    let t0 = Instant::now();
    let failed = wait_for(&mut rx, info.share_id, AuditKind::ShareFailed).await;
    let took = t0.elapsed();
    let s = Settings::default();
    assert!(
        took >= s.heartbeat_timeout && took <= s.heartbeat_timeout + s.probe_interval * 2,
        "{took:?}"
    );
    assert!(failed.details["cause"]
        .as_str()
        .unwrap()
        .starts_with("heartbeat timeout"));
    assert_eq!(h.world.live_count(), 0, "the hung worker was killed");
    h.svc.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn absurd_durations_are_refused_not_overflowed() {
    let h = harness(allow(), Settings::default()).await;
    let mut r = req("dev");
    r.ttl = Some(Duration::from_secs(u64::MAX / 2));
    let err = h.svc.share(r).await.unwrap_err();
    assert!(matches!(err, ShareError::Invalid(_)), "{err}");
    let info = h.svc.share(req("dev")).await.unwrap();
    let who: termshare_actors::Principal = "human:alice".parse().unwrap();
    let err = h
        .svc
        .extend(info.share_id, Duration::from_secs(u64::MAX / 2), who)
        .await
        .unwrap_err();
    assert!(matches!(err, ShareError::Invalid(_)), "{err}");
    assert_eq!(
        h.svc.list().await.unwrap().len(),
        1,
        "the share is unharmed"
    );
    h.svc.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_slow_audit_disk_does_not_hold_up_a_revoke_behind_a_new_request() {
    let sink = termshare_actors::testing::FlakySink::default();
    let (svc, world) = flaky_service(sink.clone()).await;
    let svc = Arc::new(svc);
    let a = svc.share(req("dev")).await.unwrap();
    // From now on every audit write takes 1.5 s (real time: the writer blocks).
    *sink.delay.lock() = Duration::from_millis(1500);
    let requesting = {
        let svc = svc.clone();
        tokio::spawn(async move { svc.share(req("ops")).await })
    };
    tokio::task::yield_now().await;
    let t0 = std::time::Instant::now();
    let revoking = {
        let svc = svc.clone();
        tokio::spawn(async move { svc.revoke(a.share_id, p("human:bob")).await })
    };
    // The worker is stopped at once; only the revoke's answer waits for its event.
    while world.live().contains(&a.share_id) {
        tokio::task::yield_now().await;
        assert!(
            t0.elapsed() < std::time::Duration::from_millis(1000),
            "revoke was held up"
        );
    }
    eprintln!("worker of the revoked share gone after {:?}", t0.elapsed());
    revoking.await.unwrap().unwrap();
    requesting.await.unwrap().unwrap();
    *sink.delay.lock() = Duration::ZERO;
    Arc::into_inner(svc).unwrap().shutdown().await;
}

/// Allows `fake` for two hours and `fake-b` for ten minutes with a join restriction
/// only where asked.
struct TwoRules {
    b_requires_join_restriction: bool,
}

impl PolicyGate for TwoRules {
    fn evaluate(&self, q: &termshare_actors::PolicyQuery<'_>) -> termshare_actors::PolicyDecision {
        use termshare_actors::{Grant, PolicyDecision};
        match q.backend.as_str() {
            "fake" => PolicyDecision::Allow(Grant {
                rule_id: "long".into(),
                max_ttl: Some(Duration::from_secs(7200)),
                max_concurrent: None,
                require_join_restriction: false,
                record: false,
                max_join_timeout: None,
                max_participants: None,
            }),
            _ => PolicyDecision::Allow(Grant {
                rule_id: "short".into(),
                max_ttl: Some(Duration::from_secs(600)),
                max_concurrent: None,
                require_join_restriction: self.b_requires_join_restriction,
                record: false,
                max_join_timeout: None,
                max_participants: None,
            }),
        }
    }
}

/// The share as its owner sees it, and its live workers, must not have moved.
async fn assert_unchanged(h: &Harness, before: &termshare_actors::ShareInfo) {
    let now = h.svc.list().await.unwrap();
    assert_eq!(now.len(), 1);
    assert_eq!(now[0].backend, before.backend);
    assert_eq!(now[0].links, before.links);
    assert_eq!(now[0].expires_at, before.expires_at);
    assert_eq!(now[0].rule_id, before.rule_id);
    assert_eq!(h.world.live_count(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_switch_is_refused_where_a_new_share_would_be_and_changes_nothing() {
    // max_ttl counted from the share's start: a 1 h share may not move under a 10 m rule.
    let h = harness(
        TwoRules {
            b_requires_join_restriction: false,
        },
        Settings::default(),
    )
    .await;
    let mut r = req("dev");
    r.ttl = Some(Duration::from_secs(3600));
    let info = h.svc.share(r).await.unwrap();
    let mut events = h.svc.subscribe();
    let err = h
        .svc
        .switch(info.share_id, BackendName::new("fake-b"), p("human:alice"))
        .await
        .unwrap_err();
    assert!(matches!(err, ShareError::TtlAboveMax { .. }), "{err}");
    assert_unchanged(&h, &info).await;
    // The refusal is written as it happened, right after the answer: wait for it.
    wait_for(&mut events, info.share_id, AuditKind::ShareRefused).await;
    assert_eq!(
        kinds_of(&h.audit, info.share_id).last(),
        Some(&AuditKind::ShareRefused)
    );
    h.svc.shutdown().await;

    // The join restriction the new rule asks for.
    let h = harness(
        TwoRules {
            b_requires_join_restriction: true,
        },
        Settings::default(),
    )
    .await;
    let info = h.svc.share(req("dev")).await.unwrap();
    let err = h
        .svc
        .switch(info.share_id, BackendName::new("fake-b"), p("human:alice"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("join restriction"), "{err}");
    assert_unchanged(&h, &info).await;
    h.svc.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_switch_whose_new_backend_gives_no_link_leaves_the_share_on_the_old_one() {
    let h = harness(allow(), Settings::default()).await;
    let info = h.svc.share(req("dev")).await.unwrap();
    *h.world.fail_next_start.lock() = Some(BackendError::StartFailed {
        backend: "fake-b".into(),
        detail: "no relay".into(),
    });
    let mut events = h.svc.subscribe();
    let err = h
        .svc
        .switch(info.share_id, BackendName::new("fake-b"), p("human:alice"))
        .await
        .unwrap_err();
    assert!(matches!(err, ShareError::Backend(_)), "{err}");
    assert_unchanged(&h, &info).await;
    // The failure is written as it happened, right after the answer: wait for it.
    let failed = wait_for(&mut events, info.share_id, AuditKind::ShareSwitchFailed).await;
    assert_eq!(failed.details["still_on"], "fake");
    let last = h.audit.events.lock().last().unwrap().clone();
    assert_eq!(last.kind, AuditKind::ShareSwitchFailed, "nothing after it");
    // The share still works: it can be revoked, and its one worker goes.
    let report = h.svc.revoke(info.share_id, p("human:alice")).await.unwrap();
    assert!(report.deadline_met);
    assert_eq!(h.world.live_count(), 0);
    h.svc.shutdown().await;
}

fn bob() -> termshare_actors::Identity {
    termshare_actors::Identity::local_user(
        termshare_actors::Peer {
            uid: 1001,
            user: Some("bob".into()),
            pid: Some(4242),
        },
        vec![p("human:bob")],
        false,
    )
}

#[tokio::test(start_paused = true)]
async fn a_claim_outside_the_callers_identity_is_denied_and_audited_with_its_peer() {
    let h = harness(allow(), Settings::default()).await;
    let mut r = req("dev");
    r.caller = termshare_actors::Caller::new(p("human:alice"), bob());
    let err = h.svc.share(r).await.unwrap_err();
    assert!(
        matches!(&err, ShareError::Denied { reason, .. } if reason.contains("uid 1001 (bob) may act as human:bob, not as human:alice")),
        "{err}"
    );
    assert_eq!(h.world.starts.load(std::sync::atomic::Ordering::SeqCst), 0);
    let denied = h
        .audit
        .events
        .lock()
        .iter()
        .find(|e| e.kind == AuditKind::ShareDenied)
        .cloned()
        .unwrap();
    let peer = denied.peer.unwrap();
    assert_eq!((peer.uid, peer.pid), (1001, Some(4242)));
    h.svc.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn only_the_owner_or_the_operator_acts_on_a_share() {
    let h = harness(allow(), Settings::default()).await;
    let info = h.svc.share(req("dev")).await.unwrap();
    let as_bob = termshare_actors::Caller::new(p("human:bob"), bob());
    let err = h
        .svc
        .revoke(info.share_id, as_bob.clone())
        .await
        .unwrap_err();
    assert!(matches!(err, ShareError::Denied { .. }), "{err}");
    let err = h
        .svc
        .extend(info.share_id, Duration::from_secs(60), as_bob)
        .await
        .unwrap_err();
    assert!(matches!(err, ShareError::Denied { .. }), "{err}");
    assert_unchanged(&h, &info).await;
    // A refusal is recorded without holding up its answer: the stop writes out the
    // queue before the log is read.
    h.svc.shutdown().await;
    let refused: Vec<_> = h
        .audit
        .events
        .lock()
        .iter()
        .filter(|e| e.kind == AuditKind::ShareRefused)
        .map(|e| (e.details["action"].clone(), e.peer.as_ref().map(|p| p.uid)))
        .collect();
    assert_eq!(
        refused,
        [
            (serde_json::json!("revoke"), Some(1001)),
            (serde_json::json!("extend"), Some(1001))
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_revoke_during_a_switch_stops_both_workers_and_records_the_one_that_served() {
    let h = harness(allow(), Settings::default()).await;
    let info = h.svc.share(req("dev")).await.unwrap();
    let svc = Arc::new(h.svc);
    let switching = {
        let svc = svc.clone();
        let id = info.share_id;
        tokio::spawn(async move {
            svc.switch(id, BackendName::new("fake-b"), p("human:alice"))
                .await
        })
    };
    // The new worker has started (two workers live) but has no link yet.
    while h.world.live_count() < 2 {
        tokio::task::yield_now().await;
    }
    let report = svc.revoke(info.share_id, p("human:alice")).await.unwrap();
    assert!(report.deadline_met);
    assert_eq!(h.world.live_count(), 0, "both workers are gone");
    assert!(switching.await.unwrap().is_err());
    let revoked = h
        .audit
        .events
        .lock()
        .iter()
        .find(|e| e.kind == AuditKind::ShareRevoked)
        .cloned()
        .unwrap();
    assert_eq!(
        revoked.backend.unwrap().as_str(),
        "fake",
        "the worker that served"
    );
    Arc::into_inner(svc).unwrap().shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn an_extension_during_a_switch_is_refused_and_changes_nothing() {
    let h = harness(allow(), Settings::default()).await;
    let info = h.svc.share(req("dev")).await.unwrap();
    let svc = Arc::new(h.svc);
    let switching = {
        let svc = svc.clone();
        let id = info.share_id;
        tokio::spawn(async move {
            svc.switch(id, BackendName::new("fake-b"), p("human:alice"))
                .await
        })
    };
    while h.world.live_count() < 2 {
        tokio::task::yield_now().await;
    }
    let err = svc
        .extend(info.share_id, Duration::from_secs(60), p("human:alice"))
        .await
        .unwrap_err();
    assert!(matches!(err, ShareError::Invalid(_)), "{err}");
    let switched = switching.await.unwrap().unwrap();
    assert_eq!(switched.expires_at, info.expires_at);
    assert!(!kinds_of(&h.audit, info.share_id).contains(&AuditKind::ShareExtended));
    Arc::into_inner(svc).unwrap().shutdown().await;
}
