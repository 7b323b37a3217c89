//! Fail points for the chaos harness. With the `failpoints` feature they are the `fail`
//! crate's (configured at run time with `fail::cfg`); without it every check is a
//! no-op that the compiler removes, so production builds carry none of this.
//!
//! | name | where | what the harness makes it do |
//! |---|---|---|
//! | `worker.handle` | every BackendWorker message | panic (a worker actor crash) |
//! | `session.handle` | every ShareSession message | panic (a session crash) |
//! | `worker.start` | before a backend starts | return: the start fails |
//! | `backend.slow_link` | before a backend starts | return(MS): the link is late |
//! | `terminal.check` | before a share's terminal is checked | return(MS): the check answers that late |
//! | `audit.append` | before a batch is written | return: the write fails (return(MS): after MS ms) |
//! | `process.drop_guard` | a worker's process-group guard | return: the guard does not kill (a deliberately broken build) |
//! | `session.stall` | every ShareSession message | return(MS): the session is busy that long |
//! | `ttl.late` | a share's expiry timer | return(MS): the expiry comes that late (the TTL invariant must catch it) |
//! | `spawn.before_fork`, `spawn.handover` (spawner thread), `spawn.after_fork`, `tty_share.after_spawn`, `tty_share.after_url`, `tty_share.after_front` | each step of a worker's spawn path | return(MS): wait there, so a test can cancel the start at that step |

/// `None` when the point is off; `Some(arg)` when configured to `return(arg)`. A point
/// configured to `panic` panics here.
#[cfg(feature = "failpoints")]
pub fn check(name: &str) -> Option<Option<String>> {
    fail::eval(name, |arg| arg)
}

/// `None`: fail points are compiled out.
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn check(_name: &str) -> Option<Option<String>> {
    None
}

/// A pause point: with `return(MS)` configured, wait that long here (on the runtime's
/// clock). For tests that cancel work at a given step: `paused_at` (with the
/// `failpoints` feature) tells them it has been reached.
pub async fn pause(name: &'static str) {
    if let Some(arg) = check(name) {
        let ms = arg.and_then(|a| a.parse().ok()).unwrap_or(1000);
        reached(name);
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
}

/// [`pause`] for a plain thread (the spawner's).
pub fn pause_thread(name: &'static str) {
    if let Some(arg) = check(name) {
        let ms = arg.and_then(|a| a.parse().ok()).unwrap_or(1000);
        reached(name);
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
}

/// How many times each configured pause point has been reached.
#[cfg(feature = "failpoints")]
static REACHED: std::sync::Mutex<Vec<(&str, u64)>> = std::sync::Mutex::new(Vec::new());

#[cfg(feature = "failpoints")]
fn reached(name: &'static str) {
    let mut seen = REACHED.lock().unwrap_or_else(|p| p.into_inner());
    match seen.iter_mut().find(|(n, _)| *n == name) {
        Some((_, count)) => *count += 1,
        None => seen.push((name, 1)),
    }
}

#[cfg(not(feature = "failpoints"))]
fn reached(_name: &'static str) {}

/// How many times the pause point `name` has been reached (and is pausing, or has
/// paused) since the process started.
#[cfg(feature = "failpoints")]
pub fn paused_at(name: &str) -> u64 {
    let seen = REACHED.lock().unwrap_or_else(|p| p.into_inner());
    seen.iter().find(|(n, _)| *n == name).map_or(0, |(_, c)| *c)
}
