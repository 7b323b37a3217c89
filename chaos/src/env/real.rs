//! The real world: tmux terminals, real tty-share workers behind the faulty-backend
//! wrapper, the durable audit file.

use super::*;

pub(super) async fn start(parts: Parts) -> Env {
    let Parts {
        mode,
        dir,
        names,
        plan,
        tmux_socket,
        audit_path,
        policy,
    } = parts;
    let shell = "env PS1='host$ ' sh";
    for (i, t) in names.iter().enumerate() {
        let mut c = Command::new("tmux");
        c.arg("-S").arg(&tmux_socket);
        if i == 0 {
            c.args(["-f", "/dev/null"]);
        }
        let ok = c
            .args([
                "new-session",
                "-d",
                "-s",
                t.as_str(),
                "-x",
                "100",
                "-y",
                "30",
                shell,
            ])
            .env_remove("TMUX")
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "tmux new-session {t} failed");
    }
    let config = Config::parse(&format!(
            "link_timeout = \"1500ms\"\n[ttl]\ndefault = \"30s\"\ngrace = [\"1s\"]\n\
             [revoke]\ngrace = \"300ms\"\n[heartbeat]\ninterval = \"50ms\"\ntimeout = \"1s\"\n\
             [terminal]\ntmux_socket = \"{}\"\n[audit]\npath = \"{}\"\n[limits]\nper_terminal = 1\n",
            tmux_socket.display(),
            audit_path.display()
        ))
        .expect("config");
    let settings = config.settings().expect("settings");
    let crash: Crash = Arc::new(|_, pid| {
        if let Some(pid) = pid {
            unsafe {
                libc::kill(-(pid as i32), libc::SIGKILL);
            }
        }
    });
    let wrap_plan = plan.clone();
    let ts = Termshare::builder(&config)
        .policy(policy)
        .wrap_backends(move |spawner, backends| {
            let real: Arc<dyn Backend> = backends
                .into_iter()
                .find(|b| b.name().as_str() == "tty-share")
                .expect("tty-share backend");
            let garbage = TtyShareBackend::loopback(spawner.clone())
                .with_program(chaos_bin("garbage-backend"));
            let silent = TtyShareBackend::loopback(spawner.clone())
                .with_program(chaos_bin("silent-backend"));
            vec![Arc::new(FaultyBackend {
                inner: real,
                garbage: Some(Arc::new(garbage)),
                silent: Some(Arc::new(silent)),
                plan: wrap_plan,
                crash,
            })]
        })
        .start()
        .await
        .expect("termshare");
    Env {
        mode,
        service: Some(Service::Real(ts)),
        terminals: names,
        plan,
        settings,
        world: None,
        fake_host: None,
        fake_audit: None,
        tmux_socket,
        audit_path,
        _dir: dir,
    }
}
