//! The audit log records exactly what took effect, with a slow disk. These run on the
//! real clock: the sink's writes block a thread for real time, which a paused clock
//! would skip past.

use std::sync::Arc;
use std::time::{Duration, Instant};

use termshare_actors::testing::{AllowAll, FakeBackend, FakeHost, FakeWorld, FlakySink};
use termshare_actors::{
    AccessMode, AuditKind, BackendName, ServiceDeps, Settings, ShareError, ShareRequest,
    ShareService,
};

fn req(terminal: &str) -> ShareRequest {
    ShareRequest {
        terminal: terminal.parse().unwrap(),
        backend: BackendName::new("fake"),
        access: AccessMode::ReadWrite,
        caller: "human:alice"
            .parse::<termshare_actors::Principal>()
            .unwrap()
            .into(),
        ttl: Some(Duration::from_secs(600)),
        grace: Some(vec![]),
        join: Default::default(),
        record: false,
    }
}

async fn service(sink: FlakySink, settings: Settings) -> (ShareService, Arc<FakeWorld>) {
    let world = Arc::new(FakeWorld::default());
    let svc = ShareService::start(
        ServiceDeps {
            backends: vec![Arc::new(FakeBackend::new("fake", world.clone()))],
            policy: Arc::new(AllowAll {
                max_ttl: None,
                max_concurrent: None,
                require_join_restriction: false,
            }),
            host: Arc::new(FakeHost::with(&["dev", "ops"])),
            audit_sink: Box::new(sink),
            fingerprint_key: termshare_actors::FingerprintKey::random(),
        },
        settings,
    )
    .await
    .unwrap();
    (svc, world)
}

fn alice() -> termshare_actors::Principal {
    "human:alice".parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoke_during_an_extensions_slow_write_ends_the_share_at_once() {
    let sink = FlakySink::default();
    let (svc, world) = service(sink.clone(), Settings::default()).await;
    let info = svc.share(req("dev")).await.unwrap();
    // Every write now takes a second.
    *sink.delay.lock() = Duration::from_secs(1);
    let svc = Arc::new(svc);
    let extending = {
        let svc = svc.clone();
        tokio::spawn(async move {
            svc.extend(info.share_id, Duration::from_secs(60), alice())
                .await
        })
    };
    // The extension's record is on its way to the disk.
    while svc.audit_queue() == 0 {
        tokio::task::yield_now().await;
    }
    let asked = Instant::now();
    let report = svc.revoke(info.share_id, alice()).await.unwrap();
    // The worker was gone at once; the answer came once the end was on the record.
    assert!(report.deadline_met, "{report:?}");
    assert!(report.elapsed < Duration::from_millis(500), "{report:?}");
    assert!(report.elapsed <= asked.elapsed());
    assert_eq!(world.live_count(), 0);
    let _ = extending.await.unwrap();
    let kinds: Vec<AuditKind> = sink
        .events
        .lock()
        .iter()
        .filter(|e| e.correlation_id == info.share_id)
        .map(|e| e.kind)
        .collect();
    // Whatever became of the extension, the record ends with the revoke.
    assert_eq!(kinds.last(), Some(&AuditKind::ShareRevoked), "{kinds:?}");
    Arc::into_inner(svc).unwrap().shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_extension_whose_record_timed_out_is_never_written_later() {
    let sink = FlakySink::default();
    let settings = Settings {
        audit_timeout: Duration::from_millis(300),
        ..Settings::default()
    };
    let (svc, _world) = service(sink.clone(), settings).await;
    let a = svc.share(req("dev")).await.unwrap();
    let b = svc.share(req("ops")).await.unwrap();
    // Writes now take 1.5 s: ending `b` keeps the writer busy, so `a`'s extension waits
    // in the queue past its 300 ms and is withdrawn.
    *sink.delay.lock() = Duration::from_millis(1500);
    let svc = Arc::new(svc);
    let ending_b = {
        let svc = svc.clone();
        tokio::spawn(async move { svc.revoke(b.share_id, alice()).await })
    };
    while svc.audit_queue() == 0 {
        tokio::task::yield_now().await;
    }
    let t0 = Instant::now();
    let err = svc
        .extend(a.share_id, Duration::from_secs(60), alice())
        .await
        .unwrap_err();
    assert!(matches!(err, ShareError::AuditUnavailable(_)), "{err}");
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
    let _ = ending_b.await.unwrap();
    // End `a` too (its end is written however late), let the writer run dry, and look:
    // the refused extension is not in the log.
    *sink.delay.lock() = Duration::ZERO;
    let _ = svc.revoke(a.share_id, alice()).await;
    Arc::into_inner(svc).unwrap().shutdown().await;
    let kinds: Vec<AuditKind> = sink
        .events
        .lock()
        .iter()
        .filter(|e| e.correlation_id == a.share_id)
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        kinds,
        [
            AuditKind::ShareRequested,
            AuditKind::ShareStarted,
            AuditKind::ShareRevoked
        ]
    );
}
