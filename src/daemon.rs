//! `termshare serve`: the subsystem behind a Unix socket that only its owner can use.
//!
//! The socket lives in a directory only the owner can enter (`$XDG_RUNTIME_DIR`, or a
//! 0700 `/tmp/termshare-UID` that must be ours), is itself mode 0600, and every
//! connection's peer uid is checked against ours. Requests are JSON lines
//! ([`crate::protocol`]); each connection is served by its own task, and a bad line
//! gets an error reply, never a crash. Shutdown stops accepting, removes the socket,
//! revokes every share and reaps every worker.

use std::future::Future;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use termshare_actors::{
    AccessMode, BackendName, Principal, ShareError, ShareId, ShareRequest, TerminalName,
};
use thiserror::Error;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;

use crate::protocol::{self, Command, ProtocolError, MAX_LINE};
use crate::Termshare;

/// Connections served at once; more wait for a free slot.
const MAX_CONNECTIONS: usize = 128;

#[derive(Debug, Error)]
pub enum DaemonError {
    #[error("another termshare daemon already answers on {0}")]
    AlreadyRunning(PathBuf),
    #[error("socket directory {path} is unsafe: {why}")]
    UnsafeDirectory { path: PathBuf, why: String },
    #[error("cannot listen on {path}: {source}")]
    Listen { path: PathBuf, source: io::Error },
}

/// The default socket: `$XDG_RUNTIME_DIR/termshare.sock`, else
/// `/tmp/termshare-UID/termshare.sock`.
pub fn default_socket() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from) {
        Some(dir) if dir.is_absolute() => dir.join("termshare.sock"),
        _ => PathBuf::from(format!("/tmp/termshare-{}", nix::unistd::geteuid()))
            .join("termshare.sock"),
    }
}

/// Make sure the socket's directory exists, is ours, and nobody else can write to it.
fn prepare_directory(dir: &Path) -> Result<(), DaemonError> {
    let unsafe_dir = |why: String| DaemonError::UnsafeDirectory {
        path: dir.to_path_buf(),
        why,
    };
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| unsafe_dir(format!("cannot create it: {e}")))?;
    }
    let meta = std::fs::metadata(dir).map_err(|e| unsafe_dir(e.to_string()))?;
    if meta.uid() != nix::unistd::geteuid().as_raw() {
        return Err(unsafe_dir(format!("it belongs to uid {}", meta.uid())));
    }
    // Whoever can write the directory can replace the socket under its clients.
    if meta.mode() & 0o022 != 0 {
        return Err(unsafe_dir(format!(
            "others may write to it (mode {:o}); use a directory only you can write, such as one with mode 0700",
            meta.mode() & 0o777
        )));
    }
    Ok(())
}

/// Bind the socket: refuse if a daemon answers there, replace a stale file, mode 0600.
pub async fn bind(path: &Path) -> Result<UnixListener, DaemonError> {
    if let Some(dir) = path.parent() {
        prepare_directory(dir)?;
    }
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        use std::os::unix::fs::FileTypeExt;
        if !meta.file_type().is_socket() {
            return Err(DaemonError::Listen {
                path: path.to_path_buf(),
                source: io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    "a file that is not a socket is in the way; not removing it",
                ),
            });
        }
        if UnixStream::connect(path).await.is_ok() {
            return Err(DaemonError::AlreadyRunning(path.to_path_buf()));
        }
        // A stale socket from a daemon that died.
        let _ = std::fs::remove_file(path);
    }
    let listen_err = |source| DaemonError::Listen {
        path: path.to_path_buf(),
        source,
    };
    let listener = UnixListener::bind(path).map_err(listen_err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(listen_err)?;
    Ok(listener)
}

/// Serve until `shutdown` resolves, then stop every share and remove the socket.
pub async fn serve(
    ts: Termshare,
    listener: UnixListener,
    path: PathBuf,
    shutdown: impl Future<Output = ()>,
) -> Vec<termshare_actors::RevokeReport> {
    let ts = Arc::new(ts);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => {
                let Ok((mut stream, _)) = accepted else { continue };
                // At the limit, turn the newcomer away at once rather than stall the
                // accept loop (and with it shutdown).
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    let busy = protocol::error(&Value::Null, "busy", crate::exit::INTERNAL, "too many connections; try again");
                    let _ = write_line(&mut stream, &busy).await;
                    continue;
                };
                let ts = ts.clone();
                connections.spawn(async move {
                    let _permit = permit;
                    if let Err(e) = serve_connection(&ts, stream).await {
                        tracing::debug!(error = %e, "connection ended");
                    }
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    let _ = std::fs::remove_file(&path);
    connections.shutdown().await;
    match Arc::try_unwrap(ts) {
        Ok(ts) => ts.shutdown().await,
        Err(ts) => {
            // Every connection task has been joined, so this does not happen; if it
            // did, no worker may outlive the daemon all the same.
            tracing::error!("connections still hold the service at shutdown");
            ts.kill_workers();
            Vec::new()
        }
    }
}

/// What reading one line gave.
enum Line {
    Complete(Vec<u8>),
    TooLong,
    Eof,
}

/// Read up to a newline, never holding more than `MAX_LINE` bytes: a longer line is
/// skipped to its end and reported as too long.
async fn read_line_capped<R: AsyncBufRead + Unpin>(r: &mut R) -> io::Result<Line> {
    let mut buf = Vec::new();
    let mut too_long = false;
    loop {
        let available = r.fill_buf().await?;
        if available.is_empty() {
            return Ok(match (too_long, buf.is_empty()) {
                (true, _) => Line::TooLong,
                (false, true) => Line::Eof,
                (false, false) => Line::Complete(buf),
            });
        }
        let (chunk, done) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (&available[..i], Some(i + 1)),
            None => (available, None),
        };
        if !too_long {
            if buf.len() + chunk.len() > MAX_LINE {
                too_long = true;
                buf = Vec::new();
            } else {
                buf.extend_from_slice(chunk);
            }
        }
        let used = done.unwrap_or(available.len());
        r.consume(used);
        if done.is_some() {
            return Ok(if too_long {
                Line::TooLong
            } else {
                Line::Complete(buf)
            });
        }
    }
}

async fn write_line(w: &mut (impl AsyncWriteExt + Unpin), v: &Value) -> io::Result<()> {
    let mut line = serde_json::to_vec(v).map_err(io::Error::other)?;
    line.push(b'\n');
    w.write_all(&line).await
}

async fn serve_connection(ts: &Termshare, stream: UnixStream) -> io::Result<()> {
    // The socket's mode already keeps others out; check the peer too.
    let me = nix::unistd::geteuid().as_raw();
    match stream.peer_cred() {
        Ok(cred) if cred.uid() == me => {}
        _ => return Ok(()), // drop the connection without a word
    }
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    loop {
        let line = match read_line_capped(&mut read).await? {
            Line::Eof => return Ok(()),
            Line::TooLong => {
                let e = protocol::protocol_error(&Value::Null, &ProtocolError::LineTooLong);
                write_line(&mut write, &e).await?;
                continue;
            }
            Line::Complete(line) => line,
        };
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let request = match protocol::parse_request(&line) {
            Ok(r) => r,
            Err((id, e)) => {
                write_line(&mut write, &protocol::protocol_error(&id, &e)).await?;
                continue;
            }
        };
        if let Command::Watch {} = request.command {
            return watch(ts, &request.id, &mut read, &mut write).await;
        }
        let reply = match dispatch(ts, request.command).await {
            Ok(result) => protocol::ok(&request.id, result),
            Err(e) => protocol::share_error(&request.id, &e),
        };
        write_line(&mut write, &reply).await?;
    }
}

/// Stream the badge board: once now, then on every change, until the client leaves.
async fn watch(
    ts: &Termshare,
    id: &Value,
    read: &mut (impl AsyncBufRead + Unpin),
    write: &mut (impl AsyncWriteExt + Unpin),
) -> io::Result<()> {
    let mut badges = ts.badges();
    write_line(write, &protocol::ok(id, json!("watching"))).await?;
    loop {
        let board = serde_json::to_value(&*badges.borrow_and_update()).map_err(io::Error::other)?;
        write_line(
            write,
            &json!({"v": protocol::VERSION, "id": id, "event": "badges", "badges": board,
                    "audit": audit_status(ts)}),
        )
        .await?;
        tokio::select! {
            changed = badges.changed() => if changed.is_err() { return Ok(()) },
            // Anything from the client, or its leaving, ends the stream.
            _ = read.fill_buf() => return Ok(()),
        }
    }
}

/// `{"healthy": true}` or `{"healthy": false, "error": "…"}`: new shares are refused
/// while the audit log fails.
fn audit_status(ts: &Termshare) -> Value {
    match ts.audit_error() {
        None => json!({"healthy": true}),
        Some(e) => json!({"healthy": false, "error": e}),
    }
}

fn principal_or_default(p: Option<String>) -> Result<Principal, ShareError> {
    match p {
        Some(p) => Ok(p.parse()?),
        None => Ok(format!(
            "human:{}",
            std::env::var("USER").unwrap_or_else(|_| "unknown".into())
        )
        .parse()?),
    }
}

fn duration(what: &str, s: &str) -> Result<Duration, ShareError> {
    let d = humantime::parse_duration(s)
        .map_err(|e| termshare_actors::InvalidInput::new(what, s, &e.to_string()))?;
    if d.is_zero() {
        return Err(termshare_actors::InvalidInput::new(what, s, "must be positive").into());
    }
    Ok(d)
}

/// Turn a protocol command into a call on the library API (the only implementation of
/// every rule).
async fn dispatch(ts: &Termshare, command: Command) -> Result<Value, ShareError> {
    match command {
        Command::Ping {} => {
            Ok(json!({"version": env!("CARGO_PKG_VERSION"), "protocol": protocol::VERSION}))
        }
        Command::Share {
            terminal,
            backend,
            ttl,
            grace,
            access,
            principal,
        } => {
            let request = ShareRequest {
                terminal: terminal.parse::<TerminalName>()?,
                backend: BackendName::new(backend),
                access: match access {
                    Some(a) => a.parse::<AccessMode>()?,
                    None => AccessMode::ReadWrite,
                },
                principal: principal_or_default(principal)?,
                ttl: ttl.map(|t| duration("ttl", &t)).transpose()?,
                grace: grace
                    .map(|g| {
                        g.iter()
                            .map(|d| duration("grace", d))
                            .collect::<Result<_, _>>()
                    })
                    .transpose()?,
            };
            ts.share(request).await.map(|i| protocol::share_json(&i))
        }
        Command::List {} => Ok(Value::Array(
            ts.list().await?.iter().map(protocol::share_json).collect(),
        )),
        Command::Extend {
            share_id,
            by,
            principal,
        } => {
            let id: ShareId = share_id.parse()?;
            let by = duration("duration", &by)?;
            ts.extend(id, by, principal_or_default(principal)?)
                .await
                .map(|i| protocol::share_json(&i))
        }
        Command::Revoke {
            share_id,
            principal,
        } => {
            let id: ShareId = share_id.parse()?;
            ts.revoke(id, principal_or_default(principal)?)
                .await
                .map(|r| protocol::report_json(&r))
        }
        Command::Switch {
            share_id,
            backend,
            principal,
        } => {
            let id: ShareId = share_id.parse()?;
            ts.switch(
                id,
                BackendName::new(backend),
                principal_or_default(principal)?,
            )
            .await
            .map(|i| protocol::share_json(&i))
        }
        Command::Status {} => {
            let badges =
                serde_json::to_value(&*ts.badges().borrow()).map_err(ShareError::internal)?;
            Ok(json!({"badges": badges, "audit": audit_status(ts)}))
        }
        Command::Watch {} => unreachable!("handled by the connection loop"),
        Command::HandoffRequest {
            terminal,
            to,
            principal,
            reason,
            backend,
        } => {
            let request = termshare_actors::HandoffRequest {
                terminal: terminal.parse()?,
                from: principal_or_default(principal)?,
                to: to.parse()?,
                reason: reason.unwrap_or_default(),
                backend: backend.map(BackendName::new),
            };
            ts.handoff_request(request)
                .await
                .map(|v| protocol::handoff_json(&v))
        }
        Command::HandoffApprove {
            handoff_id,
            principal,
        } => ts
            .handoff_approve(handoff_id.parse()?, principal_or_default(principal)?)
            .await
            .map(|v| protocol::handoff_json(&v)),
        Command::HandoffDeny {
            handoff_id,
            principal,
            reason,
        } => ts
            .handoff_deny(
                handoff_id.parse()?,
                principal_or_default(principal)?,
                reason,
            )
            .await
            .map(|v| protocol::handoff_json(&v)),
        Command::HandoffShow { handoff_id } => ts
            .handoff_show(handoff_id.parse()?)
            .await
            .map(|v| protocol::handoff_json(&v)),
        Command::HandoffList {} => Ok(Value::Array(
            ts.handoff_list()
                .await?
                .iter()
                .map(protocol::handoff_json)
                .collect(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn lines_of(input: &[u8]) -> Vec<String> {
        let mut r = BufReader::new(input);
        let mut out = Vec::new();
        loop {
            match read_line_capped(&mut r).await.unwrap() {
                Line::Eof => return out,
                Line::TooLong => out.push("<too long>".into()),
                Line::Complete(l) => out.push(String::from_utf8(l).unwrap()),
            }
        }
    }

    #[tokio::test]
    async fn lines_are_capped_and_the_rest_is_skipped() {
        let mut input = b"a\n".to_vec();
        input.extend(vec![b'x'; MAX_LINE + 10]);
        input.extend(b"\nb\nlast");
        assert_eq!(lines_of(&input).await, ["a", "<too long>", "b", "last"]);
    }
}

#[cfg(test)]
mod bind_tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[tokio::test]
    async fn refuses_a_shared_directory_and_a_non_socket_in_the_way() {
        let dir = tempfile::tempdir().unwrap();
        let open = dir.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = bind(&open.join("t.sock")).await.unwrap_err();
        assert!(matches!(err, DaemonError::UnsafeDirectory { .. }), "{err}");

        let private = dir.path().join("private");
        let file = private.join("t.sock");
        std::fs::create_dir(&private).unwrap();
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::write(&file, "precious").unwrap();
        let err = bind(&file).await.unwrap_err();
        assert!(err.to_string().contains("not a socket"), "{err}");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "precious");

        // A stale socket is replaced, a live one refused.
        std::fs::remove_file(&file).unwrap();
        let first = bind(&file).await.unwrap();
        let err = bind(&file).await.unwrap_err();
        assert!(matches!(err, DaemonError::AlreadyRunning(_)), "{err}");
        drop(first);
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        bind(&file).await.unwrap();
    }
}
