//! Test support for termshare's own integration tests: the CLI and the daemon as child
//! processes, raw protocol connections, upterm stand-in settings; and, re-exported, the
//! shared test kit (tmux hosts, participants, local users, process checks, policies).

#![allow(dead_code)]

pub mod browser;
pub mod http;
pub mod users;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub use termshare_testkit::*;

/// The termshare CLI as a child; killed (SIGKILL) if the test ends first.
pub struct Cli {
    pub child: Child,
}

impl Cli {
    pub fn spawn(args: &[&str], path_prefix: Option<&Path>) -> Self {
        Self::spawn_with_env(args, path_prefix, &[])
    }

    /// Like [`Cli::spawn`], with extra environment variables (e.g. a secret the
    /// workers must not inherit).
    pub fn spawn_with_env(args: &[&str], path_prefix: Option<&Path>, env: &[(&str, &str)]) -> Self {
        let mut c = Command::new(env!("CARGO_BIN_EXE_termshare"));
        c.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env("USER", "tester")
            .env_remove("TMUX");
        if let Some(dir) = path_prefix {
            let path = std::env::var("PATH").unwrap_or_default();
            c.env("PATH", format!("{}:{path}", dir.display()));
        }
        for (k, v) in env {
            c.env(k, v);
        }
        Cli {
            child: c.spawn().unwrap(),
        }
    }

    /// Wait for exit; returns (status, stdout, stderr).
    pub fn finish(&mut self) -> (std::process::ExitStatus, String, String) {
        use std::io::Read;
        let (mut out, mut err) = (String::new(), String::new());
        if let Some(mut o) = self.child.stdout.take() {
            o.read_to_string(&mut out).unwrap();
        }
        if let Some(mut e) = self.child.stderr.take() {
            e.read_to_string(&mut err).unwrap();
        }
        (self.child.wait().unwrap(), out, err)
    }

    pub fn signal(&self, sig: i32) {
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }
}

impl Drop for Cli {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Read one line from a child's stdout, giving up after `limit`.
pub fn read_line_within(rx: &std::sync::mpsc::Receiver<String>, limit: Duration) -> Option<String> {
    rx.recv_timeout(limit).ok()
}

/// Stream a child's stdout lines into a channel (so reads can time out).
pub fn lines_of(stdout: std::process::ChildStdout) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// The worker pid from the audit file's `share.started` event.
pub fn started_worker_pid(tmux: &Tmux) -> Option<i32> {
    tmux.audit()
        .iter()
        .find(|e| e["kind"] == "share.started")
        .and_then(|e| e["details"]["worker_pid"].as_i64())
        .map(|p| p as i32)
}

/// A running daemon on a private socket; SIGKILLed if the test ends first.
pub struct Daemon {
    pub cli: Cli,
    pub socket: PathBuf,
    pub config: PathBuf,
}

impl Daemon {
    pub fn start(host: &Tmux, extra: &str) -> Daemon {
        let policy = policy(host.dir.path(), &["tty-share"], "1h");
        Daemon::start_with_policy(host, &policy, extra)
    }

    pub fn start_with_policy(host: &Tmux, policy: &Path, extra: &str) -> Daemon {
        Daemon::start_with_env(host, policy, extra, None, &[])
    }

    /// A daemon with `path_prefix` before `PATH` and extra environment variables.
    pub fn start_with_env(
        host: &Tmux,
        policy: &Path,
        extra: &str,
        path_prefix: Option<&Path>,
        env: &[(&str, &str)],
    ) -> Daemon {
        let config = host.config(&format!("policy = \"{}\"\n{extra}", policy.display()));
        let cli = Cli::spawn_with_env(
            &["--config", config.to_str().unwrap(), "serve"],
            path_prefix,
            env,
        );
        let socket = host.daemon_socket();
        let up = wait_until(Duration::from_secs(10), || {
            std::os::unix::net::UnixStream::connect(&socket).is_ok()
        });
        assert!(up.is_some(), "the daemon did not come up");
        Daemon {
            cli,
            socket,
            config,
        }
    }

    /// Run a CLI command against this daemon: (exit code, stdout, stderr).
    pub fn run(&self, args: &[&str]) -> (i32, String, String) {
        let mut full = vec!["--config", self.config.to_str().unwrap()];
        full.extend_from_slice(args);
        let mut cli = Cli::spawn(&full, None);
        let (status, out, err) = cli.finish();
        (status.code().unwrap_or(-1), out, err)
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.push("--json");
        let (code, out, err) = self.run(&a);
        assert_eq!(code, 0, "{args:?}: {err}");
        serde_json::from_str(out.lines().next().unwrap_or("null")).unwrap()
    }

    pub fn stop(mut self) {
        self.cli.signal(libc::SIGTERM);
        let status = self.cli.child.wait().unwrap();
        assert!(status.success(), "daemon exit: {status:?}");
        assert!(!self.socket.exists(), "socket left behind");
    }
}

/// A raw protocol connection.
pub struct Conn {
    pub write: std::os::unix::net::UnixStream,
    pub read: std::io::BufReader<std::os::unix::net::UnixStream>,
}

impl Conn {
    pub fn open(socket: &Path) -> Conn {
        let s = std::os::unix::net::UnixStream::connect(socket).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Conn {
            write: s.try_clone().unwrap(),
            read: std::io::BufReader::new(s),
        }
    }
    pub fn send(&mut self, line: &[u8]) {
        use std::io::Write;
        self.write.write_all(line).unwrap();
        self.write.write_all(b"\n").unwrap();
    }
    pub fn recv(&mut self) -> serde_json::Value {
        use std::io::BufRead;
        let mut line = String::new();
        self.read.read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"))
    }
}

/// The event that ends `share` (revoked, expired, stopped, failed), within 5 s.
pub async fn end_event(
    events: &mut tokio::sync::broadcast::Receiver<termshare::actors::AuditEvent>,
    share: termshare::actors::ShareId,
) -> Option<termshare::actors::AuditEvent> {
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let e = events.recv().await.ok()?;
            if e.correlation_id == share && e.kind.is_terminal() {
                return Some(e);
            }
        }
    })
    .await
    .ok()
    .flatten()
}

/// The uptermd host CA key the tests configure (made up: the stand-in only checks that
/// the known_hosts termshare gives it trusts the server with an `@cert-authority` line).
pub const UPTERM_CA_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHRlcm1zaGFyZS10ZXN0LWNhLWtleS0wMDAwMDAw termshare-test-ca";

/// The upterm stand-in (tests/bin/upterm: what upterm v0.24 prints and does).
pub fn upterm_standin() -> String {
    concat!(env!("CARGO_MANIFEST_DIR"), "/tests/bin/upterm").to_string()
}

/// `[backends.upterm]` for `program` against a loopback uptermd, trusted by its CA key,
/// with `extra` keys after.
pub fn upterm_config(program: &str, extra: &str) -> String {
    format!(
        "[backends.upterm]\nprogram = \"{program}\"\nserver = \"ssh://127.0.0.1:2222\"\nserver_ca_key = \"{UPTERM_CA_KEY}\"\n{extra}"
    )
}

/// The badge's participant count for the share, as the runtime's panel would show it.
pub fn badge_count(ts: &termshare::Termshare, id: termshare::actors::ShareId) -> Option<u32> {
    let board = ts.badges().borrow().clone();
    board
        .values()
        .flat_map(|b| b.shares.iter())
        .find(|s| s.share_id == id)
        .and_then(|s| s.participants)
}

/// Waits (on the badge board's own change notices) until the count is `n`; how long
/// that took.
pub async fn count_becomes(
    ts: &termshare::Termshare,
    id: termshare::actors::ShareId,
    n: u32,
) -> Duration {
    let t0 = std::time::Instant::now();
    let mut board = ts.badges();
    let reached = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if badge_count(ts, id) == Some(n) {
                return;
            }
            if board.changed().await.is_err() {
                return;
            }
        }
    })
    .await;
    assert!(
        reached.is_ok() && badge_count(ts, id) == Some(n),
        "the badge count never became {n}: {:?}",
        badge_count(ts, id)
    );
    t0.elapsed()
}
