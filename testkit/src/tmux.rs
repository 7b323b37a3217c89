//! The host: a tmux server of the test's own (never the user's), and the termshare
//! files beside it (config, audit log, sockets).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::wait_until;

/// A tmux server of the test's own (never the user's), with one session.
pub struct Tmux {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub session: String,
}

impl Tmux {
    pub fn new(session: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("tmux.sock");
        let t = Tmux {
            dir,
            socket,
            session: session.to_string(),
        };
        // A shell with a known prompt, so tests can wait for it instead of sleeping.
        let shell = "env PS1='host$ ' bash --norc --noprofile -i";
        let ok = t
            .cmd(&[
                "-f",
                "/dev/null",
                "new-session",
                "-d",
                "-s",
                session,
                "-x",
                "120",
                "-y",
                "30",
                shell,
            ])
            .status()
            .unwrap()
            .success();
        assert!(ok, "tmux new-session failed");
        t.run(&["set-option", "-g", "status", "off"]);
        let ready = wait_until(Duration::from_secs(10), || t.screen().contains("host$"));
        assert!(ready.is_some(), "the host shell never showed its prompt");
        t
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("tmux");
        c.arg("-S").arg(&self.socket).args(args).env_remove("TMUX");
        c
    }

    pub fn run(&self, args: &[&str]) -> String {
        let out = self.cmd(args).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn alive(&self) -> bool {
        self.cmd(&["has-session", "-t", &format!("={}", self.session)])
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    pub fn type_line(&self, text: &str) {
        self.run(&[
            "send-keys",
            "-t",
            &format!("={}:", self.session),
            "C-u",
            text,
            "Enter",
        ]);
    }

    pub fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", &format!("={}:", self.session)])
    }

    /// A config file that points termshare at this server, with an audit file, a
    /// control socket and a runtime directory of the test's own.
    pub fn config(&self, extra: &str) -> PathBuf {
        let path = self.dir.path().join("config.toml");
        // A private control socket: never a daemon of the user's or another test's.
        let service = format!(
            "socket = \"{}\"\nruntime_dir = \"{}\"\n",
            self.daemon_socket().display(),
            self.runtime_dir().display()
        );
        let extra = match extra.find("[service]\n") {
            Some(i) => {
                let at = i + "[service]\n".len();
                format!("{}{service}{}", &extra[..at], &extra[at..])
            }
            None => format!("{extra}\n[service]\n{service}"),
        };
        std::fs::write(
            &path,
            format!(
                "{extra}\n[terminal]\ntmux_socket = \"{}\"\n[audit]\npath = \"{}\"\n",
                self.socket.display(),
                self.audit_path().display(),
            ),
        )
        .unwrap();
        path
    }

    /// Where termshare keeps its instance directories (tmate's scratch, …).
    pub fn runtime_dir(&self) -> PathBuf {
        self.dir.path().join("rt")
    }

    pub fn daemon_socket(&self) -> PathBuf {
        self.dir.path().join("run").join("termshare.sock")
    }

    pub fn audit_path(&self) -> PathBuf {
        self.dir.path().join("audit.jsonl")
    }

    /// The share and handoff events of the audit log, in order (without the service's
    /// own `service.started` / `service.stopped`, which frame every run).
    pub fn audit(&self) -> Vec<serde_json::Value> {
        self.audit_all()
            .into_iter()
            .filter(|e| !e["kind"].as_str().unwrap_or("").starts_with("service."))
            .collect()
    }

    /// Every line of the audit log, in order.
    pub fn audit_all(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.audit_path())
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd(&["kill-server"]).stderr(Stdio::null()).status();
    }
}
