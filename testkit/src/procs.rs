//! The process table as a test reads it (from /proc): is a process alive, which
//! processes run a program with a marker in their arguments, what runs below a pid, a
//! process's environment; and waiting for a condition without a fixed sleep.

use std::time::{Duration, Instant};

/// Field `n` of `/proc/PID/stat` after the command name (0 is the state, 1 the
/// parent, 2 the process group); the name may hold anything, so fields are counted
/// after its last ')'.
fn stat_field(pid: i32, n: usize) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(n)?
        .parse()
        .ok()
}

/// The parent of `pid`.
pub fn parent_of(pid: i32) -> Option<i32> {
    stat_field(pid, 1)
}

/// The process group of `pid`.
pub fn pgid_of(pid: i32) -> Option<i32> {
    stat_field(pid, 2)
}

/// Is `pid` a live (non-zombie) process?
pub fn pid_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, r)| !r.trim_start().starts_with('Z'))
            .unwrap_or(false),
        Err(_) => false,
    }
}

/// Poll `cond` until it holds or `limit` passes; returns the time it took.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> Option<Duration> {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if cond() {
            return Some(t0.elapsed());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    cond().then(|| t0.elapsed())
}

/// Live processes whose argv `pick` accepts.
pub fn processes_where(mut pick: impl FnMut(&[String]) -> bool) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let argv: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect();
        if pick(&argv) && pid_alive(pid) {
            out.push(pid);
        }
    }
    out
}

/// Processes whose argv[0] ends with `name` and whose argv mentions `marker` (e.g. a
/// private tmux socket path), live ones only.
pub fn processes_mentioning(name: &str, marker: &str) -> Vec<i32> {
    processes_where(|argv| {
        argv.first().is_some_and(|a| a.ends_with(name)) && argv.iter().any(|a| a.contains(marker))
    })
}

/// `pid` and every live process below it (by parent pid, from /proc).
pub fn descendants(pid: i32) -> Vec<i32> {
    let mut parent_of = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r.to_owned()) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if let Some(ppid) = fields.get(1).and_then(|f| f.parse::<i32>().ok()) {
            parent_of.push((p, ppid));
        }
    }
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        let cur = out[i];
        out.extend(
            parent_of
                .iter()
                .filter(|(_, pp)| *pp == cur)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    out.retain(|p| pid_alive(*p));
    out
}

/// The environment of process `pid`, as `KEY=VALUE` strings (`None`: unreadable).
pub fn environ_of(pid: i32) -> Option<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    Some(
        raw.split(|b| *b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect(),
    )
}
