//! The backend adapters through the library API, with real processes: tty-share and
//! tmate are the Debian binaries; upterm is the stand-in in tests/bin/upterm (upterm is
//! not packaged here).

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use termshare::actors::{AccessMode, BackendError, BackendName, ShareError, ShareRequest};
use termshare::config::Config;
use termshare::policy::Policy;
use termshare::Termshare;

fn request(terminal: &str, backend: &str, access: AccessMode) -> ShareRequest {
    ShareRequest {
        terminal: terminal.parse().unwrap(),
        backend: BackendName::new(backend),
        access,
        caller: "human:tester"
            .parse::<termshare::actors::Principal>()
            .unwrap()
            .into(),
        ttl: Some(Duration::from_secs(120)),
        grace: Some(vec![]),
        join: Default::default(),
        record: false,
    }
}

async fn start(host: &Tmux, extra_config: &str) -> Termshare {
    let config = Config::load(&host.config(extra_config)).unwrap();
    let policy = Policy::load(&policy(
        host.dir.path(),
        &["tty-share", "tmate", "upterm"],
        "1h",
    ))
    .unwrap();
    Termshare::builder(&config)
        .policy(policy)
        .start()
        .await
        .unwrap()
}

/// termshare with tmate pointed at a loopback port where nothing listens (no relay).
async fn start_with_unreachable_tmate(host: &Tmux, link_timeout: &str) -> (Termshare, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let ts = start(
        host,
        &format!("link_timeout = \"{link_timeout}\"\n[backends.tmate]\nserver_host = \"127.0.0.1\"\nserver_port = {port}\n"),
    )
    .await;
    (ts, port)
}

fn audit_kinds(host: &Tmux) -> Vec<String> {
    host.audit()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tmate_without_a_reachable_relay_times_out_and_leaves_no_tmate() {
    let host = Tmux::new("S");
    let (ts, port) = start_with_unreachable_tmate(&host, "2s").await;
    let err = ts
        .share(request("S", "tmate", AccessMode::ReadWrite))
        .await
        .unwrap_err();
    match &err {
        ShareError::Backend(BackendError::LinkTimeout { detail, .. }) => {
            assert!(
                detail.contains("the relay refused the connection")
                    && detail.contains("Error connecting: Connection refused")
                    && detail.contains(&format!("127.0.0.1:{port}")),
                "{detail}"
            );
        }
        e => panic!("expected a link timeout, got {e}"),
    }
    assert_eq!(termshare::exit::code(&err), termshare::exit::LINK_TIMEOUT);
    // No tmate of ours is left, and it was really tried (its pane ran our attach).
    assert!(ts.live_process_groups().is_empty());
    let left = wait_until(Duration::from_secs(2), || {
        processes_mentioning("tmate", "termshare-tmate-").is_empty()
    });
    assert!(
        left.is_some(),
        "tmate processes left: {:?}",
        processes_mentioning("tmate", "termshare-tmate-")
    );
    assert_eq!(audit_kinds(&host), ["share.requested", "share.failed"]);
    let failed = &host.audit()[1];
    assert!(failed["details"]["cause"]
        .as_str()
        .unwrap()
        .contains("the relay refused the connection"));
    assert!(host.alive());
    ts.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_upterm_binary_is_a_clear_error_before_anything_starts() {
    let host = Tmux::new("S");
    let ts = start(&host, &upterm_config("/nonexistent/upterm", "")).await;
    let err = ts
        .share(request("S", "upterm", AccessMode::ReadWrite))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ShareError::Backend(BackendError::Unavailable { .. })),
        "{err}"
    );
    assert!(err.to_string().contains("/nonexistent/upterm"), "{err}");
    assert_eq!(
        termshare::exit::code(&err),
        termshare::exit::BACKEND_UNAVAILABLE
    );
    assert_eq!(audit_kinds(&host), ["share.requested", "share.denied"]);
    ts.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switching_starts_the_new_worker_then_reaps_the_old_one() {
    let host = Tmux::new("S");
    let ts = start(&host, &upterm_config(&upterm_standin(), "")).await;
    let info = ts
        .share(request("S", "tty-share", AccessMode::ReadWrite))
        .await
        .unwrap();
    let old = ts.live_process_groups();
    assert_eq!(old.len(), 1);
    let old_pgid = old[0];
    let switched = ts
        .switch(
            info.share_id,
            BackendName::new("upterm"),
            "human:tester"
                .parse::<termshare::actors::Principal>()
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(switched.share_id, info.share_id);
    assert_eq!(switched.expires_at, info.expires_at);
    assert!(switched.links.link.starts_with("ssh "));
    assert!(
        !termshare::process::group_alive(old_pgid),
        "old tty-share still alive"
    );
    let new = ts.live_process_groups();
    assert_eq!(new.len(), 1);
    assert_ne!(new[0], old_pgid);
    // The switch event records that the old worker was stopped, and its pid.
    let audit = host.audit();
    let switch = audit
        .iter()
        .find(|e| e["kind"] == "share.switched")
        .unwrap();
    assert_eq!(switch["details"]["from"], "tty-share");
    assert_eq!(switch["details"]["to"], "upterm");
    assert_eq!(switch["details"]["old_worker_stopped"], true);
    assert_eq!(switch["details"]["by"], "human:tester");
    assert_eq!(switch["correlation_id"], info.share_id.to_string());
    ts.shutdown().await;
    assert!(!termshare::process::group_alive(new[0]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_fails_its_share_and_the_host_terminal_lives_on() {
    let host = Tmux::new("S");
    let ts = start(&host, "").await;
    let mut events = ts.subscribe();
    let info = ts
        .share(request("S", "tty-share", AccessMode::ReadWrite))
        .await
        .unwrap();
    let pgid = ts.live_process_groups()[0];
    unsafe {
        libc::kill(pgid, libc::SIGKILL);
    }
    let failed = end_event(&mut events, info.share_id)
        .await
        .expect("no end event after the worker was killed");
    assert_eq!(failed.kind.as_str(), "share.failed");
    assert!(
        failed.details["cause"]
            .as_str()
            .unwrap()
            .contains("SIGKILL"),
        "{failed:?}"
    );
    assert!(
        host.alive(),
        "the host terminal must survive a worker crash"
    );
    assert!(ts.list().await.unwrap().is_empty());
    ts.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_tty_share_uses_readonly_and_the_read_only_attach() {
    let host = Tmux::new("S");
    let ts = start(&host, "").await;
    let _info = ts
        .share(request("S", "tty-share", AccessMode::ReadOnly))
        .await
        .unwrap();
    let pgid = ts.live_process_groups()[0];
    let cmdline = std::fs::read(format!("/proc/{pgid}/cmdline")).unwrap();
    let argv: Vec<String> = cmdline
        .split(|b| *b == 0)
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect();
    assert!(argv.iter().any(|a| a == "--readonly"), "{argv:?}");
    let args = &argv[argv.iter().position(|a| a == "--args").unwrap() + 1];
    assert!(args.contains("attach-session -r -t =S"), "{args}");
    ts.shutdown().await;
    assert!(!termshare::process::group_alive(pgid));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_and_config_can_require_a_join_restriction() {
    let host = Tmux::new("S");
    let keys = host.dir.path().join("authorized_keys");
    std::fs::write(&keys, "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE test\n").unwrap();
    let policy_path = host.dir.path().join("restricted.toml");
    std::fs::write(
        &policy_path,
        "[[rule]]\nid = \"keys-only\"\neffect = \"allow\"\nprincipals = [\"human:*\"]\nterminals = [\"*\"]\nbackends = [\"*\"]\naccess = [\"read-only\", \"read-write\"]\nrequire_join_restriction = true\n",
    )
    .unwrap();
    let config = Config::load(&host.config(&upterm_config(
        &upterm_standin(),
        &format!("authorized_keys = \"{}\"\n", keys.display()),
    )))
    .unwrap();
    let ts = Termshare::builder(&config)
        .policy(Policy::load(&policy_path).unwrap())
        .start()
        .await
        .unwrap();
    // tty-share lets anyone with the link in: refused, and nothing started.
    let err = ts
        .share(request("S", "tty-share", AccessMode::ReadOnly))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("rule `keys-only` requires a join restriction"),
        "{err}"
    );
    assert!(ts.live_process_groups().is_empty());
    // upterm with an authorized_keys file qualifies.
    let info = ts
        .share(request("S", "upterm", AccessMode::ReadOnly))
        .await
        .unwrap();
    ts.revoke(
        info.share_id,
        "human:tester"
            .parse::<termshare::actors::Principal>()
            .unwrap(),
    )
    .await
    .unwrap();
    ts.shutdown().await;

    // The same from the config alone, with a policy that does not ask for it.
    let host = Tmux::new("S");
    let config = Config::load(&host.config("[access]\nrequire_join_restriction = true\n")).unwrap();
    let policy = Policy::load(&policy(host.dir.path(), &["tty-share", "tmate"], "1h")).unwrap();
    let ts = Termshare::builder(&config)
        .policy(policy)
        .start()
        .await
        .unwrap();
    for backend in ["tty-share", "tmate"] {
        let err = ts
            .share(request("S", backend, AccessMode::ReadOnly))
            .await
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("the config ([access] require_join_restriction)"),
            "{err}"
        );
    }
    assert!(ts.live_process_groups().is_empty());
    ts.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grace_notice_on_the_host_shows_in_what_tmate_serves() {
    use termshare::actors::TerminalHost;
    // No relay is reachable here, so no ssh participant can join. What tmate would
    // send them is its own pane, which runs our attach client: read it locally.
    let host = Tmux::new("S");
    let (ts, _) = start_with_unreachable_tmate(&host, "30s").await;
    let ts = Arc::new(ts);
    let mut events = ts.subscribe();
    let starting = {
        let ts = ts.clone();
        tokio::spawn(async move { ts.share(request("S", "tmate", AccessMode::ReadWrite)).await })
    };
    let runtime = host.runtime_dir();
    let tmate_sock = tokio::task::spawn_blocking(move || {
        let mut sock = None;
        wait_until(Duration::from_secs(10), || {
            sock = tmate_socket_in(&runtime);
            sock.is_some()
        });
        sock.expect("tmate did not start")
    })
    .await
    .unwrap();
    let tmate_screen = move || {
        let out = std::process::Command::new("tmate")
            .args(["-S", &tmate_sock, "capture-pane", "-p"])
            .env_remove("TMUX")
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let screen = tmate_screen.clone();
    let attached = tokio::task::spawn_blocking(move || {
        wait_until(Duration::from_secs(10), || screen().contains("host$"))
    });
    assert!(
        attached.await.unwrap().is_some(),
        "tmate's pane never showed the host:\n{}",
        tmate_screen()
    );

    let tmux = termshare::terminal::TmuxHost::new(
        termshare::launch::find_in_path("tmux").unwrap(),
        host.socket.clone(),
        Arc::new(termshare::launch::CleanEnv::from_current()),
    );
    tmux.notify(
        &"S".parse().unwrap(),
        "termshare: this share of S ends in 3s",
    )
    .await
    .unwrap();
    let screen = tmate_screen.clone();
    let shown = tokio::task::spawn_blocking(move || {
        wait_until(Duration::from_secs(5), || screen().contains("ends in 3s"))
    });
    assert!(
        shown.await.unwrap().is_some(),
        "notice not in tmate's pane:\n{}",
        tmate_screen()
    );

    // Revoking the starting share kills tmate. The share is not listed until its
    // link arrives: its id comes from its `share.requested` event.
    let requested = loop {
        let e = events.recv().await.unwrap();
        if e.kind.as_str() == "share.requested" {
            break e;
        }
    };
    let id = termshare::actors::ShareId(requested.correlation_id);
    ts.revoke(
        id,
        "human:tester"
            .parse::<termshare::actors::Principal>()
            .unwrap(),
    )
    .await
    .unwrap();
    assert!(starting.await.unwrap().is_err());
    let runtime = host.runtime_dir();
    let gone = tokio::task::spawn_blocking(move || {
        wait_until(Duration::from_secs(1), || {
            tmate_socket_in(&runtime).is_none()
        })
    });
    assert!(gone.await.unwrap().is_some(), "tmate left running");
    Arc::into_inner(ts).unwrap().shutdown().await;
}

/// The `-S` socket of a live tmate that termshare started with its runtime directory
/// in `runtime` (the socket is in the share's private directory there).
fn tmate_socket_in(runtime: &Path) -> Option<String> {
    processes_mentioning("tmate", &runtime.to_string_lossy())
        .into_iter()
        .find_map(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let argv: Vec<String> = cmdline
                .split(|b| *b == 0)
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect();
            let i = argv.iter().position(|a| a == "-S")?;
            argv.get(i + 1).cloned()
        })
}

/// A real ssh server (OpenSSH's sshd, on an ephemeral port with a host key of its
/// own) stands in for a tmate relay whose host key is not the one configured: tmate
/// gets as far as the key exchange and refuses the server.
struct Sshd {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Sshd {
    fn start() -> Sshd {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("host_ed25519");
        let made = std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&key)
            .status()
            .expect("ssh-keygen (openssh-client) is needed");
        assert!(made.success());
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = dir.path().join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nPidFile {}\nUsePAM no\n",
                key.display(),
                dir.path().join("sshd.pid").display()
            ),
        )
        .unwrap();
        // sshd insists on its privilege separation directory.
        let _ = std::fs::create_dir_all("/run/sshd");
        let mut child = std::process::Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("/usr/sbin/sshd (openssh-server) is needed");
        let up = wait_until(Duration::from_secs(5), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        if up.is_none() {
            let _ = child.kill();
            panic!("sshd did not listen on {port}");
        }
        Sshd {
            child,
            port,
            _dir: dir,
        }
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: sshd wants its privilege separation directory /run/sshd"]
async fn tmate_with_a_wrong_relay_fingerprint_says_the_relay_could_not_be_authenticated() {
    let host = Tmux::new("S");
    let sshd = Sshd::start();
    let ts = start(
        &host,
        &format!(
            "link_timeout = \"3s\"\n[backends.tmate]\nserver_host = \"127.0.0.1\"\nserver_port = {}\nserver_ed25519_fingerprint = \"SHA256:notTheRelaysKeyAtAll\"\n",
            sshd.port
        ),
    )
    .await;
    let err = ts
        .share(request("S", "tmate", AccessMode::ReadWrite))
        .await
        .unwrap_err();
    let ShareError::Backend(BackendError::LinkTimeout { detail, .. }) = &err else {
        panic!("expected a link timeout, got {err}");
    };
    assert!(
        detail.contains("the relay could not be authenticated"),
        "{detail}"
    );
    assert!(
        detail.contains(&format!("127.0.0.1:{}", sshd.port)),
        "{detail}"
    );
    assert_eq!(termshare::exit::code(&err), termshare::exit::LINK_TIMEOUT);
    // Nothing of tmate is left.
    assert!(ts.live_process_groups().is_empty());
    let cause = host
        .audit()
        .into_iter()
        .find(|e| e["kind"] == "share.failed")
        .unwrap()["details"]["cause"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(cause.contains("could not be authenticated"), "{cause}");
    ts.shutdown().await;
}

/// In its namespace, tty-share's printed URL is the sign of life its link is given on
/// (nobody else can hold its port there); that it then listens is confirmed beside the
/// announcement. A stand-in that prints the URL and never listens: its share ends,
/// failed, saying so, and its process group is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tty_share_that_prints_its_url_but_never_listens_ends_its_share_failed() {
    use std::os::unix::fs::PermissionsExt;
    let host = Tmux::new("S");
    let program = host.dir.path().join("mute-tty-share");
    std::fs::write(
        &program,
        "#!/bin/sh\necho 'local session: http://127.0.0.1:8000/s/local/'\nexec sleep 60\n",
    )
    .unwrap();
    std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
    let ts = start(
        &host,
        &format!(
            "link_timeout = \"1s\"\n[backends.tty_share]\nprogram = \"{}\"\n",
            program.display()
        ),
    )
    .await;
    let mut events = ts.subscribe();
    let info = ts
        .share(request("S", "tty-share", AccessMode::ReadWrite))
        .await
        .expect("the link is given on the printed URL");
    let pgid = ts.live_process_groups()[0];
    let end = end_event(&mut events, info.share_id)
        .await
        .expect("no end event for a tty-share that never listened");
    assert_eq!(end.kind.as_str(), "share.failed", "{end:?}");
    let cause = end.details["cause"].as_str().unwrap();
    assert!(
        cause.contains("never served its link") && cause.contains("did not listen"),
        "{cause}"
    );
    assert!(!termshare::process::group_alive(pgid));
    assert!(ts.list().await.unwrap().is_empty());
    ts.shutdown().await;
}
