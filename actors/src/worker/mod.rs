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

mod heartbeat;
use heartbeat::{serve_checks, serving_interval, stop_checks};

/// What a BackendWorker tells its session. `generation` tells the current worker from
/// one replaced by a switch.
#[derive(Debug)]
pub enum WorkerEvent {
    Ready {
        links: Links,
        pid: Option<u32>,
        /// The worker can tell how many participants are connected.
        tells_participants: bool,
        /// It reports each join and leave: the share's count is live from 0.
        counts_participants: bool,
    },
    StartFailed(BackendError),
    Exited(WorkerExit),
    /// The backend handed out new links (its relay reconnected).
    Relinked(Links),
    /// It rotated: these are the new links, and everyone on the old ones is cut off.
    /// Reported whether or not whoever asked is still waiting for the answer.
    Rotated(Links),
    /// A participant joined or left.
    Participant(crate::traits::ParticipantEvent),
    /// It gave its link on a cheap sign of life, and the rest of the proof failed
    /// ([`crate::traits::Worker::pending_proof`]): it never served. The text says why.
    NeverServed(String),
    /// Unresponsive (stopped, or not serving) for longer than the heartbeat timeout;
    /// the text says what was seen.
    Hung {
        silent: Duration,
        detail: String,
    },
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
    /// A new link; everyone who joined through the old one is cut off. The links come
    /// to the session as [`WorkerEvent::Rotated`]; the answer only says whether.
    Rotate(RpcReplyPort<Result<(), String>>),
    /// From the exit watcher task.
    Exited(WorkerExit),
    /// Heartbeat tick: probe the worker.
    Probe,
    /// From the pending proof's task: the worker never served its link (why).
    Unproven(String),
    /// From the stop watcher: the worker has been stopped this long (at least the
    /// heartbeat timeout).
    StoppedFor(Duration),
    /// From the serving probe task: the worker answered (or not, and why), for the
    /// probe that started at this instant.
    Served(Result<(), String>, tokio::time::Instant),
}

pub struct BackendWorker;

pub struct WorkerArgs {
    pub backend: Arc<dyn Backend>,
    pub spec: WorkerSpec,
    pub session: ActorRef<SessionMsg>,
    pub generation: u64,
    pub probe_interval: Duration,
    pub heartbeat_timeout: Duration,
    pub serving_interval: Duration,
}

pub struct WorkerState {
    args: WorkerArgs,
    worker: Option<Box<dyn Worker>>,
    watcher: Option<JoinHandle<()>>,
    heartbeat: Option<JoinHandle<()>>,
    /// When the probe first found the worker unresponsive (reset when it answers).
    unresponsive_since: Option<tokio::time::Instant>,
    /// The serving probe's task, when the worker has one.
    serving_task: Option<JoinHandle<()>>,
    /// Forwards the backend's new links to the session, when it hands any out.
    relink_task: Option<JoinHandle<()>>,
    /// Runs the rest of the proof of life, when the backend left one to run.
    proof_task: Option<JoinHandle<()>>,
    /// Forwards each participant's join and leave to the session, when the backend
    /// tells them.
    participant_task: Option<JoinHandle<()>>,
    /// When the serving probe last succeeded (the start counts: the link was just
    /// given), and its last error since.
    last_served: Option<tokio::time::Instant>,
    serving_error: Option<String>,
    /// The start of the first of the failing serving probes since the last answer:
    /// the worker is hung once they have failed for the heartbeat timeout.
    unserved_since: Option<tokio::time::Instant>,
    stopping: bool,
}

impl Drop for WorkerState {
    fn drop(&mut self) {
        for task in [
            self.watcher.take(),
            self.heartbeat.take(),
            self.serving_task.take(),
            self.relink_task.take(),
            self.proof_task.take(),
            self.participant_task.take(),
        ]
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
            serving_task: None,
            relink_task: None,
            proof_task: None,
            participant_task: None,
            last_served: None,
            serving_error: None,
            unserved_since: None,
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
                    Ok(mut started) => {
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
                        let timeout = state.args.heartbeat_timeout;
                        state.heartbeat = Some(match started.worker.stopped_watch() {
                            // The kernel says when it stops: nothing runs meanwhile.
                            Some(stopped) => tokio::spawn(stop_checks(stopped, me, timeout)),
                            None => tokio::spawn(async move {
                                let mut tick = tokio::time::interval(every);
                                tick.tick().await; // the first tick is immediate
                                loop {
                                    tick.tick().await;
                                    if me.cast(WorkerMsg::Probe).is_err() {
                                        break;
                                    }
                                }
                            }),
                        });
                        if let Some(mut updates) = started.worker.link_updates() {
                            let session = state.args.session.clone();
                            let generation = state.args.generation;
                            state.relink_task = Some(tokio::spawn(async move {
                                while updates.changed().await.is_ok() {
                                    let links = updates.borrow_and_update().clone();
                                    let event = WorkerEvent::Relinked(links);
                                    let msg = SessionMsg::Worker { generation, event };
                                    if session.cast(msg).is_err() {
                                        break;
                                    }
                                }
                            }));
                        }
                        let from_start = started.worker.counts_from_start();
                        let counts_participants = match started.worker.participant_events() {
                            Some(mut joins) => {
                                let session = state.args.session.clone();
                                let generation = state.args.generation;
                                state.participant_task = Some(tokio::spawn(async move {
                                    while let Some(e) = joins.recv().await {
                                        let event = WorkerEvent::Participant(e);
                                        let msg = SessionMsg::Worker { generation, event };
                                        if session.cast(msg).is_err() {
                                            break;
                                        }
                                    }
                                }));
                                from_start
                            }
                            None => false,
                        };
                        if let Some(probe) = started.worker.serving_probe() {
                            state.last_served = Some(tokio::time::Instant::now());
                            state.serving_task = Some(tokio::spawn(serve_checks(
                                probe,
                                myself.clone(),
                                serving_interval(&state.args),
                                state.args.heartbeat_timeout / 3,
                            )));
                        }
                        let proof = started.worker.pending_proof();
                        state.worker = Some(started.worker);
                        state.report(WorkerEvent::Ready {
                            links: started.links,
                            pid,
                            tells_participants,
                            counts_participants,
                        });
                        if let Some(proof) = proof {
                            let me = myself.clone();
                            state.proof_task = Some(tokio::spawn(async move {
                                if let Err(why) = proof.await {
                                    let _ = me.cast(WorkerMsg::Unproven(why));
                                }
                            }));
                        }
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
                        ..Default::default()
                    },
                };
                let _ = reply.send(outcome);
                myself.stop(Some("terminated".into()));
            }
            WorkerMsg::Rotate(reply) => {
                let rotated = match state.worker.as_mut() {
                    Some(w) => w.rotate().await,
                    None => Err("the worker is gone".into()),
                };
                // The session learns of a rotation from this report, before the answer
                // (a caller that stopped waiting must not leave the share's links stale).
                if let Ok(links) = &rotated {
                    state.report(WorkerEvent::Rotated(links.clone()));
                }
                let _ = reply.send(rotated.map(|_| ()));
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
                        state.report(WorkerEvent::Hung {
                            silent,
                            detail: "the worker process is stopped".into(),
                        });
                    }
                } else {
                    state.unresponsive_since = None;
                }
                // Running is not serving: a worker whose port or socket has not
                // answered for the heartbeat timeout is hung too.
                if let (Some(since), false) = (state.unserved_since, state.stopping) {
                    let silent = since.elapsed();
                    if probe != Probe::Gone && silent >= state.args.heartbeat_timeout {
                        state.stopping = true;
                        let why = state
                            .serving_error
                            .clone()
                            .unwrap_or_else(|| "no answer yet".into());
                        state.report(WorkerEvent::Hung {
                            silent,
                            detail: format!("the worker runs but does not serve ({why})"),
                        });
                    }
                }
                if probe == Probe::Gone && !state.stopping {
                    state.stopping = true;
                    state.report(WorkerEvent::Exited(WorkerExit {
                        description: "is gone (heartbeat)".into(),
                        success: false,
                        by_signal: false,
                    }));
                    myself.stop(Some("worker gone".into()));
                }
            }
            WorkerMsg::Unproven(why) => {
                if !state.stopping {
                    // The session stops it, as a hung one.
                    state.stopping = true;
                    state.report(WorkerEvent::NeverServed(why));
                }
            }
            WorkerMsg::StoppedFor(silent) => {
                if !state.stopping {
                    // The session stops it (SIGKILL: a hung worker gets no grace).
                    state.stopping = true;
                    state.report(WorkerEvent::Hung {
                        silent,
                        detail: "the worker process is stopped".into(),
                    });
                }
            }
            WorkerMsg::Served(Ok(()), _) => {
                state.last_served = Some(tokio::time::Instant::now());
                state.serving_error = None;
                state.unserved_since = None;
            }
            WorkerMsg::Served(Err(e), started) => {
                state.serving_error = Some(e);
                // Running is not serving: a worker whose probes have failed for the
                // heartbeat timeout is hung. (Checked here as well as on a probe tick:
                // a worker the kernel watches gets no ticks.) One failure alone is not
                // a hang: the probe task retries at a third of the timeout.
                let since = *state.unserved_since.get_or_insert(started);
                let silent = since.elapsed();
                if !state.stopping && silent >= state.args.heartbeat_timeout {
                    state.stopping = true;
                    let why = state.serving_error.clone().unwrap_or_default();
                    state.report(WorkerEvent::Hung {
                        silent,
                        detail: format!("the worker runs but does not serve ({why})"),
                    });
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
