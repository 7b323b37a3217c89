//! The scenario runner: random operations ([`ops`]) and faults ([`faults`]) from a
//! seed, with the invariants ([`invariants`]) checked after every step at a cost that
//! does not grow with the run.

mod faults;
mod invariants;
mod ops;

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
                | FaultKind::WorkerPanic
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
    /// The invariants' running state (what the audit log has shown so far).
    checks: invariants::Checks,
    denials_acked: u64,
    fault_cursor: usize,
    /// Shares whose worker was stopped (SIGSTOP), to be continued later.
    stopped: Vec<termshare::actors::ShareInfo>,
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
        self.checks.acknowledged(id.into(), kind);
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
        checks: invariants::Checks::default(),
        denials_acked: 0,
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
        if r.summary.log.len() > 30 {
            r.summary.log.remove(0); // the last steps are what reproduces a violation
        }
        r.check().await;
        r.check_audit();
        r.summary.steps_run = step + 1;
        if !r.summary.violations.is_empty() {
            break;
        }
    }
    if r.summary.violations.is_empty() {
        // Let what is still settling settle, then look once more.
        r.settle().await;
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
