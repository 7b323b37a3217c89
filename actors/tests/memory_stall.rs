//! A stalled audit disk: new work is refused at once (exit 9 at the CLI), nothing
//! queues up for it, and the resident set stays flat; what is live can still end. The
//! only test in its binary (it measures this process's memory); real clock, since the
//! stall is a write that blocks a thread.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{allow, harness_with_sink, p, req, rss_kib, CountingSink};
use termshare_actors::audit::MemorySink;
use termshare_actors::{HandoffRequest, Settings, ShareError};

/// Lets the disk go on however the test ends: a stuck writer would hold up the
/// service's shutdown.
struct Unstall(CountingSink);

impl Drop for Unstall {
    fn drop(&mut self) {
        self.0.stall(false);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_audit_disk_stalled_new_work_is_refused_and_memory_stays_flat() {
    let sink = CountingSink::default();
    let settings = Settings {
        per_terminal_limit: 100,
        audit_timeout: Duration::from_millis(500),
        ..Settings::default()
    };
    let h = harness_with_sink(
        allow(),
        settings,
        Box::new(sink.clone()),
        MemorySink::default(),
    )
    .await;
    let mut live = Vec::new();
    for _ in 0..50 {
        live.push(h.svc.share(req("dev")).await.unwrap());
    }

    // The disk stops answering in the middle of a write (the first share's end).
    let guard = Unstall(sink.clone());
    sink.stall(true);
    let svc = std::sync::Arc::new(h.svc);
    let first = live[0].share_id;
    let ending = {
        let svc = svc.clone();
        tokio::spawn(async move { svc.revoke(first, p("human:alice")).await })
    };
    while sink.blocked.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    // The stall is declared once the write has hung for audit::STALL.
    let stalled_at = std::time::Instant::now();
    while svc.audit_refusal().is_none() {
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            stalled_at.elapsed() < Duration::from_secs(10),
            "never declared"
        );
    }
    // The end went through: the worker is gone, whatever the record says.
    let _ = ending.await.unwrap();
    assert_eq!(h.world.live_count(), 49);

    let queued = svc.audit_queue();
    let before = rss_kib();
    for round in 0..20_000u32 {
        let err = svc.share(req("ops")).await.unwrap_err();
        assert!(matches!(err, ShareError::AuditUnavailable(_)), "{err}");
        if round % 4 == 0 {
            let err = svc
                .handoff_request(HandoffRequest {
                    terminal: "dev".parse().unwrap(),
                    from: p("human:alice").into(),
                    to: p("agent:claude"),
                    reason: format!("round {round}"),
                    backend: None,
                    ttl: None,
                })
                .await
                .unwrap_err();
            assert!(matches!(err, ShareError::AuditUnavailable(_)), "{err}");
            let err = svc
                .extend(live[1].share_id, Duration::from_secs(60), p("human:alice"))
                .await
                .unwrap_err();
            assert!(matches!(err, ShareError::AuditUnavailable(_)), "{err}");
        }
    }
    let after = rss_kib();
    eprintln!("RSS while stalled: {before} KiB before 25,000 refused requests, {after} KiB after; queue {queued} -> {}", svc.audit_queue());
    // Nothing queued for the refused work, and memory flat.
    assert_eq!(svc.audit_queue(), queued);
    assert!(
        after <= before + 1024,
        "RSS grew from {before} KiB to {after} KiB"
    );
    assert_eq!(h.world.live_count(), 49, "nothing new started");

    // The disk comes back: the queue drains and new work is taken again.
    drop(guard);
    while svc.audit_refusal().is_some() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    svc.share(req("ops")).await.unwrap();
    std::sync::Arc::into_inner(svc).unwrap().shutdown().await;
}
