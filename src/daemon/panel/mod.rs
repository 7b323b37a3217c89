//! The lane panel: a web page, served by the daemon on `[panel] listen`, with one lane
//! per terminal and each share's live badge, and the actions people take from it.
//!
//! - **Who.** `termshare panel` asks the daemon over its socket for the panel's URL;
//!   the URL carries a one-time secret minted for the identity the kernel proved
//!   there ([`auth`]). The browser trades it for an `HttpOnly; SameSite=Strict`
//!   session cookie and a page token kept in the tab (cookies are shared by every
//!   port of a host; the tab's storage is not), and from then on acts as that
//!   identity, within its rights:
//!   every action is a protocol [`Command`] through the daemon's own `dispatch`, the
//!   same admission and audit as the CLI.
//! - **Live.** The page holds one Server-Sent Events stream (`/api/events`): the
//!   visible lanes and badges, sent at once and again on every change of the badge
//!   board (a `watch`), so a change reaches the page as soon as the board has it. The
//!   browser's `EventSource` reconnects by itself; the cookie is signed, not stored,
//!   so it is still good after a daemon restart. tmux tells nobody when a session
//!   appears, so the list of terminals is refreshed every [`LANES_EVERY`].
//! - **Walls.** Connections are bounded in all and per local user ([`listener`]).
//!   No session cookie and page token: 401 and no data. Every action needs both, a
//!   JSON body, and no cross-site `Origin` or `Sec-Fetch-Site`.
//!   Requests for another `Host` than the panel's own are refused (DNS rebinding).
//!   Every answer carries a strict Content-Security-Policy (scripts and styles only
//!   from the panel itself, nothing inline), `nosniff`, `no-referrer`, no framing, no
//!   caching. Links are secrets: shown to nobody, only copied, by their owner.
//!
//! Built on axum, on the daemon's own runtime; the page's HTML, script and style are
//! embedded in the binary (no build step).

mod actions;
mod auth;
mod listener;
mod routes;

use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use serde_json::{json, Value};
use termshare_actors::{Badges, Identity, TerminalName};
use tokio::sync::watch;

pub use auth::PanelAuth;

use super::Shared;
use crate::protocol::Command;

/// How often the list of the tmux server's sessions is refreshed.
pub const LANES_EVERY: Duration = Duration::from_secs(2);
/// How long a stop waits for the panel's connections to close.
const STOP_WAIT: Duration = Duration::from_secs(1);

/// The running panel.
pub struct Panel {
    addr: SocketAddr,
    auth: Arc<PanelAuth>,
    stop: watch::Sender<bool>,
    server: tokio::task::JoinHandle<()>,
    lanes: tokio::task::JoinHandle<()>,
}

/// What every request of the panel shares.
struct PanelState {
    /// The daemon; weak, so that the panel never keeps it from shutting down.
    shared: Weak<Shared>,
    auth: Arc<PanelAuth>,
    /// Every terminal of the tmux server, kept fresh.
    lanes: watch::Receiver<Vec<TerminalName>>,
    /// Closed when the panel stops: every event stream ends.
    stop: watch::Receiver<bool>,
    /// The `Host` header a request must carry (`IP:PORT`, or `localhost:PORT`).
    hosts: Vec<String>,
}

impl Panel {
    /// Serve the panel on `listener` for the daemon behind `shared`.
    pub(super) async fn start(
        listener: std::net::TcpListener,
        shared: &Arc<Shared>,
        fingerprint_key: &[u8; 32],
    ) -> std::io::Result<Panel> {
        listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let addr = listener.local_addr()?;
        let auth = Arc::new(PanelAuth::new(fingerprint_key));
        let (stop, stopped) = watch::channel(false);
        let (lanes_tx, lanes_rx) = watch::channel(Vec::new());
        let lanes = tokio::spawn(keep_lanes(
            Arc::downgrade(shared),
            lanes_tx,
            stopped.clone(),
        ));
        let mut hosts = vec![addr.to_string()];
        if addr.ip().is_loopback() {
            hosts.push(format!("localhost:{}", addr.port()));
        }
        let state = Arc::new(PanelState {
            shared: Arc::downgrade(shared),
            auth: auth.clone(),
            lanes: lanes_rx,
            stop: stopped.clone(),
            hosts,
        });
        let app = routes::router(state);
        let mut until = stopped;
        let server = tokio::spawn(async move {
            let stopped = async move {
                let _ = until.wait_for(|s| *s).await;
            };
            if let Err(e) = axum::serve(listener::Bounded::new(listener), app)
                .with_graceful_shutdown(stopped)
                .await
            {
                tracing::error!(error = %e, "the panel stopped serving");
            }
        });
        tracing::info!(%addr, "serving the lane panel");
        Ok(Panel {
            addr,
            auth,
            stop,
            server,
            lanes,
        })
    }

    /// The address it serves on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its keys and minted secrets.
    pub fn auth(&self) -> Arc<PanelAuth> {
        self.auth.clone()
    }

    /// Stop serving: every event stream ends, and the server is gone (or, past a
    /// second, aborted).
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        self.lanes.abort();
        let mut server = self.server;
        if tokio::time::timeout(STOP_WAIT, &mut server).await.is_err() {
            server.abort();
        }
    }
}

/// Refresh the terminals' list every [`LANES_EVERY`], publishing only changes.
async fn keep_lanes(
    shared: Weak<Shared>,
    lanes: watch::Sender<Vec<TerminalName>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(LANES_EVERY);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let found = shared.ts.terminals().await;
        drop(shared);
        match found {
            Ok(now) => {
                lanes.send_if_modified(|known| {
                    let changed = *known != now;
                    *known = now;
                    changed
                });
            }
            Err(e) => tracing::debug!(error = %e, "cannot list the terminals"),
        }
    }
}

/// What the page shows `identity`: its principal, the lanes it may see with their
/// badges, and the audit log's health. The operator sees every terminal of the tmux
/// server; anyone else the terminals where they have a share or a handoff.
fn view(shared: &Shared, identity: &Identity, board: &Badges, lanes: &[TerminalName]) -> Value {
    let board = super::peers::visible_board(board, identity);
    let mut terminals: Vec<TerminalName> = board.keys().cloned().collect();
    if identity.is_operator() {
        terminals.extend(lanes.iter().cloned());
    }
    terminals.sort();
    terminals.dedup();
    let lanes: Vec<Value> = terminals
        .iter()
        .map(|t| {
            let badge = board.get(t).cloned().unwrap_or_default();
            let shares: Vec<Value> = badge
                .shares
                .iter()
                .map(|s| {
                    let mut v = serde_json::to_value(s).unwrap_or(Value::Null);
                    v["mine"] = json!(identity.may_act_as(&s.principal));
                    v
                })
                .collect();
            let handoff = badge.handoff.as_ref().map(|h| {
                let mut v = serde_json::to_value(h).unwrap_or(Value::Null);
                // `step` counts from 1.
                let waiting = h.step.and_then(|i| h.approvers.get(i.checked_sub(1)?));
                v["waiting_for"] = json!(waiting);
                v
            });
            json!({"terminal": t, "shares": shares, "handoff": handoff})
        })
        .collect();
    json!({
        "principal": identity.principals().first().map(|p| p.to_string()),
        "operator": identity.is_operator(),
        "lanes": lanes,
        "audit": super::audit_status(&shared.ts),
    })
}

/// Run `command` as `identity`, through the daemon's dispatch (the CLI's path).
async fn act(
    shared: &Shared,
    identity: &Identity,
    command: Command,
) -> Result<Value, termshare_actors::ShareError> {
    super::dispatch(&shared.ts, identity, command).await
}
