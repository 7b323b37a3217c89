//! Which workers are stopped (SIGSTOP, SIGTSTP), as the kernel tells it: no polling.
//!
//! A child that stops or continues sends its parent SIGCHLD (nobody here installs
//! the handler with `SA_NOCLDSTOP`). On each one, [`Stops`] asks the kernel about
//! every registered worker with `waitid(WSTOPPED | WCONTINUED | WNOHANG)`: that takes
//! the stop or continue notification and never an exit (no `WEXITED`), so tokio's
//! own reaping of the worker is untouched. An idle daemon does nothing at all here;
//! the heartbeat waits on each worker's `watch` instead of reading `/proc` on a timer.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use parking_lot::Mutex;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

/// The registry of workers whose stops are followed, and the SIGCHLD task.
#[derive(Default)]
pub struct Stops {
    /// pid → (the registration's token, its sender). The token keeps a reused pid's
    /// new entry from being removed by the old one's [`StopWatch`].
    workers: Mutex<HashMap<i32, (u64, watch::Sender<bool>)>>,
    next_token: std::sync::atomic::AtomicU64,
}

/// One worker's entry: `true` while it is stopped. Leaves the registry when dropped.
pub struct StopWatch {
    pid: i32,
    token: u64,
    stopped: watch::Receiver<bool>,
    stops: Weak<Stops>,
}

impl Stops {
    /// A registry and its SIGCHLD task (ends with the registry). Needs a runtime.
    pub fn start() -> std::io::Result<Arc<Stops>> {
        let stops = Arc::new(Stops::default());
        let mut sigchld = signal(SignalKind::child())?;
        let weak = Arc::downgrade(&stops);
        tokio::spawn(async move {
            while sigchld.recv().await.is_some() {
                let Some(stops) = weak.upgrade() else { break };
                stops.look();
            }
        });
        Ok(stops)
    }

    /// Follow `pid` (a child of this process) from now on.
    pub fn watch(self: &Arc<Self>, pid: i32) -> StopWatch {
        let (tx, rx) = watch::channel(false);
        let token = self
            .next_token
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // Registered, then asked, under the lock `look` takes: a stop whose SIGCHLD
        // came before the registration is still pending in the kernel for this pid
        // (each ask is for one pid), so the ask finds it.
        let mut workers = self.workers.lock();
        if let Some(stopped) = state_change(pid) {
            tx.send_replace(stopped);
        }
        workers.insert(pid, (token, tx));
        drop(workers);
        StopWatch {
            pid,
            token,
            stopped: rx,
            stops: Arc::downgrade(self),
        }
    }

    /// After a SIGCHLD: which registered worker stopped or continued. One ask per
    /// registered worker: SIGCHLDs are rare while shares idle (a child's exit or
    /// stop), and an ask for one pid never takes another child's notice.
    fn look(&self) {
        let workers = self.workers.lock();
        for (pid, (_, tx)) in workers.iter() {
            if let Some(stopped) = state_change(*pid) {
                tx.send_if_modified(|s| std::mem::replace(s, stopped) != stopped);
            }
        }
    }
}

/// `Some(true)` if `pid` stopped, `Some(false)` if it continued, since the last ask.
fn state_change(pid: i32) -> Option<bool> {
    let flags = WaitPidFlag::WSTOPPED | WaitPidFlag::WCONTINUED | WaitPidFlag::WNOHANG;
    match waitid(Id::Pid(Pid::from_raw(pid)), flags) {
        Ok(WaitStatus::Stopped(..)) => Some(true),
        Ok(WaitStatus::Continued(_)) => Some(false),
        _ => None,
    }
}

impl StopWatch {
    /// `true` while the worker is stopped; changes as it stops and continues.
    pub fn receiver(&self) -> watch::Receiver<bool> {
        self.stopped.clone()
    }

    /// Whether it is stopped now.
    pub fn is_stopped(&self) -> bool {
        *self.stopped.borrow()
    }
}

impl Drop for StopWatch {
    fn drop(&mut self) {
        if let Some(stops) = self.stops.upgrade() {
            let mut workers = stops.workers.lock();
            // Only this registration's entry: the pid may belong to a newer worker.
            if workers
                .get(&self.pid)
                .is_some_and(|(t, _)| *t == self.token)
            {
                workers.remove(&self.pid);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_stop_and_a_continue_are_seen_without_polling_and_the_exit_is_left_to_tokio() {
        let stops = Stops::start().unwrap();
        let mut child = tokio::process::Command::new("sleep")
            .arg("30")
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let pid = child.id().unwrap() as i32;
        let watch = stops.watch(pid);
        let mut rx = watch.receiver();
        assert!(!watch.is_stopped());
        nix::sys::signal::kill(Pid::from_raw(pid), nix::sys::signal::Signal::SIGSTOP).unwrap();
        tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|s| *s))
            .await
            .expect("the stop was not seen")
            .unwrap();
        nix::sys::signal::kill(Pid::from_raw(pid), nix::sys::signal::Signal::SIGCONT).unwrap();
        tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|s| !*s))
            .await
            .expect("the continue was not seen")
            .unwrap();
        // The exit still reaches tokio's reaper.
        nix::sys::signal::kill(Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).unwrap();
        let status = tokio::time::timeout(Duration::from_secs(5), child.wait())
            .await
            .expect("tokio never saw the exit")
            .unwrap();
        assert!(!status.success());
        drop(watch);
        assert!(stops.workers.lock().is_empty());
    }

    #[tokio::test]
    async fn an_old_registration_of_a_reused_pid_leaves_the_new_one_alone() {
        let stops = Stops::start().unwrap();
        // Not a child: the asks find nothing, which is all this needs.
        let old = stops.watch(999_999);
        let new = stops.watch(999_999);
        drop(old);
        assert!(stops.workers.lock().contains_key(&999_999));
        drop(new);
        assert!(stops.workers.lock().is_empty());
    }
}
