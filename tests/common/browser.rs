//! A real headless Chromium (Debian's `chromium`) as a participant, driven over the
//! DevTools protocol (CDP) on loopback: open a page, evaluate JavaScript in it, take a
//! screenshot. Killed with its whole process group when dropped, even if the test
//! failed.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use super::wait_until;

/// One headless Chromium with one page, in a profile of its own.
pub struct Browser {
    child: Child,
    /// Its profile; removed with it.
    _profile: tempfile::TempDir,
    /// The DevTools port it chose.
    port: u16,
    /// The page's DevTools websocket, once looked up.
    page: std::sync::OnceLock<String>,
}

impl Browser {
    /// Chromium showing `url`. Fails the test if Chromium is not installed
    /// (`scripts/install-deps.sh` installs it) or does not come up within 20 s.
    pub fn open(url: &str) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let mut cmd = Command::new("chromium");
        // As the machine's probe runs it: no sandbox as root, nothing that reaches
        // for the network beyond the page.
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
            "--window-size=1280,800",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0);
        let child = cmd
            .spawn()
            .expect("chromium (Debian package chromium) is installed by scripts/install-deps.sh");
        let port_file = profile.path().join("DevToolsActivePort");
        let mut browser = Browser {
            child,
            _profile: profile,
            port: 0,
            page: std::sync::OnceLock::new(),
        };
        let up = wait_until(Duration::from_secs(20), || {
            std::fs::read_to_string(&port_file).is_ok_and(|t| t.lines().count() >= 2)
        });
        assert!(up.is_some(), "chromium did not come up");
        let text = std::fs::read_to_string(&port_file).unwrap();
        browser.port = text.lines().next().unwrap().trim().parse().unwrap();
        browser
    }

    /// The page's DevTools websocket, from `/json/list` (looked up once).
    fn page_socket(&self) -> String {
        self.page.get_or_init(|| self.find_page()).clone()
    }

    fn find_page(&self) -> String {
        let mut last = String::new();
        for _ in 0..250 {
            let got = http_get(self.port, "/json/list");
            let body = got.split_once("\r\n\r\n").map_or("", |(_, b)| b);
            let page = serde_json::from_str::<serde_json::Value>(body)
                .ok()
                .and_then(|t| {
                    t.as_array()?.iter().find(|t| t["type"] == "page")?["webSocketDebuggerUrl"]
                        .as_str()
                        .map(str::to_owned)
                });
            if let Some(page) = page {
                return page;
            }
            last = got;
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("no page in DevTools /json/list: {last}");
    }

    /// Call `method` with `params` on the page; its `result`.
    pub async fn call(&self, method: &str, params: serde_json::Value) -> serde_json::Value {
        self.try_call(method, params)
            .await
            .unwrap_or_else(|reply| panic!("{method}: {reply}"))
    }

    /// [`Browser::call`], with DevTools' error reply as the error.
    async fn try_call(
        &self,
        method: &str,
        params: serde_json::Value,
    ) -> Result<serde_json::Value, serde_json::Value> {
        let url = self.page_socket();
        let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
        let request = serde_json::json!({"id": 1, "method": method, "params": params});
        ws.send(Message::text(request.to_string())).await.unwrap();
        while let Some(msg) = ws.next().await {
            let Ok(Message::Text(text)) = msg else {
                continue;
            };
            let reply: serde_json::Value = serde_json::from_str(&text).unwrap();
            if reply["id"] == 1 {
                return match reply["error"].is_null() {
                    true => Ok(reply["result"].clone()),
                    false => Err(reply),
                };
            }
        }
        panic!("DevTools closed before answering {method}");
    }

    /// Evaluate `expression` in the page; its value.
    pub async fn eval(&self, expression: &str) -> serde_json::Value {
        let result = self
            .call(
                "Runtime.evaluate",
                serde_json::json!({"expression": expression, "returnByValue": true}),
            )
            .await;
        result["result"]["value"].clone()
    }

    /// Waits (20 s at most) until `expression` is truthy in the page; how long it took.
    /// The page has no event to wait on from outside, so this asks it every 20 ms.
    pub async fn until(&self, expression: &str) -> Duration {
        let t0 = std::time::Instant::now();
        while t0.elapsed() < Duration::from_secs(20) {
            let asked = self
                .try_call(
                    "Runtime.evaluate",
                    serde_json::json!({"expression": format!("!!({expression})"), "returnByValue": true}),
                )
                .await;
            match asked {
                Ok(v) if v["result"]["value"] == true => return t0.elapsed(),
                Ok(_) => {}
                // Asked while the page reloads (a clean-clone CI run once hit it right
                // after `location.reload()`): not true yet, ask again.
                Err(e)
                    if e.to_string()
                        .contains("Inspected target navigated or closed") => {}
                Err(e) => panic!("Runtime.evaluate: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let body = self
            .eval("document.body ? document.body.innerText : ''")
            .await;
        panic!("never true in the page: {expression}\npage: {body}");
    }

    /// Save a PNG of the page to `path`.
    pub async fn screenshot(&self, path: &std::path::Path) {
        use base64::Engine as _;
        let shot = self
            .call(
                "Page.captureScreenshot",
                serde_json::json!({"format": "png"}),
            )
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap())
            .unwrap();
        std::fs::write(path, png).unwrap();
    }

    /// Chromium's pid (its process group's id too).
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(self.pid()),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = self.child.wait();
    }
}

/// `GET path` from the DevTools HTTP endpoint on `port`: its head and its body (of
/// its Content-Length; DevTools keeps the connection open).
fn http_get(port: u16, path: &str) -> String {
    use std::io::{BufRead, BufReader, Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut reader = BufReader::new(s);
    let mut head = String::new();
    let mut length = 0;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        head.push_str(&line);
        if line == "\r\n" {
            break;
        }
    }
    let mut body = vec![0; length];
    let _ = reader.read_exact(&mut body);
    format!("{head}{}", String::from_utf8_lossy(&body))
}
