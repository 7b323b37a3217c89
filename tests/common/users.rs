//! termshare run as another local user, and a daemon that a group of test users shares
//! (the users themselves come from the test kit).

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

pub use termshare_testkit::users::*;

/// Run the termshare CLI as `user`: (exit code, stdout, stderr).
pub fn termshare_as(user: &TestUser, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_termshare"))
        .args(args)
        // std drops supplementary groups when it sets the uid as root: the user keeps
        // its primary group, the test group.
        .uid(user.uid)
        .gid(user.gid)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", "/nonexistent")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A daemon (run by root, the operator) that the test users reach through
/// `[service] socket_group`, and the client config they use to trust it.
pub struct SharedDaemon {
    pub daemon: super::Daemon,
    pub client_config: std::path::PathBuf,
}

impl SharedDaemon {
    /// `policy` plus the users' `[[identity]]` entries.
    pub fn start(host: &super::Tmux, users: &TestUsers, policy: &str, identities: &str) -> Self {
        Self::start_with(host, users, policy, identities, "")
    }

    /// The same, with `extra` config (before its `[service]` section).
    pub fn start_with(
        host: &super::Tmux,
        users: &TestUsers,
        policy: &str,
        identities: &str,
        extra: &str,
    ) -> Self {
        open_path_to(host.dir.path(), host.dir.path());
        let policy_file = host.dir.path().join("shared-policy.toml");
        std::fs::write(&policy_file, format!("{policy}\n{identities}")).unwrap();
        let daemon = super::Daemon::start_with_policy(
            host,
            &policy_file,
            &format!("{extra}\n[service]\nsocket_group = \"{}\"\n", users.group),
        );
        let client_config = host.dir.path().join("client.toml");
        std::fs::write(&client_config, "[service]\ndaemon_user = \"root\"\n").unwrap();
        SharedDaemon {
            daemon,
            client_config,
        }
    }

    /// The CLI as `user`, against this daemon: (exit code, stdout, stderr).
    pub fn run_as(&self, user: &TestUser, args: &[&str]) -> (i32, String, String) {
        let mut full = vec![
            "--config",
            self.client_config.to_str().unwrap(),
            "--socket",
            self.daemon.socket.to_str().unwrap(),
        ];
        full.extend_from_slice(args);
        termshare_as(user, &full)
    }

    /// The first JSON line `args --json` prints as `user` (which must succeed).
    pub fn json_as(&self, user: &TestUser, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.push("--json");
        let (code, out, err) = self.run_as(user, &a);
        assert_eq!(code, 0, "{} {args:?}: {err}", user.short);
        serde_json::from_str(out.lines().next().unwrap_or("null")).unwrap()
    }
}
