//! The worker's heartbeat tasks: waiting on the kernel's word that it stopped, and
//! the sparse, spread-out serving probe.

use std::time::Duration;

use ractor::ActorRef;

use super::{WorkerArgs, WorkerMsg};
use crate::traits::{ServingProbe, SERVING_PROBE_TIMEOUT};

/// How often the serving probe runs (`Settings::serving_interval`, 10 s by default):
/// each probe is a request to the worker, so this is what an idle share costs. Never
/// more often than the process probe.
pub(super) fn serving_interval(args: &WorkerArgs) -> Duration {
    args.serving_interval.max(args.probe_interval)
}

/// Wait for the worker to stop; one stopped for `timeout` is reported (once), one
/// that continues first is not. Nothing runs while it runs.
pub(super) async fn stop_checks(
    mut stopped: tokio::sync::watch::Receiver<bool>,
    me: ActorRef<WorkerMsg>,
    timeout: Duration,
) {
    loop {
        if stopped.wait_for(|s| *s).await.is_err() {
            return;
        }
        let since = tokio::time::Instant::now();
        tokio::select! {
            continued = stopped.wait_for(|s| !*s) => {
                if continued.is_err() {
                    return;
                }
            }
            _ = tokio::time::sleep(timeout) => {
                let _ = me.cast(WorkerMsg::StoppedFor(since.elapsed()));
                return;
            }
        }
    }
}

/// Run the serving probe every `every` (each bounded by SERVING_PROBE_TIMEOUT), and
/// report each outcome to the worker actor, until the actor is gone. After a failure
/// the next probe comes after `retry` (a third of the heartbeat timeout), so a hang
/// is confirmed within the timeout, not a period later. The first runs at a random
/// point of the first period, so the shares' probes are spread out rather than all
/// at once.
pub(super) async fn serve_checks(
    probe: ServingProbe,
    me: ActorRef<WorkerMsg>,
    every: Duration,
    retry: Duration,
) {
    let phase = {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(me.get_id().pid());
        every.mul_f64((h.finish() % 1000) as f64 / 1000.0)
    };
    let mut wait = phase;
    loop {
        tokio::time::sleep(wait).await;
        let started = tokio::time::Instant::now();
        let outcome = match tokio::time::timeout(SERVING_PROBE_TIMEOUT, probe()).await {
            Ok(result) => result,
            Err(_) => Err(format!(
                "no answer within {}",
                crate::error::human(SERVING_PROBE_TIMEOUT)
            )),
        };
        wait = if outcome.is_ok() { every } else { retry };
        if me.cast(WorkerMsg::Served(outcome, started)).is_err() {
            break;
        }
    }
}
