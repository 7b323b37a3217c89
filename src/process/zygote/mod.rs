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

mod entry;
mod wire;

use std::ffi::OsStr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use tokio::io::AsyncReadExt;

use super::*;

/// `argv[0]` of a zygote: what the constructor looks for, and what `ps` shows (its
/// `comm`, what `top` shows, is `ts-zygote`).
const ARGV0: &str = "termshare-zygote";
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
        if !cfg!(all(target_os = "linux", target_env = "gnu")) {
            // No constructor is linked in (entry.rs): an exec of this binary would run
            // its `main` instead of a zygote.
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "termshare starts workers only on Linux with glibc (the zygote's constructor)",
            ));
        }
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
        let message = wire::encode(program, args, env).map_err(ExecError::Refused)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_variables_replace_earlier_ones() {
        let clean = CleanEnv::from_vars([("TERM".into(), "dumb".into())]);
        let env = worker_env(&clean, &[("TERM".into(), "xterm".into())]);
        assert_eq!(env, vec![(b"TERM".to_vec(), b"xterm".to_vec())]);
    }
}
