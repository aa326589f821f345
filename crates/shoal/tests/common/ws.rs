//! A WebSocket tracker client for tests: JSON frames as the `bittorrent-tracker` client
//! writes them, 20-byte ids as latin1 strings.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::{self, Message, WebSocket, client::IntoClientRequest};

/// Twenty bytes as the protocol writes them: one code point per byte.
pub fn latin1(b: &[u8; 20]) -> String {
    b.iter().map(|&c| char::from(c)).collect()
}

pub fn id(n: u8) -> [u8; 20] {
    let mut b = *b"-WW0100-000000000000";
    b[19] = n;
    b
}

pub struct WsClient<S: Read + Write> {
    pub ws: WebSocket<S>,
}

/// Opens `ws://addr{path}` with extra request headers; the handshake's error if refused.
pub fn ws_open(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<WsClient<TcpStream>, tungstenite::Error> {
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    ws_over(tcp, addr, path, headers)
}

pub fn ws_over<S: Read + Write>(
    stream: S,
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<WsClient<S>, tungstenite::Error> {
    let mut req = format!("ws://{addr}{path}").into_client_request().unwrap();
    for (k, v) in headers {
        let name = tungstenite::http::HeaderName::from_bytes(k.as_bytes()).unwrap();
        req.headers_mut()
            .insert(name, tungstenite::http::HeaderValue::from_str(v).unwrap());
    }
    match tungstenite::client(req, stream) {
        Ok((ws, _)) => Ok(WsClient { ws }),
        Err(tungstenite::HandshakeError::Failure(e)) => Err(e),
        Err(tungstenite::HandshakeError::Interrupted(_)) => panic!("blocking handshake"),
    }
}

pub fn ws_connect(addr: SocketAddr) -> WsClient<TcpStream> {
    ws_open(addr, "/announce", &[]).expect("upgrade")
}

impl<S: Read + Write> WsClient<S> {
    pub fn send(&mut self, v: &Value) {
        self.ws.send(Message::text(v.to_string())).unwrap();
    }

    pub fn send_text(&mut self, t: &str) -> Result<(), tungstenite::Error> {
        self.ws.send(Message::text(t.to_string()))
    }

    /// The next text frame, as JSON; None if the connection closed or nothing came.
    pub fn try_recv(&mut self) -> Option<Value> {
        loop {
            match self.ws.read() {
                Ok(Message::Text(t)) => return Some(serde_json::from_str(t.as_str()).unwrap()),
                Ok(Message::Close(_)) | Err(_) => return None,
                Ok(_) => continue,
            }
        }
    }

    pub fn recv(&mut self) -> Value {
        self.try_recv().expect("a frame from the tracker")
    }

    /// Whether the tracker closed the connection within `wait` (frames before are dropped).
    pub fn closed_within(&mut self, wait: Duration) -> bool {
        let end = Instant::now() + wait;
        while Instant::now() < end {
            match self.ws.read() {
                Ok(Message::Close(_)) => return true,
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return true,
                Ok(_) => {}
            }
        }
        false
    }

    pub fn announce(&mut self, h: &[u8; 20], peer: &[u8; 20], extra: Value) -> Value {
        let mut v = json!({
            "action": "announce", "info_hash": latin1(h), "peer_id": latin1(peer),
            "uploaded": 0, "downloaded": 0,
        });
        v.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        self.send(&v);
        v
    }

    pub fn scrape(&mut self, hashes: &[[u8; 20]]) -> Value {
        let list: Vec<String> = hashes.iter().map(latin1).collect();
        self.send(&json!({"action": "scrape", "info_hash": list}));
        self.recv()
    }
}

/// `n` offers with ids `tag`, 1…n.
pub fn offers(tag: u8, n: u8) -> Value {
    let list: Vec<Value> = (1..=n)
        .map(|i| {
            let mut oid = [tag; 20];
            oid[19] = i;
            json!({"offer_id": latin1(&oid), "offer": {"type": "offer", "sdp": format!("v=0 offer {tag}/{i}")}})
        })
        .collect();
    Value::Array(list)
}
