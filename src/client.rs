//! The CLI's side of the control socket.
//!
//! Before it sends anything, a client checks whom it talks to: the socket's directory
//! must be its own (or the configured daemon user's), reached without symlinks and
//! writable by nobody else, and the daemon must run as that user
//! ([`crate::daemon::socket`]). A daemon that turns a connection away as `busy` is
//! asked again for a short while before the client gives up and says so.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

use crate::daemon::socket::{check_before_connect, check_daemon, Untrusted};
use crate::protocol::{Command, VERSION};

/// How long a client keeps asking a busy daemon.
const BUSY_RETRY: Duration = Duration::from_secs(2);

/// An error the daemon answered with.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct RemoteError {
    /// The error's `code` (`invalid`, `denied`, ...; `internal` if absent).
    pub code: String,
    /// The exit code the CLI should end with (1 if absent).
    pub exit: i32,
    /// The daemon's message for the user.
    pub message: String,
}

/// Why a call to the daemon failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Reading or writing the socket failed, or a reconnect after `busy` did.
    #[error("the daemon connection failed: {0}")]
    Io(#[from] io::Error),
    /// The daemon hung up before answering.
    #[error("the daemon closed the connection")]
    Closed,
    /// The daemon stayed at its connection limit for the whole retry period.
    #[error("the daemon is busy (too many connections); try again later")]
    Busy,
    /// A line that is not JSON, or an answer to another request.
    #[error("the daemon sent something that is not a response: {0}")]
    BadResponse(String),
    /// The daemon answered with an error.
    #[error(transparent)]
    Remote(#[from] RemoteError),
}

/// Why no client could be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Nothing answers at the path (no daemon runs).
    #[error("{0}")]
    NoDaemon(io::Error),
    /// Something answers, but it is not to be trusted.
    #[error(transparent)]
    Untrusted(#[from] Untrusted),
}

/// A daemon that hung up (e.g. on a peer it does not serve) is `Closed`, not an I/O
/// fault of ours.
fn hangup(e: io::Error) -> ClientError {
    match e.kind() {
        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset => ClientError::Closed,
        _ => ClientError::Io(e),
    }
}

/// A connection to the daemon, checked to be the trusted one; one request at a time.
pub struct Client {
    lines: Lines<BufReader<OwnedReadHalf>>,
    write: OwnedWriteHalf,
    next_id: u64,
    socket: PathBuf,
    daemon_uid: Option<u32>,
}

impl Client {
    /// Connect to the daemon at `path`, which must run as us or as `daemon_uid`.
    pub async fn connect(path: &Path, daemon_uid: Option<u32>) -> Result<Client, ConnectError> {
        match std::fs::symlink_metadata(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(ConnectError::NoDaemon(e)),
            _ => check_before_connect(path, daemon_uid)?,
        }
        let stream = UnixStream::connect(path)
            .await
            .map_err(ConnectError::NoDaemon)?;
        check_daemon(&stream, path, daemon_uid)?;
        let (read, write) = stream.into_split();
        Ok(Client {
            lines: BufReader::new(read).lines(),
            write,
            next_id: 1,
            socket: path.to_path_buf(),
            daemon_uid,
        })
    }

    /// Send `command` (an object with `cmd` and its fields) and wait for its answer. A
    /// daemon at its connection limit is asked again for up to two seconds.
    pub async fn call(&mut self, command: &Command) -> Result<Value, ClientError> {
        let give_up = tokio::time::Instant::now() + BUSY_RETRY;
        let mut pause = Duration::from_millis(20);
        loop {
            match self.call_once(command).await {
                Err(ClientError::Busy) if tokio::time::Instant::now() < give_up => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(250));
                    match Client::connect(&self.socket, self.daemon_uid).await {
                        Ok(fresh) => {
                            let next_id = self.next_id;
                            *self = fresh;
                            self.next_id = next_id;
                        }
                        Err(ConnectError::NoDaemon(e)) => return Err(ClientError::Io(e)),
                        Err(ConnectError::Untrusted(e)) => {
                            return Err(ClientError::Io(io::Error::other(e)))
                        }
                    }
                }
                other => return other,
            }
        }
    }

    async fn call_once(&mut self, command: &Command) -> Result<Value, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        // The same typed request the daemon parses (crate::protocol).
        let mut request = serde_json::to_value(command).map_err(io::Error::other)?;
        request["v"] = json!(VERSION);
        request["id"] = json!(id);
        let mut line = serde_json::to_vec(&request).map_err(io::Error::other)?;
        line.push(b'\n');
        // A busy daemon may have answered and hung up before the request is written.
        let written = self.write.write_all(&line).await.map_err(hangup);
        let reply = match self.next_line().await {
            Ok(Some(reply)) => reply,
            Ok(None) => {
                written?;
                return Err(ClientError::Closed);
            }
            Err(e) => {
                written?;
                return Err(e);
            }
        };
        if reply["id"] != json!(id) {
            if reply["id"].is_null() && reply["error"]["code"] == json!("busy") {
                return Err(ClientError::Busy);
            }
            if reply["id"].is_null() && reply["ok"] == json!(false) {
                return Err(remote(&reply["error"]).into());
            }
            return Err(ClientError::BadResponse(reply.to_string()));
        }
        if reply["ok"] == json!(true) {
            return Ok(reply["result"].clone());
        }
        if reply["error"]["code"] == json!("busy") {
            return Err(ClientError::Busy);
        }
        Err(remote(&reply["error"]).into())
    }

    /// The next line the daemon sends (for `watch` streams).
    pub async fn next_line(&mut self) -> Result<Option<Value>, ClientError> {
        match self.lines.next_line().await.map_err(hangup)? {
            None => Ok(None),
            Some(l) => serde_json::from_str(&l)
                .map(Some)
                .map_err(|_| ClientError::BadResponse(l.chars().take(200).collect())),
        }
    }
}

fn remote(e: &Value) -> RemoteError {
    RemoteError {
        code: e["code"].as_str().unwrap_or("internal").to_owned(),
        exit: e["exit"].as_i64().unwrap_or(1) as i32,
        message: e["message"].as_str().unwrap_or("unknown error").to_owned(),
    }
}
