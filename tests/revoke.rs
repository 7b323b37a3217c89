//! Revoke and the per-terminal limit with real tty-share workers and participants.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use termshare::actors::{AccessMode, BackendName, ShareError, ShareRequest};
use termshare::config::Config;
use termshare::policy::Policy;
use termshare::Termshare;

fn request(ttl: u64) -> ShareRequest {
    ShareRequest {
        terminal: "S".parse().unwrap(),
        backend: BackendName::new("tty-share"),
        access: AccessMode::ReadWrite,
        caller: "human:tester"
            .parse::<termshare::actors::Principal>()
            .unwrap()
            .into(),
        ttl: Some(Duration::from_secs(ttl)),
        grace: Some(vec![]),
        join: Default::default(),
        record: false,
    }
}

async fn start(host: &Tmux, extra: &str) -> Termshare {
    let config = Config::load(&host.config(extra)).unwrap();
    let policy = Policy::load(&policy(host.dir.path(), &["tty-share"], "1h")).unwrap();
    Termshare::builder(&config)
        .policy(policy)
        .start()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_disconnects_a_real_participant_and_reports_how_long_it_took() {
    let host = Tmux::new("S");
    let ts = start(&host, "").await;
    let info = ts.share(request(120)).await.unwrap();
    let pgid = ts.live_process_groups()[0];
    let participant = Participant::start(&["tty-share", &info.links.link]);
    let joined = wait_until(Duration::from_secs(10), || {
        participant.screen().contains("host$")
    });
    assert!(joined.is_some(), "{}", participant.screen());

    let t0 = Instant::now();
    let report = ts
        .revoke(
            info.share_id,
            "human:lead"
                .parse::<termshare::actors::Principal>()
                .unwrap(),
        )
        .await
        .unwrap();
    let gone = tokio::task::spawn_blocking(move || {
        let gone = wait_until(Duration::from_secs(5), || !participant.alive());
        (gone, participant)
    })
    .await
    .unwrap();
    assert!(
        gone.0.is_some(),
        "participant still connected 5 s after the revoke"
    );
    let total = t0.elapsed();
    eprintln!(
        "revoke report: elapsed {:?}, escalated {}; participant gone {:?} after the request",
        report.elapsed, report.escalated, total
    );
    assert!(report.deadline_met && !report.escalated && !report.already_gone);
    assert!(report.elapsed < Duration::from_secs(5));
    assert!(!termshare::process::group_alive(pgid));
    assert!(ts.live_process_groups().is_empty());
    let audit = host.audit();
    let revoked = audit.iter().find(|e| e["kind"] == "share.revoked").unwrap();
    assert_eq!(revoked["details"]["by"], "human:lead");
    assert!(revoked["details"]["elapsed_ms"].as_f64().unwrap() < 5000.0);
    assert!(host.alive());
    ts.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_ignores_the_graceful_stop_is_killed_with_its_group_after_the_grace() {
    let host = Tmux::new("S");
    let ts = start(&host, "[revoke]\ngrace = \"300ms\"\n").await;
    let info = ts.share(request(120)).await.unwrap();
    let pgid = ts.live_process_groups()[0];
    // A stopped process cannot act on SIGTERM: only the SIGKILL escalation ends it.
    unsafe {
        libc::kill(pgid, libc::SIGSTOP);
    }
    let report = ts
        .revoke(
            info.share_id,
            "human:lead"
                .parse::<termshare::actors::Principal>()
                .unwrap(),
        )
        .await
        .unwrap();
    eprintln!("escalated revoke took {:?}", report.elapsed);
    assert!(report.escalated, "{report:?}");
    assert!(report.deadline_met);
    assert!(report.elapsed >= Duration::from_millis(300));
    assert!(!termshare::process::group_alive(pgid));
    let audit = host.audit();
    let revoked = audit.iter().find(|e| e["kind"] == "share.revoked").unwrap();
    assert_eq!(revoked["details"]["escalated"], true);
    ts.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_racing_requests_for_one_terminal_start_exactly_one_worker() {
    let host = Tmux::new("S");
    let ts = Arc::new(start(&host, "").await);
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let ts = ts.clone();
        tasks.push(tokio::spawn(async move { ts.share(request(120)).await }));
    }
    let mut started = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => started += 1,
            Err(ShareError::LimitReached { terminal, limit }) => {
                assert_eq!((terminal.as_str(), limit), ("S", 1));
            }
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert_eq!(started, 1);
    assert_eq!(ts.live_process_groups().len(), 1);
    assert_eq!(
        processes_mentioning("tty-share", host.socket.to_str().unwrap()).len(),
        1
    );
    let denied = host
        .audit()
        .iter()
        .filter(|e| e["kind"] == "share.denied")
        .count();
    assert_eq!(denied, 19);
    Arc::into_inner(ts).unwrap().shutdown().await;
    assert!(processes_mentioning("tty-share", host.socket.to_str().unwrap()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigstopped_worker_fails_its_share_within_the_heartbeat_timeout_plus_10_percent() {
    let host = Tmux::new("S");
    // The kernel tells of the stop at once (SIGCHLD): detection at the timeout.
    let ts = start(
        &host,
        "[heartbeat]\ninterval = \"50ms\"\ntimeout = \"2s\"\n",
    )
    .await;
    let mut events = ts.subscribe();
    let info = ts.share(request(120)).await.unwrap();
    let pgid = ts.live_process_groups()[0];
    let t0 = Instant::now();
    unsafe {
        libc::kill(pgid, libc::SIGSTOP);
    }
    let failed = end_event(&mut events, info.share_id)
        .await
        .expect("the hung worker's share did not end");
    let took = t0.elapsed();
    eprintln!("SIGSTOP to share.failed: {took:?}");
    assert_eq!(failed.kind.as_str(), "share.failed");
    assert!(failed.details["cause"]
        .as_str()
        .unwrap()
        .starts_with("heartbeat timeout"));
    let timeout = ts.settings().heartbeat_timeout;
    assert!(
        took >= timeout - timeout / 3 - Duration::from_millis(50) && took <= timeout + timeout / 10,
        "{took:?}"
    );
    assert!(
        !termshare::process::group_alive(pgid),
        "the hung worker was not killed"
    );
    assert!(host.alive());
    ts.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_runs_but_no_longer_serves_fails_its_share_within_the_heartbeat_timeout_and_one_probe(
) {
    let host = Tmux::new("S");
    // A stand-in tty-share that deadlocks after SIGSTOP + SIGCONT: running (state S),
    // its port accepting, never answering (tests/bin/tty-share-deadlocks).
    let standin = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/bin/tty-share-deadlocks");
    let ts = start(
        &host,
        &format!(
            "[backends.tty_share]\nprogram = \"{standin}\"\n[heartbeat]\nserving_interval = \"1s\"\n"
        ),
    )
    .await;
    let mut events = ts.subscribe();
    let info = ts.share(request(120)).await.unwrap();
    let pgid = ts.live_process_groups()[0];
    let t0 = Instant::now();
    unsafe {
        libc::kill(pgid, libc::SIGSTOP);
        libc::kill(pgid, libc::SIGCONT);
    }
    // It runs: the kernel's view is not "stopped".
    let state = termshare::process::process_state(pgid as u32);
    assert!(matches!(state, Some('S') | Some('R')), "{state:?}");
    let failed = end_event(&mut events, info.share_id)
        .await
        .expect("the deadlocked worker's share did not end");
    let took = t0.elapsed();
    let timeout = ts.settings().heartbeat_timeout;
    eprintln!("deadlock to share.failed: {took:?} (heartbeat timeout {timeout:?})");
    assert_eq!(failed.kind.as_str(), "share.failed");
    let cause = failed.details["cause"].as_str().unwrap();
    assert!(cause.contains("runs but does not serve"), "{cause}");
    // The first failing probe starts within a probe period (1 s here) of the
    // deadlock; the hang is declared once probes have failed for the timeout, the
    // last of them taking up to its own 1 s bound.
    let (every, probe) = (
        Duration::from_secs(1),
        termshare::actors::SERVING_PROBE_TIMEOUT,
    );
    assert!(
        // (A probe already under way at the deadlock may be the first to fail.)
        took >= timeout - probe && took <= timeout + every + probe + timeout / 10,
        "{took:?}"
    );
    assert!(
        !termshare::process::group_alive(pgid),
        "the worker was not killed"
    );
    assert!(host.alive());
    ts.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_termshare_without_shutdown_stops_its_shares_on_the_record() {
    let host = Tmux::new("S");
    let ts = start(&host, "").await;
    let info = ts.share(request(120)).await.unwrap();
    let pgid = ts.live_process_groups()[0];
    assert!(termshare::process::group_alive(pgid));
    // An embedder that forgets shutdown().
    drop(ts);
    // The shutdown runs as a task: the share is stopped (and recorded), the worker
    // reaped.
    let stopped = tokio::task::spawn_blocking({
        let host_audit = host.audit_path();
        let id = info.share_id.to_string();
        move || {
            wait_until(Duration::from_secs(5), || {
                std::fs::read_to_string(&host_audit).is_ok_and(|t| {
                    t.lines()
                        .any(|l| l.contains(&id) && l.contains("\"share.stopped\""))
                })
            })
        }
    })
    .await
    .unwrap();
    assert!(
        stopped.is_some(),
        "no share.stopped for the dropped handle's share"
    );
    let gone = wait_until(Duration::from_secs(1), || {
        !termshare::process::group_alive(pgid)
    });
    assert!(gone.is_some(), "the worker's group outlived its Termshare");
    assert!(processes_mentioning("tty-share", host.socket.to_str().unwrap()).is_empty());
    assert!(host.alive());
}
