//! libpq's connection strings, as far as tokio-postgres does not read them: the two
//! TLS keys (`sslmode` with libpq's five values, `sslrootcert`) and `service`
//! (a section of a service file: `$PGSERVICEFILE` or `~/.pg_service.conf`, then
//! `$PGSYSCONFDIR/pg_service.conf` or Debian's `/etc/postgresql-common/pg_service.conf`),
//! whose keys fill in what the string leaves out, as in libpq
//! (<https://www.postgresql.org/docs/current/libpq-pgservice.html>). The rest goes
//! to tokio-postgres as written.

use std::path::PathBuf;

use super::connect::TlsMode;
use super::FleetError;

/// A string, read.
pub(crate) struct Parsed {
    /// What tokio-postgres takes.
    pub(crate) pg: tokio_postgres::Config,
    /// `sslmode` (default `prefer`).
    pub(crate) mode: TlsMode,
    /// `sslrootcert`.
    pub(crate) root: Option<String>,
}

fn bad(why: impl std::fmt::Display) -> FleetError {
    FleetError::Config(format!("fleet.database: {why}"))
}

/// Read a libpq URI or key=value string. Errors name keys, never values.
pub(crate) fn parse(database: &str) -> Result<Parsed, FleetError> {
    let Split {
        rest,
        mut mode,
        mut root,
        service,
    } = split(database)?;
    let mut pg: tokio_postgres::Config = rest.parse().map_err(|e: tokio_postgres::Error| bad(e))?;
    if let Some(name) = service {
        for (key, value) in service_params(&name)? {
            fill(&mut pg, &mut mode, &mut root, &name, &key, &value)?;
        }
    }
    // `sslrootcert=system` (the system's roots) means verify-full, as in libpq: any
    // public CA's certificate for another name must not pass.
    if root.as_deref() == Some("system") {
        match mode {
            None | Some(TlsMode::VerifyFull) => mode = Some(TlsMode::VerifyFull),
            Some(_) => {
                return Err(bad(
                    "sslrootcert=system needs sslmode=verify-full (as in libpq)",
                ))
            }
        }
    }
    match (&root, mode) {
        (Some(_), Some(TlsMode::VerifyCa | TlsMode::VerifyFull)) => {}
        // libpq reads sslrootcert only to verify; say so rather than let an
        // operator believe the server is checked.
        (Some(_), _) => {
            return Err(bad(
                "sslrootcert is given but sslmode is not verify-ca or verify-full: the certificate would not be checked",
            ))
        }
        // libpq needs a root file to verify against; so does termshare.
        (None, Some(TlsMode::VerifyCa | TlsMode::VerifyFull)) => {
            return Err(bad(
                "sslmode verify-ca and verify-full need sslrootcert: a CA file, or `system` for the system's roots (verify-full)",
            ))
        }
        (None, _) => {}
    }
    Ok(Parsed {
        pg,
        mode: mode.unwrap_or_default(),
        root,
    })
}

/// A service's key, where the string left it out.
fn fill(
    pg: &mut tokio_postgres::Config,
    mode: &mut Option<TlsMode>,
    root: &mut Option<String>,
    service: &str,
    key: &str,
    value: &str,
) -> Result<(), FleetError> {
    let invalid = || bad(format!("service `{service}`: `{key}` is not valid"));
    match key {
        "host" if pg.get_hosts().is_empty() => {
            for h in value.split(',') {
                pg.host(h);
            }
        }
        "hostaddr" if pg.get_hostaddrs().is_empty() => {
            for a in value.split(',') {
                pg.hostaddr(a.parse().map_err(|_| invalid())?);
            }
        }
        "port" if pg.get_ports().is_empty() => {
            for p in value.split(',') {
                pg.port(p.parse().map_err(|_| invalid())?);
            }
        }
        "user" if pg.get_user().is_none() => {
            pg.user(value);
        }
        "password" if pg.get_password().is_none() => {
            pg.password(value);
        }
        "dbname" if pg.get_dbname().is_none() => {
            pg.dbname(value);
        }
        "application_name" if pg.get_application_name().is_none() => {
            pg.application_name(value);
        }
        "options" if pg.get_options().is_none() => {
            pg.options(value);
        }
        "connect_timeout" if pg.get_connect_timeout().is_none() => {
            let secs: u64 = value.parse().map_err(|_| invalid())?;
            if secs > 0 {
                pg.connect_timeout(std::time::Duration::from_secs(secs));
            }
        }
        "sslmode" if mode.is_none() => *mode = Some(tls_mode(value)?),
        "sslrootcert" if root.is_none() => *root = Some(value.to_owned()),
        "host" | "hostaddr" | "port" | "user" | "password" | "dbname" | "application_name"
        | "options" | "connect_timeout" | "sslmode" | "sslrootcert" => {}
        other => {
            return Err(bad(format!(
                "service `{service}`: `{other}` is not a key termshare reads"
            )))
        }
    }
    Ok(())
}

fn tls_mode(value: &str) -> Result<TlsMode, FleetError> {
    Ok(match value {
        "disable" => TlsMode::Disable,
        "allow" | "prefer" => TlsMode::Prefer,
        "require" => TlsMode::Require,
        "verify-ca" => TlsMode::VerifyCa,
        "verify-full" => TlsMode::VerifyFull,
        other => return Err(bad(format!("sslmode `{other}` is not one libpq knows"))),
    })
}

/// The string without the keys tokio-postgres does not read, and those keys.
struct Split {
    rest: String,
    mode: Option<TlsMode>,
    root: Option<String>,
    service: Option<String>,
}

/// Take `sslmode`, `sslrootcert` and `service` out of a URI's query or a key=value
/// string.
fn split(s: &str) -> Result<Split, FleetError> {
    let mut mode = None;
    let mut root = None;
    let mut service = None;
    let mut take = |key: &str, value: String| -> Result<bool, FleetError> {
        match key {
            "sslmode" => mode = Some(tls_mode(&value)?),
            "sslrootcert" => root = Some(value),
            "service" => service = Some(value),
            _ => return Ok(false),
        }
        Ok(true)
    };
    let uri = s.starts_with("postgres://") || s.starts_with("postgresql://");
    let rest = match s.split_once('?') {
        Some((head, query)) if uri => {
            let mut kept = Vec::new();
            for pair in query.split('&').filter(|p| !p.is_empty()) {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                if !take(k, percent_decode(v).map_err(bad)?)? {
                    kept.push(pair);
                }
            }
            if kept.is_empty() {
                head.to_owned()
            } else {
                format!("{head}?{}", kept.join("&"))
            }
        }
        _ if uri => s.to_owned(),
        _ => {
            let mut kept = Vec::new();
            for (k, v) in key_values(s).map_err(bad)? {
                if !take(&k, v.clone())? {
                    kept.push(format!(
                        "{k}='{}'",
                        v.replace('\\', "\\\\").replace('\'', "\\'")
                    ));
                }
            }
            kept.join(" ")
        }
    };
    Ok(Split {
        rest,
        mode,
        root,
        service,
    })
}

/// The service files libpq reads, in its order.
fn service_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    match std::env::var_os("PGSERVICEFILE") {
        Some(f) => files.push(PathBuf::from(f)),
        None => {
            if let Some(home) = std::env::var_os("HOME") {
                files.push(PathBuf::from(home).join(".pg_service.conf"));
            }
        }
    }
    let sysconf = std::env::var_os("PGSYSCONFDIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/etc/postgresql-common"));
    files.push(sysconf.join("pg_service.conf"));
    files
}

/// The keys of service `name`, from the first file that has it.
fn service_params(name: &str) -> Result<Vec<(String, String)>, FleetError> {
    let files = service_files();
    for file in &files {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        if let Some(params) = section(&text, name) {
            return Ok(params);
        }
    }
    let looked: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    Err(bad(format!(
        "service `{name}` is in none of {}",
        looked.join(", ")
    )))
}

/// A section of an INI-style service file: `[name]`, then `key=value` lines.
fn section(text: &str, name: &str) -> Option<Vec<(String, String)>> {
    let mut params = None;
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(header) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            if params.is_some() {
                break;
            }
            if header.trim() == name {
                params = Some(Vec::new());
            }
            continue;
        }
        if let (Some(params), Some((k, v))) = (params.as_mut(), line.split_once('=')) {
            params.push((k.trim().to_owned(), v.trim().to_owned()));
        }
    }
    params
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
        let s = split(
            "postgresql://u@db.example/termshare?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&connect_timeout=3",
        )
        .unwrap();
        assert_eq!(
            s.rest,
            "postgresql://u@db.example/termshare?connect_timeout=3"
        );
        assert_eq!(s.mode, Some(TlsMode::VerifyFull));
        assert_eq!(s.root.as_deref(), Some("/etc/ca.pem"));

        let s = split("host=/run/postgresql dbname = 'term share' sslmode=disable").unwrap();
        assert_eq!(s.rest, "host='/run/postgresql' dbname='term share'");
        assert_eq!(s.mode, Some(TlsMode::Disable));
        let parsed: tokio_postgres::Config = s.rest.parse().unwrap();
        assert_eq!(parsed.get_dbname(), Some("term share"));
    }

    #[test]
    fn a_service_fills_in_what_the_string_leaves_out() {
        let text = "# fleet\n[other]\nhost=wrong\n\n[fleet]\nhost = /run/postgresql\nport=5433\ndbname=termshare\nuser=svc\nsslmode=disable\n[after]\nuser=wrong\n";
        let params = section(text, "fleet").unwrap();
        assert_eq!(params.len(), 5);
        assert!(section(text, "missing").is_none());
        let (mut pg, mut mode, mut root) = (
            "user=me".parse::<tokio_postgres::Config>().unwrap(),
            None,
            None,
        );
        for (k, v) in &params {
            fill(&mut pg, &mut mode, &mut root, "fleet", k, v).unwrap();
        }
        assert_eq!(pg.get_user(), Some("me"), "the string's own key wins");
        assert_eq!(pg.get_dbname(), Some("termshare"));
        assert_eq!(pg.get_ports(), [5433]);
        assert_eq!(mode, Some(TlsMode::Disable));
        let err = fill(&mut pg, &mut mode, &mut root, "fleet", "krbsrvname", "x").unwrap_err();
        assert!(err.to_string().contains("krbsrvname"), "{err}");
    }
}
