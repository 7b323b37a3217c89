//! The host in the fleet: its lease, its live shares, and the revoke orders it
//! carries out; and [`FleetAgent`], which runs this and the audit shipper beside a
//! daemon.
//!
//! One connection does it all, so what the fleet sees of a host is what one
//! connection could tell: while it holds, the lease is renewed every third of its
//! length; the live view is rewritten on every lifecycle change (the badge board's
//! wake-up); orders arrive by `LISTEN termshare_revoke_orders`. After any failure it
//! reconnects with backoff, re-registers, writes what it could not, LISTENs again and
//! then reads every order it has not acknowledged (so an order made while it was away
//! is carried out on its return), and rewrites its live shares from scratch.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use termshare_actors::{Badges, Caller, RevokeReport, ShareError, ShareId, ShareInfo};
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio_postgres::Client;
use uuid::Uuid;

use super::connect::{Db, Target};
use super::live::LiveRow;
use super::orders::{carry_out, write_result, Order, OrderDone, OrderResult, Remembered};
use super::shipper::Shipper;
use super::status::FleetStatus;
use super::{bounded, schema, FleetError};
use crate::audit_file::LogTail;
use crate::config::FleetSettings;

mod lease;

/// What the agent needs of the host's termshare (the daemon gives it its own).
#[async_trait]
pub trait FleetHost: Send + Sync + 'static {
    /// The live shares now.
    async fn live_shares(&self) -> Result<Vec<ShareInfo>, ShareError>;
    /// Revoke through the normal path (deadline, audit).
    async fn revoke(&self, share: ShareId, caller: Caller) -> Result<RevokeReport, ShareError>;
    /// Wakes on every lifecycle change.
    fn changes(&self) -> watch::Receiver<Badges>;
}

/// The channel daemons LISTEN on for new orders.
pub(crate) const ORDERS_CHANNEL: &str = "termshare_revoke_orders";
/// A statement that takes longer than this costs a reconnect.
const STEP: Duration = Duration::from_secs(10);
/// Backoff between reconnects: from the first to the last.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));
/// Orders carried out at once; more wait for the next catch-up read.
const MAX_RUNNING_ORDERS: usize = 64;
/// Order results not yet written (the database went away mid-order), kept to write
/// on reconnect.
const UNWRITTEN_RESULTS: usize = 1024;

/// The fleet tasks beside a daemon: the shipper and the agent.
pub struct FleetAgent {
    status: Arc<FleetStatus>,
    target: Target,
    instance: Uuid,
    stop_agent: watch::Sender<bool>,
    agent: Option<JoinHandle<()>>,
    shipper: JoinHandle<()>,
    /// Keeps the lag gauge current.
    lag: JoinHandle<()>,
}

impl FleetAgent {
    /// Start shipping `tail` and keeping this host in the fleet. Returns at once: the
    /// database is reached in the background (an unreachable one is retried, and
    /// reported by [`FleetAgent::status`]).
    pub fn start(
        settings: &FleetSettings,
        tail: LogTail,
        host: Arc<dyn FleetHost>,
    ) -> Result<Self, FleetError> {
        let target = Target::parse(&settings.database)?;
        let status = Arc::new(FleetStatus::new(settings.host_id.clone(), tail.commits()));
        let instance = Uuid::now_v7();
        let shipper = tokio::spawn(
            Shipper {
                target: target.named(&format!("termshare shipper {}", settings.host_id)),
                tail,
                status: status.clone(),
            }
            .run(),
        );
        let (stop_agent, stopped) = watch::channel(false);
        let agent = Agent {
            target: target.named(&format!("termshare agent {}", settings.host_id)),
            lease: settings.lease,
            host,
            status: status.clone(),
            instance,
            born: Instant::now(),
            started_db: None,
            synced: HashMap::new(),
            done: Remembered::default(),
            orders: JoinSet::new(),
            unwritten: VecDeque::new(),
            step: (settings.lease / 3).clamp(Duration::from_millis(300), STEP),
        };
        let lag = tokio::spawn(status.clone().follow_lag());
        Ok(FleetAgent {
            lag,
            status,
            target,
            instance,
            stop_agent,
            agent: Some(tokio::spawn(agent.run(stopped))),
            shipper,
        })
    }

    /// How shipping and the lease are doing.
    pub fn status(&self) -> &Arc<FleetStatus> {
        &self.status
    }

    /// Stop the agent (lease, live view, orders) and let go of the host. Shipping
    /// goes on. Call before stopping the service.
    pub async fn detach(&mut self) {
        let _ = self.stop_agent.send(true);
        if let Some(agent) = self.agent.take() {
            if tokio::time::timeout(STEP, agent).await.is_err() {
                tracing::warn!("the fleet agent did not stop in time");
            }
        }
    }

    /// After the service has stopped: ship what the log committed last, then mark
    /// the host stopped and clear its live shares, all within `within`.
    pub async fn finish(mut self, within: Duration) {
        self.detach().await;
        let deadline = tokio::time::Instant::now() + within;
        let shipper = &mut self.shipper;
        if tokio::time::timeout_at(deadline, &mut *shipper)
            .await
            .is_err()
        {
            shipper.abort();
            let r = self.status.report();
            tracing::warn!(
                lag_events = r.lag_events,
                "stopping before every audit event was shipped; the next start ships the rest"
            );
        }
        let host_id = self.status.host_id().to_owned();
        let instance = self.instance;
        let signed_off = async {
            let mut db = self.target.connect().await?;
            let statements = async {
                let tx = db.client.transaction().await?;
                tx.execute(
                    "UPDATE termshare.hosts SET stopped_at = now(), lease_until = now() \
                     WHERE host_id = $1 AND instance = $2",
                    &[&host_id, &instance],
                )
                .await?;
                // Only while the host id is still this run's: never another daemon's
                // shares.
                tx.execute(
                    "DELETE FROM termshare.live_shares WHERE host_id = $1 AND EXISTS \
                     (SELECT 1 FROM termshare.hosts WHERE host_id = $1 AND instance = $2)",
                    &[&host_id, &instance],
                )
                .await?;
                tx.commit().await
            };
            bounded("signing off", STEP, statements).await
        };
        match tokio::time::timeout_at(deadline + Duration::from_secs(1), signed_off).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "could not mark this host stopped in the fleet")
            }
            Err(_) => tracing::warn!("could not mark this host stopped in the fleet in time"),
        }
    }
}

impl Drop for FleetAgent {
    fn drop(&mut self) {
        if let Some(agent) = &self.agent {
            agent.abort();
        }
        self.shipper.abort();
        self.lag.abort();
    }
}

/// The agent's state across connections.
struct Agent {
    target: Target,
    lease: Duration,
    host: Arc<dyn FleetHost>,
    status: Arc<FleetStatus>,
    /// This daemon run, in `hosts.instance`.
    instance: Uuid,
    /// When this run began (orders from before it cannot name its shares).
    born: Instant,
    /// The same moment on the database's clock, once registered.
    started_db: Option<SystemTime>,
    /// The live rows as last written.
    synced: HashMap<ShareId, LiveRow>,
    /// Orders carried out (or being carried out) by this run.
    done: Remembered,
    /// The orders being carried out, each a task (aborted with the agent, so none
    /// holds the service past a stop).
    orders: JoinSet<()>,
    /// Results the database did not take yet.
    unwritten: VecDeque<OrderResult>,
    /// One statement's limit: within a third of the lease, so a slow database costs
    /// a reconnect before the lease lapses.
    step: Duration,
}

impl Agent {
    async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let (done_tx, mut done_rx) = mpsc::channel(MAX_RUNNING_ORDERS);
        let mut backoff = BACKOFF.0;
        loop {
            let began = Instant::now();
            let result = tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                r = self.connected(&done_tx, &mut done_rx) => r,
            };
            self.status.lease(false);
            if let Err(e) = result {
                tracing::warn!(error = %e, retry_in = ?backoff, "fleet agent reconnecting");
                self.status.agent_failed(Some(e.to_string()));
            }
            if began.elapsed() > self.lease {
                backoff = BACKOFF.0;
            }
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(BACKOFF.1);
        }
    }

    /// One connection's life. Orders run as tasks of their own (`self.orders`), which
    /// outlive a connection: what they did is written once one is back.
    async fn connected(
        &mut self,
        done_tx: &mpsc::Sender<OrderDone>,
        done_rx: &mut mpsc::Receiver<OrderDone>,
    ) -> Result<(), FleetError> {
        let Db {
            mut client,
            mut notices,
            driver: _driver,
        } = self.target.connect().await?;
        schema::ensure(&mut client).await?;
        self.register(&client).await?;
        self.status.lease(true);
        bounded(
            "listening for revoke orders",
            self.step,
            client.batch_execute(&format!("LISTEN {ORDERS_CHANNEL}")),
        )
        .await?;
        while let Some(result) = self.unwritten.front() {
            write_result(&mut client, self.status.host_id(), result, self.step).await?;
            self.unwritten.pop_front();
        }
        // Watch for changes before the full sync reads the shares: a change during
        // the sync wakes the loop below instead of falling between the two.
        let mut changes = self.host.changes();
        changes.borrow_and_update();
        self.synced.clear();
        self.sync_live(&mut client, true).await?;
        self.status.agent_failed(None);

        let mut renew = tokio::time::interval(self.lease / 3);
        let mut catch_up = tokio::time::interval(self.lease);
        // After a slow step, the next tick comes a period later, not in a burst.
        renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        catch_up.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        renew.tick().await;
        loop {
            tokio::select! {
                _ = renew.tick() => self.renew(&client).await?,
                // The first tick is at once: the catch-up read after (re)connecting,
                // after LISTEN, so nothing falls between them.
                _ = catch_up.tick() => {
                    for order in self.unacked(&client, None).await? {
                        if !self.start_order(order, done_tx) {
                            break; // at the bound: the next catch-up read takes the rest
                        }
                    }
                }
                changed = changes.changed() => {
                    if changed.is_err() {
                        return Ok(());
                    }
                    self.sync_live(&mut client, false).await?;
                }
                notice = notices.recv() => {
                    let Some((_channel, payload)) = notice else {
                        return Err(FleetError::Database("the connection closed".into()));
                    };
                    let Ok(order_id) = payload.parse::<Uuid>() else { continue };
                    if self.done.contains(&order_id) {
                        continue;
                    }
                    for order in self.unacked(&client, Some(order_id)).await? {
                        self.start_order(order, done_tx);
                    }
                }
                Some(done) = done_rx.recv() => match done {
                    OrderDone::Carried(result) => {
                        if let Err(e) = write_result(&mut client, self.status.host_id(), &result, self.step).await {
                            if self.unwritten.len() >= UNWRITTEN_RESULTS {
                                self.unwritten.pop_front();
                            }
                            self.unwritten.push_back(result);
                            return Err(e);
                        }
                        // The order's shares have ended: the view shows it now.
                        self.sync_live(&mut client, false).await?;
                    }
                    // Not carried out (the shares could not be listed): unacknowledged,
                    // so the next catch-up read tries again.
                    OrderDone::Retry(order_id) => self.done.forget(&order_id),
                }
            }
        }
    }

    /// Carry `order` out on a task of its own, unless it is already being (or has
    /// been) or the bound is reached (false: the catch-up read brings it back).
    fn start_order(&mut self, order: Order, done_tx: &mpsc::Sender<OrderDone>) -> bool {
        while self.orders.try_join_next().is_some() {}
        if self.orders.len() >= MAX_RUNNING_ORDERS {
            return false;
        }
        if self.done.insert(order.order_id) {
            let (host, host_id, tx) = (
                self.host.clone(),
                self.status.host_id().to_owned(),
                done_tx.clone(),
            );
            self.orders.spawn(async move {
                let done = carry_out(host, host_id, order).await;
                let _ = tx.send(done).await;
            });
        }
        true
    }

    /// Rewrite the live view ([`super::live::sync`]).
    async fn sync_live(&mut self, client: &mut Client, full: bool) -> Result<(), FleetError> {
        let host_id = self.status.host_id().to_owned();
        super::live::sync(
            client,
            &*self.host,
            &host_id,
            &mut self.synced,
            full,
            self.step,
        )
        .await
    }

    /// Orders this run has not acknowledged, oldest first (`only`: that one, if so).
    async fn unacked(&self, client: &Client, only: Option<Uuid>) -> Result<Vec<Order>, FleetError> {
        let rows = bounded(
            "reading revoke orders",
            self.step,
            client.query(
                "SELECT o.order_id, o.ordered_by, o.principal, o.host_id, o.share_id \
                 FROM termshare.revoke_orders o \
                 WHERE ($3::uuid IS NULL OR o.order_id = $3) AND o.ordered_at >= $2 \
                   AND NOT EXISTS (SELECT 1 FROM termshare.revoke_acks a \
                     WHERE a.order_id = o.order_id AND a.host_id = $1) \
                 ORDER BY o.ordered_at LIMIT 1000",
                &[&self.status.host_id(), &self.since(), &only],
            ),
        )
        .await?;
        Ok(rows.iter().map(Order::of).collect())
    }
}
