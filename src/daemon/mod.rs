//! `termshare serve`: the subsystem behind a Unix socket.
//!
//! The socket lives in a directory only the daemon's user can write ([`socket`]); by
//! default only that user can connect, and with `[service] socket_group` the members
//! of that group can too. Every connection's peer is identified by the kernel
//! (SO_PEERCRED) and mapped to the principals it may act as ([`peers`]); every action
//! it takes goes through the same admission as the library API, with its peer on the
//! audit record. Requests are JSON lines ([`crate::protocol`]); each connection is
//! served by its own task, and a bad line gets an error reply, never a crash.
//!
//! Nobody can starve the socket: connections are bounded in all and per user, part
//! of them is kept for the daemon's own user, a connection that sends no complete
//! request in [`IDLE_TIMEOUT`] is closed, and a connection that starts a `watch`
//! stream gives its connection slot back for a watcher slot (bounded the same way),
//! so watchers never hold what control requests need. Shutdown stops accepting,
//! removes the socket, revokes every share and reaps every worker.

mod dispatch;
#[cfg(feature = "panel")]
pub mod panel;
pub mod peers;
pub mod socket;
#[cfg(test)]
mod tests;

use dispatch::{audit_status, dispatch};

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use termshare_actors::{
    AccessMode, BackendName, Caller, Identity, ShareError, ShareId, ShareRequest, TerminalName,
};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;

use crate::limits::{PerUser, UserSlot};
use crate::protocol::{self, Command, ProtocolError, MAX_LINE};
use crate::Termshare;

pub use peers::PeerMap;
pub use socket::{bind, DaemonError, SocketAccess};

/// Connections open at once, in all. More are turned away with `busy`.
const MAX_CONNECTIONS: usize = 1024;
/// Of those, other users together may hold at most this many: the rest is the daemon
/// user's, so others cannot crowd out its `revoke`.
const MAX_OTHERS: usize = 768;
/// Connections one user other than the daemon's may hold.
const MAX_PER_OTHER_USER: usize = 64;
/// `watch` streams at once. A connection that starts watching gives its connection
/// slot back and takes one of these: watchers never hold what control requests need.
const MAX_WATCHERS: usize = 512;
/// Watch streams of other users together, and of each one.
const MAX_OTHERS_WATCHING: usize = 384;
const MAX_WATCHERS_PER_OTHER_USER: usize = 16;
/// A connection that sends no complete request line for this long is closed (blank
/// lines do not count as requests).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// A bounded pool: in all, for other users together, and per other user.
struct Pool {
    all: Arc<Semaphore>,
    others: Arc<Semaphore>,
    per_user: Arc<PerUser>,
    per_user_limit: usize,
}

/// A place in a [`Pool`]; given back on drop.
struct Place {
    _all: tokio::sync::OwnedSemaphorePermit,
    _others: Option<(tokio::sync::OwnedSemaphorePermit, UserSlot)>,
}

impl Pool {
    fn new(all: usize, others: usize, per_user_limit: usize) -> Self {
        Pool {
            all: Arc::new(Semaphore::new(all)),
            others: Arc::new(Semaphore::new(others)),
            per_user: Arc::new(PerUser::default()),
            per_user_limit,
        }
    }

    /// A place for `uid` (`owner`: the daemon's own user), or `None` when full.
    fn take(&self, uid: u32, owner: bool) -> Option<Place> {
        let others = if owner {
            None
        } else {
            let slot = self.per_user.take(uid, self.per_user_limit)?;
            Some((self.others.clone().try_acquire_owned().ok()?, slot))
        };
        Some(Place {
            _all: self.all.clone().try_acquire_owned().ok()?,
            _others: others,
        })
    }
}

/// What every connection task shares.
struct Shared {
    ts: Termshare,
    peers: PeerMap,
    watchers: Pool,
    /// The lane panel's address and keys, once it serves.
    #[cfg(feature = "panel")]
    panel: std::sync::OnceLock<(std::net::SocketAddr, Arc<panel::PanelAuth>)>,
}

/// The lane panel to serve beside the socket: where, and the installation's key its
/// sessions are signed under.
pub struct PanelConfig {
    /// Bound already (so that a port in use is the caller's error, before serving).
    pub listener: std::net::TcpListener,
    /// The installation's fingerprint key ([`crate::audit_file::load_fingerprint_key`]).
    pub key: [u8; 32],
}

/// Serve until `shutdown` resolves, then stop every share and remove the socket.
/// With `fleet` (`[fleet]`), the host also ships its audit log, keeps its lease and
/// live shares in the database, and carries out fleet revoke orders.
pub async fn serve(
    ts: Termshare,
    peers: PeerMap,
    listener: UnixListener,
    path: PathBuf,
    panel: Option<PanelConfig>,
    fleet: Option<crate::config::FleetSettings>,
    shutdown: impl Future<Output = ()>,
) -> Vec<termshare_actors::RevokeReport> {
    let shared = Arc::new(Shared {
        ts,
        peers,
        watchers: Pool::new(
            MAX_WATCHERS,
            MAX_OTHERS_WATCHING,
            MAX_WATCHERS_PER_OTHER_USER,
        ),
        #[cfg(feature = "panel")]
        panel: std::sync::OnceLock::new(),
    });
    #[cfg(feature = "panel")]
    let panel = match panel {
        Some(config) => match panel::Panel::start(config.listener, &shared, &config.key).await {
            Ok(p) => {
                let _ = shared.panel.set((p.addr(), p.auth()));
                Some(p)
            }
            Err(e) => {
                tracing::error!(error = %e, "the lane panel cannot be served");
                None
            }
        },
        None => None,
    };
    #[cfg(not(feature = "panel"))]
    if panel.is_some() {
        tracing::error!("this build has no lane panel (cargo feature `panel`)");
    }
    #[cfg(feature = "fleet")]
    let mut fleet = fleet.and_then(|settings| fleet_port::start(&shared, &settings));
    #[cfg(not(feature = "fleet"))]
    if fleet.is_some() {
        tracing::error!("this build has no fleet support (cargo feature `fleet`)");
    }
    let connections_pool = Pool::new(MAX_CONNECTIONS, MAX_OTHERS, MAX_PER_OTHER_USER);
    let owner = nix::unistd::geteuid().as_raw();
    let mut connections = tokio::task::JoinSet::new();
    let mut backoff = Duration::ZERO;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            // After an accept error (out of descriptors), wait before the next try
            // instead of spinning; shutdown still wins.
            accepted = async {
                tokio::time::sleep(backoff).await;
                listener.accept().await
            } => {
                let mut stream = match accepted {
                    Ok((stream, _)) => {
                        backoff = Duration::ZERO;
                        stream
                    }
                    Err(e) => {
                        backoff = (backoff * 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
                        tracing::warn!(error = %e, ?backoff, "accept failed");
                        continue;
                    }
                };
                let uid = stream.peer_cred().map(|c| c.uid()).unwrap_or(u32::MAX);
                // At a limit, turn the newcomer away at once rather than stall the
                // accept loop (and with it shutdown).
                let Some(place) = connections_pool.take(uid, uid == owner) else {
                    let _ = write_line(&mut stream, &busy(&Value::Null)).await;
                    continue;
                };
                let shared = shared.clone();
                connections.spawn(async move {
                    if let Err(e) = serve_connection(&shared, stream, place).await {
                        tracing::debug!(error = %e, "connection ended");
                    }
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    let _ = std::fs::remove_file(&path);
    #[cfg(feature = "panel")]
    if let Some(panel) = panel {
        panel.stop().await;
    }
    // Aborting connection tasks is safe: every operation's state lives in the actors,
    // not in a connection task; an aborted caller only loses its answer.
    connections.shutdown().await;
    // The fleet agent lets go of the service first; its shipper then ships what the
    // stop itself writes.
    #[cfg(feature = "fleet")]
    if let Some(fleet) = fleet.as_mut() {
        fleet.detach().await;
    }
    let reports = match Arc::try_unwrap(shared) {
        Ok(shared) => shared.ts.shutdown().await,
        Err(shared) => {
            // Every connection task has been joined, so this does not happen; if it
            // did, no worker may outlive the daemon all the same.
            tracing::error!("connections still hold the service at shutdown");
            shared.ts.kill_workers();
            Vec::new()
        }
    };
    #[cfg(feature = "fleet")]
    if let Some(fleet) = fleet {
        fleet.finish(FLEET_FINISH).await;
    }
    reports
}

/// How long a stopping daemon gives the fleet to take its last events and sign off.
#[cfg(feature = "fleet")]
const FLEET_FINISH: Duration = Duration::from_secs(3);

/// The fleet agent's view of the daemon's termshare.
#[cfg(feature = "fleet")]
mod fleet_port {
    use std::sync::Arc;

    use termshare_actors::{Badges, Caller, RevokeReport, ShareError, ShareId, ShareInfo};
    use tokio::sync::watch;

    use super::Shared;
    use crate::config::FleetSettings;
    use crate::fleet::{FleetAgent, FleetHost};

    struct Port(Arc<Shared>);

    #[async_trait::async_trait]
    impl FleetHost for Port {
        async fn live_shares(&self) -> Result<Vec<ShareInfo>, ShareError> {
            self.0.ts.list().await
        }
        async fn revoke(&self, share: ShareId, caller: Caller) -> Result<RevokeReport, ShareError> {
            self.0.ts.revoke(share, caller).await
        }
        fn changes(&self) -> watch::Receiver<Badges> {
            self.0.ts.badges()
        }
    }

    /// Start the fleet tasks; `None` (logged) if they cannot be.
    pub(super) fn start(shared: &Arc<Shared>, settings: &FleetSettings) -> Option<FleetAgent> {
        let Some(tail) = shared.ts.take_audit_tail() else {
            tracing::error!("[fleet]: termshare was started without its audit reader");
            return None;
        };
        match FleetAgent::start(settings, tail, Arc::new(Port(shared.clone()))) {
            Ok(agent) => {
                shared.ts.set_fleet_status(agent.status().clone());
                tracing::info!(host_id = %settings.host_id, "fleet: shipping audit events and keeping the lease");
                Some(agent)
            }
            Err(e) => {
                tracing::error!(error = %e, "[fleet] cannot start");
                None
            }
        }
    }
}

fn busy(id: &Value) -> Value {
    protocol::error(
        id,
        "busy",
        crate::exit::INTERNAL,
        "the daemon is serving too many connections; try again",
    )
}

/// What reading one line gave.
enum Line {
    Complete(Vec<u8>),
    TooLong,
    Eof,
}

/// Read up to a newline, never holding more than `MAX_LINE` bytes: a longer line is
/// skipped to its end and reported as too long. Hand-written on purpose: tokio-util's
/// `FramedRead` with a length-capped `LinesCodec`/`AnyDelimiterCodec` ends its stream
/// after the first too-long line, and after resuming it does not decode lines already
/// buffered until more bytes arrive, which would stall a client that sent a long line
/// and then a request in one write.
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

async fn serve_connection(shared: &Shared, stream: UnixStream, place: Place) -> io::Result<()> {
    let cred = stream.peer_cred()?;
    let (read, mut write) = stream.into_split();
    let identity = match shared.peers.identify(cred.uid(), cred.pid()) {
        Ok(identity) => identity,
        Err(why) => {
            tracing::warn!(uid = cred.uid(), pid = ?cred.pid(), %why, "connection turned away");
            let e = protocol::error(&Value::Null, "denied", crate::exit::DENIED, &why);
            return write_line(&mut write, &e).await;
        }
    };
    let mut read = BufReader::new(read);
    // A connection that sends no complete request in time (idle, a half-sent line, or
    // only blank lines) gives its slot back.
    let mut idle_until = tokio::time::Instant::now() + IDLE_TIMEOUT;
    loop {
        let line = match tokio::time::timeout_at(idle_until, read_line_capped(&mut read)).await {
            Err(_) => return Ok(()),
            Ok(line) => line?,
        };
        let line = match line {
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
        if let Command::Panel {} = request.command {
            let reply = match panel_url(shared, &identity, cred.uid()) {
                Ok(url) => protocol::ok(&request.id, json!({ "url": url })),
                Err(e) => protocol::share_error(&request.id, &e),
            };
            write_line(&mut write, &reply).await?;
            idle_until = tokio::time::Instant::now() + IDLE_TIMEOUT;
            continue;
        }
        if let Command::Watch {} = request.command {
            let uid = cred.uid();
            let Some(_watching) = shared.watchers.take(uid, identity.is_operator()) else {
                write_line(&mut write, &busy(&request.id)).await?;
                continue;
            };
            // From here on this is a watcher: its connection slot goes back.
            drop(place);
            return watch(&shared.ts, &identity, &request.id, &mut read, &mut write).await;
        }
        let reply = match dispatch(&shared.ts, &identity, request.command).await {
            Ok(result) => protocol::ok(&request.id, result),
            Err(e) => protocol::share_error(&request.id, &e),
        };
        write_line(&mut write, &reply).await?;
        idle_until = tokio::time::Instant::now() + IDLE_TIMEOUT;
    }
}

/// The panel's address with a one-time secret for the local user `uid` (whose
/// identity the kernel proved on this connection).
fn panel_url(shared: &Shared, identity: &Identity, uid: u32) -> Result<String, ShareError> {
    let _ = identity;
    #[cfg(feature = "panel")]
    if let Some((addr, auth)) = shared.panel.get() {
        let secret = auth.mint(uid).map_err(ShareError::Internal)?;
        return Ok(format!("http://{addr}/?s={secret}"));
    }
    let _ = (shared, uid);
    Err(termshare_actors::InvalidInput::new(
        "panel",
        "off",
        "the daemon serves no panel: set [panel] listen in its config",
    )
    .into())
}

/// Stream the badge board (the part `identity` may see): once now, then on every
/// change, until the client leaves.
async fn watch(
    ts: &Termshare,
    identity: &Identity,
    id: &Value,
    read: &mut (impl AsyncBufRead + Unpin),
    write: &mut (impl AsyncWriteExt + Unpin),
) -> io::Result<()> {
    let mut badges = ts.badges();
    write_line(write, &protocol::ok(id, json!("watching"))).await?;
    loop {
        let board = peers::visible_board(&badges.borrow_and_update(), identity);
        let board = serde_json::to_value(&board).map_err(io::Error::other)?;
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
