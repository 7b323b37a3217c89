//! A participant: a program (usually `tty-share LINK`) in a tmux server of its own.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::pid_alive;

/// A participant program (`tty-share LINK`) in a tmux server of its own, big enough
/// that tty-share's "your window is smaller" screen never shows; run as the test's
/// user or, with [`Participant::start_as`], as another local user. Its pane stays
/// when the program exits (a participant turned away exits at once), so its pid and
/// last screen can still be read.
pub struct Participant {
    dir: tempfile::TempDir,
    socket: PathBuf,
    /// (uid, gid) to run its tmux as; `None`: the test's own.
    user: Option<(u32, u32)>,
    pub pid: i32,
}

impl Participant {
    pub fn start(argv: &[&str]) -> Self {
        Self::launch(None, argv)
    }

    pub fn start_as(user: &crate::users::TestUser, argv: &[&str]) -> Self {
        Self::launch(Some((user.uid, user.gid)), argv)
    }

    fn launch(user: Option<(u32, u32)>, argv: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap();
            crate::users::open_path_to(dir.path(), dir.path());
        }
        let conf = dir.path().join("tmux.conf");
        std::fs::write(&conf, "set -g remain-on-exit on\nset -g status off\n").unwrap();
        let mut p = Participant {
            socket: dir.path().join("p.sock"),
            dir,
            user,
            pid: 0,
        };
        let conf = conf.to_string_lossy().into_owned();
        let mut args = vec![
            "-f",
            &conf,
            "new-session",
            "-d",
            "-s",
            "p",
            "-x",
            "200",
            "-y",
            "60",
        ];
        args.extend_from_slice(argv);
        assert!(p.tmux(&args).status().unwrap().success());
        let shown = p
            .tmux(&["display-message", "-p", "-t", "=p:", "#{pane_pid}"])
            .output()
            .unwrap();
        p.pid = String::from_utf8_lossy(&shown.stdout)
            .trim()
            .parse()
            .unwrap_or_else(|_| {
                panic!(
                    "no participant pane: {}",
                    String::from_utf8_lossy(&shown.stderr)
                )
            });
        p
    }

    fn tmux(&self, args: &[&str]) -> Command {
        let mut c = Command::new("tmux");
        c.arg("-S").arg(&self.socket).args(args).env_remove("TMUX");
        if let Some((uid, gid)) = self.user {
            use std::os::unix::process::CommandExt;
            c.uid(uid)
                .gid(gid)
                .env_clear()
                .env("PATH", std::env::var_os("PATH").unwrap_or_default())
                .env("TERM", "xterm-256color")
                .env("HOME", self.dir.path());
        }
        c
    }

    pub fn screen(&self) -> String {
        let out = self
            .tmux(&["capture-pane", "-p", "-t", "=p:"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn alive(&self) -> bool {
        pid_alive(self.pid)
    }

    /// Type a line into the participant's program (its keystrokes).
    pub fn type_line(&self, text: &str) {
        let _ = self
            .tmux(&["send-keys", "-t", "=p:", text, "Enter"])
            .status();
    }
}

impl Drop for Participant {
    fn drop(&mut self) {
        let _ = self.tmux(&["kill-server"]).stderr(Stdio::null()).status();
    }
}

impl Participant {
    /// `tty-share LINK`, waited for until it shows the host's prompt (`host$`): a
    /// participant that never joins stops the test (or benchmark) here, loudly.
    pub fn join(link: &str) -> Participant {
        let p = Participant::start(&["tty-share", link]);
        let joined = crate::wait_until(Duration::from_secs(10), || {
            p.screen().contains("host$") && p.alive()
        });
        assert!(
            joined.is_some(),
            "the participant never joined {link}; its screen:\n{}",
            p.screen()
        );
        p
    }

    /// Milliseconds from `t0` until the participant's program is gone (polled every
    /// 0.5 ms).
    pub fn gone_after(&self, t0: Instant) -> f64 {
        while self.alive() && t0.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_micros(500));
        }
        t0.elapsed().as_secs_f64() * 1000.0
    }
}
