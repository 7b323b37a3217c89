//! The link front: how participants reach a tty-share worker, and the only way.
//!
//! tty-share has no authentication, so it runs unreachable, in a private network
//! namespace ([`crate::netns`]), and this front stands before it: an HTTP listener of
//! termshare's own (on loopback by default, ephemeral port) that serves a share only
//! under `/s/SECRET/`, SECRET being 192 random bits minted for the share. A request
//! without the secret gets a bare 404 and never reaches tty-share: not one byte.
//!
//! tty-share itself only knows its local session, `/s/local/`. The front maps the
//! participant's `/s/SECRET/…` to `/s/local/…` on the way in, and on the way out
//! rewrites the paths tty-share hands to participants (the `TTYSHARE-*-WSPATH` headers
//! the `tty-share URL` client follows, the `Location` of a redirect, and the session
//! page a browser loads), so the websocket a participant opens next carries the secret
//! too. A websocket upgrade is then piped both ways as it is; once tty-share has sent
//! the new participant its first frame (so it is registered and will get what follows),
//! the terminal is redrawn for them (the `redraw` module: tmux `refresh-client`).
//!
//! Built on hyper (HTTP/1.1, keep-alive, upgrades), so the front never parses HTTP by
//! hand. It ends with its share: dropping it stops the listener and every connection.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, UPGRADE};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

mod participants;
mod paths;

use self::paths::{rewrite_headers, rewrite_page, strip_secret};

pub use self::participants::ParticipantFeed;
use self::participants::Participants;
use super::redraw::Redraw;
use crate::limits::{PerUser, UserSlot};
use crate::netns::Connector;

/// Connections (and websocket pipes) that have shown the share's secret, at once: a
/// browser opens a handful per participant.
const MAX_VERIFIED: usize = 64;
/// Connections that have not (yet) shown it, in all and per local user: someone
/// without the link who opens many fills only their own few, never the slots a
/// participant with the link needs to get in.
const MAX_UNVERIFIED: usize = 48;
const MAX_UNVERIFIED_PER_USER: usize = 4;
/// A session page larger than this is not a tty-share page: refused.
const MAX_PAGE: usize = 1 << 20;
/// A participant that sends no request head within this is dropped.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a participant's request waits for tty-share to listen the first time.
const FIRST_LISTEN: Duration = Duration::from_secs(2);

type Body = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// The share's secret now, and the token that cuts off every connection made under it:
/// a rotation cancels it and starts the next (a child of the front's `stop`).
struct Generation {
    secret: String,
    cut: CancellationToken,
}

struct Ctx {
    generation: parking_lot::RwLock<Generation>,
    connector: Arc<Connector>,
    verified: Arc<Semaphore>,
    /// Redraws the terminal when a participant has joined; `None` when the attach
    /// command is not one termshare can ask to redraw.
    redraw: Option<Arc<Redraw>>,
    /// Joins and leaves of participants' terminal connections.
    participants: Arc<Participants>,
    /// Cancelled when the front is dropped: every connection and pipe ends with it.
    stop: CancellationToken,
}

impl Ctx {
    fn current(&self) -> (String, CancellationToken) {
        let g = self.generation.read();
        (g.secret.clone(), g.cut.clone())
    }
}

/// A running front for one share. Dropping it closes the port and every connection.
pub struct LinkFront {
    addr: SocketAddr,
    ctx: Arc<Ctx>,
    stop: CancellationToken,
}

impl Drop for LinkFront {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A revoke closes the front first: every participant is cut off at once, before
/// tty-share is even signalled.
impl crate::process::Attached for LinkFront {
    fn stopping(&self) {
        self.stop.cancel();
    }

    fn rotate(&self) -> Option<std::io::Result<String>> {
        Some(LinkFront::rotate(self))
    }
}

impl LinkFront {
    /// Listen on `ip` (ephemeral port) in front of the worker behind `connector`;
    /// participants' joins and leaves come out of the [`ParticipantFeed`].
    pub async fn start(
        ip: IpAddr,
        connector: Arc<Connector>,
        redraw: Option<Arc<Redraw>>,
        max_participants: Option<u32>,
    ) -> std::io::Result<(LinkFront, ParticipantFeed)> {
        let listener = TcpListener::bind((ip, 0)).await?;
        let addr = listener.local_addr()?;
        let secret = new_secret()?;
        let stop = CancellationToken::new();
        let (participants, feed) = Participants::new(max_participants);
        let ctx = Arc::new(Ctx {
            generation: parking_lot::RwLock::new(Generation {
                secret,
                cut: stop.child_token(),
            }),
            connector,
            verified: Arc::new(Semaphore::new(MAX_VERIFIED)),
            redraw,
            participants,
            stop: stop.clone(),
        });
        tokio::spawn(serve(listener, ctx.clone()));
        Ok((LinkFront { addr, ctx, stop }, feed))
    }

    /// The participant's link: `http://IP:PORT/s/SECRET/`.
    pub fn link(&self) -> String {
        format!("http://{}/s/{}/", self.addr, self.ctx.current().0)
    }

    /// A new secret, and everyone connected under the old one cut off at once: the
    /// old link stops working. Returns the new link.
    pub fn rotate(&self) -> std::io::Result<String> {
        let secret = new_secret()?;
        let mut g = self.ctx.generation.write();
        g.cut.cancel();
        *g = Generation {
            secret,
            cut: self.stop.child_token(),
        };
        drop(g);
        Ok(self.link())
    }

    /// The address participants connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// 192 random bits, URL-safe (base64url without padding: 32 characters).
fn new_secret() -> std::io::Result<String> {
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes).map_err(|e| std::io::Error::other(e.to_string()))?;
    use base64::Engine;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// Where a connection stands: counted among those that have not shown the secret,
/// or (once a request carried it) among the participants'.
enum Standing {
    Unverified {
        _permit: tokio::sync::OwnedSemaphorePermit,
        _user: UserSlot,
    },
    Verified {
        _permit: tokio::sync::OwnedSemaphorePermit,
    },
}

/// Shared by a connection and the websocket pipe an upgrade hands it to: the slot
/// lives as long as either.
type Slot = Arc<parking_lot::Mutex<Standing>>;

async fn serve(listener: TcpListener, ctx: Arc<Ctx>) {
    let unverified = Arc::new(Semaphore::new(MAX_UNVERIFIED));
    let per_user = Arc::new(PerUser::default());
    loop {
        let accepted = tokio::select! {
            _ = ctx.stop.cancelled() => return,
            a = listener.accept() => a,
        };
        let Ok((tcp, peer)) = accepted else {
            // Out of descriptors or similar: do not spin; try again shortly.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        // Who made the connection, when it comes from this machine (the kernel's
        // word); a remote peer counts as one user, u32::MAX.
        let uid = tcp
            .local_addr()
            .ok()
            .and_then(|local| crate::netdiag::socket_owner(peer, local).ok().flatten())
            .unwrap_or(u32::MAX);
        let (Some(user_slot), Ok(permit)) = (
            per_user.take(uid, MAX_UNVERIFIED_PER_USER),
            unverified.clone().try_acquire_owned(),
        ) else {
            continue; // at the limit: the connection is closed unanswered
        };
        let _ = tcp.set_nodelay(true);
        let ctx = ctx.clone();
        let slot: Slot = Arc::new(parking_lot::Mutex::new(Standing::Unverified {
            _permit: permit,
            _user: user_slot,
        }));
        let (_, cut) = ctx.current();
        tokio::spawn(async move {
            // Where the participant came from, as the session fingerprints it.
            let origin: Arc<str> = match uid {
                u32::MAX => peer.ip().to_string().into(),
                uid => format!("{} uid {uid}", peer.ip()).into(),
            };
            let service = hyper::service::service_fn({
                let ctx = ctx.clone();
                let slot = slot.clone();
                let cut = cut.clone();
                move |req| handle(req, ctx.clone(), slot.clone(), origin.clone(), cut.clone())
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(tcp), service)
                .with_upgrades();
            tokio::select! {
                _ = cut.cancelled() => {}
                _ = conn => {}
            }
        });
    }
}

/// A bare answer that also ends the connection (a refused connection must not stay
/// open, holding its slot, by sending more requests).
fn closing(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut r = plain(status, text);
    r.headers_mut()
        .insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
    r
}

fn plain(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut r = Response::new(full(Bytes::from_static(text.as_bytes())));
    *r.status_mut() = status;
    r
}

fn full(b: Bytes) -> Body {
    Full::new(b).map_err(|never| match never {}).boxed()
}

async fn handle(
    mut req: Request<Incoming>,
    ctx: Arc<Ctx>,
    slot: Slot,
    origin: Arc<str>,
    cut: CancellationToken,
) -> Result<Response<Body>, Infallible> {
    let (secret, _) = ctx.current();
    let Some(rest) = strip_secret(req.uri().path(), &secret) else {
        metrics::counter!("termshare_link_front_refused_total").increment(1);
        return Ok(closing(StatusCode::NOT_FOUND, "not found\n"));
    };
    {
        let mut standing = slot.lock();
        if let Standing::Unverified { .. } = *standing {
            // It showed the secret: from now on it counts as a participant's.
            match ctx.verified.clone().try_acquire_owned() {
                Ok(permit) => *standing = Standing::Verified { _permit: permit },
                Err(_) => {
                    return Ok(closing(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "too many connections to this share\n",
                    ))
                }
            }
        }
    }
    let inner = match req.uri().query() {
        Some(q) => format!("/s/local/{rest}?{q}"),
        None => format!("/s/local/{rest}"),
    };
    let Ok(uri) = inner.parse() else {
        return Ok(plain(StatusCode::BAD_REQUEST, "bad request\n"));
    };
    *req.uri_mut() = uri;
    // tty-share may give its link a moment before it listens (its proof of life
    // finishes beside the announcement): the first participant waits it out.
    let upstream = match ctx.connector.connect_when_listening(FIRST_LISTEN).await {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(error = %e, "the share's worker did not answer");
            return Ok(plain(
                StatusCode::BAD_GATEWAY,
                "the share is not available\n",
            ));
        }
    };
    let _ = upstream.set_nodelay(true);
    let Ok((mut sender, conn)) =
        hyper::client::conn::http1::handshake::<_, Incoming>(TokioIo::new(upstream)).await
    else {
        return Ok(plain(
            StatusCode::BAD_GATEWAY,
            "the share is not available\n",
        ));
    };
    let stop = cut.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = conn.with_upgrades() => {}
        }
    });
    let upgrade = req.headers().contains_key(UPGRADE);
    let participant_side = upgrade.then(|| hyper::upgrade::on(&mut req));
    let Ok(mut resp) = sender.send_request(req).await else {
        return Ok(plain(
            StatusCode::BAD_GATEWAY,
            "the share is not available\n",
        ));
    };
    rewrite_headers(&mut resp, &secret);
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(participant_side) = participant_side {
            let worker_side = hyper::upgrade::on(&mut resp);
            let (stop, redraw) = (cut, ctx.redraw.clone());
            let participants = ctx.participants.clone();
            tokio::spawn(async move {
                let _slot = slot;
                let (Ok(p), Ok(w)) = tokio::join!(participant_side, worker_side) else {
                    return;
                };
                // Every websocket through the front is a participant's: tty-share
                // streams the terminal over one (its TTYSHARE-TTY-WSPATH). Decided
                // on the upgrade, never on the path: tty-share's router decodes
                // `%77s/` to `ws/`, so a path test could be walked around to watch
                // uncounted. A join nobody would hear of (or past the limit) is refused.
                let Some(_joined) = participants.join(origin.to_string()) else {
                    return;
                };
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = pipe(TokioIo::new(p), TokioIo::new(w), redraw) => {}
                }
            });
        }
        let (parts, _) = resp.into_parts();
        return Ok(Response::from_parts(parts, full(Bytes::new())));
    }
    let is_page = resp
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    let (mut parts, body) = resp.into_parts();
    if !is_page {
        return Ok(Response::from_parts(
            parts,
            body.map_err(Into::into).boxed(),
        ));
    }
    let page = match Limited::new(body, MAX_PAGE).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return Ok(plain(
                StatusCode::BAD_GATEWAY,
                "the share's page is too large\n",
            ))
        }
    };
    let page = rewrite_page(&page, &secret);
    parts.headers.remove(CONTENT_LENGTH);
    Ok(Response::from_parts(parts, full(Bytes::from(page))))
}

/// A participant's websocket, both ways, until either side ends. tty-share sends a new
/// receiver its first frame (the window size) only after it has registered it: that
/// frame is the sign that a redraw now reaches this participant too.
async fn pipe(
    participant: impl AsyncRead + AsyncWrite,
    worker: impl AsyncRead + AsyncWrite,
    redraw: Option<Arc<Redraw>>,
) {
    let (mut from_participant, mut to_participant) = tokio::io::split(participant);
    let (mut from_worker, mut to_worker) = tokio::io::split(worker);
    let up = tokio::io::copy(&mut from_participant, &mut to_worker);
    let down = async {
        let mut first = [0u8; 4096];
        let n = from_worker.read(&mut first).await?;
        if n == 0 {
            return Ok(0);
        }
        to_participant.write_all(&first[..n]).await?;
        if let Some(redraw) = &redraw {
            redraw.run();
        }
        tokio::io::copy(&mut from_worker, &mut to_participant).await
    };
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
}

#[cfg(test)]
mod tests;
