//! In-process stand-ins for the real world, for tests of the tree, scale runs and the
//! chaos harness. They start no OS process. Never the only test of a real adapter.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use tokio::sync::{mpsc, watch};

use crate::error::BackendError;
use crate::traits::{Backend, StartedWorker, TerminateOutcome, Worker, WorkerExit, WorkerSpec};
use crate::types::{BackendName, Links, ShareId};

mod gates;
mod host;

pub use gates::{AllowAll, ChainPolicy, DenyAll, FlakySink};
pub use host::FakeHost;

/// How a fake worker is told to exit.
type ExitSender = watch::Sender<Option<WorkerExit>>;

/// What the fake backend's workers are doing, shared with the test.
#[derive(Default)]
pub struct FakeWorld {
    /// Workers alive now, by share and start number (dropped or terminated ones are
    /// removed): the stand-in for "a process exists". A share has two for a moment
    /// while it switches backends.
    live: Mutex<HashMap<(ShareId, u64), ExitSender>>,
    /// Workers started so far, ever.
    pub starts: AtomicU64,
    /// The next start fails with this error.
    pub fail_next_start: Mutex<Option<BackendError>>,
    /// Starts never produce a link (a relay that does not answer).
    pub never_link: Mutex<bool>,
    /// When set, every start takes this long to give its link (a slow relay).
    pub link_delay: Mutex<Option<Duration>>,
    /// Terminate does not finish (a hung worker): only a kill ends it.
    pub hang_on_terminate: Mutex<bool>,
    /// The next rotation panics inside the BackendWorker actor.
    pub panic_on_rotate: Mutex<bool>,
    /// Each live worker's stopped state (the fake SIGSTOP / SIGCONT), which the
    /// heartbeat waits on as it waits on the kernel's word for a real process.
    stops: Mutex<HashMap<(ShareId, u64), watch::Sender<bool>>>,
    /// Each live worker's channel for new links (a relay that reconnected).
    relinks: Mutex<HashMap<(ShareId, u64), watch::Sender<Links>>>,
    /// Each live worker's participant channel, for a backend that counts them.
    participants: Mutex<HashMap<ShareId, mpsc::Sender<crate::traits::ParticipantEvent>>>,
    /// Each rotation takes this long (a relay slow to give a new session).
    pub rotate_delay: Mutex<Duration>,
    /// Rotations done so far, ever (each gives the link a new `/rN` suffix).
    pub rotations: AtomicU64,
    /// The terminal size each start was given, in order.
    pub start_sizes: Mutex<Vec<Option<(u16, u16)>>>,
}

impl FakeWorld {
    /// The shares that have a live worker.
    pub fn live(&self) -> HashSet<ShareId> {
        self.live.lock().keys().map(|(share, _)| *share).collect()
    }

    /// Workers alive now.
    pub fn live_count(&self) -> usize {
        self.live.lock().len()
    }

    /// The newest worker of `share` hands out `link` (its relay reconnected); `false`
    /// when it has none.
    pub fn relink(&self, share: ShareId, link: &str) -> bool {
        let relinks = self.relinks.lock();
        let newest = relinks
            .iter()
            .filter(|((s, _), _)| *s == share)
            .max_by_key(|((_, start), _)| *start);
        match newest {
            Some((_, tx)) => tx.send(Links::new(link)).is_ok(),
            None => false,
        }
    }

    /// A participant of `share` joins (`true`) or leaves, as a counting backend would
    /// report it; `false` when the share's worker does not count participants.
    pub fn participant(&self, share: ShareId, id: u64, joins: bool) -> bool {
        use crate::traits::ParticipantEvent;
        let event = match joins {
            true => ParticipantEvent::Joined {
                id,
                origin: format!("fake participant {id}"),
            },
            false => ParticipantEvent::Left { id },
        };
        let sender = self.participants.lock().get(&share).cloned();
        sender.is_some_and(|tx| tx.try_send(event).is_ok())
    }

    /// The workers of `share` stop answering (the fake SIGSTOP); `false` when it has
    /// none.
    pub fn stop(&self, share: ShareId) -> bool {
        self.set_stopped(share, true)
    }

    /// The stopped workers of `share` run again (the fake SIGCONT); `false` when it
    /// has none.
    pub fn cont(&self, share: ShareId) -> bool {
        self.set_stopped(share, false)
    }

    fn set_stopped(&self, share: ShareId, stopped: bool) -> bool {
        let stops = self.stops.lock();
        let mut any = false;
        for (_, tx) in stops.iter().filter(|((s, _), _)| *s == share) {
            tx.send_replace(stopped);
            any = true;
        }
        any
    }

    /// The workers of `share` exit by themselves, as crashed processes would.
    pub fn crash(&self, share: ShareId) -> bool {
        let mut live = self.live.lock();
        let keys: Vec<_> = live.keys().filter(|(s, _)| *s == share).copied().collect();
        for key in &keys {
            if let Some(tx) = live.remove(key) {
                let _ = tx.send(Some(WorkerExit {
                    description: "killed by SIGKILL (fake)".into(),
                    success: false,
                    // Stands for any exit (a closed terminal's too): the terminal is
                    // asked, as for a worker that ended by itself.
                    by_signal: false,
                }));
            }
        }
        !keys.is_empty()
    }
}

/// A backend whose workers are tokio-side objects. The link is `fake://NAME/SHARE_ID`,
/// and `fake://NAME/SHARE_ID/sN` for the Nth start of the world after its first
/// (a new session has a new link).
pub struct FakeBackend {
    name: BackendName,
    /// How long each start takes to give its link.
    pub link_delay: Duration,
    /// Where its workers live.
    pub world: Arc<FakeWorld>,
    /// Its workers report participants (driven by [`FakeWorld::participant`]).
    pub counts_participants: bool,
    /// Its workers rotate their link themselves (else a rotation is a new worker).
    pub rotates_in_place: bool,
}

impl FakeBackend {
    /// A backend named `name` whose workers live in `world`; links come at once.
    pub fn new(name: &str, world: Arc<FakeWorld>) -> Self {
        FakeBackend {
            name: BackendName::new(name),
            link_delay: Duration::from_millis(10),
            world,
            counts_participants: false,
            rotates_in_place: true,
        }
    }

    /// A rotation of its shares is a new worker (as tmate's and upterm's are).
    pub fn rotating_by_new_session(mut self) -> Self {
        self.rotates_in_place = false;
        self
    }

    /// Its workers report participants ([`FakeWorld::participant`] drives them).
    pub fn counting(mut self) -> Self {
        self.counts_participants = true;
        self
    }
}

struct FakeWorker {
    share: ShareId,
    /// The start that made it: its key in the world with `share`.
    start: u64,
    world: Arc<FakeWorld>,
    exit: watch::Receiver<Option<WorkerExit>>,
    links: watch::Receiver<Links>,
    /// Whether it is stopped (driven by [`FakeWorld::stop`] and [`FakeWorld::cont`]).
    stopped: watch::Receiver<bool>,
    participants: Option<mpsc::Receiver<crate::traits::ParticipantEvent>>,
}

impl Drop for FakeWorker {
    fn drop(&mut self) {
        // The Drop guard of a real worker kills its process group; here it goes away.
        self.world.live.lock().remove(&(self.share, self.start));
        self.world.relinks.lock().remove(&(self.share, self.start));
        self.world.stops.lock().remove(&(self.share, self.start));
        self.world.participants.lock().remove(&self.share);
    }
}

#[async_trait]
impl Worker for FakeWorker {
    fn stopped_watch(&self) -> Option<watch::Receiver<bool>> {
        Some(self.stopped.clone())
    }

    fn exit_watch(&self) -> watch::Receiver<Option<WorkerExit>> {
        self.exit.clone()
    }

    fn link_updates(&self) -> Option<watch::Receiver<Links>> {
        Some(self.links.clone())
    }

    fn participant_events(&mut self) -> Option<mpsc::Receiver<crate::traits::ParticipantEvent>> {
        self.participants.take()
    }

    async fn rotate(&mut self) -> Result<Links, String> {
        if std::mem::take(&mut *self.world.panic_on_rotate.lock()) {
            panic!("injected: worker rotation panicked");
        }
        let delay = *self.world.rotate_delay.lock();
        tokio::time::sleep(delay).await;
        let n = self.world.rotations.fetch_add(1, Ordering::SeqCst) + 1;
        let now = self.links.borrow().link.clone();
        Ok(Links::new(format!("{now}/r{n}")))
    }

    async fn terminate(&mut self, _grace: Duration) -> TerminateOutcome {
        if *self.world.hang_on_terminate.lock() {
            std::future::pending::<()>().await;
        }
        let sender = self.world.live.lock().remove(&(self.share, self.start));
        match sender {
            Some(tx) => {
                let _ = tx.send(Some(WorkerExit {
                    description: "terminated".into(),
                    success: true,
                    by_signal: false,
                }));
                TerminateOutcome::default()
            }
            None => TerminateOutcome {
                escalated: false,
                already_gone: true,
                ..Default::default()
            },
        }
    }
}

#[async_trait]
impl Backend for FakeBackend {
    fn name(&self) -> BackendName {
        self.name.clone()
    }

    fn counts_participants(&self) -> bool {
        self.counts_participants
    }

    fn rotates_in_place(&self) -> bool {
        self.rotates_in_place
    }

    async fn start(&self, spec: WorkerSpec) -> Result<StartedWorker, BackendError> {
        let start = self.world.starts.fetch_add(1, Ordering::SeqCst);
        self.world.start_sizes.lock().push(spec.size);
        if let Some(e) = self.world.fail_next_start.lock().take() {
            return Err(e);
        }
        let (tx, rx) = watch::channel(None);
        self.world.live.lock().insert((spec.share_id, start), tx);
        let first = match start {
            0 => Links::new(format!("fake://{}/{}", self.name, spec.share_id)),
            n => Links::new(format!("fake://{}/{}/s{n}", self.name, spec.share_id)),
        };
        let (relink, links) = watch::channel(first.clone());
        self.world
            .relinks
            .lock()
            .insert((spec.share_id, start), relink);
        let (stop, stopped) = watch::channel(false);
        self.world.stops.lock().insert((spec.share_id, start), stop);
        let participants = self.counts_participants.then(|| {
            let (tx, rx) = mpsc::channel(crate::traits::PARTICIPANT_EVENTS_QUEUE);
            self.world.participants.lock().insert(spec.share_id, tx);
            rx
        });
        // From here on the worker "exists"; dropping this future must remove it.
        let worker = FakeWorker {
            share: spec.share_id,
            start,
            world: self.world.clone(),
            exit: rx,
            links,
            stopped,
            participants,
        };
        if *self.world.never_link.lock() {
            tokio::time::sleep(spec.link_timeout).await;
            return Err(BackendError::LinkTimeout {
                backend: self.name.to_string(),
                after: spec.link_timeout,
                detail: "the relay was not reachable (fake)".into(),
            });
        }
        let delay = self.world.link_delay.lock().unwrap_or(self.link_delay);
        tokio::time::sleep(delay).await;
        Ok(StartedWorker {
            links: first,
            worker: Box::new(worker),
        })
    }
}
