//! A start cancelled at any step of the spawn path leaves no process, by pid and by
//! process group. Real tty-share (in its network namespace); each step is a fail point
//! that pauses there (`termshare_actors::faultpoints`), and the share is revoked while
//! it waits. Then a caller that gives up mid-start: never `share.started`, no process.
//! The only test in its binary: fail points are process-wide.

mod common;
use common::{alive, isolated_zygotes, pgid_of};
use std::time::Duration;

use termshare::actors::{AccessMode, BackendName, Principal, ShareRequest, ShareState};
use termshare_actors::faultpoints::paused_at;
use termshare_chaos::env::Env;
use termshare_chaos::Mode;

/// Each step, in the order a start passes them, and whether a process exists there.
const STEPS: [(&str, bool); 7] = [
    ("spawn.before_fork", false),
    // A zygote is taken (or forked) and not yet told what to run: no tty-share yet,
    // and the zygote's guard is the start's.
    ("spawn.exec", false),
    // The zygote has become tty-share; the start that asked for it may be gone
    // before the handover.
    ("spawn.handover", true),
    ("spawn.after_fork", true),
    ("tty_share.after_spawn", true),
    ("tty_share.after_url", true),
    // The link front is open and the link known (tty-share may not listen yet).
    ("tty_share.after_front", true),
];

const PAUSE_MS: u64 = 1000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_cancelled_at_every_step_of_the_spawn_path_leaves_no_process() {
    let scenario = fail::FailScenario::setup();
    let mut env = Env::new(Mode::TtyShare, 1).await;
    let terminal = env.terminals[0].clone();
    let owner: Principal = "human:alice".parse().unwrap();
    for (step, forked) in STEPS {
        let before = paused_at(step);
        fail::cfg(step, &format!("return({PAUSE_MS})")).unwrap();
        let request = ShareRequest {
            terminal: terminal.clone(),
            backend: BackendName::new("tty-share"),
            access: AccessMode::ReadWrite,
            caller: owner.clone().into(),
            ttl: Some(Duration::from_secs(60)),
            grace: Some(vec![]),
            join: Default::default(),
            record: false,
        };
        let svc = env.svc();
        let cancel = async {
            // Wait until the start is held at the step.
            while paused_at(step) == before {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            fail::remove(step);
            let seen: Vec<(u32, Option<i32>)> = env
                .processes()
                .into_iter()
                .map(|pid| (pid, pgid_of(pid)))
                .collect();
            // Listed once its terminal's check is back: with the terminal's size known
            // from the step before, the spawn starts beside the check, not after it.
            let listed_by = tokio::time::Instant::now() + Duration::from_millis(PAUSE_MS / 2);
            let starting = loop {
                let listed = svc.list().await.unwrap();
                if let Some(s) = listed.iter().find(|s| s.state == ShareState::Starting) {
                    break s.clone();
                }
                assert!(
                    tokio::time::Instant::now() < listed_by,
                    "{step}: the share is not listed as starting: {listed:?}"
                );
                tokio::time::sleep(Duration::from_millis(1)).await;
            };
            let revoked = svc.revoke(starting.share_id, owner.clone()).await;
            (seen, revoked)
        };
        let (started, (seen, revoked)) = tokio::join!(svc.share(request), cancel);
        assert!(
            started.is_err(),
            "{step}: the start went through: {started:?}"
        );
        assert!(revoked.is_ok(), "{step}: {revoked:?}");
        if forked {
            assert!(!seen.is_empty(), "{step}: no process at this step");
        } else {
            assert!(
                seen.is_empty(),
                "{step}: a process before the fork: {seen:?}"
            );
        }
        // Whatever was held at the step (a thread's sleep included) is over by now;
        // nothing started afterwards either. No event says "nothing happened": wait
        // out the pause.
        tokio::time::sleep(Duration::from_millis(PAUSE_MS + 500)).await;
        for (pid, pgid) in &seen {
            assert!(
                !alive(*pid),
                "{step}: pid {pid} outlived its cancelled start"
            );
            let pgid = pgid.expect("a process group");
            assert!(
                !termshare::process::group_alive(pgid),
                "{step}: group {pgid} outlived its cancelled start"
            );
        }
        assert!(env.processes().is_empty(), "{step}: {:?}", env.processes());
        // The zygote a cancelled start had taken is gone with it; only the pool's own
        // may wait. Counted once the pool's refill is done: before it, a leaked
        // zygote and a pool not yet refilled would count one too.
        env.zygotes_ready().await;
        let zygotes = isolated_zygotes();
        assert!(zygotes.len() <= 1, "{step}: zygotes left: {zygotes:?}");
    }

    // A caller that gives up while tty-share is starting (its link is on the way): the
    // start is stopped before it is announced. Nothing says `share.started`, and no
    // process is left.
    let step = "tty_share.after_url";
    let before = paused_at(step);
    fail::cfg(step, &format!("return({PAUSE_MS})")).unwrap();
    let request = ShareRequest {
        terminal: terminal.clone(),
        backend: BackendName::new("tty-share"),
        access: AccessMode::ReadWrite,
        caller: owner.clone().into(),
        ttl: Some(Duration::from_secs(60)),
        grace: Some(vec![]),
        join: Default::default(),
        record: false,
    };
    let svc = env.svc();
    let mut events = svc.subscribe();
    let gave_up = tokio::select! {
        r = svc.share(request) => panic!("the start finished while held: {r:?}"),
        () = async {
            while paused_at(step) == before {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        } => env.processes(),
    };
    fail::remove(step);
    assert!(!gave_up.is_empty(), "tty-share was not running yet");
    let id = loop {
        let e = events.recv().await.unwrap();
        if e.kind.as_str() == "share.requested" {
            break e.correlation_id;
        }
    };
    // The session finds its caller gone once the link is there, and ends the share.
    let end = loop {
        let e = events.recv().await.unwrap();
        if e.correlation_id == id && e.kind.is_terminal() {
            break e;
        }
    };
    assert_eq!(end.kind.as_str(), "share.failed", "{end:?}");
    let kinds: Vec<&str> = env
        .audit_events()
        .iter()
        .filter(|e| e.correlation_id == id)
        .map(|e| e.kind.as_str())
        .collect();
    assert!(!kinds.contains(&"share.started"), "{kinds:?}");
    let gone = tokio::time::timeout(Duration::from_secs(5), async {
        while gave_up.iter().any(|p| alive(*p)) || !env.processes().is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(gone.is_ok(), "left running: {:?}", env.processes());

    env.shutdown().await;
    assert_eq!(env.leftovers(), 0);
    scenario.teardown();
}
