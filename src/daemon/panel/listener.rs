//! The panel's connections, bounded: in all, and per local user (the kernel says whose
//! a loopback connection is), so that one user holding many connections open fills
//! only their own part and never locks the operator out of the panel. A connection
//! over a limit is closed at once.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::limits::{PerUser, UserSlot};

/// Connections open at once, in all.
pub const MAX_CONNECTIONS: usize = 256;
/// Connections one local user (or all remote peers together) may hold at once.
pub const MAX_PER_USER: usize = 32;

/// Accepts connections within the bounds.
pub struct Bounded {
    inner: TcpListener,
    all: Arc<Semaphore>,
    per_user: Arc<PerUser>,
    /// The daemon's own user gets a part no one else can take.
    owner: u32,
}

impl Bounded {
    pub fn new(inner: TcpListener) -> Self {
        Bounded {
            inner,
            all: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
            per_user: Arc::new(PerUser::default()),
            owner: nix::unistd::geteuid().as_raw(),
        }
    }
}

/// One accepted connection, holding its places until it closes.
pub struct Counted {
    stream: TcpStream,
    _all: Option<OwnedSemaphorePermit>,
    _user: UserSlot,
}

impl axum::serve::Listener for Bounded {
    type Io = Counted;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (stream, peer) = match self.inner.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors or similar: do not spin.
                    tracing::warn!(error = %e, "the panel cannot accept");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let uid = stream
                .local_addr()
                .ok()
                .and_then(|local| crate::netdiag::socket_owner(peer, local).ok().flatten())
                .unwrap_or(u32::MAX);
            let Some(user) = self.per_user.take(uid, MAX_PER_USER) else {
                continue; // this user's part is full: closed unanswered
            };
            // The operator's own connections do not wait on everyone else's.
            let all = match uid == self.owner {
                true => None,
                false => match self.all.clone().try_acquire_owned() {
                    Ok(p) => Some(p),
                    Err(_) => continue,
                },
            };
            let _ = stream.set_nodelay(true);
            let counted = Counted {
                stream,
                _all: all,
                _user: user,
            };
            return (counted, peer);
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
