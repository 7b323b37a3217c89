//! termshare-chaos: a seeded fault-injection harness for termshare.
//!
//! A run drives random operations (share, extend, revoke, switch, handoff, denied
//! requests, waits) interleaved with faults (SIGKILL, SIGSTOP/SIGCONT of workers,
//! killing a worker's children, actor panics and errors through fail points, audit
//! write failures, slow and missing links, garbage output, a worker exiting during
//! revoke, the host terminal killed), and checks the invariants after every step.
//! The same seed replays the same run (exactly, in `fake` mode).

pub mod bench;
pub mod env;
pub mod faulty;
pub mod keystroke;
pub mod rng;
pub mod scenario;

pub use env::Mode;
pub use scenario::{run, FaultKind, RunConfig, Summary, Violation};

static INJECTED_PANICS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Panics injected through fail points are expected by the hundred: count them
/// instead of printing their backtraces. Any other panic is reported as usual.
pub fn quiet_injected_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if payload.starts_with("failpoint ") && payload.ends_with(" panic") {
            INJECTED_PANICS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        } else {
            default(info);
        }
    }));
}

/// How many injected panics were swallowed by [`quiet_injected_panics`].
pub fn injected_panics() -> u64 {
    INJECTED_PANICS.load(std::sync::atomic::Ordering::Relaxed)
}
