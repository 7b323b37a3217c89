//! What the actor tests share: a service over in-process fakes, and small helpers.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use termshare_actors::audit::MemorySink;
use termshare_actors::testing::{AllowAll, FakeBackend, FakeHost, FakeWorld};
use termshare_actors::{
    AccessMode, AuditEvent, AuditKind, AuditSink, BackendName, PolicyGate, ServiceDeps, Settings,
    ShareId, ShareRequest, ShareService,
};
use tokio::sync::broadcast;

pub struct Harness {
    pub svc: ShareService,
    pub world: Arc<FakeWorld>,
    pub host: Arc<FakeHost>,
    pub audit: MemorySink,
}

/// A service with backends `fake` and `fake-b`, terminals `dev` and `ops`, and an
/// in-memory audit log.
pub async fn harness(policy: impl PolicyGate, settings: Settings) -> Harness {
    let audit = MemorySink::default();
    harness_with_sink(policy, settings, Box::new(audit.clone()), audit).await
}

/// The same over another sink (`audit` still names the events the tests read).
pub async fn harness_with_sink(
    policy: impl PolicyGate,
    settings: Settings,
    sink: Box<dyn AuditSink>,
    audit: MemorySink,
) -> Harness {
    let world = Arc::new(FakeWorld::default());
    let host = Arc::new(FakeHost::with(&["dev", "ops"]));
    let svc = ShareService::start(
        ServiceDeps {
            backends: vec![
                Arc::new(FakeBackend::new("fake", world.clone())),
                Arc::new(FakeBackend::new("fake-b", world.clone())),
                // Sees each participant, as tty-share behind its front does.
                Arc::new(FakeBackend::new("fake-counting", world.clone()).counting()),
                // Rotates by a new session, as tmate and upterm do.
                Arc::new(
                    FakeBackend::new("fake-session", world.clone())
                        .counting()
                        .rotating_by_new_session(),
                ),
            ],
            policy: Arc::new(policy),
            host: host.clone(),
            audit_sink: sink,
            fingerprint_key: key(),
        },
        settings,
    )
    .await
    .unwrap();
    Harness {
        svc,
        world,
        host,
        audit,
    }
}

/// One fixed fingerprint key, so a test can recompute a fingerprint.
pub fn key() -> termshare_actors::FingerprintKey {
    termshare_actors::FingerprintKey::from_bytes([7; 32])
}

pub fn p(s: &str) -> termshare_actors::Principal {
    s.parse().unwrap()
}

pub fn allow() -> AllowAll {
    AllowAll {
        max_ttl: None,
        max_concurrent: None,
        require_join_restriction: false,
    }
}

/// A 60 s read-write share of `terminal` over `fake` by human:alice, no grace warnings.
pub fn req(terminal: &str) -> ShareRequest {
    ShareRequest {
        terminal: terminal.parse().unwrap(),
        backend: BackendName::new("fake"),
        access: AccessMode::ReadWrite,
        caller: p("human:alice").into(),
        ttl: Some(Duration::from_secs(60)),
        grace: Some(vec![]),
        join: Default::default(),
        record: false,
    }
}

pub fn kinds_of(audit: &MemorySink, id: ShareId) -> Vec<AuditKind> {
    audit
        .events
        .lock()
        .iter()
        .filter(|e| e.correlation_id == id)
        .map(|e| e.kind)
        .collect()
}

/// The next event of `kind` for `id` (bounded: ten minutes, of the paused clock).
pub async fn wait_for(
    rx: &mut broadcast::Receiver<AuditEvent>,
    id: ShareId,
    kind: AuditKind,
) -> AuditEvent {
    tokio::time::timeout(Duration::from_secs(600), async {
        loop {
            let e = rx.recv().await.expect("audit stream closed");
            if e.correlation_id == id && e.kind == kind {
                return e;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {kind:?} event for {id}"))
}

/// This process's resident set, in KiB, from /proc/self/status.
pub fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

/// An audit sink that keeps only a count of each kind (a long run's events would
/// otherwise be the memory a test measures), and blocks its writes while `stalled` is
/// set: a disk that stops answering.
#[derive(Clone, Default)]
pub struct CountingSink {
    pub counts: Arc<parking_lot::Mutex<std::collections::HashMap<AuditKind, usize>>>,
    pub stalled: Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
    /// Writes that are blocked right now.
    pub blocked: Arc<std::sync::atomic::AtomicUsize>,
}

impl CountingSink {
    pub fn count(&self, kind: AuditKind) -> usize {
        self.counts.lock().get(&kind).copied().unwrap_or(0)
    }

    pub fn stall(&self, on: bool) {
        let (lock, cvar) = &*self.stalled;
        *lock.lock().unwrap() = on;
        cvar.notify_all();
    }
}

impl AuditSink for CountingSink {
    fn append(&mut self, events: &[AuditEvent]) -> Result<(), String> {
        let (lock, cvar) = &*self.stalled;
        let mut stalled = lock.lock().unwrap();
        if *stalled {
            self.blocked
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            while *stalled {
                stalled = cvar.wait(stalled).unwrap();
            }
            self.blocked
                .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        }
        let mut counts = self.counts.lock();
        for e in events {
            *counts.entry(e.kind).or_default() += 1;
        }
        Ok(())
    }
}
