//! Audit rows: durable group commit against one fsync per event.

use super::*;

/// Throughput and ack latency of the durable audit log with `producers` concurrent
/// writers and `max_batch` (1: one fsync per event).
pub(super) async fn audit_run(
    dir: &Path,
    total: usize,
    producers: usize,
    max_batch: usize,
) -> (f64, Vec<f64>) {
    let path = dir.join(format!("audit-{max_batch}.jsonl"));
    let sink = JsonlFileSink::open(&path, Durability::Durable).unwrap();
    let audit = AuditLog::start(Box::new(sink), max_batch).await.unwrap();
    let per = total / producers;
    let t0 = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..producers {
        let audit = audit.clone();
        tasks.spawn(async move {
            let mut lat = Vec::with_capacity(per);
            for _ in 0..per {
                let e =
                    AuditEvent::new(AuditKind::ShareExtended, ShareId::new()).detail("by_ms", 1000);
                let s = Instant::now();
                audit
                    .record(e, Duration::from_secs(60))
                    .await
                    .expect("audit");
                lat.push(ms(s.elapsed()));
            }
            lat
        });
    }
    let mut lat = Vec::new();
    while let Some(l) = tasks.join_next().await {
        lat.extend(l.unwrap());
    }
    let rate = (per * producers) as f64 / t0.elapsed().as_secs_f64();
    audit.stop().await;
    (rate, lat)
}

/// 5. Audit: durable events per second with group commit vs one fsync per event.
pub(super) async fn audit_throughput(total: usize, rows: &mut Vec<Row>) {
    let dir = tempfile::tempdir_in(std::env::temp_dir()).unwrap();
    let (rate, lat) = audit_run(dir.path(), total, 1000, 4096).await;
    let (base_rate, base_lat) = audit_run(dir.path(), (total / 50).max(500), 50, 1).await;
    rows.push(value_row(
        "audit_events_per_s",
        rate,
        "events/s",
        Some(base_rate),
        Some((100_000.0, false)),
    ));
    rows.push(value_row(
        "audit_ack_p50_ms",
        pct(&lat, 50.0),
        "ms",
        Some(pct(&base_lat, 50.0)),
        None,
    ));
    rows.push(value_row(
        "audit_ack_p99_ms",
        pct(&lat, 99.0),
        "ms",
        Some(pct(&base_lat, 99.0)),
        Some((10.0, true)),
    ));
}
