//! A spawned worker process: its output read until its link, its stderr kept for
//! error messages, its exit watched.

use super::*;

/// Aborts its task when dropped.
pub struct AbortOnDrop(pub JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A freshly spawned worker process. Dropping it kills its group.
pub struct SpawnedProcess {
    /// The child's pid, which is also its process group id.
    pub pid: u32,
    /// Its stdout lines; taken by the first [`SpawnedProcess::read_until`].
    pub stdout: Option<Lines<BufReader<ChildStdout>>>,
    /// `Some` once the child has exited and been reaped.
    pub exit: watch::Receiver<Option<WorkerExit>>,
    /// Kills the child's group when dropped.
    pub guard: ProcessGroupGuard,
    pub(super) stderr_tail: Arc<Mutex<Vec<String>>>,
    /// The first 20 lines of stderr (the tail has the last 20 after those).
    pub(super) stderr_head: Arc<Mutex<Vec<String>>>,
    pub(super) tasks: Vec<AbortOnDrop>,
    /// For the commands that stop it (`tmate kill-server`): the same clean environment.
    pub(super) env: Arc<CleanEnv>,
    /// Whether it is stopped (SIGSTOP), as the kernel tells.
    pub stopped: super::StopWatch,
    // Not aborted on drop: it must go on to reap the killed child.
    pub(super) _reaper: JoinHandle<()>,
}

/// Why no link was read.
#[derive(Debug)]
pub enum LinkWait {
    /// The timeout passed first.
    TimedOut,
    /// Stdout closed first; how the process ended (`exited with status 1`, ...).
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
    pub(super) async fn wait_exit(&mut self) -> String {
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

    /// Whether the process has exited and been reaped.
    pub fn has_exited(&self) -> bool {
        self.exit.borrow().is_some()
    }
}
