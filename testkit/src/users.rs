//! Real local users for tests of who may do what: created with `useradd` in a group of
//! their own, removed with `userdel` when the guard drops (even when the test fails).
//! Needs root; the tests that use it are `#[ignore = "needs root"]`.

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
