//! The CLI's side of the control socket.

use std::io;
use std::path::Path;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

use crate::protocol::VERSION;

/// An error the daemon answered with.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct RemoteError {
    pub code: String,
    pub exit: i32,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("the daemon connection failed: {0}")]
    Io(#[from] io::Error),
    #[error("the daemon closed the connection")]
    Closed,
    #[error("the daemon sent something that is not a response: {0}")]
    BadResponse(String),
    #[error(transparent)]
    Remote(#[from] RemoteError),
}

/// A daemon that hung up (e.g. on a peer it does not serve) is `Closed`, not an I/O
/// fault of ours.
fn hangup(e: io::Error) -> ClientError {
    match e.kind() {
        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset => ClientError::Closed,
        _ => ClientError::Io(e),
    }
}

pub struct Client {
    lines: Lines<BufReader<OwnedReadHalf>>,
    write: OwnedWriteHalf,
    next_id: u64,
}

impl Client {
    /// Connect; `Err` when no daemon answers at `path`.
    pub async fn connect(path: &Path) -> io::Result<Client> {
        let stream = UnixStream::connect(path).await?;
        let (read, write) = stream.into_split();
        Ok(Client {
            lines: BufReader::new(read).lines(),
            write,
            next_id: 1,
        })
    }

    /// Send `command` (an object with `cmd` and its fields) and wait for its answer.
    pub async fn call(&mut self, command: Value) -> Result<Value, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        let mut request = command;
        request["v"] = json!(VERSION);
        request["id"] = json!(id);
        let mut line = serde_json::to_vec(&request).map_err(io::Error::other)?;
        line.push(b'\n');
        self.write.write_all(&line).await.map_err(hangup)?;
        let reply = self.next_line().await?.ok_or(ClientError::Closed)?;
        if reply["id"] != json!(id) {
            return Err(ClientError::BadResponse(reply.to_string()));
        }
        if reply["ok"] == json!(true) {
            return Ok(reply["result"].clone());
        }
        let e = &reply["error"];
        Err(RemoteError {
            code: e["code"].as_str().unwrap_or("internal").to_owned(),
            exit: e["exit"].as_i64().unwrap_or(1) as i32,
            message: e["message"].as_str().unwrap_or("unknown error").to_owned(),
        }
        .into())
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
