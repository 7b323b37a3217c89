//! Test support: private tmux servers, real participants, process checks. Every guard
//! cleans up in `Drop`, so a failing test leaves nothing running.

#![allow(dead_code)]

pub mod users;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A tmux server of the test's own (never the user's), with one session.
pub struct Tmux {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub session: String,
}

impl Tmux {
    pub fn new(session: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("tmux.sock");
        let t = Tmux {
            dir,
            socket,
            session: session.to_string(),
        };
        // A shell with a known prompt, so tests can wait for it instead of sleeping.
        let shell = "env PS1='host$ ' bash --norc --noprofile -i";
        let ok = t
            .cmd(&[
                "-f",
                "/dev/null",
                "new-session",
                "-d",
                "-s",
                session,
                "-x",
                "120",
                "-y",
                "30",
                shell,
            ])
            .status()
            .unwrap()
            .success();
        assert!(ok, "tmux new-session failed");
        t.run(&["set-option", "-g", "status", "off"]);
        let ready = wait_until(Duration::from_secs(10), || t.screen().contains("host$"));
        assert!(ready.is_some(), "the host shell never showed its prompt");
        t
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("tmux");
        c.arg("-S").arg(&self.socket).args(args).env_remove("TMUX");
        c
    }

    pub fn run(&self, args: &[&str]) -> String {
        let out = self.cmd(args).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn alive(&self) -> bool {
        self.cmd(&["has-session", "-t", &format!("={}", self.session)])
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    pub fn type_line(&self, text: &str) {
        self.run(&[
            "send-keys",
            "-t",
            &format!("={}:", self.session),
            "C-u",
            text,
            "Enter",
        ]);
    }

    pub fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", &format!("={}:", self.session)])
    }

    /// A config file that points termshare at this server, with an audit file, a
    /// control socket and a runtime directory of the test's own.
    pub fn config(&self, extra: &str) -> PathBuf {
        let path = self.dir.path().join("config.toml");
        // A private control socket: never a daemon of the user's or another test's.
        let service = format!(
            "socket = \"{}\"\nruntime_dir = \"{}\"\n",
            self.daemon_socket().display(),
            self.runtime_dir().display()
        );
        let extra = match extra.find("[service]\n") {
            Some(i) => {
                let at = i + "[service]\n".len();
                format!("{}{service}{}", &extra[..at], &extra[at..])
            }
            None => format!("{extra}\n[service]\n{service}"),
        };
        std::fs::write(
            &path,
            format!(
                "{extra}\n[terminal]\ntmux_socket = \"{}\"\n[audit]\npath = \"{}\"\n",
                self.socket.display(),
                self.audit_path().display(),
            ),
        )
        .unwrap();
        path
    }

    /// Where termshare keeps its instance directories (tmate's scratch, …).
    pub fn runtime_dir(&self) -> PathBuf {
        self.dir.path().join("rt")
    }

    pub fn daemon_socket(&self) -> PathBuf {
        self.dir.path().join("run").join("termshare.sock")
    }

    pub fn audit_path(&self) -> PathBuf {
        self.dir.path().join("audit.jsonl")
    }

    /// The share and handoff events of the audit log, in order (without the service's
    /// own `service.started` / `service.stopped`, which frame every run).
    pub fn audit(&self) -> Vec<serde_json::Value> {
        self.audit_all()
            .into_iter()
            .filter(|e| !e["kind"].as_str().unwrap_or("").starts_with("service."))
            .collect()
    }

    /// Every line of the audit log, in order.
    pub fn audit_all(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.audit_path())
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd(&["kill-server"]).stderr(Stdio::null()).status();
    }
}

/// Is `pid` a live (non-zombie) process?
pub fn pid_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, r)| !r.trim_start().starts_with('Z'))
            .unwrap_or(false),
        Err(_) => false,
    }
}

/// Poll `cond` until it holds or `limit` passes; returns the time it took.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> Option<Duration> {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if cond() {
            return Some(t0.elapsed());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    cond().then(|| t0.elapsed())
}

/// Processes whose argv[0] ends with `name` and whose environment or argv mentions
/// `marker` (e.g. a private tmux socket path), live ones only.
pub fn processes_mentioning(name: &str, marker: &str) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let argv: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect();
        if argv.first().is_some_and(|a| a.ends_with(name))
            && argv.iter().any(|a| a.contains(marker))
            && pid_alive(pid)
        {
            out.push(pid);
        }
    }
    out
}

/// A policy file allowing `backends` to everyone on every terminal.
pub fn policy(dir: &Path, backends: &[&str], max_ttl: &str) -> PathBuf {
    let path = dir.join("policy.toml");
    let list = backends
        .iter()
        .map(|b| format!("\"{b}\""))
        .collect::<Vec<_>>()
        .join(", ");
    std::fs::write(
        &path,
        format!(
            "[[rule]]\nid = \"test\"\neffect = \"allow\"\nprincipals = [\"human:*\", \"agent:*\"]\nterminals = [\"*\"]\nbackends = [{list}]\naccess = [\"read-only\", \"read-write\"]\nmax_ttl = \"{max_ttl}\"\n"
        ),
    )
    .unwrap();
    path
}

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

/// Tests that switch uids or add users need root; they are `#[ignore]`d and run by
/// `scripts/test.sh` as root (CI). Run by hand without root, they fail here, loudly.
pub fn require_root() {
    assert_eq!(
        nix::unistd::geteuid().as_raw(),
        0,
        "this test needs root: run it as root (scripts/test.sh does in CI)"
    );
}

/// A participant program (`tty-share LINK`) in a tmux server of its own, big enough
/// that tty-share's "your window is smaller" screen never shows; run as the test's
/// user or, with [`Participant::start_as`], as another local user. Its pane stays
/// when the program exits (a participant turned away exits at once), so its pid and
/// last screen can still be read.
pub struct Participant {
    dir: tempfile::TempDir,
    socket: PathBuf,
    /// (uid, gid) to run its tmux as; `None`: the test's own.
    user: Option<(u32, u32)>,
    pub pid: i32,
}

impl Participant {
    pub fn start(argv: &[&str]) -> Self {
        Self::launch(None, argv)
    }

    pub fn start_as(user: &users::TestUser, argv: &[&str]) -> Self {
        Self::launch(Some((user.uid, user.gid)), argv)
    }

    fn launch(user: Option<(u32, u32)>, argv: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap();
            users::open_path_to(dir.path(), dir.path());
        }
        let conf = dir.path().join("tmux.conf");
        std::fs::write(&conf, "set -g remain-on-exit on\nset -g status off\n").unwrap();
        let mut p = Participant {
            socket: dir.path().join("p.sock"),
            dir,
            user,
            pid: 0,
        };
        let conf = conf.to_string_lossy().into_owned();
        let mut args = vec![
            "-f",
            &conf,
            "new-session",
            "-d",
            "-s",
            "p",
            "-x",
            "200",
            "-y",
            "60",
        ];
        args.extend_from_slice(argv);
        assert!(p.tmux(&args).status().unwrap().success());
        let shown = p
            .tmux(&["display-message", "-p", "-t", "=p:", "#{pane_pid}"])
            .output()
            .unwrap();
        p.pid = String::from_utf8_lossy(&shown.stdout)
            .trim()
            .parse()
            .unwrap_or_else(|_| {
                panic!(
                    "no participant pane: {}",
                    String::from_utf8_lossy(&shown.stderr)
                )
            });
        p
    }

    fn tmux(&self, args: &[&str]) -> Command {
        let mut c = Command::new("tmux");
        c.arg("-S").arg(&self.socket).args(args).env_remove("TMUX");
        if let Some((uid, gid)) = self.user {
            use std::os::unix::process::CommandExt;
            c.uid(uid)
                .gid(gid)
                .env_clear()
                .env("PATH", std::env::var_os("PATH").unwrap_or_default())
                .env("TERM", "xterm-256color")
                .env("HOME", self.dir.path());
        }
        c
    }

    pub fn screen(&self) -> String {
        let out = self
            .tmux(&["capture-pane", "-p", "-t", "=p:"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn alive(&self) -> bool {
        pid_alive(self.pid)
    }

    /// Type a line into the participant's program (its keystrokes).
    pub fn type_line(&self, text: &str) {
        let _ = self
            .tmux(&["send-keys", "-t", "=p:", text, "Enter"])
            .status();
    }
}

impl Drop for Participant {
    fn drop(&mut self) {
        let _ = self.tmux(&["kill-server"]).stderr(Stdio::null()).status();
    }
}

/// `pid` and every live process below it (by parent pid, from /proc).
pub fn descendants(pid: i32) -> Vec<i32> {
    let mut parent_of = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r.to_owned()) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if let Some(ppid) = fields.get(1).and_then(|f| f.parse::<i32>().ok()) {
            parent_of.push((p, ppid));
        }
    }
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        let cur = out[i];
        out.extend(
            parent_of
                .iter()
                .filter(|(_, pp)| *pp == cur)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    out.retain(|p| pid_alive(*p));
    out
}

/// The environment of process `pid`, as `KEY=VALUE` strings (`None`: unreadable).
pub fn environ_of(pid: i32) -> Option<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    Some(
        raw.split(|b| *b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect(),
    )
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
