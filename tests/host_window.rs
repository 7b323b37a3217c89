//! A share never changes the size of the host's window. Each share attaches a tmux
//! client inside its worker; a client that counts toward the window size (tmux's
//! `window-size latest`) would resize a detached window to that client's terminal, less
//! its status line: 30 rows, then 29, 28… over successive shares. termshare's clients
//! attach with `ignore-size` (ignored while a client of the host's own is attached;
//! tmux counts them when they are alone), and tty-share's terminal is sized to the
//! window plus the status line, so a share's client asks for exactly the window's size
//! and participants see all of it.

mod common;

use std::time::Duration;

use common::*;

/// The host window `W` as `COLSxROWS`.
fn size(host: &Tmux) -> String {
    host.run(&[
        "display-message",
        "-p",
        "-t",
        "=W:",
        "#{window_width}x#{window_height}",
    ])
    .trim()
    .to_owned()
}

fn screen_of(host: &Tmux) -> String {
    host.run(&["capture-pane", "-p", "-t", "=W:"])
}

/// The window's size once it stops changing (or after 2 s).
fn settled(host: &Tmux) -> String {
    let reached = wait_until(Duration::from_secs(2), || size(host) == "100x30");
    reached.map_or_else(|| size(host), |_| "100x30".to_owned())
}

/// Clients attached to `W` right now.
fn clients(host: &Tmux) -> usize {
    host.run(&["list-clients", "-t", "=W", "-F", "#{client_name}"])
        .lines()
        .count()
}

#[test]
fn fifty_shares_and_twenty_switches_leave_a_detached_100x30_window_100x30() {
    let host = Tmux::new("S");
    // A detached session of its own size, with a status line (the default).
    host.run(&["new-session", "-d", "-s", "W", "-x", "100", "-y", "30"]);
    host.run(&["set-option", "-t", "W", "status", "on"]);
    assert_eq!(
        host.run(&["show-options", "-t", "W", "status"]).trim(),
        "status on"
    );
    assert_eq!(size(&host), "100x30");
    let policy = policy(host.dir.path(), &["tty-share", "upterm"], "1h");
    let daemon = Daemon::start_with_policy(&host, &policy, &upterm_config(&upterm_standin(), ""));
    for i in 0..50 {
        let share = daemon.json(&["share", "W", "--backend", "tty-share"]);
        // The share's client is attached (the moment a resize would happen).
        let attached = wait_until(Duration::from_secs(5), || clients(&host) == 1);
        assert!(attached.is_some(), "share {i}: no client attached");
        // A participant types through it: the share's client is the latest active
        // one, the one `window-size latest` would size the window to.
        let participant = Participant::start(&["tty-share", share["link"].as_str().unwrap()]);
        let mark = format!("MARK{}", i * 7 + 1000);
        let typed = wait_until(Duration::from_secs(5), || {
            participant.type_line(&format!(": {mark}"));
            screen_of(&host).contains(&mark)
        });
        assert!(
            typed.is_some(),
            "share {i}: the participant's keys never arrived"
        );
        // tty-share redraws a joining participant by shrinking its terminal one row
        // for 50 ms (pty_master.go, Refresh): the window follows and comes back.
        assert_eq!(
            settled(&host),
            "100x30",
            "share {i}, attached and typed into"
        );
        daemon.json(&["revoke", share["share_id"].as_str().unwrap()]);
        let detached = wait_until(Duration::from_secs(5), || clients(&host) == 0);
        assert!(detached.is_some(), "share {i}: its client stayed attached");
        assert_eq!(size(&host), "100x30", "share {i}, revoked");
    }
    // Twenty switches between tty-share (which attaches a client) and upterm (the
    // stand-in, which attaches none).
    let share = daemon.json(&["share", "W", "--backend", "tty-share"]);
    let id = share["share_id"].as_str().unwrap().to_owned();
    for i in 0..20 {
        let backend = if i % 2 == 0 { "upterm" } else { "tty-share" };
        let switched = daemon.json(&["switch", &id, "--backend", backend]);
        assert_eq!(switched["backend"], backend);
        let want = usize::from(backend == "tty-share");
        let attached = wait_until(Duration::from_secs(5), || clients(&host) == want);
        assert!(attached.is_some(), "switch {i}: {} clients", clients(&host));
        assert_eq!(settled(&host), "100x30", "switch {i} to {backend}");
    }
    daemon.json(&["revoke", &id]);
    daemon.stop();
}
