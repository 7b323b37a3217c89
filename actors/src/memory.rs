//! Giving memory back to the kernel after a burst of shares has ended.
//!
//! glibc's malloc keeps what a program frees in its arenas for reuse; it returns
//! little of it on its own. termshare runs in a process that forks every worker, and
//! a fork copies the page tables of everything the process holds (and the namespace
//! helper of a tty-share worker keeps that copy for its whole life), so memory kept
//! after a burst makes every later fork, and every exit of a forked child, slower.
//! Measured in one process: after 10,000 shares had started and ended, it still held
//! 578 MB, and failure detection's p99 went from 4-6 ms to 12-14 ms. `malloc_trim(0)`
//! gave the memory back (578 MB to 14 MB, in about 60 ms) and the numbers with it.
//!
//! So the root trims once the live shares have fallen to a quarter of a peak of at
//! least [`BURST`] (a second later, off the runtime's threads, so that it does not
//! land in the middle of the fall), and the service trims when it shuts down. With
//! another allocator than glibc's, or off Linux, [`give_back`] does nothing.

use std::time::Duration;

/// The smallest peak of live shares whose fall is worth a trim.
pub(crate) const BURST: usize = 1024;

/// How long after the fall the trim runs.
const SETTLE: Duration = Duration::from_secs(1);

/// Watches the count of live shares for the end of a burst.
#[derive(Debug, Default)]
pub(crate) struct BurstWatch {
    /// The most live shares seen since the last trim.
    peak: usize,
}

impl BurstWatch {
    /// `live` shares are live now: true when a burst has ended (a trim is due).
    pub(crate) fn ended_burst(&mut self, live: usize) -> bool {
        self.peak = self.peak.max(live);
        if self.peak >= BURST && live <= self.peak / 4 {
            self.peak = live;
            return true;
        }
        false
    }
}

/// Trim [`SETTLE`] from now, on a blocking thread.
pub(crate) fn give_back_soon() {
    tokio::spawn(async {
        tokio::time::sleep(SETTLE).await;
        give_back().await;
    });
}

/// Give glibc's free memory back to the kernel now (on a blocking thread).
pub(crate) async fn give_back() {
    let _ = tokio::task::spawn_blocking(|| {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: malloc_trim takes glibc's own locks; it is safe to call at any time.
        unsafe {
            libc::malloc_trim(0);
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_trimmed_once_it_has_fallen_to_a_quarter() {
        let mut w = BurstWatch::default();
        // The ends of a burst of 4,000: no trim until 1,000 are left, then one.
        let trims: Vec<usize> = (0..4000)
            .rev()
            .filter(|&live| w.ended_burst(live))
            .collect();
        assert_eq!(trims, vec![999], "one trim, at a quarter of the peak");
    }

    #[test]
    fn small_counts_are_never_trimmed() {
        let mut w = BurstWatch::default();
        assert!((0..BURST - 1).rev().all(|live| !w.ended_burst(live)));
    }
}
