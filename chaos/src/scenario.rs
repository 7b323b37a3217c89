//! The scenario runner: random operations and faults from a seed, with the invariants
//! checked after every step.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use termshare::actors::{
    AccessMode, AuditKind, BackendName, HandoffRequest, Principal, ShareError, ShareId,
    ShareRequest, ShareState,
};
use tokio::time::Instant;
use uuid::Uuid;

use crate::env::{Env, Mode, Seen};
use crate::faulty::StartFault;
use crate::rng::Rng;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FaultKind {
    WorkerSigkill,
    WorkerSigstop,
    WorkerSigcont,
    WorkerChildrenKilled,
    SessionPanic,
    WorkerPanic,
    StartError,
    SlowLink,
    AuditError,
    GarbageOutput,
    NoLink,
    LinkThenExit,
    ExitDuringRevoke,
    TerminalKilled,
}

impl FaultKind {
    pub const ALL: [FaultKind; 14] = [
        FaultKind::WorkerSigkill,
        FaultKind::WorkerSigstop,
        FaultKind::WorkerSigcont,
        FaultKind::WorkerChildrenKilled,
        FaultKind::SessionPanic,
        FaultKind::WorkerPanic,
        FaultKind::StartError,
        FaultKind::SlowLink,
        FaultKind::AuditError,
        FaultKind::GarbageOutput,
        FaultKind::NoLink,
        FaultKind::LinkThenExit,
        FaultKind::ExitDuringRevoke,
        FaultKind::TerminalKilled,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::WorkerSigkill => "worker_sigkill",
            FaultKind::WorkerSigstop => "worker_sigstop",
            FaultKind::WorkerSigcont => "worker_sigcont",
            FaultKind::WorkerChildrenKilled => "worker_children_killed",
            FaultKind::SessionPanic => "failpoint_session_panic",
            FaultKind::WorkerPanic => "failpoint_worker_panic",
            FaultKind::StartError => "failpoint_start_error",
            FaultKind::SlowLink => "failpoint_slow_link",
            FaultKind::AuditError => "failpoint_audit_error",
            FaultKind::GarbageOutput => "backend_garbage_output",
            FaultKind::NoLink => "backend_no_link",
            FaultKind::LinkThenExit => "backend_link_then_exit",
            FaultKind::ExitDuringRevoke => "backend_exit_during_revoke",
            FaultKind::TerminalKilled => "terminal_killed",
        }
    }

    /// Needs a live share to act on.
    fn needs_share(self) -> bool {
        matches!(
            self,
            FaultKind::WorkerSigkill
                | FaultKind::WorkerSigstop
                | FaultKind::WorkerSigcont
                | FaultKind::WorkerChildrenKilled
                | FaultKind::SessionPanic
                | FaultKind::ExitDuringRevoke
                | FaultKind::TerminalKilled
        )
    }
}

#[derive(Clone, Debug)]
pub struct RunConfig {
    pub seed: u64,
    pub steps: u64,
    /// Terminals, each with a limit of one share: at most this many live shares.
    pub shares: usize,
    pub mode: Mode,
    /// The faults to inject (default: all).
    pub faults: Vec<FaultKind>,
    /// Fail points set for the whole run (e.g. the broken-build switch).
    pub standing_failpoints: Vec<(String, String)>,
}

impl RunConfig {
    pub fn new(seed: u64, steps: u64, shares: usize, mode: Mode) -> Self {
        RunConfig {
            seed,
            steps,
            shares,
            mode,
            faults: FaultKind::ALL.to_vec(),
            standing_failpoints: Vec::new(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Violation {
    pub step: u64,
    pub invariant: &'static str,
    pub detail: String,
}

#[derive(Debug, Default)]
pub struct Summary {
    pub seed: u64,
    pub steps_run: u64,
    pub mode: String,
    pub actions: BTreeMap<String, u64>,
    pub op_errors: BTreeMap<String, u64>,
    pub faults: BTreeMap<&'static str, u64>,
    pub checks: u64,
    pub violations: Vec<Violation>,
    /// The steps up to the first violation (or the last ones).
    pub log: Vec<String>,
    pub elapsed: Duration,
    pub reproduce: Option<String>,
}

impl Summary {
    pub fn ok(&self) -> bool {
        self.violations.is_empty()
    }

    pub fn print(&self) {
        println!(
            "termshare-chaos: seed {} · {} mode · {} steps in {:.1?}",
            self.seed, self.mode, self.steps_run, self.elapsed
        );
        println!("actions:       {:?}", self.actions);
        println!("op errors:     {:?}", self.op_errors);
        println!("faults:        {:?}", self.faults);
        println!("checks:        {}", self.checks);
        println!("violations:    {}", self.violations.len());
        for v in &self.violations {
            println!("  step {}: {}: {}", v.step, v.invariant, v.detail);
        }
        if let Some(cmd) = &self.reproduce {
            println!("reproduce with: {cmd}");
            println!("steps:");
            for l in &self.log {
                println!("  {l}");
            }
        }
    }
}

/// Fail points are process-wide: one run at a time.
static RUN_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Runner {
    env: Env,
    rng: Rng,
    cfg: RunConfig,
    summary: Summary,
    step: u64,
    /// Each acknowledged share's deadline (monotonic), for the TTL invariant.
    deadlines: HashMap<ShareId, Instant>,
    /// Acknowledged actions: (correlation id, kind) → how many.
    acked: HashMap<(Uuid, AuditKind), u32>,
    denials_acked: u64,
    links: Vec<String>,
    fault_cursor: usize,
    stopped: Vec<ShareId>,
}

fn error_name(e: &ShareError) -> String {
    let s = format!("{e:?}");
    s.split(|c: char| !c.is_alphanumeric())
        .next()
        .unwrap_or("?")
        .to_string()
}

impl Runner {
    fn fake(&self) -> bool {
        self.env.mode == Mode::Fake
    }

    fn ack(&mut self, id: impl Into<Uuid>, kind: AuditKind) {
        *self.acked.entry((id.into(), kind)).or_default() += 1;
        *self
            .summary
            .actions
            .entry(kind.as_str().to_string())
            .or_default() += 1;
    }

    fn op_error(&mut self, op: &str, e: &ShareError) {
        *self
            .summary
            .op_errors
            .entry(format!("{op}:{}", error_name(e)))
            .or_default() += 1;
    }

    fn violation(&mut self, invariant: &'static str, detail: String) {
        self.summary.violations.push(Violation {
            step: self.step,
            invariant,
            detail,
        });
    }

    async fn live(&self) -> Vec<termshare::actors::ShareInfo> {
        self.env.svc().list().await.unwrap_or_default()
    }

    async fn pick_live(&mut self) -> Option<termshare::actors::ShareInfo> {
        let live: Vec<_> = self
            .live()
            .await
            .into_iter()
            .filter(|s| matches!(s.state, ShareState::Active | ShareState::Expiring))
            .collect();
        self.rng.pick(&live).cloned()
    }

    fn principal(&mut self) -> Principal {
        let who = ["human:alice", "human:bob", "agent:claude"];
        who[self.rng.below(3) as usize].parse().unwrap()
    }

    async fn op_share(&mut self) -> String {
        let terminal = self.rng.pick(&self.env.terminals).cloned().unwrap();
        let backend = *self.rng.pick(self.env.backend_names()).unwrap();
        let principal = self.principal();
        let want_write = self.rng.chance(50);
        let access = Env::allowed_access(principal.kind() == "agent", want_write);
        let ttl = if self.fake() {
            Duration::from_secs(self.rng.between(20, 600))
        } else {
            Duration::from_millis(self.rng.between(3_000, 15_000))
        };
        let grace = vec![ttl / 3];
        let request = ShareRequest {
            terminal: terminal.clone(),
            backend: BackendName::new(backend),
            access,
            caller: principal.into(),
            ttl: Some(ttl),
            grace: Some(grace),
        };
        let acked_at = Instant::now();
        match self.env.svc().share(request).await {
            Ok(info) => {
                self.ack(info.share_id, AuditKind::ShareStarted);
                self.deadlines.insert(info.share_id, acked_at + ttl);
                self.links.push(info.links.link.clone());
                format!(
                    "share {terminal} over {backend} for {ttl:?} -> {}",
                    info.share_id
                )
            }
            Err(e) => {
                if matches!(
                    e,
                    ShareError::LimitReached { .. } | ShareError::Denied { .. }
                ) {
                    self.denials_acked += 1;
                }
                self.op_error("share", &e);
                format!("share {terminal} over {backend}: {e}")
            }
        }
    }

    async fn op_extend(&mut self) -> String {
        let Some(s) = self.pick_live().await else {
            return "extend: no live share".into();
        };
        let by = if self.fake() {
            Duration::from_secs(self.rng.between(1, 120))
        } else {
            Duration::from_millis(self.rng.between(500, 5_000))
        };
        let who = self.principal();
        match self.env.svc().extend(s.share_id, by, who).await {
            Ok(_) => {
                self.ack(s.share_id, AuditKind::ShareExtended);
                if let Some(d) = self.deadlines.get_mut(&s.share_id) {
                    *d += by;
                }
                format!("extend {} by {by:?}", s.share_id)
            }
            Err(e) => {
                self.op_error("extend", &e);
                format!("extend {}: {e}", s.share_id)
            }
        }
    }

    async fn op_revoke(&mut self, target: Option<ShareId>) -> String {
        let id = match target {
            Some(id) => id,
            None => match self.pick_live().await {
                Some(s) => s.share_id,
                None => return "revoke: no live share".into(),
            },
        };
        let t0 = Instant::now();
        let who = self.principal();
        let result = self.env.svc().revoke(id, who).await;
        let took = t0.elapsed();
        if took > Duration::from_secs(5) + Duration::from_millis(500) {
            self.violation("revoke within 5 s", format!("revoke of {id} took {took:?}"));
        }
        match result {
            Ok(report) => {
                self.ack(id, AuditKind::ShareRevoked);
                if !report.deadline_met || report.elapsed > Duration::from_secs(5) {
                    self.violation("revoke within 5 s", format!("{report:?}"));
                }
                format!("revoke {id} in {:?}", report.elapsed)
            }
            Err(e) => {
                if let ShareError::RevokeDeadlineMissed(r) = &e {
                    self.violation("revoke within 5 s", format!("{r:?}"));
                }
                self.op_error("revoke", &e);
                format!("revoke {id}: {e}")
            }
        }
    }

    async fn op_switch(&mut self) -> String {
        let Some(s) = self.pick_live().await else {
            return "switch: no live share".into();
        };
        let backend = *self.rng.pick(self.env.backend_names()).unwrap();
        let who = self.principal();
        match self
            .env
            .svc()
            .switch(s.share_id, BackendName::new(backend), who)
            .await
        {
            Ok(info) => {
                self.ack(s.share_id, AuditKind::ShareSwitched);
                self.links.push(info.links.link);
                format!("switch {} to {backend}", s.share_id)
            }
            Err(e) => {
                self.op_error("switch", &e);
                format!("switch {} to {backend}: {e}", s.share_id)
            }
        }
    }

    async fn op_handoff(&mut self) -> String {
        let terminal = self.rng.pick(&self.env.terminals).cloned().unwrap();
        let (from, to) = if self.rng.chance(50) {
            ("human:alice", "agent:claude")
        } else {
            ("agent:claude", "human:bob")
        };
        let request = HandoffRequest {
            terminal: terminal.clone(),
            from: from.parse::<termshare_actors::Principal>().unwrap().into(),
            to: to.parse().unwrap(),
            reason: "chaos".into(),
            backend: None,
        };
        let svc = self.env.svc();
        let view = match svc.handoff_request(request).await {
            Ok(v) => v,
            Err(e) => {
                self.op_error("handoff", &e);
                return format!("handoff {terminal}: {e}");
            }
        };
        let id = view.handoff_id;
        self.ack(id, AuditKind::HandoffRequested);
        let roll = self.rng.below(10);
        if roll == 0 {
            return format!("handoff {id} left pending");
        }
        let step1 = self
            .env
            .svc()
            .handoff_approve(
                id,
                "human:owner"
                    .parse::<termshare_actors::Principal>()
                    .unwrap(),
            )
            .await;
        if let Err(e) = step1 {
            self.op_error("handoff", &e);
            return format!("handoff {id}: {e}");
        }
        self.ack(id, AuditKind::HandoffApproved);
        if roll <= 3 {
            let denied = self
                .env
                .svc()
                .handoff_deny(
                    id,
                    "human:lead".parse::<termshare_actors::Principal>().unwrap(),
                    None,
                )
                .await;
            return match denied {
                Ok(_) => {
                    self.ack(id, AuditKind::HandoffDenied);
                    format!("handoff {id} denied at step 2")
                }
                Err(e) => {
                    self.op_error("handoff", &e);
                    format!("handoff {id}: {e}")
                }
            };
        }
        match self
            .env
            .svc()
            .handoff_approve(
                id,
                "human:lead".parse::<termshare_actors::Principal>().unwrap(),
            )
            .await
        {
            Ok(done) => {
                self.ack(id, AuditKind::HandoffApproved);
                self.ack(id, AuditKind::HandoffCompleted);
                format!("handoff {id} {}", done.state.as_str())
            }
            Err(e) => {
                self.op_error("handoff", &e);
                format!("handoff {id}: {e}")
            }
        }
    }

    /// A request the policy denies (an agent asking to write): nothing may start.
    async fn op_denied(&mut self) -> String {
        let terminal = self.rng.pick(&self.env.terminals).cloned().unwrap();
        let before = self.env.seen_workers();
        let starts = self.env.spawn_count();
        let request = ShareRequest {
            terminal: terminal.clone(),
            backend: BackendName::new(self.env.backend_names()[0]),
            access: AccessMode::ReadWrite,
            caller: "agent:claude"
                .parse::<termshare_actors::Principal>()
                .unwrap()
                .into(),
            ttl: None,
            grace: None,
        };
        match self.env.svc().share(request).await {
            Err(ShareError::Denied { .. }) => {
                self.denials_acked += 1;
                *self
                    .summary
                    .actions
                    .entry("share.denied".into())
                    .or_default() += 1;
            }
            Err(ShareError::AuditUnavailable(_)) => {}
            other => self.violation(
                "deny by default",
                format!("agent write on {terminal} was not denied: {other:?}"),
            ),
        }
        let after = self.env.seen_workers();
        self.summary.checks += 1;
        let new: Vec<_> = after.difference(&before).collect();
        if (self.fake() && self.env.spawn_count() != starts) || (!self.fake() && !new.is_empty()) {
            self.violation(
                "a denied request spawns nothing",
                format!("new workers: {new:?}"),
            );
        }
        format!("denied request on {terminal}")
    }

    async fn op_wait(&mut self) -> String {
        let d = if self.fake() {
            Duration::from_millis(self.rng.between(100, 40_000))
        } else {
            Duration::from_millis(self.rng.between(20, 400))
        };
        tokio::time::sleep(d).await;
        format!("wait {d:?}")
    }

    async fn fault(&mut self) -> String {
        let n = self.cfg.faults.len();
        if n == 0 {
            return self.op_wait().await;
        }
        let kind = self.cfg.faults[self.fault_cursor % n];
        let target = if kind.needs_share() {
            match self.pick_live().await {
                Some(s) => Some(s),
                None => return self.op_share().await, // the fault waits for a share
            }
        } else {
            None
        };
        self.fault_cursor += 1;
        *self.summary.faults.entry(kind.name()).or_default() += 1;
        let plan = self.env.plan.clone();
        match kind {
            FaultKind::WorkerSigkill => {
                let s = target.unwrap();
                self.env.kill_worker(s.share_id);
                format!("FAULT sigkill worker of {}", s.share_id)
            }
            FaultKind::WorkerSigstop => {
                let s = target.unwrap();
                self.env.stop_worker(s.share_id);
                self.stopped.push(s.share_id);
                format!("FAULT sigstop worker of {}", s.share_id)
            }
            FaultKind::WorkerSigcont => {
                // A short hang that ends before the heartbeat timeout: no failure.
                let s = target.unwrap();
                self.env.stop_worker(s.share_id);
                tokio::time::sleep(self.env.settings.heartbeat_timeout / 4).await;
                self.env.cont_worker(s.share_id);
                let older = std::mem::take(&mut self.stopped);
                for id in older {
                    self.env.cont_worker(id);
                }
                format!("FAULT sigstop+sigcont worker of {}", s.share_id)
            }
            FaultKind::WorkerChildrenKilled => {
                let s = target.unwrap();
                self.env.kill_worker_children(s.share_id);
                format!("FAULT kill children of the worker of {}", s.share_id)
            }
            FaultKind::SessionPanic => {
                let s = target.unwrap();
                fail::cfg("session.handle", "1*panic").unwrap();
                let r = self
                    .env
                    .svc()
                    .extend(
                        s.share_id,
                        Duration::from_secs(1),
                        "human:alice"
                            .parse::<termshare_actors::Principal>()
                            .unwrap(),
                    )
                    .await;
                fail::remove("session.handle");
                if r.is_ok() {
                    self.ack(s.share_id, AuditKind::ShareExtended);
                    if let Some(d) = self.deadlines.get_mut(&s.share_id) {
                        *d += Duration::from_secs(1);
                    }
                }
                format!("FAULT session panic ({}) -> {r:?}", s.share_id)
            }
            FaultKind::WorkerPanic => {
                fail::cfg("worker.handle", "1*panic").unwrap();
                // The next worker message (a heartbeat probe) panics.
                tokio::time::sleep(self.env.settings.probe_interval * 3).await;
                fail::remove("worker.handle");
                "FAULT worker actor panic".into()
            }
            FaultKind::StartError => {
                fail::cfg("worker.start", "1*return").unwrap();
                let r = self.op_share().await;
                fail::remove("worker.start");
                format!("FAULT start error: {r}")
            }
            FaultKind::SlowLink => {
                let ms = if self.fake() { 2000 } else { 300 };
                fail::cfg("backend.slow_link", &format!("1*return({ms})")).unwrap();
                let r = self.op_share().await;
                fail::remove("backend.slow_link");
                format!("FAULT slow link: {r}")
            }
            FaultKind::AuditError => {
                fail::cfg("audit.append", "1*return").unwrap();
                let r = self.op_share().await;
                fail::remove("audit.append");
                format!("FAULT audit write fails: {r}")
            }
            FaultKind::GarbageOutput | FaultKind::NoLink | FaultKind::LinkThenExit => {
                let f = match kind {
                    FaultKind::GarbageOutput => StartFault::Garbage,
                    FaultKind::NoLink => StartFault::NoLink,
                    _ => StartFault::LinkThenExit,
                };
                *plan.next_start.lock() = Some(f);
                let r = self.op_share().await;
                plan.next_start.lock().take();
                format!("FAULT {f:?}: {r}")
            }
            FaultKind::ExitDuringRevoke => {
                let s = target.unwrap();
                plan.exit_on_terminate.lock().insert(s.share_id);
                let r = self.op_revoke(Some(s.share_id)).await;
                plan.exit_on_terminate.lock().remove(&s.share_id);
                format!("FAULT exit during revoke: {r}")
            }
            FaultKind::TerminalKilled => {
                let s = target.unwrap();
                let on_it: Vec<ShareId> = self
                    .live()
                    .await
                    .into_iter()
                    .filter(|x| x.terminal == s.terminal)
                    .map(|x| x.share_id)
                    .collect();
                self.env.kill_terminal(&s.terminal, &on_it);
                format!("FAULT host terminal {} killed (and recreated)", s.terminal)
            }
        }
    }

    /// The state invariants; empty when all hold.
    async fn state_problems(&mut self) -> Vec<(&'static str, String)> {
        let mut problems = Vec::new();
        let live = self.live().await;
        self.summary.checks += 4;
        // Concurrent limits.
        let mut per_terminal: HashMap<&str, usize> = HashMap::new();
        for s in &live {
            *per_terminal.entry(s.terminal.as_str()).or_default() += 1;
        }
        for (t, n) in per_terminal {
            if n > 1 {
                problems.push(("per-terminal limit", format!("{t} has {n} live shares")));
            }
        }
        // TTL.
        let now = Instant::now();
        for s in &live {
            if let Some(deadline) = self.deadlines.get(&s.share_id) {
                if now > *deadline + Duration::from_secs(1) {
                    problems.push((
                        "no share outlives its TTL by 1 s",
                        format!("{} is {:?} past its deadline", s.share_id, now - *deadline),
                    ));
                }
            }
        }
        // Workers and shares match.
        let seen = self.env.seen_workers();
        let mut owned: HashSet<Seen> = HashSet::new();
        for s in &live {
            if let Some(w) = self.env.worker_of(s.share_id) {
                owned.insert(w.clone());
                let should_run = matches!(s.state, ShareState::Active | ShareState::Expiring);
                if should_run && !seen.contains(&w) {
                    problems.push((
                        "a live share has its worker",
                        format!("{} ({:?}) has no worker {w:?}", s.share_id, s.state),
                    ));
                }
            }
        }
        for w in seen.difference(&owned) {
            problems.push((
                "no worker without a live share",
                format!("orphan worker {w:?}"),
            ));
        }
        // Host terminals.
        for t in &self.env.terminals {
            if !self.env.terminal_alive(t) {
                problems.push((
                    "host terminals survive worker faults",
                    format!("terminal {t} is gone"),
                ));
            }
        }
        problems
    }

    /// Invariants may take a moment to settle after a fault (a killed worker's share
    /// ends a few ms later; a start that fails is cleaned up by its link timeout): a
    /// violation is one that persists past that window.
    async fn check(&mut self) {
        let window = Duration::from_secs(4);
        let t0 = Instant::now();
        loop {
            let problems = self.state_problems().await;
            if problems.is_empty() {
                return;
            }
            if t0.elapsed() > window {
                for (inv, detail) in problems {
                    self.violation(inv, detail);
                }
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Audit invariants: every acknowledged action has exactly one event, numbering
    /// has no gaps, a share ends at most once, and no link is on the record.
    fn check_audit(&mut self) {
        let events = self.env.audit_events();
        self.summary.checks += 5;
        let mut counts: HashMap<(Uuid, AuditKind), u32> = HashMap::new();
        let mut ends: HashMap<Uuid, u32> = HashMap::new();
        let mut denied = 0u64;
        for e in &events {
            *counts.entry((e.correlation_id, e.kind)).or_default() += 1;
            if matches!(
                e.kind,
                AuditKind::ShareRevoked
                    | AuditKind::ShareExpired
                    | AuditKind::ShareStopped
                    | AuditKind::ShareFailed
            ) {
                *ends.entry(e.correlation_id).or_default() += 1;
            }
            if e.kind == AuditKind::ShareDenied {
                denied += 1;
            }
        }
        let acked: Vec<_> = self.acked.iter().map(|(k, v)| (*k, *v)).collect();
        for ((id, kind), n) in acked {
            let got = counts.get(&(id, kind)).copied().unwrap_or(0);
            if got != n {
                self.violation(
                    "each acknowledged action has exactly one event",
                    format!("{id} {}: {n} acknowledged, {got} in the log", kind.as_str()),
                );
            }
        }
        let ends: Vec<_> = ends.into_iter().filter(|(_, n)| *n > 1).collect();
        for (id, n) in ends {
            self.violation("a share ends once", format!("{id} has {n} end events"));
        }
        if denied < self.denials_acked {
            self.violation(
                "denials are audited",
                format!(
                    "{} denials acknowledged, {denied} in the log",
                    self.denials_acked
                ),
            );
        }
        let mut seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
        seqs.sort_unstable();
        if seqs.iter().enumerate().any(|(i, s)| *s != i as u64 + 1) {
            self.violation(
                "audit numbering has no gaps",
                format!("{} events, last seq {:?}", seqs.len(), seqs.last()),
            );
        }
        let text = self.env.audit_text();
        let leaked: Vec<String> = self
            .links
            .iter()
            .filter(|l| text.contains(l.as_str()))
            .cloned()
            .collect();
        for l in leaked {
            self.violation("no link in the audit log", l);
        }
    }
}

/// Run one scenario. Deterministic in `fake` mode (paused clock, one thread) for a
/// given seed; `tty-share` mode runs real processes in real time.
pub async fn run(cfg: RunConfig) -> Summary {
    let _one_at_a_time = RUN_LOCK.lock().await;
    for (name, action) in &cfg.standing_failpoints {
        fail::cfg(name.as_str(), action).expect("fail point");
    }
    let started = std::time::Instant::now();
    let env = Env::new(cfg.mode, cfg.shares).await;
    let mut r = Runner {
        env,
        rng: Rng::new(cfg.seed),
        summary: Summary {
            seed: cfg.seed,
            mode: if cfg.mode == Mode::Fake {
                "fake".into()
            } else {
                "tty-share".into()
            },
            ..Summary::default()
        },
        cfg: cfg.clone(),
        step: 0,
        deadlines: HashMap::new(),
        acked: HashMap::new(),
        denials_acked: 0,
        links: Vec::new(),
        fault_cursor: 0,
        stopped: Vec::new(),
    };
    r.fault_cursor = r.rng.below(cfg.faults.len().max(1) as u64) as usize;
    for step in 0..cfg.steps {
        r.step = step;
        let roll = r.rng.below(100);
        let what = match roll {
            0..=25 => r.op_share().await,
            26..=35 => r.op_extend().await,
            36..=45 => r.op_revoke(None).await,
            46..=50 => r.op_switch().await,
            51..=53 => r.op_handoff().await,
            54..=57 => r.op_denied().await,
            58..=76 => r.op_wait().await,
            _ => r.fault().await,
        };
        r.summary.log.push(format!("{step}: {what}"));
        r.check().await;
        if step % 100 == 99 {
            r.check_audit();
        }
        r.summary.steps_run = step + 1;
        if !r.summary.violations.is_empty() {
            break;
        }
    }
    if r.summary.violations.is_empty() {
        r.check_audit();
    }
    r.env.shutdown().await;
    let left = r.env.leftovers();
    if left > 0 {
        r.violation(
            "no worker outlives the service",
            format!("{left} worker(s) left after shutdown"),
        );
    }
    for (name, _) in &cfg.standing_failpoints {
        fail::remove(name.as_str());
    }
    r.summary.elapsed = started.elapsed();
    if let Some(first) = r.summary.violations.first() {
        let steps = first.step + 1;
        r.summary.reproduce = Some(format!(
            "termshare-chaos run --seed {} --steps {steps} --shares {} --backend {}",
            cfg.seed,
            cfg.shares,
            if cfg.mode == Mode::Fake {
                "fake"
            } else {
                "tty-share"
            }
        ));
        let keep = r.summary.log.len().saturating_sub(30);
        r.summary.log.drain(..keep);
    } else {
        r.summary.log.clear();
    }
    r.summary
}
