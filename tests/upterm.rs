//! The upterm adapter against tests/bin/upterm, a stand-in that prints and does what
//! upterm v0.24 does (upterm is not packaged for Debian and cannot be installed here;
//! the stand-in's header names the upterm source file behind each behaviour).

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use termshare::actors::{AccessMode, BackendError, BackendName, ShareError, ShareRequest};
use termshare::config::Config;
use termshare::policy::Policy;
use termshare::Termshare;

fn request(access: AccessMode) -> ShareRequest {
    ShareRequest {
        terminal: "S".parse().unwrap(),
        backend: BackendName::new("upterm"),
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

async fn start(host: &Tmux, upterm_extra: &str, program: &Path) -> Termshare {
    let config =
        Config::load(&host.config(&upterm_config(&program.display().to_string(), upterm_extra)))
            .unwrap();
    let policy = Policy::load(&policy(host.dir.path(), &["upterm"], "1h")).unwrap();
    Termshare::builder(&config)
        .policy(policy)
        .start()
        .await
        .unwrap()
}

/// A wrapper around the stand-in with test hooks set (workers get a clean environment,
/// so the hooks are written into the wrapper): its argv, its environment, when it
/// printed the SSH command, and the layout to print.
struct Wrapper {
    program: PathBuf,
    argv: PathBuf,
    env: PathBuf,
    printed_at: PathBuf,
}

impl Wrapper {
    fn new(host: &Tmux, name: &str, layout: &str) -> Wrapper {
        let dir = host.dir.path();
        let w = Wrapper {
            program: dir.join(name),
            argv: dir.join(format!("{name}-argv")),
            env: dir.join(format!("{name}-env")),
            printed_at: dir.join(format!("{name}-printed-at")),
        };
        std::fs::write(
            &w.program,
            format!(
                "#!/bin/sh\nTERMSHARE_TEST_ARGV_FILE='{}' TERMSHARE_TEST_ENV_FILE='{}' \
                 TERMSHARE_TEST_UPTERM_PRINTED_AT='{}' TERMSHARE_TEST_UPTERM_LAYOUT='{layout}' \
                 exec '{}' \"$@\"\n",
                w.argv.display(),
                w.env.display(),
                w.printed_at.display(),
                upterm_standin()
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&w.program, std::fs::Permissions::from_mode(0o755)).unwrap();
        w
    }

    fn argv(&self) -> Vec<String> {
        std::fs::read_to_string(&self.argv)
            .unwrap()
            .lines()
            .map(String::from)
            .collect()
    }

    /// The value after `flag` in upterm's argv.
    fn after(&self, flag: &str) -> String {
        let argv = self.argv();
        let at = argv.iter().position(|a| a == flag);
        argv[at.unwrap_or_else(|| panic!("{flag} missing from {argv:?}")) + 1].clone()
    }

    fn env(&self, key: &str) -> String {
        std::fs::read_to_string(&self.env)
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")).map(String::from))
            .unwrap_or_default()
    }

    /// When the stand-in began to write its SSH command line. The time is taken
    /// before the write, so the link can never precede it (a clean-clone CI run once
    /// had the link 80 µs before a time taken after the flush), but the file is
    /// written after the flush: wait for it (another run once read it empty).
    fn printed_at(&self) -> SystemTime {
        let mut ns = None;
        wait_until(Duration::from_secs(5), || {
            ns = std::fs::read_to_string(&self.printed_at)
                .ok()
                .and_then(|t| t.trim().parse::<u64>().ok());
            ns.is_some()
        });
        let ns = ns.unwrap_or_else(|| panic!("{} never had a time", self.printed_at.display()));
        UNIX_EPOCH + Duration::from_nanos(ns)
    }
}

fn tester() -> termshare::actors::Principal {
    "human:tester".parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_layout_gives_the_link_within_100ms_of_its_ssh_line() {
    let host = Tmux::new("S");
    for layout in ["0.22", "0.21", "0.20"] {
        let w = Wrapper::new(&host, &format!("upterm-{layout}"), layout);
        let ts = start(&host, "", &w.program).await;
        let info = ts.share(request(AccessMode::ReadWrite)).await.unwrap();
        let linked = SystemTime::now();
        let after_print = linked.duration_since(w.printed_at()).unwrap();
        eprintln!("layout {layout}: link {after_print:?} after the ssh line");
        assert!(
            after_print < Duration::from_millis(100),
            "layout {layout}: {after_print:?}"
        );
        assert!(info.links.link.starts_with("ssh "), "{}", info.links.link);
        assert!(
            info.links.link.ends_with("@127.0.0.1 -p 2222"),
            "{}",
            info.links.link
        );
        ts.revoke(info.share_id, tester()).await.unwrap();
        ts.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_share_starts_unattended_with_files_of_termshares_own_and_flags_that_follow_it() {
    let host = Tmux::new("S");
    let w = Wrapper::new(&host, "upterm", "0.22");
    let keys = host.dir.path().join("authorized_keys");
    std::fs::write(&keys, "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE test\n").unwrap();
    let ts = start(
        &host,
        &format!(
            "authorized_keys = \"{}\"\ngithub_users = [\"octocat\"]\n",
            keys.display()
        ),
        &w.program,
    )
    .await;
    let info = ts.share(request(AccessMode::ReadOnly)).await.unwrap();
    for flag in ["host", "--accept", "--no-sftp", "--read-only", "--"] {
        assert!(w.argv().iter().any(|a| a == flag), "{flag}: {:?}", w.argv());
    }
    assert_eq!(w.after("--server"), "ssh://127.0.0.1:2222");
    assert_eq!(w.after("--authorized-keys"), keys.display().to_string());
    assert_eq!(w.after("--github-user"), "octocat");
    // Participants get a read-only attach of the shared tmux session.
    assert!(w
        .after("--force-command")
        .ends_with("attach-session -r -t =S"));
    // The known_hosts and the key are termshare's, 0600, in the share's own directory
    // under termshare's runtime directory; upterm's HOME and XDG dirs are there too.
    let runtime = host.runtime_dir();
    let known_hosts = PathBuf::from(w.after("--known-hosts"));
    let key = PathBuf::from(w.after("--private-key"));
    let share_dir = known_hosts.parent().unwrap().to_path_buf();
    assert!(share_dir.starts_with(&runtime), "{}", share_dir.display());
    assert_eq!(key.parent().unwrap(), share_dir);
    assert_eq!(
        std::fs::read_to_string(&known_hosts).unwrap(),
        format!("@cert-authority [127.0.0.1]:2222 {UPTERM_CA_KEY}\n")
    );
    assert!(std::fs::read_to_string(&key)
        .unwrap()
        .starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"));
    use std::os::unix::fs::PermissionsExt;
    for f in [&known_hosts, &key] {
        let mode = std::fs::metadata(f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", f.display());
    }
    let mode = std::fs::metadata(&share_dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    assert_eq!(w.env("HOME"), share_dir.display().to_string());
    assert!(w
        .env("XDG_RUNTIME_DIR")
        .starts_with(&*share_dir.to_string_lossy()));
    // Its admin socket is there, and goes with the share.
    let admin = admin_sockets(&share_dir);
    assert_eq!(admin.len(), 1, "{admin:?}");
    let pgid = ts.live_process_groups()[0];
    // upterm logs every join from the start: the count is live from 0. Two
    // participants join and one leaves (the stand-in logs each as upterm does).
    assert_eq!(badge_count(&ts, info.share_id), Some(0));
    for (signal, n) in [(libc::SIGUSR1, 1), (libc::SIGUSR1, 2), (libc::SIGUSR2, 1)] {
        unsafe {
            libc::kill(pgid, signal);
        }
        let took = count_becomes(&ts, info.share_id, n).await;
        assert!(took < Duration::from_secs(1), "count {n} after {took:?}");
    }
    // Each on the record (written as it happened, right after the badge moved).
    let presence = || -> Vec<(String, bool)> {
        host.audit()
            .into_iter()
            .filter(|e| e["kind"] == "share.joined" || e["kind"] == "share.left")
            .map(|e| {
                let kind = e["kind"].as_str().unwrap().to_owned();
                (kind, e["details"]["origin_fp"].is_string())
            })
            .collect()
    };
    let recorded = wait_until(Duration::from_secs(1), || presence().len() == 3);
    assert!(recorded.is_some(), "{:?}", presence());
    let kinds = presence();
    assert_eq!(
        kinds,
        [
            ("share.joined".to_owned(), true),
            ("share.joined".to_owned(), true),
            ("share.left".to_owned(), false),
        ]
    );
    let report = ts.revoke(info.share_id, tester()).await.unwrap();
    assert!(report.deadline_met, "{report:?}");
    assert_eq!(report.participants_before, Some(1), "{report:?}");
    assert!(!termshare::process::group_alive(pgid));
    // The directory goes with the worker's state, as its actor stops after the revoke.
    let gone = wait_until(Duration::from_secs(2), || !share_dir.exists());
    assert!(gone.is_some(), "the share's directory outlived it");
    ts.shutdown().await;
}

/// Admin sockets under `dir` (upterm's `…/upterm/SESSION.sock`).
fn admin_sockets(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            let Ok(meta) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            if meta.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "sock")
                && p.parent().is_some_and(|d| d.ends_with("upterm"))
            {
                found.push(p);
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_private_key_is_used_as_it_is() {
    let host = Tmux::new("S");
    let w = Wrapper::new(&host, "upterm", "0.22");
    let key = host.dir.path().join("id_upterm");
    let made = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(made.success());
    let ts = start(
        &host,
        &format!("private_key = \"{}\"\n", key.display()),
        &w.program,
    )
    .await;
    ts.share(request(AccessMode::ReadWrite)).await.unwrap();
    assert_eq!(w.after("--private-key"), key.display().to_string());
    ts.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_server_is_an_error_that_says_so_not_a_usage_text() {
    let host = Tmux::new("S");
    // known_hosts with a plain host-key line: upterm asks yes/no and exits.
    let known_hosts = host.dir.path().join("known_hosts");
    std::fs::write(
        &known_hosts,
        "[127.0.0.1]:2222 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHBsYWluLWhvc3Qta2V5\n",
    )
    .unwrap();
    let config = Config::load(&host.config(&format!(
        "[backends.upterm]\nprogram = \"{}\"\nserver = \"ssh://127.0.0.1:2222\"\nknown_hosts = \"{}\"\n",
        upterm_standin(),
        known_hosts.display()
    )))
    .unwrap();
    let policy = Policy::load(&policy(host.dir.path(), &["upterm"], "1h")).unwrap();
    let ts = Termshare::builder(&config)
        .policy(policy)
        .start()
        .await
        .unwrap();
    let err = ts.share(request(AccessMode::ReadWrite)).await.unwrap_err();
    let ShareError::Backend(BackendError::StartFailed { detail, .. }) = &err else {
        panic!("expected a failed start, got {err}");
    };
    assert!(detail.contains("host key is not trusted"), "{detail}");
    assert!(detail.contains("server_ca_key"), "{detail}");
    assert!(
        !detail.contains("Usage:") && !detail.contains("Flags:"),
        "{detail}"
    );
    // The user's file was copied, never handed to upterm to write in.
    assert_eq!(
        std::fs::read_to_string(&known_hosts).unwrap(),
        "[127.0.0.1]:2222 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHBsYWluLWhvc3Qta2V5\n"
    );
    assert!(ts.live_process_groups().is_empty());
    ts.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_ca_key_or_known_hosts_upterm_is_unavailable_before_anything_runs() {
    let host = Tmux::new("S");
    let w = Wrapper::new(&host, "upterm", "0.22");
    let config = Config::load(&host.config(&format!(
        "[backends.upterm]\nprogram = \"{}\"\n",
        w.program.display()
    )))
    .unwrap();
    let policy = Policy::load(&policy(host.dir.path(), &["upterm"], "1h")).unwrap();
    let ts = Termshare::builder(&config)
        .policy(policy)
        .start()
        .await
        .unwrap();
    let err = ts.share(request(AccessMode::ReadWrite)).await.unwrap_err();
    assert!(
        matches!(err, ShareError::Backend(BackendError::Unavailable { .. })),
        "{err}"
    );
    assert!(err.to_string().contains("server_ca_key"), "{err}");
    assert!(!w.argv.exists(), "upterm ran");
    ts.shutdown().await;
}

#[test]
fn a_ca_key_that_is_not_one_key_line_is_refused_in_the_config() {
    for bad in [
        "ssh-ed25519",
        "ssh-ed25519 AAAA\\n@cert-authority * ssh-ed25519 AAAAevil",
        "ssh-dss AAAAB3Nza",
    ] {
        let text = format!("[backends.upterm]\nserver_ca_key = \"{bad}\"\n");
        let err = Config::parse(&text)
            .and_then(|c| c.settings().map(|_| ()))
            .unwrap_err();
        assert!(err.to_string().contains("server_ca_key"), "{bad}: {err}");
    }
}

#[test]
fn kill_9_of_the_daemon_with_a_live_upterm_share_leaves_no_admin_socket_after_a_restart() {
    let host = Tmux::new("S");
    let policy = policy(host.dir.path(), &["upterm"], "1h");
    let daemon = Daemon::start_with_policy(&host, &policy, &upterm_config(&upterm_standin(), ""));
    daemon.json(&["share", "S", "--backend", "upterm"]);
    let marker = host.socket.to_string_lossy().into_owned();
    assert_eq!(
        processes_mentioning("python3", &marker).len(),
        1,
        "the stand-in is not running"
    );
    let runtime = host.runtime_dir();
    let before = admin_sockets(&runtime);
    assert_eq!(before.len(), 1, "{before:?}");
    let Daemon {
        mut cli,
        socket,
        config,
    } = daemon;
    cli.signal(libc::SIGKILL);
    let _ = cli.child.wait();
    // upterm is killed with it (its parent-death signal), and leaves its socket. (The
    // stand-in runs as `python3 …/tests/bin/upterm`; its force command names this
    // test's tmux socket.)
    let marker = host.socket.to_string_lossy().into_owned();
    assert_eq!(before.len(), 1);
    let gone = wait_until(Duration::from_secs(5), || {
        processes_mentioning("python3", &marker).is_empty()
    });
    assert!(gone.is_some(), "upterm outlived the daemon");
    assert!(
        before[0].exists(),
        "the stand-in should leave its socket when killed"
    );
    let restarted = Cli::spawn(&["--config", config.to_str().unwrap(), "serve"], None);
    let cfg = config.to_str().unwrap().to_owned();
    let up = wait_until(Duration::from_secs(10), || {
        let mut c = Cli::spawn(&["--config", &cfg, "list"], None);
        c.finish().0.success()
    });
    assert!(up.is_some(), "the daemon did not come back");
    assert!(!before[0].exists(), "{} is left", before[0].display());
    assert!(admin_sockets(&runtime).is_empty());
    Daemon {
        cli: restarted,
        socket,
        config,
    }
    .stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_gives_an_upterm_share_a_new_session_and_ends_the_old_one() {
    let host = Tmux::new("S");
    let ts = start(&host, "", Path::new(&upterm_standin())).await;
    let info = ts.share(request(AccessMode::ReadOnly)).await.unwrap();
    let old_pid = info.worker_pid.unwrap() as i32;
    // Somebody is in through the old session (the stand-in logs a join, as upterm does).
    unsafe {
        libc::kill(old_pid, libc::SIGUSR1);
    }
    count_becomes(&ts, info.share_id, 1).await;
    let t0 = std::time::Instant::now();
    let rotated = ts.rotate(info.share_id, tester()).await.unwrap();
    let took = t0.elapsed();
    // A new upterm session: a new link and process; the old one, and whoever was on
    // it, gone by the time the rotation answers; the share's id and expiry kept.
    assert_ne!(rotated.links.link, info.links.link);
    assert!(
        !pid_alive(old_pid),
        "the old upterm ({old_pid}) is still there"
    );
    let new_pid = rotated.worker_pid.unwrap() as i32;
    assert!(new_pid != old_pid && pid_alive(new_pid));
    assert_eq!(
        (rotated.share_id, rotated.expires_at),
        (info.share_id, info.expires_at)
    );
    assert_eq!(badge_count(&ts, info.share_id), Some(0));
    println!("rotated to a new upterm session in {took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    ts.shutdown().await;
    let record = host
        .audit()
        .into_iter()
        .find(|e| e["kind"] == "share.rotated")
        .expect("share.rotated");
    assert_eq!(record["details"]["new_session"], true, "{record}");
    assert_eq!(record["details"]["participants_cut_off"], 1, "{record}");
    assert_eq!(record["details"]["old_worker_pid"], old_pid, "{record}");
}
