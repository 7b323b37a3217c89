//! A real browser as a tty-share participant: Debian's headless Chromium opens the
//! share's link, loads tty-share's page through termshare's front and streams the
//! terminal over its websocket. However many requests it makes, it is one participant,
//! as a `tty-share` client is, and a revoke cuts it off like any other.

mod common;

use std::time::{Duration, Instant};

use common::browser::Browser;
use common::*;
use termshare::actors::{AccessMode, BackendName, Principal, ShareRequest};
use termshare::config::Config;
use termshare::Termshare;

fn me() -> Principal {
    "human:tester".parse().unwrap()
}

/// Waits until the page has tty-share's terminal on it (xterm.js's element).
async fn page_shows_a_terminal(browser: &Browser) {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(20) {
        let ready = browser
            .eval("document.readyState === 'complete' && document.querySelector('.xterm') !== null")
            .await;
        if ready == true {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the page never showed tty-share's terminal");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_and_a_cli_client_count_as_one_participant_each() {
    let host = Tmux::new("S");
    policy(host.dir.path(), &["tty-share"], "1h");
    let config = Config::load(&host.config("policy = \"policy.toml\"")).unwrap();
    let ts = Termshare::start(&config).await.unwrap();
    let request = ShareRequest::new("S".parse().unwrap(), BackendName::TTY_SHARE, me())
        .access(AccessMode::ReadOnly)
        .ttl(Duration::from_secs(600));
    let info = ts.share(request).await.unwrap();
    let (id, link) = (info.share_id, info.links.link.clone());
    assert_eq!(badge_count(&ts, id), Some(0));

    // The browser: a page, its scripts, its websocket; one participant.
    let browser = tokio::task::block_in_place(|| Browser::open(&link));
    page_shows_a_terminal(&browser).await;
    count_becomes(&ts, id, 1).await;
    // And the `tty-share` client: the second.
    let client = tokio::task::block_in_place(|| Participant::join(&link));
    count_becomes(&ts, id, 2).await;
    assert_eq!(
        badge_count(&ts, id),
        Some(2),
        "the page's requests counted apart"
    );

    // The browser goes (its process group killed): one left, within a second.
    let t0 = Instant::now();
    drop(browser);
    count_becomes(&ts, id, 1).await;
    let left = t0.elapsed();
    assert!(left < Duration::from_secs(1), "{left:?}");

    // Another browser comes; the host types; then a revoke cuts both off.
    let browser = tokio::task::block_in_place(|| Browser::open(&link));
    page_shows_a_terminal(&browser).await;
    count_becomes(&ts, id, 2).await;
    host.type_line("echo BROWSER-$((6*7))-SEES");
    let shown = tokio::task::block_in_place(|| {
        wait_until(Duration::from_secs(5), || {
            client.screen().contains("BROWSER-42-SEES")
        })
    });
    assert!(shown.is_some(), "{}", client.screen());
    // The browser shows it too (xterm.js's DOM rows).
    let t0 = Instant::now();
    let mut text = serde_json::Value::Null;
    while t0.elapsed() < Duration::from_secs(5) {
        text = browser
            .eval("document.querySelector('.xterm-rows')?.innerText ?? ''")
            .await;
        if text.as_str().is_some_and(|t| t.contains("BROWSER-42-SEES")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        text.as_str().is_some_and(|t| t.contains("BROWSER-42-SEES")),
        "the page shows {text}"
    );
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser-participant.png");
    browser.screenshot(&shot).await;
    println!("the browser participant's view: {}", shot.display());
    let report = ts.revoke(id, me()).await.unwrap();
    assert_eq!(
        (report.participants_before, report.participants_after),
        (Some(2), Some(0)),
        "{report:?}"
    );
    ts.shutdown().await;
    let kinds: Vec<String> = host
        .audit()
        .into_iter()
        .filter(|e| e["kind"] == "share.joined" || e["kind"] == "share.left")
        .map(|e| e["kind"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        kinds,
        [
            "share.joined",
            "share.joined",
            "share.left",
            "share.joined",
            "share.left",
            "share.left"
        ]
    );
}
