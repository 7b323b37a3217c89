//! Reaching the database: a [`Target`] read once from the libpq-style string
//! ([`super::libpq`]), TLS as libpq's `sslmode` means it
//! (<https://www.postgresql.org/docs/current/libpq-ssl.html>): `prefer` and `require`
//! encrypt without checking the server's certificate, `verify-ca` checks it against
//! `sslrootcert` (or the system's roots), `verify-full` also checks the host name; as
//! in libpq, a Unix socket never uses TLS. And [`Db`]: a connection whose
//! notifications are delivered.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_postgres::config::SslMode;
use tokio_postgres::{AsyncMessage, Client, Connection, NoTls};

use super::FleetError;
use super::{libpq, tls};

/// How long a connection attempt may take when the string sets no `connect_timeout`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Notifications held for the reader; past this, they are dropped and the reader's
/// periodic catch-up read finds their orders instead.
const NOTIFICATION_QUEUE: usize = 256;

/// The TLS a string asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum TlsMode {
    /// `disable`: plain.
    Disable,
    /// `prefer` (libpq's default): TLS if the server offers it, unchecked.
    #[default]
    Prefer,
    /// `require`: TLS, the certificate unchecked (libpq's meaning).
    Require,
    /// `verify-ca`: TLS, the certificate chains to a trusted root.
    VerifyCa,
    /// `verify-full`: and names the host.
    VerifyFull,
}

/// Where and how to connect: parsed once, used for every (re)connection.
#[derive(Clone)]
pub struct Target {
    pg: tokio_postgres::Config,
    tls: Option<Arc<rustls::ClientConfig>>,
    mode: TlsMode,
    /// The string set its own `application_name` (then it is kept).
    named: bool,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("hosts", &self.pg.get_hosts())
            .field("dbname", &self.pg.get_dbname())
            .field("tls", &self.mode)
            .finish()
    }
}

impl Target {
    /// Parse a libpq URI or key=value string. The error never repeats the string (it
    /// may hold a password).
    pub fn parse(database: &str) -> Result<Self, FleetError> {
        let libpq::Parsed { mut pg, mode, root } = libpq::parse(database)?;
        if pg.get_connect_timeout().is_none() {
            pg.connect_timeout(CONNECT_TIMEOUT);
        }
        // libpq never uses TLS on a Unix socket (the server's peer check is the
        // protection there), whatever sslmode says; neither does termshare.
        let unix_only = !pg.get_hosts().is_empty()
            && pg.get_hostaddrs().is_empty()
            && pg
                .get_hosts()
                .iter()
                .all(|h| matches!(h, tokio_postgres::config::Host::Unix(_)));
        let mode = if unix_only { TlsMode::Disable } else { mode };
        let named = pg.get_application_name().is_some();
        if !named {
            pg.application_name("termshare");
        }
        pg.ssl_mode(match mode {
            TlsMode::Disable => SslMode::Disable,
            TlsMode::Prefer => SslMode::Prefer,
            _ => SslMode::Require,
        });
        let tls = match mode {
            TlsMode::Disable => None,
            _ => Some(Arc::new(tls::client_config(mode, root.as_deref())?)),
        };
        Ok(Target {
            pg,
            tls,
            mode,
            named,
        })
    }

    /// The same target, its connections named `name` in `pg_stat_activity` (so a
    /// DBA sees which host's shipper or agent a backend serves), unless the string
    /// names them itself.
    pub(crate) fn named(&self, name: &str) -> Target {
        let mut t = self.clone();
        if !t.named {
            t.pg.application_name(name);
        }
        t
    }

    /// Connect; the connection is driven by a task of its own (aborted when the
    /// returned [`Db`] is dropped), which hands notifications to [`Db::notices`].
    pub async fn connect(&self) -> Result<Db, FleetError> {
        let limit = self
            .pg
            .get_connect_timeout()
            .copied()
            .unwrap_or(CONNECT_TIMEOUT)
            + Duration::from_secs(1);
        let connected = async {
            match &self.tls {
                None => self.pg.connect(NoTls).await.map(drive),
                Some(config) => self
                    .pg
                    .connect(tokio_postgres_rustls::MakeRustlsConnect::new(
                        (**config).clone(),
                    ))
                    .await
                    .map(drive),
            }
        };
        match tokio::time::timeout(limit, connected).await {
            Ok(Ok(db)) => Ok(db),
            Ok(Err(e)) => Err(FleetError::from_pg("connecting", &e)),
            Err(_) => Err(FleetError::Database(format!(
                "connecting: no answer within {}",
                humantime::format_duration(limit)
            ))),
        }
    }
}

/// A connection: the client, and the (channel, payload) of its notifications.
pub struct Db {
    /// Queries go here.
    pub client: Client,
    /// `NOTIFY`s, in order; closed when the connection ends.
    pub notices: mpsc::Receiver<(String, String)>,
    /// The task driving the connection; aborted with it.
    pub(crate) driver: Driver,
}

/// Aborts the connection's task when dropped.
pub(crate) struct Driver(JoinHandle<()>);

impl Drop for Driver {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Run the connection in its own task, passing on notifications.
fn drive<S, T>((client, mut connection): (Client, Connection<S, T>)) -> Db
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (tx, notices) = mpsc::channel(NOTIFICATION_QUEUE);
    let driver = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(n)) => {
                    // Full: dropped; the periodic catch-up read covers it.
                    let _ = tx.try_send((n.channel().to_owned(), n.payload().to_owned()));
                }
                Ok(AsyncMessage::Notice(n)) => {
                    tracing::debug!(notice = %n.message(), "database notice");
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "database connection ended");
                    break;
                }
            }
        }
    });
    Db {
        client,
        notices,
        driver: Driver(driver),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_unix_socket_never_uses_tls_as_in_libpq() {
        let t = Target::parse("postgresql://u@/termshare?host=/run/postgresql").unwrap();
        assert_eq!(t.mode, TlsMode::Disable);
        let t = Target::parse("host=/run/postgresql dbname=t sslmode=require").unwrap();
        assert_eq!(t.mode, TlsMode::Disable);
        let t = Target::parse("host=db.example dbname=t sslrootcert=system").unwrap();
        assert_eq!(
            t.mode,
            TlsMode::VerifyFull,
            "the system's roots: verify-full"
        );
        let t = Target::parse("host=db.example dbname=t").unwrap();
        assert_eq!(t.mode, TlsMode::Prefer, "libpq's default");
    }

    #[test]
    fn bad_strings_are_refused_without_repeating_them() {
        for bad in [
            "host=x sslmode=sometimes",
            "host=x password='secret",
            "host=x sslrootcert=/ca.pem",
            "postgresql://u:secret@h/db?sslmode=verify-full&sslrootcert=%zz",
            "password=secret nonsense",
            "host=x password=secret service=no-such-service",
            "host=x password=secret sslmode=verify-ca",
            "host=x password=secret sslmode=verify-full",
            "host=x password=secret sslmode=verify-ca sslrootcert=system",
        ] {
            let err = Target::parse(bad).unwrap_err().to_string();
            assert!(!err.contains("secret"), "{err}");
            assert!(err.starts_with("fleet.database"), "{err}");
        }
    }
}
