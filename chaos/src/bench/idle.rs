//! What live shares cost while nothing happens: the daemon's CPU time (this process:
//! termshare runs in it) over a window with N real tty-share shares, against the same
//! window with none. Liveness comes from the kernel and the serving probes are sparse
//! and spread out, so an idle share should cost close to nothing.

use super::*;

/// This process's CPU time so far (user + system, every thread).
fn cpu_time() -> Duration {
    // SAFETY: getrusage fills the struct it is given; zeroed is a valid rusage.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    assert_eq!(rc, 0, "getrusage");
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// CPU used over `window`, as % of one core.
async fn cpu_pct_over(window: Duration) -> f64 {
    let (c0, t0) = (cpu_time(), Instant::now());
    tokio::time::sleep(window).await;
    (cpu_time() - c0).as_secs_f64() / t0.elapsed().as_secs_f64() * 100.0
}

pub(super) async fn idle_cpu(n: usize, window: Duration, rows: &mut Vec<Row>) {
    let host = Host::new();
    let ts = real_termshare_with(&host, &format!("[limits]\nper_terminal = {n}\n")).await;
    // Let the start's own work settle before either window.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let baseline = cpu_pct_over(window).await;
    let mut shares = Vec::with_capacity(n);
    for _ in 0..n {
        let info = ts
            .share(request("b", "tty-share", Duration::from_secs(3600)))
            .await
            .expect("share");
        shares.push(info.share_id);
    }
    assert_eq!(
        ts.live_process_groups().len(),
        n,
        "every share has its worker"
    );
    ts.zygotes_ready().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ours = cpu_pct_over(window).await;
    let (connector, tty_share) = isolation_memory(&ts.live_process_groups());
    // Still all there: an idle window in which shares failed would measure nothing.
    assert_eq!(ts.live_process_groups().len(), n, "shares ended while idle");
    ts.shutdown().await;
    rows.push(value_row(
        "idle_cpu_pct_200",
        ours,
        "%",
        Some(baseline),
        Some((1.0, true)),
    ));
    rows.push(value_row(
        "isolation_pss_kib_per_share",
        connector,
        "KiB",
        Some(tty_share),
        Some((1024.0, true)),
    ));
}

/// The mean proportional set size (KiB) of each share's connector helper (what the
/// namespace isolation costs) and of its tty-share (what the share itself costs).
/// Panics if a worker has no helper: the row would measure nothing.
fn isolation_memory(groups: &[i32]) -> (f64, f64) {
    let pss = |pid: i32| -> f64 {
        let rollup =
            std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
        rollup
            .lines()
            .find_map(|l| l.strip_prefix("Pss:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no Pss for {pid}"))
    };
    let comm = |pid: i32| std::fs::read_to_string(format!("/proc/{pid}/comm")).ok();
    let helpers: std::collections::HashMap<i32, i32> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| comm(pid).is_some_and(|c| c.trim() == "ts-connector"))
        .filter_map(|pid| Some((termshare_testkit::parent_of(pid)?, pid)))
        .collect();
    let (mut connector, mut tty_share) = (0.0, 0.0);
    for &worker in groups {
        let helper = helpers
            .get(&worker)
            .unwrap_or_else(|| panic!("worker {worker} has no connector helper"));
        connector += pss(*helper);
        tty_share += pss(worker);
    }
    let n = groups.len().max(1) as f64;
    (connector / n, tty_share / n)
}
