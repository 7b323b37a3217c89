use super::*;

#[test]
fn no_file_means_defaults() {
    let c = Config::parse("").unwrap();
    assert_eq!(c.settings().unwrap(), Settings::default());
}

#[test]
fn design_example_parses() {
    let c = Config::parse(
        r#"
link_timeout = "10s"
policy = "policy.toml"
[ttl]
default = "30m"
grace = ["5m", "1m"]
[limits]
per_terminal = 1
[terminal]
tmux_socket = "/path/to/tmux.sock"
attach = ["tmux", "attach-session", "-t", "{terminal}"]
attach_read_only = ["tmux", "attach-session", "-r", "-t", "{terminal}"]
[audit]
path = "audit.jsonl"
durability = "durable"
[service]
socket = "/run/user/1000/termshare.sock"
metrics = "127.0.0.1:9464"
[backends.tty_share]
listen = "127.0.0.1"
[backends.tmate]
server_host = "ssh.example.org"
server_port = 22
server_rsa_fingerprint = "SHA256:x"
server_ed25519_fingerprint = "SHA256:y"
authorized_keys = "/path/authorized_keys"
[backends.upterm]
server = "ssh://uptermd.example.org:22"
known_hosts = "/path/known_hosts"
authorized_keys = "/path/authorized_keys"
github_users = ["octocat"]
"#,
    )
    .unwrap();
    let s = c.settings().unwrap();
    assert_eq!(
        s.grace,
        vec![Duration::from_secs(300), Duration::from_secs(60)]
    );
    assert_eq!(c.tmate().server_port, Some(22));
    assert_eq!(c.upterm().github_users, vec!["octocat".to_string()]);
}

#[test]
fn bad_values_are_errors() {
    for bad in [
        "link_timeout = \"soon\"",
        "link_timeout = 10",
        "[ttl]\ndefault = \"0s\"",
        "[limits]\nper_terminal = 0",
        "[revoke]\ndeadline = \"10s\"",
        "[revoke]\ngrace = \"6s\"",
        "[revoke]\ndeadline = \"2s\"\ngrace = \"2s\"",
        "[backends.tty_share]\nlisten = \"localhost\"",
        "[backends.tty_share]\nlisten = \"0.0.0.0\"",
        "[terminal]\ntmux = \"tmux\"",
        "[backends.upterm]\nserver = \"http://x\"",
        "[terminal]\nattach = []",
        "[service]\nmetrics = \"0.0.0.0:9464\"",
        "[service]\nmetrics = \"localhost\"",
        "unknown_key = 1",
    ] {
        assert!(Config::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn the_panel_listens_on_loopback_unless_told_and_on_one_address() {
    let panel = |text: &str| Config::parse(text).unwrap().panel_addr();
    assert_eq!(panel("").unwrap(), None);
    assert_eq!(
        panel("[panel]\nlisten = \"127.0.0.1:7681\"\n").unwrap(),
        Some("127.0.0.1:7681".parse().unwrap())
    );
    let err = panel("[panel]\nlisten = \"192.0.2.1:7681\"\n").unwrap_err();
    assert!(err.contains("expose_beyond_loopback"), "{err}");
    let exposed = "[panel]\nlisten = \"192.0.2.1:7681\"\nexpose_beyond_loopback = true\n";
    assert!(panel(exposed).unwrap().is_some());
    let err =
        panel("[panel]\nlisten = \"0.0.0.0:7681\"\nexpose_beyond_loopback = true\n").unwrap_err();
    assert!(err.contains("one address"), "{err}");
    assert!(panel("[panel]\nlisten = \"nowhere\"\n").is_err());
    assert!(
        Config::parse("[panel]\nport = 1\n").is_err(),
        "unknown keys are refused"
    );
}

#[test]
fn fleet_is_off_without_its_section_and_checked_with_it() {
    assert_eq!(Config::parse("").unwrap().fleet().unwrap(), None);
    let f = Config::parse(
        "[fleet]\ndatabase = \"postgresql://u:pw@/termshare?host=/run/postgresql\"\nhost_id = \"build-07\"\nlease = \"30s\"\n",
    )
    .unwrap()
    .fleet()
    .unwrap()
    .unwrap();
    assert_eq!(f.host_id, "build-07");
    assert_eq!(f.lease, Duration::from_secs(30));
    assert!(
        !format!("{f:?}").contains("pw"),
        "the password is never printed"
    );
    let d = Config::parse("[fleet]\ndatabase = \"host=/run/postgresql\"\nhost_id = \"h\"\n")
        .unwrap()
        .fleet()
        .unwrap()
        .unwrap();
    assert_eq!(d.lease, Duration::from_secs(10), "the default lease");
    for (bad, says) in [
        ("[fleet]\nhost_id = \"h\"\n", "fleet.database is required"),
        (
            "[fleet]\ndatabase = \" \"\nhost_id = \"h\"\n",
            "fleet.database is required",
        ),
        (
            "[fleet]\ndatabase = \"x\"\nhost_id = \"a b\"\n",
            "fleet.host_id",
        ),
        (
            "[fleet]\ndatabase = \"x\"\nhost_id = \"\"\n",
            "fleet.host_id",
        ),
        (
            "[fleet]\ndatabase = \"x\"\nhost_id = \"h'; DROP\"\n",
            "fleet.host_id",
        ),
        (
            "[fleet]\ndatabase = \"x\"\nhost_id = \"h\"\nlease = \"100ms\"\n",
            "fleet.lease",
        ),
        (
            "[fleet]\ndatabase = \"x\"\nhost_id = \"h\"\nlease = \"2h\"\n",
            "fleet.lease",
        ),
        (
            "[fleet]\ndatabase = \"x\"\nhost_id = \"h\"\nleas = \"2s\"\n",
            "unknown field",
        ),
    ] {
        let err = Config::parse(bad).unwrap_err().to_string();
        assert!(err.contains(says), "{bad}: {err}");
    }
}

#[test]
fn the_default_host_id_is_stable_per_machine_and_not_the_machine_id() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("machine-id");
    std::fs::write(&path, "0123456789abcdef0123456789abcdef\n").unwrap();
    let a = super::host_id_from_machine_id(&path).unwrap();
    assert_eq!(a, super::host_id_from_machine_id(&path).unwrap());
    assert!(a.starts_with("m-") && a.len() == 18, "{a}");
    assert!(!a.contains("0123456789abcdef"), "{a}");
    assert_eq!(super::check_host_id(&a), Ok(a.clone()));
    std::fs::write(&path, "fedcba9876543210fedcba9876543210\n").unwrap();
    assert_ne!(a, super::host_id_from_machine_id(&path).unwrap());
    std::fs::write(&path, "not a machine id\n").unwrap();
    assert!(super::host_id_from_machine_id(&path).is_err());
    assert!(super::host_id_from_machine_id(&dir.path().join("missing")).is_err());
}
