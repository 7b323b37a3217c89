//! Scale rows: 10,000 shares over the in-process fake (start, memory, revoke,
//! shutdown) and TTL accuracy, beside bare ractor actors and tokio timers.

use super::*;

/// A sink that counts and drops: the scale runs measure the tree, not event storage.
#[derive(Clone, Default)]
pub(super) struct CountingSink(Arc<std::sync::atomic::AtomicU64>);

impl AuditSink for CountingSink {
    fn append(&mut self, events: &[AuditEvent]) -> Result<(), String> {
        self.0
            .fetch_add(events.len() as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }
}

pub(super) fn scale_settings() -> Settings {
    Settings {
        per_terminal_limit: 1,
        grace: vec![],
        // The default heartbeat (every share probed every 100 ms): what a daemon runs.
        link_timeout: Duration::from_secs(60),
        audit_timeout: Duration::from_secs(60),
        revoke_deadline: Duration::from_secs(5),
        ..Settings::default()
    }
}

pub(super) async fn fake_service(
    n: usize,
    sink: Box<dyn AuditSink>,
) -> (Arc<ShareService>, Vec<String>) {
    let names: Vec<String> = (0..n).map(|i| format!("t{i}")).collect();
    let host = FakeHost::with(&names.iter().map(String::as_str).collect::<Vec<_>>());
    let world = Arc::new(FakeWorld::default());
    let mut backend = FakeBackend::new("fake", world);
    backend.link_delay = Duration::ZERO;
    let svc = ShareService::start(
        ServiceDeps {
            backends: vec![Arc::new(backend)],
            policy: Arc::new(AllowAll {
                max_ttl: None,
                max_concurrent: None,
                require_join_restriction: false,
            }),
            host: Arc::new(host),
            audit_sink: sink,
            fingerprint_key: termshare::actors::FingerprintKey::random(),
        },
        scale_settings(),
    )
    .await
    .unwrap();
    (Arc::new(svc), names)
}

pub(super) async fn start_all(
    svc: &Arc<ShareService>,
    names: &[String],
    ttl: Duration,
) -> Vec<ShareId> {
    let mut tasks = tokio::task::JoinSet::new();
    for t in names {
        let svc = svc.clone();
        let t = t.clone();
        tasks.spawn(async move {
            svc.share(request(&t, "fake", ttl))
                .await
                .map(|i| i.share_id)
        });
    }
    let mut ids = Vec::new();
    while let Some(r) = tasks.join_next().await {
        ids.push(r.unwrap().expect("share"));
    }
    ids
}

/// 3. Scale with an in-process backend: start, memory, revoke, shutdown.
pub(super) async fn scale(n: usize, rows: &mut Vec<Row>) {
    // Baseline: the bare minimum the tree needs, three idle ractor actors per share.
    struct Idle;
    impl Actor for Idle {
        type Msg = ();
        type State = ();
        type Arguments = ();
        async fn pre_start(
            &self,
            _: ractor::ActorRef<()>,
            _: (),
        ) -> Result<(), ractor::ActorProcessingErr> {
            Ok(())
        }
    }
    let rss0 = rss_kib();
    let t0 = Instant::now();
    let mut idle = Vec::with_capacity(3 * n);
    for _ in 0..3 * n {
        idle.push(Actor::spawn(None, Idle, ()).await.unwrap().0);
    }
    let base_start = t0.elapsed().as_secs_f64();
    let base_mem = (rss_kib() - rss0) / n as f64;
    let t0 = Instant::now();
    for a in &idle {
        a.stop(None);
    }
    for a in idle {
        while a.get_status() != ractor::ActorStatus::Stopped {
            tokio::task::yield_now().await;
        }
    }
    let base_stop = t0.elapsed().as_secs_f64();

    let rss0 = rss_kib();
    let (svc, names) = fake_service(n, Box::new(CountingSink::default())).await;
    let t0 = Instant::now();
    let ids = start_all(&svc, &names, Duration::from_secs(3600)).await;
    let start = t0.elapsed().as_secs_f64();
    let mem = (rss_kib() - rss0) / n as f64;
    let t0 = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for id in ids {
        let svc = svc.clone();
        tasks.spawn(async move {
            svc.revoke(
                id,
                "human:bench"
                    .parse::<termshare_actors::Principal>()
                    .unwrap(),
            )
            .await
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap().expect("revoke");
    }
    let revoke = t0.elapsed().as_secs_f64();
    start_all(&svc, &names, Duration::from_secs(3600)).await;
    let svc = Arc::try_unwrap(svc).ok().unwrap();
    let t0 = Instant::now();
    let stopped = svc.shutdown().await;
    let shutdown = t0.elapsed().as_secs_f64();
    assert_eq!(stopped.len(), n);
    let k = n / 1000;
    rows.push(value_row(
        "scale_start_10k_heartbeat_s",
        start * 10.0 / k as f64,
        "s",
        Some(base_start * 10.0 / k as f64),
        Some((2.0, true)),
    ));
    rows.push(value_row(
        "scale_mem_per_share_kib",
        mem,
        "KiB",
        Some(base_mem),
        Some((48.0, true)),
    ));
    rows.push(value_row(
        "scale_revoke_10k_heartbeat_s",
        revoke * 10.0 / k as f64,
        "s",
        Some(base_stop * 10.0 / k as f64),
        Some((1.0, true)),
    ));
    rows.push(value_row(
        "scale_shutdown_10k_s",
        shutdown * 10.0 / k as f64,
        "s",
        Some(base_stop * 10.0 / k as f64),
        None,
    ));
}

/// 4. TTL accuracy: shares expiring in the same second; lag from deadline to event.
pub(super) async fn ttl_accuracy(n: usize, rows: &mut Vec<Row>) {
    let sink = MemorySink::default();
    let (svc, names) = fake_service(n, Box::new(sink.clone())).await;
    // All deadlines land within the same second, spread evenly over it: share i
    // expires at `at + i/n s`.
    let at = SystemTime::now() + Duration::from_secs(4);
    let mut tasks = tokio::task::JoinSet::new();
    for (i, t) in names.clone().into_iter().enumerate() {
        let svc = svc.clone();
        let offset = Duration::from_secs(1) * i as u32 / n as u32;
        tasks.spawn(async move {
            let ttl = (at + offset)
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::from_millis(1));
            svc.share(request(&t, "fake", ttl))
                .await
                .map(|i| (i.share_id, i.expires_at))
        });
    }
    let mut deadlines = std::collections::HashMap::new();
    while let Some(r) = tasks.join_next().await {
        let (id, exp) = r.unwrap().expect("share");
        deadlines.insert(id.0, exp);
    }
    // Baseline: bare tokio timers for the same deadlines.
    let mut timers = tokio::task::JoinSet::new();
    let base_at = tokio::time::Instant::now() + Duration::from_secs(2);
    for i in 0..n {
        let due = base_at + Duration::from_secs(1) * i as u32 / n as u32;
        timers.spawn(async move {
            tokio::time::sleep_until(due).await;
            ms(due.elapsed())
        });
    }
    let mut base = Vec::new();
    while let Some(l) = timers.join_next().await {
        base.push(l.unwrap());
    }
    // Wait for every expiry.
    let t0 = Instant::now();
    loop {
        let expired = sink
            .events
            .lock()
            .iter()
            .filter(|e| e.kind == AuditKind::ShareExpired)
            .count();
        if expired >= n || t0.elapsed() > Duration::from_secs(30) {
            break;
        }
        // Checked rarely: the count takes the sink's lock, which the writer needs.
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let lags: Vec<f64> = sink
        .events
        .lock()
        .iter()
        .filter(|e| e.kind == AuditKind::ShareExpired)
        .filter_map(|e| {
            let deadline = deadlines.get(&e.correlation_id)?;
            Some(e.at.duration_since(*deadline).map(ms).unwrap_or(0.0))
        })
        .collect();
    let svc = Arc::try_unwrap(svc).ok().unwrap();
    svc.shutdown().await;
    rows.push(value_row(
        "ttl_lag_p50_ms",
        pct(&lags, 50.0),
        "ms",
        Some(pct(&base, 50.0)),
        None,
    ));
    rows.push(value_row(
        "ttl_lag_p99_ms",
        pct(&lags, 99.0),
        "ms",
        Some(pct(&base, 99.0)),
        Some((50.0, true)),
    ));
}
