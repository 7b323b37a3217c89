//! Redrawing the terminal for a participant who just joined.
//!
//! tty-share forwards only what its command writes after a participant connects: a
//! participant of a quiet terminal would see a blank screen until something changed.
//! (tty-share's own remedy, a resize when a receiver reports its window size, never
//! runs for the `tty-share URL` client, which reports its size only on SIGWINCH.) So
//! the link front calls [`Redraw::run`] once the participant's websocket is known to
//! be registered with tty-share, and it asks tmux to redraw the share's own attach
//! client(s): `refresh-client -t CLIENT`, which makes tmux write the whole screen again,
//! and tty-share forwards it to everyone watching. The host's own clients are not
//! touched.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::launch::CleanEnv;

/// A redraw that takes longer than this is given up (and its tmux killed).
const REDRAW_TIMEOUT: Duration = Duration::from_secs(2);
/// How many parents up from a tmux client the worker may be (tty-share starts the
/// attach client as its direct child; a wrapper would add a level or two).
const MAX_ANCESTRY: usize = 4;

/// Redraws the tmux clients that one tty-share worker started.
pub struct Redraw {
    /// The tmux program and its server's socket, taken from the attach argv.
    tmux: PathBuf,
    socket: PathBuf,
    /// The workers' clean environment, for the tmux command too.
    env: Arc<CleanEnv>,
    /// The worker's pid, set once it is spawned: its clients descend from it.
    worker: AtomicU32,
    /// Set while a redraw runs: joins that arrive meanwhile ride on it.
    running: AtomicBool,
}

impl Redraw {
    /// For an attach argv of the form `TMUX -S SOCKET attach-session …` (the default,
    /// and any tmux template that names its socket); `None` for any other attach
    /// command, which termshare cannot ask to redraw.
    pub fn for_attach(attach: &[String], env: Arc<CleanEnv>) -> Option<Arc<Redraw>> {
        let program = PathBuf::from(attach.first()?);
        if program.file_name()? != "tmux" {
            return None;
        }
        let at = attach.iter().position(|a| a == "-S")?;
        let socket = PathBuf::from(attach.get(at + 1)?);
        Some(Arc::new(Redraw {
            tmux: program,
            socket,
            env,
            worker: AtomicU32::new(0),
            running: AtomicBool::new(false),
        }))
    }

    /// The worker is spawned: its attach clients are the ones to redraw.
    pub fn set_worker(&self, pid: u32) {
        self.worker.store(pid, Ordering::Relaxed);
    }

    /// Redraw the worker's clients, in the background; returns at once.
    pub fn run(self: &Arc<Self>) {
        if self.worker.load(Ordering::Relaxed) == 0 || self.running.swap(true, Ordering::AcqRel) {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            let outcome = tokio::time::timeout(REDRAW_TIMEOUT, this.refresh_clients()).await;
            if !matches!(outcome, Ok(Ok(()))) {
                tracing::debug!(?outcome, "could not redraw the terminal for a participant");
            }
            this.running.store(false, Ordering::Release);
        });
    }

    async fn refresh_clients(&self) -> Result<(), String> {
        let listed = self
            .tmux(&["list-clients", "-F", "#{client_pid} #{client_name}"])
            .await?;
        let worker = self.worker.load(Ordering::Relaxed);
        for (pid, name) in listed.lines().filter_map(|l| l.split_once(' ')) {
            let Ok(pid) = pid.parse::<u32>() else {
                continue;
            };
            if descends_from(pid, worker) {
                self.tmux(&["refresh-client", "-t", name]).await?;
            }
        }
        Ok(())
    }

    async fn tmux(&self, args: &[&str]) -> Result<String, String> {
        let mut cmd = tokio::process::Command::new(&self.tmux);
        self.env.apply(&mut cmd);
        cmd.arg("-S")
            .arg(&self.socket)
            .args(args)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        let out = cmd.output().await.map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!("tmux {} failed", args[0]));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// Is `ancestor` among the first few parents of `pid` (by `/proc/PID/stat`)?
fn descends_from(mut pid: u32, ancestor: u32) -> bool {
    for _ in 0..MAX_ANCESTRY {
        match parent_of(pid) {
            Some(parent) if parent == ancestor => return true,
            Some(parent) if parent > 1 => pid = parent,
            _ => return false,
        }
    }
    false
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid …`: comm may hold spaces and parentheses.
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_tmux_attach_that_names_its_socket_can_be_redrawn() {
        let env = Arc::new(CleanEnv::from_current());
        let argv = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let ok = argv(&[
            "/usr/bin/tmux",
            "-S",
            "/run/t.sock",
            "attach-session",
            "-t",
            "=S",
        ]);
        let r = Redraw::for_attach(&ok, env.clone()).expect("tmux with -S");
        assert_eq!(r.socket, PathBuf::from("/run/t.sock"));
        assert!(Redraw::for_attach(&argv(&["/usr/bin/screen", "-x"]), env.clone()).is_none());
        assert!(Redraw::for_attach(&argv(&["/usr/bin/tmux", "attach"]), env).is_none());
    }

    #[test]
    fn a_child_descends_from_its_parent_and_not_the_other_way() {
        let me = std::process::id();
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        assert!(descends_from(child.id(), me));
        assert!(!descends_from(me, child.id()));
        let _ = child.kill();
        let _ = child.wait();
    }
}
