//! The spawner: every fork on one long-lived thread (PR_SET_PDEATHSIG is tied to the
//! forking thread), each child in a group of its own and guarded from the fork. A
//! worker is a zygote made ahead of time ([`super::zygote`]) that is told what to run.

use super::zygote::{Became, ExecError, Kind, Zygote};
use super::*;

/// A command line for a worker. It runs with the spawner's clean environment plus
/// `env`.
#[derive(Clone, Debug, Default)]
pub struct WorkerCommand {
    /// An absolute path, resolved when termshare started.
    pub program: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// Variables added to the clean environment.
    pub env: Vec<(String, String)>,
}

impl WorkerCommand {
    /// `program` with no arguments and nothing added to the environment.
    pub fn new(program: impl Into<String>) -> Self {
        WorkerCommand {
            program: program.into(),
            ..Default::default()
        }
    }

    /// One more argument.
    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.args.push(a.into());
        self
    }

    /// More arguments, in order.
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

/// A job for the spawner thread.
enum Job {
    /// Fork a zygote now: a start is waiting for it.
    Fork(Kind, oneshot::Sender<io::Result<Zygote>>),
    /// A zygote of this kind was taken: make the next one once starts pause.
    Refill(Kind),
}

/// The zygotes ready to become workers: at most one of each kind, made once that kind
/// has been asked for (a daemon that never shares with tty-share keeps no namespace).
#[derive(Default)]
struct Ready {
    plain: Option<Zygote>,
    isolated: Option<Zygote>,
    /// Set by [`ProcessSpawner::close`]: no zygote is made ahead of time any more.
    /// Here, under the pool's lock, so that a refill and `close` agree.
    closed: bool,
}

impl Ready {
    fn slot(&mut self, kind: Kind) -> &mut Option<Zygote> {
        match kind {
            Kind::Plain => &mut self.plain,
            Kind::Isolated => &mut self.isolated,
        }
    }
}

/// Make a zygote of each kind in `kinds` whose slot is empty, unless the spawner is
/// closed: a zygote made while `close` runs is dropped (its guard kills it), never
/// left in the pool. A fork that fails is tried again by a later start.
fn refill_pool(kinds: &mut Vec<Kind>, pool: &Mutex<Ready>, groups: &Arc<GroupRegistry>) {
    for kind in kinds.drain(..) {
        {
            let mut ready = pool.lock();
            if ready.closed || ready.slot(kind).is_some() {
                continue;
            }
        }
        let zygote = match Zygote::fork(kind, groups) {
            Ok(zygote) => zygote,
            Err(e) => {
                // The next start of this kind forks its own, and says why if it fails.
                tracing::warn!(error = %e, ?kind, "cannot make a zygote ahead of time");
                continue;
            }
        };
        let mut ready = pool.lock();
        if !ready.closed {
            *ready.slot(kind) = Some(zygote);
        }
    }
}

/// The spawner thread: forks a zygote when a start asks for one, and refills the pool
/// [`REFILL_AFTER`] the first take of a burst. Ends when the last [`ProcessSpawner`]
/// handle is dropped; the kernel then sends PDEATHSIG to any child still alive,
/// zygotes included.
fn spawner_thread(
    jobs: std::sync::mpsc::Receiver<Job>,
    pool: Arc<Mutex<Ready>>,
    groups: Arc<GroupRegistry>,
    pending: watch::Sender<usize>,
) {
    use std::sync::mpsc::RecvTimeoutError;
    let mut refill: Vec<Kind> = Vec::new();
    // Refill requests counted in `pending` and not yet carried out.
    let mut asked = 0usize;
    let mut due: Option<std::time::Instant> = None;
    loop {
        let job = match due {
            None => jobs.recv().map_err(|_| RecvTimeoutError::Disconnected),
            Some(at) => jobs.recv_timeout(at.saturating_duration_since(std::time::Instant::now())),
        };
        match job {
            Err(RecvTimeoutError::Disconnected) => return,
            Err(RecvTimeoutError::Timeout) => {
                refill_pool(&mut refill, &pool, &groups);
                due = None;
                let done = std::mem::take(&mut asked);
                pending.send_modify(|n| *n = n.saturating_sub(done));
            }
            Ok(Job::Fork(kind, reply)) => {
                if reply.is_closed() {
                    continue; // the start that asked is gone: fork nothing for it
                }
                if pool.lock().closed {
                    let _ = reply.send(Err(closed()));
                    continue;
                }
                // The guard owns the group from the instant of the fork: if the start
                // that asked is gone by the handover, the unsent zygote is dropped,
                // and the guard kills it.
                let _ = reply.send(Zygote::fork(kind, &groups));
            }
            Ok(Job::Refill(kind)) => {
                asked += 1;
                if !refill.contains(&kind) {
                    refill.push(kind);
                }
                due = due.or(Some(std::time::Instant::now() + REFILL_AFTER));
            }
        }
    }
}

/// The error of a start after [`ProcessSpawner::close`].
fn closed() -> io::Error {
    io::Error::other("termshare is shutting down: no new worker is started")
}

/// How long after a zygote was taken the next is made: a refill forks and execs, and
/// should not compete for the CPU with the start that took the last one (about 8 ms
/// here). Starts closer together than this find the pool empty and wait for a fork.
const REFILL_AFTER: Duration = Duration::from_millis(10);

/// Forks every worker from one long-lived thread (see the module docs for why).
pub struct ProcessSpawner {
    jobs: std::sync::mpsc::Sender<Job>,
    registry: Arc<GroupRegistry>,
    /// The environment of every worker, taken when the spawner was made.
    env: Arc<CleanEnv>,
    /// Which workers are stopped, from SIGCHLD (the heartbeat's source).
    stops: Arc<super::Stops>,
    /// Zygotes made ahead of time (see [`super::zygote`]).
    ready: Arc<Mutex<Ready>>,
    /// The groups of zygotes not yet told what to run (not workers: `registry` does
    /// not list them).
    zygotes: Arc<GroupRegistry>,
    /// Refills asked for and not yet done (see [`ProcessSpawner::settled`]).
    refills: watch::Sender<usize>,
}

impl ProcessSpawner {
    /// Must be called inside a tokio runtime: the children are reaped by it. Workers
    /// will get the allow-listed part of the current environment.
    pub fn new() -> io::Result<Arc<Self>> {
        Self::with_env(CleanEnv::from_current())
    }

    /// Like [`ProcessSpawner::new`], with `env` as every worker's environment.
    pub fn with_env(env: CleanEnv) -> io::Result<Arc<Self>> {
        let handle = tokio::runtime::Handle::try_current()
            .map_err(|_| io::Error::other("termshare must be started inside a tokio runtime"))?;
        let stops = {
            let _runtime = handle.enter();
            super::Stops::start()?
        };
        let (jobs, rx) = std::sync::mpsc::channel::<Job>();
        let registry = Arc::new(GroupRegistry::default());
        let ready = Arc::new(Mutex::new(Ready::default()));
        let zygotes = Arc::new(GroupRegistry::default());
        let (refills, pending) = watch::channel(0usize);
        drop(pending);
        let (groups, pool, pending) = (zygotes.clone(), ready.clone(), refills.clone());
        std::thread::Builder::new()
            .name("termshare-spawner".into())
            .spawn(move || {
                let _runtime = handle.enter();
                spawner_thread(rx, pool, groups, pending);
            })?;
        Ok(Arc::new(ProcessSpawner {
            jobs,
            registry,
            env: Arc::new(env),
            stops,
            ready,
            zygotes,
            refills,
        }))
    }

    /// Returns once no zygote is being made ahead of time: the spawner's background
    /// work is done. For a benchmark, so that a measurement (termshare's or its
    /// baseline's) is not shared with a refill of the pool.
    pub async fn settled(&self) {
        let mut pending = self.refills.subscribe();
        let _ = pending.wait_for(|n| *n == 0).await;
    }

    /// Kill every worker group and every zygote, and make no more zygotes ahead of
    /// time (shutdown's backstop: nothing termshare started outlives it).
    pub fn close(&self) {
        let pooled = {
            let mut ready = self.ready.lock();
            ready.closed = true;
            (ready.plain.take(), ready.isolated.take())
        };
        drop(pooled); // their guards kill them
        self.zygotes.kill_all();
        self.registry.kill_all();
    }

    /// The live worker groups, for the shutdown backstop.
    pub fn registry(&self) -> &Arc<GroupRegistry> {
        &self.registry
    }

    /// The environment every worker gets.
    pub fn env(&self) -> &Arc<CleanEnv> {
        &self.env
    }

    /// Start `wc` in a new process group with stdin closed and stdout/stderr piped.
    pub async fn spawn(&self, wc: &WorkerCommand) -> io::Result<SpawnedProcess> {
        let (process, _) = self.spawn_as(Kind::Plain, wc).await?;
        Ok(process)
    }

    /// Like [`ProcessSpawner::spawn`], in a private network namespace, with the
    /// connector that reaches into it ([`crate::netns`]).
    pub async fn spawn_isolated(
        &self,
        wc: &WorkerCommand,
    ) -> io::Result<(SpawnedProcess, Arc<crate::netns::Connector>)> {
        let (process, connector) = self.spawn_as(Kind::Isolated, wc).await?;
        let connector =
            connector.ok_or_else(|| io::Error::other("an isolated worker has no connector"))?;
        Ok((process, connector))
    }

    /// The zygote made ahead of time, if one of `kind` still waits.
    fn pooled(&self, kind: Kind) -> Option<Zygote> {
        let pooled = self.ready.lock().slot(kind).take();
        // Refilled shortly (a failure to ask only costs a later start a fork).
        // Counted before it is sent: the thread may be done with it at once.
        self.refills.send_modify(|n| *n += 1);
        if self.jobs.send(Job::Refill(kind)).is_err() {
            self.refills.send_modify(|n| *n = n.saturating_sub(1));
        }
        pooled.filter(Zygote::alive)
    }

    /// A new zygote of `kind`, forked now.
    async fn fork_zygote(&self, kind: Kind) -> io::Result<Zygote> {
        let (tx, rx) = oneshot::channel();
        self.jobs
            .send(Job::Fork(kind, tx))
            .map_err(|_| io::Error::other("the spawner thread is gone"))?;
        rx.await
            .map_err(|_| io::Error::other("the spawner thread is gone"))?
    }

    async fn spawn_as(
        &self,
        kind: Kind,
        wc: &WorkerCommand,
    ) -> io::Result<(SpawnedProcess, Option<Arc<crate::netns::Connector>>)> {
        termshare_actors::faultpoints::pause("spawn.before_fork").await;
        let env = super::zygote::worker_env(&self.env, &wc.env);
        let exec = |z: Zygote| {
            debug_assert_eq!(z.kind(), kind);
            z.exec(&wc.program, &wc.args, &env)
        };
        let became = match self.pooled(kind) {
            // One found dead, or whose setup failed, or whose socket broke is not
            // handed out: a fresh one does the job. (One killed after it took the
            // command is a worker killed at birth: its exit says so.)
            Some(z) => match exec(z).await {
                Err(ExecError::Gone(_)) => None,
                other => Some(other),
            },
            None => None,
        };
        let became = match became {
            Some(done) => done,
            None => exec(self.fork_zygote(kind).await?).await,
        };
        let Became {
            mut child,
            mut guard,
            connector,
        } = became.map_err(|(ExecError::Refused(e) | ExecError::Gone(e))| e)?;
        {
            // Under the pool's lock, as `close` sets `closed`: either `close` finds
            // this group in the registry, or this start finds the spawner closed and
            // its guard, dropped, kills the worker.
            let ready = self.ready.lock();
            if ready.closed {
                return Err(closed());
            }
            guard.move_to(&self.registry);
        }
        // The worker runs; the start that asked may be gone before the handover (the
        // guard then kills it).
        termshare_actors::faultpoints::pause("spawn.handover").await;
        let pid = guard.pgid() as u32;
        let stopped = self.stops.watch(pid as i32);
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
        let process = SpawnedProcess {
            pid,
            stdout: Some(BufReader::new(stdout).lines()),
            exit,
            guard,
            stderr_tail,
            stderr_head,
            tasks: vec![AbortOnDrop(stderr_task)],
            env: self.env.clone(),
            stopped,
            _reaper: reaper,
        };
        Ok((process, connector))
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
            by_signal: s.signal().is_some(),
        },
        Err(e) => WorkerExit {
            description: format!("could not be waited for: {e}"),
            success: false,
            by_signal: false,
        },
    }
}
