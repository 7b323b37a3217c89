//! TtlTimer: one per share. Fires grace warnings at thresholds before the deadline and
//! the expiry at the deadline, tagged with the generation they were armed for, so that
//! the ShareSession can ignore a tick that an extension made stale.
//!
//! Deadlines are `tokio::time::Instant`s (monotonic, and paused in tests).

use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::session::SessionMsg;

/// An event the timer sends to its session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TtlEvent {
    /// `remaining` before the deadline armed with `generation`.
    Grace {
        remaining: Duration,
        generation: u64,
    },
    Expired {
        generation: u64,
    },
}

pub enum TtlMsg {
    /// Replace every pending tick with the ticks of this deadline.
    Arm {
        deadline: Instant,
        thresholds: Vec<Duration>,
        generation: u64,
    },
    Cancel,
}

pub struct TtlTimer;

/// Pending tick tasks; aborted on re-arm, on cancel, and when the state is dropped
/// (the actor stopped or was killed).
pub struct TtlState {
    session: ActorRef<SessionMsg>,
    ticks: Vec<JoinHandle<()>>,
}

impl TtlState {
    fn cancel(&mut self) {
        for t in self.ticks.drain(..) {
            t.abort();
        }
    }
}

impl Drop for TtlState {
    fn drop(&mut self) {
        self.cancel();
    }
}

impl Actor for TtlTimer {
    type Msg = TtlMsg;
    type State = TtlState;
    type Arguments = ActorRef<SessionMsg>;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        session: ActorRef<SessionMsg>,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(TtlState {
            session,
            ticks: Vec::new(),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            TtlMsg::Cancel => state.cancel(),
            TtlMsg::Arm {
                deadline,
                thresholds,
                generation,
            } => {
                state.cancel();
                let now = Instant::now();
                for remaining in thresholds {
                    // A threshold at or beyond the whole remaining time would fire at
                    // once and tell nothing: skip it.
                    let Some(at) = deadline.checked_sub(remaining) else {
                        continue;
                    };
                    if at <= now {
                        continue;
                    }
                    let session = state.session.clone();
                    state.ticks.push(tokio::spawn(async move {
                        tokio::time::sleep_until(at).await;
                        let _ = session.cast(SessionMsg::Ttl(TtlEvent::Grace {
                            remaining,
                            generation,
                        }));
                    }));
                }
                let session = state.session.clone();
                state.ticks.push(tokio::spawn(async move {
                    tokio::time::sleep_until(deadline).await;
                    // The chaos harness's late timer: the TTL invariant must catch it.
                    crate::faultpoints::pause("ttl.late").await;
                    let _ = session.cast(SessionMsg::Ttl(TtlEvent::Expired { generation }));
                }));
            }
        }
        Ok(())
    }
}
