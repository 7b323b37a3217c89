//! `--record`: what the terminal showed, as an asciicast v2 file that asciinema reads,
//! with its SHA-256 in the share's end event, and the host's window untouched.

mod common;

use std::time::Duration;

use common::*;
use sha2::{Digest, Sha256};
use termshare::actors::{AccessMode, BackendName, Principal, ShareRequest};
use termshare::config::Config;
use termshare::Termshare;

fn me() -> Principal {
    "human:tester".parse().unwrap()
}

fn window_size(host: &Tmux) -> String {
    host.run(&[
        "display-message",
        "-p",
        "-t",
        "=S:",
        "#{window_width}x#{window_height}",
    ])
    .trim()
    .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_share_leaves_a_cast_file_asciinema_plays_and_the_host_is_untouched() {
    let host = Tmux::new("S");
    let before = window_size(&host);
    let (ts, info, file) = recorded(&host, "").await;
    // The recording client draws the screen as it attaches; wait for that, then type.
    let attached = tokio::task::block_in_place(|| {
        wait_until(Duration::from_secs(5), || {
            std::fs::read_to_string(&file).is_ok_and(|t| t.contains("host$"))
        })
    });
    assert!(attached.is_some(), "nothing recorded in {}", file.display());
    host.type_line("echo REC-$((6*7))-MARK");
    let typed = tokio::task::block_in_place(|| {
        wait_until(Duration::from_secs(5), || {
            std::fs::read_to_string(&file).is_ok_and(|t| t.contains("REC-42-MARK"))
        })
    });
    assert!(typed.is_some(), "the marker never reached the recording");
    assert_eq!(
        window_size(&host),
        before,
        "recording resized the host's window"
    );
    // The host resizes its window: the recording says so, and follows.
    host.run(&["resize-window", "-t", "=S:", "-x", "100", "-y", "35"]);
    let resized = tokio::task::block_in_place(|| {
        wait_until(Duration::from_secs(5), || {
            std::fs::read_to_string(&file).is_ok_and(|t| t.contains(r#""r","100x35""#))
        })
    });
    assert!(resized.is_some(), "no resize event in the recording");
    assert_eq!(window_size(&host), "100x35", "the host's own size stands");
    ts.revoke(info.share_id, me()).await.unwrap();
    ts.shutdown().await;
    assert_eq!(window_size(&host), "100x35");

    // asciicast v2: a header with the size, then [time, "o", text] events.
    let text = std::fs::read_to_string(&file).unwrap();
    let mut lines = text.lines();
    let header: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    assert_eq!(header["version"], 2);
    assert!(header["width"].as_u64().unwrap() > 0 && header["height"].as_u64().unwrap() > 0);
    let mut last = 0.0;
    for line in lines {
        let event: serde_json::Value = serde_json::from_str(line).unwrap();
        let t = event[0].as_f64().unwrap();
        assert!(t >= last, "time goes back: {line}");
        last = t;
        assert!(event[1] == "o" || event[1] == "r", "{line}");
        assert!(event[2].is_string());
    }
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&file).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);

    // Its digest is on the record, and matches the file.
    let digest: String = Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let end = host
        .audit()
        .into_iter()
        .find(|e| e["kind"] == "share.revoked")
        .unwrap();
    assert_eq!(end["details"]["recording_sha256"], digest.as_str(), "{end}");
    assert_eq!(end["details"]["recording_path"], file.display().to_string());

    // asciinema itself reads it. (`asciinema cat` 2.2 opens /dev/tty, so it runs in a
    // pty of util-linux `script`'s.)
    let out = std::process::Command::new("script")
        .args(["-q", "-e", "-c"])
        .arg(format!("asciinema cat {}", file.display()))
        .arg("/dev/null")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("asciinema (Debian package asciinema) is installed by scripts/install-deps.sh");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("REC-42-MARK"));

    // And `termshare replay` plays it: the file the end event names, checked by its
    // digest, with its timing (sped up).
    let path = file.display().to_string();
    let (status, out, err) = Cli::spawn(
        &[
            "replay",
            "--speed",
            "1000",
            "--expect-sha256",
            &digest,
            &path,
        ],
        None,
    )
    .finish();
    assert!(status.success(), "{err}");
    assert!(out.contains("REC-42-MARK"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recording_that_cannot_be_written_fails_the_share_closed() {
    let host = Tmux::new("S");
    policy(host.dir.path(), &["tty-share"], "1h");
    // A directory others may write to is refused.
    let open_dir = host.dir.path().join("shared");
    std::fs::create_dir(&open_dir).unwrap();
    std::fs::set_permissions(
        &open_dir,
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let extra = format!(
        "policy = \"policy.toml\"\n[recording]\ndir = \"{}\"\n",
        open_dir.display()
    );
    let config = Config::load(&host.config(&extra)).unwrap();
    let ts = Termshare::start(&config).await.unwrap();
    let request = ShareRequest::new("S".parse().unwrap(), BackendName::TTY_SHARE, me())
        .ttl(Duration::from_secs(600))
        .record();
    // The link is never handed out: the caller gets the error, the share its end.
    let err = ts.share(request).await.unwrap_err();
    assert!(err.to_string().contains("recording"), "{err}");
    assert!(ts.live_process_groups().is_empty());
    assert_eq!(std::fs::read_dir(&open_dir).unwrap().count(), 0);
    ts.shutdown().await;
    let failed = host
        .audit()
        .into_iter()
        .find(|e| e["kind"] == "share.failed")
        .expect("share.failed");
    assert!(
        failed["details"]["cause"]
            .as_str()
            .is_some_and(|c| c.contains("recording could not be started")),
        "{failed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_that_requires_recording_records_a_share_that_did_not_ask() {
    let host = Tmux::new("S");
    let recordings = host.dir.path().join("recordings");
    let extra = format!("[recording]\ndir = \"{}\"\n", recordings.display());
    let config = Config::load(&host.config(&extra)).unwrap();
    let policy = termshare::policy::Policy::builder()
        .allow("audited", &["human:*"], &["S"], &[BackendName::TTY_SHARE])
        .record()
        .build()
        .unwrap();
    let ts = Termshare::builder(&config)
        .policy(policy)
        .start()
        .await
        .unwrap();
    let request = ShareRequest::new("S".parse().unwrap(), BackendName::TTY_SHARE, me())
        .ttl(Duration::from_secs(600));
    let info = ts.share(request).await.unwrap();
    let file = recordings.join(format!("{}.cast", info.share_id));
    let recording = tokio::task::block_in_place(|| {
        wait_until(Duration::from_secs(5), || {
            std::fs::read_to_string(&file).is_ok_and(|t| t.contains("host$"))
        })
    });
    assert!(recording.is_some(), "no recording at {}", file.display());
    ts.revoke(info.share_id, me()).await.unwrap();
    ts.shutdown().await;
    let end = host
        .audit()
        .into_iter()
        .find(|e| e["kind"] == "share.revoked")
        .unwrap();
    assert!(end["details"]["recording_sha256"].is_string(), "{end}");
}

/// A recorded tty-share share of `S`, recording into `DIR/recordings` with `extra`
/// config under `[recording]`; the service, the share and its file.
async fn recorded(
    host: &Tmux,
    extra: &str,
) -> (Termshare, termshare::actors::ShareInfo, std::path::PathBuf) {
    policy(host.dir.path(), &["tty-share"], "1h");
    let recordings = host.dir.path().join("recordings");
    let extra = format!(
        "policy = \"policy.toml\"\n[recording]\ndir = \"{}\"\n{extra}",
        recordings.display()
    );
    let config = Config::load(&host.config(&extra)).unwrap();
    let ts = Termshare::start(&config).await.unwrap();
    let request = ShareRequest::new("S".parse().unwrap(), BackendName::TTY_SHARE, me())
        .access(AccessMode::ReadOnly)
        .ttl(Duration::from_secs(600))
        .record();
    let info = ts.share(request).await.unwrap();
    let file = recordings.join(format!("{}.cast", info.share_id));
    (ts, info, file)
}

/// The share's end, within 5 s: its reason, and its end event.
async fn ends_failed(
    ts: &Termshare,
    host: &Tmux,
    info: &termshare::actors::ShareInfo,
) -> (String, serde_json::Value) {
    let end = tokio::time::timeout(Duration::from_secs(5), ts.ended(info.share_id))
        .await
        .expect("the share did not end")
        .unwrap();
    let termshare::actors::EndReason::Failed(cause) = end.reason else {
        panic!("ended as {:?}", end.reason);
    };
    let pid = info.worker_pid.unwrap() as i32;
    assert!(
        tokio::task::block_in_place(|| wait_until(Duration::from_secs(2), || !pid_alive(pid)))
            .is_some(),
        "the worker {pid} outlived its share"
    );
    let event = host
        .audit()
        .into_iter()
        .find(|e| e["kind"] == "share.failed")
        .expect("share.failed");
    (cause, event)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recording_that_reaches_its_size_limit_ends_its_share() {
    let host = Tmux::new("S");
    let (ts, info, file) = recorded(&host, "max_bytes = 8192\n").await;
    // Far more than 8 KiB on the screen.
    host.type_line("seq 1 20000");
    let (cause, event) = ends_failed(&ts, &host, &info).await;
    assert!(cause.contains("size limit"), "{cause}");
    let size = std::fs::metadata(&file).unwrap().len();
    assert!(size <= 8192, "the file grew past its limit: {size}");
    // The end names the partial file and its digest.
    let digest: String = Sha256::digest(std::fs::read(&file).unwrap())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let error = event["details"]["recording_error"]
        .as_str()
        .unwrap_or_default();
    assert!(error.contains(&digest), "{event}");
    assert!(ts.live_process_groups().is_empty());
    ts.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recording_client_killed_midway_ends_its_share() {
    let host = Tmux::new("S");
    let (ts, info, file) = recorded(&host, "").await;
    let attached = tokio::task::block_in_place(|| {
        wait_until(Duration::from_secs(5), || {
            std::fs::read_to_string(&file).is_ok_and(|t| t.contains("host$"))
        })
    });
    assert!(attached.is_some(), "nothing recorded");
    // The recording client: termshare's own read-only tmux client of this server.
    let socket = host.socket.display().to_string();
    let clients = processes_where(|argv| {
        argv.iter().any(|a| a == &socket)
            && argv.iter().any(|a| a == "attach-session")
            && argv.iter().any(|a| a == "-r")
    })
    .into_iter()
    .filter(|pid| !descendants(info.worker_pid.unwrap() as i32).contains(pid))
    .collect::<Vec<_>>();
    assert_eq!(clients.len(), 1, "{clients:?}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(clients[0]),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let (cause, event) = ends_failed(&ts, &host, &info).await;
    assert!(cause.contains("recording client stopped"), "{cause}");
    assert!(event["details"]["recording_error"].is_string(), "{event}");
    ts.shutdown().await;
    // The host's terminal is untouched.
    assert!(host.alive());
}

#[test]
fn replay_refuses_what_is_not_the_recording_and_survives_a_closed_pipe() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("x.cast");
    let mut text = String::from("{\"version\":2,\"width\":80,\"height\":24}\n");
    for i in 0..2000 {
        text.push_str(&format!("[{}.0,\"o\",\"line {i}\\r\\n\"]\n", i / 100));
    }
    std::fs::write(&file, &text).unwrap();
    let path = file.display().to_string();
    // Another digest than the file's: not played.
    let (status, out, err) = Cli::spawn(
        &["replay", "--no-wait", "--expect-sha256", "00", &path],
        None,
    )
    .finish();
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(
        out.is_empty() && err.contains("not the recording on the record"),
        "{err}"
    );
    // A reader that goes away early: a quiet exit 0, never a panic.
    let mut cli = Cli::spawn(&["replay", "--no-wait", &path], None);
    drop(cli.child.stdout.take());
    let (status, _, err) = cli.finish();
    assert!(status.success(), "{status:?} {err}");
    assert!(!err.contains("panicked"), "{err}");
    // A file that is not asciicast v2 says which line is wrong.
    std::fs::write(
        &file,
        format!("{}[1.0,\"o\"]\n", &text[..text.find('\n').unwrap() + 1]),
    )
    .unwrap();
    let (status, _, err) = Cli::spawn(&["replay", "--no-wait", &path], None).finish();
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("line 2"), "{err}");
    let (status, _, err) = Cli::spawn(
        &["replay", &dir.path().join("none").display().to_string()],
        None,
    )
    .finish();
    assert_eq!(status.code(), Some(6), "{err}");
}
