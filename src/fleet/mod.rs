//! The fleet: many hosts' termshare daemons sharing one PostgreSQL database for
//! what one host's file cannot answer (README "Fleet").
//!
//! - [`shipper`]: every audit event, copied from the local log (still the source of
//!   truth) in batches keyed by (host id, seq), resuming from the last shipped seq.
//! - [`agent`]: the host's lease, its live shares, and the revoke orders it carries
//!   out (LISTEN/NOTIFY, with a catch-up read on every reconnect).
//! - [`read`]: what `termshare fleet list|audit|revoke` asks of the database.
//! - [`connect`], [`libpq`], [`tls`]: the libpq-style string (and service files),
//!   TLS, and connections whose notifications are delivered; [`schema`]: the migrations.
//!
//! A database outage never blocks a local action: the audit writer only publishes how
//! far the file goes; the fleet tasks follow at their own pace and reconnect with
//! backoff.

mod agent;
mod connect;
mod libpq;
mod live;
mod orders;
pub mod read;
mod schema;
mod shipper;
mod status;
mod tls;

use thiserror::Error;

pub use agent::{FleetAgent, FleetHost};
pub use connect::Target;
pub use status::{FleetReport, FleetStatus};

/// What went wrong with the fleet database. Each names the step; none repeats the
/// connection string.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum FleetError {
    /// The database could not be reached, or a statement failed.
    #[error("fleet database: {0}")]
    Database(String),
    /// The database refused the role this (a grant is missing).
    #[error("fleet database refused: {0} (PostgreSQL grants decide this; README \"Fleet\")")]
    Permission(String),
    /// The fleet schema is not in the database.
    #[error("the fleet schema is not in the database ({0}); a daemon with [fleet] creates it, or apply migrations/0001_fleet.sql")]
    NoSchema(String),
    /// Another live daemon holds this host id's lease.
    #[error("host id `{host_id}` is held by another live daemon (pid {pid}); give each host its own [fleet] host_id")]
    HostIdInUse {
        /// The contested host id.
        host_id: String,
        /// The pid the database has for the other daemon.
        pid: i32,
    },
    /// The database has more of this host's events than its log: another log (a
    /// moved or reset one, or another host with the same id) shipped under this id.
    #[error("the database holds events of host `{host_id}` up to seq {shipped} but this log ends at seq {local}: another log ships as this host; give it its own [fleet] host_id")]
    LogMismatch {
        /// This host's id.
        host_id: String,
        /// The database's shipped seq.
        shipped: u64,
        /// The local log's last seq.
        local: u64,
    },
    /// Events under this host's (host id, seq) keys differ from the log's.
    #[error("the database holds other events than this log under host `{host_id}` (from seq {seq}): another log ships as this host; give it its own [fleet] host_id")]
    SeqConflict {
        /// This host's id.
        host_id: String,
        /// The first conflicting seq.
        seq: u64,
    },
    /// A command's input is not usable (nothing was sent).
    #[error("{0}")]
    Invalid(String),
    /// `[fleet] database` cannot be used as written (the message names the key,
    /// never the string's value).
    #[error("{0}")]
    Config(String),
}

impl FleetError {
    /// A tokio-postgres error, with what was being done.
    pub(crate) fn from_pg(doing: &str, e: &tokio_postgres::Error) -> Self {
        use tokio_postgres::error::SqlState;
        match e.as_db_error() {
            Some(db) if *db.code() == SqlState::INSUFFICIENT_PRIVILEGE => {
                FleetError::Permission(format!("{doing}: {}", db.message()))
            }
            Some(db)
                if *db.code() == SqlState::UNDEFINED_TABLE
                    || *db.code() == SqlState::INVALID_SCHEMA_NAME =>
            {
                FleetError::NoSchema(db.message().to_owned())
            }
            Some(db) => FleetError::Database(format!("{doing}: {}", db.message())),
            None => {
                // tokio-postgres's own text is the kind ("error performing TLS
                // handshake"); the why (an invalid certificate) is in its sources.
                let mut text = format!("{doing}: {e}");
                let mut source = std::error::Error::source(e);
                while let Some(cause) = source {
                    text.push_str(&format!(": {cause}"));
                    source = cause.source();
                }
                FleetError::Database(text)
            }
        }
    }
}

/// Run one database step within `limit`: a database that stops answering (stalled,
/// partitioned) costs a reconnect, never a stuck task.
pub(crate) async fn bounded<T>(
    doing: &str,
    limit: std::time::Duration,
    step: impl std::future::Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, FleetError> {
    match tokio::time::timeout(limit, step).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(FleetError::from_pg(doing, &e)),
        Err(_) => Err(FleetError::Database(format!(
            "{doing}: no answer within {}",
            humantime::format_duration(limit)
        ))),
    }
}
