//! Reaching the database: the libpq-style string as tokio-postgres takes it, TLS as
//! libpq's `sslmode` means it, and a connection whose notifications are delivered.
//!
//! tokio-postgres parses URIs and key=value strings itself, but knows only
//! `sslmode=disable|prefer|require` and no `sslrootcert`. The two TLS keys are taken
//! out here and given libpq's meaning (<https://www.postgresql.org/docs/current/libpq-ssl.html>):
//! `prefer` and `require` encrypt without checking the server's certificate,
//! `verify-ca` checks it against `sslrootcert` (or the system's roots), `verify-full`
//! also checks the host name. The rest of the string goes to tokio-postgres as is.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_postgres::config::SslMode;
use tokio_postgres::{AsyncMessage, Client, Connection, NoTls};

use super::tls;
use super::FleetError;

/// How long a connection attempt may take when the string sets no `connect_timeout`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Notifications held for the reader; past this, they are dropped and the reader's
/// periodic catch-up read finds their orders instead.
const NOTIFICATION_QUEUE: usize = 256;

/// The TLS a string asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TlsMode {
    /// `disable`: plain.
    Disable,
    /// `prefer` (libpq's default): TLS if the server offers it, unchecked.
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
        let (rest, mode, root) = take_tls_keys(database)?;
        let mut pg: tokio_postgres::Config = rest.parse().map_err(|e: tokio_postgres::Error| {
            FleetError::Config(format!("fleet.database: {e}"))
        })?;
        if pg.get_connect_timeout().is_none() {
            pg.connect_timeout(CONNECT_TIMEOUT);
        }
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

/// Take `sslmode` and `sslrootcert` out of a URI's query or a key=value string.
fn take_tls_keys(s: &str) -> Result<(String, TlsMode, Option<String>), FleetError> {
    let bad = |why: String| FleetError::Config(format!("fleet.database: {why}"));
    let mut mode = None;
    let mut root = None;
    let mut take = |key: &str, value: String| -> Result<bool, FleetError> {
        match key {
            "sslmode" => {
                mode = Some(match value.as_str() {
                    "disable" => TlsMode::Disable,
                    "allow" | "prefer" => TlsMode::Prefer,
                    "require" => TlsMode::Require,
                    "verify-ca" => TlsMode::VerifyCa,
                    "verify-full" => TlsMode::VerifyFull,
                    other => return Err(bad(format!("sslmode `{other}` is not one libpq knows"))),
                });
                Ok(true)
            }
            "sslrootcert" => {
                root = Some(value);
                Ok(true)
            }
            _ => Ok(false),
        }
    };
    let rest = if let Some((head, query)) = s
        .starts_with("postgres://")
        .then_some(())
        .or(s.starts_with("postgresql://").then_some(()))
        .and_then(|()| s.split_once('?'))
    {
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            if !take(k, percent_decode(v).map_err(|e| bad(e.into()))?)? {
                kept.push(pair);
            }
        }
        if kept.is_empty() {
            head.to_owned()
        } else {
            format!("{head}?{}", kept.join("&"))
        }
    } else if s.starts_with("postgres://") || s.starts_with("postgresql://") {
        s.to_owned()
    } else {
        let mut kept = Vec::new();
        for (k, v) in key_values(s).map_err(|e| bad(e.into()))? {
            if !take(&k, v.clone())? {
                kept.push(format!(
                    "{k}='{}'",
                    v.replace('\\', "\\\\").replace('\'', "\\'")
                ));
            }
        }
        kept.join(" ")
    };
    if root.is_some() && !matches!(mode, Some(TlsMode::VerifyCa | TlsMode::VerifyFull)) {
        // libpq reads sslrootcert only to verify; termshare says so instead of
        // letting an operator believe the server is checked.
        return Err(bad(
            "sslrootcert is given but sslmode is not verify-ca or verify-full: the certificate would not be checked".into(),
        ));
    }
    Ok((rest, mode.unwrap_or(TlsMode::Prefer), root))
}

/// libpq's key=value form: `key = value`, values optionally single-quoted with
/// backslash escapes.
fn key_values(s: &str) -> Result<Vec<(String, String)>, &'static str> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(out);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err("expected key=value pairs");
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    Some('\'') => break,
                    Some('\\') => value.push(chars.next().ok_or("unterminated quote")?),
                    Some(c) => value.push(c),
                    None => return Err("unterminated quote"),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.push(chars.next().ok_or("dangling backslash")?);
                } else {
                    value.push(c);
                }
            }
        }
        out.push((key, value));
    }
}

fn percent_decode(s: &str) -> Result<String, &'static str> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or("a bad %-escape")?;
            let hex = std::str::from_utf8(hex).map_err(|_| "a bad %-escape")?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| "a bad %-escape")?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "a %-escape that is not UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_keys_are_taken_from_both_forms_and_the_rest_is_kept() {
        let (rest, mode, root) = take_tls_keys(
            "postgresql://u@db.example/termshare?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&connect_timeout=3",
        )
        .unwrap();
        assert_eq!(
            rest,
            "postgresql://u@db.example/termshare?connect_timeout=3"
        );
        assert_eq!(mode, TlsMode::VerifyFull);
        assert_eq!(root.as_deref(), Some("/etc/ca.pem"));

        let (rest, mode, root) =
            take_tls_keys("host=/run/postgresql dbname = 'term share' sslmode=disable").unwrap();
        assert_eq!(rest, "host='/run/postgresql' dbname='term share'");
        assert_eq!(mode, TlsMode::Disable);
        assert_eq!(root, None);
        let parsed: tokio_postgres::Config = rest.parse().unwrap();
        assert_eq!(parsed.get_dbname(), Some("term share"));

        let (_, mode, _) = take_tls_keys("postgresql://u@/termshare?host=/run/postgresql").unwrap();
        assert_eq!(mode, TlsMode::Prefer, "libpq's default");
    }

    #[test]
    fn bad_strings_are_refused_without_repeating_them() {
        for bad in [
            "host=x sslmode=sometimes",
            "host=x password='secret",
            "host=x sslrootcert=/ca.pem",
            "postgresql://u:secret@h/db?sslmode=verify-full&sslrootcert=%zz",
            "password=secret nonsense",
        ] {
            let err = Target::parse(bad).unwrap_err().to_string();
            assert!(!err.contains("secret"), "{err}");
            assert!(err.starts_with("fleet.database"), "{err}");
        }
    }
}
