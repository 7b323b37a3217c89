//! The host's row in `termshare.hosts`: taken (or kept) when the agent connects, as
//! long as no other live daemon holds the same host id, and renewed every third of
//! the lease while the connection holds. The database's clock decides, so hosts'
//! clocks need not agree.

use std::time::{Duration, SystemTime};

use tokio_postgres::Client;

use super::Agent;
use crate::fleet::{bounded, FleetError};

impl Agent {
    /// Take (or keep) this host id's lease, unless another live daemon holds it.
    pub(super) async fn register(&mut self, client: &Client) -> Result<(), FleetError> {
        let host_id = self.status.host_id().to_owned();
        let uptime = self.born.elapsed().as_secs_f64();
        let lease = self.lease.as_secs_f64();
        let pid = std::process::id() as i32;
        let row = bounded(
            "registering the host",
            self.step,
            client.query_opt(
                "INSERT INTO termshare.hosts AS h \
                   (host_id, instance, pid, version, started_at, renewed_at, lease_until, stopped_at) \
                 VALUES ($1, $2, $3, $4, now() - make_interval(secs => $5::float8), now(), \
                   now() + make_interval(secs => $6::float8), NULL) \
                 ON CONFLICT (host_id) DO UPDATE SET instance = EXCLUDED.instance, pid = EXCLUDED.pid, \
                   version = EXCLUDED.version, \
                   started_at = CASE WHEN h.instance = EXCLUDED.instance THEN h.started_at \
                                ELSE EXCLUDED.started_at END, \
                   renewed_at = now(), lease_until = EXCLUDED.lease_until, stopped_at = NULL \
                 WHERE h.instance IS NULL OR h.instance = EXCLUDED.instance \
                   OR h.stopped_at IS NOT NULL OR h.lease_until IS NULL OR h.lease_until < now() \
                 RETURNING started_at",
                &[
                    &host_id,
                    &self.instance,
                    &pid,
                    &env!("CARGO_PKG_VERSION"),
                    &uptime,
                    &lease,
                ],
            ),
        )
        .await?;
        match row {
            Some(row) => {
                self.started_db = Some(row.get(0));
                self.status.mark_registered();
                Ok(())
            }
            None => {
                let pid = bounded(
                    "registering the host",
                    self.step,
                    client.query_one(
                        "SELECT coalesce(pid, 0) FROM termshare.hosts WHERE host_id = $1",
                        &[&host_id],
                    ),
                )
                .await?
                .get(0);
                Err(FleetError::HostIdInUse { host_id, pid })
            }
        }
    }

    pub(super) async fn renew(&self, client: &Client) -> Result<(), FleetError> {
        let n = bounded(
            "renewing the lease",
            self.step,
            client.execute(
                "UPDATE termshare.hosts SET renewed_at = now(), \
                   lease_until = now() + make_interval(secs => $3::float8) \
                 WHERE host_id = $1 AND instance = $2",
                &[
                    &self.status.host_id(),
                    &self.instance,
                    &self.lease.as_secs_f64(),
                ],
            ),
        )
        .await?;
        if n == 0 {
            self.status.lease(false);
            return Err(FleetError::Database(
                "this host's lease was taken by another daemon with the same host id".into(),
            ));
        }
        self.status.lease(true);
        Ok(())
    }

    /// Orders from before this run began cannot name its shares. A second of slack
    /// covers the round trip the start was measured over.
    pub(super) fn since(&self) -> SystemTime {
        self.started_db.unwrap_or(SystemTime::UNIX_EPOCH) - Duration::from_secs(1)
    }
}
