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
        };
        let up = wait_until(Duration::from_secs(20), || {
            std::fs::read_to_string(&port_file).is_ok_and(|t| t.lines().count() >= 2)
        });
        assert!(up.is_some(), "chromium did not come up");
        let text = std::fs::read_to_string(&port_file).unwrap();
        browser.port = text.lines().next().unwrap().trim().parse().unwrap();
        browser
    }

    /// The page's DevTools websocket, from `/json/list`.
    fn page_socket(&self) -> String {
        let got = http_get(self.port, "/json/list");
        let body = got.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        let targets: serde_json::Value = serde_json::from_str(body)
            .unwrap_or_else(|e| panic!("DevTools /json/list: {e}: {got}"));
        targets
            .as_array()
            .and_then(|t| t.iter().find(|t| t["type"] == "page"))
            .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            .unwrap_or_else(|| panic!("no page in {targets}"))
            .to_owned()
    }

    /// Call `method` with `params` on the page; its `result`.
    pub async fn call(&self, method: &str, params: serde_json::Value) -> serde_json::Value {
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
                assert!(reply["error"].is_null(), "{method}: {reply}");
                return reply["result"].clone();
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

/// `GET path` from the DevTools HTTP endpoint on `port`; the whole answer.
fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut got = String::new();
    let _ = s.read_to_string(&mut got);
    got
}
