//! The real tmate binary with its relay unreachable (a loopback listener that accepts
//! and never speaks ssh): from the share request to tmate's first connection attempt
//! (the listener's accept), against a plain tmate started the same way (`-F`, its own
//! config and socket) by hand.

use super::*;

/// Wait for the next connection to `relay`; the time since `t0`.
async fn first_attempt(relay: &tokio::net::TcpListener, t0: Instant) -> Duration {
    let (conn, _) = tokio::time::timeout(Duration::from_secs(10), relay.accept())
        .await
        .expect("tmate never tried its relay")
        .expect("accept");
    let took = t0.elapsed();
    drop(conn); // the relay is unreachable: no ssh banner, ever
    took
}

pub(super) async fn tmate_first_attempt(n: usize, rows: &mut Vec<Row>) {
    let host = Host::new();
    let relay = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = relay.local_addr().unwrap().port();
    let ts = real_termshare_with(
        &host,
        &format!(
            "link_timeout = \"1s\"\n[backends.tmate]\nserver_host = \"127.0.0.1\"\nserver_port = {port}\n"
        ),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("tmate.conf");
    std::fs::write(
        &conf,
        format!(
            "set -g tmate-foreground-restart 0\nset -g tmate-server-host \"127.0.0.1\"\nset -g tmate-server-port {port}\n"
        ),
    )
    .unwrap();
    let (mut ours, mut base) = (Vec::new(), Vec::new());
    for round in 0..n {
        ts.zygotes_ready().await;
        let t0 = Instant::now();
        let share = ts.share(request("b", "tmate", Duration::from_secs(600)));
        let (took, result) = tokio::join!(first_attempt(&relay, t0), share);
        assert!(result.is_err(), "a share over an unreachable relay started");
        ours.push(ms(took));
        // Baseline: the same tmate, by hand.
        ts.zygotes_ready().await;
        let sock = dir.path().join(format!("plain-{round}.sock"));
        let t0 = Instant::now();
        let mut plain = tokio::process::Command::new("tmate")
            .arg("-F")
            .arg("-f")
            .arg(&conf)
            .arg("-S")
            .arg(&sock)
            .args(["new-session", "sleep 600"])
            .env_remove("TMUX")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .expect("tmate");
        base.push(ms(first_attempt(&relay, t0).await));
        let pid = plain.id().unwrap() as i32;
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
        let _ = plain.wait().await;
    }
    ts.shutdown().await;
    rows.push(value_row(
        "tmate_start_to_first_attempt_ms",
        pct(&ours, 50.0),
        "ms",
        Some(pct(&base, 50.0)),
        None,
    ));
}
