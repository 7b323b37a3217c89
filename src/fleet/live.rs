//! The host's live shares as the fleet view holds them (`termshare.live_shares`).

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use serde_json::Value;
use termshare_actors::{ShareError, ShareId, ShareInfo};
use tokio_postgres::Client;
use uuid::Uuid;

use super::agent::FleetHost;
use super::{bounded, FleetError};

/// One live share as the view holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct LiveRow {
    principal: String,
    terminal: String,
    backend: String,
    access: String,
    state: String,
    participants: Option<i32>,
    started_at: SystemTime,
    expires_at: SystemTime,
}

impl LiveRow {
    pub(super) fn of(s: &ShareInfo) -> Self {
        let word = |v: Value| v.as_str().unwrap_or_default().to_owned();
        LiveRow {
            principal: s.principal.to_string(),
            terminal: s.terminal.to_string(),
            backend: s.backend.to_string(),
            access: word(serde_json::to_value(s.access).unwrap_or_default()),
            state: word(serde_json::to_value(s.state).unwrap_or_default()),
            participants: s.participants.map(|n| n.min(i32::MAX as u32) as i32),
            started_at: s.started_at,
            expires_at: s.expires_at,
        }
    }
}

/// Live rows as columns, for `unnest`.
#[derive(Default)]
pub(super) struct LiveColumns {
    pub(super) share_id: Vec<Uuid>,
    pub(super) principal: Vec<String>,
    pub(super) terminal: Vec<String>,
    pub(super) backend: Vec<String>,
    pub(super) access: Vec<String>,
    pub(super) state: Vec<String>,
    pub(super) participants: Vec<Option<i32>>,
    pub(super) started_at: Vec<SystemTime>,
    pub(super) expires_at: Vec<SystemTime>,
}

impl LiveColumns {
    pub(super) fn push(&mut self, id: ShareId, row: &LiveRow) {
        self.share_id.push(id.into());
        self.principal.push(row.principal.clone());
        self.terminal.push(row.terminal.clone());
        self.backend.push(row.backend.clone());
        self.access.push(row.access.clone());
        self.state.push(row.state.clone());
        self.participants.push(row.participants);
        self.started_at.push(row.started_at);
        self.expires_at.push(row.expires_at);
    }
}

/// Rewrite the live view: rows that changed, rows that are gone (`full`: every
/// row of this host not live now, whoever wrote it).
pub(super) async fn sync(
    client: &mut Client,
    host: &dyn FleetHost,
    host_id: &str,
    synced: &mut HashMap<ShareId, LiveRow>,
    full: bool,
    step: Duration,
) -> Result<(), FleetError> {
    let shares = match host.live_shares().await {
        Ok(s) => s,
        Err(ShareError::ShuttingDown) => return Ok(()),
        Err(e) => {
            tracing::warn!(error = %e, "could not list shares for the fleet view");
            return Ok(());
        }
    };
    let now: HashMap<ShareId, LiveRow> = shares
        .iter()
        .map(|s| (s.share_id, LiveRow::of(s)))
        .collect();
    let changed: Vec<(&ShareId, &LiveRow)> = now
        .iter()
        .filter(|(id, row)| synced.get(id) != Some(row))
        .collect();
    let gone: Vec<Uuid> = synced
        .keys()
        .filter(|id| !now.contains_key(id))
        .map(|id| Uuid::from(*id))
        .collect();
    if changed.is_empty() && gone.is_empty() && !full {
        return Ok(());
    }
    let host_id = host_id.to_owned();
    let mut cols = LiveColumns::default();
    for (id, row) in &changed {
        cols.push(**id, row);
    }
    let keep: Vec<Uuid> = now.keys().map(|id| Uuid::from(*id)).collect();
    let statements = async {
        let tx = client.transaction().await?;
        if !changed.is_empty() {
            tx
                .execute(
                    "INSERT INTO termshare.live_shares AS l (host_id, share_id, principal, terminal, \
                       backend, access, state, participants, started_at, expires_at, updated_at) \
                     SELECT $1, *, now() FROM unnest($2::uuid[], $3::text[], $4::text[], $5::text[], \
                       $6::text[], $7::text[], $8::int4[], $9::timestamptz[], $10::timestamptz[]) \
                     ON CONFLICT (host_id, share_id) DO UPDATE SET principal = EXCLUDED.principal, \
                       terminal = EXCLUDED.terminal, backend = EXCLUDED.backend, access = EXCLUDED.access, \
                       state = EXCLUDED.state, participants = EXCLUDED.participants, \
                       started_at = EXCLUDED.started_at, expires_at = EXCLUDED.expires_at, \
                       updated_at = now()",
                    &[
                        &host_id,
                        &cols.share_id,
                        &cols.principal,
                        &cols.terminal,
                        &cols.backend,
                        &cols.access,
                        &cols.state,
                        &cols.participants,
                        &cols.started_at,
                        &cols.expires_at,
                    ],
                )
                .await?;
        }
        if full {
            tx.execute(
                "DELETE FROM termshare.live_shares WHERE host_id = $1 AND NOT (share_id = ANY($2))",
                &[&host_id, &keep],
            )
            .await?;
        } else if !gone.is_empty() {
            tx.execute(
                "DELETE FROM termshare.live_shares WHERE host_id = $1 AND share_id = ANY($2)",
                &[&host_id, &gone],
            )
            .await?;
        }
        tx.commit().await
    };
    bounded("writing the live shares", step, statements).await?;
    *synced = now;
    Ok(())
}
