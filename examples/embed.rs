//! termshare linked into a program as a library: start the subsystem from a config,
//! share a terminal, watch its badge and lifecycle events, list, extend, switch its
//! backend, revoke it, and shut down.
//!
//! Run it with `cargo run --example embed` (needs tmux and tty-share). It makes a tmux
//! server of its own, so your tmux is never touched.

use std::time::Duration;

use termshare::actors::{AccessMode, BackendName, Principal, ShareRequest};
use termshare::config::Config;
use termshare::policy::Policy;
use termshare::Termshare;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A private tmux server with one session, "work": the terminal to share.
    let dir = tempfile::tempdir()?;
    let tmux_socket = dir.path().join("tmux.sock");
    let ok = std::process::Command::new("tmux")
        .arg("-S")
        .arg(&tmux_socket)
        .args(["-f", "/dev/null", "new-session", "-d", "-s", "work"])
        .env_remove("TMUX")
        .status()?
        .success();
    assert!(ok, "could not start tmux");

    // Config and policy are usually files (`Config::load`, `Policy::load`).
    let config = Config::parse(&format!(
        "[terminal]\ntmux_socket = \"{}\"\n[audit]\npath = \"{}\"\n[ttl]\ngrace = [\"1m\"]\n",
        tmux_socket.display(),
        dir.path().join("audit.jsonl").display()
    ))?;
    let policy = Policy::parse(
        r#"
[[rule]]
id = "example"
effect = "allow"
principals = ["human:*"]
terminals = ["work"]
backends = ["tty-share"]
access = ["read-only", "read-write"]
max_ttl = "1h"
"#,
    )?;
    let ts = Termshare::builder(&config).policy(policy).start().await?;
    let mut badges = ts.badges();
    let mut events = ts.subscribe();
    let me: Principal = "human:example".parse()?;

    let share = ts
        .share(ShareRequest {
            terminal: "work".parse()?,
            backend: BackendName::new("tty-share"),
            access: AccessMode::ReadOnly,
            caller: me.clone().into(),
            ttl: Some(Duration::from_secs(600)),
            grace: None,
            join: Default::default(),
            record: false,
        })
        .await?;
    println!("shared {} at {}", share.terminal, share.links.link);

    badges.changed().await?;
    for (terminal, badge) in badges.borrow_and_update().iter() {
        for s in &badge.shares {
            println!("badge {terminal}: {} {} {:?}", s.backend, s.access, s.state);
        }
    }

    let extended = ts
        .extend(share.share_id, Duration::from_secs(300), me.clone())
        .await?;
    println!(
        "extended by {:?}",
        extended.expires_at.duration_since(share.expires_at)?
    );
    println!("live shares: {}", ts.list().await?.len());

    // A switch replaces the worker (here with a fresh tty-share; tmate or upterm in a
    // setup with a relay): the old one is reaped first, the share keeps its id and TTL.
    let switched = ts
        .switch(share.share_id, BackendName::new("tty-share"), me.clone())
        .await?;
    println!("switched: new link {}", switched.links.link);

    let report = ts.revoke(share.share_id, me).await?;
    println!(
        "revoked in {:?} (escalated: {})",
        report.elapsed, report.escalated
    );

    while let Ok(e) = events.try_recv() {
        println!("event {} seq {}", e.kind.as_str(), e.seq);
    }
    ts.shutdown().await;
    std::process::Command::new("tmux")
        .arg("-S")
        .arg(&tmux_socket)
        .arg("kill-server")
        .status()?;
    Ok(())
}
