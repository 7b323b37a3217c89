//! Worker processes: spawned in their own process group, tied to the life of the
//! termshare process, killed by a `Drop` guard, and reaped.
//!
//! Three layers make "no orphan processes" hold:
//! 1. Every worker runs in a new process group, so one `killpg` reaches everything it
//!    forks into that group (pueue and process-wrap do the same).
//! 2. `PR_SET_PDEATHSIG(SIGKILL)` kills the worker when termshare dies, even by
//!    `kill -9`. The signal fires when the *thread* that forked exits, so all forks
//!    happen on one dedicated spawner thread that lives as long as the
//!    [`ProcessSpawner`] (never on `spawn_blocking` threads, which tokio retires).
//!    What it forks is a *zygote* (`zygote/`): this executable run anew, which
//!    prepares everything but the command and then `execve`s the worker in place,
//!    so the worker keeps the zygote's pid, group, parent and parent-death signal.
//!    One zygote of each kind is made ahead of time; a start only sends it the
//!    command.
//! 3. [`ProcessGroupGuard`] kills the group when dropped, which is the one cleanup
//!    that runs however the owning actor ends (ractor skips `post_stop` on a kill).
//!
//! Backends run in the foreground (`tmate -F`), so the process we supervise is the one
//! holding the relay connection; pane processes run in sessions of their own and get
//! SIGHUP from the kernel when the backend's pty closes.
//!
//! Every worker gets the allow-listed environment of [`CleanEnv`] (never termshare's
//! secrets) and is run by the absolute path resolved at start. A worker may also be
//! started in a private network namespace ([`crate::netns`]).

mod group;
mod spawned;
mod spawner;
mod stops;
mod worker;
mod zygote;

pub use group::{group_alive, kill_group, process_state, GroupRegistry, ProcessGroupGuard};
pub use spawned::{AbortOnDrop, LinkWait, SpawnedProcess};
pub use spawner::{ProcessSpawner, WorkerCommand};
pub use stops::{StopWatch, Stops};
pub use worker::{Attached, Attachment, GracefulStop, ParticipantCount, ProcessWorker};

use std::collections::HashSet;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use parking_lot::Mutex;
use termshare_actors::{Probe, TerminateOutcome, Worker, WorkerExit};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::launch::CleanEnv;
