//! Latency rows: start to link, revoke to participants gone, keystroke round trips,
//! failure detection; each beside its baseline measured in the same run.

use super::*;

/// 1. Start to link with tty-share: termshare vs a plain spawn read to its URL.
pub(super) async fn start_to_link(n: usize, rows: &mut Vec<Row>) {
    let host = Host::new();
    let ts = real_termshare(&host).await;
    let (mut ours, mut direct) = (Vec::new(), Vec::new());
    for i in 0..n + 2 {
        // Each side is timed on a settled process: no zygote being made for the next
        // start (termshare makes one after each start) shares the CPU with it.
        ts.zygotes_ready().await;
        let t0 = Instant::now();
        let info = ts
            .share(request("b", "tty-share", Duration::from_secs(600)))
            .await
            .expect("share");
        let t = t0.elapsed();
        ts.revoke(
            info.share_id,
            "human:bench"
                .parse::<termshare_actors::Principal>()
                .unwrap(),
        )
        .await
        .unwrap();
        ts.zygotes_ready().await;
        let (mut child, _, d) = direct_tty_share(&host).await;
        let _ = child.kill().await;
        if i >= 2 {
            // The first rounds warm caches for both sides.
            ours.push(ms(t));
            direct.push(ms(d));
        }
    }
    ts.shutdown().await;
    let (p50, b50) = (pct(&ours, 50.0), pct(&direct, 50.0));
    rows.push(value_row(
        "start_to_link_p50_ms",
        p50,
        "ms",
        Some(b50),
        None,
    ));
    rows.push(value_row(
        "start_to_link_p99_ms",
        pct(&ours, 99.0),
        "ms",
        Some(pct(&direct, 99.0)),
        None,
    ));
    // Issue 18's goal (the first goal, 1.10, is in BENCHMARKS.md's history).
    rows.push(ratio_row("start_to_link_ratio", p50 / b50, 1.5));
}

/// 2. Revoke to every participant gone: termshare's revoke vs killing tty-share.
pub(super) async fn revoke_to_gone(n: usize, rows: &mut Vec<Row>) {
    let host = Host::new();
    let ts = Arc::new(real_termshare(&host).await);
    let (mut ours, mut direct) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let info = ts
            .share(request("b", "tty-share", Duration::from_secs(600)))
            .await
            .expect("share");
        let p = Participant::join(&info.links.link);
        ts.zygotes_ready().await;
        // Watch the participant while the revoke runs: the revoke answers only after
        // the reap and the audit write, which come after the participant is gone.
        let t0 = Instant::now();
        let revoking = {
            let ts = ts.clone();
            tokio::spawn(async move {
                ts.revoke(
                    info.share_id,
                    "human:bench"
                        .parse::<termshare_actors::Principal>()
                        .unwrap(),
                )
                .await
            })
        };
        ours.push(tokio::task::block_in_place(|| p.gone_after(t0)));
        revoking.await.unwrap().unwrap();

        let (child, link, _) = direct_tty_share(&host).await;
        let p = Participant::join(&link);
        let pid = child.id().unwrap() as i32;
        let t0 = Instant::now();
        unsafe {
            libc::kill(-pid, libc::SIGTERM);
        }
        direct.push(tokio::task::block_in_place(|| p.gone_after(t0)));
        drop(child);
    }
    Arc::try_unwrap(ts)
        .ok()
        .expect("no revoke in flight")
        .shutdown()
        .await;
    let (p99, b99) = (pct(&ours, 99.0), pct(&direct, 99.0));
    rows.push(value_row(
        "revoke_to_gone_p50_ms",
        pct(&ours, 50.0),
        "ms",
        Some(pct(&direct, 50.0)),
        None,
    ));
    rows.push(value_row(
        "revoke_to_gone_p99_ms",
        p99,
        "ms",
        Some(b99),
        Some((50.0, true)),
    ));
    rows.push(ratio_row("revoke_to_gone_ratio", p99 / b99, 1.5));
}

/// 6. Failure detection: SIGKILL of a worker to its share's `failed` event.
pub(super) async fn failure_detection(n: usize, rows: &mut Vec<Row>) {
    let host = Host::new();
    let ts = real_termshare(&host).await;
    let mut events = ts.subscribe();
    let (mut ours, mut base) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let info = ts
            .share(request("b", "tty-share", Duration::from_secs(600)))
            .await
            .expect("share");
        let pgid = ts.live_process_groups()[0];
        ts.zygotes_ready().await;
        let t0 = Instant::now();
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
        loop {
            let e = events.recv().await.unwrap();
            if e.correlation_id == info.share_id && e.kind == AuditKind::ShareFailed {
                break;
            }
        }
        ours.push(ms(t0.elapsed()));
        // Baseline: the same kill noticed by a plain tokio child wait.
        let (mut child, _, _) = direct_tty_share(&host).await;
        let pid = child.id().unwrap() as i32;
        let t0 = Instant::now();
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
        let _ = child.wait().await;
        base.push(ms(t0.elapsed()));
    }
    ts.shutdown().await;
    rows.push(value_row(
        "failure_detect_p50_ms",
        pct(&ours, 50.0),
        "ms",
        Some(pct(&base, 50.0)),
        None,
    ));
    rows.push(value_row(
        "failure_detect_p99_ms",
        pct(&ours, 99.0),
        "ms",
        Some(pct(&base, 99.0)),
        Some((10.0, true)), // issue 18 (it was 50 ms before)
    ));
}

/// Keystroke round trips as a participant makes them (a key in, its echo out over
/// tty-share's websocket), through termshare's link front (tty-share in its private
/// namespace) vs straight to a plain tty-share on loopback. Blocks of 20 keys,
/// alternating, so drift hits both sides alike.
pub(super) async fn keystroke_round_trip(n: usize, rows: &mut Vec<Row>) {
    use crate::keystroke::Keyboard;
    let host = Host::new();
    let ts = real_termshare(&host).await;
    let info = ts
        .share(request("b", "tty-share", Duration::from_secs(600)))
        .await
        .expect("share");
    ts.zygotes_ready().await;
    let (mut plain, plain_link, _) = direct_tty_share(&host).await;
    let (mut ours, mut direct) = (Vec::new(), Vec::new());
    let keys = |k: &mut Vec<f64>, took: Duration| k.push(ms(took));
    // One participant per link for the whole run: the link front lets a burst of 16
    // joins in and then one every 2 s (a link holder cannot flood it), and reconnects
    // are not what this measures. The two alternate in blocks of 20 keys.
    let mut keyboards = [
        (Keyboard::connect(&info.links.link).await, &mut ours),
        (Keyboard::connect(&plain_link).await, &mut direct),
    ];
    for _ in 0..n.div_ceil(20) {
        for (kb, out) in keyboards.iter_mut() {
            // The other one's keys echoed here too: start from a quiet stream.
            kb.drain(Duration::from_millis(30)).await;
            for _ in 0..10 {
                keys(out, kb.round_trip(b"a", b"a").await);
                keys(out, kb.round_trip(b"\x7f", b"").await);
            }
        }
    }
    for (kb, _) in keyboards {
        kb.close().await;
    }
    let _ = plain.kill().await;
    ts.shutdown().await;
    let (p50, b50) = (pct(&ours, 50.0), pct(&direct, 50.0));
    rows.push(value_row(
        "keystroke_rtt_p50_ms",
        p50,
        "ms",
        Some(b50),
        None,
    ));
    rows.push(value_row(
        "keystroke_rtt_p99_ms",
        pct(&ours, 99.0),
        "ms",
        Some(pct(&direct, 99.0)),
        None,
    ));
    rows.push(value_row(
        "front_cost_per_keystroke_us",
        (p50 - b50) * 1000.0,
        "us",
        None,
        None,
    ));
}
