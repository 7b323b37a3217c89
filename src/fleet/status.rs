//! How the fleet tasks are doing, for `termshare status` and the metrics.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::watch;

use crate::audit_file::Committed;

/// Shared by the shipper, the agent and whoever reports on them.
#[derive(Debug)]
pub struct FleetStatus {
    host_id: String,
    /// What the local log holds for good.
    committed: watch::Receiver<Committed>,
    /// Every event up to here is in the database.
    shipped_seq: AtomicU64,
    /// The shipper's last failure, cleared by its next success.
    shipper_error: Mutex<Option<String>>,
    /// The agent's last failure (lease, live view, orders), cleared likewise.
    agent_error: Mutex<Option<String>>,
    /// The agent holds the lease (its last renewal succeeded).
    lease_held: AtomicBool,
    /// This run has held the host id's lease at least once: its log may ship under
    /// the id (a daemon refused the id, e.g. a cloned machine id, never ships).
    registered: watch::Sender<bool>,
}

/// A snapshot of [`FleetStatus`], as `termshare status --json` prints it (`fleet`).
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct FleetReport {
    /// This host's id in the fleet.
    pub host_id: String,
    /// The local log's last seq.
    pub committed_seq: u64,
    /// The last seq shipped (every event up to it is in the database).
    pub shipped_seq: u64,
    /// Events written locally and not yet in the database.
    pub lag_events: u64,
    /// Whether this host's lease is held (the fleet sees it as reachable).
    pub lease_held: bool,
    /// The shipper's last error, while it lasts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shipper_error: Option<String>,
    /// The agent's last error, while it lasts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_error: Option<String>,
}

impl FleetStatus {
    pub(crate) fn new(host_id: String, committed: watch::Receiver<Committed>) -> Self {
        FleetStatus {
            host_id,
            committed,
            shipped_seq: AtomicU64::new(0),
            shipper_error: Mutex::new(None),
            agent_error: Mutex::new(None),
            lease_held: AtomicBool::new(false),
            registered: watch::Sender::new(false),
        }
    }

    /// The agent took the host id's lease.
    pub(crate) fn mark_registered(&self) {
        self.registered.send_replace(true);
    }

    /// Until the agent has taken the host id's lease once.
    pub(crate) async fn wait_registered(&self) {
        let mut registered = self.registered.subscribe();
        let _ = registered.wait_for(|r| *r).await;
    }

    /// Keep the lag gauge current while nothing ships (a database outage): on every
    /// commit of the log.
    pub(crate) async fn follow_lag(self: std::sync::Arc<Self>) {
        let mut commits = self.committed.clone();
        while commits.changed().await.is_ok() {
            let r = self.report();
            metrics::gauge!("termshare_fleet_ship_lag_events").set(r.lag_events as f64);
        }
    }

    /// Now.
    pub fn report(&self) -> FleetReport {
        let committed_seq = self.committed.borrow().last_seq;
        let shipped_seq = self.shipped_seq.load(Ordering::Relaxed);
        FleetReport {
            host_id: self.host_id.clone(),
            committed_seq,
            shipped_seq,
            lag_events: committed_seq.saturating_sub(shipped_seq),
            lease_held: self.lease_held.load(Ordering::Relaxed),
            shipper_error: self.shipper_error.lock().clone(),
            agent_error: self.agent_error.lock().clone(),
        }
    }

    pub(crate) fn host_id(&self) -> &str {
        &self.host_id
    }

    pub(crate) fn shipped(&self, seq: u64) {
        self.shipped_seq.store(seq, Ordering::Relaxed);
        let lag = self.committed.borrow().last_seq.saturating_sub(seq);
        metrics::gauge!("termshare_fleet_ship_lag_events").set(lag as f64);
        metrics::gauge!("termshare_fleet_shipped_seq").set(seq as f64);
    }

    pub(crate) fn shipper_failed(&self, error: Option<String>) {
        *self.shipper_error.lock() = error;
    }

    pub(crate) fn agent_failed(&self, error: Option<String>) {
        *self.agent_error.lock() = error;
    }

    pub(crate) fn lease(&self, held: bool) {
        self.lease_held.store(held, Ordering::Relaxed);
        metrics::gauge!("termshare_fleet_lease_held").set(if held { 1.0 } else { 0.0 });
    }
}
