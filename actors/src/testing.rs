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
use crate::traits::{
    Backend, Grant, PolicyDecision, PolicyGate, PolicyQuery, StartedWorker, TerminalHost,
    TerminateOutcome, Worker, WorkerExit, WorkerSpec,
};
use crate::types::{AccessMode, BackendName, Links, ShareId, TerminalName};

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

/// A host with a fixed set of terminals that records every notification.
#[derive(Default)]
pub struct FakeHost {
    /// The terminals that exist (remove one to close it).
    pub terminals: Mutex<HashSet<String>>,
    /// Every notification shown: (terminal, message).
    pub notices: Mutex<Vec<(String, String)>>,
    /// The next notify panics (in the session's notice task, which fails the session).
    pub panic_on_notify: Mutex<bool>,
    /// Each notify takes this long (a tmux that is slow to answer).
    pub notify_delay: Mutex<Duration>,
    /// What the terminals' screens hold, for handoff captures.
    pub screen: Mutex<String>,
    /// The size a check finds (80x24 unless set).
    pub size: Mutex<Option<(u16, u16)>>,
    /// The size it says it last saw, for every terminal (none unless set).
    pub size_hint: Mutex<Option<(u16, u16)>>,
    /// Each check takes this long (a slow tmux).
    pub check_delay: Mutex<Duration>,
}

impl FakeHost {
    /// A host with these terminals.
    pub fn with(terminals: &[&str]) -> Self {
        FakeHost {
            terminals: Mutex::new(terminals.iter().map(|s| s.to_string()).collect()),
            notices: Mutex::new(Vec::new()),
            panic_on_notify: Mutex::new(false),
            notify_delay: Mutex::new(Duration::ZERO),
            screen: Mutex::new(String::new()),
            size: Mutex::new(Some((80, 24))),
            size_hint: Mutex::new(None),
            check_delay: Mutex::new(Duration::ZERO),
        }
    }
}

#[async_trait]
impl TerminalHost for FakeHost {
    async fn check(&self, terminal: &TerminalName) -> Result<Option<(u16, u16)>, String> {
        let delay = *self.check_delay.lock();
        tokio::time::sleep(delay).await;
        if self.terminals.lock().contains(terminal.as_str()) {
            Ok(*self.size.lock())
        } else {
            Err(format!("no terminal named {terminal}"))
        }
    }

    fn size_hint(&self, _terminal: &TerminalName) -> Option<(u16, u16)> {
        *self.size_hint.lock()
    }

    fn attach_command(&self, terminal: &TerminalName, access: AccessMode) -> Vec<String> {
        let mut argv = vec!["attach".to_string()];
        if access == AccessMode::ReadOnly {
            argv.push("-r".into());
        }
        argv.push(terminal.to_string());
        argv
    }

    async fn capture(
        &self,
        terminal: &TerminalName,
        lines: usize,
    ) -> Result<crate::traits::TerminalContext, String> {
        self.check(terminal).await?;
        let screen = self.screen.lock().clone();
        let all: Vec<&str> = screen.lines().collect();
        Ok(crate::traits::TerminalContext {
            cwd: "/home/fake".into(),
            command: "bash".into(),
            scrollback: all[all.len().saturating_sub(lines)..].join("\n"),
            cols: 80,
            rows: 24,
        })
    }

    async fn notify(&self, terminal: &TerminalName, message: &str) -> Result<(), String> {
        if std::mem::take(&mut *self.panic_on_notify.lock()) {
            panic!("injected: notify panicked");
        }
        let delay = *self.notify_delay.lock();
        tokio::time::sleep(delay).await;
        self.notices
            .lock()
            .push((terminal.to_string(), message.to_string()));
        Ok(())
    }
}

/// A policy of one rule that allows everything, with optional bounds.
pub struct AllowAll {
    /// The rule's `max_ttl`.
    pub max_ttl: Option<Duration>,
    /// The rule's `max_concurrent`.
    pub max_concurrent: Option<u32>,
    /// The rule's `require_join_restriction`.
    pub require_join_restriction: bool,
}

impl PolicyGate for AllowAll {
    fn evaluate(&self, _q: &PolicyQuery<'_>) -> PolicyDecision {
        PolicyDecision::Allow(Grant {
            rule_id: "allow-all".into(),
            max_ttl: self.max_ttl,
            max_concurrent: self.max_concurrent,
            require_join_restriction: self.require_join_restriction,
            record: false,
            max_join_timeout: None,
            max_participants: None,
        })
    }
}

/// A policy with no rules: denies everything.
pub struct DenyAll;

impl PolicyGate for DenyAll {
    fn evaluate(&self, _q: &PolicyQuery<'_>) -> PolicyDecision {
        PolicyDecision::Deny {
            rule_id: None,
            reason: "no rule allows this share".into(),
        }
    }
}

/// A sink that keeps events in memory, records each batch's size, and fails on demand
/// (a full disk).
#[derive(Clone, Default)]
pub struct FlakySink {
    /// Every event kept, in order.
    pub events: Arc<Mutex<Vec<crate::audit::AuditEvent>>>,
    /// The size of each batch written.
    pub batches: Arc<Mutex<Vec<usize>>>,
    /// While set, every write fails (a full disk).
    pub failing: Arc<std::sync::atomic::AtomicBool>,
    /// Each write takes this long (a slow disk).
    pub delay: Arc<Mutex<Duration>>,
}

impl crate::traits::AuditSink for FlakySink {
    fn append(&mut self, events: &[crate::audit::AuditEvent]) -> Result<(), String> {
        let delay = *self.delay.lock();
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        if self.failing.load(Ordering::SeqCst) {
            return Err("No space left on device (injected)".into());
        }
        self.batches.lock().push(events.len());
        self.events.lock().extend_from_slice(events);
        Ok(())
    }
}

/// Allows every share except agents writing, and hands any terminal between any pair
/// through the given approval chain.
pub struct ChainPolicy {
    /// The chain's approvers, in step order.
    pub approvers: Vec<String>,
    /// How long each step waits for its approver.
    pub step_timeout: Duration,
    /// The access an agent receiver gets at most.
    pub agent_access: AccessMode,
    /// Whether the receiver's share must start for the handoff to complete.
    pub receiver_share: crate::traits::ReceiverShare,
}

impl PolicyGate for ChainPolicy {
    fn evaluate(&self, q: &PolicyQuery<'_>) -> PolicyDecision {
        if q.principal.kind() == "agent" && q.access == AccessMode::ReadWrite {
            return PolicyDecision::Deny {
                rule_id: Some("no-agent-writes".into()),
                reason: "agents may not write".into(),
            };
        }
        PolicyDecision::Allow(Grant {
            rule_id: "chain".into(),
            max_ttl: None,
            max_concurrent: None,
            require_join_restriction: false,
            record: false,
            max_join_timeout: None,
            max_participants: None,
        })
    }

    fn handoff(
        &self,
        _from: &crate::types::Principal,
        _to: &crate::types::Principal,
        _terminal: &TerminalName,
    ) -> Result<crate::traits::HandoffGrant, String> {
        Ok(crate::traits::HandoffGrant {
            rule_id: "chain".into(),
            approvers: self.approvers.clone(),
            step_timeout: self.step_timeout,
            agent_access: self.agent_access,
            receiver_share: self.receiver_share,
        })
    }
}
