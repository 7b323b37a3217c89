//! The lane panel in a real browser: Debian's headless Chromium opens the address
//! `termshare panel` prints, sees one lane per tmux session, sees a share started from
//! the CLI appear, extends and revokes it from the page (through the daemon's own
//! admission and audit, as the panel's user), and reconnects by itself when the
//! daemon restarts. Without the secret there is nothing to see, and a cross-site
//! request changes nothing.

mod common;

use std::time::Duration;

use common::browser::Browser;
use common::users::*;
use common::*;

/// The session cookie (`name=value`) and the page token of a sign-in's answer.
fn signed_in(answer: &str) -> (String, String) {
    let cookie = answer
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .and_then(|c| c.split(';').next())
        .expect("a session cookie")
        .to_owned();
    let token = answer
        .split("name=\"termshare-page-token\" content=\"")
        .nth(1)
        .and_then(|t| t.split('"').next())
        .expect("a page token")
        .to_owned();
    assert!(!token.is_empty());
    (cookie, token)
}

/// A loopback port nobody uses now (the daemon must come back on the same one).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn panel_url(daemon: &Daemon) -> String {
    let (code, out, err) = daemon.run(&["panel"]);
    assert_eq!(code, 0, "{err}");
    out.trim().to_owned()
}

/// `METHOD path` on the panel at `base` with `headers` and `body`; (status, headers
/// and body as text).
fn http(base: &str, method: &str, path: &str, headers: &str, body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let host = base.strip_prefix("http://").unwrap().trim_end_matches('/');
    let mut s = std::net::TcpStream::connect(host).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // The panel's own Host, unless the test sends another.
    let own_host = match headers.starts_with("Host:") {
        true => String::new(),
        false => format!("Host: {host}\r\n"),
    };
    write!(
        s,
        "{method} {path} HTTP/1.1\r\n{own_host}Connection: close\r\n{headers}\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut got = String::new();
    let _ = s.read_to_string(&mut got);
    let status = got
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_panel_shows_live_badges_and_acts_as_its_signed_in_user() {
    let host = Tmux::new("S");
    host.run(&["new-session", "-d", "-s", "T", "-x", "80", "-y", "24"]);
    let port = free_port();
    let extra = format!("[panel]\nlisten = \"127.0.0.1:{port}\"\n");
    let daemon = Daemon::start(&host, &extra);
    let url = panel_url(&daemon);
    let base = format!("http://127.0.0.1:{port}");
    assert!(url.starts_with(&format!("{base}/?s=")), "{url}");

    // Signed in through the printed address: a lane per tmux session, live.
    let browser = tokio::task::block_in_place(|| Browser::open(&url));
    browser
        .until("document.querySelector('#link-state').textContent === 'live'")
        .await;
    browser
        .until(
            "[...document.querySelectorAll('.lane')].map(l => l.dataset.terminal).join() === 'S,T'",
        )
        .await;
    let address = browser.eval("location.href").await;
    assert_eq!(
        address,
        format!("{base}/"),
        "the secret left the address bar"
    );

    // A share started from the CLI appears on the page within a second.
    let share = daemon.json(&[
        "share",
        "S",
        "--backend",
        "tty-share",
        "--access",
        "read-only",
        "--ttl",
        "10m",
    ]);
    let id = share["share_id"].as_str().unwrap().to_owned();
    let pid = share["worker_pid"].as_i64().unwrap() as i32;
    let badge = format!("document.querySelector('[data-share=\"{id}\"]')");
    let took = browser.until(&badge).await;
    println!("the badge appeared {took:?} after the CLI had its answer");
    assert!(took < Duration::from_secs(1), "{took:?}");
    let shown = browser.eval(&format!("{badge}.innerText")).await;
    let shown = shown.as_str().unwrap_or_default().to_owned();
    assert!(
        shown.contains("tty-share") && shown.contains("read-only"),
        "{shown}"
    );
    assert!(!shown.contains("http://"), "a link is on the page: {shown}");

    // Extend from the page: the countdown moves (10 min → over 14 min).
    let countdown = format!("{badge}.querySelector('.countdown').textContent");
    assert!(browser
        .eval(&countdown)
        .await
        .as_str()
        .unwrap()
        .starts_with('9'));
    browser
        .eval(&format!("{badge}.querySelector('.extend').click()"))
        .await;
    browser
        .until(&format!("{countdown}.startsWith('14m')"))
        .await;

    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("panel.png");
    browser.screenshot(&shot).await;
    println!("the panel: {}", shot.display());

    // Revoke from the page: the worker is gone, the badge too, and the record says
    // who: the panel's user, proven when `termshare panel` asked for the address.
    browser
        .eval(&format!("{badge}.querySelector('.revoke').click()"))
        .await;
    browser.until(&format!("!{badge}")).await;
    let gone =
        tokio::task::block_in_place(|| wait_until(Duration::from_secs(5), || !pid_alive(pid)));
    assert!(gone.is_some(), "the worker {pid} outlived the revoke");
    let audit = host.audit();
    let revoked = audit
        .iter()
        .find(|e| e["kind"] == "share.revoked" && e["correlation_id"] == id.as_str())
        .expect("share.revoked");
    let me = format!(
        "human:{}",
        nix::unistd::User::from_uid(nix::unistd::geteuid())
            .unwrap()
            .unwrap()
            .name
    );
    assert_eq!(revoked["details"]["by"], me.as_str(), "{revoked}");
    assert_eq!(
        revoked["peer"]["uid"],
        nix::unistd::geteuid().as_raw(),
        "{revoked}"
    );
    let extended = audit
        .iter()
        .find(|e| e["kind"] == "share.extended")
        .expect("share.extended");
    assert_eq!(extended["details"]["by"], me.as_str());

    // Share from the page: lane T's form, through the same admission, as its user.
    let lane_t = "document.querySelector('.lane[data-terminal=\"T\"]')";
    browser
        .eval(&format!(
            "(() => {{ const f = {lane_t}.querySelector('form'); f.ttl.value = '3m'; \
             f.requestSubmit(); }})()"
        ))
        .await;
    browser
        .until(&format!("{lane_t}.querySelector('.badge.active')"))
        .await;
    let started = host
        .audit()
        .into_iter()
        .find(|e| e["kind"] == "share.started" && e["terminal"] == "T")
        .expect("share.started for T");
    assert_eq!(started["principal"], me.as_str(), "{started}");
    assert_eq!(
        started["peer"]["uid"],
        nix::unistd::geteuid().as_raw(),
        "{started}"
    );

    // A reload keeps the tab signed in (its token stays in the tab).
    browser
        .eval("window.beforeReload = true; setTimeout(() => location.reload(), 0)")
        .await;
    browser
        .until("!window.beforeReload && document.readyState === 'complete' && document.querySelector('#link-state').textContent === 'live' && document.querySelector('.lane[data-terminal=\"T\"] .badge')")
        .await;

    // The daemon restarts: the page says it is disconnected, then comes back by itself.
    daemon.stop();
    browser
        .until("document.querySelector('#link-state').textContent.startsWith('disconnected')")
        .await;
    let daemon = Daemon::start(&host, &extra);
    browser
        .until("document.querySelector('#link-state').textContent === 'live'")
        .await;
    browser
        .until("document.querySelectorAll('.lane').length === 2")
        .await;
    drop(browser);
    daemon.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_secret_there_is_nothing_and_a_cross_site_request_changes_nothing() {
    let host = Tmux::new("S");
    let daemon = Daemon::start(&host, "[panel]\nlisten = \"127.0.0.1:0\"\n");
    let url = panel_url(&daemon);
    let base = url.split("/?s=").next().unwrap().to_owned();
    let share = daemon.json(&["share", "S", "--backend", "tty-share", "--ttl", "10m"]);
    let id = share["share_id"].as_str().unwrap().to_owned();

    // A fresh browser at the address without its secret: 401, and no data.
    let stranger = tokio::task::block_in_place(|| Browser::open(&format!("{base}/")));
    stranger
        .until("document.body && document.body.innerText.includes('not signed in')")
        .await;
    let page = stranger.eval("document.body.innerText").await;
    assert!(!page.as_str().unwrap().contains(&id), "{page}");
    drop(stranger);
    for path in ["/", "/api/state", "/api/events", &format!("/api/link/{id}")] {
        let (status, got) = http(&base, "GET", path, "", "");
        assert_eq!(status, 401, "{path}: {got}");
        assert!(
            !got.contains(&id) && !got.contains("lanes"),
            "{path}: {got}"
        );
    }
    // Signing in: the cookie, and the page with its page token.
    let (status, got) = http(&base, "GET", &url[base.len()..], "", "");
    assert_eq!(status, 200, "{got}");
    let (cookie, token) = signed_in(&got);
    assert!(
        got.contains("HttpOnly") && got.contains("SameSite=Strict"),
        "{got}"
    );
    // A used secret is no good twice.
    let (status, _) = http(&base, "GET", &url[base.len()..], "", "");
    assert_eq!(status, 401);
    // The cookie alone (as a server on another loopback port could be sent it) opens
    // nothing: no view, no stream, no link.
    for path in ["/api/state", "/api/events", &format!("/api/link/{id}")] {
        let (status, got) = http(&base, "GET", path, &format!("Cookie: {cookie}\r\n"), "");
        assert_eq!(status, 401, "{path}: {got}");
        assert!(
            !got.contains(&id) && !got.contains("lanes"),
            "{path}: {got}"
        );
    }
    let with_token = format!("Cookie: {cookie}\r\nX-Termshare-Token: {token}\r\n");
    let (status, state) = http(&base, "GET", "/api/state", &with_token, "");
    assert_eq!(status, 200, "{state}");
    assert!(state.contains(&id), "{state}");
    // Signed in, but from another site, or without the token: refused, and the share
    // lives on.
    let body = format!("{{\"share_id\":\"{id}\"}}");
    let json = "Content-Type: application/json\r\n";
    for headers in [
        format!("Cookie: {cookie}\r\n{json}X-Termshare-Token: {token}\r\nOrigin: http://evil.example\r\n"),
        format!("Cookie: {cookie}\r\n{json}X-Termshare-Token: {token}\r\nSec-Fetch-Site: cross-site\r\n"),
        format!("Cookie: {cookie}\r\n{json}"),
        format!("Cookie: {cookie}\r\nContent-Type: text/plain\r\nX-Termshare-Token: {token}\r\n"),
        format!("{json}X-Termshare-Token: {token}\r\n"),
    ] {
        let (status, got) = http(&base, "POST", "/api/revoke", &headers, &body);
        assert!(status == 403 || status == 401, "{headers}: {got}");
    }
    // Another Host (DNS rebinding) is not the panel.
    let (status, _) = http(
        &base,
        "GET",
        "/api/state",
        &format!("Host: evil.example\r\nCookie: {cookie}\r\n"),
        "",
    );
    assert!(status == 421 || status == 400, "{status}");
    let (_, list, _) = daemon.run(&["list"]);
    assert!(list.contains(&id), "the share was revoked: {list}");
    // The same request from the page's own origin, with its token, is taken.
    let headers =
        format!("Cookie: {cookie}\r\n{json}X-Termshare-Token: {token}\r\nOrigin: {base}\r\n");
    let (status, got) = http(&base, "POST", "/api/revoke", &headers, &body);
    assert_eq!(status, 200, "{got}");
    daemon.stop();
}

#[test]
#[ignore = "needs root: adds users"]
fn an_approver_sees_the_step_waiting_for_them_and_approves_it_from_the_panel() {
    let host = Tmux::new("S");
    let users = TestUsers::new(&["alice", "owner", "lead"]);
    let identities = users.identities(&[
        ("alice", &["human:alice"]),
        ("owner", &["human:owner"]),
        ("lead", &["human:lead"]),
    ]);
    let policy = format!(
        "{}{}",
        allow_all(&["tty-share"], "1h"),
        r#"
[[handoff]]
id = "human-to-agent"
from = ["human:*"]
to = ["agent:*"]
terminals = ["*"]
approvers = ["human:owner", "human:lead"]
step_timeout = "2m"
agent_access = "read-only"
"#
    );
    let d = SharedDaemon::start_with(
        &host,
        &users,
        &policy,
        &identities,
        "[panel]\nlisten = \"127.0.0.1:0\"\n",
    );
    let handoff = d.json_as(
        users.user("alice"),
        &["handoff", "request", "S", "--to", "agent:claude"],
    )["handoff_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Text status shows the handoff too, with the approver it waits for.
    let (code, status, err) = d.run_as(users.user("owner"), &["status"]);
    assert_eq!(code, 0, "{err}");
    let row = status
        .lines()
        .find(|l| l.contains(&handoff))
        .unwrap_or_default();
    assert!(
        row.contains("pending") && row.contains("1 of 2") && row.ends_with("human:owner"),
        "{status}"
    );
    // owner asks for the panel: the page acts as owner, proven on the socket.
    let (code, url, err) = d.run_as(users.user("owner"), &["panel"]);
    assert_eq!(code, 0, "{err}");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let browser = Browser::open(url.trim());
        browser
            .until("document.body.innerText.includes('waiting for human:owner')")
            .await;
        let who = browser.eval("document.querySelector('#who').textContent").await;
        assert_eq!(who, "signed in as human:owner");
        browser
            .eval("[...document.querySelectorAll('.handoff button')].find(b => b.textContent === 'Approve').click()")
            .await;
        browser
            .until("document.body.innerText.includes('step 2 of 2, waiting for human:lead')")
            .await;
    });
    let approved = host
        .audit()
        .into_iter()
        .find(|e| e["kind"] == "handoff.approved")
        .expect("handoff.approved");
    assert_eq!(
        approved["details"]["handoff_id"],
        handoff.as_str(),
        "{approved}"
    );
    assert_eq!(approved["principal"], "human:owner", "{approved}");
    assert_eq!(
        approved["peer"]["uid"],
        users.user("owner").uid,
        "{approved}"
    );
    d.daemon.stop();
}

#[test]
#[ignore = "needs root: adds users"]
fn another_user_holding_connections_open_cannot_lock_the_operator_out() {
    use std::io::BufRead;
    use std::os::unix::process::CommandExt;
    let host = Tmux::new("S");
    let users = TestUsers::new(&["mallory"]);
    let daemon = Daemon::start(&host, "[panel]\nlisten = \"127.0.0.1:0\"\n");
    let url = panel_url(&daemon);
    let base = url.split("/?s=").next().unwrap().to_owned();
    let port = base.rsplit(':').next().unwrap().to_owned();
    // mallory opens 100 connections and holds them, sending nothing.
    let script = format!(
        "import socket, sys, time\n\
         held = []\n\
         for _ in range(100):\n\
         \x20   s = socket.create_connection(('127.0.0.1', {port}))\n\
         \x20   held.append(s)\n\
         time.sleep(0.5)\n\
         alive = 0\n\
         for s in held:\n\
         \x20   s.setblocking(False)\n\
         \x20   try:\n\
         \x20       alive += s.recv(1) != b''\n\
         \x20   except BlockingIOError:\n\
         \x20       alive += 1\n\
         \x20   except OSError:\n\
         \x20       pass\n\
         print(alive, flush=True)\n\
         time.sleep(30)\n"
    );
    let mallory = users.user("mallory");
    let mut child = std::process::Command::new("python3")
        .args(["-c", &script])
        .uid(mallory.uid)
        .gid(mallory.gid)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let alive: usize = line.trim().parse().unwrap();
    println!("mallory holds {alive} of 100 connections");
    assert_eq!(alive, 32, "one user's part is 32 connections");
    // The operator still gets in, signs in and reads the panel.
    let (status, got) = http(&base, "GET", &url[base.len()..], "", "");
    assert_eq!(status, 200, "{got}");
    let (cookie, token) = signed_in(&got);
    let headers = format!("Cookie: {cookie}\r\nX-Termshare-Token: {token}\r\n");
    let (status, got) = http(&base, "GET", "/api/state", &headers, "");
    assert_eq!(status, 200, "{got}");
    let _ = child.kill();
    let _ = child.wait();
    daemon.stop();
}

#[test]
fn panel_open_gives_the_browser_a_private_page_never_the_secret_on_a_command_line() {
    use std::os::unix::fs::PermissionsExt;
    let host = Tmux::new("S");
    let daemon = Daemon::start(&host, "[panel]\nlisten = \"127.0.0.1:0\"\n");
    // A stand-in xdg-open that writes down what it was given: to a side file first,
    // then renamed, so the file exists only once it is whole (`>` creates it empty
    // before printf writes, and a CI run read it in between).
    let bin = host.dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let argv = host.dir.path().join("xdg-open.argv");
    std::fs::write(
        bin.join("xdg-open"),
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$@\" > {0}.part && mv {0}.part {0}\n",
            argv.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(bin.join("xdg-open"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = daemon.config.to_str().unwrap().to_owned();
    let mut cli = Cli::spawn(&["--config", &config, "panel", "--open"], Some(&bin));
    let (status, out, err) = cli.finish();
    assert!(status.success(), "{err}");
    let url = out.trim();
    let secret = url.split("?s=").nth(1).unwrap();
    let opened = wait_until(Duration::from_secs(5), || argv.exists());
    assert!(opened.is_some(), "xdg-open was not run");
    let given = std::fs::read_to_string(&argv).unwrap();
    assert!(
        !given.contains(secret),
        "the secret was on a command line: {given}"
    );
    let page = std::path::PathBuf::from(given.trim());
    let mode = std::fs::metadata(&page).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{}", page.display());
    assert!(page.starts_with(host.runtime_dir()), "{}", page.display());
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.contains(&format!("url={url}\"")), "{html}");
    daemon.stop();
}
