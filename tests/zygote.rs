//! Workers are zygotes told what to run (`src/process/zygote/`): what a zygote holds
//! while it waits, what the worker it becomes holds, and that a zygote that cannot
//! become its worker, or is no longer wanted, leaves nothing behind. Real processes,
//! checked by pid, process group, descriptors and environment in /proc.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use termshare::launch::CleanEnv;
use termshare::process::{ProcessSpawner, WorkerCommand};

fn clean_env() -> CleanEnv {
    CleanEnv::from_vars([
        ("PATH".into(), "/usr/bin:/bin".into()),
        ("TERM".into(), "xterm".into()),
    ])
}

fn comm(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_owned()
}

fn fds(pid: i32) -> BTreeSet<i32> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

/// This process's zygotes waiting in the pool (by `argv[0]`, set at their exec; their
/// `comm` becomes `ts-zygote` a moment later, when their constructor runs).
fn pooled() -> Vec<i32> {
    let me = std::process::id() as i32;
    descendants(me)
        .into_iter()
        .filter(|&p| {
            parent_of(p) == Some(me)
                && std::fs::read(format!("/proc/{p}/cmdline"))
                    .is_ok_and(|c| c.starts_with(b"termshare-zygote\0"))
        })
        .collect()
}

/// Once the spawner has settled (no refill pending), the zygotes in its pool.
async fn settled_pool(spawner: &ProcessSpawner, n: usize) -> Vec<i32> {
    spawner.settled().await;
    let found = pooled();
    assert_eq!(found.len(), n, "zygotes waiting: {found:?}");
    found
}

fn sleeper() -> WorkerCommand {
    WorkerCommand::new("/bin/sleep").arg("60")
}

// One test function: the pool is per spawner, but "this process's zygotes" is per
// process, and tests in one binary run in parallel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zygotes_hold_nothing_of_the_daemon_and_leave_nothing_behind() {
    // A descriptor this process leaves inheritable (no close-on-exec): neither a
    // zygote nor its worker may hold it.
    // SAFETY: dup of stderr; the copy is closed at the end.
    let leaked = unsafe { libc::dup(2) };
    assert!(leaked > 2);
    let spawner = ProcessSpawner::with_env(clean_env()).unwrap();

    // A worker: run by a zygote, so its own group, only stdio, only the clean
    // environment plus what the command adds.
    let first = spawner
        .spawn(&sleeper().env("EXTRA", "1"))
        .await
        .expect("a worker");
    let worker = first.pid as i32;
    assert_eq!(comm(worker), "sleep");
    assert_eq!(pgid_of(worker), Some(worker), "a group of its own");
    assert_eq!(parent_of(worker), Some(std::process::id() as i32));
    // Once its dynamic loader has closed the libraries it opened: only stdio.
    let only_stdio = tokio::task::block_in_place(|| {
        wait_until(Duration::from_secs(2), || {
            fds(worker) == BTreeSet::from([0, 1, 2])
        })
    });
    assert!(only_stdio.is_some(), "the worker holds {:?}", fds(worker));
    let mut env = environ_of(worker).unwrap();
    env.sort();
    assert_eq!(env, ["EXTRA=1", "PATH=/usr/bin:/bin", "TERM=xterm"]);

    // The next zygote waits: this binary run anew (not a fork of this process),
    // with no environment, holding only stdio and its command socket.
    let zygote = settled_pool(&spawner, 1).await[0];
    let cmdline = std::fs::read(format!("/proc/{zygote}/cmdline")).unwrap();
    assert!(cmdline.starts_with(b"termshare-zygote\0"), "{cmdline:?}");
    assert_eq!(environ_of(zygote), Some(vec![]));
    assert_eq!(pgid_of(zygote), Some(zygote), "its group is its worker's");
    assert_eq!(fds(zygote).len(), 4, "stdio and the command socket");
    assert!(
        !spawner.registry().live().contains(&zygote),
        "a zygote is not a worker yet"
    );

    assert!(!fds(zygote).contains(&leaked), "the zygote kept {leaked}");
    // Killed while it waited: never handed out; the start gets a new one.
    // SAFETY: a plain kill of our own child.
    unsafe { libc::kill(zygote, libc::SIGKILL) };
    let dead =
        tokio::task::block_in_place(|| wait_until(Duration::from_secs(2), || !pid_alive(zygote)));
    assert!(dead.is_some(), "SIGKILL did not end the zygote");
    let second = spawner.spawn(&sleeper()).await.expect("a worker");
    assert_ne!(second.pid as i32, zygote);
    assert_eq!(comm(second.pid as i32), "sleep");

    // An exec that fails: its errno, and nothing left of the zygote that tried.
    let before = settled_pool(&spawner, 1).await;
    let missing = spawner
        .spawn(&WorkerCommand::new("/nonexistent/program"))
        .await
        .err()
        .expect("no such program");
    assert_eq!(missing.raw_os_error(), Some(libc::ENOENT), "{missing}");
    let gone = tokio::task::block_in_place(|| {
        wait_until(Duration::from_secs(2), || {
            !before.iter().any(|&p| pid_alive(p))
        })
    });
    assert!(gone.is_some(), "the zygote that failed is still there");
    assert_eq!(spawner.registry().live().len(), 2, "the two sleepers only");

    // An isolated worker: its connector helper was forked from the small zygote, not
    // from this process, and holds only its socket.
    let (isolated, _connector) = spawner.spawn_isolated(&sleeper()).await.expect("isolated");
    let worker = isolated.pid as i32;
    let helper = descendants(worker)
        .into_iter()
        .find(|&p| comm(p) == "ts-connector")
        .expect("the connector helper");
    assert_eq!(parent_of(helper), Some(worker));
    assert_eq!(pgid_of(helper), Some(worker), "in its worker's group");
    assert_eq!(fds(helper), BTreeSet::from([0, 1, 2, 3]));
    assert_eq!(environ_of(helper), Some(vec![]));
    let ns = |pid: i32| std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap();
    assert_eq!(
        ns(helper),
        ns(worker),
        "the helper is in its worker's namespace"
    );
    assert_ne!(
        ns(worker),
        ns(std::process::id() as i32),
        "a namespace of its own"
    );

    // Closed: every worker and every zygote is killed, and none is made again, not
    // even the refill a start asked for just before.
    let zygotes = settled_pool(&spawner, 2).await;
    let last = spawner.spawn(&sleeper()).await.expect("a worker");
    let workers = [
        first.pid as i32,
        second.pid as i32,
        worker,
        helper,
        last.pid as i32,
    ];
    spawner.close();
    let all_gone = tokio::task::block_in_place(|| {
        wait_until(Duration::from_secs(2), || {
            !zygotes.iter().chain(&workers).any(|&p| pid_alive(p))
        })
    });
    assert!(all_gone.is_some(), "something outlived close()");
    drop((first, second, isolated, last));
    // The pending refill has been carried out (skipped) by now.
    spawner.settled().await;
    assert_eq!(
        pooled(),
        Vec::<i32>::new(),
        "a zygote was made after close()"
    );
    // A start after close() is refused, and leaves nothing: the registry close()
    // killed would not know a worker started now.
    let refused = spawner.spawn(&sleeper()).await.map(|p| p.pid);
    let err = refused.expect_err("a worker started after close()");
    assert!(err.to_string().contains("shutting down"), "{err}");
    assert_eq!(pooled(), Vec::<i32>::new(), "a zygote was made for it");
    // SAFETY: our own copy, made above.
    unsafe { libc::close(leaked) };
}
