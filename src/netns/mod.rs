//! A private network namespace for a worker, and the only way into it.
//!
//! tty-share has no authentication: anyone who reaches its port joins, and a loopback
//! port is visible to every local user (`ss -ltn`, `/proc/PID/cmdline`). So tty-share
//! runs in a network namespace of its own, which needs no root: an unprivileged
//! process may create a user namespace, and in it a network namespace (the kernel's
//! `unshare(CLONE_NEWUSER | CLONE_NEWNET)`). Nothing outside can connect to a port in
//! there, and other users cannot enter it (`setns` needs privileges they lack).
//!
//! termshare reaches tty-share through a *connector*: before tty-share is executed,
//! its process (a zygote, see `process/zygote/`, already inside the namespace)
//! forks a tiny helper that stays in the namespace. On request over a socket pair, the helper connects to `127.0.0.1:PORT`
//! inside the namespace and passes the connected socket back (SCM_RIGHTS). termshare's
//! link front then talks to tty-share over that socket, after checking the
//! participant's secret. The helper is in the worker's process group and dies with
//! tty-share (PR_SET_PDEATHSIG), so revoke and the group guard reach it too.
//!
//! [`enter`] and the helper's loop use raw system calls on data prepared before the
//! helper's fork ([`Plan`]), no allocation and no locks: they were written to run
//! between `fork` and `exec` of the multi-threaded daemon, and stay safe to run there,
//! although the zygote that runs them now is single-threaded.

mod inside;

pub use inside::{enter, Plan};

use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::socket::{
    recvmsg, send, socketpair, AddressFamily, ControlMessageOwned, MsgFlags, SockFlag, SockType,
};

/// The port tty-share listens on inside its namespace. Any port is free in a fresh
/// namespace, so it is fixed; nothing outside can reach it.
pub const INNER_PORT: u16 = 8000;

/// termshare's end of the socket pair: asks the helper for connections.
///
/// Asynchronous (non-blocking, on the runtime's reactor): a request costs a send and a
/// receive, with no thread hop. The serving probe of every idle share and each proof
/// of life go through here, so a blocking-pool round trip per request was most of
/// what an idle share cost.
pub struct Connector {
    fd: tokio::io::unix::AsyncFd<OwnedFd>,
    /// One request at a time, each numbered: a reply that comes late (after a
    /// timeout) is recognised by its number and thrown away, socket and all, so it
    /// can never answer a later request.
    next: tokio::sync::Mutex<u32>,
    /// A connection has succeeded once: the worker listens (from then on a refusal
    /// means it stopped, and is not waited out).
    listened: std::sync::atomic::AtomicBool,
}

/// How long a request waits for the helper's answer: a helper that stopped answering
/// (SIGSTOP) must not hold a request forever.
const REPLY_WAIT: Duration = Duration::from_secs(2);

/// Make the socket pair: the connector (ours) and the helper's end (handed to the
/// process that enters the namespace, see [`Plan::new`], and dropped here once it has
/// its copy). Must be called inside a tokio runtime (the connector is registered with
/// its reactor).
pub fn pair() -> io::Result<(Arc<Connector>, OwnedFd)> {
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )?;
    // Ours only: the helper's end is a separate open file and stays blocking.
    let flags = nix::fcntl::fcntl(&ours, nix::fcntl::FcntlArg::F_GETFL)?;
    nix::fcntl::fcntl(
        &ours,
        nix::fcntl::FcntlArg::F_SETFL(
            nix::fcntl::OFlag::from_bits_retain(flags) | nix::fcntl::OFlag::O_NONBLOCK,
        ),
    )?;
    Ok((
        Arc::new(Connector {
            // SAFETY: `ours` is an OwnedFd moved in: it stays open for as long as
            // the AsyncFd holds it, and nothing else closes it.
            fd: unsafe { tokio::io::unix::AsyncFd::register(ours) }
                .map_err(|e| e.into_parts().1)?,
            next: tokio::sync::Mutex::new(0),
            listened: Default::default(),
        }),
        theirs,
    ))
}

impl Connector {
    /// A connection to the worker's port inside its namespace.
    pub async fn connect(self: &Arc<Self>) -> io::Result<tokio::net::TcpStream> {
        let std_stream = match tokio::time::timeout(REPLY_WAIT, self.request()).await {
            Ok(answer) => answer?,
            Err(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the worker's namespace helper did not answer",
                ))
            }
        };
        std_stream.set_nonblocking(true)?;
        self.listened
            .store(true, std::sync::atomic::Ordering::Relaxed);
        tokio::net::TcpStream::from_std(std_stream)
    }

    /// A connection to the worker's port, waiting up to `limit` for the worker to
    /// listen the first time (it may have given its link a moment before it listens);
    /// once it has, a refusal is an answer.
    pub async fn connect_when_listening(
        self: &Arc<Self>,
        limit: Duration,
    ) -> io::Result<tokio::net::TcpStream> {
        if self.listened.load(std::sync::atomic::Ordering::Relaxed) {
            return self.connect().await;
        }
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match self.connect().await {
                Err(e)
                    if e.raw_os_error() == Some(libc::ECONNREFUSED)
                        && tokio::time::Instant::now() < deadline =>
                {
                    // No event tells when a socket starts listening: look again shortly.
                    tokio::time::sleep(Duration::from_micros(200)).await;
                }
                done => return done,
            }
        }
    }

    /// Ask the helper for a connection and wait for its answer (cancel-safe: a late
    /// answer is recognised by its number and dropped by the next request).
    async fn request(&self) -> io::Result<std::net::TcpStream> {
        let mut next = self.next.lock().await;
        *next = next.wrapping_add(1);
        let number = *next;
        self.fd
            .async_io(tokio::io::Interest::WRITABLE, |fd| {
                send(
                    fd.as_raw_fd(),
                    &number.to_ne_bytes(),
                    MsgFlags::MSG_NOSIGNAL,
                )
                .map_err(io::Error::from)
            })
            .await?;
        loop {
            let (answered, code, received) = self
                .fd
                .async_io(tokio::io::Interest::READABLE, |fd| receive(fd.as_raw_fd()))
                .await?;
            if answered != number {
                continue; // a late reply to an earlier request: dropped with its socket
            }
            return match (code, received) {
                (0, Some(fd)) => Ok(std::net::TcpStream::from(fd)),
                (0, None) => Err(io::Error::other("the namespace helper sent no socket")),
                (code, _) => Err(io::Error::from_raw_os_error(code)),
            };
        }
    }

    /// Wait until something listens on the port inside the namespace (only the worker
    /// can: nothing else is in there), or `limit` passes.
    pub async fn wait_listening(self: &Arc<Self>, limit: Duration) -> io::Result<()> {
        match self.connect_when_listening(limit).await {
            Ok(_) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "nothing listens in the worker's namespace",
            )),
            Err(e) => Err(e),
        }
    }
}

/// One reply from the helper, without blocking: the request's number, an errno (0:
/// success) and the socket it passed, if any. `WouldBlock` when none is there yet.
fn receive(fd: RawFd) -> io::Result<(u32, i32, Option<OwnedFd>)> {
    let mut head = [0u8; 8];
    let mut iov = [io::IoSliceMut::new(&mut head)];
    let mut space = nix::cmsg_space!(RawFd);
    let msg = recvmsg::<()>(fd, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)?;
    if msg.bytes == 0 {
        return Err(io::Error::new(
            io::ErrorKind::ConnectionAborted,
            "the worker's namespace is gone",
        ));
    }
    let mut received = None;
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            for fd in fds {
                // SAFETY: the kernel just gave us this descriptor; nobody else owns
                // it. Any but the first is closed here.
                let owned = unsafe { OwnedFd::from_raw_fd(fd) };
                received.get_or_insert(owned);
            }
        }
    }
    let answered = u32::from_ne_bytes(head[..4].try_into().expect("4 bytes"));
    let code = i32::from_ne_bytes(head[4..].try_into().expect("4 bytes"));
    Ok((answered, code, received))
}

impl AsFd for Connector {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.get_ref().as_fd()
    }
}

#[cfg(test)]
mod tests {
    //! The connector against a helper played by a thread (no namespace needed): the
    //! wire is the same socket pair and the same `reply`.
    use super::inside::reply;
    use super::*;
    use std::io::Write;

    fn request_number(end: RawFd) -> [u8; 4] {
        let mut number = [0u8; 4];
        // SAFETY: a plain recv into a local buffer of its size.
        let n = unsafe { libc::recv(end, number.as_mut_ptr().cast(), number.len(), 0) };
        assert_eq!(n, 4, "a request is one 4-byte number");
        number
    }

    #[tokio::test]
    async fn a_late_answer_never_answers_a_later_request() {
        let (connector, helper_end) = pair().unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (right_tx, right_rx) = std::sync::mpsc::channel();
        let helper = std::thread::spawn(move || {
            let end = helper_end.as_raw_fd();
            let first = request_number(end);
            // Silent until the second request: the first has timed out by then.
            let second = request_number(end);
            let mut late = std::net::TcpStream::connect(addr).unwrap();
            late.write_all(b"late").unwrap();
            let right = std::net::TcpStream::connect(addr).unwrap();
            right_tx.send(right.local_addr().unwrap()).unwrap();
            // SAFETY: both descriptors are open for the duration of the calls.
            unsafe {
                reply(end, first, 0, late.as_raw_fd());
                reply(end, second, 0, right.as_raw_fd());
            }
            helper_end // kept open until the test has its answer
        });
        let started = std::time::Instant::now();
        let first = connector.connect().await;
        assert_eq!(
            first.unwrap_err().kind(),
            io::ErrorKind::TimedOut,
            "a helper that does not answer fails the request"
        );
        assert!(started.elapsed() >= REPLY_WAIT);
        let second = connector
            .connect()
            .await
            .expect("the second request's answer");
        let right = right_rx.recv().unwrap();
        assert_eq!(
            second.local_addr().unwrap(),
            right,
            "the answer to the second request, not the late one to the first"
        );
        drop(helper.join().unwrap());
    }

    #[tokio::test]
    async fn a_helper_that_is_gone_is_an_error_not_a_wait() {
        let (connector, helper_end) = pair().unwrap();
        drop(helper_end);
        let started = std::time::Instant::now();
        let e = connector.connect().await.unwrap_err();
        assert!(
            matches!(
                e.kind(),
                io::ErrorKind::ConnectionAborted | io::ErrorKind::BrokenPipe
            ),
            "{e}"
        );
        assert!(started.elapsed() < REPLY_WAIT, "answered at once");
    }

    #[tokio::test]
    async fn a_refusal_in_the_namespace_comes_back_as_its_errno() {
        let (connector, helper_end) = pair().unwrap();
        let helper = std::thread::spawn(move || {
            let end = helper_end.as_raw_fd();
            let number = request_number(end);
            // SAFETY: no descriptor is passed.
            unsafe { reply(end, number, libc::ECONNREFUSED, -1) };
            helper_end
        });
        let e = connector.connect().await.unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ECONNREFUSED));
        drop(helper.join().unwrap());
    }
}
