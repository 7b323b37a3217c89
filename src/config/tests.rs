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
