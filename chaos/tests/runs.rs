//! Short chaos runs with fixed seeds (CI runs these on every submission; the long runs
//! are one command each, see the README), and the harness catching a broken build.

use termshare_chaos::{run, FaultKind, Mode, RunConfig};

fn assert_clean(summary: &termshare_chaos::Summary) {
    if !summary.ok() {
        summary.print();
        panic!("chaos run found violations");
    }
}

#[tokio::test(start_paused = true)]
async fn fake_backend_fixed_seeds_hold_every_invariant() {
    termshare_chaos::quiet_injected_panics();
    for seed in [1, 2, 3] {
        let s = run(RunConfig::new(seed, 400, 20, Mode::Fake)).await;
        assert_clean(&s);
        assert_eq!(s.steps_run, 400);
        for kind in FaultKind::ALL {
            assert!(
                s.faults.get(kind.name()).copied().unwrap_or(0) > 0,
                "seed {seed}: {} never injected",
                kind.name()
            );
        }
        assert!(s.checks > 1000);
    }
}

#[tokio::test(start_paused = true)]
async fn a_fake_run_replays_exactly_from_its_seed() {
    termshare_chaos::quiet_injected_panics();
    let a = run(RunConfig::new(7, 200, 10, Mode::Fake)).await;
    let b = run(RunConfig::new(7, 200, 10, Mode::Fake)).await;
    assert_eq!(
        (&a.actions, &a.faults, &a.op_errors),
        (&b.actions, &b.faults, &b.op_errors)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tty_share_short_run_holds_every_invariant() {
    termshare_chaos::quiet_injected_panics();
    let s = run(RunConfig::new(1, 80, 5, Mode::TtyShare)).await;
    assert_clean(&s);
    assert!(s.faults.values().sum::<u64>() >= 14, "{:?}", s.faults);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drop_guard_that_does_not_kill_is_caught_as_an_orphan() {
    termshare_chaos::quiet_injected_panics();
    // Crashes of sessions and worker actors leave the process to the Drop guard alone.
    let mut cfg = RunConfig::new(3, 60, 3, Mode::TtyShare);
    cfg.faults = vec![FaultKind::SessionPanic, FaultKind::WorkerPanic];
    let healthy = run(cfg.clone()).await;
    assert_clean(&healthy);
    assert!(healthy.faults.values().sum::<u64>() > 0);

    // The deliberately broken build: the guard forgets to kill.
    cfg.standing_failpoints = vec![("process.drop_guard".into(), "return".into())];
    let broken = run(cfg).await;
    broken.print();
    assert!(!broken.ok(), "the harness did not notice the broken guard");
    let v = &broken.violations[0];
    assert_eq!(v.invariant, "no worker without a live share", "{v:?}");
    assert!(broken.reproduce.as_deref().unwrap().contains("--seed 3"));
}

#[tokio::test(start_paused = true)]
async fn a_late_expiry_is_reported_as_a_violation_even_when_it_ends_between_checks() {
    termshare_chaos::quiet_injected_panics();
    // Every expiry timer fires 1.5 s late: shares live past their TTL by more than 1 s.
    let mut cfg = RunConfig::new(11, 400, 20, Mode::Fake);
    cfg.standing_failpoints = vec![("ttl.late".into(), "return(1500)".into())];
    let s = run(cfg.clone()).await;
    assert!(!s.ok(), "a 1.5 s late expiry went unnoticed");
    let v = &s.violations[0];
    assert_eq!(v.invariant, "no share outlives its TTL by 1 s", "{v:?}");
    // The same run on time is clean.
    cfg.standing_failpoints.clear();
    assert_clean(&run(cfg).await);
}
