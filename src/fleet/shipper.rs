//! Audit shipping: every event of the local log into `termshare.audit_events`, at
//! least once, idempotent by (host id, seq).
//!
//! The log stays the source of truth and the queue: the shipper is a cursor over it
//! ([`LogTail`]), so an outage of any length costs no memory, and a restart resumes
//! from the database's `hosts.shipped_seq`. Each batch is one transaction: the
//! events (`ON CONFLICT DO NOTHING`, so a re-send is a no-op) and the new
//! `shipped_seq`. A (host, seq) already holding a different event id means another
//! log ships under this host id: shipping stops and says so, rather than keep one
//! and drop the other silently.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use termshare_actors::AuditEvent;
use tokio_postgres::Client;
use uuid::Uuid;

use super::connect::{Db, Target};
use super::status::FleetStatus;
use super::{bounded, schema, FleetError};
use parking_lot::Mutex;

use crate::audit_file::{Batch, LogTail, TailError};

/// Events per batch (one INSERT of arrays, one transaction).
const BATCH: usize = 500;
/// A statement that takes longer than this costs a reconnect.
const STEP: Duration = Duration::from_secs(10);
/// Backoff between reconnects: from the first to the last.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));

/// Ships one host's log.
pub(crate) struct Shipper {
    pub(crate) target: Target,
    pub(crate) tail: LogTail,
    pub(crate) status: Arc<FleetStatus>,
}

impl Shipper {
    /// Ship until the log's writer is gone (the daemon stopped) and everything it
    /// committed is shipped. The caller bounds how long that last part may take.
    pub(crate) async fn run(self) {
        let tail = Arc::new(Mutex::new(self.tail));
        let mut backoff = BACKOFF.0;
        loop {
            let began = std::time::Instant::now();
            match connected(&self.target, &tail, &self.status).await {
                Ok(Done) => return,
                Err(e) => {
                    // A connection that served a while starts the backoff over.
                    if began.elapsed() > BACKOFF.1 * 2 {
                        backoff = BACKOFF.0;
                    }
                    tracing::warn!(error = %e, retry_in = ?backoff, "fleet audit shipping paused");
                    self.status.shipper_failed(Some(e.to_string()));
                    // A mismatch will not fix itself by retrying quickly.
                    let wait = match e {
                        FleetError::LogMismatch { .. } | FleetError::SeqConflict { .. } => {
                            BACKOFF.1 * 6
                        }
                        _ => backoff,
                    };
                    tokio::time::sleep(wait).await;
                    backoff = (backoff * 2).min(BACKOFF.1);
                }
            }
        }
    }
}

/// One connection's life: resume, then ship as the log grows.
async fn connected(
    target: &Target,
    tail: &Arc<Mutex<LogTail>>,
    status: &FleetStatus,
) -> Result<Done, FleetError> {
    let mut db = target.connect().await?;
    schema::ensure(&mut db.client).await?;
    let host_id = status.host_id().to_owned();
    let shipped = resume_point(&db.client, &host_id).await?;
    let (local, consumed, mut commits) = {
        let t = tail.lock();
        (t.committed().last_seq, t.consumed_seq(), t.commits())
    };
    if shipped > local {
        return Err(FleetError::LogMismatch {
            host_id,
            shipped,
            local,
        });
    }
    // The log must be the one the database has: the event at `shipped` has the
    // same id here and there (a log moved, reset or cloned under this id has not).
    if shipped > 0 {
        let theirs: Option<Uuid> = bounded(
            "checking the log against the database",
            STEP,
            db.client.query_opt(
                "SELECT id FROM termshare.audit_events WHERE host_id = $1 AND seq = $2",
                &[&host_id, &(shipped as i64)],
            ),
        )
        .await?
        .map(|r| r.get(0));
        let ours = blocking(tail, move |t| {
            t.seek_after(shipped - 1)?;
            Ok(t.read(1)?.events.into_iter().next())
        })
        .await?
        .filter(|e| e.seq == shipped)
        .and_then(|e| e.object.get("id")?.as_str()?.parse::<Uuid>().ok());
        if theirs.is_some() && ours != theirs {
            return Err(FleetError::SeqConflict {
                host_id,
                seq: shipped,
            });
        }
    }
    if shipped != consumed || shipped > 0 {
        blocking(tail, move |t| t.seek_after(shipped)).await?;
    }
    status.shipped(shipped);
    // Ship only under a host id this run holds (never beside another live daemon
    // that has it).
    status.wait_registered().await;
    status.shipper_failed(None);
    loop {
        // Mark what is seen now before reading: a commit after this wakes us.
        commits.borrow_and_update();
        let batch = blocking(tail, |t| t.read(BATCH)).await?;
        if batch.events.is_empty() {
            let consumed = {
                let mut t = tail.lock();
                t.consume(&batch);
                t.consumed_seq()
            };
            status.shipped(consumed);
            if commits.changed().await.is_err() {
                // The writer is gone and a read finds nothing more: all it committed
                // is shipped (or not this log's to ship: never spin on it).
                return Ok(Done);
            }
            continue;
        }
        ship(&mut db, &host_id, &batch).await?;
        tail.lock().consume(&batch);
        status.shipped(batch.last_seq());
        status.shipper_failed(None);
    }
}

/// The shipper has shipped everything its writer committed before it stopped.
struct Done;

/// The seq every event up to which is already in the database (the host's row is
/// made if it is not there).
async fn resume_point(client: &Client, host_id: &str) -> Result<u64, FleetError> {
    bounded(
        "registering the host",
        STEP,
        client.execute(
            "INSERT INTO termshare.hosts (host_id) VALUES ($1) ON CONFLICT DO NOTHING",
            &[&host_id],
        ),
    )
    .await?;
    let row = bounded(
        "reading the shipped seq",
        STEP,
        client.query_one(
            "SELECT shipped_seq FROM termshare.hosts WHERE host_id = $1",
            &[&host_id],
        ),
    )
    .await?;
    let seq: i64 = row.get(0);
    Ok(seq.max(0) as u64)
}

/// One batch, one transaction.
async fn ship(db: &mut Db, host_id: &str, batch: &Batch) -> Result<(), FleetError> {
    let rows = Rows::of(batch);
    let tx = bounded("shipping audit events", STEP, db.client.transaction()).await?;
    bounded(
        "shipping audit events",
        STEP,
        tx.execute(
            "INSERT INTO termshare.audit_events \
               (host_id, seq, id, at, kind, correlation_id, principal, terminal, backend, event) \
             SELECT $1, * FROM unnest($2::bigint[], $3::uuid[], $4::timestamptz[], $5::text[], \
               $6::uuid[], $7::text[], $8::text[], $9::text[], $10::jsonb[]) \
             ON CONFLICT (host_id, seq) DO NOTHING",
            &[
                &host_id,
                &rows.seq,
                &rows.id,
                &rows.at,
                &rows.kind,
                &rows.correlation_id,
                &rows.principal,
                &rows.terminal,
                &rows.backend,
                &rows.event,
            ],
        ),
    )
    .await?;
    // A re-send finds its own rows; anything else under these keys is another log's.
    let conflict = bounded(
        "checking shipped events",
        STEP,
        tx.query_opt(
            "SELECT min(a.seq) FROM termshare.audit_events a \
             JOIN unnest($2::bigint[], $3::uuid[]) AS u(seq, id) ON a.seq = u.seq \
             WHERE a.host_id = $1 AND a.id <> u.id HAVING count(*) > 0",
            &[&host_id, &rows.seq, &rows.id],
        ),
    )
    .await?;
    if let Some(row) = conflict {
        let seq: i64 = row.get(0);
        return Err(FleetError::SeqConflict {
            host_id: host_id.to_owned(),
            seq: seq as u64,
        });
    }
    bounded(
        "recording the shipped seq",
        STEP,
        tx.execute(
            "UPDATE termshare.hosts SET shipped_seq = greatest(shipped_seq, $2) WHERE host_id = $1",
            &[&host_id, &(batch.last_seq() as i64)],
        ),
    )
    .await?;
    bounded("shipping audit events", STEP, tx.commit()).await
}

/// A batch as columns, for `unnest`.
#[derive(Default)]
struct Rows {
    seq: Vec<i64>,
    id: Vec<Uuid>,
    at: Vec<SystemTime>,
    kind: Vec<String>,
    correlation_id: Vec<Uuid>,
    principal: Vec<Option<String>>,
    terminal: Vec<Option<String>>,
    backend: Vec<Option<String>>,
    event: Vec<serde_json::Value>,
}

impl Rows {
    fn of(batch: &Batch) -> Self {
        let mut rows = Rows::default();
        for e in &batch.events {
            // The log's own lines: they parse as events. One that does not still
            // ships (its object, under its seq), with what could be read.
            let parsed = serde_json::from_value::<AuditEvent>(e.object.clone()).ok();
            rows.seq.push(e.seq as i64);
            rows.id.push(parsed.as_ref().map_or(Uuid::nil(), |p| p.id));
            rows.at
                .push(parsed.as_ref().map_or(SystemTime::UNIX_EPOCH, |p| p.at));
            rows.kind.push(
                e.object
                    .get("kind")
                    .and_then(|k| k.as_str())
                    .unwrap_or("unknown")
                    .to_owned(),
            );
            rows.correlation_id
                .push(parsed.as_ref().map_or(Uuid::nil(), |p| p.correlation_id));
            rows.principal.push(
                parsed
                    .as_ref()
                    .and_then(|p| p.principal.as_ref().map(|x| x.to_string())),
            );
            rows.terminal.push(
                parsed
                    .as_ref()
                    .and_then(|p| p.terminal.as_ref().map(|x| x.to_string())),
            );
            rows.backend.push(
                parsed
                    .as_ref()
                    .and_then(|p| p.backend.as_ref().map(|x| x.to_string())),
            );
            rows.event.push(e.object.clone());
        }
        rows
    }
}

/// Run a file step off the async threads (a stalled disk blocks a blocking-pool
/// thread, not the runtime).
async fn blocking<T: Send + 'static>(
    tail: &Arc<Mutex<LogTail>>,
    step: impl FnOnce(&mut LogTail) -> Result<T, TailError> + Send + 'static,
) -> Result<T, FleetError> {
    let tail = tail.clone();
    tokio::task::spawn_blocking(move || step(&mut tail.lock()))
        .await
        .map_err(|e| FleetError::Database(format!("reading the audit log: {e}")))?
        .map_err(|e| FleetError::Database(e.to_string()))
}
