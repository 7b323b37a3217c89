//! Who may reach a terminal, tried as an attacker on the same machine would: another
//! local user without the link, a claim of someone else's principal, a symlink or
//! another user's directory where termshare writes, a name tmux reads differently, a
//! secret in the daemon's environment, a binary planted in PATH, a flood of idle
//! connections. Real tty-share, tmate and tmux; tests that add users need root and
//! are `#[ignore = "needs root"]` (scripts/test.sh runs them as root).

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use common::users::{SharedDaemon, TestUsers};
use common::*;
use serde_json::Value;

/// Every TCP port something listens on in this network namespace.
fn listening_ports() -> Vec<u16> {
    let mut ports = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() > 3 && f[3] == "0A" {
                if let Some(port) = f[1].rsplit(':').next() {
                    ports.push(u16::from_str_radix(port, 16).unwrap());
                }
            }
        }
    }
    ports.sort();
    ports.dedup();
    ports
}

/// What `GET /s/local/` on 127.0.0.1:port answers (empty when nothing answers).
fn get_local_session(port: u16) -> String {
    let Ok(mut s) = std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(300),
    ) else {
        return String::new();
    };
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let _ = s.write_all(b"GET /s/local/ HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    let mut buf = Vec::new();
    let _ = s.take(8192).read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

fn share_json(daemon: &Daemon, args: &[&str]) -> Value {
    daemon.json(args)
}

fn tty_share_policy(dir: &Path) -> std::path::PathBuf {
    policy(dir, &["tty-share"], "1h")
}

#[test]
#[ignore = "needs root: adds a user"]
fn another_local_user_joins_a_tty_share_share_only_with_its_link() {
    let host = Tmux::new("S");
    let users = TestUsers::new(&["mallory"]);
    let mallory = users.user("mallory");
    let daemon = Daemon::start(&host, "");
    let share = share_json(&daemon, &["share", "S", "--backend", "tty-share"]);
    let link = share["link"].as_str().unwrap().to_owned();
    let worker = started_worker_pid(&host).unwrap();

    // tty-share listens in a network namespace of its own: not one port of it is in
    // this one, and nothing that listens here serves its session without the secret.
    let ours = std::fs::read_link("/proc/self/ns/net").unwrap();
    let its = std::fs::read_link(format!("/proc/{worker}/ns/net")).unwrap();
    assert_ne!(ours, its, "tty-share runs in the host's network namespace");
    let ports = listening_ports();
    assert!(!ports.is_empty());
    for port in &ports {
        let answer = get_local_session(*port).to_ascii_lowercase();
        assert!(
            !answer.contains("ttyshare") && !answer.contains("tty-share"),
            "port {port} serves tty-share without the secret:\n{answer}"
        );
    }
    let front: u16 = link
        .strip_prefix("http://127.0.0.1:")
        .and_then(|r| r.split('/').next())
        .unwrap()
        .parse()
        .unwrap();
    assert!(ports.contains(&front));

    // As another user: the front's port without the secret gets nothing, and neither
    // does a guess of a secret. With the link, the participant sees the terminal.
    let guess = format!("http://127.0.0.1:{front}/s/local/");
    let wrong = format!("http://127.0.0.1:{front}/s/{}/", "A".repeat(32));
    let locked_out: Vec<Participant> = [guess, wrong]
        .iter()
        .map(|url| Participant::start_as(mallory, &["tty-share", url]))
        .collect();
    let joined = Participant::start_as(mallory, &["tty-share", &link]);
    for p in &locked_out {
        let gave_up = wait_until(Duration::from_secs(10), || !p.alive());
        assert!(
            gave_up.is_some(),
            "a participant without the secret is still connected:\n{}",
            p.screen()
        );
    }
    host.type_line("echo SECRET_ONLY_$((6*7))");
    let seen = wait_until(Duration::from_secs(10), || {
        joined.screen().contains("SECRET_ONLY_42")
    });
    assert!(
        seen.is_some(),
        "the participant with the link never saw the host:\n{}",
        joined.screen()
    );
    for p in &locked_out {
        assert!(!p.screen().contains("SECRET_ONLY_42"));
    }

    // The audit's fingerprint is keyed: it is HMAC-SHA256 of the link under the
    // installation's key, not a plain hash that a guess of the link (the old links
    // differed only by port) could be checked against.
    let started = host
        .audit()
        .into_iter()
        .find(|e| e["kind"] == "share.started")
        .unwrap();
    let fp = started["details"]["link_fp"].as_str().unwrap().to_owned();
    let key: [u8; 32] = std::fs::read(host.dir.path().join("fingerprint.key"))
        .unwrap()
        .try_into()
        .unwrap();
    let keyed = termshare::actors::FingerprintKey::from_bytes(key);
    assert_eq!(
        keyed.fingerprint(&link),
        fp,
        "the fingerprint is the keyed one"
    );
    use sha2::Digest;
    let plain = |s: &str| -> String {
        sha2::Sha256::digest(s.as_bytes())[..6]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    assert_ne!(plain(&link), fp);
    for port in 1..=u16::MAX {
        assert_ne!(plain(&format!("http://127.0.0.1:{port}/s/local/")), fp);
    }

    // Revoke still cuts the participant off.
    let share_id = share["share_id"].as_str().unwrap();
    let (code, _, err) = daemon.run(&["revoke", share_id]);
    assert_eq!(code, 0, "{err}");
    let gone = wait_until(Duration::from_secs(5), || !joined.alive());
    assert!(gone.is_some(), "revoke left the participant connected");
    daemon.stop();
}

#[test]
#[ignore = "needs root: adds users"]
fn socket_callers_act_only_as_their_own_principals_and_every_action_names_its_peer() {
    let host = Tmux::new("S");
    let users = TestUsers::new(&["alice", "mallory", "stranger"]);
    let identities =
        users.identities(&[("alice", &["human:alice"]), ("mallory", &["human:mallory"])]);
    let policy = std::fs::read_to_string(tty_share_policy(host.dir.path())).unwrap();
    let d = SharedDaemon::start(&host, &users, &policy, &identities);
    let (alice, mallory) = (users.user("alice"), users.user("mallory"));

    // A user in the group without an identity is turned away.
    let (code, _, err) = d.run_as(users.user("stranger"), &["list"]);
    assert_eq!(code, termshare::exit::DENIED, "{err}");
    assert!(err.contains("has no [[identity]]"), "{err}");

    // mallory claims alice: denied, exit 3, on the record with mallory's uid.
    let (code, _, err) = d.run_as(
        mallory,
        &[
            "share",
            "S",
            "--backend",
            "tty-share",
            "--as",
            "human:alice",
        ],
    );
    assert_eq!(code, termshare::exit::DENIED, "{err}");
    assert!(
        err.contains("may act as human:mallory, not as human:alice"),
        "{err}"
    );
    let denied = host
        .audit()
        .into_iter()
        .find(|e| e["kind"] == "share.denied")
        .unwrap();
    assert_eq!(denied["peer"]["uid"].as_u64(), Some(mallory.uid as u64));
    assert!(denied["peer"]["pid"].as_u64().is_some());
    assert_eq!(denied["principal"], "human:alice");

    // alice shares, as herself: the share is hers.
    let share = d.json_as(
        alice,
        &["share", "S", "--backend", "tty-share", "--ttl", "10m"],
    );
    let id = share["share_id"].as_str().unwrap().to_owned();
    assert_eq!(share["principal"], "human:alice");
    // mallory neither sees it nor may end it.
    let (code, out, _) = d.run_as(mallory, &["list", "--json"]);
    assert_eq!(code, 0);
    assert!(!out.contains(&id), "{out}");
    let (code, _, err) = d.run_as(mallory, &["revoke", &id]);
    assert_eq!(code, termshare::exit::DENIED, "{err}");
    assert!(started_worker_pid(&host).is_some_and(pid_alive));
    d.json_as(alice, &["extend", &id, "1m"]);
    let (code, _, err) = d.run_as(alice, &["revoke", &id]);
    assert_eq!(code, 0, "{err}");

    // Every event of an action over the socket names the peer that took it.
    let events: Vec<Value> = host
        .audit()
        .into_iter()
        .filter(|e| e["correlation_id"] == id.as_str())
        .collect();
    let seen: Vec<(String, Option<u64>, bool)> = events
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap().to_owned(),
                e["peer"]["uid"].as_u64(),
                e["peer"]["pid"].as_u64().is_some(),
            )
        })
        .collect();
    let (a, m) = (Some(alice.uid as u64), Some(mallory.uid as u64));
    assert_eq!(
        seen,
        [
            ("share.requested".to_string(), a, true),
            ("share.started".to_string(), a, true),
            ("share.refused".to_string(), m, true),
            ("share.extended".to_string(), a, true),
            ("share.revoked".to_string(), a, true),
        ]
    );
    d.daemon.stop();
}

#[test]
fn a_symlink_where_termshare_writes_is_refused_and_its_target_untouched() {
    let host = Tmux::new("S");
    // A copy of a file worth protecting, with a torn last line to tempt the repair.
    let victim = host.dir.path().join("passwd-copy");
    let content = b"root:x:0:0:root:/root:/bin/bash\nno-newline-at-end".to_vec();
    std::fs::write(&victim, &content).unwrap();
    let victim_dir = host.dir.path().join("victim-dir");
    std::fs::create_dir(&victim_dir).unwrap();
    let policy = tty_share_policy(host.dir.path());
    let serve = |config: &Path| {
        let mut cli = Cli::spawn(
            &[
                "--config",
                config.to_str().unwrap(),
                "serve",
                "--policy",
                policy.to_str().unwrap(),
            ],
            None,
        );
        cli.finish()
    };
    let write_config = |name: &str, body: &str| {
        let path = host.dir.path().join(name);
        std::fs::write(&path, body).unwrap();
        path
    };
    let tmux = host.socket.display();

    // The audit log.
    let link = host.dir.path().join("audit-link.jsonl");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    let config = write_config(
        "c1.toml",
        &format!(
            "[terminal]\ntmux_socket = \"{tmux}\"\n[audit]\npath = \"{}\"\n[service]\nsocket = \"{}\"\nruntime_dir = \"{}\"\n",
            link.display(),
            host.daemon_socket().display(),
            host.runtime_dir().display()
        ),
    );
    let (status, _, err) = serve(&config);
    assert_eq!(status.code(), Some(termshare::exit::INVALID), "{err}");
    assert!(err.contains("symlink"), "{err}");
    assert_eq!(std::fs::read(&victim).unwrap(), content);

    // The socket's directory.
    let link_dir = host.dir.path().join("run-link");
    std::os::unix::fs::symlink(&victim_dir, &link_dir).unwrap();
    let config = write_config(
        "c2.toml",
        &format!(
            "[terminal]\ntmux_socket = \"{tmux}\"\n[audit]\npath = \"{}\"\n[service]\nsocket = \"{}\"\nruntime_dir = \"{}\"\n",
            host.audit_path().display(),
            link_dir.join("termshare.sock").display(),
            host.runtime_dir().display()
        ),
    );
    let (status, _, err) = serve(&config);
    assert_ne!(status.code(), Some(0), "{err}");
    assert!(err.contains("symlink"), "{err}");
    assert_eq!(std::fs::read_dir(&victim_dir).unwrap().count(), 0);

    // The runtime directory (where tmate's scratch directories go).
    let config = write_config(
        "c3.toml",
        &format!(
            "[terminal]\ntmux_socket = \"{tmux}\"\n[audit]\npath = \"{}\"\n[service]\nsocket = \"{}\"\nruntime_dir = \"{}\"\n",
            host.audit_path().display(),
            host.daemon_socket().display(),
            link_dir.display()
        ),
    );
    let (status, _, err) = serve(&config);
    assert_eq!(status.code(), Some(termshare::exit::INVALID), "{err}");
    assert!(err.contains("symlink"), "{err}");
    assert_eq!(std::fs::read_dir(&victim_dir).unwrap().count(), 0);
    assert!(!host.daemon_socket().exists(), "a socket was left behind");
}

#[test]
#[ignore = "needs root: adds a user"]
fn another_users_directory_is_refused_and_a_client_refuses_their_daemon() {
    let host = Tmux::new("S");
    let users = TestUsers::new(&["mallory"]);
    let mallory = users.user("mallory");
    let theirs = host.dir.path().join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    let planted = theirs.join("audit.jsonl");
    std::fs::write(&planted, b"{\"planted\":true}\ntorn").unwrap();
    for p in [&theirs, &planted] {
        std::os::unix::fs::chown(p, Some(mallory.uid), Some(mallory.gid)).unwrap();
    }
    let config = host.dir.path().join("c.toml");
    std::fs::write(
        &config,
        format!(
            "[terminal]\ntmux_socket = \"{}\"\n[audit]\npath = \"{}\"\n[service]\nsocket = \"{}\"\nruntime_dir = \"{}\"\n",
            host.socket.display(),
            planted.display(),
            host.daemon_socket().display(),
            host.runtime_dir().display()
        ),
    )
    .unwrap();
    let mut cli = Cli::spawn(&["--config", config.to_str().unwrap(), "serve"], None);
    let (status, _, err) = cli.finish();
    assert_eq!(status.code(), Some(termshare::exit::INVALID), "{err}");
    assert!(
        err.contains(&format!("belongs to uid {}", mallory.uid)),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&planted).unwrap(),
        b"{\"planted\":true}\ntorn"
    );

    // mallory runs a daemon of her own in her directory; root's client, pointed at it,
    // refuses to talk to it.
    let mallorys = tempfile::tempdir().unwrap();
    std::os::unix::fs::chown(mallorys.path(), Some(mallory.uid), Some(mallory.gid)).unwrap();
    common::users::open_path_to(mallorys.path(), mallorys.path());
    let fake = mallorys.path().join("termshare.sock");
    let fake_config = mallorys.path().join("config.toml");
    std::fs::write(
        &fake_config,
        format!(
            "[audit]\npath = \"{}\"\n[service]\nsocket = \"{}\"\nruntime_dir = \"{}\"\n",
            mallorys.path().join("state/audit.jsonl").display(),
            fake.display(),
            mallorys.path().join("rt").display()
        ),
    )
    .unwrap();
    std::os::unix::fs::chown(&fake_config, Some(mallory.uid), Some(mallory.gid)).unwrap();
    let fake_daemon = {
        use std::os::unix::process::CommandExt;
        std::process::Command::new(env!("CARGO_BIN_EXE_termshare"))
            .args(["--config", fake_config.to_str().unwrap(), "serve"])
            .uid(mallory.uid)
            .gid(mallory.gid)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    struct KillOnDrop(std::process::Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _fake_daemon = KillOnDrop(fake_daemon);
    let up = wait_until(Duration::from_secs(10), || {
        std::os::unix::net::UnixStream::connect(&fake).is_ok()
    });
    assert!(up.is_some(), "mallory's daemon did not come up");
    // A handoff request would be on her daemon's record (requested, denied) had it
    // reached it.
    let mut cli = Cli::spawn(
        &[
            "--socket",
            fake.to_str().unwrap(),
            "handoff",
            "request",
            "S",
            "--to",
            "agent:x",
        ],
        None,
    );
    let (status, _, err) = cli.finish();
    assert_eq!(status.code(), Some(termshare::exit::NO_DAEMON), "{err}");
    assert!(err.contains("refusing the socket"), "{err}");
    // Her daemon never heard a request: its audit log has no event but its own start.
    let log =
        std::fs::read_to_string(mallorys.path().join("state/audit.jsonl")).unwrap_or_default();
    let heard: Vec<&str> = log
        .lines()
        .filter(|l| !l.contains("\"kind\":\"service.started\""))
        .collect();
    assert!(heard.is_empty(), "{heard:?}");
}

#[test]
#[ignore = "needs root: checks the socket as another user"]
fn tmates_scratch_is_private_and_gone_after_kill_9_and_a_restart() {
    let host = Tmux::new("S");
    let users = TestUsers::new(&["mallory"]);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let extra = format!(
        "link_timeout = \"60s\"\n[backends.tmate]\nserver_host = \"127.0.0.1\"\nserver_port = {port}\n"
    );
    let policy = policy(host.dir.path(), &["tmate"], "1h");
    let daemon = Daemon::start_with_policy(&host, &policy, &extra);
    // The share waits for a relay that never answers: tmate runs meanwhile.
    let _starting = Cli::spawn(
        &[
            "--config",
            daemon.config.to_str().unwrap(),
            "share",
            "S",
            "--backend",
            "tmate",
        ],
        None,
    );
    let runtime = host.runtime_dir();
    let mut sock = None;
    wait_until(Duration::from_secs(10), || {
        sock = processes_mentioning("tmate", &runtime.to_string_lossy())
            .into_iter()
            .find_map(|pid| {
                let argv =
                    String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/cmdline")).ok()?)
                        .split('\0')
                        .map(String::from)
                        .collect::<Vec<_>>();
                argv.iter()
                    .position(|a| a == "-S")
                    .map(|i| argv[i + 1].clone())
            });
        sock.as_deref().is_some_and(|s| Path::new(s).exists())
    });
    let sock = std::path::PathBuf::from(sock.expect("tmate never made its socket"));
    let scratch = sock.parent().unwrap().to_path_buf();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&scratch), 0o700);
    let locked = wait_until(Duration::from_secs(5), || mode(&sock) == 0o600);
    assert!(locked.is_some(), "tmate's socket is {:o}", mode(&sock));
    // Another uid reaches neither the directory nor the socket, so not the links.
    let (code, out, _) = {
        use std::os::unix::process::CommandExt;
        let o = std::process::Command::new("tmate")
            .args([
                "-S",
                sock.to_str().unwrap(),
                "display",
                "-p",
                "#{tmate_ssh}",
            ])
            .uid(users.user("mallory").uid)
            .gid(users.user("mallory").gid)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .output()
            .unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            (),
        )
    };
    assert_ne!(code, Some(0), "another uid reached tmate: {out}");

    // kill -9: tmate dies with termshare, the directory stays; the next start removes it.
    // The zygote made ahead of time for the next worker dies with it too.
    let mut daemon = daemon;
    let daemon_pid = daemon.cli.child.id() as i32;
    let zygotes = |parent: i32| -> Vec<i32> {
        descendants(parent)
            .into_iter()
            .filter(|&p| {
                std::fs::read(format!("/proc/{p}/cmdline"))
                    .is_ok_and(|c| c.starts_with(b"termshare-zygote\0"))
            })
            .collect()
    };
    let mut waiting = Vec::new();
    let made = wait_until(Duration::from_secs(5), || {
        waiting = zygotes(daemon_pid);
        !waiting.is_empty()
    });
    assert!(made.is_some(), "no zygote waits for the next worker");
    daemon.cli.signal(libc::SIGKILL);
    let _ = daemon.cli.child.wait();
    let gone = wait_until(Duration::from_secs(2), || {
        processes_mentioning("tmate", &runtime.to_string_lossy()).is_empty()
            && !waiting.iter().any(|&p| pid_alive(p))
    });
    assert!(
        gone.is_some(),
        "tmate or a zygote ({waiting:?}) outlived termshare"
    );
    assert!(
        scratch.exists(),
        "the test needs the stale directory to exist"
    );
    let _ = std::fs::remove_file(&daemon.socket);
    let restarted = Daemon::start_with_policy(&host, &policy, &extra);
    assert!(
        !scratch.exists(),
        "the dead instance's scratch directory is still there"
    );
    let left: Vec<_> = std::fs::read_dir(&runtime)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        left.len(),
        2,
        "only the new instance's directory and its lock: {left:?}"
    );
    restarted.stop();
}

#[test]
fn a_switch_is_refused_where_a_share_would_be_and_the_share_stays_as_it_was() {
    let host = Tmux::new("S");
    host.run(&["new-session", "-d", "-s", "T"]);
    let policy = host.dir.path().join("switch-policy.toml");
    std::fs::write(
        &policy,
        r#"
[[rule]]
id = "tty"
effect = "allow"
principals = ["human:*"]
terminals = ["*"]
backends = ["tty-share"]
access = ["read-only", "read-write"]
max_ttl = "2h"

[[rule]]
id = "tmate-read-only-short"
effect = "allow"
principals = ["human:*"]
terminals = ["*"]
backends = ["tmate"]
access = ["read-only"]
max_ttl = "10m"

[[rule]]
id = "upterm-restricted"
effect = "allow"
principals = ["human:*"]
terminals = ["*"]
backends = ["upterm"]
access = ["read-only", "read-write"]
require_join_restriction = true
"#,
    )
    .unwrap();
    let daemon = Daemon::start_with_policy(&host, &policy, "");
    let rw = daemon.json(&["share", "S", "--backend", "tty-share", "--ttl", "5m"]);
    let ro = daemon.json(&[
        "share",
        "T",
        "--backend",
        "tty-share",
        "--ttl",
        "1h",
        "--access",
        "read-only",
    ]);
    let participant = Participant::start(&["tty-share", rw["link"].as_str().unwrap()]);
    let workers: Vec<i32> = host
        .audit()
        .iter()
        .filter(|e| e["kind"] == "share.started")
        .map(|e| e["details"]["worker_pid"].as_i64().unwrap() as i32)
        .collect();
    // Each refusal is one a new share would get: access (no tmate rule lets a share
    // write), the join restriction (upterm without authorized keys), and max_ttl
    // counted from the share's start (1 h under a 10 m rule).
    for (share, backend, why) in [
        (&rw, "tmate", "no policy rule allows"),
        (&rw, "upterm", "join restriction"),
        (&ro, "tmate", "above the policy maximum 10m"),
    ] {
        let id = share["share_id"].as_str().unwrap();
        let (code, _, err) = daemon.run(&["switch", id, "--backend", backend]);
        assert_eq!(code, termshare::exit::DENIED, "{backend}: {err}");
        assert!(err.contains(why), "{backend}: {err}");
    }
    let (code, out, _) = daemon.run(&["list", "--json"]);
    assert_eq!(code, 0);
    let listed: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for before in [&rw, &ro] {
        let now = listed
            .iter()
            .find(|s| s["share_id"] == before["share_id"])
            .unwrap();
        assert_eq!(now["backend"], "tty-share");
        assert_eq!(now["link"], before["link"]);
        assert_eq!(now["expires_at"], before["expires_at"]);
    }
    assert!(workers.iter().all(|w| pid_alive(*w)), "{workers:?}");
    host.type_line("echo STILL_SHARED_$((6*7))");
    let seen = wait_until(Duration::from_secs(10), || {
        participant.screen().contains("STILL_SHARED_42")
    });
    assert!(seen.is_some(), "{}", participant.screen());
    let refused: Vec<Value> = host
        .audit()
        .into_iter()
        .filter(|e| e["kind"] == "share.refused")
        .collect();
    assert_eq!(refused.len(), 3);
    assert!(refused.iter().all(|e| e["details"]["action"] == "switch"));
    daemon.stop();
}

#[test]
fn a_switch_whose_new_backend_gives_no_link_leaves_the_share_live_on_the_old_one() {
    let host = Tmux::new("S");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let policy = policy(host.dir.path(), &["tty-share", "tmate"], "1h");
    let daemon = Daemon::start_with_policy(
        &host,
        &policy,
        &format!("link_timeout = \"2s\"\n[backends.tmate]\nserver_host = \"127.0.0.1\"\nserver_port = {port}\n"),
    );
    let share = daemon.json(&["share", "S", "--backend", "tty-share"]);
    let id = share["share_id"].as_str().unwrap().to_owned();
    let participant = Participant::start(&["tty-share", share["link"].as_str().unwrap()]);
    let (code, _, err) = daemon.run(&["switch", &id, "--backend", "tmate"]);
    assert_eq!(code, termshare::exit::LINK_TIMEOUT, "{err}");
    let listed = daemon.json(&["list"]);
    assert_eq!(
        (listed["backend"].as_str(), listed["state"].as_str()),
        (Some("tty-share"), Some("active"))
    );
    assert_eq!(listed["link"], share["link"]);
    assert!(
        participant.alive(),
        "the participant was cut off by a failed switch"
    );
    host.type_line("echo KEPT_$((6*7))");
    let seen = wait_until(Duration::from_secs(10), || {
        participant.screen().contains("KEPT_42")
    });
    assert!(seen.is_some(), "{}", participant.screen());
    assert!(processes_mentioning("tmate", &host.runtime_dir().to_string_lossy()).is_empty());
    let failed = host
        .audit()
        .into_iter()
        .find(|e| e["kind"] == "share.switch_failed")
        .expect("share.switch_failed");
    assert_eq!(failed["details"]["still_on"], "tty-share");
    assert_eq!(failed["details"]["to"], "tmate");
    daemon.stop();
}

#[test]
fn terminal_names_tmux_reads_as_something_else_never_reach_another_session() {
    let host = Tmux::new("S");
    host.run(&["new-session", "-d", "-s", "devprod"]);
    let policy = tty_share_policy(host.dir.path());
    let config = host.config("");
    // @0 is a window of S, $0 a session id, %0 a pane; `dev` a prefix of devprod.
    for (name, code) in [
        ("@0", termshare::exit::INVALID),
        ("$0", termshare::exit::INVALID),
        ("%0", termshare::exit::INVALID),
        ("+1", termshare::exit::INVALID),
        ("-t", termshare::exit::INVALID),
        ("dev", termshare::exit::NOT_FOUND),
    ] {
        let mut cli = Cli::spawn(
            &[
                "--config",
                config.to_str().unwrap(),
                "share",
                "--backend",
                "tty-share",
                "--policy",
                policy.to_str().unwrap(),
                "--",
                name,
            ],
            None,
        );
        let (status, _, err) = cli.finish();
        assert_eq!(status.code(), Some(code), "{name}: {err}");
    }
    assert!(processes_mentioning("tty-share", &host.socket.to_string_lossy()).is_empty());
}

#[test]
fn workers_never_see_the_daemons_secrets_nor_a_binary_planted_in_path_later() {
    let host = Tmux::new("S");
    let planted_dir = host.dir.path().join("planted-bin");
    std::fs::create_dir(&planted_dir).unwrap();
    let policy = policy(host.dir.path(), &["tty-share", "tmate"], "1h");
    let secrets = [
        ("AWS_SECRET_ACCESS_KEY", "termshare-test-aws-7f3a"),
        ("GITHUB_TOKEN", "termshare-test-ghp-9c1e"),
    ];
    // tmate's relay does not answer: its worker runs (starting) for the whole test.
    let relay = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let extra = format!(
        "link_timeout = \"60s\"\n[backends.tmate]\nserver_host = \"127.0.0.1\"\nserver_port = {relay}\n"
    );
    let daemon = Daemon::start_with_env(&host, &policy, &extra, Some(&planted_dir), &secrets);
    // After termshare started, something plants a tty-share earlier in its PATH.
    let tripwire = host.dir.path().join("planted-ran");
    let planted = planted_dir.join("tty-share");
    std::fs::write(
        &planted,
        format!(
            "#!/bin/sh\ntouch '{}'\nexec /usr/bin/tty-share \"$@\"\n",
            tripwire.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(0o755)).unwrap();

    let share = daemon.json(&["share", "S", "--backend", "tty-share"]);
    let participant = Participant::start(&["tty-share", share["link"].as_str().unwrap()]);
    host.type_line("echo CLEAN_$((6*7))");
    let seen = wait_until(Duration::from_secs(10), || {
        participant.screen().contains("CLEAN_42")
    });
    assert!(seen.is_some(), "{}", participant.screen());
    assert!(!tripwire.exists(), "the planted tty-share ran");
    let worker = started_worker_pid(&host).unwrap();
    let exe = std::fs::read_link(format!("/proc/{worker}/exe")).unwrap();
    assert!(!exe.starts_with(&planted_dir), "{exe:?}");
    // The worker, its namespace helper and the attach client it runs.
    let procs = descendants(worker);
    assert!(
        procs.len() >= 3,
        "tty-share, its helper and tmux attach: {procs:?}"
    );
    let mut checked = 0;
    for pid in procs {
        // A process that went between the listing and now has nothing left to leak.
        let Some(env) = environ_of(pid) else {
            assert!(!pid_alive(pid), "cannot read the environ of live {pid}");
            continue;
        };
        checked += 1;
        for (_, value) in &secrets {
            assert!(
                !env.iter().any(|kv| kv.contains(value)),
                "pid {pid} inherited a secret: {env:?}"
            );
        }
    }
    assert!(checked >= 3, "only {checked} processes could be checked");
    // The zygotes waiting to become the next workers run with no environment at all.
    let daemon_pid = daemon.cli.child.id() as i32;
    let mut zygotes = Vec::new();
    let made = wait_until(Duration::from_secs(5), || {
        zygotes = descendants(daemon_pid)
            .into_iter()
            .filter(|&p| {
                std::fs::read(format!("/proc/{p}/cmdline"))
                    .is_ok_and(|c| c.starts_with(b"termshare-zygote\0"))
            })
            .collect();
        !zygotes.is_empty()
    });
    assert!(made.is_some(), "no zygote waits for the next worker");
    for pid in zygotes {
        assert_eq!(environ_of(pid), Some(vec![]), "zygote {pid}");
    }
    daemon.stop();
}

#[test]
fn idle_and_watching_connections_do_not_keep_a_revoke_out() {
    let host = Tmux::new("S");
    let daemon = Daemon::start(&host, "");
    let share = daemon.json(&["share", "S", "--backend", "tty-share"]);
    let id = share["share_id"].as_str().unwrap().to_owned();
    let worker = started_worker_pid(&host).unwrap();
    let idle: Vec<_> = (0..200)
        .map(|_| std::os::unix::net::UnixStream::connect(&daemon.socket).unwrap())
        .collect();
    let mut watchers: Vec<Cli> = (0..200)
        .map(|_| {
            Cli::spawn(
                &[
                    "--config",
                    daemon.config.to_str().unwrap(),
                    "status",
                    "--watch",
                    "--json",
                ],
                None,
            )
        })
        .collect();
    // Each watcher is in: it has printed the board once.
    let streams: Vec<_> = watchers
        .iter_mut()
        .map(|w| lines_of(w.child.stdout.take().unwrap()))
        .collect();
    for (i, s) in streams.iter().enumerate() {
        let first = read_line_within(s, Duration::from_secs(20));
        assert!(
            first.is_some_and(|l| l.contains(&id)),
            "watcher {i} never saw the board"
        );
    }
    let t0 = Instant::now();
    let (code, out, err) = daemon.run(&["revoke", &id, "--json"]);
    let took = t0.elapsed();
    assert_eq!(code, 0, "{err}");
    let report: Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(report["deadline_met"], true);
    assert!(took < Duration::from_secs(5), "revoke took {took:?}");
    assert!(!pid_alive(worker));
    drop(idle);
    drop(watchers);
    daemon.stop();
}

#[test]
#[ignore = "needs root: adds a user"]
fn another_users_watchers_are_capped_and_never_keep_the_owner_out() {
    let host = Tmux::new("S");
    let users = TestUsers::new(&["mallory"]);
    let mallory = users.user("mallory");
    let identities = users.identities(&[("mallory", &["human:mallory"])]);
    let policy = std::fs::read_to_string(tty_share_policy(host.dir.path())).unwrap();
    let d = SharedDaemon::start(&host, &users, &policy, &identities);
    let share = d.daemon.json(&["share", "S", "--backend", "tty-share"]);
    let id = share["share_id"].as_str().unwrap().to_owned();
    // mallory starts 20 watchers: 16 (her part) get in, the rest are told busy.
    struct Reap(Vec<std::process::Child>);
    impl Drop for Reap {
        fn drop(&mut self) {
            for c in &mut self.0 {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
    let mut watchers = Reap(
        (0..20)
            .map(|_| {
                use std::os::unix::process::CommandExt;
                std::process::Command::new(env!("CARGO_BIN_EXE_termshare"))
                    .args([
                        "--config",
                        d.client_config.to_str().unwrap(),
                        "--socket",
                        d.daemon.socket.to_str().unwrap(),
                        "status",
                        "--watch",
                        "--json",
                    ])
                    .uid(mallory.uid)
                    .gid(mallory.gid)
                    .env_clear()
                    .env("PATH", std::env::var_os("PATH").unwrap_or_default())
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect(),
    );
    let (mut watching, mut busy) = (0, 0);
    for w in &mut watchers.0 {
        let out = lines_of(w.stdout.take().unwrap());
        match read_line_within(&out, Duration::from_secs(20)) {
            Some(_) => watching += 1,
            None => {
                let status = w.wait().unwrap();
                let mut err = String::new();
                w.stderr.take().unwrap().read_to_string(&mut err).unwrap();
                assert!(!status.success() && err.contains("busy"), "{err}");
                busy += 1;
            }
        }
    }
    assert_eq!((watching, busy), (16, 4));
    // The daemon's own user is not held up by any of it.
    let t0 = Instant::now();
    let (code, _, err) = d.daemon.run(&["revoke", &id]);
    assert_eq!(code, 0, "{err}");
    assert!(t0.elapsed() < Duration::from_secs(5));
    drop(watchers);
    d.daemon.stop();
}
