//! tty-share: a local web/CLI relay, the backend that works offline on loopback.
//!
//! `tty-share --headless --no-wait --listen HOST:PORT --command C --args 'A B'` prints
//! `local session: http://HOST:PORT/s/local/` and serves participants (`tty-share URL`
//! or a browser). It has no authentication: anyone who reaches the port joins. So, by
//! default, it runs in a private network namespace no local user can reach
//! ([`crate::netns`]), and participants reach it only through the [`LinkFront`], with a
//! link that carries a secret. Where no namespace can be made, tty-share shares are
//! refused, unless `[backends.tty_share] local_users_may_join = true` says in so many
//! words that any local user may join; then it listens on loopback as it is.
//!
//! Two traps handled here: tty-share splits `--args` on spaces (so an attach argument
//! with whitespace is refused), and when its port is taken it still prints the URL and
//! exits a moment later, so on a shared loopback a printed URL is not proof of life:
//! without the namespace, the listening socket must belong to our process before the
//! link is given. In its own namespace nobody else can hold the port, so the printed
//! URL is the sign of life the link is given on; tty-share listens about 1.5 ms later
//! (it prints before it builds its HTTP server), and that is confirmed beside the
//! announcement ([`ProcessWorker::with_pending_proof`]): a tty-share that never
//! listens ends its share, failed. The link front waits out that moment for a
//! participant who comes at once.

use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use termshare_actors::{BackendError, BackendName, Links, StartedWorker, WorkerSpec};
use tokio::time::Instant;

use crate::backends::link_front::LinkFront;
use crate::backends::redraw::Redraw;
use crate::backends::{program, serving};
use crate::launch::Resolved;
use crate::netns;
use crate::process::{
    GracefulStop, LinkWait, ProcessSpawner, ProcessWorker, SpawnedProcess, WorkerCommand,
};

/// A proof of life that failed waits this long for the process's exit, which (if it
/// comes) is the failure to report rather than the proof's.
const EXIT_SPEAKS: Duration = Duration::from_millis(200);

/// The backend's name in configs, policies and requests.
pub const NAME: &str = super::TTY_SHARE;

/// How tty-share is kept from the machine's other users.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isolation {
    /// A private network namespace, reached only through the link front (default).
    PrivateNetwork,
    /// None: tty-share listens on `listen` as it is, and any local user who finds the
    /// port joins. Only when the config says `local_users_may_join = true`.
    LocalUsersMayJoin,
}

/// The tty-share adapter: one headless tty-share per share, attached to the terminal.
pub struct TtyShareBackend {
    spawner: Arc<ProcessSpawner>,
    program: Resolved,
    /// Where participants connect: the link front's address (or tty-share's own,
    /// without isolation).
    listen: IpAddr,
    isolation: Isolation,
}

impl TtyShareBackend {
    /// tty-share from `program`, its participants let in on `listen` (the link front's
    /// address, or tty-share's own without isolation).
    pub fn new(
        spawner: Arc<ProcessSpawner>,
        program: Resolved,
        listen: IpAddr,
        isolation: Isolation,
    ) -> Self {
        TtyShareBackend {
            spawner,
            program,
            listen,
            isolation,
        }
    }

    /// Run another program with tty-share's arguments (the chaos harness uses stand-ins
    /// that misbehave).
    pub fn with_program(mut self, program: impl Into<std::path::PathBuf>) -> Self {
        self.program = Resolved::Found(program.into());
        self
    }

    /// The real tty-share from PATH, isolated, its front on loopback.
    pub fn loopback(spawner: Arc<ProcessSpawner>) -> Self {
        Self::new(
            spawner,
            Resolved::resolve(NAME, None),
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            Isolation::PrivateNetwork,
        )
    }

    fn err_start(detail: String) -> BackendError {
        BackendError::StartFailed {
            backend: NAME.into(),
            detail,
        }
    }

    fn command(
        &self,
        spec: &WorkerSpec,
        listen: &str,
        port: u16,
    ) -> Result<WorkerCommand, BackendError> {
        let (program_arg, rest) =
            spec.attach
                .split_first()
                .ok_or_else(|| BackendError::Unsupported {
                    backend: NAME.into(),
                    detail: "empty attach command".into(),
                })?;
        if let Some(bad) = spec
            .attach
            .iter()
            .find(|a| a.is_empty() || a.contains(char::is_whitespace))
        {
            return Err(BackendError::Unsupported {
                backend: NAME.into(),
                detail: format!(
                    "attach argument {bad:?} is empty or has whitespace, which tty-share's --args cannot carry"
                ),
            });
        }
        let tty_share = program(NAME, &self.program)?;
        let (cols, rows) = spec.size.unwrap_or((80, 24));
        let mut cmd = WorkerCommand::new(tty_share.to_string_lossy())
            .arg("--headless")
            .arg("--no-wait")
            .args(["--headless-cols".to_string(), cols.to_string()])
            .args(["--headless-rows".to_string(), rows.to_string()])
            .args(["--listen".to_string(), format!("{listen}:{port}")])
            .args(["--command".to_string(), program_arg.clone()])
            .args(["--args".to_string(), rest.join(" ")]);
        if spec.access == termshare_actors::AccessMode::ReadOnly {
            cmd = cmd.arg("--readonly");
        }
        Ok(cmd)
    }

    /// Spawn tty-share in its own network namespace, wait for its URL and for it to
    /// listen there, and put the link front before it.
    async fn start_isolated(&self, spec: &WorkerSpec) -> Result<StartedWorker, BackendError> {
        let deadline = Instant::now() + spec.link_timeout;
        let cmd = self.command(spec, "127.0.0.1", netns::INNER_PORT)?;
        let redraw = Redraw::for_attach(&spec.attach, self.spawner.env().clone());
        let spawned = self.spawner.spawn_isolated(&cmd).await;
        termshare_actors::faultpoints::pause("tty_share.after_spawn").await;
        let (mut process, connector) = spawned.map_err(|e| BackendError::Unavailable {
            backend: NAME.into(),
            reason: format!(
                "cannot start tty-share in a private network namespace ({e}). Without one, \
                 any local user could join the share; enable unprivileged user namespaces, \
                 or set [backends.tty_share] local_users_may_join = true to accept that"
            ),
        })?;
        if let Some(redraw) = &redraw {
            redraw.set_worker(process.pid);
        }
        // The link front needs only the connector: it opens while tty-share starts
        // (a front whose start then fails is dropped with it, closing its listener;
        // a front that cannot open fails the start without waiting for the URL).
        let front = async {
            LinkFront::start(
                self.listen,
                connector.clone(),
                redraw,
                spec.max_participants,
            )
            .await
            .map_err(|e| {
                Self::err_start(format!(
                    "cannot open the link front on {}: {e}",
                    self.listen
                ))
            })
        };
        let (_url, (front, participants)) =
            tokio::try_join!(read_url(&mut process, spec, deadline), front)?;
        termshare_actors::faultpoints::pause("tty_share.after_url").await;
        // The rest of the proof of life: it listens in its namespace, within what is
        // left of the start's time (or the link timeout, whichever is longer: the
        // announcement no longer waits for it).
        let listened = {
            let (connector, limit) = (connector.clone(), spec.link_timeout);
            let mut exit = process.exit.clone();
            Box::pin(async move {
                let Err(e) = connector.wait_listening(limit).await else {
                    return Ok(());
                };
                // A tty-share killed meanwhile takes its helper with it: the proof
                // fails because of the exit, and the exit is what to report.
                let exited = exit.wait_for(|e| e.is_some());
                if let Ok(Ok(_)) = tokio::time::timeout(EXIT_SPEAKS, exited).await {
                    return Ok(());
                }
                Err(format!(
                    "tty-share printed its URL but did not listen within {limit:?}: {e}"
                ))
            })
        };
        let serving = serving::http_through(connector);
        termshare_actors::faultpoints::pause("tty_share.after_front").await;
        Ok(StartedWorker {
            links: Links::new(front.link()),
            worker: Box::new(
                ProcessWorker::new(process, GracefulStop::SigTerm, vec![Box::new(front)])
                    .with_pending_proof(listened)
                    .with_serving_probe(serving)
                    .with_participant_feed(participants.events, participants.connected),
            ),
        })
    }

    /// tty-share on `listen` as it is: any local user who finds the port may join.
    async fn start_exposed(&self, spec: &WorkerSpec) -> Result<StartedWorker, BackendError> {
        let deadline = Instant::now() + spec.link_timeout;
        let mut last_error = String::new();
        // A port picked free can be taken before tty-share binds it; try a few.
        for _ in 0..3 {
            let port = free_port(self.listen)
                .map_err(|e| Self::err_start(format!("no free port: {e}")))?;
            let cmd = self.command(spec, &fmt_host(self.listen), port)?;
            let mut process = self
                .spawner
                .spawn(&cmd)
                .await
                .map_err(|e| Self::err_start(format!("cannot run tty-share: {e}")))?;
            let link = read_url(&mut process, spec, deadline).await?;
            // Proof of life: our own process listens on the port. A TCP connect tells
            // cheaply when something listens (tty-share listens a moment after
            // printing its URL); sock_diag and /proc/PID/fd then tell whether it is ours.
            let addr = std::net::SocketAddr::new(self.listen, port);
            loop {
                let answering = tokio::time::timeout(
                    Duration::from_millis(100),
                    tokio::net::TcpStream::connect(addr),
                )
                .await
                .is_ok_and(|c| c.is_ok());
                if answering && listens_on(process.pid, port) {
                    return Ok(StartedWorker {
                        links: Links::new(link),
                        worker: Box::new(
                            ProcessWorker::new(process, GracefulStop::SigTerm, vec![])
                                .with_serving_probe(serving::http_at(addr)),
                        ),
                    });
                }
                if process.has_exited() {
                    last_error = format!("port {port} was taken; tty-share exited");
                    break;
                }
                if Instant::now() >= deadline {
                    return Err(BackendError::LinkTimeout {
                        backend: NAME.into(),
                        after: spec.link_timeout,
                        detail: format!(
                            "tty-share printed its URL but never listened on port {port}"
                        ),
                    });
                }
                // No event tells when a socket starts listening: look again shortly.
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        Err(Self::err_start(last_error))
    }
}

/// Read tty-share's stdout until its URL line.
async fn read_url(
    process: &mut SpawnedProcess,
    spec: &WorkerSpec,
    deadline: Instant,
) -> Result<String, BackendError> {
    let left = deadline.saturating_duration_since(Instant::now());
    match process.read_until(left, parse_link).await {
        Ok(link) => Ok(link),
        Err(LinkWait::TimedOut) => Err(BackendError::LinkTimeout {
            backend: NAME.into(),
            after: spec.link_timeout,
            detail: format!("tty-share printed no URL ({})", process.stderr_tail()),
        }),
        Err(LinkWait::Exited(how)) => Err(TtyShareBackend::err_start(format!(
            "tty-share {how} before printing its URL: {}",
            process.stderr_tail()
        ))),
    }
}

fn fmt_host(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

/// Parse tty-share's link line.
pub fn parse_link(line: &str) -> Option<String> {
    line.trim()
        .strip_prefix("local session: ")
        .map(|l| l.trim().to_owned())
        .filter(|l| l.starts_with("http://") || l.starts_with("https://"))
}

#[async_trait]
impl termshare_actors::Backend for TtyShareBackend {
    fn name(&self) -> BackendName {
        BackendName::new(NAME)
    }

    fn check(&self) -> Result<(), BackendError> {
        program(NAME, &self.program).map(|_| ())
    }

    /// Behind the link front, every participant's connection is seen (and can be
    /// turned away); exposed on a port of its own, nothing is.
    fn counts_participants(&self) -> bool {
        self.isolation == Isolation::PrivateNetwork
    }

    /// Behind the front, a new secret; on a port of its own, a new tty-share.
    fn rotates_in_place(&self) -> bool {
        self.isolation == Isolation::PrivateNetwork
    }

    async fn start(&self, spec: WorkerSpec) -> Result<StartedWorker, BackendError> {
        match self.isolation {
            Isolation::PrivateNetwork => self.start_isolated(&spec).await,
            Isolation::LocalUsersMayJoin => self.start_exposed(&spec).await,
        }
    }
}

/// Ask the kernel for a free port on `ip`.
fn free_port(ip: IpAddr) -> std::io::Result<u16> {
    Ok(TcpListener::bind((ip, 0))?.local_addr()?.port())
}

/// Does process `pid` own a listening TCP socket on `port`? (The kernel's listening
/// sockets on the port, via sock_diag, matched against the process's socket fds.)
pub fn listens_on(pid: u32, port: u16) -> bool {
    let inodes: Vec<String> = match crate::netdiag::listening_inodes(port) {
        Ok(found) => found.iter().map(|i| format!("socket:[{i}]")).collect(),
        Err(e) => {
            tracing::warn!(error = %e, "sock_diag unavailable; cannot prove who listens");
            return false;
        }
    };
    if inodes.is_empty() {
        return false;
    }
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path())
            .map(|t| inodes.iter().any(|i| t.as_os_str() == i.as_str()))
            .unwrap_or(false)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_line_tty_share_prints() {
        assert_eq!(
            parse_link("local session: http://127.0.0.1:18123/s/local/").as_deref(),
            Some("http://127.0.0.1:18123/s/local/")
        );
        assert_eq!(parse_link("tty-share: something else"), None);
        assert_eq!(parse_link("local session: garbage"), None);
    }
}
