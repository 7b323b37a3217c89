//! BackendWorker: owns one worker (one backend process) for one share.
//!
//! It starts the backend when told, reports the link, watches for the process to exit,
//! and stops it on request. The worker handle lives in this actor's state; its `Drop`
//! guard kills the process group when the actor ends in any way, including being killed
//! by its session (which interrupts a start in progress: the start future is dropped
//! with everything it spawned).

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::task::JoinHandle;

use crate::error::BackendError;
use crate::session::SessionMsg;
use crate::traits::{Backend, Probe, TerminateOutcome, Worker, WorkerExit, WorkerSpec};
use crate::types::Links;

/// What a BackendWorker tells its session. `generation` tells the current worker from
/// one replaced by a switch.
#[derive(Debug)]
pub enum WorkerEvent {
    Ready {
        links: Links,
        pid: Option<u32>,
        /// The worker can tell how many participants are connected.
        tells_participants: bool,
    },
    StartFailed(BackendError),
    Exited(WorkerExit),
    /// Unresponsive for longer than the heartbeat timeout.
    Hung(Duration),
}

pub enum WorkerMsg {
    /// Start the backend (sent to itself right after spawn).
    Start,
    /// Stop the worker within `grace` (graceful, then forced) and report.
    Terminate {
        grace: Duration,
        reply: RpcReplyPort<TerminateOutcome>,
    },
    /// Participants connected now, if the backend tells.
    Participants(RpcReplyPort<Option<u32>>),
    /// From the exit watcher task.
    Exited(WorkerExit),
    /// Heartbeat tick: probe the worker.
    Probe,
}

pub struct BackendWorker;

pub struct WorkerArgs {
    pub backend: Arc<dyn Backend>,
    pub spec: WorkerSpec,
    pub session: ActorRef<SessionMsg>,
    pub generation: u64,
    pub probe_interval: Duration,
    pub heartbeat_timeout: Duration,
}

pub struct WorkerState {
    args: WorkerArgs,
    worker: Option<Box<dyn Worker>>,
    watcher: Option<JoinHandle<()>>,
    heartbeat: Option<JoinHandle<()>>,
    /// When the probe first found the worker unresponsive (reset when it answers).
    unresponsive_since: Option<tokio::time::Instant>,
    stopping: bool,
}

impl Drop for WorkerState {
    fn drop(&mut self) {
        for task in [self.watcher.take(), self.heartbeat.take()]
            .into_iter()
            .flatten()
        {
            task.abort();
        }
        // `self.worker` drops next: its guard kills the process group.
    }
}

impl WorkerState {
    fn report(&self, event: WorkerEvent) {
        let _ = self.args.session.cast(SessionMsg::Worker {
            generation: self.args.generation,
            event,
        });
    }
}

impl Actor for BackendWorker {
    type Msg = WorkerMsg;
    type State = WorkerState;
    type Arguments = WorkerArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: WorkerArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        myself.cast(WorkerMsg::Start)?;
        Ok(WorkerState {
            args,
            worker: None,
            watcher: None,
            heartbeat: None,
            unresponsive_since: None,
            stopping: false,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        crate::faultpoints::check("worker.handle");
        match msg {
            WorkerMsg::Start => {
                if let Some(arg) = crate::faultpoints::check("backend.slow_link") {
                    let ms = arg.and_then(|a| a.parse().ok()).unwrap_or(1000);
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                }
                if crate::faultpoints::check("worker.start").is_some() {
                    state.report(WorkerEvent::StartFailed(BackendError::StartFailed {
                        backend: state.args.backend.name().to_string(),
                        detail: "injected start failure (fail point worker.start)".into(),
                    }));
                    myself.stop(Some("start failed".into()));
                    return Ok(());
                }
                let spec = state.args.spec.clone();
                let limit = spec.link_timeout;
                // The backend enforces the link timeout itself; this outer bound only
                // catches a backend that does not (dropping the future kills it).
                let started = tokio::time::timeout(
                    limit + Duration::from_secs(2),
                    state.args.backend.start(spec),
                )
                .await
                .unwrap_or_else(|_| {
                    Err(BackendError::LinkTimeout {
                        backend: state.args.backend.name().to_string(),
                        after: limit,
                        detail: "the backend did not give up by itself".into(),
                    })
                });
                match started {
                    Ok(started) => {
                        let pid = started.worker.pid();
                        let tells_participants = started.worker.tells_participants();
                        let mut exit = started.worker.exit_watch();
                        let me = myself.clone();
                        state.watcher = Some(tokio::spawn(async move {
                            if let Ok(status) = exit.wait_for(|e| e.is_some()).await {
                                if let Some(status) = status.clone() {
                                    let _ = me.cast(WorkerMsg::Exited(status));
                                }
                            }
                        }));
                        let me = myself.clone();
                        let every = state.args.probe_interval;
                        state.heartbeat = Some(tokio::spawn(async move {
                            let mut tick = tokio::time::interval(every);
                            tick.tick().await; // the first tick is immediate
                            loop {
                                tick.tick().await;
                                if me.cast(WorkerMsg::Probe).is_err() {
                                    break;
                                }
                            }
                        }));
                        state.worker = Some(started.worker);
                        state.report(WorkerEvent::Ready {
                            links: started.links,
                            pid,
                            tells_participants,
                        });
                    }
                    Err(e) => {
                        state.report(WorkerEvent::StartFailed(e));
                        myself.stop(Some("start failed".into()));
                    }
                }
            }
            WorkerMsg::Terminate { grace, reply } => {
                state.stopping = true;
                let outcome = match state.worker.as_mut() {
                    Some(w) => w.terminate(grace).await,
                    None => TerminateOutcome {
                        escalated: false,
                        already_gone: true,
                    },
                };
                let _ = reply.send(outcome);
                myself.stop(Some("terminated".into()));
            }
            WorkerMsg::Participants(reply) => {
                let n = match state.worker.as_mut() {
                    Some(w) => w.participants().await,
                    None => None,
                };
                let _ = reply.send(n);
            }
            WorkerMsg::Probe => {
                let probe = match state.worker.as_mut() {
                    Some(w) => w.probe().await,
                    None => Probe::Alive,
                };
                if probe == Probe::Unresponsive && !state.stopping {
                    let since = *state
                        .unresponsive_since
                        .get_or_insert_with(tokio::time::Instant::now);
                    let silent = since.elapsed();
                    if silent >= state.args.heartbeat_timeout {
                        // The session stops it (SIGKILL: a hung worker gets no grace).
                        state.stopping = true;
                        state.report(WorkerEvent::Hung(silent));
                    }
                } else {
                    state.unresponsive_since = None;
                }
                if probe == Probe::Gone && !state.stopping {
                    state.stopping = true;
                    state.report(WorkerEvent::Exited(WorkerExit {
                        description: "is gone (heartbeat)".into(),
                        success: false,
                    }));
                    myself.stop(Some("worker gone".into()));
                }
            }
            WorkerMsg::Exited(status) => {
                if !state.stopping {
                    state.stopping = true;
                    state.report(WorkerEvent::Exited(status));
                    myself.stop(Some("worker exited".into()));
                }
            }
        }
        Ok(())
    }
}
