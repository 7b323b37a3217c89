//! The overlapped start with real tty-share: the worker is spawned while the terminal
//! is checked and the request recorded, so each of those failing must kill a real
//! process, by pid and process group, and announce nothing. Three cases: a terminal
//! that closed since its size was last seen, a request record that fails while
//! tty-share runs, and a start revoked while tty-share runs but before its link left.
//! The only test in its binary: fail points are process-wide.

mod common;
use common::{alive, pgid_of};
use std::time::Duration;

use termshare::actors::{
    AccessMode, BackendName, Principal, ShareError, ShareId, ShareRequest, ShareService,
    TerminalName,
};
use termshare_actors::faultpoints::paused_at;
use termshare_chaos::env::Env;
use termshare_chaos::Mode;

fn request(terminal: &TerminalName) -> ShareRequest {
    ShareRequest {
        terminal: terminal.clone(),
        backend: BackendName::new("tty-share"),
        access: AccessMode::ReadWrite,
        caller: owner().into(),
        ttl: Some(Duration::from_secs(60)),
        grace: Some(vec![]),
        join: Default::default(),
        record: false,
    }
}

fn owner() -> Principal {
    "human:alice".parse().unwrap()
}

/// Share `terminal` once and end it: the host then knows its size, and the next
/// start spawns its worker before the terminal's check answers.
async fn learn_size(svc: &ShareService, terminal: &TerminalName) {
    let info = svc.share(request(terminal)).await.expect("a first share");
    svc.revoke(info.share_id, owner()).await.unwrap();
}

/// The pids (and their groups) of the workers running now.
fn running(env: &Env) -> Vec<(u32, Option<i32>)> {
    env.processes()
        .into_iter()
        .map(|pid| (pid, pgid_of(pid)))
        .collect()
}

/// Every process in `seen` is gone, with its group, and nothing else runs.
/// Waits up to 2 s: a start held inside the backend (a 1 s fail point) keeps its
/// process until the held step resumes and finds the start gone.
fn assert_all_gone(env: &Env, seen: &[(u32, Option<i32>)], case: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while std::time::Instant::now() < deadline
        && (seen.iter().any(|(pid, _)| alive(*pid)) || !env.processes().is_empty())
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    for (pid, pgid) in seen {
        assert!(!alive(*pid), "{case}: pid {pid} outlived its failed start");
        let pgid = pgid.expect("a process group");
        assert!(
            !termshare::process::group_alive(pgid),
            "{case}: group {pgid} outlived its failed start"
        );
    }
    assert!(env.processes().is_empty(), "{case}: {:?}", env.processes());
}

/// TCP sockets this process listens on (a link front is one): the LISTEN rows of
/// /proc/net/tcp{,6} whose inode is one of our descriptors.
fn own_listeners() -> usize {
    let ours: std::collections::HashSet<String> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().into_owned();
            Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
        })
        .collect();
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap_or_default()
                .lines()
                .skip(1)
                .map(String::from)
                .collect::<Vec<_>>()
        })
        .filter(|row| {
            let fields: Vec<&str> = row.split_whitespace().collect();
            fields.get(3) == Some(&"0A") && fields.get(9).is_some_and(|i| ours.contains(*i))
        })
        .count()
}

/// The process listens on `expected` sockets again, within 2 s (a failed start's link
/// front closes as its start is dropped).
fn assert_listeners(expected: usize, case: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while own_listeners() != expected && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        own_listeners(),
        expected,
        "{case}: a link front outlived its start"
    );
}

/// Events of share `id` in the audit file, by kind.
fn kinds_of(env: &Env, id: ShareId) -> Vec<String> {
    env.audit_events()
        .iter()
        .filter(|e| e.correlation_id == id.0)
        .map(|e| e.kind.as_str().to_owned())
        .collect()
}

/// Start a share while `step` holds it (a fail point), and run `during` once it is
/// held: the processes running then are returned with the start's outcome.
async fn held_start<F, Fut>(
    env: &Env,
    terminal: &TerminalName,
    step: &'static str,
    during: F,
) -> (
    Result<termshare::actors::ShareInfo, ShareError>,
    ShareId,
    Vec<(u32, Option<i32>)>,
)
where
    F: FnOnce(ShareId) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let svc = env.svc();
    let before = paused_at(step);
    fail::cfg(step, "return(1000)").unwrap();
    let share = svc.share(request(terminal));
    tokio::pin!(share);
    let seen = tokio::select! {
        r = &mut share => panic!("{step}: the start finished before it was held: {r:?}"),
        () = async {
            while paused_at(step) == before {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        } => running(env),
    };
    fail::remove(step);
    // Listed once its terminal's check is back, which runs beside the step held here
    // and may not be back yet: wait for the badge (well within the 1 s hold).
    let mut badges = svc.badges();
    let starting = |b: &termshare::actors::Badges| {
        b.values()
            .flat_map(|badge| &badge.shares)
            .find(|s| s.state == termshare::actors::ShareState::Starting)
            .map(|s| s.share_id)
    };
    let id = tokio::time::timeout(
        Duration::from_millis(500),
        badges.wait_for(|b| starting(b).is_some()),
    )
    .await
    .unwrap_or_else(|_| panic!("{step}: the share is not shown as starting"))
    .map(|b| starting(&b))
    .expect("the badge board is gone")
    .expect("a starting share");
    during(id).await;
    (share.await, id, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_failure_of_an_overlapped_start_leaves_no_process_and_announces_no_link() {
    let scenario = fail::FailScenario::setup();
    let mut env = Env::new(Mode::TtyShare, 3).await;
    let terminals = env.terminals.clone();
    for t in &terminals {
        learn_size(env.svc(), t).await;
    }

    let listening = own_listeners();

    // 1. A terminal that closed since its size was seen: tty-share is started at the
    // old size while the check (held 300 ms) runs; the check says the terminal is
    // gone, and tty-share is killed.
    let (id, seen) = {
        env.close_terminal(&terminals[0]);
        let mut events = env.svc().subscribe();
        fail::cfg("terminal.check", "return(300)").unwrap();
        let share = env.svc().share(request(&terminals[0]));
        tokio::pin!(share);
        let seen = tokio::select! {
            r = &mut share => panic!("the start ended before tty-share ran: {r:?}"),
            seen = async {
                loop {
                    let seen = running(&env);
                    if !seen.is_empty() {
                        break seen;
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            } => seen,
        };
        fail::remove("terminal.check");
        let err = share.await.expect_err("a share of a closed terminal");
        assert!(matches!(err, ShareError::UnknownTerminal { .. }), "{err}");
        let id = loop {
            let e = events.recv().await.unwrap();
            if e.kind.as_str() == "share.requested" {
                break ShareId(e.correlation_id);
            }
        };
        (id, seen)
    };
    assert_all_gone(&env, &seen, "closed terminal");
    assert_listeners(listening, "closed terminal");
    assert_eq!(kinds_of(&env, id), ["share.requested", "share.failed"]);
    assert!(env.svc().list().await.unwrap().is_empty());

    // 2. The request's record fails (after 300 ms) while tty-share has printed its URL
    // and waits at the fail point: it is killed, and the caller hears why.
    fail::cfg("audit.append", "return(300)").unwrap();
    let (outcome, id, seen) =
        held_start(&env, &terminals[1], "tty_share.after_url", |_| async {}).await;
    fail::remove("audit.append");
    assert!(
        !seen.is_empty(),
        "tty-share was not running at the fail point"
    );
    let err = outcome.expect_err("a start whose request was not kept");
    assert!(matches!(err, ShareError::AuditUnavailable(_)), "{err}");
    assert_all_gone(&env, &seen, "failed record");
    assert_listeners(listening, "failed record");
    // The log took nothing while it failed; what it holds of this share says nothing
    // started.
    assert!(!kinds_of(&env, id).contains(&"share.started".to_owned()));

    // 3. Revoked while tty-share runs, before its link left termshare.
    let svc = env.svc();
    let (outcome, id, seen) = held_start(
        &env,
        &terminals[2],
        "tty_share.after_url",
        |id| async move {
            // The link front opens beside tty-share's start: it is there now. (Not
            // asked in case 2, whose record failure may end the start first.)
            assert_eq!(
                own_listeners(),
                listening + 1,
                "no link front at the held step"
            );
            svc.revoke(id, owner())
                .await
                .expect("the revoke of a starting share");
        },
    )
    .await;
    assert!(
        !seen.is_empty(),
        "tty-share was not running at the fail point"
    );
    assert!(outcome.is_err(), "a revoked start handed out its link");
    assert_all_gone(&env, &seen, "revoked start");
    assert_listeners(listening, "revoked start");
    assert_eq!(kinds_of(&env, id), ["share.requested", "share.revoked"]);

    env.shutdown().await;
    assert_eq!(env.leftovers(), 0);
    scenario.teardown();
}
