//! termshare as a supervised subsystem of a runtime: linked under the runtime's own
//! ractor supervisor, a share that expires (its owner hears `EndReason::Expired` from
//! `ended()`), then the runtime's actor is *killed* (not stopped) with a share live. It
//! checks, and exits non-zero if any fails, that within a second of the kill the
//! worker process is gone (by pid), no termshare actor is alive, and no spawner
//! thread is left.
//!
//! Run it with `cargo run --example linked` (needs tmux and tty-share). It makes a tmux
//! server of its own, so your tmux is never touched; `scripts/test.sh` runs it.

use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, ActorStatus, RpcReplyPort, SupervisionEvent};
use termshare::actors::{AccessMode, BackendName, EndReason, Principal, ShareEnd, ShareRequest};
use termshare::config::Config;
use termshare::policy::Policy;
use termshare::Termshare;

/// The runtime's own supervisor: it owns termshare (in its state) and hears its
/// supervision events.
struct Runtime;

enum RuntimeMsg {
    /// Share `terminal` for `ttl`; answers when the link is there.
    Share(
        Duration,
        RpcReplyPort<Result<(termshare::actors::ShareId, u32), String>>,
    ),
    /// Wait for the share to end; answers with how.
    Ended(
        termshare::actors::ShareId,
        RpcReplyPort<Result<ShareEnd, String>>,
    ),
    /// Every termshare actor alive now.
    Actors(RpcReplyPort<Vec<ractor::ActorCell>>),
}

impl Actor for Runtime {
    type Msg = RuntimeMsg;
    type State = Termshare;
    type Arguments = (Config, Policy);

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        (config, policy): (Config, Policy),
    ) -> Result<Termshare, ActorProcessingErr> {
        Ok(Termshare::builder(&config)
            .policy(policy)
            .linked(myself.get_cell())
            .start()
            .await?)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        ts: &mut Termshare,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            RuntimeMsg::Share(ttl, reply) => {
                let me: Principal = "human:runtime".parse()?;
                let request = ShareRequest::new("work".parse()?, BackendName::TTY_SHARE, me)
                    .access(AccessMode::ReadOnly)
                    .ttl(ttl);
                let result = ts
                    .share(request)
                    .await
                    .map(|info| (info.share_id, info.worker_pid.unwrap_or(0)))
                    .map_err(|e| e.to_string());
                let _ = reply.send(result);
            }
            RuntimeMsg::Ended(id, reply) => {
                // Waited for off the mailbox: the runtime keeps serving meanwhile.
                let ended = ts.ended(id);
                tokio::spawn(async move {
                    let _ = reply.send(ended.await.map_err(|e| e.to_string()));
                });
            }
            RuntimeMsg::Actors(reply) => {
                let _ = reply.send(ts.actors());
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        _ts: &mut Termshare,
    ) -> Result<(), ActorProcessingErr> {
        // A termshare failure is the runtime's to handle: here, it is only reported.
        if let SupervisionEvent::ActorFailed(cell, err) = event {
            eprintln!("runtime: termshare actor {:?} failed: {err}", cell.get_id());
        }
        Ok(())
    }
}

fn pid_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(')')
            .is_some_and(|(_, r)| !r.trim_start().starts_with('Z'))
    })
}

/// Threads of this process named like termshare's spawner.
fn spawner_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm"))
                // The kernel keeps 15 bytes of a thread's name.
                .is_ok_and(|c| "termshare-spawner".starts_with(c.trim()) && c.trim().len() >= 15)
        })
        .count()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let tmux_socket = dir.path().join("tmux.sock");
    let ok = std::process::Command::new("tmux")
        .arg("-S")
        .arg(&tmux_socket)
        .args(["-f", "/dev/null", "new-session", "-d", "-s", "work"])
        .env_remove("TMUX")
        .status()?
        .success();
    assert!(ok, "could not start tmux");
    let config = Config::parse(&format!(
        "[terminal]\ntmux_socket = \"{}\"\n[audit]\npath = \"{}\"\n[service]\nruntime_dir = \"{}\"\n",
        tmux_socket.display(),
        dir.path().join("audit.jsonl").display(),
        dir.path().join("run").display()
    ))?;
    let policy = Policy::builder()
        .allow(
            "runtime",
            &["human:*"],
            &["work"],
            &[BackendName::TTY_SHARE],
        )
        .build()?;

    let (runtime, runtime_task) = Actor::spawn(None, Runtime, (config, policy)).await?;

    // A share that expires: its owner hears how it ended.
    let (id, _) = ractor::call!(runtime, RuntimeMsg::Share, Duration::from_secs(2))??;
    let how = ractor::call!(runtime, RuntimeMsg::Ended, id)??;
    println!(
        "share {id} ended: {} (worker stopped in {:?})",
        how.reason,
        how.report.as_ref().map(|r| r.elapsed)
    );
    assert_eq!(how.reason, EndReason::Expired);

    // A live share, then the runtime's actor is killed.
    let (id, pid) = ractor::call!(runtime, RuntimeMsg::Share, Duration::from_secs(600))??;
    assert!(pid != 0 && pid_alive(pid), "no worker for share {id}");
    let actors = ractor::call!(runtime, RuntimeMsg::Actors)?;
    println!(
        "share {id} served by pid {pid}; {} termshare actors",
        actors.len()
    );
    assert!(spawner_threads() > 0);
    let killed = Instant::now();
    runtime.kill();
    let _ = runtime_task.await;

    let within = Duration::from_secs(1);
    while killed.elapsed() < within
        && (pid_alive(pid)
            || actors
                .iter()
                .any(|a| a.get_status() != ActorStatus::Stopped)
            || spawner_threads() > 0)
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let alive: Vec<_> = actors
        .iter()
        .filter(|a| a.get_status() != ActorStatus::Stopped)
        .map(|a| a.get_id())
        .collect();
    println!(
        "{:?} after the kill: worker alive {}, actors alive {}, spawner threads {}",
        killed.elapsed(),
        pid_alive(pid),
        alive.len(),
        spawner_threads()
    );
    assert!(!pid_alive(pid), "worker {pid} outlived the killed runtime");
    assert!(
        alive.is_empty(),
        "termshare actors outlived the runtime: {alive:?}"
    );
    assert_eq!(spawner_threads(), 0, "a spawner thread is left");
    let _ = std::process::Command::new("tmux")
        .arg("-S")
        .arg(&tmux_socket)
        .arg("kill-server")
        .status();
    Ok(())
}
