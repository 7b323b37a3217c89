//! The terminal check over tmux's own protocol (src/terminal/wire.rs), against the real
//! tmux server from Debian's package: the same answers as the tmux binary, the server
//! unharmed, no tmux process per check, and the binary whenever the protocol is not
//! one termshare knows or fails.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use termshare::actors::{TerminalHost, TerminalName};
use termshare::launch::{find_in_path, CleanEnv};
use termshare::terminal::TmuxHost;
use termshare_testkit::Tmux;

/// A tmux program that logs each run's arguments to `log` and then runs the real tmux,
/// or, for `display-message -p #{version}`, prints `version` when one is given.
fn logging_tmux(dir: &Path, version: Option<&str>) -> (PathBuf, PathBuf) {
    let log = dir.join("tmux-runs.log");
    let program = dir.join("logging-tmux");
    let real = find_in_path("tmux").unwrap();
    let version_answer = match version {
        Some(v) => format!(
            "case \"$*\" in *'display-message -p #{{version}}'*) echo '{v}'; exit 0;; esac\n"
        ),
        None => String::new(),
    };
    std::fs::write(
        &program,
        format!(
            "#!/bin/sh\necho \"$*\" >> '{}'\n{version_answer}exec '{}' \"$@\"\n",
            log.display(),
            real.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
    (program, log)
}

fn runs(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect()
}

fn host(tmux: &Tmux, program: PathBuf) -> TmuxHost {
    TmuxHost::new(
        program,
        tmux.socket.clone(),
        Arc::new(CleanEnv::from_current()),
    )
}

fn name(s: &str) -> TerminalName {
    s.parse().unwrap()
}

fn server_pid(tmux: &Tmux) -> String {
    tmux.run(&["display-message", "-p", "#{pid}"])
        .trim()
        .to_owned()
}

#[tokio::test]
async fn a_check_answers_as_the_binary_would_without_running_it() {
    let tmux = Tmux::new("S");
    let (program, log) = logging_tmux(tmux.dir.path(), None);
    let host = host(&tmux, program);
    let pid = server_pid(&tmux);

    // The Tmux helper sets `status off` globally and a 120x30 window.
    assert_eq!(host.check(&name("S")).await, Ok(Some((120, 30))));
    // The one run: the server's version, asked once per server.
    assert_eq!(
        runs(&log),
        vec![
            "-S ".to_owned()
                + &tmux.socket.display().to_string()
                + " display-message -p #{version}"
        ]
    );

    // Status lines count; the answer follows the session as it changes.
    // (set-option's -t takes no `=`: tmux 3.3a answers "no such session: =S".)
    tmux.run(&["set-option", "-t", "S", "status", "2"]);
    tmux.run(&["resize-window", "-t", "=S:", "-x", "100", "-y", "20"]);
    assert_eq!(host.check(&name("S")).await, Ok(Some((100, 22))));

    // `=NAME` is exact: a session whose name only starts with the asked one is not it.
    tmux.run(&["new-session", "-d", "-s", "Sx"]);
    let missing = host.check(&name("Sy")).await.unwrap_err();
    assert!(missing.contains("can't find session"), "{missing}");
    tmux.run(&["kill-session", "-t", "=S"]);
    let missing = host.check(&name("S")).await.unwrap_err();
    assert!(missing.contains("can't find session"), "{missing}");

    // 200 more checks: still no tmux process, and the server is the same, unharmed.
    for _ in 0..200 {
        assert!(host.check(&name("Sx")).await.unwrap().is_some());
    }
    // The session list goes the same way, names outside ASCII as they are: without
    // tmux's UTF-8 flag the server would print `café` as `caf_`, a name that is not
    // the session's.
    tmux.run(&["new-session", "-d", "-s", "café"]);
    let listed: Vec<String> = host
        .sessions()
        .await
        .unwrap()
        .iter()
        .map(|n| n.as_str().to_owned())
        .collect();
    assert!(listed.contains(&"Sx".to_owned()), "{listed:?}");
    assert!(!listed.iter().any(|n| n.contains('_')), "{listed:?}");
    assert_eq!(
        listed.contains(&"café".to_owned()),
        "café".parse::<TerminalName>().is_ok(),
        "{listed:?}"
    );
    assert_eq!(runs(&log).len(), 1, "{:?}", runs(&log));
    assert_eq!(server_pid(&tmux), pid);
    assert!(tmux
        .run(&["list-sessions", "-F", "#{session_name}"])
        .contains("Sx"));
}

#[tokio::test]
async fn a_server_of_a_version_not_read_here_is_asked_with_the_binary() {
    let tmux = Tmux::new("S");
    let (program, log) = logging_tmux(tmux.dir.path(), Some("next-3.7"));
    let host = host(&tmux, program);
    for _ in 0..3 {
        assert_eq!(host.check(&name("S")).await, Ok(Some((120, 30))));
    }
    let runs = runs(&log);
    assert_eq!(runs.len(), 4, "{runs:?}");
    assert!(
        runs[1..]
            .iter()
            .all(|r| r.contains("has-session -t =S ; display-message")),
        "{runs:?}"
    );
    assert!(host
        .check(&name("T"))
        .await
        .unwrap_err()
        .contains("can't find session"));
}

/// A stand-in server at the socket that answers every connection with tmux's
/// "protocol version mismatch" (MSG_VERSION, protocol 9), as a future tmux would.
/// The binary it falls back to is a script that answers like tmux 3.3a would.
#[tokio::test]
async fn a_protocol_answer_not_understood_falls_back_to_the_binary_for_that_server() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("tmux.sock");
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    let served = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut connections = 0;
        loop {
            let (mut peer, _) = listener.accept().await.unwrap();
            connections += 1;
            let mut header = Vec::new();
            header.extend_from_slice(&12u32.to_ne_bytes()); // MSG_VERSION
            header.extend_from_slice(&16u16.to_ne_bytes());
            header.extend_from_slice(&0u16.to_ne_bytes());
            header.extend_from_slice(&9u32.to_ne_bytes());
            header.extend_from_slice(&u32::MAX.to_ne_bytes());
            let _ = peer.write_all(&header).await;
            let mut sink = vec![0u8; 4096];
            let _ = peer.read(&mut sink).await;
            if connections == 1000 {
                break;
            }
        }
    });
    let log = dir.path().join("tmux-runs.log");
    let program = dir.path().join("fake-tmux");
    std::fs::write(
        &program,
        format!(
            "#!/bin/sh\necho \"$*\" >> '{}'\ncase \"$*\" in\n  *'#{{version}}'*) echo 3.3a;;\n  *has-session*) echo '90 40 on';;\nesac\n",
            log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
    let host = TmuxHost::new(program, socket, Arc::new(CleanEnv::from_current()));

    assert_eq!(host.check(&name("S")).await, Ok(Some((90, 41))));
    assert_eq!(host.check(&name("S")).await, Ok(Some((90, 41))));
    let runs = runs(&log);
    // The version (3.3a: allowed), the first check's fallback after MSG_VERSION, and
    // the second check straight with the binary: the server is not asked twice.
    assert_eq!(runs.len(), 3, "{runs:?}");
    assert!(runs[0].contains("#{version}"), "{runs:?}");
    assert!(
        runs[1..].iter().all(|r| r.contains("has-session")),
        "{runs:?}"
    );
    served.abort();
}
