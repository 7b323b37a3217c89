//! The example config, policy and systemd unit in examples/ are real: they load, and
//! the unit's command line is accepted by `termshare serve`.

use std::path::Path;
use std::process::Command;

use termshare::config::Config;
use termshare::policy::Policy;

fn examples() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/examples"))
}

#[test]
fn the_example_config_and_policy_load() {
    let config = Config::load(&examples().join("config.toml")).unwrap();
    let settings = config.settings().unwrap();
    assert_eq!(settings.per_terminal_limit, 1);
    assert_eq!(config.metrics_addr().unwrap().unwrap().port(), 9464);
    let policy_path = config.resolve(config.policy.as_deref().unwrap());
    assert_eq!(policy_path, examples().join("policy.toml"));
    let policy = Policy::load(&policy_path).unwrap();
    let ids: Vec<&str> = policy.rules.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["no-agent-writes", "team-shares"]);
    let handoffs: Vec<&str> = policy.handoffs.iter().map(|h| h.id.as_str()).collect();
    assert_eq!(handoffs, ["human-to-agent", "agent-to-human"]);
}

#[test]
fn the_systemd_unit_runs_a_command_termshare_accepts() {
    let unit = std::fs::read_to_string(examples().join("termshare.service")).unwrap();
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart line");
    // Lay out a home as the unit's install notes say, then run its command line with
    // our binary and `--check`.
    let home = tempfile::tempdir().unwrap();
    let conf_dir = home.path().join(".config/termshare");
    std::fs::create_dir_all(&conf_dir).unwrap();
    for f in ["config.toml", "policy.toml"] {
        std::fs::copy(examples().join(f), conf_dir.join(f)).unwrap();
    }
    let argv: Vec<String> = exec
        .split_whitespace()
        .map(|a| a.replace("%h", home.path().to_str().unwrap()))
        .collect();
    assert!(argv[0].ends_with("/termshare"), "{argv:?}");
    assert_eq!(argv.last().map(String::as_str), Some("serve"));
    let out = Command::new(env!("CARGO_BIN_EXE_termshare"))
        .args(&argv[1..])
        .arg("--check")
        .env("HOME", home.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = |key: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(key))
            .map(|l| l[key.len()..].trim().to_owned())
            .unwrap_or_default()
    };
    assert!(line("policy:").ends_with("(2 rules)"), "{stdout}");
    assert_eq!(
        line("metrics:"),
        "http://127.0.0.1:9464/metrics",
        "{stdout}"
    );
    // Programs are resolved once, at start, to absolute paths.
    assert!(line("tty-share:").starts_with('/'), "{stdout}");
    assert!(line("tmux:").starts_with('/'), "{stdout}");
    for key in ["Type=simple", "KillMode=mixed", "WantedBy=default.target"] {
        assert!(unit.contains(key), "{key}");
    }
}

#[test]
fn the_readme_config_example_is_a_valid_config() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = readme
        .find("link_timeout = \"10s\"")
        .expect("config example in README");
    let end = start + readme[start..].find("```").unwrap();
    let example = &readme[start..end];
    let config = Config::parse(example).unwrap_or_else(|e| panic!("{e}\n{example}"));
    let s = config.settings().unwrap();
    assert_eq!(s.heartbeat_timeout, std::time::Duration::from_secs(3));
    assert_eq!(s.handoff_scrollback_lines, 200);
    assert_eq!(config.metrics_addr().unwrap().unwrap().port(), 9464);
}
