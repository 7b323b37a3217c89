//! The fleet schema's migrations (`migrations/*.sql`, readable and appliable by a
//! DBA with psql), applied in order inside one transaction under an advisory lock.

use tokio_postgres::Client;

use super::FleetError;

/// Every migration, in order: (version, SQL).
const MIGRATIONS: &[(i32, &str)] = &[(1, include_str!("../../migrations/0001_fleet.sql"))];

/// The version this build needs.
const LATEST: i32 = 1;

/// Key of the advisory lock that serializes daemons migrating at once.
const LOCK: i64 = 0x7465_726d_7368_6172; // "termshar"

/// The schema's version, `None` if it is not there.
async fn version(
    client: &impl tokio_postgres::GenericClient,
) -> Result<Option<i32>, tokio_postgres::Error> {
    // Two statements: one naming a table that may not exist does not even plan.
    let there: bool = client
        .query_one(
            "SELECT to_regclass('termshare.schema_version') IS NOT NULL",
            &[],
        )
        .await?
        .get(0);
    if !there {
        return Ok(None);
    }
    client
        .query_one("SELECT max(version) FROM termshare.schema_version", &[])
        .await?
        .try_get(0)
}

/// Apply what is missing (a daemon does this at connect; a role without CREATE
/// needs a DBA to have applied the files).
pub(crate) async fn ensure(client: &mut Client) -> Result<(), FleetError> {
    let pg = |e: tokio_postgres::Error| FleetError::from_pg("migrating the fleet schema", &e);
    if version(client).await.map_err(pg)? >= Some(LATEST) {
        return Ok(());
    }
    let tx = client.transaction().await.map_err(pg)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK])
        .await
        .map_err(pg)?;
    // Another daemon may have applied them while this one waited for the lock.
    let current = version(&tx).await.map_err(pg)?.unwrap_or(0);
    let mut applied = false;
    for (v, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
        tx.batch_execute(sql).await.map_err(pg)?;
        tracing::info!(version = v, "applied fleet schema migration");
        applied = true;
    }
    tx.commit().await.map_err(pg)?;
    if applied && current == 0 {
        // The creator owns the tables: it may order fleet revokes and change the
        // ordering trigger. Separate duties need a DBA to apply the schema.
        let role: String = client
            .query_one("SELECT current_user::text", &[])
            .await
            .map_err(pg)?
            .get(0);
        tracing::warn!(
            role = %role,
            "this daemon's role created the fleet schema and owns it, so it may also order fleet revokes; for separate duties have a DBA apply migrations/0001_fleet.sql and grant as README \"Fleet\" shows"
        );
    }
    Ok(())
}

/// Readers only check: the schema is there, at a version this build knows.
pub(crate) async fn check(client: &Client) -> Result<(), FleetError> {
    match version(client)
        .await
        .map_err(|e| FleetError::from_pg("reading the fleet schema's version", &e))?
    {
        Some(v) if v >= LATEST => Ok(()),
        Some(v) => Err(FleetError::NoSchema(format!(
            "version {v}, this termshare needs {LATEST}"
        ))),
        None => Err(FleetError::NoSchema("no termshare.schema_version".into())),
    }
}
