//! Real local users for tests of who may do what: created with `useradd` in a group of
//! their own, removed with `userdel` when the guard drops (even when the test fails).
//! Needs root; the tests that use it are `#[ignore = "needs root"]`.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;

/// useradd and userdel lock /etc/passwd: one at a time within a test binary.
static ACCOUNTS: Mutex<()> = Mutex::new(());

pub struct TestUser {
    /// The short name the test uses (`alice`).
    pub short: String,
    /// The account's name (`ts-alice-3f9a`).
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

/// A group and its members, for the lifetime of a test.
pub struct TestUsers {
    pub group: String,
    pub gid: u32,
    pub users: Vec<TestUser>,
}

fn run(cmd: &str, args: &[&str]) {
    let status = Command::new(cmd)
        .args(args)
        .stdout(Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(status.success(), "{cmd} {args:?} failed");
}

fn id_of(flag: &str, name: &str) -> u32 {
    let out = Command::new("id").args([flag, name]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

impl TestUsers {
    /// Make a group and one user per short name, each a member of the group. The
    /// guard exists from the group on, so a failure partway removes what was made.
    pub fn new(shorts: &[&str]) -> TestUsers {
        super::require_root();
        let mut tag = [0u8; 3];
        getrandom::fill(&mut tag).unwrap();
        let tag: String = tag.iter().map(|b| format!("{b:02x}")).collect();
        let group = format!("tsg-{tag}");
        let mut made = {
            let _one_at_a_time = ACCOUNTS.lock().unwrap_or_else(|e| e.into_inner());
            run("groupadd", &[&group]);
            TestUsers {
                group: group.clone(),
                gid: 0,
                users: Vec::new(),
            }
        };
        let out = Command::new("getent")
            .args(["group", &group])
            .output()
            .unwrap();
        made.gid = String::from_utf8_lossy(&out.stdout)
            .split(':')
            .nth(2)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        for short in shorts {
            let name = format!("ts-{short}-{tag}");
            {
                let _one_at_a_time = ACCOUNTS.lock().unwrap_or_else(|e| e.into_inner());
                run(
                    "useradd",
                    &["-M", "-N", "-g", &group, "-s", "/bin/sh", &name],
                );
            }
            made.users.push(TestUser {
                short: short.to_string(),
                uid: id_of("-u", &name),
                gid: id_of("-g", &name),
                name,
            });
        }
        made
    }

    pub fn user(&self, short: &str) -> &TestUser {
        self.users
            .iter()
            .find(|u| u.short == short)
            .unwrap_or_else(|| panic!("no test user {short}"))
    }

    /// `[[identity]]` entries: each user may act as the principals given for it.
    pub fn identities(&self, map: &[(&str, &[&str])]) -> String {
        let mut out = String::new();
        for (short, principals) in map {
            let list: Vec<String> = principals.iter().map(|p| format!("\"{p}\"")).collect();
            out += &format!(
                "[[identity]]\nuser = \"{}\"\nprincipals = [{}]\n",
                self.user(short).name,
                list.join(", ")
            );
        }
        out
    }
}

impl Drop for TestUsers {
    fn drop(&mut self) {
        let _one_at_a_time = ACCOUNTS.lock().unwrap_or_else(|e| e.into_inner());
        for u in &self.users {
            // Whatever the test left running as the user goes first.
            let _ = Command::new("pkill")
                .args(["-KILL", "-u", &u.name])
                .status();
            let _ = Command::new("userdel")
                .arg(&u.name)
                .stderr(Stdio::null())
                .status();
        }
        let _ = Command::new("groupdel").arg(&self.group).status();
    }
}

/// Let other users traverse (not list) the directories above `path` that the test
/// made: a shared daemon's socket must be reachable.
pub fn open_path_to(path: &Path, below: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mut p = Some(path);
    while let Some(dir) = p {
        if dir.starts_with(below) && dir.is_dir() {
            let mode = std::fs::metadata(dir).unwrap().permissions().mode() & 0o7777;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode | 0o011)).unwrap();
        }
        p = dir.parent();
    }
}

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
        open_path_to(host.dir.path(), host.dir.path());
        let policy_file = host.dir.path().join("shared-policy.toml");
        std::fs::write(&policy_file, format!("{policy}\n{identities}")).unwrap();
        let daemon = super::Daemon::start_with_policy(
            host,
            &policy_file,
            &format!("[service]\nsocket_group = \"{}\"\n", users.group),
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
