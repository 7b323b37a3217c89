//! The `termshare share` command end to end, with the real tty-share binary, a private
//! tmux server and real `tty-share LINK` participants.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

/// `termshare share S --backend tty-share --ttl 60s --policy P --json`.
fn share_s(config: &Path, policy: &Path, path_prefix: Option<&Path>) -> Cli {
    Cli::spawn(
        &[
            "--config",
            config.to_str().unwrap(),
            "share",
            "S",
            "--backend",
            "tty-share",
            "--ttl",
            "60s",
            "--policy",
            policy.to_str().unwrap(),
            "--json",
        ],
        path_prefix,
    )
}

#[test]
fn share_prints_a_link_a_participant_sees_the_host_and_sigterm_disconnects_it() {
    let host = Tmux::new("S");
    let config = host.config("");
    let policy = policy(host.dir.path(), &["tty-share"], "1h");
    let t0 = Instant::now();
    let mut cli = share_s(&config, &policy, None);
    let lines = lines_of(cli.child.stdout.take().unwrap());
    let first = read_line_within(&lines, Duration::from_secs(3)).expect("no share line within 3 s");
    let to_link = t0.elapsed();
    let share: serde_json::Value = serde_json::from_str(&first).unwrap();
    let link = share["link"].as_str().unwrap().to_owned();
    // The link front's address, and a secret path (not tty-share's own /s/local/).
    let secret = link
        .strip_prefix("http://127.0.0.1:")
        .and_then(|rest| rest.split_once("/s/"))
        .map(|(_, s)| s.trim_end_matches('/'))
        .unwrap_or_default();
    assert!(
        secret.len() == 32
            && secret
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'),
        "{link}"
    );
    assert_eq!(share["terminal"], "S");
    assert_eq!(share["backend"], "tty-share");
    assert_eq!(share["access"], "read-write");
    assert!(share["share_id"].as_str().is_some() && share["expires_at"].as_str().is_some());
    eprintln!("share line after {to_link:?}");

    let worker = started_worker_pid(&host).expect("share.started with worker_pid");
    assert!(pid_alive(worker));

    let participant = Participant::start(&["tty-share", &link]);
    let joined = wait_until(Duration::from_secs(10), || {
        participant.screen().contains("host$")
    });
    assert!(
        joined.is_some(),
        "participant never showed the host:\n{}",
        participant.screen()
    );
    host.type_line("echo MARK_$((6*7))_seen");
    let seen = wait_until(Duration::from_secs(10), || {
        participant.screen().contains("MARK_42_seen")
    });
    assert!(
        seen.is_some(),
        "participant never saw the marker:\n{}",
        participant.screen()
    );

    let t_revoke = Instant::now();
    cli.signal(libc::SIGTERM);
    let gone = wait_until(Duration::from_secs(5), || !participant.alive());
    assert!(
        gone.is_some(),
        "participant still connected 5 s after SIGTERM"
    );
    eprintln!("participant gone {:?} after SIGTERM", t_revoke.elapsed());
    let status = cli.child.wait().unwrap();
    assert!(status.success(), "{status:?}");

    // The revoke report came out as an event, and is in the audit file.
    let rest: Vec<String> = lines.try_iter().collect();
    assert!(
        rest.iter()
            .any(|l| l.contains("\"kind\":\"share.revoked\"")),
        "{rest:?}"
    );
    let audit = host.audit();
    let kinds: Vec<&str> = audit.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    // The participant's join and its cut-off at the revoke are on the record too.
    assert_eq!(
        kinds,
        [
            "share.requested",
            "share.started",
            "share.joined",
            "share.left",
            "share.revoked"
        ]
    );
    assert!(audit
        .iter()
        .all(|e| e["correlation_id"] == share["share_id"]));
    assert!(
        !std::fs::read_to_string(host.audit_path())
            .unwrap()
            .contains(&link),
        "link leaked into the audit log"
    );

    // Nothing of the worker is left; the shared terminal is alive.
    assert!(!pid_alive(worker));
    assert!(!termshare::process::group_alive(worker));
    assert!(processes_mentioning("tty-share", host.socket.to_str().unwrap()).is_empty());
    assert!(host.alive());
}

#[test]
fn without_an_allowing_rule_it_is_denied_and_no_backend_process_ever_starts() {
    let host = Tmux::new("S");
    let config = host.config("");
    // The policy allows only tmate: tty-share is not covered, so it is denied.
    let policy = policy(host.dir.path(), &["tmate"], "1h");
    // A tty-share earlier in PATH that leaves a mark if it is ever run.
    let bin = host.dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let mark = host.dir.path().join("tty-share-ran");
    std::fs::write(
        bin.join("tty-share"),
        format!(
            "#!/bin/sh\ntouch {}\nexec /usr/bin/tty-share \"$@\"\n",
            mark.display()
        ),
    )
    .unwrap();
    std::process::Command::new("chmod")
        .arg("+x")
        .arg(bin.join("tty-share"))
        .status()
        .unwrap();

    let mut cli = share_s(&config, &policy, Some(&bin));
    let out = cli.finish();
    assert_eq!(
        out.0.code(),
        Some(termshare::exit::DENIED),
        "stderr: {}",
        out.2
    );
    assert!(
        out.2.contains("denied") && out.2.contains("no policy rule allows"),
        "{}",
        out.2
    );
    assert!(out.1.is_empty(), "printed a share: {}", out.1);
    assert!(!mark.exists(), "tty-share was started for a denied share");
    let kinds: Vec<String> = host
        .audit()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(kinds, ["share.requested", "share.denied"]);
}

#[test]
fn kill_9_of_termshare_leaves_no_worker_after_1s() {
    let host = Tmux::new("S");
    let config = host.config("");
    let policy = policy(host.dir.path(), &["tty-share"], "1h");
    let mut cli = share_s(&config, &policy, None);
    let lines = lines_of(cli.child.stdout.take().unwrap());
    read_line_within(&lines, Duration::from_secs(5)).expect("share line");
    let worker = started_worker_pid(&host).unwrap();
    assert!(pid_alive(worker));
    cli.signal(libc::SIGKILL);
    let gone = wait_until(Duration::from_secs(1), || !pid_alive(worker));
    assert!(
        gone.is_some(),
        "worker {worker} outlived termshare by more than 1 s"
    );
    eprintln!("worker gone {gone:?} after kill -9");
    assert!(!termshare::process::group_alive(worker));
    assert!(host.alive());
}

#[test]
fn bad_input_exits_with_its_own_codes_and_starts_nothing() {
    let host = Tmux::new("S");
    let config = host.config("");
    let policy = policy(host.dir.path(), &["tty-share"], "1m");
    let cfg = config.to_str().unwrap();
    let pol = policy.to_str().unwrap();
    let cases: &[(&[&str], i32, &str)] = &[
        (
            &[
                "share",
                "S",
                "--backend",
                "tty-share",
                "--access",
                "rw",
                "--policy",
                pol,
            ],
            termshare::exit::INVALID,
            "access",
        ),
        (
            &["share", "a.b", "--backend", "tty-share", "--policy", pol],
            termshare::exit::INVALID,
            "terminal",
        ),
        (
            &["share", "S", "--backend", "telnet", "--policy", pol],
            termshare::exit::INVALID,
            "unknown backend",
        ),
        (
            &[
                "share",
                "S",
                "--backend",
                "tty-share",
                "--as",
                "root",
                "--policy",
                pol,
            ],
            termshare::exit::INVALID,
            "principal",
        ),
        (
            &[
                "share",
                "S",
                "--backend",
                "tty-share",
                "--ttl",
                "2m",
                "--policy",
                pol,
            ],
            termshare::exit::DENIED,
            "above the policy maximum",
        ),
        (
            &[
                "share",
                "nosuch",
                "--backend",
                "tty-share",
                "--ttl",
                "30s",
                "--policy",
                pol,
            ],
            termshare::exit::NOT_FOUND,
            "unknown terminal",
        ),
        (
            &[
                "share",
                "S",
                "--backend",
                "tty-share",
                "--policy",
                "/nonexistent.toml",
            ],
            termshare::exit::INVALID,
            "cannot read policy",
        ),
        (
            &[
                "share",
                "S",
                "--backend",
                "tty-share",
                "--ttl",
                "soon",
                "--policy",
                pol,
            ],
            2,
            "soon",
        ),
    ];
    for (args, code, needle) in cases {
        let mut full = vec!["--config", cfg];
        full.extend_from_slice(args);
        let mut cli = Cli::spawn(&full, None);
        let (status, _out, err) = cli.finish();
        assert_eq!(status.code(), Some(*code), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    assert!(processes_mentioning("tty-share", host.socket.to_str().unwrap()).is_empty());
}
