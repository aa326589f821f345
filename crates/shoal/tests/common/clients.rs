//! Clients of the running tracker: UDP, HTTP announce and scrape, the admin API, and the
//! fixtures they send.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use protocol::bencode::{self, Value};
use protocol::udp::{
    AnnounceRequest, ConnectionId, Request, Response, ScrapeRequest, TransactionId,
};
use protocol::{AnnounceEvent, InfoHash, PeerId};

pub fn hash(n: u8) -> InfoHash {
    InfoHash([n; 20])
}

pub fn peer_id(n: u8) -> PeerId {
    let mut id = *b"-SH0001-000000000000";
    id[19] = n;
    PeerId(id)
}

/// A UDP client bound on the loopback address of `server`'s family.
pub struct UdpClient {
    pub socket: UdpSocket,
    server: SocketAddr,
    tid: u32,
}

impl UdpClient {
    pub fn new(server: SocketAddr) -> Self {
        let local = if server.is_ipv6() {
            "[::1]:0"
        } else {
            "127.0.0.1:0"
        };
        Self::from_socket(UdpSocket::bind(local).unwrap(), server)
    }

    /// A client on a socket of the caller's, such as one bound to 127.0.0.2.
    pub fn from_socket(socket: UdpSocket, server: SocketAddr) -> Self {
        socket
            .set_read_timeout(Some(Duration::from_secs(3)))
            .unwrap();
        UdpClient {
            socket,
            server,
            tid: 1,
        }
    }

    pub fn send_raw(&self, packet: &[u8]) {
        self.socket.send_to(packet, self.server).unwrap();
    }

    /// The next datagram, or None after `wait`.
    pub fn recv_raw(&self, wait: Duration) -> Option<Vec<u8>> {
        self.socket.set_read_timeout(Some(wait)).unwrap();
        let mut buf = [0u8; 4096];
        let r = self
            .socket
            .recv_from(&mut buf)
            .ok()
            .map(|(n, _)| buf[..n].to_vec());
        self.socket
            .set_read_timeout(Some(Duration::from_secs(3)))
            .unwrap();
        r
    }

    /// The answer to `req`, sent again after a 3 s silence as real clients do (a loaded test
    /// machine may drop a loopback datagram); panics after three tries.
    pub fn request(&mut self, req: &Request) -> Response {
        (0..3)
            .find_map(|_| self.try_request(req))
            .expect("a well-formed udp answer within three tries")
    }

    /// The answer to `req` within the socket's read timeout, or None (lost, or not a
    /// response): for load loops that must not stop at one missing answer.
    pub fn try_request(&self, req: &Request) -> Option<Response> {
        let mut out = Vec::new();
        req.write(&mut out);
        self.socket.send_to(&out, self.server).ok()?;
        let mut buf = [0u8; 4096];
        let (n, _) = self.socket.recv_from(&mut buf).ok()?;
        Response::parse(&buf[..n], self.server.is_ipv6())
    }

    pub fn connect(&mut self) -> ConnectionId {
        self.tid += 1;
        match self.request(&Request::Connect {
            transaction_id: TransactionId(self.tid),
        }) {
            Response::Connect {
                transaction_id,
                connection_id,
            } => {
                assert_eq!(transaction_id, TransactionId(self.tid));
                connection_id
            }
            other => panic!("connect answered with {other:?}"),
        }
    }

    pub fn announce(
        &mut self,
        cid: ConnectionId,
        ih: InfoHash,
        pid: PeerId,
        port: u16,
        left: u64,
        event: AnnounceEvent,
    ) -> Response {
        self.tid += 1;
        self.request(&Request::Announce(announce_req(
            cid, self.tid, ih, pid, port, left, event,
        )))
    }

    pub fn scrape(&mut self, cid: ConnectionId, hashes: &[InfoHash]) -> Response {
        self.tid += 1;
        self.request(&Request::Scrape(ScrapeRequest {
            connection_id: cid,
            transaction_id: TransactionId(self.tid),
            info_hashes: hashes.to_vec(),
        }))
    }
}

/// One scrape of one torrent over a fresh connection: its counts, or the error's text.
pub fn udp_scrape(server: SocketAddr, ih: InfoHash) -> Result<protocol::udp::ScrapeStats, String> {
    let mut c = UdpClient::new(server);
    let cid = c.connect();
    match c.scrape(cid, &[ih]) {
        Response::Scrape { stats, .. } => Ok(stats[0]),
        Response::Error { message, .. } => Err(String::from_utf8_lossy(&message).into_owned()),
        other => panic!("{other:?}"),
    }
}

pub fn announce_req(
    cid: ConnectionId,
    tid: u32,
    ih: InfoHash,
    pid: PeerId,
    port: u16,
    left: u64,
    event: AnnounceEvent,
) -> AnnounceRequest {
    AnnounceRequest {
        connection_id: cid,
        transaction_id: TransactionId(tid),
        info_hash: ih,
        peer_id: pid,
        downloaded: 0,
        left,
        uploaded: 0,
        event,
        ip: 0,
        key: 7,
        numwant: -1,
        port,
        url_data: b"/announce".to_vec(),
    }
}

/// One HTTP/1.1 exchange on an open connection: (status, body).
pub fn http_exchange(stream: &mut TcpStream, target: &str, close: bool) -> (u16, Vec<u8>) {
    let conn = if close { "close" } else { "keep-alive" };
    write!(
        stream,
        "GET {target} HTTP/1.1\r\nHost: tracker\r\nConnection: {conn}\r\n\r\n"
    )
    .unwrap();
    read_response(stream)
}

pub fn read_response(stream: &mut TcpStream) -> (u16, Vec<u8>) {
    try_read_response(stream).expect("a response")
}

/// The next response, or None when the connection closes (or times out) first.
pub fn try_read_response<S: Read>(stream: &mut S) -> Option<(u16, Vec<u8>)> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).ok()?;
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .expect("content-length");
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).ok()?;
    Some((status, body))
}

pub fn http_get(addr: SocketAddr, target: &str) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    http_exchange(&mut s, target, true)
}

pub fn bdecode(body: &[u8]) -> Value {
    bencode::decode(body).unwrap_or_else(|e| panic!("not bencode ({e}): {}", body.escape_ascii()))
}

pub fn failure_reason(body: &[u8]) -> String {
    let v = bdecode(body);
    String::from_utf8(
        v.get("failure reason")
            .expect("failure reason")
            .as_bytes()
            .unwrap()
            .to_vec(),
    )
    .unwrap()
}

/// One request to the admin API: (status, JSON body or Null when there is none), through
/// the same client the admin commands use.
pub fn api(
    addr: SocketAddr,
    method: &str,
    target: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, serde_json::Value) {
    use shoal::cmd::client::{Client, Target};
    let t = Target::parse(&format!("http://{addr}{target}")).unwrap();
    let auth: Vec<String> = token
        .map(|t| format!("Authorization: Bearer {t}"))
        .into_iter()
        .collect();
    let (status, body) = Client::new(None)
        .unwrap()
        .request(method, &t, &auth, body)
        .unwrap_or_else(|e| panic!("{method} {target}: {e}"));
    let json = if body.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(&body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&body)))
    };
    (status, json)
}

/// An HTTP announce with every field the tests vary.
pub fn http_request(
    ih: InfoHash,
    peer: u8,
    port: u16,
    left: u64,
    event: AnnounceEvent,
    compact: bool,
) -> protocol::http::AnnounceRequest {
    protocol::http::AnnounceRequest {
        info_hash: ih,
        peer_id: peer_id(peer),
        port,
        uploaded: 0,
        downloaded: 0,
        left,
        event,
        compact,
        no_peer_id: false,
        numwant: None,
    }
}

/// A compact announce by a leecher that has just started.
pub fn started(ih: InfoHash, peer: u8, port: u16) -> protocol::http::AnnounceRequest {
    http_request(ih, peer, port, 10, AnnounceEvent::Started, true)
}

/// The query of `started`.
pub fn started_query(ih: InfoHash, peer: u8, port: u16) -> String {
    started(ih, peer, port).to_query()
}

/// One HTTP announce to `path` (`/announce`, or `/announce/<key>` for a private tracker):
/// the bencoded answer, or its failure reason.
pub fn http_announce(
    addr: SocketAddr,
    path: &str,
    req: &protocol::http::AnnounceRequest,
) -> Result<Value, String> {
    let (status, body) = http_get(addr, &format!("{path}?{}", req.to_query()));
    assert_eq!(status, 200);
    let v = bdecode(&body);
    match v.get("failure reason") {
        Some(r) => Err(String::from_utf8_lossy(r.as_bytes().unwrap()).into_owned()),
        None => Ok(v),
    }
}
