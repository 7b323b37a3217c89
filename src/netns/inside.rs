//! What runs inside the namespace's processes: entering the namespace (in the
//! zygote, before it execs its worker), and the connector helper's loop. Raw system
//! calls on data prepared beforehand ([`Plan`]), no allocation and no locks.

use std::io;
use std::os::fd::RawFd;

/// Everything the child needs, prepared before the fork so that the child allocates
/// nothing.
pub struct Plan {
    /// `UID UID 1`: the user keeps its own uid inside (so tmux finds its socket).
    uid_map: Vec<u8>,
    gid_map: Vec<u8>,
    /// The helper's end of the socket pair.
    helper_end: RawFd,
    port: u16,
}

impl Plan {
    /// The plan for a namespace where the current user keeps its own uid and gid, with
    /// its helper serving on `helper_end` and connecting to `port`.
    pub fn new(helper_end: RawFd, port: u16) -> Plan {
        let uid = nix::unistd::geteuid().as_raw();
        let gid = nix::unistd::getegid().as_raw();
        Plan {
            uid_map: format!("{uid} {uid} 1\n").into_bytes(),
            gid_map: format!("{gid} {gid} 1\n").into_bytes(),
            helper_end,
            port,
        }
    }
}

/// In a zygote, before it waits for its command: enter a new user and network
/// namespace, bring its loopback up, and fork the helper. `parent` is termshare's pid
/// (the zygote must not run on if termshare died meanwhile).
///
/// # Safety
/// Call only in a single-threaded process that will `exec` or exit (the zygote's
/// constructor, before `main`; or a child between `fork` and `exec`): it forks, and
/// the helper never returns.
pub unsafe fn enter(plan: &Plan, parent: libc::pid_t) -> io::Result<()> {
    if libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNET) == -1 {
        return Err(io::Error::last_os_error());
    }
    write_file(c"/proc/self/setgroups", b"deny")?;
    write_file(c"/proc/self/uid_map", &plan.uid_map)?;
    write_file(c"/proc/self/gid_map", &plan.gid_map)?;
    loopback_up()?;
    // A change of namespace may clear the parent-death signal: set it again, and do
    // not run on if termshare is already gone.
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)?;
    if libc::getppid() != parent {
        // (No allocation between fork and exec: a plain errno.)
        return Err(io::Error::from_raw_os_error(libc::ESRCH));
    }
    let worker = libc::getpid();
    match libc::fork() {
        -1 => Err(io::Error::last_os_error()),
        0 => helper(plan.helper_end, plan.port, worker),
        _ => {
            libc::close(plan.helper_end);
            Ok(())
        }
    }
}

unsafe fn write_file(path: &std::ffi::CStr, data: &[u8]) -> io::Result<()> {
    let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
    if fd == -1 {
        return Err(io::Error::last_os_error());
    }
    let n = libc::write(fd, data.as_ptr().cast(), data.len());
    libc::close(fd);
    if n != data.len() as isize {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A new network namespace's loopback is down: bring it up (SIOCSIFFLAGS on `lo`).
unsafe fn loopback_up() -> io::Result<()> {
    let s = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
    if s == -1 {
        return Err(io::Error::last_os_error());
    }
    let mut req: libc::ifreq = std::mem::zeroed();
    for (i, b) in b"lo".iter().enumerate() {
        req.ifr_name[i] = *b as libc::c_char;
    }
    let result = if libc::ioctl(s, libc::SIOCGIFFLAGS, &mut req) == -1 {
        Err(io::Error::last_os_error())
    } else {
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(s, libc::SIOCSIFFLAGS, &req) == -1 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    };
    libc::close(s);
    result
}

/// The helper: serve connection requests until termshare closes its end or the worker
/// dies. Never returns.
unsafe fn helper(end: RawFd, port: u16, worker: libc::pid_t) -> ! {
    let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
    libc::prctl(libc::PR_SET_NAME, c"ts-connector".as_ptr());
    if libc::getppid() != worker {
        libc::_exit(0);
    }
    // Keep only the socket pair (as fd 3) and /dev/null as stdio: the helper must not
    // hold the worker's output pipe, termshare's end of the pair, or anything else.
    if end != 3 && libc::dup2(end, 3) == -1 {
        libc::_exit(1);
    }
    let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
    for fd in 0..3 {
        libc::dup2(null, fd);
    }
    // Fail closed: a helper that kept termshare's descriptors (listeners, other
    // shares' connector ends, the instance lock) must not run.
    if libc::syscall(libc::SYS_close_range, 4u32, u32::MAX, 0u32) == -1 {
        libc::_exit(1);
    }
    // The helper never execs, so /proc/PID/environ would still show termshare's own
    // environment, secrets included: wipe that block (fail closed if we cannot).
    if !wipe_environ() {
        libc::_exit(1);
    }
    let addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_be_bytes([127, 0, 0, 1]).to_be(),
        },
        sin_zero: [0; 8],
    };
    loop {
        let mut request = [0u8; 4];
        let n = libc::recv(3, request.as_mut_ptr().cast(), request.len(), 0);
        if n == 0 {
            libc::_exit(0);
        }
        if n < 0 {
            if *libc::__errno_location() == libc::EINTR {
                continue;
            }
            libc::_exit(0);
        }
        let s = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        let failed = s == -1
            || libc::connect(
                s,
                (&addr as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            ) == -1;
        let code = if failed { *libc::__errno_location() } else { 0 };
        reply(3, request, code, if code == 0 { s } else { -1 });
        if s != -1 {
            libc::close(s);
        }
    }
}

/// Zero the memory `/proc/self/environ` shows (the block between `env_start` and
/// `env_end` of `/proc/self/stat`, fields 50 and 51). Only stack buffers: this runs
/// between fork and exec.
unsafe fn wipe_environ() -> bool {
    let mut buf = [0u8; 4096];
    let fd = libc::open(
        c"/proc/self/stat".as_ptr(),
        libc::O_RDONLY | libc::O_CLOEXEC,
    );
    if fd == -1 {
        return false;
    }
    let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
    libc::close(fd);
    if n <= 0 {
        return false;
    }
    let stat = &buf[..n as usize];
    // The command name may hold anything: fields are counted after its last ')'.
    let Some(close) = stat.iter().rposition(|&b| b == b')') else {
        return false;
    };
    // Fields after the name are separated by single spaces; the first is field 3.
    let (mut start, mut end) = (0u64, 0u64);
    for (i, token) in stat[close + 1..]
        .split(|&b| b == b' ' || b == b'\n')
        .filter(|t| !t.is_empty())
        .enumerate()
    {
        let field = i + 3;
        if field == 50 || field == 51 {
            let mut value = 0u64;
            for &b in token {
                if !b.is_ascii_digit() {
                    return false;
                }
                value = value.wrapping_mul(10).wrapping_add((b - b'0') as u64);
            }
            if field == 50 {
                start = value;
            } else {
                end = value;
            }
        }
    }
    if start == 0 || end < start {
        return false;
    }
    // An empty block (a zygote's helper: the zygote runs with no environment).
    std::ptr::write_bytes(start as *mut u8, 0, (end - start) as usize);
    true
}

/// Answer request `number`: `code` (an errno, 0 for success) and, on success, the
/// socket `fd`.
pub(super) unsafe fn reply(end: RawFd, number: [u8; 4], code: i32, fd: RawFd) {
    let code = code.to_ne_bytes();
    let mut bytes = [
        number[0], number[1], number[2], number[3], code[0], code[1], code[2], code[3],
    ];
    let mut iov = libc::iovec {
        iov_base: bytes.as_mut_ptr().cast(),
        iov_len: bytes.len(),
    };
    // Room for one descriptor, aligned for cmsghdr.
    let mut control = [0u64; 4];
    let mut msg: libc::msghdr = std::mem::zeroed();
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if fd != -1 {
        let size = std::mem::size_of::<RawFd>() as u32;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = libc::CMSG_SPACE(size) as usize;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(size) as usize;
        std::ptr::copy_nonoverlapping(
            (&fd as *const RawFd).cast::<u8>(),
            libc::CMSG_DATA(cmsg),
            size as usize,
        );
    }
    libc::sendmsg(end, &msg, libc::MSG_NOSIGNAL);
}
