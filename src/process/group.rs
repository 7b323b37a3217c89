//! Process groups: the guard that kills a worker's group however its owner ends,
//! the registry of live groups, and the kernel's view of a process.

use super::*;

/// Every live worker process group, so that shutdown can kill them all as a backstop.
#[derive(Default)]
pub struct GroupRegistry {
    groups: Mutex<HashSet<i32>>,
}

impl GroupRegistry {
    /// The ids of the groups still registered.
    pub fn live(&self) -> Vec<i32> {
        self.groups.lock().iter().copied().collect()
    }

    /// SIGKILL every registered group. "Already gone" counts as success.
    pub fn kill_all(&self) {
        for pgid in self.groups.lock().drain() {
            let _ = kill_group(pgid, Signal::SIGKILL);
        }
    }
}

/// Signal a process group; a group that no longer exists is not an error.
pub fn kill_group(pgid: i32, signal: Signal) -> Result<(), Errno> {
    match killpg(Pid::from_raw(pgid), signal) {
        Ok(()) | Err(Errno::ESRCH) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Kills its process group when dropped.
pub struct ProcessGroupGuard {
    pgid: i32,
    registry: Arc<GroupRegistry>,
    released: bool,
}

impl ProcessGroupGuard {
    /// Own group `pgid` (registered for the shutdown backstop) until dropped.
    pub(super) fn new(pgid: i32, registry: Arc<GroupRegistry>) -> Self {
        registry.groups.lock().insert(pgid);
        ProcessGroupGuard {
            pgid,
            registry,
            released: false,
        }
    }

    /// The id of the group it owns.
    pub fn pgid(&self) -> i32 {
        self.pgid
    }

    /// Be registered in `registry` from now on (a zygote that became a worker leaves
    /// the zygotes' registry for the workers').
    pub(super) fn move_to(&mut self, registry: &Arc<GroupRegistry>) {
        self.registry.groups.lock().remove(&self.pgid);
        registry.groups.lock().insert(self.pgid);
        self.registry = registry.clone();
    }

    /// The group was killed and its leader reaped: forget it, so that a later drop
    /// cannot signal a new group that reuses the id.
    pub(super) fn release(&mut self) {
        let _ = kill_group(self.pgid, Signal::SIGKILL); // stragglers
        self.released = true;
        self.registry.groups.lock().remove(&self.pgid);
    }
}

impl Drop for ProcessGroupGuard {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        // The chaos harness's "broken build": a guard that forgets to kill.
        if termshare_actors::faultpoints::check("process.drop_guard").is_some() {
            return;
        }
        if let Err(e) = kill_group(self.pgid, Signal::SIGKILL) {
            tracing::error!(pgid = self.pgid, error = %e, "could not kill worker group");
        }
        self.registry.groups.lock().remove(&self.pgid);
    }
}

/// The state letter of `/proc/PID/stat` (R, S, D, T, Z, …).
pub fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// Is any process of group `pgid` still alive? (Zombies do not count.) For tests and
/// the chaos harness: reads /proc.
pub fn group_alive(pgid: i32) -> bool {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return false;
    };
    dir.flatten().any(|e| {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            return false;
        };
        // pid (comm) state ppid pgrp ...; comm may contain spaces: split after ')'.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            return false;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        fields.len() > 2 && fields[0] != "Z" && fields[2] == pgid.to_string()
    })
}
