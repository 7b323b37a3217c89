//! The audit log as an auditor reads it: one event per action, one correlation id per
//! share, no gaps, no links, and nothing acknowledged lost when the daemon is killed.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

fn policy_with_upterm(host: &Tmux) -> std::path::PathBuf {
    policy(host.dir.path(), &["tty-share", "upterm"], "1h")
}

#[test]
fn a_scripted_run_leaves_one_event_per_action_without_gaps_or_links() {
    let host = Tmux::new("S");
    host.run(&["new-session", "-d", "-s", "T"]);
    let policy = policy_with_upterm(&host);
    let daemon = Daemon::start_with_policy(&host, &policy, &upterm_config(&upterm_standin(), ""));
    let mut links = Vec::new();
    // start, extend, switch, revoke
    let a = daemon.json(&["share", "S", "--backend", "tty-share", "--ttl", "10m"]);
    let a_id = a["share_id"].as_str().unwrap().to_owned();
    links.push(a["link"].as_str().unwrap().to_owned());
    daemon.json(&["extend", &a_id, "5m"]);
    let switched = daemon.json(&["switch", &a_id, "--backend", "upterm"]);
    links.push(switched["link"].as_str().unwrap().to_owned());
    daemon.json(&["revoke", &a_id]);
    // one share that expires
    let b = daemon.json(&["share", "T", "--backend", "tty-share", "--ttl", "1s"]);
    let b_id = b["share_id"].as_str().unwrap().to_owned();
    links.push(b["link"].as_str().unwrap().to_owned());
    let expired = wait_until(Duration::from_secs(5), || {
        host.audit_all()
            .iter()
            .any(|e| e["kind"] == "share.expired")
    });
    assert!(expired.is_some(), "the 1 s share did not expire");
    // one denied request (tmate is not in the policy)
    let (code, _, _) = daemon.run(&["share", "S", "--backend", "tmate"]);
    assert_eq!(code, termshare::exit::DENIED);
    daemon.stop();

    let text = std::fs::read_to_string(host.audit_path()).unwrap();
    for link in &links {
        assert!(
            !text.contains(link.as_str()),
            "a link is in the audit log: {link}"
        );
    }
    let events = host.audit_all();
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(
        seqs,
        (1..=events.len() as u64).collect::<Vec<_>>(),
        "sequence has gaps"
    );
    let per_share = |id: &str| -> Vec<String> {
        events
            .iter()
            .filter(|e| e["correlation_id"] == id)
            .map(|e| e["kind"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        per_share(&a_id),
        [
            "share.requested",
            "share.started",
            "share.extended",
            "share.switched",
            "share.revoked"
        ]
    );
    assert_eq!(
        per_share(&b_id),
        ["share.requested", "share.started", "share.expired"]
    );
    let denied: Vec<&Value> = events
        .iter()
        .filter(|e| e["kind"] == "share.denied")
        .collect();
    assert_eq!(denied.len(), 1);
    assert_eq!(
        per_share(denied[0]["correlation_id"].as_str().unwrap()),
        ["share.requested", "share.denied"]
    );
    // The daemon's own start and clean stop frame the run.
    assert_eq!(events.len(), 1 + 5 + 3 + 2 + 1);
    assert_eq!(events[0]["kind"], "service.started");
    assert_eq!(events[events.len() - 1]["kind"], "service.stopped");
    for e in &events {
        for key in [
            "id",
            "at",
            "seq",
            "correlation_id",
            "kind",
            "principal",
            "terminal",
            "backend",
            "details",
        ] {
            assert!(e.get(key).is_some(), "{key} missing in {e}");
        }
        let id = uuid::Uuid::parse_str(e["id"].as_str().unwrap()).unwrap();
        assert_eq!(id.get_version_num(), 7);
    }

    // `termshare audit` filters the same log.
    let cfg = daemon_config(&host);
    let (code, out, _) = run_cli(&["--config", &cfg, "audit", "--share", &a_id, "--json"]);
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), 5);
    let (_, out, _) = run_cli(&["--config", &cfg, "audit", "--kind", "expired", "--json"]);
    assert_eq!(out.lines().count(), 1);
    assert!(out.contains(&b_id));
    let (_, out, _) = run_cli(&["--config", &cfg, "audit", "--terminal", "T", "--json"]);
    assert_eq!(out.lines().count(), 3);
    let (_, out, _) = run_cli(&[
        "--config",
        &cfg,
        "audit",
        "--since",
        "1h",
        "--kind",
        "share.denied",
    ]);
    assert_eq!(out.lines().count(), 1, "{out}");
    let (_, out, _) = run_cli(&["--config", &cfg, "audit", "--until", "2000-01-01T00:00:00Z"]);
    assert_eq!(out.trim(), "");
}

fn daemon_config(host: &Tmux) -> String {
    host.dir
        .path()
        .join("config.toml")
        .to_str()
        .unwrap()
        .to_owned()
}

fn run_cli(args: &[&str]) -> (i32, String, String) {
    let mut cli = Cli::spawn(args, None);
    let (s, o, e) = cli.finish();
    (s.code().unwrap_or(-1), o, e)
}

#[test]
fn audit_follow_prints_events_as_they_are_kept() {
    let host = Tmux::new("S");
    let daemon = Daemon::start(&host, "");
    let cfg = daemon_config(&host);
    let mut follow = Cli::spawn(&["--config", &cfg, "audit", "--follow", "--json"], None);
    let lines = lines_of(follow.child.stdout.take().unwrap());
    let share = daemon.json(&["share", "S", "--backend", "tty-share"]);
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let line = read_line_within(&lines, Duration::from_secs(5))
            .expect("audit --follow printed nothing");
        let event = serde_json::from_str::<Value>(&line).unwrap();
        // (The daemon's own service.started comes first.)
        if event["correlation_id"] == share["share_id"] {
            seen.push(event);
        }
    }
    assert_eq!(seen[1]["kind"], "share.started");
    assert_eq!(seen[1]["correlation_id"], share["share_id"]);
    daemon.stop();
}

#[test]
fn kill_9_during_a_burst_loses_no_acknowledged_action() {
    let host = Tmux::new("S1");
    for t in ["S2", "S3", "S4"] {
        host.run(&["new-session", "-d", "-s", t]);
    }
    let daemon = Daemon::start(&host, "");
    let acked: Arc<Mutex<Vec<(String, String)>>> = Arc::default(); // (share_id, kind)
    let actions = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for terminal in ["S1", "S2", "S3", "S4"] {
        let socket = daemon.socket.clone();
        let acked = acked.clone();
        let actions = actions.clone();
        workers.push(std::thread::spawn(move || {
            let Ok(stream) = std::os::unix::net::UnixStream::connect(&socket) else { return };
            stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut conn = Conn {
                write: stream.try_clone().unwrap(),
                read: std::io::BufReader::new(stream),
            };
            let mut call = |req: Value| -> Option<Value> {
                use std::io::{BufRead, Write};
                let mut line = serde_json::to_vec(&req).ok()?;
                line.push(b'\n');
                conn.write.write_all(&line).ok()?;
                let mut reply = String::new();
                conn.read.read_line(&mut reply).ok()?;
                let v: Value = serde_json::from_str(&reply).ok()?;
                (v["ok"] == true).then(|| v["result"].clone())
            };
            for n in 0..84 {
                let Some(share) = call(json!({"v":1,"id":n*3,"cmd":"share","terminal":terminal,"backend":"tty-share","ttl":"10m"})) else { return };
                let id = share["share_id"].as_str().unwrap().to_owned();
                acked.lock().unwrap().push((id.clone(), "share.started".into()));
                actions.fetch_add(1, Ordering::SeqCst);
                if call(json!({"v":1,"id":n*3+1,"cmd":"extend","share_id":id,"by":"1m"})).is_none() { return }
                acked.lock().unwrap().push((id.clone(), "share.extended".into()));
                actions.fetch_add(1, Ordering::SeqCst);
                if call(json!({"v":1,"id":n*3+2,"cmd":"revoke","share_id":id})).is_none() { return }
                acked.lock().unwrap().push((id, "share.revoked".into()));
                actions.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    // Kill the daemon in the middle of the burst.
    let midway = wait_until(Duration::from_secs(60), || {
        actions.load(Ordering::SeqCst) >= 400
    });
    assert!(midway.is_some(), "the burst did not get going");
    let Daemon {
        mut cli,
        socket,
        config,
    } = daemon;
    cli.signal(libc::SIGKILL);
    let _ = cli.child.wait();
    for w in workers {
        w.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    eprintln!("{} actions acknowledged before kill -9", acked.len());
    assert!(acked.len() < 1008, "the kill came after the burst");
    // No worker outlives the daemon.
    let orphans = wait_until(Duration::from_secs(1), || {
        processes_mentioning("tty-share", host.socket.to_str().unwrap()).is_empty()
    });
    assert!(
        orphans.is_some(),
        "tty-share survived kill -9 of the daemon"
    );

    // Restart on the same log: it opens cleanly (a torn line is cut) and numbering goes on.
    let restarted = Cli::spawn(&["--config", config.to_str().unwrap(), "serve"], None);
    // The socket is bound before the log is reopened: wait for an answer.
    let cfg = config.to_str().unwrap().to_owned();
    let up = wait_until(Duration::from_secs(10), || {
        run_cli(&["--config", &cfg, "list"]).0 == 0
    });
    assert!(up.is_some());
    let daemon = Daemon {
        cli: restarted,
        socket,
        config,
    };
    let events = host.audit_all();
    let kept: HashSet<(String, String)> = events
        .iter()
        .map(|e| {
            (
                e["correlation_id"].as_str().unwrap().to_owned(),
                e["kind"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let lost: Vec<_> = acked.iter().filter(|a| !kept.contains(*a)).collect();
    assert!(lost.is_empty(), "acknowledged but not in the log: {lost:?}");
    let before = events.last().unwrap()["seq"].as_u64().unwrap();
    daemon.json(&["share", "S1", "--backend", "tty-share"]);
    let after = host.audit_all();
    let mut by_kind = BTreeMap::<String, usize>::new();
    for e in &after {
        *by_kind
            .entry(e["kind"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    eprintln!("events by kind after restart: {by_kind:?}");
    assert_eq!(
        after[after.len() - 2]["seq"].as_u64().unwrap(),
        before + 1,
        "numbering restarted"
    );
    daemon.stop();

    // `termshare audit | head -1`: the log is far longer than a pipe holds, so the
    // command writes into a closed pipe; it ends quietly with exit 0 (no panic, 101).
    let text = std::fs::read(host.audit_path()).unwrap();
    assert!(text.len() > 128 * 1024, "{} bytes", text.len());
    let out = std::process::Command::new("bash")
        .args(["-o", "pipefail", "-c"])
        .arg(format!(
            "'{}' --config '{}' audit --json | head -1",
            env!("CARGO_BIN_EXE_termshare"),
            cfg
        ))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.is_empty(), "{stderr}");
    let first: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(first["seq"], 1);
}

#[test]
fn after_kill_9_with_20_live_shares_a_restart_gives_each_start_exactly_one_end() {
    let host = Tmux::new("S");
    let daemon = Daemon::start(&host, "[limits]\nper_terminal = 21\n");
    let live: Vec<String> = (0..20)
        .map(|_| {
            daemon.json(&["share", "S", "--backend", "tty-share", "--ttl", "1h"])["share_id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    // One that ended the usual way before the crash.
    let revoked = daemon.json(&["share", "S", "--backend", "tty-share"]);
    let revoked = revoked["share_id"].as_str().unwrap().to_owned();
    let Daemon {
        mut cli,
        socket,
        config,
    } = daemon;
    let (code, _, err) = run_cli(&["--config", config.to_str().unwrap(), "revoke", &revoked]);
    assert_eq!(code, 0, "{err}");
    cli.signal(libc::SIGKILL);
    let _ = cli.child.wait();
    let restarted = Cli::spawn(&["--config", config.to_str().unwrap(), "serve"], None);
    // The socket is bound before the log is reopened: wait for an answer.
    let cfg = config.to_str().unwrap().to_owned();
    let up = wait_until(Duration::from_secs(10), || {
        run_cli(&["--config", &cfg, "list"]).0 == 0
    });
    assert!(up.is_some(), "the daemon did not come back");
    let daemon = Daemon {
        cli: restarted,
        socket,
        config,
    };
    let events = host.audit_all();
    let ends = |id: &str| -> Vec<String> {
        events
            .iter()
            .filter(|e| e["correlation_id"] == id)
            .map(|e| e["kind"].as_str().unwrap().to_owned())
            .filter(|k| {
                [
                    "share.revoked",
                    "share.expired",
                    "share.stopped",
                    "share.failed",
                    "share.ended",
                ]
                .contains(&k.as_str())
            })
            .collect()
    };
    // Every start in the whole log has exactly one end.
    for started in events.iter().filter(|e| e["kind"] == "share.started") {
        let id = started["correlation_id"].as_str().unwrap();
        assert_eq!(ends(id).len(), 1, "share {id}: ends {:?}", ends(id));
    }
    for id in &live {
        assert_eq!(ends(id), ["share.ended"], "share {id}");
        let ended = events
            .iter()
            .find(|e| e["correlation_id"] == id.as_str() && e["kind"] == "share.ended")
            .unwrap();
        assert_eq!(ended["details"]["cause"], "termshare restarted");
        assert_eq!(ended["terminal"], "S");
    }
    assert_eq!(ends(&revoked), ["share.revoked"]);
    // The restart says what it did, after the ends it wrote.
    let started = events
        .iter()
        .rfind(|e| e["kind"] == "service.started")
        .unwrap();
    assert_eq!(started["details"]["ended_shares"], 20);
    assert_eq!(started["details"]["checkpoint"], true);
    // A clean stop is on the record too.
    daemon.stop();
    let last = host.audit_all().pop().unwrap();
    assert_eq!(last["kind"], "service.stopped");
    assert_eq!(last["correlation_id"], started["correlation_id"]);
}
