//! The spawner: every fork on one long-lived thread (PR_SET_PDEATHSIG is tied to the
//! forking thread), each child in a group of its own and guarded from the fork.

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

/// A spawned child and the guard that owns its group from the instant of the fork.
type Spawned = (Child, ProcessGroupGuard);
type Job = (Command, oneshot::Sender<io::Result<Spawned>>);

/// Forks every worker from one long-lived thread (see the module docs for why).
pub struct ProcessSpawner {
    jobs: std::sync::mpsc::Sender<Job>,
    registry: Arc<GroupRegistry>,
    /// The environment of every worker, taken when the spawner was made.
    env: Arc<CleanEnv>,
    /// Which workers are stopped, from SIGCHLD (the heartbeat's source).
    stops: Arc<super::Stops>,
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
            stops,
        }))
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
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)?;
                // The parent died before prctl took effect: do not run orphaned.
                if nix::unistd::getppid().as_raw() != parent {
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
        Ok(SpawnedProcess {
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
            by_signal: s.signal().is_some(),
        },
        Err(e) => WorkerExit {
            description: format!("could not be waited for: {e}"),
            success: false,
            by_signal: false,
        },
    }
}
