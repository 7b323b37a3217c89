//! Keystroke round trips as a tty-share participant makes them: over tty-share's
//! websocket, a key goes in and its echo comes back. Timed through termshare's link
//! front and straight to a plain tty-share, to say what the front costs.
//!
//! tty-share 2.4's websocket protocol (server/tty_protocol_rw.go): each text message
//! is `{"Type":"Write","Data":B}` where B is the base64 of `{"Data":D,"Size":N}` and D
//! the base64 of the bytes (Go encodes `[]byte` as base64 in JSON).

use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A participant's websocket to the session at `link` (`http://…/s/X/`).
pub struct Keyboard {
    ws: Ws,
    url: String,
}

fn write_message(bytes: &[u8]) -> Message {
    let inner = json!({"Data": B64.encode(bytes), "Size": bytes.len()}).to_string();
    Message::text(json!({"Type": "Write", "Data": B64.encode(inner)}).to_string())
}

/// The terminal output a server message carries (empty for other messages).
fn output_of(msg: &Message) -> Vec<u8> {
    let Message::Text(text) = msg else {
        return Vec::new();
    };
    let Ok(outer) = serde_json::from_str::<Value>(text) else {
        return Vec::new();
    };
    if outer["Type"] != "Write" {
        return Vec::new();
    }
    let inner = outer["Data"]
        .as_str()
        .and_then(|d| B64.decode(d).ok())
        .and_then(|d| serde_json::from_slice::<Value>(&d).ok());
    inner
        .and_then(|i| i["Data"].as_str().and_then(|d| B64.decode(d).ok()))
        .unwrap_or_default()
}

impl Keyboard {
    pub async fn connect(link: &str) -> Keyboard {
        let url = format!("{}ws", link.replacen("http://", "ws://", 1));
        let (ws, _) = tokio_tungstenite::connect_async(&url)
            .await
            .unwrap_or_else(|e| panic!("websocket {url}: {e}"));
        let mut k = Keyboard { ws, url };
        // Synchronize: a key whose echo proves the session is live and caught up.
        k.round_trip(b"z", b"z").await;
        k.round_trip(b"\x7f", b"").await;
        k
    }

    /// Send `key`, wait until output containing `echo` comes back (any output, for an
    /// empty `echo`: tmux may draw an erased character as `\b`, `ESC [D` or a cursor
    /// move); the time it took.
    pub async fn round_trip(&mut self, key: &[u8], echo: &[u8]) -> Duration {
        let t0 = Instant::now();
        self.ws.send(write_message(key)).await.expect("send");
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(10), self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("no echo of {key:?} within 10 s from {}", self.url))
                .expect("websocket closed")
                .expect("websocket error");
            let out = output_of(&msg);
            if !out.is_empty() && (echo.is_empty() || out.windows(echo.len()).any(|w| w == echo)) {
                return t0.elapsed();
            }
        }
    }

    /// Read away whatever output is pending (another participant's keys echo here
    /// too), until none has come for `quiet`.
    pub async fn drain(&mut self, quiet: Duration) {
        while let Ok(Some(Ok(_))) = tokio::time::timeout(quiet, self.ws.next()).await {}
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_through_the_double_base64() {
        let m = write_message(b"a");
        let back = output_of(&m);
        assert_eq!(back, b"a");
    }
}
