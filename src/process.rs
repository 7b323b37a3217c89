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

/// Every live worker process group, so that shutdown can kill them all as a backstop.
#[derive(Default)]
pub struct GroupRegistry {
    groups: Mutex<HashSet<i32>>,
}

impl GroupRegistry {
    pub fn live(&self) -> Vec<i32> {
        self.groups.lock().iter().copied().collect()
    }

    /// SIGKILL every registered group. "Already gone" counts as success.
    pub fn kill_all(&self) {
        for pgid in self.groups.lock().drain() {
            let _ = kill_group(pgid, Signal::SIGKILL);
        }
    }
}

/// Signal a process group; a group that no longer exists is not an error.
pub fn kill_group(pgid: i32, signal: Signal) -> Result<(), Errno> {
    match killpg(Pid::from_raw(pgid), signal) {
        Ok(()) | Err(Errno::ESRCH) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Kills its process group when dropped.
pub struct ProcessGroupGuard {
    pgid: i32,
    registry: Arc<GroupRegistry>,
    released: bool,
}

impl ProcessGroupGuard {
    /// Own group `pgid` (registered for the shutdown backstop) until dropped.
    fn new(pgid: i32, registry: Arc<GroupRegistry>) -> Self {
        registry.groups.lock().insert(pgid);
        ProcessGroupGuard {
            pgid,
            registry,
            released: false,
        }
    }

    pub fn pgid(&self) -> i32 {
        self.pgid
    }

    /// The group was killed and its leader reaped: forget it, so that a later drop
    /// cannot signal a new group that reuses the id.
    fn release(&mut self) {
        let _ = kill_group(self.pgid, Signal::SIGKILL); // stragglers
        self.released = true;
        self.registry.groups.lock().remove(&self.pgid);
    }
}

impl Drop for ProcessGroupGuard {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        // The chaos harness's "broken build": a guard that forgets to kill.
        if termshare_actors::faultpoints::check("process.drop_guard").is_some() {
            return;
        }
        if let Err(e) = kill_group(self.pgid, Signal::SIGKILL) {
            tracing::error!(pgid = self.pgid, error = %e, "could not kill worker group");
        }
        self.registry.groups.lock().remove(&self.pgid);
    }
}

/// A command line for a worker. It runs with the spawner's clean environment plus
/// `env`.
#[derive(Clone, Debug, Default)]
pub struct WorkerCommand {
    /// An absolute path, resolved when termshare started.
    pub program: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
}

impl WorkerCommand {
    pub fn new(program: impl Into<String>) -> Self {
        WorkerCommand {
            program: program.into(),
            ..Default::default()
        }
    }

    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.args.push(a.into());
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, a: I) -> Self {
        self.args.extend(a.into_iter().map(Into::into));
        self
    }

    /// One variable on top of the clean environment.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }
}

/// A spawned child and the guard that owns its group from the instant of the fork.
type Spawned = (Child, ProcessGroupGuard);
type Job = (Command, oneshot::Sender<io::Result<Spawned>>);

/// Forks every worker from one long-lived thread (see the module docs for why).
pub struct ProcessSpawner {
    jobs: std::sync::mpsc::Sender<Job>,
    registry: Arc<GroupRegistry>,
    /// The environment of every worker, taken when the spawner was made.
    env: Arc<CleanEnv>,
}

impl ProcessSpawner {
    /// Must be called inside a tokio runtime: the children are reaped by it. Workers
    /// will get the allow-listed part of the current environment.
    pub fn new() -> io::Result<Arc<Self>> {
        Self::with_env(CleanEnv::from_current())
    }

    pub fn with_env(env: CleanEnv) -> io::Result<Arc<Self>> {
        let handle = tokio::runtime::Handle::try_current()
            .map_err(|_| io::Error::other("termshare must be started inside a tokio runtime"))?;
        let (jobs, rx) = std::sync::mpsc::channel::<Job>();
        let registry = Arc::new(GroupRegistry::default());
        let groups = registry.clone();
        std::thread::Builder::new()
            .name("termshare-spawner".into())
            .spawn(move || {
                let _runtime = handle.enter();
                // Ends when the last ProcessSpawner handle is dropped; the kernel then
                // sends PDEATHSIG to any child still alive.
                while let Ok((mut cmd, reply)) = rx.recv() {
                    // The guard owns the group from the instant of the fork: if the
                    // caller is gone by the time the child is handed over (a revoke
                    // during the start), the unsent pair is dropped, and the guard
                    // kills the group.
                    let spawned = cmd.spawn().and_then(|child| {
                        let pid = child
                            .id()
                            .ok_or_else(|| io::Error::other("child has no pid"))?;
                        Ok((child, ProcessGroupGuard::new(pid as i32, groups.clone())))
                    });
                    termshare_actors::faultpoints::pause_thread("spawn.handover");
                    let _ = reply.send(spawned);
                }
            })?;
        Ok(Arc::new(ProcessSpawner {
            jobs,
            registry,
            env: Arc::new(env),
        }))
    }

    pub fn registry(&self) -> &Arc<GroupRegistry> {
        &self.registry
    }

    pub fn env(&self) -> &Arc<CleanEnv> {
        &self.env
    }

    /// Start `wc` in a new process group with stdin closed and stdout/stderr piped.
    pub async fn spawn(&self, wc: &WorkerCommand) -> io::Result<SpawnedProcess> {
        self.spawn_in(wc, None).await
    }

    /// Like [`ProcessSpawner::spawn`]; with a `netns` plan the worker runs in a
    /// private network namespace with a connector helper ([`crate::netns`]).
    pub async fn spawn_in(
        &self,
        wc: &WorkerCommand,
        netns: Option<crate::netns::Plan>,
    ) -> io::Result<SpawnedProcess> {
        let mut cmd = Command::new(&wc.program);
        cmd.args(&wc.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(false);
        self.env.apply(&mut cmd);
        for (k, v) in &wc.env {
            cmd.env(k, v);
        }
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: only async-signal-safe calls (prctl, getppid) between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) == -1 {
                    return Err(io::Error::last_os_error());
                }
                // The parent died before prctl took effect: do not run orphaned.
                if libc::getppid() != parent {
                    // (No allocation between fork and exec: a plain errno.)
                    return Err(io::Error::from_raw_os_error(libc::ESRCH));
                }
                Ok(())
            });
            if let Some(plan) = netns {
                // SAFETY: runs in the child before exec; see crate::netns::enter.
                cmd.pre_exec(move || crate::netns::enter(&plan, parent));
            }
        }
        termshare_actors::faultpoints::pause("spawn.before_fork").await;
        let (tx, rx) = oneshot::channel();
        self.jobs
            .send((cmd, tx))
            .map_err(|_| io::Error::other("the spawner thread is gone"))?;
        let (mut child, guard) = rx
            .await
            .map_err(|_| io::Error::other("the spawner thread is gone"))??;
        let pid = guard.pgid() as u32;
        termshare_actors::faultpoints::pause("spawn.after_fork").await;
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        let (exit_tx, exit) = watch::channel(None);
        let reaper = tokio::spawn(async move {
            let status = child.wait().await;
            let _ = exit_tx.send(Some(describe_exit(status)));
        });
        let stderr_tail = Arc::new(Mutex::new(Vec::new()));
        let stderr_head = Arc::new(Mutex::new(Vec::new()));
        let (tail, head) = (stderr_tail.clone(), stderr_head.clone());
        let stderr_task = tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                // The first lines (an error before a long usage text), then the last.
                let mut h = head.lock();
                if h.len() < 20 {
                    h.push(line);
                    continue;
                }
                let mut t = tail.lock();
                if t.len() == 20 {
                    t.remove(0);
                }
                t.push(line);
            }
        });
        Ok(SpawnedProcess {
            pid,
            stdout: Some(BufReader::new(stdout).lines()),
            exit,
            guard,
            stderr_tail,
            stderr_head,
            tasks: vec![AbortOnDrop(stderr_task)],
            env: self.env.clone(),
            _reaper: reaper,
        })
    }
}

fn describe_exit(status: io::Result<ExitStatus>) -> WorkerExit {
    match status {
        Ok(s) => WorkerExit {
            description: match (s.code(), s.signal()) {
                (Some(c), _) => format!("exited with status {c}"),
                (None, Some(sig)) => format!(
                    "killed by {}",
                    Signal::try_from(sig).map_or_else(|_| sig.to_string(), |s| s.to_string())
                ),
                _ => "ended".into(),
            },
            success: s.success(),
        },
        Err(e) => WorkerExit {
            description: format!("could not be waited for: {e}"),
            success: false,
        },
    }
}

/// Aborts its task when dropped.
pub struct AbortOnDrop(pub JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A freshly spawned worker process. Dropping it kills its group.
pub struct SpawnedProcess {
    pub pid: u32,
    pub stdout: Option<Lines<BufReader<ChildStdout>>>,
    pub exit: watch::Receiver<Option<WorkerExit>>,
    pub guard: ProcessGroupGuard,
    stderr_tail: Arc<Mutex<Vec<String>>>,
    /// The first 20 lines of stderr (the tail has the last 20 after those).
    stderr_head: Arc<Mutex<Vec<String>>>,
    tasks: Vec<AbortOnDrop>,
    /// For the commands that stop it (`tmate kill-server`): the same clean environment.
    env: Arc<CleanEnv>,
    // Not aborted on drop: it must go on to reap the killed child.
    _reaper: JoinHandle<()>,
}

/// Why no link was read.
#[derive(Debug)]
pub enum LinkWait {
    TimedOut,
    Exited(String),
}

impl SpawnedProcess {
    /// The last lines the process wrote to stderr, for error messages.
    pub fn stderr_tail(&self) -> String {
        let head = self.stderr_head.lock();
        let tail = self.stderr_tail.lock();
        let last: Vec<&String> = head.iter().chain(tail.iter()).collect();
        let from = last.len().saturating_sub(20);
        last[from..]
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(" | ")
    }

    /// Every stderr line kept: the first 20, then the last 20.
    pub fn stderr_lines(&self) -> Vec<String> {
        let mut all = self.stderr_head.lock().clone();
        all.extend(self.stderr_tail.lock().iter().cloned());
        all
    }

    /// Read stdout lines until `parse` returns the value, the process exits, or
    /// `timeout` passes. Afterwards stdout keeps being drained so the process never
    /// blocks on a full pipe.
    pub async fn read_until<T>(
        &mut self,
        timeout: Duration,
        parse: impl FnMut(&str) -> Option<T>,
    ) -> Result<T, LinkWait> {
        self.read_until_then(timeout, parse, |_| {}).await
    }

    /// [`SpawnedProcess::read_until`], then every later line goes to `then` (tmate's
    /// new links after a relay reconnect) while stdout is drained.
    pub async fn read_until_then<T>(
        &mut self,
        timeout: Duration,
        mut parse: impl FnMut(&str) -> Option<T>,
        mut then: impl FnMut(&str) + Send + 'static,
    ) -> Result<T, LinkWait> {
        let mut lines = self.stdout.take().expect("stdout read once");
        let deadline = Instant::now() + timeout;
        let result = loop {
            tokio::select! {
                line = lines.next_line() => match line {
                    Ok(Some(line)) => {
                        if let Some(v) = parse(&line) {
                            break Ok(v);
                        }
                    }
                    Ok(None) | Err(_) => break Err(LinkWait::Exited(self.wait_exit().await)),
                },
                _ = tokio::time::sleep_until(deadline) => break Err(LinkWait::TimedOut),
            }
        };
        self.tasks.push(AbortOnDrop(tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                then(&line);
            }
        })));
        result
    }

    /// Waits (briefly) for the exit status after stdout closed.
    async fn wait_exit(&mut self) -> String {
        let mut exit = self.exit.clone();
        let waited = tokio::time::timeout(Duration::from_secs(2), exit.wait_for(|e| e.is_some()))
            .await
            .ok()
            .and_then(|r| {
                r.ok()
                    .and_then(|e| e.as_ref().map(|e| e.description.clone()))
            });
        waited.unwrap_or_else(|| "closed its output".into())
    }

    pub fn has_exited(&self) -> bool {
        self.exit.borrow().is_some()
    }
}

/// How a worker is asked to stop before it is killed.
pub enum GracefulStop {
    /// SIGTERM to the process group.
    SigTerm,
    /// Run this command (e.g. `tmate -S SOCK kill-server`), then SIGTERM the group.
    Command(WorkerCommand),
}

/// What must live exactly as long as a worker (its scratch directory, its link
/// front): dropped with it, and told first when the worker is being stopped.
pub trait Attached: Send + Sync + 'static {
    /// The worker is being stopped: let go of its participants now, before the
    /// process is signalled (a front closes every connection at once).
    fn stopping(&self) {}
}

/// A scratch directory: removed when the worker is dropped.
impl Attached for tempfile::TempDir {}

pub type Attachment = Box<dyn Attached>;

/// A [`Worker`] over one OS process group.
pub struct ProcessWorker {
    process: SpawnedProcess,
    graceful: GracefulStop,
    /// Dropped after the process guard has killed the group: files the worker needs
    /// while it runs (tmate's socket and config), the front participants reach it by.
    attached: Vec<Attachment>,
    /// How the heartbeat checks that it still serves, when the backend can tell.
    serving: Option<termshare_actors::ServingProbe>,
    /// New links the backend hands out while it runs, when it does.
    link_updates: Option<watch::Receiver<termshare_actors::Links>>,
    /// How many participants are connected, when the backend can tell.
    participants: Option<ParticipantCount>,
}

/// Counts a worker's connected participants (from what the backend writes down).
pub type ParticipantCount = Arc<dyn Fn() -> Option<u32> + Send + Sync>;

impl ProcessWorker {
    pub fn new(process: SpawnedProcess, graceful: GracefulStop, attached: Vec<Attachment>) -> Self {
        ProcessWorker {
            process,
            graceful,
            attached,
            serving: None,
            link_updates: None,
            participants: None,
        }
    }

    /// Tell participants with `count` (upterm: its log of joins and leaves).
    pub fn with_participants(mut self, count: ParticipantCount) -> Self {
        self.participants = Some(count);
        self
    }

    /// Links the backend announces after the first (they replace the share's).
    pub fn with_link_updates(mut self, updates: watch::Receiver<termshare_actors::Links>) -> Self {
        self.link_updates = Some(updates);
        self
    }

    /// Check that it still serves, not only that it runs ([`crate::backends::serving`]).
    pub fn with_serving_probe(mut self, probe: termshare_actors::ServingProbe) -> Self {
        self.serving = Some(probe);
        self
    }

    async fn exited_within(&self, d: Duration) -> bool {
        let mut exit = self.process.exit.clone();
        let exited = matches!(
            tokio::time::timeout(d, exit.wait_for(|e| e.is_some())).await,
            Ok(Ok(_))
        );
        exited
    }
}

#[async_trait]
impl Worker for ProcessWorker {
    fn pid(&self) -> Option<u32> {
        Some(self.process.pid)
    }

    fn exit_watch(&self) -> watch::Receiver<Option<WorkerExit>> {
        self.process.exit.clone()
    }

    fn serving_probe(&self) -> Option<termshare_actors::ServingProbe> {
        self.serving.clone()
    }

    fn link_updates(&self) -> Option<watch::Receiver<termshare_actors::Links>> {
        self.link_updates.clone()
    }

    fn tells_participants(&self) -> bool {
        self.participants.is_some()
    }

    async fn participants(&mut self) -> Option<u32> {
        let count = self.participants.clone()?;
        // A small file read, off the runtime's threads.
        tokio::task::spawn_blocking(move || count())
            .await
            .ok()
            .flatten()
    }

    async fn terminate(&mut self, grace: Duration) -> TerminateOutcome {
        for a in &self.attached {
            a.stopping();
        }
        if self.process.has_exited() {
            // The leader is gone; make sure nothing of its group is left either.
            self.process.guard.release();
            return TerminateOutcome {
                escalated: false,
                already_gone: true,
            };
        }
        let pgid = self.process.guard.pgid();
        let started = Instant::now();
        if let GracefulStop::Command(cmd) = &self.graceful {
            let mut c = Command::new(&cmd.program);
            c.args(&cmd.args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true);
            self.process.env.apply(&mut c);
            for (k, v) in &cmd.env {
                c.env(k, v);
            }
            if let Ok(mut child) = c.spawn() {
                let _ = tokio::time::timeout(grace, child.wait()).await;
            }
        }
        let _ = kill_group(pgid, Signal::SIGTERM);
        let left = grace.saturating_sub(started.elapsed());
        if self.exited_within(left).await {
            self.process.guard.release();
            return TerminateOutcome::default();
        }
        let _ = kill_group(pgid, Signal::SIGKILL);
        if self.exited_within(Duration::from_secs(2)).await {
            self.process.guard.release();
        } else {
            tracing::error!(pid = self.process.pid, "worker not reaped 2s after SIGKILL");
        }
        TerminateOutcome {
            escalated: true,
            already_gone: false,
        }
    }

    async fn probe(&mut self) -> Probe {
        if self.process.has_exited() {
            return Probe::Gone;
        }
        // The kernel's view: `T` (stopped, e.g. SIGSTOP) or `t` (traced) does not run.
        match process_state(self.process.pid) {
            None | Some('Z') | Some('X') => Probe::Gone,
            Some('T') | Some('t') => Probe::Unresponsive,
            Some(_) => Probe::Alive,
        }
    }
}

/// The state letter of `/proc/PID/stat` (R, S, D, T, Z, …).
pub fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// Is any process of group `pgid` still alive? (Zombies do not count.) For tests and
/// the chaos harness: reads /proc.
pub fn group_alive(pgid: i32) -> bool {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return false;
    };
    dir.flatten().any(|e| {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            return false;
        };
        // pid (comm) state ppid pgrp ...; comm may contain spaces: split after ')'.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            return false;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        fields.len() > 2 && fields[0] != "Z" && fields[2] == pgid.to_string()
    })
}
