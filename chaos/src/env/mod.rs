//! The world a chaos run acts on: the share service with its backends wrapped in
//! fault injectors, the host terminals, and a way to see worker processes.
//!
//! - `fake`: in-process workers (no OS process) under tokio's paused clock, so TTLs and
//!   timeouts of minutes take no real time; the audit sink is in memory.
//! - `tty-share`: the real binary over a private tmux server, real processes checked
//!   in /proc by process group, the real JSON-lines audit file.

mod fake;
mod real;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use termshare::actors::testing::{FakeBackend, FakeHost, FakeWorld, FlakySink};
use termshare::actors::{
    AccessMode, AuditEvent, Backend, ServiceDeps, Settings, ShareId, ShareInfo, ShareService,
    TerminalName,
};
use termshare::backends::tty_share::TtyShareBackend;
use termshare::config::Config;
use termshare::policy::Policy;
use termshare::Termshare;

use crate::faulty::{Crash, FaultPlan, FaultyBackend};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Fake,
    TtyShare,
}

impl Mode {
    pub fn backends(self) -> &'static [&'static str] {
        match self {
            Mode::Fake => &["fake", "fake-b"],
            Mode::TtyShare => &["tty-share"],
        }
    }
}

/// The policy every run uses: shares for humans and agents (agents read-only), a
/// two-step handoff chain, and nothing for backends outside the mode's list.
pub fn policy_text(backends: &[&str]) -> String {
    format!(
        "{}{}{}",
        termshare_testkit::NO_AGENT_WRITES,
        termshare_testkit::allow_all(backends, "2h"),
        termshare_testkit::handoff_chain("5s", "read-only")
    )
}

enum Service {
    Fake(ShareService),
    Real(Termshare),
}

/// A worker process (or fake worker) seen from outside.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Seen {
    Fake(ShareId),
    Process(u32),
}

/// Where an incremental reader of the audit log is: an event index (fake) or a byte
/// offset (the file).
#[derive(Default)]
pub struct AuditCursor(usize);

/// What both worlds are built from.
struct Parts {
    mode: Mode,
    dir: tempfile::TempDir,
    names: Vec<TerminalName>,
    plan: Arc<FaultPlan>,
    tmux_socket: PathBuf,
    audit_path: PathBuf,
    policy: Policy,
}

pub struct Env {
    pub mode: Mode,
    service: Option<Service>,
    pub terminals: Vec<TerminalName>,
    pub plan: Arc<FaultPlan>,
    pub settings: Settings,
    world: Option<Arc<FakeWorld>>,
    fake_host: Option<Arc<FakeHost>>,
    fake_audit: Option<FlakySink>,
    tmux_socket: PathBuf,
    audit_path: PathBuf,
    _dir: tempfile::TempDir,
}

fn chaos_bin(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("bin")
        .join(name)
        .display()
        .to_string()
}

impl Env {
    pub async fn new(mode: Mode, terminals: usize) -> Env {
        let dir = tempfile::tempdir().expect("tempdir");
        let names: Vec<TerminalName> = (0..terminals.max(1))
            .map(|i| format!("t{i}").parse().unwrap())
            .collect();
        let plan = Arc::new(FaultPlan::default());
        let tmux_socket = dir.path().join("tmux.sock");
        let audit_path = dir.path().join("audit.jsonl");
        let policy = Policy::parse(&policy_text(mode.backends())).expect("policy");
        let parts = Parts {
            mode,
            dir,
            names,
            plan,
            tmux_socket,
            audit_path,
            policy,
        };
        match mode {
            Mode::Fake => fake::start(parts).await,
            Mode::TtyShare => real::start(parts).await,
        }
    }

    /// Returns once no zygote is being made ahead of time (real runs; a fake run
    /// makes none).
    pub async fn zygotes_ready(&self) {
        if let Some(Service::Real(t)) = &self.service {
            t.zygotes_ready().await;
        }
    }

    pub fn svc(&self) -> &ShareService {
        match self.service.as_ref().expect("running") {
            Service::Fake(s) => s,
            Service::Real(t) => t.service(),
        }
    }

    pub fn backend_names(&self) -> &'static [&'static str] {
        self.mode.backends()
    }

    /// Agents may only read; humans either.
    pub fn allowed_access(principal_is_agent: bool, want_write: bool) -> AccessMode {
        if want_write && !principal_is_agent {
            AccessMode::ReadWrite
        } else {
            AccessMode::ReadOnly
        }
    }

    /// How many backend starts have happened (fake), or worker processes exist (real):
    /// what a denied request must not change.
    pub fn spawn_count(&self) -> usize {
        match &self.world {
            Some(w) => w.starts.load(std::sync::atomic::Ordering::SeqCst) as usize,
            None => self.processes().len(),
        }
    }

    /// Worker processes of this run: programs started with our tmux socket in their
    /// arguments (tty-share and the misbehaving stand-ins), live ones only.
    pub fn processes(&self) -> Vec<u32> {
        let marker = self.tmux_socket.to_string_lossy().into_owned();
        termshare_testkit::processes_where(|argv| {
            // The program, or the script an interpreter runs.
            let is_worker = argv.iter().take(2).any(|a| {
                a.ends_with("tty-share")
                    || a.ends_with("garbage-backend")
                    || a.ends_with("silent-backend")
            });
            is_worker && argv.iter().any(|a| a.contains(&marker))
        })
        .into_iter()
        .map(|pid| pid as u32)
        .collect()
    }

    /// Every live worker, as seen from outside the tree.
    pub fn seen_workers(&self) -> HashSet<Seen> {
        match &self.world {
            Some(w) => w.live().into_iter().map(Seen::Fake).collect(),
            None => self.processes().into_iter().map(Seen::Process).collect(),
        }
    }

    /// The worker a share should have (its pid, as the service reports it).
    pub fn worker_of(&self, share: &ShareInfo) -> Option<Seen> {
        match &self.world {
            Some(_) => Some(Seen::Fake(share.share_id)),
            None => share.worker_pid.map(Seen::Process),
        }
    }

    fn signal(pid: Option<u32>, sig: i32) -> bool {
        match pid {
            Some(pid) => unsafe { libc::kill(-(pid as i32), sig) == 0 },
            None => false,
        }
    }

    /// SIGKILL the worker (its whole group), or crash the fake.
    pub fn kill_worker(&self, share: &ShareInfo) -> bool {
        match &self.world {
            Some(w) => w.crash(share.share_id),
            None => Self::signal(share.worker_pid, libc::SIGKILL),
        }
    }

    /// SIGSTOP: the worker stops answering (a hang).
    pub fn stop_worker(&self, share: &ShareInfo) -> bool {
        match &self.world {
            Some(w) => w.stop(share.share_id),
            None => Self::signal(share.worker_pid, libc::SIGSTOP),
        }
    }

    /// SIGCONT: a stopped worker runs again.
    pub fn cont_worker(&self, share: &ShareInfo) -> bool {
        match &self.world {
            Some(w) => w.cont(share.share_id),
            None => Self::signal(share.worker_pid, libc::SIGCONT),
        }
    }

    /// Kill what the worker runs (tty-share's attach client): the worker should notice.
    pub fn kill_worker_children(&self, share: &ShareInfo) -> bool {
        let Some(pid) = share.worker_pid else {
            return match &self.world {
                Some(w) => w.crash(share.share_id),
                None => false,
            };
        };
        let mut killed = false;
        if let Ok(dir) = std::fs::read_dir("/proc") {
            for e in dir.flatten() {
                let Ok(child) = e.file_name().to_string_lossy().parse::<i32>() else {
                    continue;
                };
                let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
                    continue;
                };
                let ppid = stat
                    .rsplit_once(')')
                    .and_then(|(_, r)| r.split_whitespace().nth(1))
                    .and_then(|p| p.parse::<u32>().ok());
                if ppid == Some(pid) {
                    unsafe {
                        libc::kill(child, libc::SIGKILL);
                    }
                    killed = true;
                }
            }
        }
        killed
    }

    /// Kill the host terminal (the tmux session) and create it anew.
    pub fn kill_terminal(&self, terminal: &TerminalName, shares_on_it: &[ShareId]) {
        match (&self.fake_host, &self.world) {
            (Some(host), Some(world)) => {
                // Its clients go with it: the fake workers attached to it exit.
                host.terminals.lock().remove(terminal.as_str());
                for s in shares_on_it {
                    world.crash(*s);
                }
                host.terminals.lock().insert(terminal.to_string());
            }
            _ => {
                let _ = self.tmux(&["kill-session", "-t", &format!("={terminal}")]);
                let _ = self.tmux(&[
                    "new-session",
                    "-d",
                    "-s",
                    terminal.as_str(),
                    "-x",
                    "100",
                    "-y",
                    "30",
                    "env PS1='host$ ' sh",
                ]);
            }
        }
    }

    pub fn terminal_alive(&self, terminal: &TerminalName) -> bool {
        match &self.fake_host {
            Some(h) => h.terminals.lock().contains(terminal.as_str()),
            None => self.tmux(&["has-session", "-t", &format!("={terminal}")]),
        }
    }

    /// Close `terminal` for good (its tmux session killed; with the fake host, gone
    /// from it).
    pub fn close_terminal(&self, terminal: &TerminalName) {
        match &self.fake_host {
            Some(host) => {
                host.terminals.lock().remove(terminal.as_str());
            }
            None => {
                let _ = self.tmux(&["kill-session", "-t", &format!("={terminal}")]);
            }
        }
    }

    fn tmux(&self, args: &[&str]) -> bool {
        Command::new("tmux")
            .arg("-S")
            .arg(&self.tmux_socket)
            .args(args)
            .env_remove("TMUX")
            .stderr(std::process::Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    /// Everything the audit sink has kept.
    pub fn audit_events(&self) -> Vec<AuditEvent> {
        match &self.fake_audit {
            Some(sink) => sink.events.lock().clone(),
            None => termshare::audit_file::read_events(&self.audit_path)
                .map(|(e, _)| e)
                .unwrap_or_default(),
        }
    }

    /// The audit events written since `cursor` (and the cursor moved past them): what an
    /// incremental check reads, so its cost does not grow with the log.
    pub fn new_audit_events(&self, cursor: &mut AuditCursor) -> Vec<AuditEvent> {
        match &self.fake_audit {
            Some(sink) => {
                let events = sink.events.lock();
                let new = events[cursor.0.min(events.len())..].to_vec();
                cursor.0 = events.len();
                new
            }
            None => {
                use std::io::{Read, Seek, SeekFrom};
                let Ok(mut f) = std::fs::File::open(&self.audit_path) else {
                    return Vec::new();
                };
                let mut text = Vec::new();
                if f.seek(SeekFrom::Start(cursor.0 as u64)).is_err()
                    || f.read_to_end(&mut text).is_err()
                {
                    return Vec::new();
                }
                // Only complete lines; a line being written waits for the next look.
                let Some(end) = text.iter().rposition(|&b| b == b'\n') else {
                    return Vec::new();
                };
                cursor.0 += end + 1;
                text[..end]
                    .split(|&b| b == b'\n')
                    .filter_map(|l| serde_json::from_slice::<AuditEvent>(l).ok())
                    .collect()
            }
        }
    }

    /// The raw audit log, to look for links (tty-share mode: the file).
    pub fn audit_text(&self) -> String {
        match &self.fake_audit {
            Some(sink) => sink
                .events
                .lock()
                .iter()
                .map(|e| serde_json::to_string(e).unwrap_or_default())
                .collect::<Vec<_>>()
                .join("\n"),
            None => std::fs::read_to_string(&self.audit_path).unwrap_or_default(),
        }
    }

    /// Stop everything; afterwards no worker may be left.
    pub async fn shutdown(&mut self) {
        match self.service.take() {
            Some(Service::Fake(s)) => {
                s.shutdown().await;
            }
            Some(Service::Real(t)) => {
                t.shutdown().await;
            }
            None => {}
        }
    }

    /// Workers left after shutdown (must be none).
    pub fn leftovers(&self) -> usize {
        self.seen_workers().len()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if self.mode == Mode::TtyShare {
            for pid in self.processes() {
                unsafe {
                    libc::kill(pid as i32, libc::SIGKILL);
                }
            }
            let _ = self.tmux(&["kill-server"]);
        }
    }
}
