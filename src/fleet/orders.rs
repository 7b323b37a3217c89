//! Fleet revoke orders as a daemon carries them out: an order read from the
//! database, its revokes through the normal path, and what is written back.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use termshare_actors::{Caller, FleetOrder, Identity, ShareError, ShareInfo};
use tokio_postgres::Client;
use uuid::Uuid;

use super::agent::FleetHost;
use super::{bounded, FleetError};

/// Orders remembered as carried out (the database's acks are the record; this only
/// keeps a notification and a catch-up read from running one order twice).
const REMEMBERED_ORDERS: usize = 4096;

/// A revoke order as a daemon reads it.
#[derive(Clone, Debug)]
pub(super) struct Order {
    pub(super) order_id: Uuid,
    pub(super) ordered_by: String,
    pub(super) principal: Option<String>,
    pub(super) host_id: Option<String>,
    pub(super) share_id: Option<Uuid>,
}

impl Order {
    pub(super) fn of(row: &tokio_postgres::Row) -> Self {
        Order {
            order_id: row.get(0),
            ordered_by: row.get(1),
            principal: row.get(2),
            host_id: row.get(3),
            share_id: row.get(4),
        }
    }

    fn matches(&self, host_id: &str, share: &ShareInfo) -> bool {
        self.host_id.as_deref().is_none_or(|h| h == host_id)
            && self
                .principal
                .as_deref()
                .is_none_or(|p| p == share.principal.as_str())
            && self
                .share_id
                .is_none_or(|id| id == Uuid::from(share.share_id))
    }
}

/// How an order's task ended.
pub(super) enum OrderDone {
    /// Carried out: write this.
    Carried(OrderResult),
    /// Could not be (the shares could not be listed): try again later.
    Retry(Uuid),
}

/// What a host did with an order.
pub(super) struct OrderResult {
    pub(super) order_id: Uuid,
    pub(super) outcomes: Vec<Outcome>,
}

pub(super) struct Outcome {
    share_id: Uuid,
    principal: String,
    outcome: &'static str,
    detail: Value,
}

/// Revoke every matching share at once, through the normal revoke path (each with
/// its deadline and its `share.revoked`, which names the order).
pub(super) async fn carry_out(
    host: Arc<dyn FleetHost>,
    host_id: String,
    order: Order,
) -> OrderDone {
    let shares = match host.live_shares().await {
        Ok(s) => s,
        Err(e) => {
            // Not "nothing matched": not acknowledged, tried again.
            tracing::warn!(error = %e, order = %order.order_id, "could not list shares for a revoke order; will retry");
            return OrderDone::Retry(order.order_id);
        }
    };
    let matched: Vec<ShareInfo> = shares
        .into_iter()
        .filter(|s| order.matches(&host_id, s))
        .collect();
    tracing::info!(order = %order.order_id, by = %order.ordered_by, shares = matched.len(), "carrying out a fleet revoke order");
    let revokes = matched.iter().map(|share| {
        let identity = Identity::fleet_order(
            FleetOrder {
                order_id: order.order_id,
                ordered_by: order.ordered_by.clone(),
            },
            &share.principal,
        );
        let caller = Caller::new(share.principal.clone(), identity);
        let host = host.clone();
        async move {
            let result = host.revoke(share.share_id, caller).await;
            let (outcome, detail) = match result {
                // The report as `termshare revoke --json` prints it.
                Ok(report) => ("revoked", crate::protocol::report_json(&report)),
                Err(ShareError::RevokeDeadlineMissed(report)) => {
                    ("revoked", crate::protocol::report_json(&report))
                }
                Err(
                    e @ (ShareError::NotFound(_)
                    | ShareError::ShareEnded(..)
                    | ShareError::ShareEnding(_)),
                ) => ("already_ended", json!({"error": e.to_string()})),
                Err(e) => ("failed", json!({"error": e.to_string()})),
            };
            Outcome {
                share_id: share.share_id.into(),
                principal: share.principal.to_string(),
                outcome,
                detail,
            }
        }
    });
    let outcomes = futures_util::future::join_all(revokes).await;
    OrderDone::Carried(OrderResult {
        order_id: order.order_id,
        outcomes,
    })
}

/// The outcomes, then the ack (the ordering command waits for acks), in one
/// transaction.
pub(super) async fn write_result(
    client: &mut Client,
    host_id: &str,
    result: &OrderResult,
    step: Duration,
) -> Result<(), FleetError> {
    let statements = async {
        let tx = client.transaction().await?;
        for o in &result.outcomes {
            tx.execute(
                "INSERT INTO termshare.revoke_outcomes (order_id, host_id, share_id, principal, outcome, detail) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
                &[&result.order_id, &host_id, &o.share_id, &o.principal, &o.outcome, &o.detail],
            )
            .await?;
        }
        tx.execute(
            "INSERT INTO termshare.revoke_acks (order_id, host_id, matched) VALUES ($1, $2, $3) \
             ON CONFLICT DO NOTHING",
            &[&result.order_id, &host_id, &(result.outcomes.len() as i32)],
        )
        .await?;
        tx.commit().await
    };
    bounded("recording a revoke order's outcome", step, statements).await
}

/// A bounded set of order ids, oldest forgotten first.
#[derive(Default)]
pub(super) struct Remembered {
    set: HashSet<Uuid>,
    order: VecDeque<Uuid>,
}

impl Remembered {
    pub(super) fn contains(&self, id: &Uuid) -> bool {
        self.set.contains(id)
    }

    pub(super) fn forget(&mut self, id: &Uuid) {
        if self.set.remove(id) {
            self.order.retain(|o| o != id);
        }
    }

    /// False if it was there already.
    pub(super) fn insert(&mut self, id: Uuid) -> bool {
        if !self.set.insert(id) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > REMEMBERED_ORDERS {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        true
    }
}
