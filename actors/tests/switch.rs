//! Switches (and rotations by a new session) long after a share started, under
//! tokio's paused clock: the new worker gets its own link timeout, not what was left of
//! the share's start.

mod common;

use std::time::Duration;

use common::*;
use termshare_actors::{BackendName, Settings};

#[tokio::test(start_paused = true)]
async fn a_switch_an_hour_after_the_start_gets_its_own_link_timeout() {
    let h = harness(allow(), Settings::default()).await;
    let mut r = req("dev");
    r.ttl = Some(Duration::from_secs(7200));
    let info = h.svc.share(r).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3600)).await;
    // A relay that takes 3 s to answer (within the 10 s link timeout).
    *h.world.link_delay.lock() = Some(Duration::from_secs(3));
    let switched = h
        .svc
        .switch(info.share_id, BackendName::new("fake-b"), p("human:alice"))
        .await;
    let switched = switched.expect("the switch had no time left for its link");
    assert_eq!(switched.backend, BackendName::new("fake-b"));
    h.svc.shutdown().await;
}
