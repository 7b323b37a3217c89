//! Zygotes: worker processes made ahead of time, so that a share's start pays one
//! `execve` instead of a fork of the daemon.
//!
//! Why: forking the daemon (many threads, a large address space) and preparing the
//! child took 3.7 ms of a tty-share start, against 0.5 ms for a plain `posix_spawn`:
//! the fork copied the daemon's page tables (0.6 ms), the user and network namespace,
//! its maps and loopback took 1.4 ms, the connector helper's fork 0.4 ms, and the exec
//! 1.3 ms, most of it tearing down the copy of the daemon. None of that depends on the
//! command, so a zygote does it before there is a command.
//!
//! A zygote is this same executable (`/proc/self/exe`, which names the running
//! binary even after an upgrade replaced the file), run with `argv[0]` =
//! `termshare-zygote` and an empty environment. A constructor the library carries
//! ([`ENTRY`], in `.init_array`) catches it before `main`, so every binary that links
//! termshare can be a zygote: the daemon, a runtime, a test. The zygote
//! 1. keeps only its stdio (the worker's), its command socket and, for an isolated
//!    worker, the connector helper's end;
//! 2. checks that its parent is still the daemon (its parent-death signal was set at
//!    the fork, on the spawner thread) and, for an isolated worker, enters a fresh user
//!    and network namespace and forks the helper there ([`crate::netns::enter`]); the
//!    helper is forked from the small zygote, so it no longer pins a copy of the
//!    daemon's memory for the share's life;
//! 3. waits for one command (program, arguments, environment) and `execve`s it.
//!
//! The command socket is close-on-exec: a successful exec closes it, which the daemon
//! reads as "running"; a failed setup or exec is sent back as an errno first. The
//! zygote is in its own process group from the fork (the worker's group: the guard
//! owns it from then on), so a zygote dropped from the pool, or taken by a start that
//! is cancelled, is killed like any worker.

use std::ffi::{CStr, CString, OsStr};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;

use tokio::io::AsyncReadExt;

use super::*;

/// `argv[0]` of a zygote: what the constructor looks for, and what `ps` shows (its
/// `comm`, what `top` shows, is `ts-zygote`).
const ARGV0: &str = "termshare-zygote";
/// The largest command a zygote accepts (program, arguments and environment).
const MAX_COMMAND: usize = 1 << 20;
/// How long a zygote may take to answer a command: it only has to `execve`.
const EXEC_WAIT: Duration = Duration::from_secs(10);

/// What a zygote will run: a plain worker, or one in a private network namespace
/// reached through a connector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// In termshare's own network namespace.
    Plain,
    /// In a fresh user and network namespace, with a connector helper.
    Isolated,
}

/// A zygote waiting for its command. Dropping it kills it (its group guard).
pub(super) struct Zygote {
    kind: Kind,
    /// Before `child`: fields drop in order, so the group is killed while its leader
    /// is unreaped and its id cannot have been reused yet.
    guard: ProcessGroupGuard,
    child: Child,
    /// Our end of the command socket.
    command: tokio::net::UnixStream,
    /// For an isolated zygote: termshare's way into its namespace.
    connector: Option<Arc<crate::netns::Connector>>,
}

/// Why a zygote did not become its worker.
#[derive(Debug)]
pub(super) enum ExecError {
    /// The exec failed with this errno, or the command was refused before it was sent.
    Refused(io::Error),
    /// It never became ready (its setup failed, or it died, or it is not a zygote at
    /// all), or its socket broke: another zygote may do.
    Gone(io::Error),
}

/// A worker a zygote became.
pub(super) struct Became {
    pub guard: ProcessGroupGuard,
    pub child: Child,
    pub connector: Option<Arc<crate::netns::Connector>>,
}

impl Zygote {
    /// Fork a zygote of `kind`. Call on the spawner thread (the parent-death signal is
    /// tied to the thread that forks), inside the runtime (the child is reaped by it).
    pub(super) fn fork(kind: Kind, registry: &Arc<GroupRegistry>) -> io::Result<Zygote> {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
        ours.set_nonblocking(true)?;
        let (connector, helper_end) = match kind {
            Kind::Plain => (None, None),
            Kind::Isolated => {
                let (connector, end) = crate::netns::pair()?;
                (Some(connector), Some(end))
            }
        };
        // Both above stdio: the child's stdio is set up before `pre_exec` runs, and
        // would replace a descriptor numbered 0-2 (a daemon started with one closed).
        let theirs = above_stdio(OwnedFd::from(theirs))?;
        let helper_end = helper_end.map(above_stdio).transpose()?;
        let command_fd = theirs.as_raw_fd();
        let helper_fd = helper_end.as_ref().map_or(-1, |e| e.as_raw_fd());
        let parent = std::process::id() as libc::pid_t;
        let mut cmd = Command::new("/proc/self/exe");
        cmd.arg0(ARGV0)
            .arg(parent.to_string())
            .arg(command_fd.to_string())
            .arg(helper_fd.to_string())
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(false);
        // SAFETY: only async-signal-safe calls (prctl, getppid, fcntl) between fork and
        // exec.
        unsafe {
            cmd.pre_exec(move || {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)?;
                // The parent died before prctl took effect: do not run orphaned.
                if nix::unistd::getppid().as_raw() != parent {
                    return Err(io::Error::from_raw_os_error(libc::ESRCH));
                }
                // The two descriptors the zygote keeps across the exec.
                for fd in [command_fd, helper_fd] {
                    if fd != -1 && libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                        return Err(io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let child = cmd.spawn()?;
        let pid = child
            .id()
            .ok_or_else(|| io::Error::other("the zygote has no pid"))?;
        let guard = ProcessGroupGuard::new(pid as i32, registry.clone());
        Ok(Zygote {
            kind,
            child,
            guard,
            command: tokio::net::UnixStream::from_std(ours)?,
            connector,
        })
    }

    pub(super) fn kind(&self) -> Kind {
        self.kind
    }

    /// Still waiting (not exited, nor killed while it waited in the pool). Asks
    /// without reaping (`WNOWAIT`): a dead zygote's group is killed by its guard while
    /// the id is still its own.
    pub(super) fn alive(&self) -> bool {
        let Some(pid) = self.child.id() else {
            return false;
        };
        // SAFETY: waitid fills the siginfo it is given; zeroed is a valid siginfo_t.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let rc = unsafe {
            libc::waitid(
                libc::P_PID,
                pid,
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            )
        };
        // No state change to report: si_pid stays 0.
        rc == 0 && unsafe { info.si_pid() } == 0
    }

    /// Become `program args` with exactly `env`. Dropping the future kills the
    /// zygote (its guard goes with it).
    pub(super) async fn exec(
        mut self,
        program: &str,
        args: &[String],
        env: &[(Vec<u8>, Vec<u8>)],
    ) -> Result<Became, ExecError> {
        let message = encode(program, args, env).map_err(ExecError::Refused)?;
        termshare_actors::faultpoints::pause("spawn.exec").await;
        let answer = tokio::time::timeout(EXEC_WAIT, async {
            // First its word that the setup is done (long there for a pooled one).
            match self.answer().await.map_err(ExecError::Gone)? {
                Some(0) => {}
                Some(errno) => {
                    return Err(ExecError::Gone(io::Error::from_raw_os_error(errno)));
                }
                None => {
                    return Err(ExecError::Gone(io::Error::other(
                        "the zygote ended before it was ready (is this binary linked \
                         with termshare, whose constructor runs it?)",
                    )))
                }
            }
            self.send(&message).await.map_err(ExecError::Gone)?;
            // Then nothing: closed by the exec (close-on-exec); or the exec's errno.
            match self.answer().await.map_err(ExecError::Gone)? {
                None => Ok(()),
                Some(errno) => Err(ExecError::Refused(io::Error::from_raw_os_error(errno))),
            }
        })
        .await
        .map_err(|_| {
            ExecError::Gone(io::Error::other(format!(
                "the zygote did not start it within {EXEC_WAIT:?}"
            )))
        })?;
        answer?;
        Ok(Became {
            child: self.child,
            guard: self.guard,
            connector: self.connector,
        })
    }
}

impl Zygote {
    /// Write all of `bytes` (MSG_NOSIGNAL: a zygote that is gone is an error, never a
    /// SIGPIPE, also in an embedding program that does not ignore it).
    async fn send(&self, mut bytes: &[u8]) -> io::Result<()> {
        let fd = self.command.as_raw_fd();
        while !bytes.is_empty() {
            let n = self
                .command
                .async_io(tokio::io::Interest::WRITABLE, || {
                    // SAFETY: a send from a live buffer of its length.
                    let n = unsafe {
                        libc::send(fd, bytes.as_ptr().cast(), bytes.len(), libc::MSG_NOSIGNAL)
                    };
                    if n < 0 {
                        Err(io::Error::last_os_error())
                    } else {
                        Ok(n as usize)
                    }
                })
                .await?;
            bytes = &bytes[n..];
        }
        Ok(())
    }

    /// The zygote's next word (an errno, 0 for "ready"), or `None` at the end of the
    /// stream.
    async fn answer(&mut self) -> io::Result<Option<i32>> {
        let mut word = [0u8; 4];
        let mut got = 0;
        while got < word.len() {
            match self.command.read(&mut word[got..]).await? {
                0 if got == 0 => return Ok(None),
                0 => return Err(io::Error::other("the zygote sent a broken answer")),
                n => got += n,
            }
        }
        Ok(Some(i32::from_ne_bytes(word)))
    }
}

/// `fd` itself if it is numbered 3 or more, else a close-on-exec copy that is.
fn above_stdio(fd: OwnedFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    // SAFETY: F_DUPFD_CLOEXEC makes a new descriptor, owned by the OwnedFd below.
    let copy = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
    if copy == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `copy` is a fresh descriptor nobody else owns.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(copy) })
}

/// The command as the zygote reads it: its length, the number of arguments and of
/// variables (each a little-endian u32), then the program, the arguments and the
/// `NAME=value` variables, each ending in a NUL.
fn encode(program: &str, args: &[String], env: &[(Vec<u8>, Vec<u8>)]) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    body.extend_from_slice(&(args.len() as u32).to_le_bytes());
    body.extend_from_slice(&(env.len() as u32).to_le_bytes());
    let mut push = |bytes: &[&[u8]]| -> io::Result<()> {
        for b in bytes {
            if b.contains(&0) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "a command or variable contains a NUL byte",
                ));
            }
            body.extend_from_slice(b);
        }
        body.push(0);
        Ok(())
    };
    push(&[program.as_bytes()])?;
    for a in args {
        push(&[a.as_bytes()])?;
    }
    for (k, v) in env {
        if k.is_empty() || k.contains(&b'=') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a variable name is empty or contains '='",
            ));
        }
        push(&[k, b"=", v])?;
    }
    if body.len() > MAX_COMMAND {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("the command is longer than {MAX_COMMAND} bytes"),
        ));
    }
    let mut message = (body.len() as u32).to_le_bytes().to_vec();
    message.extend_from_slice(&body);
    Ok(message)
}

/// The environment a worker gets: the clean one, then `extra` (a later value of the
/// same name replaces an earlier one, as with `Command::env`).
pub(super) fn worker_env(clean: &CleanEnv, extra: &[(String, String)]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut env: Vec<(Vec<u8>, Vec<u8>)> = clean
        .vars()
        .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect();
    for (k, v) in extra {
        let k = OsStr::new(k).as_bytes().to_vec();
        env.retain(|(name, _)| *name != k);
        env.push((k, v.as_bytes().to_vec()));
    }
    env
}

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

type Decoded = (CString, Vec<CString>, Vec<CString>);

/// The program, its `argv` (the program first, as `Command` does) and its `envp`.
fn decode(body: &[u8]) -> io::Result<Decoded> {
    let bad = || io::Error::from_raw_os_error(libc::EINVAL);
    let count = |at: usize| -> io::Result<usize> {
        let b = body.get(at..at + 4).ok_or_else(bad)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let (nargs, nenv) = (count(0)?, count(4)?);
    let mut strings = body
        .get(8..)
        .ok_or_else(bad)?
        .split_inclusive(|&b| b == 0)
        .map(|s| {
            CStr::from_bytes_with_nul(s)
                .map(CStr::to_owned)
                .map_err(|_| bad())
        });
    let program = strings.next().ok_or_else(bad)??;
    let mut argv = vec![program.clone()];
    for _ in 0..nargs {
        argv.push(strings.next().ok_or_else(bad)??);
    }
    let mut envp = Vec::with_capacity(nenv);
    for _ in 0..nenv {
        envp.push(strings.next().ok_or_else(bad)??);
    }
    if strings.next().is_some() {
        return Err(bad());
    }
    Ok((program, argv, envp))
}

fn pointers(strings: &[CString]) -> Vec<*const libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

unsafe fn send_errno(fd: RawFd, e: &io::Error) {
    send_word(fd, e.raw_os_error().unwrap_or(libc::EIO));
}

unsafe fn send_word(fd: RawFd, word: i32) {
    let word = word.to_ne_bytes();
    libc::send(fd, word.as_ptr().cast(), word.len(), libc::MSG_NOSIGNAL);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_goes_through_the_wire_as_it_was() {
        let env = vec![(b"TERM".to_vec(), b"xterm".to_vec())];
        let args = vec!["-a".to_string(), String::new(), "x y".to_string()];
        let message = encode("/bin/prog", &args, &env).unwrap();
        let (program, argv, envp) = decode(&message[4..]).unwrap();
        assert_eq!(program.to_bytes(), b"/bin/prog");
        let argv: Vec<&[u8]> = argv.iter().map(|a| a.to_bytes()).collect();
        assert_eq!(argv, [&b"/bin/prog"[..], b"-a", b"", b"x y"]);
        assert_eq!(envp[0].to_bytes(), b"TERM=xterm");
    }

    #[test]
    fn a_nul_or_a_broken_name_is_refused_before_anything_is_sent() {
        assert!(encode("/bin/p", &["a\0b".into()], &[]).is_err());
        assert!(encode("/bin/p", &[], &[(b"A=B".to_vec(), b"c".to_vec())]).is_err());
        assert!(encode("/bin/p", &[], &[(Vec::new(), b"c".to_vec())]).is_err());
    }

    #[test]
    fn a_short_or_padded_message_does_not_decode() {
        let message = encode("/bin/p", &["a".into()], &[]).unwrap();
        let body = &message[4..];
        assert!(decode(&body[..body.len() - 1]).is_err());
        let mut padded = body.to_vec();
        padded.extend_from_slice(b"extra\0");
        assert!(decode(&padded).is_err());
        assert!(decode(&[1, 0]).is_err());
    }

    #[test]
    fn later_variables_replace_earlier_ones() {
        let clean = CleanEnv::from_vars([("TERM".into(), "dumb".into())]);
        let env = worker_env(&clean, &[("TERM".into(), "xterm".into())]);
        assert_eq!(env, vec![(b"TERM".to_vec(), b"xterm".to_vec())]);
    }
}
