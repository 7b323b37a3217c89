//! The backend seam: a backend starts one worker per share, and the worker is the
//! running share (its links, exit, stop, participants and proofs of life).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::error::BackendError;
use crate::types::{AccessMode, BackendName, Links, ShareId, TerminalName};

/// What a backend needs to start a worker for one share.
#[derive(Clone, Debug)]
pub struct WorkerSpec {
    /// The share the worker serves.
    pub share_id: ShareId,
    /// The terminal to share.
    pub terminal: TerminalName,
    /// What participants may do.
    pub access: AccessMode,
    /// The argv that attaches a client to the host terminal (read-only variant when the
    /// share is read-only): the second lock on access.
    pub attach: Vec<String>,
    /// The host terminal's size, when known, so headless backends can match it.
    pub size: Option<(u16, u16)>,
    /// How long the backend may take to produce its link.
    pub link_timeout: Duration,
    /// At most this many participants at once (only for a backend that
    /// [`Backend::counts_participants`]).
    pub max_participants: Option<u32>,
}

/// A backend started a worker: its links and the handle that owns it.
pub struct StartedWorker {
    /// The links participants join with.
    pub links: Links,
    /// The running worker; dropping it kills what it started.
    pub worker: Box<dyn Worker>,
}

/// A relay backend (tty-share, tmate, upterm, or an in-process fake).
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// The name requests and the policy use for it (`tmate`, `upterm`, ...).
    fn name(&self) -> BackendName;

    /// Checks, without starting anything, that the backend can be used here (binary
    /// present, configuration complete). Runs before the policy's decision is acted on.
    fn check(&self) -> Result<(), BackendError> {
        Ok(())
    }

    /// Whether this backend, as configured, lets only named people join (authorized
    /// keys, GitHub users). A link alone is then not enough to get in.
    fn restricts_joins(&self) -> bool {
        false
    }

    /// Whether its workers report each participant's join and leave (and can refuse a
    /// participant past a limit): join rules need it.
    fn counts_participants(&self) -> bool {
        false
    }

    /// Whether a running worker can give its share a new link itself
    /// ([`Worker::rotate`]: the tty-share front mints a new secret). Otherwise a
    /// rotation starts a new session on this backend (a new tmate or upterm session,
    /// make before break) and stops the old one, and everyone on it.
    fn rotates_in_place(&self) -> bool {
        false
    }

    /// Starts a worker and returns once its link is known. Must enforce
    /// `spec.link_timeout` itself; on any error nothing of the worker may be left
    /// running. Dropping the future must also leave nothing running (guards).
    async fn start(&self, spec: WorkerSpec) -> Result<StartedWorker, BackendError>;
}

/// How a worker ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerExit {
    /// `exited with status 0`, `killed by SIGKILL`, ...
    pub description: String,
    /// Whether it exited with status 0.
    pub success: bool,
    /// Killed by a signal, not ended by itself: not because its terminal closed
    /// (that makes the attach client, and then the worker, exit on their own), so
    /// the terminal need not be asked.
    #[serde(default)]
    pub by_signal: bool,
}

/// How a stop went.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TerminateOutcome {
    /// The graceful stop did not finish within the grace: the stop was forced.
    pub escalated: bool,
    /// The worker had already exited when the stop began.
    pub already_gone: bool,
    /// Participants still connected once the stop was done, where the backend can tell
    /// (0 when the stop cut everyone off).
    pub participants_after: Option<u32>,
}

/// A participant came or went, as the backend saw it (tty-share: a participant's
/// terminal connection through the link front).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ParticipantEvent {
    /// A participant connected.
    Joined {
        /// Unique within the worker: pairs the join with its leave.
        id: u64,
        /// Where it came from (address, local user), fingerprinted before it is
        /// recorded, never kept in the clear.
        origin: String,
    },
    /// The participant with this id left (or was cut off).
    Left {
        /// The id its join carried.
        id: u64,
    },
    /// A participant was turned away.
    Refused {
        /// Where it came from (fingerprinted before it is recorded).
        origin: String,
        /// Why.
        why: JoinRefusal,
        /// How many more were turned away for the same reason since the last report,
        /// and not reported one by one: a link holder who reconnects in a loop must
        /// not flood the audit log (reports come at most about once a second).
        also: u32,
    },
}

/// Why a participant was turned away.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JoinRefusal {
    /// The share had its `max_participants` already.
    Full,
    /// Participants were joining faster than the backend lets them (a burst, then a
    /// steady rate): a reconnect loop, not a person.
    TooFast,
}

impl JoinRefusal {
    /// The `cause` of its `share.join_refused` record.
    pub fn as_str(self) -> &'static str {
        match self {
            JoinRefusal::Full => "max_participants",
            JoinRefusal::TooFast => "join_rate",
        }
    }
}

/// How many participant events a worker may have queued for its session; a backend
/// that cannot queue a join refuses that participant (it fails closed).
pub const PARTICIPANT_EVENTS_QUEUE: usize = 256;

/// What a heartbeat probe saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    /// Running.
    Alive,
    /// Exited.
    Gone,
    /// Exists but does not run (stopped, e.g. SIGSTOP): a hang, if it lasts.
    Unresponsive,
}

/// A check that a worker still does its job, not only that its process runs: its port
/// answers an HTTP request, its socket answers a command. Run by the heartbeat off the
/// worker's mailbox (a stop never waits behind it), bounded by
/// `SERVING_PROBE_TIMEOUT` (1 s). `Err` says what did not answer.
pub type ServingProbe = Arc<
    dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send>>
        + Send
        + Sync,
>;

/// A check, still running, that a worker serves the link it gave: see
/// [`Worker::pending_proof`]. `Err` says what was seen instead.
pub type PendingProof =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send>>;

/// The longest a [`ServingProbe`] may take before it counts as not answering.
pub const SERVING_PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// A running worker. Dropping it must kill everything it started (a `Drop` guard):
/// ractor skips `post_stop` when an actor is killed, so `Drop` is the only cleanup
/// that always runs.
#[async_trait]
pub trait Worker: Send + 'static {
    /// The OS process id, when there is one (for reports and tests).
    fn pid(&self) -> Option<u32> {
        None
    }

    /// Becomes `Some` once the worker has exited and been reaped.
    fn exit_watch(&self) -> watch::Receiver<Option<WorkerExit>>;

    /// Stop the worker: graceful first, then forced once `grace` has passed, then reap.
    /// A worker that is already gone counts as stopped.
    async fn terminate(&mut self, grace: Duration) -> TerminateOutcome;

    /// A cheap liveness check for the heartbeat.
    async fn probe(&mut self) -> Probe {
        if self.exit_watch().borrow().is_some() {
            Probe::Gone
        } else {
            Probe::Alive
        }
    }

    /// Whether the worker's process is stopped (SIGSTOP) now, as the kernel reports
    /// it: the heartbeat then waits on this (a stop lasting the heartbeat timeout is a
    /// hang) and never polls [`Worker::probe`]. `None`: `probe` every heartbeat
    /// interval.
    fn stopped_watch(&self) -> Option<watch::Receiver<bool>> {
        None
    }

    /// How to check that the worker still serves, when the backend can tell: a worker
    /// that runs but has not served for the heartbeat timeout is hung, like a stopped
    /// one.
    fn serving_probe(&self) -> Option<ServingProbe> {
        None
    }

    /// The rest of the proof of life, when the backend gave its link on a cheaper
    /// sign that cannot be faked (tty-share in its own network namespace: the URL it
    /// printed, where nobody else can hold its port) and the rest runs beside the
    /// announcement (it listens there a moment later). Taken once; the share ends,
    /// failed, if it says no.
    fn pending_proof(&mut self) -> Option<PendingProof> {
        None
    }

    /// New links the backend hands out while the worker runs (tmate after a relay
    /// reconnect), when it can: each value replaces the share's links.
    fn link_updates(&self) -> Option<watch::Receiver<Links>> {
        None
    }

    /// Whether [`Worker::participants`] can ever answer; when not, nobody asks (a
    /// revoke then skips the round trip).
    fn tells_participants(&self) -> bool {
        false
    }

    /// Participants connected now, when the backend can tell.
    async fn participants(&mut self) -> Option<u32> {
        None
    }

    /// Give the share a new link and cut off everyone who joined through the old one;
    /// the error says why not (a backend that cannot).
    async fn rotate(&mut self) -> Result<Links, String> {
        Err("this backend cannot give a share a new link".into())
    }

    /// Each participant's join and leave as it happens, when the backend tells them
    /// (taken once: the BackendWorker forwards them to the session). A worker that
    /// gives these keeps its share's participant count live.
    fn participant_events(&mut self) -> Option<tokio::sync::mpsc::Receiver<ParticipantEvent>> {
        None
    }

    /// Whether [`Worker::participant_events`] start from an empty share, so the count
    /// is live from 0. `false` for a backend that tells of participants only once it
    /// knows (tmate's relay may never say): the count is unknown until its first
    /// event.
    fn counts_from_start(&self) -> bool {
        true
    }
}
