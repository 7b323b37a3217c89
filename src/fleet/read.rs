//! What `termshare fleet list|audit|revoke` asks of the database. These run as the
//! operator's own database role: what it may read and whether it may order a revoke
//! are the database's grants.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use super::connect::{Db, Target};
use super::{bounded, schema, FleetError};

/// The channel the ordering command LISTENs on for acks.
const ACKS_CHANNEL: &str = "termshare_revoke_acks";
/// One statement's limit.
const STEP: Duration = Duration::from_secs(10);
/// Rows `fleet audit` returns at most per call (`--limit` lowers it).
pub const MAX_AUDIT_ROWS: i64 = 100_000;

/// A connection for reading (the schema is checked, never changed).
pub async fn connect(database: &str) -> Result<Db, FleetError> {
    let db = Target::parse(database)?.connect().await?;
    schema::check(&db.client).await?;
    Ok(db)
}

/// A host as the fleet sees it.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct FleetHostRow {
    /// Its id.
    pub host_id: String,
    /// `live` (its lease runs), `unreachable` (it lapsed), `stopped` (a clean stop).
    pub state: String,
    /// The daemon's pid, as it registered.
    pub pid: Option<i32>,
    /// When its lease was last renewed (RFC 3339).
    pub renewed_at: Option<String>,
    /// Seconds since then, on the database's clock.
    pub silent_for_s: Option<f64>,
    /// Its audit events up to here are in the database.
    pub shipped_seq: i64,
}

/// A share as the fleet sees it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct FleetShare {
    /// The host it runs on.
    pub host_id: String,
    /// Its id.
    pub share_id: String,
    /// Its state on a reachable host; `unreachable` when its host's lease lapsed
    /// (it may have ended since: nobody can tell).
    pub state: String,
    /// Whom it belongs to.
    pub principal: String,
    /// The terminal shared.
    pub terminal: String,
    /// The backend serving it.
    pub backend: String,
    /// `read-only` or `read-write`.
    pub access: String,
    /// Participants, when the backend tells.
    pub participants: Option<i32>,
    /// When it started (RFC 3339).
    pub started_at: String,
    /// When its TTL runs out (RFC 3339).
    pub expires_at: String,
}

/// `fleet list` filters; each given one must match.
#[derive(Clone, Debug, Default)]
pub struct ListFilter {
    /// `--host`.
    pub host: Option<String>,
    /// `--principal`.
    pub principal: Option<String>,
    /// `--backend`.
    pub backend: Option<String>,
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// The hosts (filtered by `--host` only) and the shares matching `filter`.
pub async fn list(
    db: &Db,
    filter: &ListFilter,
) -> Result<(Vec<FleetHostRow>, Vec<FleetShare>), FleetError> {
    let hosts = bounded(
        "listing hosts",
        STEP,
        db.client.query(
            "SELECT host_id, \
               CASE WHEN stopped_at IS NOT NULL THEN 'stopped' \
                    WHEN lease_until IS NULL OR lease_until < now() THEN 'unreachable' \
                    ELSE 'live' END, \
               pid, renewed_at, extract(epoch FROM now() - renewed_at)::float8, shipped_seq \
             FROM termshare.hosts WHERE ($1::text IS NULL OR host_id = $1) ORDER BY host_id",
            &[&filter.host],
        ),
    )
    .await?
    .iter()
    .map(|r| FleetHostRow {
        host_id: r.get(0),
        state: r.get(1),
        pid: r.get(2),
        renewed_at: r.get::<_, Option<SystemTime>>(3).map(rfc3339),
        silent_for_s: r.get(4),
        shipped_seq: r.get(5),
    })
    .collect();
    let shares = bounded(
        "listing shares",
        STEP,
        db.client.query(
            "SELECT s.host_id, s.share_id, \
               CASE WHEN h.stopped_at IS NULL AND h.lease_until >= now() THEN s.state \
                    ELSE 'unreachable' END, \
               s.principal, s.terminal, s.backend, s.access, s.participants, s.started_at, s.expires_at \
             FROM termshare.live_shares s JOIN termshare.hosts h USING (host_id) \
             WHERE ($1::text IS NULL OR s.host_id = $1) AND ($2::text IS NULL OR s.principal = $2) \
               AND ($3::text IS NULL OR s.backend = $3) \
             ORDER BY s.host_id, s.started_at",
            &[&filter.host, &filter.principal, &filter.backend],
        ),
    )
    .await?
    .iter()
    .map(|r| FleetShare {
        host_id: r.get(0),
        share_id: r.get::<_, Uuid>(1).to_string(),
        state: r.get(2),
        principal: r.get(3),
        terminal: r.get(4),
        backend: r.get(5),
        access: r.get(6),
        participants: r.get(7),
        started_at: rfc3339(r.get(8)),
        expires_at: rfc3339(r.get(9)),
    })
    .collect();
    Ok((hosts, shares))
}

/// `fleet audit` filters: `termshare audit`'s, plus the host.
#[derive(Clone, Debug, Default)]
pub struct AuditQuery {
    /// `--host`.
    pub host: Option<String>,
    /// `--share`: the correlation id, or a handoff event's `details.share_id`.
    pub share: Option<Uuid>,
    /// `--terminal`.
    pub terminal: Option<String>,
    /// `--kind`, in full (`share.revoked`).
    pub kind: Option<String>,
    /// `--since`: at or after.
    pub since: Option<SystemTime>,
    /// `--until`: before.
    pub until: Option<SystemTime>,
    /// At most this many (the earliest).
    pub limit: i64,
}

/// Matching events in (time, host, seq) order: each the local log's object with
/// `host_id` added.
pub async fn audit(db: &Db, q: &AuditQuery) -> Result<Vec<Value>, FleetError> {
    let share = q.share.map(|s| s.to_string());
    let rows = bounded(
        "reading the fleet audit",
        STEP * 6,
        db.client.query(
            "SELECT host_id, event FROM termshare.audit_events \
             WHERE ($1::text IS NULL OR host_id = $1) \
               AND ($2::uuid IS NULL OR correlation_id = $2 OR event -> 'details' ->> 'share_id' = $3) \
               AND ($4::text IS NULL OR terminal = $4) AND ($5::text IS NULL OR kind = $5) \
               AND ($6::timestamptz IS NULL OR at >= $6) AND ($7::timestamptz IS NULL OR at < $7) \
             ORDER BY at, host_id, seq LIMIT $8",
            &[
                &q.host,
                &q.share,
                &share,
                &q.terminal,
                &q.kind,
                &q.since,
                &q.until,
                &q.limit.clamp(0, MAX_AUDIT_ROWS),
            ],
        ),
    )
    .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let host_id: String = r.get(0);
            let mut event: Value = r.get(1);
            if let Value::Object(map) = &mut event {
                map.insert("host_id".into(), Value::String(host_id));
            }
            event
        })
        .collect())
}

/// What a fleet revoke order names; each given one must match (at least one).
#[derive(Clone, Debug, Default)]
pub struct RevokeCriteria {
    /// `--principal`.
    pub principal: Option<String>,
    /// `--host`.
    pub host: Option<String>,
    /// `--share`.
    pub share: Option<Uuid>,
    /// `--reason`, kept with the order.
    pub reason: Option<String>,
}

/// One share an order ended (or could not).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct RevokeOutcome {
    /// The order.
    pub order_id: String,
    /// The host that carried it out.
    pub host_id: String,
    /// The share.
    pub share_id: String,
    /// Whom it belonged to.
    pub principal: String,
    /// `revoked`, `already_ended` or `failed`.
    pub outcome: String,
    /// The revoke report (`elapsed_ms`, `deadline_met`, ...) or `error`.
    pub detail: Value,
}

/// What came of an order by the time the command stopped waiting.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct RevokeResult {
    /// The order's id (in every `share.revoked` it caused, as `fleet_order`).
    pub order_id: String,
    /// The role the database recorded as ordering it.
    pub ordered_by: String,
    /// Hosts whose lease ran when the order was made, which were expected to answer.
    pub expected: Vec<String>,
    /// Hosts that answered.
    pub answered: Vec<String>,
    /// Expected hosts that did not answer in time (each will carry the order out
    /// when it is back, if its shares still run).
    pub no_answer: Vec<String>,
    /// One per share.
    pub outcomes: Vec<RevokeOutcome>,
}

/// Record a revoke order, then wait up to `wait` for every live host to answer.
pub async fn revoke(
    db: &mut Db,
    criteria: &RevokeCriteria,
    wait: Duration,
) -> Result<RevokeResult, FleetError> {
    if criteria.principal.is_none() && criteria.host.is_none() && criteria.share.is_none() {
        return Err(FleetError::Invalid(
            "name what to revoke: --principal, --host or --share".into(),
        ));
    }
    // Listen first: an ack can come before the order's insert returns.
    bounded(
        "listening for answers",
        STEP,
        db.client.batch_execute(&format!("LISTEN {ACKS_CHANNEL}")),
    )
    .await?;
    let row = bounded(
        "recording the revoke order",
        STEP,
        db.client.query_one(
            "INSERT INTO termshare.revoke_orders (principal, host_id, share_id, reason) \
             VALUES ($1, $2, $3, $4) RETURNING order_id, ordered_by",
            &[
                &criteria.principal,
                &criteria.host,
                &criteria.share,
                &criteria.reason,
            ],
        ),
    )
    .await?;
    let order_id: Uuid = row.get(0);
    let ordered_by: String = row.get(1);
    let expected: Vec<String> = bounded(
        "reading live hosts",
        STEP,
        db.client.query(
            "SELECT host_id FROM termshare.hosts WHERE stopped_at IS NULL AND lease_until >= now() \
               AND ($1::text IS NULL OR host_id = $1) ORDER BY host_id",
            &[&criteria.host],
        ),
    )
    .await?
    .iter()
    .map(|r| r.get(0))
    .collect();
    let deadline = tokio::time::Instant::now() + wait;
    let mut answered = BTreeSet::new();
    loop {
        let acks = bounded(
            "reading answers",
            STEP,
            db.client.query(
                "SELECT host_id FROM termshare.revoke_acks WHERE order_id = $1",
                &[&order_id],
            ),
        )
        .await?;
        answered.extend(acks.iter().map(|r| r.get::<_, String>(0)));
        if expected.iter().all(|h| answered.contains(h)) {
            break;
        }
        // Each ack notifies; any notification is a reason to look again.
        match tokio::time::timeout_at(deadline, db.notices.recv()).await {
            Ok(Some(_)) => {}
            Ok(None) => return Err(FleetError::Database("the connection closed".into())),
            Err(_) => break,
        }
    }
    let outcomes = bounded(
        "reading outcomes",
        STEP,
        db.client.query(
            "SELECT host_id, share_id, principal, outcome, detail FROM termshare.revoke_outcomes \
             WHERE order_id = $1 ORDER BY host_id, at",
            &[&order_id],
        ),
    )
    .await?
    .iter()
    .map(|r| RevokeOutcome {
        order_id: order_id.to_string(),
        host_id: r.get(0),
        share_id: r.get::<_, Uuid>(1).to_string(),
        principal: r.get(2),
        outcome: r.get(3),
        detail: r.get(4),
    })
    .collect();
    let no_answer = expected
        .iter()
        .filter(|h| !answered.contains(*h))
        .cloned()
        .collect();
    Ok(RevokeResult {
        order_id: order_id.to_string(),
        ordered_by,
        expected,
        answered: answered.into_iter().collect(),
        no_answer,
        outcomes,
    })
}
