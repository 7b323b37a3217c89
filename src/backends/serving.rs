//! Serving probes: does a running worker still do its job? The heartbeat
//! ([`termshare_actors::ServingProbe`]) runs these off the worker's mailbox, each
//! bounded by a second; a worker that has not served for the heartbeat timeout fails
//! its share like a stopped one.
//!
//! - tty-share: its port answers an HTTP request (through the network namespace's
//!   connector when it runs in one).
//! - tmate: its socket answers a command (`tmate -S SOCKET display-message -p ok`).
//!
//! A bare TCP or Unix connect is not enough: the kernel accepts connections for a
//! process that never reads them (stopped, deadlocked), so each probe waits for an
//! answer from the program itself.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::process::Stdio;
use std::sync::Arc;

use termshare_actors::ServingProbe;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::launch::CleanEnv;
use crate::process::WorkerCommand;

type ProbeFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

fn probe(f: impl Fn() -> ProbeFuture + Send + Sync + 'static) -> ServingProbe {
    Arc::new(f)
}

/// tty-share on a port of this network namespace.
pub fn http_at(addr: SocketAddr) -> ServingProbe {
    probe(move || {
        Box::pin(async move {
            let stream = tokio::net::TcpStream::connect(addr)
                .await
                .map_err(|e| format!("{addr}: {e}"))?;
            answers_http(stream).await
        })
    })
}

/// tty-share in its private network namespace, reached through its connector.
#[cfg(feature = "tty-share")]
pub fn http_through(connector: Arc<crate::netns::Connector>) -> ServingProbe {
    probe(move || {
        let connector = connector.clone();
        Box::pin(async move {
            let stream = connector
                .connect()
                .await
                .map_err(|e| format!("cannot reach tty-share in its namespace: {e}"))?;
            answers_http(stream).await
        })
    })
}

/// A command that exits 0 while the worker serves (run with the workers' clean
/// environment, killed if the probe is given up).
pub fn command(cmd: WorkerCommand, env: Arc<CleanEnv>) -> ServingProbe {
    let cmd = Arc::new(cmd);
    probe(move || {
        let (cmd, env) = (cmd.clone(), env.clone());
        Box::pin(async move {
            let mut c = tokio::process::Command::new(&cmd.program);
            c.args(&cmd.args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .kill_on_drop(true);
            env.apply(&mut c);
            let out = c
                .output()
                .await
                .map_err(|e| format!("cannot run {}: {e}", cmd.program))?;
            if out.status.success() {
                Ok(())
            } else {
                let said = String::from_utf8_lossy(&out.stderr);
                Err(format!("{} {}", out.status, said.trim()))
            }
        })
    })
}

/// Send a minimal HTTP request and wait for a status line: any status counts (the
/// program answered), silence or a closed connection does not.
async fn answers_http(mut stream: impl AsyncRead + AsyncWrite + Unpin) -> Result<(), String> {
    stream
        .write_all(b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .map_err(|e| format!("cannot send a request: {e}"))?;
    let mut head = [0u8; 8];
    stream
        .read_exact(&mut head)
        .await
        .map_err(|e| format!("no HTTP answer: {e}"))?;
    if head.starts_with(b"HTTP/1.") {
        Ok(())
    } else {
        Err(format!(
            "not an HTTP answer: {:?}",
            String::from_utf8_lossy(&head)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_port_that_accepts_but_never_answers_is_not_serving() {
        // The kernel completes the handshake; nobody ever reads.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = silent.local_addr().unwrap();
        let probe = http_at(addr);
        let outcome = tokio::time::timeout(std::time::Duration::from_millis(300), probe()).await;
        assert!(outcome.is_err(), "a silent port must not count as serving");
        drop(silent);
        assert!(probe().await.is_err(), "a closed port is not serving");
    }

    #[tokio::test]
    async fn an_http_answer_is_serving() {
        let server = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = server.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = server.accept().await.unwrap();
            let mut buf = [0u8; 64];
            let _ = s.read(&mut buf).await;
            let _ = s.write_all(b"HTTP/1.1 404 Not Found\r\n\r\n").await;
        });
        assert_eq!(http_at(addr)().await, Ok(()));
    }
}
