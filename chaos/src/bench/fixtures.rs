//! What the benchmarks run against: a private tmux host, a participant that joins a
//! tty-share link, a plain tty-share for the baselines, a real termshare.

use super::*;

/// A private tmux server with a session `b` whose shell shows `host$`.
pub(super) struct Host {
    dir: tempfile::TempDir,
    socket: PathBuf,
}

impl Host {
    pub(super) fn new() -> Host {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("tmux.sock");
        let ok = Command::new("tmux")
            .arg("-S")
            .arg(&socket)
            .args([
                "-f",
                "/dev/null",
                "new-session",
                "-d",
                "-s",
                "b",
                "-x",
                "100",
                "-y",
                "30",
            ])
            .arg("env PS1='host$ ' sh")
            .env_remove("TMUX")
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "tmux failed");
        Host { dir, socket }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .arg("kill-server")
            .status();
    }
}

/// A participant: `tty-share LINK` in a tmux server of its own (the test kit's).
pub(super) use termshare_testkit::Participant;

/// The same tty-share command termshare runs, spawned plainly and read until its URL.
pub(super) async fn direct_tty_share(host: &Host) -> (tokio::process::Child, String, Duration) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let t0 = Instant::now();
    let mut child = tokio::process::Command::new("tty-share")
        .args([
            "--headless",
            "--no-wait",
            "--headless-cols",
            "100",
            "--headless-rows",
            "30",
        ])
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--command",
            "tmux",
        ])
        .args([
            "--args",
            &format!("-S {} attach-session -t b", host.socket.display()),
        ])
        .env_remove("TMUX")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .expect("tty-share");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut link = String::new();
    while let Ok(Some(l)) = lines.next_line().await {
        if let Some(u) = termshare::backends::tty_share::parse_link(&l) {
            link = u;
            break;
        }
    }
    let took = t0.elapsed();
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, link, took)
}

pub(super) async fn real_termshare(host: &Host) -> Termshare {
    real_termshare_with(host, "").await
}

/// A real termshare with `extra` config on top.
pub(super) async fn real_termshare_with(host: &Host, extra: &str) -> Termshare {
    let config = Config::parse(&format!(
        "{extra}\n[terminal]\ntmux_socket = \"{}\"\n[audit]\npath = \"{}\"\n[service]\nruntime_dir = \"{}\"\n",
        host.socket.display(),
        host.dir.path().join("audit.jsonl").display(),
        host.dir.path().join("run").display()
    ))
    .unwrap();
    let policy = Policy::parse(
        "[[rule]]\nid=\"bench\"\neffect=\"allow\"\nprincipals=[\"human:*\"]\nterminals=[\"*\"]\nbackends=[\"tty-share\",\"tmate\"]\naccess=[\"read-only\",\"read-write\"]\n",
    )
    .unwrap();
    Termshare::builder(&config)
        .policy(policy)
        .start()
        .await
        .unwrap()
}

pub(super) fn request(terminal: &str, backend: &str, ttl: Duration) -> ShareRequest {
    ShareRequest {
        terminal: terminal.parse().unwrap(),
        backend: BackendName::new(backend),
        access: AccessMode::ReadWrite,
        caller: "human:bench"
            .parse::<termshare_actors::Principal>()
            .unwrap()
            .into(),
        ttl: Some(ttl),
        grace: Some(vec![]),
        join: Default::default(),
        record: false,
    }
}
