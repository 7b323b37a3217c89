//! Who is watching a tty-share share: every participant's terminal connection goes
//! through termshare's link front, so the share's count, its badge, `share.joined` /
//! `share.left` and the revoke report say who is there, from the real thing.

mod common;

use std::time::{Duration, Instant};

use common::http::{http_status, raw_upgrade, tty_ws_path, upgrade_then_hang_up};
use common::*;
use termshare::actors::{AccessMode, BackendName, Principal, ShareId, ShareRequest};
use termshare::config::Config;
use termshare::Termshare;

fn me() -> Principal {
    "human:tester".parse().unwrap()
}

fn join(link: &str) -> Participant {
    let link = link.to_owned();
    Participant::join(&link)
}

/// The `share.joined` / `share.left` lines of the share, as (kind, participants).
fn participant_lines(host: &Tmux, id: ShareId) -> Vec<(String, u64)> {
    host.audit()
        .iter()
        .filter(|e| e["correlation_id"] == id.to_string())
        .filter(|e| e["kind"] == "share.joined" || e["kind"] == "share.left")
        .map(|e| {
            (
                e["kind"].as_str().unwrap().to_owned(),
                e["details"]["participants"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_count_follows_real_participants_and_the_revoke_report_says_who_was_cut_off() {
    let host = Tmux::new("S");
    policy(host.dir.path(), &["tty-share"], "1h");
    let config = Config::load(&host.config("policy = \"policy.toml\"")).unwrap();
    let ts = Termshare::start(&config).await.unwrap();
    let request = ShareRequest::new("S".parse().unwrap(), BackendName::TTY_SHARE, me())
        .access(AccessMode::ReadOnly)
        .ttl(Duration::from_secs(600));
    let info = ts.share(request).await.unwrap();
    let id = info.share_id;
    let link = info.links.link.clone();
    assert_eq!(badge_count(&ts, id), Some(0), "a counted share starts at 0");

    // Each from the moment the participant's program starts (or is killed).
    let mut took = Vec::new();
    let t0 = Instant::now();
    let p1 = tokio::task::block_in_place(|| join(&link));
    count_becomes(&ts, id, 1).await;
    took.push(t0.elapsed());
    let t0 = Instant::now();
    let p2 = tokio::task::block_in_place(|| join(&link));
    count_becomes(&ts, id, 2).await;
    took.push(t0.elapsed());
    drop(p1); // its tty-share client is killed with its tmux server
    took.push(count_becomes(&ts, id, 1).await);
    drop(p2);
    took.push(count_becomes(&ts, id, 0).await);
    println!("join, join, leave, leave, each to its badge count: {took:?}");
    assert!(took.iter().all(|t| *t < Duration::from_secs(1)), "{took:?}");

    // Two watch; a revoke cuts both off, and says so.
    let _a = tokio::task::block_in_place(|| join(&link));
    let _b = tokio::task::block_in_place(|| join(&link));
    count_becomes(&ts, id, 2).await;
    let report = ts.revoke(id, me()).await.unwrap();
    assert_eq!(
        (report.participants_before, report.participants_after),
        (Some(2), Some(0)),
        "{report:?}"
    );
    ts.shutdown().await;
    let lines = participant_lines(&host, id);
    let expected: Vec<(String, u64)> = [
        ("share.joined", 1),
        ("share.joined", 2),
        ("share.left", 1),
        ("share.left", 0),
        ("share.joined", 1),
        ("share.joined", 2),
        // The revoke cuts both off: each leave counts down.
        ("share.left", 1),
        ("share.left", 0),
    ]
    .iter()
    .map(|(k, n)| (k.to_string(), *n))
    .collect();
    assert_eq!(lines, expected);
    let ended = host
        .audit()
        .into_iter()
        .find(|e| e["kind"] == "share.revoked")
        .unwrap();
    assert_eq!(ended["details"]["participants_before"], 2, "{ended}");
    assert_eq!(ended["details"]["participants_after"], 0, "{ended}");
    // Where a participant came from is on the record only as a keyed fingerprint.
    let joined = host
        .audit()
        .into_iter()
        .find(|e| e["kind"] == "share.joined")
        .unwrap();
    assert!(joined["details"]["origin_fp"].is_string(), "{joined}");
    assert!(!joined.to_string().contains("127.0.0.1"), "{joined}");
}

/// The share's end event.
fn end_event(host: &Tmux, id: ShareId) -> serde_json::Value {
    host.audit()
        .into_iter()
        .find(|e| {
            e["correlation_id"] == id.to_string()
                && [
                    "share.expired",
                    "share.revoked",
                    "share.stopped",
                    "share.failed",
                ]
                .contains(&e["kind"].as_str().unwrap_or_default())
        })
        .expect("an end event")
}

async fn start(host: &Tmux) -> Termshare {
    policy(host.dir.path(), &["tty-share"], "1h");
    let config = Config::load(&host.config("policy = \"policy.toml\"")).unwrap();
    Termshare::start(&config).await.unwrap()
}

fn request(ttl: u64) -> ShareRequest {
    request_of("S", ttl)
}

fn request_of(terminal: &str, ttl: u64) -> ShareRequest {
    ShareRequest::new(terminal.parse().unwrap(), BackendName::TTY_SHARE, me())
        .access(AccessMode::ReadOnly)
        .ttl(Duration::from_secs(ttl))
        .grace(vec![])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_share_nobody_joins_ends_at_its_join_timeout_and_one_joined_lives_on() {
    let host = Tmux::new("S");
    // A second terminal: one share per terminal is the default limit.
    let shell = "env PS1='host$ ' bash --norc --noprofile -i";
    host.run(&[
        "new-session",
        "-d",
        "-s",
        "T",
        "-x",
        "120",
        "-y",
        "30",
        shell,
    ]);
    let ts = start(&host).await;
    let t0 = Instant::now();
    let lonely = ts
        .share(request(60).join_timeout(Duration::from_secs(3)))
        .await
        .unwrap();
    let pid = lonely.worker_pid.unwrap() as i32;
    let watched = ts
        .share(request_of("T", 6).join_timeout(Duration::from_secs(3)))
        .await
        .unwrap();
    let _p = tokio::task::block_in_place(|| join(&watched.links.link));

    let end = ts.ended(lonely.share_id).await.unwrap();
    let at = t0.elapsed();
    println!("the share nobody joined ended after {at:?}");
    assert_eq!(end.reason, termshare::actors::EndReason::Expired);
    assert!(
        at >= Duration::from_secs(3) && at < Duration::from_secs(4),
        "{at:?}"
    );
    assert!(!pid_alive(pid), "its worker {pid} is still there");
    assert_eq!(
        end_event(&host, lonely.share_id)["details"]["cause"],
        "join_timeout"
    );

    // The one somebody joined is still live, and ends at its TTL, not the timeout.
    assert!(ts
        .list()
        .await
        .unwrap()
        .iter()
        .any(|s| s.share_id == watched.share_id));
    let end = ts.ended(watched.share_id).await.unwrap();
    assert_eq!(end.reason, termshare::actors::EndReason::Expired);
    assert!(t0.elapsed() >= Duration::from_secs(6), "{:?}", t0.elapsed());
    assert!(end_event(&host, watched.share_id)["details"]["cause"].is_null());
    ts.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_participants_the_next_one_is_turned_away_and_audited() {
    let host = Tmux::new("S");
    let ts = start(&host).await;
    let info = ts.share(request(60).max_participants(1)).await.unwrap();
    let link = info.links.link.clone();
    let _first = tokio::task::block_in_place(|| join(&link));
    count_becomes(&ts, info.share_id, 1).await;
    let second = Participant::start(&["tty-share", &link]);
    // Turned away: its client exits, having never shown the host's screen.
    let gone =
        tokio::task::block_in_place(|| wait_until(Duration::from_secs(5), || !second.alive()));
    assert!(
        gone.is_some(),
        "the second participant is still there:\n{}",
        second.screen()
    );
    assert!(!second.screen().contains("host$"), "{}", second.screen());
    assert_eq!(badge_count(&ts, info.share_id), Some(1));
    refusals_reach(&host, 1);
    ts.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_cuts_off_whoever_came_in_through_the_old_link_and_keeps_the_share() {
    let host = Tmux::new("S");
    let ts = start(&host).await;
    let info = ts.share(request(600)).await.unwrap();
    let old = info.links.link.clone();
    let intruder = tokio::task::block_in_place(|| join(&old));
    count_becomes(&ts, info.share_id, 1).await;

    let t0 = Instant::now();
    let rotated = ts.rotate(info.share_id, me()).await.unwrap();
    let gone =
        tokio::task::block_in_place(|| wait_until(Duration::from_secs(5), || !intruder.alive()));
    println!(
        "the old participant was gone {:?} after the rotation",
        t0.elapsed()
    );
    assert!(gone.is_some(), "still connected:\n{}", intruder.screen());
    count_becomes(&ts, info.share_id, 0).await;
    // Same share, same expiry; a new link that works, an old one that does not.
    assert_eq!(rotated.share_id, info.share_id);
    assert_eq!(rotated.expires_at, info.expires_at);
    assert_ne!(rotated.links.link, old);
    assert!(http_status(&old).contains("404"), "{}", http_status(&old));
    assert!(http_status(&rotated.links.link).contains("200"));
    let _welcome = tokio::task::block_in_place(|| join(&rotated.links.link));
    count_becomes(&ts, info.share_id, 1).await;
    ts.shutdown().await;
    let record = host
        .audit()
        .into_iter()
        .find(|e| e["kind"] == "share.rotated")
        .expect("share.rotated");
    assert_ne!(
        record["details"]["old_link_fp"],
        record["details"]["link_fp"]
    );
    assert_eq!(record["details"]["participants_cut_off"], 1, "{record}");
}

/// Participants turned away, as the audit log counts them (a `share.join_refused`
/// line stands for `details.refused` of them).
fn refusals(host: &Tmux) -> u64 {
    host.audit()
        .iter()
        .filter(|e| e["kind"] == "share.join_refused")
        .map(|e| e["details"]["refused"].as_u64().unwrap_or(1))
        .sum()
}

/// Waits (2 s at most: a refusal within a second of the last report is in the next
/// one) until the log counts `n` refusals; fails the test otherwise.
fn refusals_reach(host: &Tmux, n: u64) {
    let reached =
        tokio::task::block_in_place(|| wait_until(Duration::from_secs(2), || refusals(host) >= n));
    assert!(
        reached.is_some() && refusals(host) == n,
        "{} refused, not {n}: {:?}",
        refusals(host),
        host.audit()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_on_a_disguised_path_is_counted_and_limited_like_any_other() {
    let host = Tmux::new("S");
    let ts = start(&host).await;
    let info = ts.share(request(60).max_participants(1)).await.unwrap();
    let link = info.links.link.clone();
    let _first = tokio::task::block_in_place(|| join(&link));
    count_becomes(&ts, info.share_id, 1).await;
    // `%77s/` may be `ws/` to a router that decodes paths (Debian's tty-share 2.4
    // answers it 404). Either way it gets nothing of the terminal: an upgrade at the
    // limit is turned away, and on the record.
    let got = tokio::task::block_in_place(|| raw_upgrade(&link, "%77s/"));
    let text = String::from_utf8_lossy(&got);
    if text.starts_with("HTTP/1.1 101") {
        let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        assert!(
            body.is_empty(),
            "the disguised websocket got data: {text:?}"
        );
        refusals_reach(&host, 1);
    } else {
        assert!(text.contains("404"), "{text:?}");
    }
    assert_eq!(badge_count(&ts, info.share_id), Some(1));
    // A real second websocket (the path tty-share hands out) is turned away and
    // recorded.
    let before = refusals(&host);
    let ws_path = tokio::task::block_in_place(|| tty_ws_path(&link));
    let got = tokio::task::block_in_place(|| raw_upgrade(&link, &ws_path));
    let text = String::from_utf8_lossy(&got);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    assert!(
        body.is_empty(),
        "a participant past the limit got data: {text:?}"
    );
    refusals_reach(&host, before + 1);
    ts.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_holder_reconnecting_in_a_loop_cannot_flood_the_audit_log() {
    let host = Tmux::new("S");
    let ts = start(&host).await;
    let info = ts.share(request(120)).await.unwrap();
    let link = info.links.link.clone();
    let ws_path = tokio::task::block_in_place(|| tty_ws_path(&link));
    // 200 terminal websockets, each hung up at once, as fast as 4 threads can (the
    // front lets one local user have 4 connections at once before they show the link).
    let t0 = Instant::now();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (link, ws_path) = (link.clone(), ws_path.clone());
            std::thread::spawn(move || {
                (0..50)
                    .filter(|_| {
                        upgrade_then_hang_up(&link, &ws_path)
                            .is_some_and(|status| status.starts_with("HTTP/1.1 101"))
                    })
                    .count()
            })
        })
        .collect();
    let upgraded: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(upgraded, 200, "every handshake was answered");
    let took = t0.elapsed();
    count_becomes(&ts, info.share_id, 0).await;
    let lines = |kind: &str| {
        host.audit()
            .iter()
            .filter(|e| e["kind"] == kind && e["correlation_id"] == info.share_id.to_string())
            .count() as u64
    };
    // Every attempt is accounted for: joined, or turned away and counted.
    let reached = tokio::task::block_in_place(|| {
        wait_until(Duration::from_secs(3), || {
            lines("share.joined") + refusals(&host) == 200
        })
    });
    let (joined, refused_lines) = (lines("share.joined"), lines("share.join_refused"));
    println!(
        "200 attempts in {took:?}: {joined} joined, {} refused in {refused_lines} lines",
        refusals(&host)
    );
    assert!(
        reached.is_some(),
        "{joined} joined + {} refused",
        refusals(&host)
    );
    // A burst of 16, then one per 2 s; refusals reported about once a second.
    let secs = took.as_secs() + 2;
    assert!(
        joined >= 16 && joined <= 16 + secs / 2 + 1,
        "{joined} joined in {took:?}"
    );
    assert!(
        refused_lines <= 2 * secs,
        "{refused_lines} refusal lines in {took:?}"
    );
    assert_eq!(lines("share.left"), joined);
    ts.shutdown().await;
}
