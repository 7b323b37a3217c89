use super::*;

#[test]
fn links_arrive_read_only_first() {
    let mut p = TmateLinkParser::default();
    assert_eq!(
        p.feed("To connect to the session locally, run: tmate -S /x attach"),
        None
    );
    assert_eq!(
        p.feed("Note: clear your terminal before sharing readonly access"),
        None
    );
    assert_eq!(
        p.feed("ssh session read only: ssh -p2222 ro-AbC@127.0.0.1"),
        None
    );
    assert_eq!(
        p.feed("ssh session: ssh -p2222 AbC@127.0.0.1"),
        Some((
            "ssh -p2222 AbC@127.0.0.1".into(),
            "ssh -p2222 ro-AbC@127.0.0.1".into()
        ))
    );
}

#[test]
fn links_announced_after_a_reconnect_replace_the_first() {
    let (tx, mut rx) = tokio::sync::watch::channel(Links::default());
    let mut then = relinks(AccessMode::ReadWrite, tx);
    then("Reconnecting... (Error reading from channel: Socket error: disconnected)");
    then("Connecting to relay.example...");
    then("ssh session read only: ssh ro-NEW@relay.example");
    assert!(!rx.has_changed().unwrap(), "half a pair changes nothing");
    then("ssh session: ssh NEW@relay.example");
    assert!(rx.has_changed().unwrap());
    let links = rx.borrow_and_update().clone();
    assert_eq!(links.link, "ssh NEW@relay.example");
    assert_eq!(
        links.read_only_link.as_deref(),
        Some("ssh ro-NEW@relay.example")
    );
    // A read-only share gets only the read-only link.
    let (tx, rx) = tokio::sync::watch::channel(Links::default());
    let mut then = relinks(AccessMode::ReadOnly, tx);
    then("ssh session read only: ssh ro-X@r");
    then("ssh session: ssh X@r");
    assert_eq!(rx.borrow().link, "ssh ro-X@r");
    assert!(rx.borrow().read_only_link.is_none());
}

#[test]
fn the_cause_names_tmates_own_diagnostic() {
    let relay = "relay.example:22";
    let mut p = TmateLinkParser::default();
    for line in [
        "To connect to the session locally, run: tmate -S /x attach",
        "Connecting to relay.example...",
        "Cannot authenticate server",
        "Reconnecting...",
        "Connecting to relay.example...",
    ] {
        assert_eq!(p.feed(line), None);
    }
    let cause = p.cause(relay);
    assert!(
        cause.contains("the relay could not be authenticated"),
        "{cause}"
    );
    assert!(cause.contains("Cannot authenticate server"), "{cause}");
    let mut p = TmateLinkParser::default();
    p.feed("Error connecting: Connection refused");
    p.feed("Reconnecting...");
    assert!(p.cause(relay).contains("refused the connection"));
    let mut p = TmateLinkParser::default();
    p.feed("Reconnecting... (Error connecting: Timeout connecting to 10.9.9.9)");
    assert!(p.cause(relay).contains("the relay is unreachable"));
    let mut p = TmateLinkParser::default();
    p.feed("Server fingerprint not recognized: `SHA256:a', expected `SHA256:b'");
    assert!(p.cause(relay).contains("could not be authenticated"));
    // Nothing said: the last line, as before.
    let mut p = TmateLinkParser::default();
    p.feed("Connecting to relay.example...");
    assert!(p.cause(relay).contains("was not reachable"));
}

#[test]
fn config_names_the_self_hosted_relay() {
    let spawner_free = TmateSettings {
        server_host: Some("relay.example".into()),
        server_port: Some(2200),
        server_rsa_fingerprint: None,
        server_ed25519_fingerprint: Some("SHA256:abc".into()),
        authorized_keys: Some("/k".into()),
    };
    let text = {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _g = rt.enter();
        let tmp = tempfile::tempdir().unwrap();
        let scratch = Arc::new(InstanceDir::create(&tmp.path().join("run")).unwrap());
        TmateBackend::new(
            ProcessSpawner::new().unwrap(),
            spawner_free,
            Resolved::resolve(NAME, None),
            scratch,
        )
        .config_text()
    };
    assert!(text.contains("set -g tmate-foreground-restart 0"));
    assert!(text.contains("set -g tmate-server-host \"relay.example\""));
    assert!(text.contains("set -g tmate-server-port 2200"));
    assert!(text.contains("set -g tmate-server-ed25519-fingerprint \"SHA256:abc\""));
    assert!(text.contains("set -g tmate-authorized-keys \"/k\""));
}
