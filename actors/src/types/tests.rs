use super::*;

#[test]
fn principals_are_checked() {
    assert!("human:alice".parse::<Principal>().is_ok());
    assert!("agent:claude-1".parse::<Principal>().is_ok());
    for bad in ["alice", "robot:x", "human:", "human:a b", "agent:x;rm"] {
        assert!(bad.parse::<Principal>().is_err(), "{bad}");
    }
}

#[test]
fn terminal_names_refuse_tmux_target_syntax_and_spaces() {
    assert!("dev-1".parse::<TerminalName>().is_ok());
    assert!("alice@box".parse::<TerminalName>().is_ok());
    for bad in [
        "",
        "a.b",
        "a:b",
        "a b",
        &"x".repeat(65),
        "@1",
        "$1",
        "%1",
        "+1",
        "-t",
        "=x",
    ] {
        assert!(bad.parse::<TerminalName>().is_err(), "{bad}");
    }
}

#[test]
fn fingerprint_is_12_hex_stable_and_keyed() {
    let key = FingerprintKey::random();
    let f = key.fingerprint("http://127.0.0.1:1/s/local/");
    assert_eq!(f.len(), 12);
    assert_eq!(f, key.fingerprint("http://127.0.0.1:1/s/local/"));
    assert_ne!(f, key.fingerprint("http://127.0.0.1:2/s/local/"));
    // Another installation's key gives another fingerprint of the same link.
    assert_ne!(
        f,
        FingerprintKey::random().fingerprint("http://127.0.0.1:1/s/local/")
    );
    assert_eq!(format!("{key:?}"), "FingerprintKey(..)");
}

#[test]
fn a_shares_debug_never_shows_its_links() {
    let links = Links {
        link: "http://127.0.0.1:8000/s/SECRET/".into(),
        read_only_link: Some("ssh ro-TOKEN@relay".into()),
    };
    let shown = format!("{links:?}");
    assert!(
        !shown.contains("SECRET") && !shown.contains("TOKEN"),
        "{shown}"
    );
    assert!(shown.contains("<redacted>"));
}
