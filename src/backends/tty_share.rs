//! tty-share: a local web/CLI relay, the backend that works offline on loopback.
//!
//! `tty-share --headless --no-wait --listen HOST:PORT --command C --args 'A B'` prints
//! `local session: http://HOST:PORT/s/local/` and serves participants (`tty-share URL`
//! or a browser). It has no authentication: anyone who reaches the port joins, so the
//! listener is loopback by default and the policy decides who may use it read-write.
//!
//! Two traps handled here: tty-share splits `--args` on spaces (so an attach argument
//! with whitespace is refused), and when its port is taken it still prints the URL and
//! exits a moment later, so a printed URL is not proof of life: the listening socket
//! must belong to our process.

use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use termshare_actors::{BackendError, BackendName, Links, StartedWorker, WorkerSpec};
use tokio::time::Instant;

use crate::backends::require_program;
use crate::process::{GracefulStop, LinkWait, ProcessSpawner, ProcessWorker, WorkerCommand};

pub const NAME: &str = "tty-share";

pub struct TtyShareBackend {
    spawner: Arc<ProcessSpawner>,
    program: String,
    listen: IpAddr,
}

impl TtyShareBackend {
    pub fn new(spawner: Arc<ProcessSpawner>, listen: IpAddr) -> Self {
        TtyShareBackend {
            spawner,
            program: "tty-share".into(),
            listen,
        }
    }

    /// Run another program with tty-share's arguments (the chaos harness uses stand-ins
    /// that misbehave).
    pub fn with_program(mut self, program: impl Into<String>) -> Self {
        self.program = program.into();
        self
    }

    pub fn loopback(spawner: Arc<ProcessSpawner>) -> Self {
        Self::new(spawner, IpAddr::V4(Ipv4Addr::LOCALHOST))
    }

    fn err_start(detail: String) -> BackendError {
        BackendError::StartFailed {
            backend: NAME.into(),
            detail,
        }
    }

    fn command(&self, spec: &WorkerSpec, port: u16) -> Result<WorkerCommand, BackendError> {
        let (program, rest) =
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
        let (cols, rows) = spec.size.unwrap_or((80, 24));
        let mut cmd = WorkerCommand::new(&self.program)
            .arg("--headless")
            .arg("--no-wait")
            .args(["--headless-cols".to_string(), cols.to_string()])
            .args(["--headless-rows".to_string(), rows.to_string()])
            .args([
                "--listen".to_string(),
                format!("{}:{port}", fmt_host(self.listen)),
            ])
            .args(["--command".to_string(), program.clone()])
            .args(["--args".to_string(), rest.join(" ")]);
        if spec.access == termshare_actors::AccessMode::ReadOnly {
            cmd = cmd.arg("--readonly");
        }
        cmd.env_remove.push("TMUX".into());
        Ok(cmd)
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
        require_program(NAME, &self.program, "apt-get install tty-share").map(|_| ())
    }

    async fn start(&self, spec: WorkerSpec) -> Result<StartedWorker, BackendError> {
        let deadline = Instant::now() + spec.link_timeout;
        let mut last_error = String::new();
        // A port picked free can be taken before tty-share binds it; try a few.
        for _ in 0..3 {
            let port = free_port(self.listen)
                .map_err(|e| Self::err_start(format!("no free port: {e}")))?;
            let cmd = self.command(&spec, port)?;
            let mut process = self
                .spawner
                .spawn(&cmd)
                .await
                .map_err(|e| Self::err_start(format!("cannot run tty-share: {e}")))?;
            let left = deadline.saturating_duration_since(Instant::now());
            let link = match process.read_until(left, parse_link).await {
                Ok(link) => link,
                Err(LinkWait::TimedOut) => {
                    return Err(BackendError::LinkTimeout {
                        backend: NAME.into(),
                        after: spec.link_timeout,
                        detail: format!("tty-share printed no URL ({})", process.stderr_tail()),
                    })
                }
                Err(LinkWait::Exited(how)) => {
                    return Err(Self::err_start(format!(
                        "tty-share {how} before printing its URL: {}",
                        process.stderr_tail()
                    )))
                }
            };
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
                        worker: Box::new(ProcessWorker::new(process, GracefulStop::SigTerm, None)),
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
