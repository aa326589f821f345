//! `shoal check <url>…`: announce to and scrape a tracker the way a client does, on a random
//! info-hash unless one is given, and report each step with its latency. Works against any
//! tracker, over `udp://`, `http://` and `https://`.

use crate::os::random;
use std::net::{ToSocketAddrs, UdpSocket};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use protocol::bencode::{self, Value};
use protocol::udp::{AnnounceRequest, Request, Response, ScrapeRequest, TransactionId};
use protocol::{AnnounceEvent, InfoHash, PeerId};

use super::client::{Client, Target};

/// Announce to and scrape trackers as a client would (udp://, http://, https://), on a
/// random info-hash unless one is given; report each step. Exit 0 only if all worked.
#[derive(clap::Args)]
pub struct Args {
    #[arg(required = true, value_name = "URL")]
    pub urls: Vec<String>,
    /// 40 hex digits; default: a random one.
    #[arg(long, value_name = "HEX", value_parser = |s: &str| InfoHash::from_hex(s))]
    pub info_hash: Option<InfoHash>,
    /// A private tracker's key, appended to the announce path.
    #[arg(long, value_name = "KEY")]
    pub key: Option<String>,
    /// PEM file to trust for https:// (default: the system's roots): CA certificates, or the
    /// server's own self-signed certificate (pinned).
    #[arg(long, value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
    /// One JSON array instead of lines.
    #[arg(long)]
    pub json: bool,
}

/// The largest tracker answer `check` reads.
const MAX_ANSWER: usize = 1 << 20;

struct Step {
    name: &'static str,
    ok: bool,
    ms: f64,
    detail: String,
}

/// What one tracker answered, step by step; a failed step ends the walk.
struct Report {
    url: String,
    steps: Vec<Step>,
}

impl Report {
    fn step<T>(
        &mut self,
        name: &'static str,
        f: impl FnOnce() -> Result<(T, String), String>,
    ) -> Option<T> {
        let started = Instant::now();
        let r = f();
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        let (ok, detail, value) = match r {
            Ok((v, d)) => (true, d, Some(v)),
            Err(e) => (false, e, None),
        };
        self.steps.push(Step {
            name,
            ok,
            ms,
            detail,
        });
        value
    }

    fn ok(&self) -> bool {
        self.steps.iter().all(|s| s.ok)
    }
}

pub fn run(a: Args) -> super::Result<()> {
    let info_hash = a.info_hash.unwrap_or_else(|| InfoHash(random()));
    let mut peer_id = *b"-SH0100-000000000000";
    peer_id[8..].copy_from_slice(&random::<12>());
    let port = 10_000 + u16::from_le_bytes(random()) % 50_000;
    // A tracker's answer is a few KB; a larger one is not read further.
    let client = Client::new(a.ca_cert.as_deref())?.limit(MAX_ANSWER);
    let mut reports = Vec::new();
    for url in &a.urls {
        let mut r = Report {
            url: url.clone(),
            steps: Vec::new(),
        };
        let p = Probe {
            info_hash,
            peer_id: PeerId(peer_id),
            port,
            key: a.key.as_deref(),
        };
        if url.starts_with("udp://") {
            p.udp(url, &mut r);
        } else {
            p.http(url, &client, &mut r);
        }
        reports.push(r);
    }
    if a.json {
        let out: Vec<_> = reports
            .iter()
            .map(|r| {
                serde_json::json!({
                    "url": r.url,
                    "ok": r.ok(),
                    "info_hash": info_hash.to_hex(),
                    "steps": r.steps.iter().map(|s| serde_json::json!({
                        "step": s.name, "ok": s.ok, "ms": (s.ms * 100.0).round() / 100.0, "detail": s.detail,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(out));
    } else {
        println!("info-hash {}", info_hash.to_hex());
        for r in &reports {
            println!("{}", r.url);
            for s in &r.steps {
                let mark = if s.ok { "ok  " } else { "FAIL" };
                println!("  {mark} {:<9} {:>8.2} ms  {}", s.name, s.ms, s.detail);
            }
        }
    }
    let failed = reports.iter().filter(|r| !r.ok()).count();
    match failed {
        0 => Ok(()),
        n => Err(super::Error::Said(format!(
            "{n} of {} trackers failed a step",
            reports.len()
        ))),
    }
}

struct Probe<'a> {
    info_hash: InfoHash,
    peer_id: PeerId,
    port: u16,
    key: Option<&'a str>,
}

impl Probe<'_> {
    /// A socket connected to the tracker of `url`, with the BEP 41 URL data to send (the
    /// path, the key, the query), and the address as the step's detail.
    fn udp_socket(&self, url: &str) -> Result<((UdpSocket, String), String), String> {
        let u = url::Url::parse(url).map_err(|e| e.to_string())?;
        let host = u
            .host_str()
            .ok_or("no host")?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let addr = (host.as_str(), u.port().ok_or("no port")?)
            .to_socket_addrs()
            .map_err(|e| e.to_string())?
            .next()
            .ok_or("no address")?;
        let bind = if addr.is_ipv6() {
            "[::]:0"
        } else {
            "0.0.0.0:0"
        };
        let s = UdpSocket::bind(bind).map_err(|e| e.to_string())?;
        s.connect(addr).map_err(|e| e.to_string())?;
        let mut path = u.path().to_string();
        if let Some(k) = self.key {
            path = format!("{}/{k}", path.trim_end_matches('/'));
        }
        if let Some(q) = u.query() {
            path = format!("{path}?{q}");
        }
        Ok(((s, path), addr.to_string()))
    }

    fn udp(&self, url: &str, r: &mut Report) {
        let Some(socket) = r.step("resolve", || self.udp_socket(url)) else {
            return;
        };
        let (socket, url_data) = socket;
        let v6 = socket.peer_addr().map(|a| a.is_ipv6()).unwrap_or(false);
        let exchange = |req: Request| udp_exchange(&socket, req, v6);
        let Some(cid) = r.step("connect", || {
            match exchange(Request::Connect {
                transaction_id: new_tid(),
            })? {
                Response::Connect { connection_id, .. } => Ok((
                    connection_id,
                    format!("connection id {:016x}", connection_id.0),
                )),
                Response::Error { message, .. } => {
                    Err(String::from_utf8_lossy(&message).into_owned())
                }
                other => Err(format!("unexpected {other:?}")),
            }
        }) else {
            return;
        };
        let announce = |event, left| AnnounceRequest {
            connection_id: cid,
            transaction_id: new_tid(),
            info_hash: self.info_hash,
            peer_id: self.peer_id,
            downloaded: 0,
            left,
            uploaded: 0,
            event,
            ip: 0,
            key: 0,
            numwant: 50,
            port: self.port,
            url_data: url_data.as_bytes().to_vec(),
        };
        let announced = r.step("announce", || match exchange(Request::Announce(announce(AnnounceEvent::Started, 1 << 20)))? {
            Response::Announce { interval, leechers, seeders, peers, .. } => Ok(((), format!(
                "interval {interval} s, {seeders} seeders, {leechers} leechers, {} peers back", peers.len()
            ))),
            Response::Error { message, .. } => Err(format!("refused: {}", String::from_utf8_lossy(&message))),
            other => Err(format!("unexpected {other:?}")),
        });
        if announced.is_none() {
            return;
        }
        let scrape = ScrapeRequest {
            connection_id: cid,
            transaction_id: new_tid(),
            info_hashes: vec![self.info_hash],
        };
        r.step("scrape", || match exchange(Request::Scrape(scrape))? {
            Response::Scrape { stats, .. } if stats.len() == 1 => Ok((
                (),
                format!(
                    "{} seeders, {} leechers, {} downloads",
                    stats[0].seeders, stats[0].leechers, stats[0].completed
                ),
            )),
            Response::Error { message, .. } => {
                Err(format!("refused: {}", String::from_utf8_lossy(&message)))
            }
            other => Err(format!("unexpected {other:?}")),
        });
        r.step("stop", || {
            match exchange(Request::Announce(announce(AnnounceEvent::Stopped, 1 << 20)))? {
                Response::Announce { .. } => Ok(((), "left the swarm".into())),
                Response::Error { message, .. } => {
                    Err(String::from_utf8_lossy(&message).into_owned())
                }
                other => Err(format!("unexpected {other:?}")),
            }
        });
    }

    fn http(&self, url: &str, client: &Client, r: &mut Report) {
        let Some(mut target) = r.step("parse", || {
            // A step's failure is a line of the report: its text is what is kept.
            let t = Target::parse(url).map_err(|e| e.to_string())?;
            let what = format!("{}:{}{}", t.host, t.port, if t.tls { " (TLS)" } else { "" });
            Ok((t, what))
        }) else {
            return;
        };
        if let Some(k) = self.key {
            target.path = format!("{}/{k}", target.path.trim_end_matches('/'));
        }
        let (path, query) = match target.path.split_once('?') {
            Some((p, q)) => (p.to_string(), format!("{q}&")),
            None => (target.path.clone(), String::new()),
        };
        let request = |event| protocol::http::AnnounceRequest {
            info_hash: self.info_hash,
            peer_id: self.peer_id,
            port: self.port,
            uploaded: 0,
            downloaded: 0,
            left: 1 << 20,
            event,
            compact: true,
            no_peer_id: true,
            numwant: Some(50),
        };
        let get = |path: &str| http_get(client, &target, path);
        let announced = r.step("announce", || {
            let v = get(&format!(
                "{path}?{query}{}",
                request(AnnounceEvent::Started).to_query()
            ))?;
            let int = |k: &str| v.get(k).and_then(Value::as_int).unwrap_or(0);
            let peers = v
                .get("peers")
                .and_then(Value::as_bytes)
                .map_or(0, |p| p.len() / 6)
                + v.get("peers6")
                    .and_then(Value::as_bytes)
                    .map_or(0, |p| p.len() / 18);
            Ok((
                (),
                format!(
                    "interval {} s, {} seeders, {} leechers, {peers} peers back",
                    int("interval"),
                    int("complete"),
                    int("incomplete")
                ),
            ))
        });
        if announced.is_none() {
            return;
        }
        // BEP 48: the scrape URL is the announce URL with its last `announce` made `scrape`.
        match path.rfind("/announce") {
            Some(at) => {
                let scrape = format!("{}/scrape{}", &path[..at], &path[at + 9..]);
                let q = format!(
                    "{query}info_hash={}",
                    protocol::percent::encode(&self.info_hash.0)
                );
                r.step("scrape", || {
                    let v = get(&format!("{scrape}?{q}"))?;
                    let Some(Value::Dict(files)) = v.get("files") else {
                        return Err("no files dictionary".into());
                    };
                    let f = files
                        .get(&self.info_hash.0.to_vec())
                        .ok_or("the info-hash is not in the answer")?;
                    let int = |k: &str| f.get(k).and_then(Value::as_int).unwrap_or(0);
                    Ok((
                        (),
                        format!(
                            "{} seeders, {} leechers, {} downloads",
                            int("complete"),
                            int("incomplete"),
                            int("downloaded")
                        ),
                    ))
                });
            }
            None => r.steps.push(Step {
                name: "scrape",
                ok: true,
                ms: 0.0,
                detail: "skipped: the announce URL has no /announce to turn into /scrape".into(),
            }),
        }
        r.step("stop", || {
            get(&format!(
                "{path}?{query}{}",
                request(AnnounceEvent::Stopped).to_query()
            ))?;
            Ok(((), "left the swarm".into()))
        });
    }
}

/// UDP answers wait this long per try; two tries.
const UDP_WAIT: Duration = Duration::from_secs(3);

fn new_tid() -> TransactionId {
    TransactionId(u32::from_le_bytes(random()))
}

/// One BEP 15 exchange on a connected socket: the answer that echoes the request's
/// transaction id (others, late or forged, are skipped), sent twice at most. A closed port
/// says so at once (ICMP port unreachable reaches a connected socket as ECONNREFUSED).
fn udp_exchange(socket: &UdpSocket, req: Request, v6: bool) -> Result<Response, String> {
    let tid = match &req {
        Request::Connect { transaction_id } => *transaction_id,
        Request::Announce(a) => a.transaction_id,
        Request::Scrape(s) => s.transaction_id,
    };
    let mut out = Vec::new();
    req.write(&mut out);
    let mut buf = [0u8; 65536];
    let refused = |e: &std::io::Error| e.kind() == std::io::ErrorKind::ConnectionRefused;
    let closed = "the port is closed (ICMP port unreachable: connection refused)".to_string();
    let mut skipped = 0;
    for _ in 0..2 {
        match socket.send(&out) {
            Err(e) if refused(&e) => return Err(closed),
            Err(e) => return Err(e.to_string()),
            Ok(_) => {}
        }
        let deadline = Instant::now() + UDP_WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            socket
                .set_read_timeout(Some(left))
                .map_err(|e| e.to_string())?;
            match socket.recv(&mut buf) {
                Ok(n) => match Response::parse(&buf[..n], v6) {
                    Some(resp) if resp.transaction_id() == tid => return Ok(resp),
                    Some(_) => skipped += 1,
                    None => return Err("an answer that is not BEP 15".into()),
                },
                Err(e) if refused(&e) => return Err(closed),
                Err(_) => break,
            }
        }
    }
    let skipped = match skipped {
        0 => String::new(),
        n => format!(" ({n} answers with another transaction id skipped)"),
    };
    Err(format!(
        "no answer within {} s{skipped}",
        2 * UDP_WAIT.as_secs()
    ))
}

/// A GET of `path` on `target`'s host: the bencoded answer, or why there is none.
fn http_get(client: &Client, target: &Target, path: &str) -> Result<Value, String> {
    let t = Target {
        tls: target.tls,
        host: target.host.clone(),
        port: target.port,
        path: path.to_string(),
    };
    let (status, body) = client
        .request("GET", &t, &[], None)
        .map_err(|e| e.to_string())?;
    if status != 200 {
        return Err(format!("HTTP {status}"));
    }
    let v = bencode::decode(&body).map_err(|e| format!("not bencode: {e}"))?;
    match v.get("failure reason").and_then(Value::as_bytes) {
        Some(reason) => Err(format!("refused: {}", String::from_utf8_lossy(reason))),
        None => Ok(v),
    }
}
