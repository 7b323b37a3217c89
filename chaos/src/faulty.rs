//! Backend misbehaviour, injected through the `Backend` and `Worker` traits that the
//! real adapters implement: the tree under test is the production one.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use termshare_actors::{
    Backend, BackendError, BackendName, Probe, ShareId, StartedWorker, TerminateOutcome, Worker,
    WorkerExit, WorkerSpec,
};
use tokio::sync::watch;

/// How long after its link a `LinkThenExit` worker dies.
const LINK_THEN_EXIT_AFTER: std::time::Duration = std::time::Duration::from_millis(10);

/// What the next start does instead of its normal job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartFault {
    /// The backend prints garbage instead of a link.
    Garbage,
    /// The relay never answers: no link ever.
    NoLink,
    /// The link arrives, then the worker exits ([`LINK_THEN_EXIT_AFTER`] later).
    LinkThenExit,
}

/// Faults armed by the harness, consumed by the next start or revoke.
#[derive(Default)]
pub struct FaultPlan {
    pub next_start: Mutex<Option<StartFault>>,
    /// Shares whose worker exits just as it is told to stop.
    pub exit_on_terminate: Mutex<HashSet<ShareId>>,
}

/// Kills a share's worker from outside (SIGKILL of its group, or the fake's crash).
pub type Crash = Arc<dyn Fn(ShareId, Option<u32>) + Send + Sync>;

pub struct FaultyBackend {
    pub inner: Arc<dyn Backend>,
    /// Runs for `Garbage` (a real stand-in); `None`: simulated.
    pub garbage: Option<Arc<dyn Backend>>,
    /// Runs for `NoLink` (a real stand-in); `None`: simulated.
    pub silent: Option<Arc<dyn Backend>>,
    pub plan: Arc<FaultPlan>,
    pub crash: Crash,
}

#[async_trait]
impl Backend for FaultyBackend {
    fn name(&self) -> BackendName {
        self.inner.name()
    }

    fn check(&self) -> Result<(), BackendError> {
        self.inner.check()
    }

    fn restricts_joins(&self) -> bool {
        self.inner.restricts_joins()
    }

    async fn start(&self, spec: WorkerSpec) -> Result<StartedWorker, BackendError> {
        let fault = self.plan.next_start.lock().take();
        let share = spec.share_id;
        match fault {
            Some(StartFault::Garbage) => match &self.garbage {
                Some(b) => b.start(spec).await,
                None => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    Err(BackendError::StartFailed {
                        backend: self.name().to_string(),
                        detail: "exited after printing garbage (injected)".into(),
                    })
                }
            },
            Some(StartFault::NoLink) => match &self.silent {
                Some(b) => b.start(spec).await,
                None => {
                    tokio::time::sleep(spec.link_timeout).await;
                    Err(BackendError::LinkTimeout {
                        backend: self.name().to_string(),
                        after: spec.link_timeout,
                        detail: "the relay was not reachable (injected)".into(),
                    })
                }
            },
            Some(StartFault::LinkThenExit) => {
                let started = self.inner.start(spec).await?;
                // Dies just after its link, on a timer: under the paused clock a timer
                // fires only once nothing else can run (a blocking audit write
                // included), so the share is announced first in every run of a seed.
                // Killed at once, the death raced the announcement's audit write on
                // its blocking thread, and a seed's replay differed about 1 run in 6.
                let (crash, pid) = (self.crash.clone(), started.worker.pid());
                tokio::spawn(async move {
                    tokio::time::sleep(LINK_THEN_EXIT_AFTER).await;
                    crash(share, pid);
                });
                Ok(started)
            }
            None => {
                let started = self.inner.start(spec).await?;
                Ok(StartedWorker {
                    links: started.links,
                    worker: Box::new(Watched {
                        inner: started.worker,
                        share,
                        plan: self.plan.clone(),
                        crash: self.crash.clone(),
                    }),
                })
            }
        }
    }
}

/// A worker that can be made to exit just as it is told to stop.
struct Watched {
    inner: Box<dyn Worker>,
    share: ShareId,
    plan: Arc<FaultPlan>,
    crash: Crash,
}

#[async_trait]
impl Worker for Watched {
    fn pid(&self) -> Option<u32> {
        self.inner.pid()
    }

    fn exit_watch(&self) -> watch::Receiver<Option<WorkerExit>> {
        self.inner.exit_watch()
    }

    async fn terminate(&mut self, grace: Duration) -> TerminateOutcome {
        if self.plan.exit_on_terminate.lock().remove(&self.share) {
            (self.crash)(self.share, self.inner.pid());
        }
        self.inner.terminate(grace).await
    }

    async fn probe(&mut self) -> Probe {
        self.inner.probe().await
    }

    fn tells_participants(&self) -> bool {
        self.inner.tells_participants()
    }

    async fn participants(&mut self) -> Option<u32> {
        self.inner.participants().await
    }
}
