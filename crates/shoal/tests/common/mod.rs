//! Starts the real `shoal` binary on ephemeral loopback ports and speaks to it.
#![allow(dead_code)]

pub mod stores;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use protocol::bencode::{self, Value};
use protocol::udp::{AnnounceRequest, Request, Response, ScrapeRequest};
use protocol::{AnnounceEvent, InfoHash, PeerId};

pub const BIN: &str = env!("CARGO_BIN_EXE_shoal");

pub struct Shoal {
    child: Child,
    pub udp: Vec<SocketAddr>,
    pub http: Vec<SocketAddr>,
    pub api: SocketAddr,
    pub log: mpsc::Receiver<String>,
    /// Everything logged up to and including the "ready" line.
    pub start_log: Vec<String>,
}

/// A config on loopback ports chosen by the kernel, with a database in `dir`.
pub fn config(dir: &Path, extra: &str) -> PathBuf {
    Setup {
        extra,
        ..Setup::default()
    }
    .write(dir)
}

/// What a test changes in the config: the mode, the database, the token, and raw TOML that is
/// appended last (so it may open further tables).
#[derive(Default, Clone)]
pub struct Setup<'a> {
    pub mode: &'a str,
    pub db_url: Option<String>,
    pub token: &'a str,
    pub database_extra: &'a str,
    /// 100 ms unless set.
    pub flush_interval_ms: Option<u64>,
    pub http_extra: &'a str,
    pub extra: &'a str,
}

impl Setup<'_> {
    pub fn write(&self, dir: &Path) -> PathBuf {
        let path = dir.join("shoal.toml");
        let url = self
            .db_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}/shoal.db", dir.display()));
        let mode = if self.mode.is_empty() {
            "public"
        } else {
            self.mode
        };
        let text = format!(
            "mode = \"{mode}\"\n[database]\nurl = \"{url}\"\nflush_interval_ms = {}\n{}\n\
             [udp]\nbind = [\"127.0.0.1:0\", \"[::1]:0\"]\nworkers = 2\n\
             [http]\nbind = [\"127.0.0.1:0\", \"[::1]:0\"]\n{}\n[api]\nbind = \"127.0.0.1:0\"\ntoken = \"{}\"\n{}",
            self.flush_interval_ms.unwrap_or(100),
            self.database_extra,
            self.http_extra,
            self.token,
            self.extra
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    pub fn start(&self, dir: &Path) -> Shoal {
        let cfg = self.write(dir);
        Shoal::spawn(command(&["serve", "--config", cfg.to_str().unwrap()]))
    }
}

/// The binary under test: this build's, or `SHOAL_TEST_BIN` (to run the suite against an
/// older build and see which promises it broke).
pub fn bin() -> String {
    std::env::var("SHOAL_TEST_BIN").unwrap_or_else(|_| BIN.to_string())
}

pub fn command(args: &[&str]) -> Command {
    let mut cmd = Command::new(bin());
    cmd.args(args);
    // The tests' own environment must not reconfigure the server under test.
    for (k, _) in std::env::vars() {
        if k.starts_with("SHOAL_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

impl Shoal {
    pub fn start(dir: &Path, extra: &str) -> Shoal {
        let cfg = config(dir, extra);
        Shoal::spawn(command(&["serve", "--config", cfg.to_str().unwrap()]))
    }

    pub fn spawn(mut cmd: Command) -> Shoal {
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start shoal");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let (mut udp, mut http, mut api) = (vec![], vec![], None);
        let mut start_log = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx.recv_timeout(left).unwrap_or_else(|_| {
                panic!("shoal did not become ready; exit: {:?}", child.try_wait())
            });
            let addr = || {
                line.rsplit(' ')
                    .next()
                    .unwrap()
                    .parse::<SocketAddr>()
                    .unwrap()
            };
            if line.contains("udp tracker listening on") {
                udp.push(addr());
            } else if line.contains("http tracker listening on") {
                http.push(addr());
            } else if line.contains("admin api listening on") {
                api = Some(addr());
            }
            let ready = line.contains("ready:");
            start_log.push(line);
            if ready {
                break;
            }
        }
        Shoal {
            child,
            udp,
            http,
            api: api.expect("api address logged"),
            log: rx,
            start_log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// SIGTERM, then the exit status and everything logged meanwhile.
    pub fn stop(self) -> (ExitStatus, Vec<String>) {
        self.signal("TERM");
        self.exited()
    }

    /// Waits for the process to exit by itself: its status and everything logged meanwhile.
    pub fn exited(mut self) -> (ExitStatus, Vec<String>) {
        let status = wait_timeout(&mut self.child, Duration::from_secs(20));
        // Read to the end of stderr: the reader thread may still be behind the exit.
        let mut log = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while let Ok(line) = self
            .log
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            log.push(line);
        }
        (status, log)
    }

    pub fn kill(mut self) {
        self.signal("KILL");
        wait_timeout(&mut self.child, Duration::from_secs(10));
    }

    pub fn metrics(&self) -> String {
        let (_, body) = http_get(self.api, "/metrics");
        String::from_utf8(body).unwrap()
    }

    /// The value of one metric line (`name{labels}` as printed), 0 when absent.
    pub fn metric(&self, series: &str) -> u64 {
        self.metrics()
            .lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Shoal {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_timeout(child: &mut Child, limit: Duration) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "shoal did not exit within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls `done` until it holds, failing the test after `limit`; returns the time it took.
pub fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < limit,
            "gave up waiting for {what} after {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    started.elapsed()
}

pub fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("shoal-test-")
        .tempdir()
        .unwrap()
}

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

    pub fn request(&mut self, req: &Request) -> Response {
        let mut out = Vec::new();
        req.write(&mut out);
        self.send_raw(&out);
        let bytes = self.recv_raw(Duration::from_secs(3)).expect("udp answer");
        Response::parse(&bytes, self.server.is_ipv6()).expect("well-formed answer")
    }

    pub fn connect(&mut self) -> u64 {
        self.tid += 1;
        match self.request(&Request::Connect {
            transaction_id: self.tid,
        }) {
            Response::Connect {
                transaction_id,
                connection_id,
            } => {
                assert_eq!(transaction_id, self.tid);
                connection_id
            }
            other => panic!("connect answered with {other:?}"),
        }
    }

    pub fn announce(
        &mut self,
        cid: u64,
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

    pub fn scrape(&mut self, cid: u64, hashes: &[InfoHash]) -> Response {
        self.tid += 1;
        self.request(&Request::Scrape(ScrapeRequest {
            connection_id: cid,
            transaction_id: self.tid,
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
    cid: u64,
    tid: u32,
    ih: InfoHash,
    pid: PeerId,
    port: u16,
    left: u64,
    event: AnnounceEvent,
) -> AnnounceRequest {
    AnnounceRequest {
        connection_id: cid,
        transaction_id: tid,
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
pub fn try_read_response(stream: &mut TcpStream) -> Option<(u16, Vec<u8>)> {
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

/// One request to the admin API: (status, JSON body or Null when there is none).
pub fn api(
    addr: SocketAddr,
    method: &str,
    target: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, serde_json::Value) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    if let Some(b) = body {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            b.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(body.unwrap_or(""));
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head: {text:?}"));
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let json = if body.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
    };
    (status, json)
}

/// A fresh database for a test on the given backend ("sqlite" means the default in the test dir).
pub fn database(backend: &str) -> Option<String> {
    let kind = match backend {
        "sqlite" => return None,
        "postgres" => testkit::Kind::Postgres,
        "mariadb" => testkit::Kind::MariaDb,
        other => panic!("unknown backend {other}"),
    };
    Some(block_on(testkit::fresh_database(kind)))
}

/// Runs async work (store calls, test servers) from a synchronous test. One runtime for the
/// whole test process, so a pool opened in one call still works in the next.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    })
    .block_on(f)
}

/// The query of a compact HTTP announce by a leecher that has just started.
pub fn started_query(ih: InfoHash, peer: u8, port: u16) -> String {
    protocol::http::AnnounceRequest {
        info_hash: ih,
        peer_id: peer_id(peer),
        port,
        uploaded: 0,
        downloaded: 0,
        left: 10,
        event: AnnounceEvent::Started,
        compact: true,
        no_peer_id: false,
        numwant: None,
    }
    .to_query()
}

/// A small tmpfs (`size` as mount takes it, e.g. "4M"): a disk that can really fill up.
/// Unmounted on drop.
pub struct SmallDisk(pub std::path::PathBuf);

impl SmallDisk {
    pub fn mount(at: std::path::PathBuf, size: &str) -> SmallDisk {
        std::fs::create_dir_all(&at).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&at)
            .status()
            .expect("mount");
        assert!(
            ok.success(),
            "mounting a tmpfs at {} failed: this test needs root",
            at.display()
        );
        SmallDisk(at)
    }

    /// Writes a file until the disk says it is full.
    pub fn fill(&self) -> std::path::PathBuf {
        use std::io::Write;
        let path = self.0.join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        let chunk = [0u8; 4096];
        loop {
            match f.write_all(&chunk) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(28) => break, // ENOSPC
                Err(e) => panic!("filling the disk: {e}"),
            }
        }
        path
    }

    /// Gives the disk room again, keeping what it holds.
    pub fn grow(&self, size: &str) {
        let ok = std::process::Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .expect("mount");
        assert!(ok.success(), "remounting {} failed", self.0.display());
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}
