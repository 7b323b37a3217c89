//! The zygote's own life, before `main`: the constructor that recognises a zygote,
//! its setup (descriptors, parent-death signal, namespace and helper), its ready
//! word, the one command it reads, and the `execve`. Plain system calls on its own
//! descriptors: it is single-threaded, and nothing of the program's `main` runs.

use std::ffi::CStr;
use std::io;
use std::os::fd::RawFd;

use super::wire::{decode, pointers, MAX_COMMAND};
use super::ARGV0;

/// The constructor: in a zygote, runs it and never returns; in any other process,
/// returns at once. glibc calls `.init_array` functions with `argc`, `argv` and
/// `envp` (Rust's std reads its arguments the same way).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[used]
#[link_section = ".init_array"]
static ENTRY: extern "C" fn(libc::c_int, *const *const libc::c_char, *const *const libc::c_char) =
    entry;

extern "C" fn entry(
    argc: libc::c_int,
    argv: *const *const libc::c_char,
    _envp: *const *const libc::c_char,
) {
    if argc != 4 || argv.is_null() {
        return;
    }
    // Never in a set-user-ID or file-capability program: there, whoever runs it could
    // have it exec anything with its privileges.
    // SAFETY: getauxval reads the auxiliary vector, always present on Linux.
    if unsafe { libc::getauxval(libc::AT_SECURE) } != 0 {
        return;
    }
    // SAFETY: glibc passes `argc` valid NUL-terminated strings.
    let arg = |i: usize| unsafe { CStr::from_ptr(*argv.add(i)) }.to_bytes();
    if arg(0) != ARGV0.as_bytes() {
        return;
    }
    // What `top` and `ps -o comm` show (the exec of the worker replaces it).
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, c"ts-zygote".as_ptr()) };
    let number = |i: usize| -> Option<i32> { std::str::from_utf8(arg(i)).ok()?.parse().ok() };
    let code = match (number(1), number(2), number(3)) {
        // SAFETY: this process is a zygote from here on, single-threaded, before main.
        // The helper's end is -1 (a plain worker) or above stdio; anything else is
        // refused, never taken for "plain" (that would run tty-share outside its
        // namespace).
        (Some(parent), Some(command), Some(helper))
            if command >= 3 && (helper == -1 || helper >= 3) =>
        unsafe { run(parent, command, (helper >= 3).then_some(helper)) },
        _ => 2,
    };
    // SAFETY: ends the process; nothing of main runs.
    unsafe { libc::_exit(code) }
}

/// The zygote's life: prepare, wait for the command, exec it. Returns only on failure
/// (the exit code); the errno has been sent to termshare by then.
///
/// # Safety
/// Only in a zygote, before `main`, single-threaded.
unsafe fn run(parent: libc::pid_t, command: RawFd, helper: Option<RawFd>) -> i32 {
    // The setup's word first: 0 when ready, else its errno (termshare reads it before
    // it sends anything, so nothing is left unread here to reset the connection).
    let prepared = keep_only(command, helper).and_then(|()| prepare(parent, helper));
    if let Err(e) = prepared {
        send_errno(command, &e);
        return 126;
    }
    send_word(command, 0);
    let message = match read_command(command) {
        Ok(Some(m)) => m,
        // termshare closed the socket: the zygote is not wanted.
        Ok(None) => return 0,
        Err(e) => {
            send_errno(command, &e);
            return 126;
        }
    };
    let e = match decode(&message) {
        Ok((program, argv, envp)) => {
            let argv_ptrs = pointers(&argv);
            let envp_ptrs = pointers(&envp);
            libc::execve(program.as_ptr(), argv_ptrs.as_ptr(), envp_ptrs.as_ptr());
            io::Error::last_os_error()
        }
        Err(e) => e,
    };
    send_errno(command, &e);
    127
}

/// Close every descriptor but stdio, the command socket (close-on-exec from now: a
/// successful exec closes it) and the helper's end.
unsafe fn keep_only(command: RawFd, helper: Option<RawFd>) -> io::Result<()> {
    let mut keep = [command, helper.unwrap_or(command)];
    keep.sort_unstable();
    let mut from = 3u32;
    for fd in keep {
        let fd = fd as u32;
        if fd > from {
            close_range(from, fd - 1)?;
        }
        from = from.max(fd + 1);
    }
    close_range(from, u32::MAX)?;
    if libc::fcntl(command, libc::F_SETFD, libc::FD_CLOEXEC) == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Close `first..=last`: `close_range(2)` (Linux 5.9), else each open descriptor
/// listed in /proc/self/fd (an older kernel, or a seccomp filter that refuses it).
unsafe fn close_range(first: u32, last: u32) -> io::Result<()> {
    if libc::syscall(libc::SYS_close_range, first, last, 0u32) == 0 {
        return Ok(());
    }
    let open: Vec<u32> = std::fs::read_dir("/proc/self/fd")?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|fd| (first..=last).contains(fd))
        .collect();
    for fd in open {
        libc::close(fd as i32);
    }
    Ok(())
}

/// Everything that does not depend on the command.
unsafe fn prepare(parent: libc::pid_t, helper: Option<RawFd>) -> io::Result<()> {
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)?;
    if libc::getppid() != parent {
        return Err(io::Error::from_raw_os_error(libc::ESRCH));
    }
    if let Some(end) = helper {
        let plan = crate::netns::Plan::new(end, crate::netns::INNER_PORT);
        crate::netns::enter(&plan, parent)?;
    }
    Ok(())
}

/// One command, or `None` if termshare closed the socket first.
unsafe fn read_command(fd: RawFd) -> io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    if !read_exact(fd, &mut len)? {
        return Ok(None);
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_COMMAND {
        return Err(io::Error::from_raw_os_error(libc::E2BIG));
    }
    let mut body = vec![0u8; len];
    if !read_exact(fd, &mut body)? {
        return Err(io::Error::from_raw_os_error(libc::EPIPE));
    }
    Ok(Some(body))
}

/// Fill `buf`; false on an end of file before the first byte.
unsafe fn read_exact(fd: RawFd, buf: &mut [u8]) -> io::Result<bool> {
    let mut got = 0;
    while got < buf.len() {
        let n = libc::read(fd, buf[got..].as_mut_ptr().cast(), buf.len() - got);
        match n {
            0 if got == 0 => return Ok(false),
            0 => return Err(io::Error::from_raw_os_error(libc::EPIPE)),
            n if n < 0 => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            n => got += n as usize,
        }
    }
    Ok(true)
}

unsafe fn send_errno(fd: RawFd, e: &io::Error) {
    send_word(fd, e.raw_os_error().unwrap_or(libc::EIO));
}

unsafe fn send_word(fd: RawFd, word: i32) {
    let word = word.to_ne_bytes();
    libc::send(fd, word.as_ptr().cast(), word.len(), libc::MSG_NOSIGNAL);
}
