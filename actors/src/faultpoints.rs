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
//! | `audit.append` | before a batch is written | return: the write fails |
//! | `process.drop_guard` | a worker's process-group guard | return: the guard does not kill (a deliberately broken build) |
//! | `session.stall` | every ShareSession message | return(MS): the session is busy that long |
//! | `spawn.before_fork`, `spawn.handover` (spawner thread), `spawn.after_fork`, `tty_share.after_spawn`, `tty_share.after_url`, `tty_share.after_listen` | each step of a worker's spawn path | return(MS): wait there, so a test can cancel the start at that step |

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
/// clock). For tests that cancel work at a given step.
pub async fn pause(name: &str) {
    if let Some(arg) = check(name) {
        let ms = arg.and_then(|a| a.parse().ok()).unwrap_or(1000);
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
}

/// [`pause`] for a plain thread (the spawner's).
pub fn pause_thread(name: &str) {
    if let Some(arg) = check(name) {
        let ms = arg.and_then(|a| a.parse().ok()).unwrap_or(1000);
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
}
