//! `termshare serve` and its CLI clients, as separate processes over the real socket.

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use common::*;
use serde_json::{json, Value};

fn expires(v: &Value) -> SystemTime {
    humantime::parse_rfc3339(v["expires_at"].as_str().unwrap()).unwrap()
}

#[test]
fn serve_share_list_status_extend_revoke_as_a_new_user_would() {
    let host = Tmux::new("S");
    let daemon = Daemon::start(&host, "");
    let socket_mode = std::fs::metadata(&daemon.socket)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    let dir_mode = std::fs::metadata(daemon.socket.parent().unwrap())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!((socket_mode, dir_mode), (0o600, 0o700));

    let share = daemon.json(&["share", "S", "--backend", "tty-share", "--ttl", "10m"]);
    let id = share["share_id"].as_str().unwrap().to_owned();
    assert!(share["link"]
        .as_str()
        .unwrap()
        .starts_with("http://127.0.0.1:"));
    let worker = started_worker_pid(&host).unwrap();
    assert!(
        pid_alive(worker),
        "the share lives in the daemon after the client exits"
    );

    let (code, table, _) = daemon.run(&["list"]);
    assert_eq!(code, 0);
    assert!(
        table.contains(&id) && table.contains("tty-share") && table.contains("9m"),
        "{table}"
    );
    // Who is watching: nobody yet, and the table says so.
    let header = table.lines().next().unwrap_or_default();
    let row = table.lines().find(|l| l.contains(&id)).unwrap_or_default();
    let column = header.find("PARTICIPANTS").expect("a PARTICIPANTS column");
    assert!(row[column..].starts_with("0 "), "{table}");
    let (_, status, _) = daemon.run(&["status"]);
    assert!(
        status.contains("S ") && status.contains("active") && status.contains("9m"),
        "{status}"
    );
    let board = daemon.json(&["status"]);
    assert_eq!(board["badges"]["S"]["shares"][0]["share_id"], id.as_str());
    assert_eq!(board["audit"]["healthy"], true);

    let extended = daemon.json(&["extend", &id, "5m"]);
    let moved = expires(&extended).duration_since(expires(&share)).unwrap();
    assert_eq!(moved, Duration::from_secs(300));

    // A new link; the same share and expiry.
    let rotated = daemon.json(&["rotate", &id]);
    assert_eq!(rotated["share_id"], id.as_str());
    assert_eq!(rotated["expires_at"], extended["expires_at"]);
    assert_ne!(rotated["link"], share["link"]);
    assert_eq!(rotated["participants"], 0);

    let (code, out, _) = daemon.run(&["revoke", &id]);
    assert_eq!(code, 0);
    assert!(
        out.contains("revoked share")
            && out.contains(" ms")
            && out.contains("participants before: 0, after: 0"),
        "{out}"
    );
    assert!(!pid_alive(worker));
    let (code, _, err) = daemon.run(&["revoke", &id]);
    assert_eq!(code, termshare::exit::EXPIRED, "{err}");
    assert!(err.contains("already ended (revoked)"), "{err}");
    let (_, out, _) = daemon.run(&["list"]);
    assert_eq!(out.trim(), "no live shares");
    daemon.stop();
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
            "share.extended",
            "share.rotated",
            "share.revoked"
        ]
    );
}

#[test]
fn twenty_racing_share_clients_for_a_terminal_with_limit_1_admit_exactly_one() {
    let host = Tmux::new("S");
    let daemon = Daemon::start(&host, "");
    let cfg = daemon.config.to_str().unwrap().to_owned();
    let mut clients: Vec<Cli> = (0..20)
        .map(|_| {
            Cli::spawn(
                &[
                    "--config",
                    &cfg,
                    "share",
                    "S",
                    "--backend",
                    "tty-share",
                    "--ttl",
                    "5m",
                ],
                None,
            )
        })
        .collect();
    let mut ok = 0;
    for c in clients.iter_mut() {
        let (status, _, err) = c.finish();
        match status.code() {
            Some(0) => ok += 1,
            Some(code) => {
                assert_eq!(code, termshare::exit::LIMIT_REACHED, "{err}");
                assert!(
                    err.contains("terminal S already has 1 live share(s), its limit"),
                    "{err}"
                );
            }
            None => panic!("client killed"),
        }
    }
    assert_eq!(ok, 1);
    assert_eq!(
        processes_mentioning("tty-share", host.socket.to_str().unwrap()).len(),
        1
    );
    daemon.stop();
    assert!(processes_mentioning("tty-share", host.socket.to_str().unwrap()).is_empty());
}

#[test]
fn hostile_lines_each_get_an_error_and_the_daemon_keeps_serving() {
    let host = Tmux::new("S");
    let daemon = Daemon::start(&host, "");
    let mut conn = Conn::open(&daemon.socket);
    let huge = vec![b'A'; 200 * 1024];
    let deep = "[".repeat(10_000);
    let mut lines: Vec<Vec<u8>> = Vec::new();
    for i in 0..1000 {
        let line: Vec<u8> = match i % 20 {
            0 => b"not json".to_vec(),
            1 => huge.clone(),
            2 => deep.clone().into_bytes(),
            3 => br#"{"v":1,"id":1,"cmd":"rm -rf /"}"#.to_vec(),
            4 => br#"{"v":1,"id":2,"cmd":"share","terminal":7,"backend":"tty-share"}"#.to_vec(),
            5 => br#"{"v":99,"id":3,"cmd":"list"}"#.to_vec(),
            6 => br#"{"v":1,"cmd":"list"}"#.to_vec(),
            7 => br#"{"v":1,"id":4,"cmd":"list","admin":true}"#.to_vec(),
            8 => vec![0xff, 0xfe, 0x00, 0x01],
            9 => br#"{"v":1,"id":5,"cmd":"revoke","share_id":"../../etc/passwd"}"#.to_vec(),
            10 => br#"{"v":1,"id":6,"cmd":"extend","share_id":"01a2106f-4512-7171-9414-32417e940f90","by":"-5m"}"#.to_vec(),
            11 => br#"{"v":1,"id":7,"cmd":"share","terminal":"S; rm -rf ~","backend":"tty-share"}"#.to_vec(),
            12 => br#"{"v":1,"id":8,"cmd":"share","terminal":"S","backend":"telnet"}"#.to_vec(),
            13 => br#"{"v":1,"id":9,"cmd":"share","terminal":"S","backend":"tty-share","as":"root"}"#.to_vec(),
            14 => br#"{"v":1,"id":10,"cmd":"share","terminal":"S","backend":"tty-share","ttl":"99999h"}"#.to_vec(),
            15 => br#"{"v":1,"id":11,"cmd":"switch","share_id":"01a2106f-4512-7171-9414-32417e940f90","backend":"tmate"}"#.to_vec(),
            16 => br#""just a string""#.to_vec(),
            17 => br#"{"v":1,"id":[1],"cmd":"ping"}"#.to_vec(),
            18 => format!(r#"{{"v":1,"id":"{}","cmd":"ping"}}"#, "x".repeat(500)).into_bytes(),
            _ => br#"{"v":1,"id":12,"cmd":"share","terminal":"S","backend":"tty-share","access":"root"}"#.to_vec(),
        };
        lines.push(line);
    }
    // Send from a thread so a full socket buffer cannot deadlock the test.
    let mut writer = conn.write.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        for l in &lines {
            writer.write_all(l).unwrap();
            writer.write_all(b"\n").unwrap();
        }
    });
    let mut codes = std::collections::BTreeMap::<String, usize>::new();
    for _ in 0..1000 {
        let reply = conn.recv();
        assert_eq!(reply["ok"], false, "{reply}");
        *codes
            .entry(reply["error"]["code"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    sender.join().unwrap();
    eprintln!("error replies by code: {codes:?}");
    // Still serving, on this connection and on a new one; nothing was started.
    conn.send(br#"{"v":1,"id":"after","cmd":"ping"}"#);
    assert_eq!(conn.recv()["ok"], true);
    let (code, out, _) = daemon.run(&["list"]);
    assert_eq!((code, out.trim()), (0, "no live shares"));
    assert!(processes_mentioning("tty-share", host.socket.to_str().unwrap()).is_empty());
    daemon.stop();
}

#[test]
#[ignore = "needs root: runs a client as another uid (scripts/test.sh runs it as root)"]
fn another_user_cannot_use_the_socket() {
    require_root();
    let host = Tmux::new("S");
    let daemon = Daemon::start(&host, "");
    // The tempdir chain must be traversable for the check to be about the socket.
    let mut p = daemon.socket.parent().unwrap().parent();
    while let Some(dir) = p {
        if dir.starts_with(host.dir.path()) {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        p = dir.parent();
    }
    let as_nobody = |args: &[&str]| {
        use std::os::unix::process::CommandExt;
        let out = Command::new(env!("CARGO_BIN_EXE_termshare"))
            .args(args)
            .uid(65534)
            .gid(65534)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let socket = daemon.socket.to_str().unwrap();
    // 1. Another uid's client does not trust a socket in a directory that is not its
    //    own (and could not enter the 0700 directory anyway).
    let (code, err) = as_nobody(&["--socket", socket, "list"]);
    assert_eq!(code, Some(termshare::exit::NO_DAEMON), "{err}");
    assert!(err.contains("refusing the socket"), "{err}");
    // 2. Even with directory and socket opened up, and a client told to trust the
    //    daemon's user, the daemon maps the peer's uid (the kernel's word) and turns
    //    away a user without socket_group and an identity.
    let dir = daemon.socket.parent().unwrap();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&daemon.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let client_config = host.dir.path().join("nobody.toml");
    std::fs::write(&client_config, "[service]\ndaemon_user = \"root\"\n").unwrap();
    let (code, err) = as_nobody(&[
        "--config",
        client_config.to_str().unwrap(),
        "--socket",
        socket,
        "list",
    ]);
    assert_eq!(code, Some(termshare::exit::DENIED), "{err}");
    assert!(err.contains("is not the daemon's user"), "{err}");
    // The owner still gets in.
    let (code, _, _) = daemon.run(&["list"]);
    assert_eq!(code, 0);
    daemon.stop();
}

/// GET a URL path from 127.0.0.1:port (raw HTTP/1.0).
fn http_get(port: u16, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    body
}

fn metric(body: &str, name: &str) -> f64 {
    body.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn the_prometheus_endpoint_shows_counters_move_over_a_share_life() {
    let host = Tmux::new("S");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let daemon = Daemon::start(
        &host,
        &format!("[service]\nmetrics = \"127.0.0.1:{port}\"\n"),
    );
    let up = wait_until(Duration::from_secs(5), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    assert!(up.is_some());
    let before = http_get(port, "/metrics");
    assert_eq!(metric(&before, "termshare_shares_started_total"), 0.0);
    let share = daemon.json(&["share", "S", "--backend", "tty-share", "--ttl", "5m"]);
    let during = http_get(port, "/metrics");
    assert_eq!(metric(&during, "termshare_shares_requested_total"), 1.0);
    assert_eq!(metric(&during, "termshare_shares_started_total"), 1.0);
    assert_eq!(metric(&during, "termshare_active_shares"), 1.0);
    assert_eq!(
        metric(&during, "termshare_start_to_link_seconds_count"),
        1.0
    );
    daemon.json(&["revoke", share["share_id"].as_str().unwrap()]);
    let (code, _, _) = daemon.run(&["share", "S", "--backend", "tmate"]); // denied: not in the policy
    assert_eq!(code, termshare::exit::DENIED);
    let after = http_get(port, "/metrics");
    eprintln!(
        "{}",
        after
            .lines()
            .filter(|l| l.starts_with("termshare_"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(metric(&after, "termshare_shares_revoked_total"), 1.0);
    assert_eq!(metric(&after, "termshare_shares_denied_total"), 1.0);
    assert_eq!(metric(&after, "termshare_active_shares"), 0.0);
    assert_eq!(metric(&after, "termshare_revoke_seconds_count"), 1.0);
    daemon.stop();
}

#[test]
fn a_badge_watcher_hears_of_each_change_within_100ms() {
    let host = Tmux::new("S");
    let daemon = Daemon::start(&host, "");
    let mut watcher = Conn::open(&daemon.socket);
    watcher.send(br#"{"v":1,"id":"w","cmd":"watch"}"#);
    assert_eq!(watcher.recv()["ok"], true);
    assert_eq!(watcher.recv()["badges"], json!({}));
    let mut owner = Conn::open(&daemon.socket);
    owner.send(br#"{"v":1,"id":1,"cmd":"share","terminal":"S","backend":"tty-share","ttl":"5m"}"#);
    let reply = owner.recv();
    let answered = Instant::now();
    let id = reply["result"]["share_id"].as_str().unwrap().to_owned();
    // The first board with the share active, however many intermediate boards came.
    let lag = loop {
        let event = watcher.recv();
        if event["badges"]["S"]["shares"][0]["state"] == "active" {
            break answered.elapsed();
        }
    };
    eprintln!("badge after share: {lag:?} after the reply");
    assert!(lag < Duration::from_millis(100), "{lag:?}");
    owner.send(format!(r#"{{"v":1,"id":2,"cmd":"revoke","share_id":"{id}"}}"#).as_bytes());
    assert_eq!(owner.recv()["ok"], true);
    let answered = Instant::now();
    let lag = loop {
        if watcher.recv()["badges"] == json!({}) {
            break answered.elapsed();
        }
    };
    eprintln!("badge gone: {lag:?} after the revoke reply");
    assert!(lag < Duration::from_millis(100), "{lag:?}");
    drop(watcher);
    daemon.stop();
}

#[test]
fn share_daemon_without_a_daemon_exits_11_at_once_and_share_says_which_mode_it_chose() {
    let host = Tmux::new("S");
    let config = host.config("");
    let cfg = config.to_str().unwrap();
    let t0 = std::time::Instant::now();
    let mut cli = Cli::spawn(
        &[
            "--config",
            cfg,
            "share",
            "S",
            "--backend",
            "tty-share",
            "--daemon",
        ],
        None,
    );
    let (status, _, err) = cli.finish();
    let took = t0.elapsed();
    assert_eq!(status.code(), Some(termshare::exit::NO_DAEMON), "{err}");
    assert!(err.contains("no termshare daemon answers"), "{err}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    // Without --daemon the foreground is chosen, and stderr says so at once.
    let pol = policy(host.dir.path(), &["tty-share"], "1h");
    let mut cli = Cli::spawn(
        &[
            "--config",
            cfg,
            "share",
            "S",
            "--backend",
            "tty-share",
            "--ttl",
            "1s",
            "--policy",
            pol.to_str().unwrap(),
        ],
        None,
    );
    let (status, _, err) = cli.finish();
    assert!(status.success(), "{err}");
    assert!(
        err.contains("no daemon answers") && err.contains("sharing in the foreground"),
        "{err}"
    );
    // --daemon and --foreground together are bad input.
    let mut cli = Cli::spawn(
        &[
            "--config",
            cfg,
            "share",
            "S",
            "--backend",
            "tty-share",
            "--daemon",
            "--foreground",
        ],
        None,
    );
    assert_eq!(cli.finish().0.code(), Some(2));
}
