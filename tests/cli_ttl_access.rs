//! TTL and access with real tty-share participants: the grace warning reaches the
//! participant's screen, the share ends by itself on time, and a read-only share keeps
//! the participant's keystrokes out of the host terminal.

mod common;

use std::time::{Duration, Instant};

use common::*;

#[test]
fn a_6s_share_warns_its_participant_at_3s_and_expires_at_6s() {
    let host = Tmux::new("S");
    let config = host.config("");
    let policy = policy(host.dir.path(), &["tty-share"], "1h");
    let t0 = Instant::now();
    let mut cli = Cli::spawn(
        &[
            "--config",
            config.to_str().unwrap(),
            "share",
            "S",
            "--backend",
            "tty-share",
            "--ttl",
            "6s",
            "--grace",
            "3s",
            "--policy",
            policy.to_str().unwrap(),
            "--json",
        ],
        None,
    );
    let lines = lines_of(cli.child.stdout.take().unwrap());
    let share: serde_json::Value =
        serde_json::from_str(&read_line_within(&lines, Duration::from_secs(3)).unwrap()).unwrap();
    let participant = Participant::start(&["tty-share", share["link"].as_str().unwrap()]);
    let warned = wait_until(Duration::from_secs(6), || {
        participant.screen().contains("ends in 3s")
    });
    assert!(
        warned.is_some(),
        "participant never saw the warning:\n{}",
        participant.screen()
    );
    let warned_at = t0.elapsed();
    let gone = wait_until(Duration::from_secs(8), || !participant.alive());
    assert!(gone.is_some(), "participant still connected after expiry");
    let status = cli.child.wait().unwrap();
    let ended_at = t0.elapsed();
    assert!(status.success());
    eprintln!("warning seen at {warned_at:?}, share over at {ended_at:?}");
    assert!(
        warned_at >= Duration::from_millis(2500) && warned_at < Duration::from_millis(4500),
        "{warned_at:?}"
    );
    assert!(
        ended_at >= Duration::from_millis(5500) && ended_at < Duration::from_millis(7000),
        "{ended_at:?}"
    );
    let events: Vec<String> = lines.try_iter().collect();
    let printed: Vec<&str> = [
        "share.joined",
        "share.grace_warning",
        "share.left",
        "share.expired",
    ]
    .into_iter()
    .filter(|k| {
        events
            .iter()
            .any(|l| l.contains(&format!("\"kind\":\"{k}\"")))
    })
    .collect();
    assert_eq!(printed.len(), 4, "{events:?}");
    let kinds: Vec<String> = host
        .audit()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        kinds,
        [
            "share.requested",
            "share.started",
            "share.joined",
            "share.grace_warning",
            "share.left",
            "share.expired"
        ]
    );
    // The notice was shown, and a participant was there to see it.
    let warning = host
        .audit()
        .into_iter()
        .find(|e| e["kind"] == "share.grace_warning")
        .unwrap();
    assert_eq!(warning["details"]["notice_shown"], true, "{warning}");
    assert_eq!(
        warning["details"]["participants_notified"], true,
        "{warning}"
    );
    assert!(host
        .audit()
        .iter()
        .all(|e| e["correlation_id"] == share["share_id"]));
    assert!(host.alive());
}

#[test]
fn a_read_only_share_keeps_participant_keystrokes_out_of_the_host() {
    let host = Tmux::new("S");
    let config = host.config("");
    let policy = policy(host.dir.path(), &["tty-share"], "1h");
    let mut cli = Cli::spawn(
        &[
            "--config",
            config.to_str().unwrap(),
            "share",
            "S",
            "--backend",
            "tty-share",
            "--ttl",
            "60s",
            "--access",
            "read-only",
            "--policy",
            policy.to_str().unwrap(),
            "--json",
        ],
        None,
    );
    let lines = lines_of(cli.child.stdout.take().unwrap());
    let share: serde_json::Value =
        serde_json::from_str(&read_line_within(&lines, Duration::from_secs(3)).unwrap()).unwrap();
    assert_eq!(share["access"], "read-only");
    let participant = Participant::start(&["tty-share", share["link"].as_str().unwrap()]);
    // A read-only client's resize never reaches tmux, so nothing repaints for it: it
    // sees only output produced after it joined. Produce some and wait for it.
    let joined = wait_until(Duration::from_secs(10), || {
        host.type_line("echo JOINED_$((3+4))");
        wait_until(Duration::from_millis(500), || {
            participant.screen().contains("JOINED_7")
        })
        .is_some()
    });
    assert!(
        joined.is_some(),
        "participant never showed the host:\n{}",
        participant.screen()
    );
    // The participant types; then the host types a marker. Once the participant sees the
    // host's marker, anything it typed earlier would have reached the host too.
    participant.type_line("echo INTRUDER_$((1+1))");
    host.type_line("echo HOSTMARK_$((2+3))");
    assert!(wait_until(Duration::from_secs(10), || participant
        .screen()
        .contains("HOSTMARK_5"))
    .is_some());
    let screen = host.screen();
    assert!(
        !screen.contains("INTRUDER"),
        "participant input reached the host:\n{screen}"
    );
    cli.signal(libc::SIGTERM);
    assert!(cli.child.wait().unwrap().success());
    assert!(wait_until(Duration::from_secs(5), || !participant.alive()).is_some());
}
