//! A private PostgreSQL cluster for a test: Debian's `postgresql` binaries, a
//! cluster made with `initdb` in a temp directory, run by `pg_ctl` as a non-root
//! user (`nobody` when the tests run as root: PostgreSQL refuses root), listening
//! only on a Unix socket in that directory. Stopped (`-m immediate`) and removed
//! when the guard drops, also when the test fails.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The user a root test runs the cluster as.
const NOBODY: u32 = 65534;
/// The port in the socket's name (the socket directory is private, so any will do).
const PORT: u16 = 5432;
/// The cluster's superuser.
pub const SUPERUSER: &str = "termshare";

/// A running private cluster.
pub struct Postgres {
    dir: tempfile::TempDir,
    bindir: PathBuf,
    /// `Some(uid)` when the cluster runs as another user than the test.
    run_as: Option<u32>,
    /// With TLS: the loopback TCP port it also listens on (TLS only there).
    tls_port: Option<u16>,
}

/// The certificates of a cluster started with [`Postgres::start_tls`].
pub struct TlsFiles {
    /// The CA that signed the server's certificate (for `sslrootcert`).
    pub ca: PathBuf,
    /// Another CA, which signed nothing the server has.
    pub other_ca: PathBuf,
    /// The TCP port (on 127.0.0.1; the certificate names only `localhost`).
    pub port: u16,
}

impl Postgres {
    /// initdb and start a cluster; panics with what to install if the binaries are
    /// not there (a missing database is a failure, never a skip).
    pub fn start() -> Postgres {
        let pg = Postgres::init(None);
        pg.start_again();
        pg
    }

    /// A cluster that also listens on a loopback TCP port, TLS only there (a
    /// certificate for `localhost` from a test CA; `hostnossl` connections are
    /// rejected). Needs the `openssl` program.
    pub fn start_tls() -> (Postgres, TlsFiles) {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let pg = Postgres::init(Some(port));
        let dir = pg.dir.path();
        let ssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .output()
                .expect("openssl (apt-get install openssl)");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        for ca in ["ca", "other-ca"] {
            ssl(&[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                &format!("/CN=termshare test {ca}"),
                "-keyout",
                &format!("{ca}.key"),
                "-out",
                &format!("{ca}.crt"),
            ]);
        }
        std::fs::write(dir.join("san.ext"), "subjectAltName=DNS:localhost\n").unwrap();
        ssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ]);
        ssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "san.ext",
            "-out",
            "server.crt",
        ]);
        let key = dir.join("server.key");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        if let Some(uid) = pg.run_as {
            std::os::unix::fs::chown(&key, Some(uid), Some(uid)).unwrap();
        }
        std::fs::write(
            pg.data_dir().join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostnossl all all 127.0.0.1/32 reject\n",
        )
        .unwrap();
        pg.start_again();
        let files = TlsFiles {
            ca: dir.join("ca.crt"),
            other_ca: dir.join("other-ca.crt"),
            port,
        };
        (pg, files)
    }

    fn init(tls_port: Option<u16>) -> Postgres {
        let bindir = bindir();
        let dir = tempfile::Builder::new()
            .prefix("termshare-pg.")
            .tempdir()
            .unwrap();
        let run_as = nix::unistd::geteuid().is_root().then_some(NOBODY);
        if let Some(uid) = run_as {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(uid)).unwrap();
        }
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let pg = Postgres {
            dir,
            bindir,
            run_as,
            tls_port,
        };
        let data = pg.data_dir();
        let out = pg.run(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                SUPERUSER,
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
            ],
        );
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        pg
    }

    /// `pg_ctl start`, waiting until it accepts connections.
    pub fn start_again(&self) {
        let listen = match self.tls_port {
            None => format!("-c listen_addresses='' -p {PORT}"),
            Some(port) => format!(
                "-c listen_addresses=127.0.0.1 -p {port} -c ssl=on -c ssl_cert_file={dir}/server.crt -c ssl_key_file={dir}/server.key",
                dir = self.dir.path().display()
            ),
        };
        let options = format!(
            "-k {} {listen} -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200",
            self.socket_dir().display()
        );
        let log = self.dir.path().join("postgres.log");
        let out = self.run(
            "pg_ctl",
            &[
                "-D",
                self.data_dir().to_str().unwrap(),
                "-l",
                log.to_str().unwrap(),
                "-o",
                &options,
                "-w",
                "-t",
                "30",
                "start",
            ],
        );
        assert!(
            out.status.success(),
            "pg_ctl start: {}{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// `pg_ctl stop -m fast`: every connection is cut, as in an outage.
    pub fn stop(&self) {
        let out = self.run(
            "pg_ctl",
            &[
                "-D",
                self.data_dir().to_str().unwrap(),
                "-m",
                "fast",
                "-w",
                "stop",
            ],
        );
        assert!(
            out.status.success(),
            "pg_ctl stop: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A libpq key=value string for `dbname` as the superuser.
    pub fn url(&self, dbname: &str) -> String {
        self.url_as(dbname, SUPERUSER)
    }

    /// The same, as `user`.
    pub fn url_as(&self, dbname: &str, user: &str) -> String {
        format!(
            "host={} port={} user={user} dbname={dbname} sslmode=disable",
            self.socket_dir().display(),
            self.port()
        )
    }

    /// Make a database (each test its own).
    pub fn create_database(&self, name: &str) {
        self.psql("postgres", &format!("CREATE DATABASE \"{name}\""));
    }

    /// Run SQL as the superuser; its output, unaligned, tuples only. Panics on error.
    pub fn psql(&self, dbname: &str, sql: &str) -> String {
        let out = Command::new(self.bindir.join("psql"))
            .args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                self.socket_dir().to_str().unwrap(),
                "-p",
                &self.port().to_string(),
                "-U",
                SUPERUSER,
                "-d",
                dbname,
                "-c",
                sql,
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// The port in the socket's name (the TCP port too, with TLS).
    fn port(&self) -> u16 {
        self.tls_port.unwrap_or(PORT)
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn socket_dir(&self) -> &Path {
        self.dir.path()
    }

    /// A PostgreSQL program, as the cluster's user.
    fn run(&self, program: &str, args: &[&str]) -> Output {
        let mut c = Command::new(self.bindir.join(program));
        c.args(args)
            .current_dir(self.dir.path())
            .env("HOME", self.dir.path())
            .env("LC_ALL", "C");
        if let Some(uid) = self.run_as {
            c.uid(uid).gid(uid);
        }
        c.output().unwrap()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self.run(
            "pg_ctl",
            &[
                "-D",
                self.data_dir().to_str().unwrap(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        );
    }
}

/// `$TERMSHARE_PG_BINDIR` (scripts/test.sh sets it), else the newest
/// `/usr/lib/postgresql/*/bin` with initdb.
fn bindir() -> PathBuf {
    if let Some(dir) = std::env::var_os("TERMSHARE_PG_BINDIR") {
        return PathBuf::from(dir);
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    found.sort();
    match found.pop() {
        Some((_, bin)) => bin,
        None => panic!(
            "PostgreSQL's server binaries are not installed: apt-get install postgresql (scripts/install-deps.sh does), or set TERMSHARE_PG_BINDIR"
        ),
    }
}
