//! TCP sockets, asked of the kernel's sock_diag netlink interface: which sockets
//! listen on a port, and which local user owns the other end of a loopback
//! connection. `/proc/net/tcp` walks every socket hash bucket of the namespace, which
//! takes milliseconds on a large machine; a sock_diag dump restricted to the LISTEN
//! state only walks the listening table, and a lookup by address is a hash lookup.

use std::io;
use std::mem::size_of;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

const NETLINK_SOCK_DIAG: libc::c_int = 4;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
/// `INET_DIAG_NOCOOKIE`: look the socket up by its addresses alone.
const NO_COOKIE: [u32; 2] = [u32::MAX, u32::MAX];
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const TCP_LISTEN: u32 = 10;

#[repr(C)]
#[derive(Clone, Copy)]
struct NlMsgHdr {
    len: u32,
    ty: u16,
    flags: u16,
    seq: u32,
    pid: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct InetDiagSockId {
    sport: [u8; 2],
    dport: [u8; 2],
    src: [u32; 4],
    dst: [u32; 4],
    ifindex: u32,
    cookie: [u32; 2],
}

#[repr(C)]
#[derive(Clone, Copy)]
struct InetDiagReqV2 {
    family: u8,
    protocol: u8,
    ext: u8,
    pad: u8,
    states: u32,
    id: InetDiagSockId,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct InetDiagMsg {
    family: u8,
    state: u8,
    timer: u8,
    retrans: u8,
    id: InetDiagSockId,
    expires: u32,
    rqueue: u32,
    wqueue: u32,
    uid: u32,
    inode: u32,
}

/// Closes the netlink socket however the query ends.
struct Fd(libc::c_int);

impl Drop for Fd {
    fn drop(&mut self) {
        unsafe {
            libc::close(self.0);
        }
    }
}

/// Inodes of the sockets listening on TCP `port` (IPv4 and IPv6).
pub fn listening_inodes(port: u16) -> io::Result<Vec<u64>> {
    let mut inodes = Vec::new();
    for family in [libc::AF_INET as u8, libc::AF_INET6 as u8] {
        let any = InetDiagSockId {
            sport: [0; 2],
            dport: [0; 2],
            src: [0; 4],
            dst: [0; 4],
            ifindex: 0,
            cookie: [0; 2],
        };
        for msg in query(family, NLM_F_REQUEST | NLM_F_DUMP, 1 << TCP_LISTEN, any)? {
            if u16::from_be_bytes(msg.id.sport) == port {
                inodes.push(msg.inode as u64);
            }
        }
    }
    Ok(inodes)
}

/// The uid that owns the socket at `from` connected to `to`: for a connection a
/// listener accepted (`to` its local address, `from` the peer's), the user who made
/// it, when the peer is on this machine. `None` when the kernel knows no such socket
/// (the peer is remote, or gone).
pub fn socket_owner(from: SocketAddr, to: SocketAddr) -> io::Result<Option<u32>> {
    let (family, src, dst) = match (from.ip(), to.ip()) {
        (IpAddr::V4(a), IpAddr::V4(b)) => (libc::AF_INET as u8, v4(a), v4(b)),
        (IpAddr::V6(a), IpAddr::V6(b)) => (libc::AF_INET6 as u8, v6(a), v6(b)),
        _ => return Ok(None),
    };
    let id = InetDiagSockId {
        sport: from.port().to_be_bytes(),
        dport: to.port().to_be_bytes(),
        src,
        dst,
        ifindex: 0,
        cookie: NO_COOKIE,
    };
    match query(family, NLM_F_REQUEST, u32::MAX, id) {
        Ok(found) => Ok(found.first().map(|m| m.uid)),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// An address as the kernel's `__be32[4]` holds it: the bytes in network order.
fn v4(ip: Ipv4Addr) -> [u32; 4] {
    [u32::from_ne_bytes(ip.octets()), 0, 0, 0]
}

fn v6(ip: Ipv6Addr) -> [u32; 4] {
    let o = ip.octets();
    std::array::from_fn(|i| {
        u32::from_ne_bytes([o[4 * i], o[4 * i + 1], o[4 * i + 2], o[4 * i + 3]])
    })
}

/// One sock_diag request for TCP sockets of `family` in `states`; the messages back.
fn query(family: u8, flags: u16, states: u32, id: InetDiagSockId) -> io::Result<Vec<InetDiagMsg>> {
    // SAFETY: plain socket(2); the fd is owned by `Fd`.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            NETLINK_SOCK_DIAG,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = Fd(fd);
    #[repr(C)]
    struct Request {
        hdr: NlMsgHdr,
        req: InetDiagReqV2,
    }
    let request = Request {
        hdr: NlMsgHdr {
            len: size_of::<Request>() as u32,
            ty: SOCK_DIAG_BY_FAMILY,
            flags,
            seq: 1,
            pid: 0,
        },
        req: InetDiagReqV2 {
            family,
            protocol: libc::IPPROTO_TCP as u8,
            ext: 0,
            pad: 0,
            states,
            id,
        },
    };
    // SAFETY: `request` is a plain repr(C) value that outlives the call.
    let sent = unsafe {
        libc::send(
            fd.0,
            &request as *const Request as *const libc::c_void,
            size_of::<Request>(),
            0,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut found = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    'recv: loop {
        // SAFETY: receives into `buf`, within its length.
        let n = unsafe { libc::recv(fd.0, buf.as_mut_ptr() as *mut libc::c_void, buf.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        if n == 0 {
            break;
        }
        let mut off = 0;
        while off + size_of::<NlMsgHdr>() <= n {
            // SAFETY: bounds checked above; read_unaligned copes with any alignment.
            let hdr: NlMsgHdr =
                unsafe { std::ptr::read_unaligned(buf[off..].as_ptr() as *const NlMsgHdr) };
            let len = hdr.len as usize;
            if len < size_of::<NlMsgHdr>() || off + len > n {
                break 'recv;
            }
            let body = off + size_of::<NlMsgHdr>();
            match hdr.ty {
                NLMSG_DONE => break 'recv,
                NLMSG_ERROR => {
                    // struct nlmsgerr starts with the (negative) errno.
                    let errno = match buf.get(body..body + 4) {
                        Some(b) => i32::from_ne_bytes(b.try_into().unwrap()),
                        None => -libc::EIO,
                    };
                    return Err(io::Error::from_raw_os_error(-errno));
                }
                _ => {
                    if body + size_of::<InetDiagMsg>() <= off + len {
                        // SAFETY: the message holds a whole inet_diag_msg (checked).
                        found.push(unsafe {
                            std::ptr::read_unaligned(buf[body..].as_ptr() as *const InetDiagMsg)
                        });
                    }
                }
            }
            off += (len + 3) & !3;
        }
        if flags & NLM_F_DUMP == 0 {
            break; // a lookup answers with one message
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_our_own_listener() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let inodes = listening_inodes(port).unwrap();
        assert_eq!(inodes.len(), 1, "{inodes:?}");
        // The inode is one of this process's socket fds.
        let mine = std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .flatten()
            .filter_map(|e| std::fs::read_link(e.path()).ok())
            .any(|t| t.to_string_lossy() == format!("socket:[{}]", inodes[0]));
        assert!(mine);
        drop(l);
        assert!(listening_inodes(port).unwrap().is_empty());
    }

    #[test]
    fn tells_who_owns_the_other_end_of_a_loopback_connection() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (_s, peer) = l.accept().unwrap();
        let me = nix::unistd::geteuid().as_raw();
        assert_eq!(
            socket_owner(peer, l.local_addr().unwrap()).unwrap(),
            Some(me)
        );
        drop(c);
        let nobody: SocketAddr = "127.0.0.1:9".parse().unwrap();
        assert_eq!(socket_owner(nobody, l.local_addr().unwrap()).unwrap(), None);
    }
}
