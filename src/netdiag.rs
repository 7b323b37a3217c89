//! Which sockets listen on a TCP port, asked of the kernel's sock_diag netlink
//! interface. `/proc/net/tcp` walks every socket hash bucket of the namespace, which
//! takes milliseconds on a large machine; a sock_diag dump restricted to the LISTEN
//! state only walks the listening table.

use std::io;
use std::mem::size_of;

const NETLINK_SOCK_DIAG: libc::c_int = 4;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
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
                flags: NLM_F_REQUEST | NLM_F_DUMP,
                seq: 1,
                pid: 0,
            },
            req: InetDiagReqV2 {
                family,
                protocol: libc::IPPROTO_TCP as u8,
                ext: 0,
                pad: 0,
                states: 1 << TCP_LISTEN,
                id: InetDiagSockId {
                    sport: [0; 2],
                    dport: [0; 2],
                    src: [0; 4],
                    dst: [0; 4],
                    ifindex: 0,
                    cookie: [0; 2],
                },
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
        let mut buf = vec![0u8; 64 * 1024];
        'recv: loop {
            // SAFETY: receives into `buf`, within its length.
            let n =
                unsafe { libc::recv(fd.0, buf.as_mut_ptr() as *mut libc::c_void, buf.len(), 0) };
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
                match hdr.ty {
                    NLMSG_DONE => break 'recv,
                    NLMSG_ERROR => {
                        return Err(io::Error::other("sock_diag answered with an error"))
                    }
                    _ => {
                        let body = off + size_of::<NlMsgHdr>();
                        if body + size_of::<InetDiagMsg>() <= off + len {
                            // SAFETY: the message holds a whole inet_diag_msg (checked).
                            let msg: InetDiagMsg = unsafe {
                                std::ptr::read_unaligned(buf[body..].as_ptr() as *const InetDiagMsg)
                            };
                            if u16::from_be_bytes(msg.id.sport) == port {
                                inodes.push(msg.inode as u64);
                            }
                        }
                    }
                }
                off += (len + 3) & !3;
            }
        }
    }
    Ok(inodes)
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
}
