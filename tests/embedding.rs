//! The library as an embedder holds it: the config's own policy, a current-thread
//! runtime. (Linked under a supervisor: `examples/linked.rs`; dropped without
//! shutdown: `tests/revoke.rs`.)

mod common;

use std::time::Duration;

use common::*;
use termshare::actors::{AccessMode, BackendName, ShareError, ShareRequest};
use termshare::config::Config;
use termshare::Termshare;

fn request() -> ShareRequest {
    let me: termshare::actors::Principal = "human:tester".parse().unwrap();
    ShareRequest::new("S".parse().unwrap(), BackendName::TTY_SHARE, me)
        .access(AccessMode::ReadOnly)
        .ttl(Duration::from_secs(60))
}

/// The kinds of the audit lines of `share_id`, in order.
fn kinds_of(host: &Tmux, share_id: &str) -> Vec<String> {
    host.audit()
        .iter()
        .filter(|e| e["share_id"] == share_id || e["correlation_id"] == share_id)
        .map(|e| e["kind"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_uses_the_policy_file_the_config_names() {
    let host = Tmux::new("S");
    policy(host.dir.path(), &["tty-share"], "1h");
    let config = Config::load(&host.config("policy = \"policy.toml\"")).unwrap();
    let ts = Termshare::start(&config).await.unwrap();
    let info = ts.share(request()).await.unwrap();
    let pgid = ts.live_process_groups()[0];
    assert!(termshare::process::group_alive(pgid));
    ts.shutdown().await;
    assert!(!termshare::process::group_alive(pgid));
    let kinds = kinds_of(&host, &info.share_id.to_string());
    assert!(kinds.contains(&"share.started".to_owned()), "{kinds:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_without_a_policy_in_the_config_denies_every_share() {
    let host = Tmux::new("S");
    let config = Config::load(&host.config("")).unwrap();
    let ts = Termshare::start(&config).await.unwrap();
    let err = ts.share(request()).await.unwrap_err();
    assert!(matches!(err, ShareError::Denied { .. }), "{err}");
    assert!(ts.live_process_groups().is_empty());
    ts.shutdown().await;
    let denied = host
        .audit()
        .iter()
        .any(|e| e["kind"] == "share.denied" && e["terminal"] == "S");
    assert!(denied, "no share.denied in {:?}", host.audit());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_file_that_is_not_valid_stops_the_start_with_a_typed_error() {
    let host = Tmux::new("S");
    std::fs::write(host.dir.path().join("policy.toml"), "[[rule]]\nallow = 3\n").unwrap();
    let config = Config::load(&host.config("policy = \"policy.toml\"")).unwrap();
    let err = Termshare::start(&config).await.err().expect("started");
    assert!(matches!(err, termshare::StartError::Policy(_)), "{err}");
}

/// The docs once said a multi-threaded runtime was needed; a current-thread one runs a
/// share from start to revoke, the worker reaped by it.
#[tokio::test(flavor = "current_thread")]
async fn a_current_thread_runtime_runs_a_share_and_reaps_its_worker() {
    let host = Tmux::new("S");
    policy(host.dir.path(), &["tty-share"], "1h");
    let config = Config::load(&host.config("policy = \"policy.toml\"")).unwrap();
    let ts = Termshare::start(&config).await.unwrap();
    let info = ts.share(request()).await.unwrap();
    let pid = info.worker_pid.expect("a worker pid") as i32;
    assert!(pid_alive(pid));
    let me: termshare::actors::Principal = "human:tester".parse().unwrap();
    let report = ts.revoke(info.share_id, me).await.unwrap();
    assert!(report.elapsed < Duration::from_secs(5));
    assert!(!pid_alive(pid), "worker {pid} outlived its revoke");
    ts.shutdown().await;
}

/// Whether `screen` shows the line the host printed (not the command that printed it).
fn shows_marker(screen: &str) -> bool {
    screen.lines().any(|l| l.trim() == "QUIET-42")
}

/// tty-share only forwards output produced after a participant connects; termshare
/// has the terminal redrawn on each join, so a participant of a quiet terminal sees
/// its screen at once. Two participants, one after the other, each within 1 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participant_joining_a_quiet_terminal_sees_its_screen_within_a_second() {
    let host = Tmux::new("S");
    host.type_line("echo QUIET-$((6*7))");
    let printed = wait_until(Duration::from_secs(5), || shows_marker(&host.screen()));
    assert!(printed.is_some(), "{}", host.screen());
    policy(host.dir.path(), &["tty-share"], "1h");
    let config = Config::load(&host.config("policy = \"policy.toml\"")).unwrap();
    let ts = Termshare::start(&config).await.unwrap();
    let info = ts.share(request()).await.unwrap();
    for n in 1..=2 {
        let link = info.links.link.clone();
        let (seen, screen) = tokio::task::spawn_blocking(move || {
            let p = Participant::start(&["tty-share", &link]);
            let seen = wait_until(Duration::from_secs(1), || shows_marker(&p.screen()));
            (seen, p.screen())
        })
        .await
        .unwrap();
        assert!(seen.is_some(), "participant {n} saw within 1 s:\n{screen}");
        println!("participant {n} saw the screen after {seen:?}");
    }
    ts.shutdown().await;
}
