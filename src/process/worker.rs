//! A worker process as the BackendWorker actor sees it: stopped gracefully then by
//! force, probed, with what it needs while it runs attached.

use super::*;

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

    /// Give the share a new link and cut off everyone who came in through the old
    /// one (the tty-share front: a new secret); `None` when this cannot.
    fn rotate(&self) -> Option<std::io::Result<String>> {
        None
    }
}

/// A scratch directory: removed when the worker is dropped.
impl Attached for tempfile::TempDir {}

/// One thing attached to a worker.
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
    /// Each join and leave, when the backend reports them (taken by the BackendWorker).
    participant_events: Option<tokio::sync::mpsc::Receiver<termshare_actors::ParticipantEvent>>,
    /// Participants connected now, kept live by the backend (the tty-share front).
    connected: Option<watch::Receiver<u32>>,
    /// The events start from an empty share (the count is live from 0); not so for a
    /// backend that tells of participants only once it knows (tmate, upterm's log).
    counts_from_start: bool,
    /// The rest of the proof of life, run beside the announcement (taken once).
    /// (Behind a lock only so the worker is `Sync`.)
    pending_proof: parking_lot::Mutex<Option<termshare_actors::PendingProof>>,
}

/// How long a stop waits for the participants' connections to close once the worker
/// is gone, before it reports how many are left.
const PARTICIPANTS_CLOSE: Duration = Duration::from_secs(1);

/// Counts a worker's connected participants (from what the backend writes down).
pub type ParticipantCount = Arc<dyn Fn() -> Option<u32> + Send + Sync>;

impl ProcessWorker {
    /// The worker over `process`, stopped by `graceful`, with `attached` dropped after it.
    pub fn new(process: SpawnedProcess, graceful: GracefulStop, attached: Vec<Attachment>) -> Self {
        ProcessWorker {
            process,
            graceful,
            attached,
            serving: None,
            link_updates: None,
            participants: None,
            participant_events: None,
            connected: None,
            counts_from_start: true,
            pending_proof: Default::default(),
        }
    }

    /// Finish the proof of life with `proof` while the share is announced: the link
    /// was given on a sign that cannot be faked, and `proof` confirms it serves.
    pub fn with_pending_proof(mut self, proof: termshare_actors::PendingProof) -> Self {
        self.pending_proof = parking_lot::Mutex::new(Some(proof));
        self
    }

    /// Report each join and leave from `events`, and count from `connected` (the
    /// tty-share link front sees every participant's connection).
    pub fn with_participant_feed(
        mut self,
        events: tokio::sync::mpsc::Receiver<termshare_actors::ParticipantEvent>,
        connected: watch::Receiver<u32>,
    ) -> Self {
        self.participant_events = Some(events);
        self.connected = Some(connected);
        self
    }

    /// Tell participants with `count` (upterm: its log of joins and leaves).
    pub fn with_participants(mut self, count: ParticipantCount) -> Self {
        self.participants = Some(count);
        self
    }

    /// Report each join and leave the backend tells of (tmate's relay notices,
    /// upterm's log), and count from what it last said: unless it tells from the
    /// start, unknown until it says anything, never a guessed 0.
    pub fn with_participant_notices(
        mut self,
        feed: crate::backends::presence::PresenceFeed,
    ) -> Self {
        let count = feed.count;
        self.participant_events = Some(feed.events);
        self.participants = Some(Arc::new(move || {
            crate::backends::presence::PresenceFeed::count(&count)
        }));
        self.counts_from_start = feed.from_start;
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

    pub(super) async fn exited_within(&self, d: Duration) -> bool {
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

    fn stopped_watch(&self) -> Option<watch::Receiver<bool>> {
        Some(self.process.stopped.receiver())
    }

    fn serving_probe(&self) -> Option<termshare_actors::ServingProbe> {
        self.serving.clone()
    }

    fn link_updates(&self) -> Option<watch::Receiver<termshare_actors::Links>> {
        self.link_updates.clone()
    }

    fn pending_proof(&mut self) -> Option<termshare_actors::PendingProof> {
        self.pending_proof.get_mut().take()
    }

    fn tells_participants(&self) -> bool {
        self.participants.is_some() || self.connected.is_some()
    }

    async fn rotate(&mut self) -> Result<termshare_actors::Links, String> {
        for a in &self.attached {
            if let Some(rotated) = a.rotate() {
                return rotated
                    .map(termshare_actors::Links::new)
                    .map_err(|e| format!("no new link: {e}"));
            }
        }
        Err("this backend cannot give a share a new link".into())
    }

    fn participant_events(
        &mut self,
    ) -> Option<tokio::sync::mpsc::Receiver<termshare_actors::ParticipantEvent>> {
        self.participant_events.take()
    }

    fn counts_from_start(&self) -> bool {
        self.counts_from_start
    }

    async fn participants(&mut self) -> Option<u32> {
        if let Some(connected) = &self.connected {
            return Some(*connected.borrow());
        }
        let count = self.participants.clone()?;
        // A small file read, off the runtime's threads.
        tokio::task::spawn_blocking(move || count())
            .await
            .ok()
            .flatten()
    }

    async fn terminate(&mut self, grace: Duration) -> TerminateOutcome {
        let mut outcome = self.stop(grace).await;
        if let Some(connected) = &mut self.connected {
            // The front closed every connection at `stopping()`; each pipe ends on its
            // own task: wait for the count to say so (or report who is left).
            let _ = tokio::time::timeout(PARTICIPANTS_CLOSE, connected.wait_for(|n| *n == 0)).await;
            outcome.participants_after = Some(*connected.borrow());
        }
        outcome
    }

    async fn probe(&mut self) -> Probe {
        if self.process.has_exited() {
            return Probe::Gone;
        }
        // The kernel's word, from SIGCHLD: no /proc read.
        if self.process.stopped.is_stopped() {
            Probe::Unresponsive
        } else {
            Probe::Alive
        }
    }
}

impl ProcessWorker {
    /// Stop the process group: graceful, then SIGKILL once `grace` has passed.
    async fn stop(&mut self, grace: Duration) -> TerminateOutcome {
        for a in &self.attached {
            a.stopping();
        }
        if self.process.has_exited() {
            // The leader is gone; make sure nothing of its group is left either.
            self.process.guard.release();
            return TerminateOutcome {
                escalated: false,
                already_gone: true,
                ..Default::default()
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
            ..Default::default()
        }
    }
}
