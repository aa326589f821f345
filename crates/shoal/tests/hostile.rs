//! Hostile clients on loopback, bounded in count and time: UDP garbage, oversized datagrams,
//! forged connection ids, slowloris, oversized heads, crowds of idle connections. A
//! well-behaved client keeps announcing throughout and must get every answer right.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use protocol::AnnounceEvent;
use protocol::udp::Response;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Announces over UDP and HTTP until told to stop; counts right and wrong answers.
fn good_client(
    udp: SocketAddr,
    http: SocketAddr,
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    bad: Arc<AtomicU64>,
) {
    let mut n: u8 = 0;
    while !stop.load(Relaxed) {
        n = n.wrapping_add(1);
        let mut c = UdpClient::new(udp);
        let cid = c.connect();
        match c.announce(cid, hash(200), peer_id(n), 9000, 10, AnnounceEvent::Started) {
            Response::Announce {
                interval: 120..=132,
                ..
            } => ok.fetch_add(1, Relaxed),
            _ => bad.fetch_add(1, Relaxed),
        };
        let query = started_query(hash(201), n, 9001);
        let answer = TcpStream::connect(http).ok().and_then(|mut s| {
            s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
            let (status, body) = http_exchange(&mut s, &format!("/announce?{query}"), true);
            Some(
                status == 200
                    && protocol::bencode::decode(&body)
                        .ok()?
                        .get("interval")
                        .is_some(),
            )
        });
        if answer == Some(true) {
            ok.fetch_add(1, Relaxed);
        } else {
            bad.fetch_add(1, Relaxed);
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// True once the server has closed the connection (EOF or reset), waiting up to `limit`.
fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 1024];
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue, // a 408/431 answer before the close
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(_) => return true,
        }
    }
    false
}

#[test]
fn hostile_clients_do_not_stop_a_good_one() {
    let dir = temp_dir();
    let shoal = Setup {
        http_extra: "max_connections = 700\nheader_timeout_ms = 1500",
        ..Setup::default()
    }
    .start(dir.path());
    let (udp, http) = (shoal.udp[0], shoal.http[0]);
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, bad) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let good = {
        let (stop, ok, bad) = (stop.clone(), ok.clone(), bad.clone());
        thread::spawn(move || good_client(udp, http, stop, ok, bad))
    };

    // UDP: 20,000 random datagrams (some over 1500 bytes) and 2,000 announces with forged ids.
    let flood = thread::spawn(move || {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut rng = Rng(0x9e3779b97f4a7c15);
        let mut buf = vec![0u8; 1700];
        for i in 0..22_000u32 {
            let len = if i < 20_000 {
                (rng.next() % 1700) as usize
            } else {
                98
            };
            for b in buf[..len].iter_mut() {
                *b = rng.next() as u8;
            }
            if i >= 20_000 {
                // An announce with a connection id nobody issued.
                buf[8..12].copy_from_slice(&1u32.to_be_bytes());
                buf[80..84].copy_from_slice(&2u32.to_be_bytes());
                buf[96..98].copy_from_slice(&6881u16.to_be_bytes());
            }
            let _ = s.send_to(&buf[..len], udp);
            if i % 500 == 0 {
                thread::sleep(Duration::from_millis(5));
            }
        }
    });

    // Slowloris: 40 connections trickle a request one byte every 100 ms; the header timeout
    // (1.5 s) must close them long before they finish.
    let slow = thread::spawn(move || {
        let mut conns: Vec<TcpStream> =
            (0..40).map(|_| TcpStream::connect(http).unwrap()).collect();
        let request = b"GET /announce?info_hash=aaaaaaaaaaaaaaaaaaaa HTTP/1.1\r\nHost: x\r\n\r\n";
        let started = Instant::now();
        let mut closed = 0;
        for byte in request.iter().take(30) {
            for c in conns.iter_mut() {
                let _ = c.write_all(&[*byte]);
            }
            thread::sleep(Duration::from_millis(100));
        }
        for c in conns.iter_mut() {
            if closed_within(c, Duration::from_secs(3)) {
                closed += 1;
            }
        }
        (closed, started.elapsed())
    });

    // Oversized heads: a 20 KB header and a 16 KB request line.
    let big = thread::spawn(move || {
        let mut refused = 0;
        for i in 0..20 {
            let mut s = TcpStream::connect(http).unwrap();
            let head = if i % 2 == 0 {
                format!(
                    "GET /announce HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
                    "a".repeat(20_000)
                )
            } else {
                format!(
                    "GET /announce?{} HTTP/1.1\r\nHost: x\r\n\r\n",
                    "b".repeat(16_000)
                )
            };
            let _ = s.write_all(head.as_bytes());
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut answer = Vec::new();
            let _ = s.read_to_end(&mut answer);
            let status = String::from_utf8_lossy(&answer)
                .split(' ')
                .nth(1)
                .unwrap_or("closed")
                .to_string();
            if status == "431" || status == "closed" {
                refused += 1;
            }
        }
        refused
    });

    // A crowd: 500 idle connections, closed by the server after the header timeout.
    let mut idle: Vec<TcpStream> = (0..500)
        .map(|_| TcpStream::connect(http).unwrap())
        .collect();
    thread::sleep(Duration::from_millis(500));

    flood.join().unwrap();
    let (slow_closed, slow_time) = slow.join().unwrap();
    let big_refused = big.join().unwrap();
    let idle_closed = idle
        .iter_mut()
        .map(|c| closed_within(c, Duration::from_secs(4)))
        .filter(|&b| b)
        .count();
    thread::sleep(Duration::from_millis(500));
    stop.store(true, Relaxed);
    good.join().unwrap();

    let (ok, bad) = (ok.load(Relaxed), bad.load(Relaxed));
    assert_eq!(
        bad, 0,
        "the good client got {bad} wrong or missing answers ({ok} right)"
    );
    assert!(ok >= 20, "the good client kept announcing: {ok} answers");
    assert_eq!(
        slow_closed, 40,
        "every slowloris connection is closed (after {slow_time:?})"
    );
    assert_eq!(big_refused, 20, "oversized heads are refused");
    assert_eq!(
        idle_closed, 500,
        "idle connections are closed after the header timeout"
    );
    let m = shoal.metrics();
    let udp_errors: u64 = m
        .lines()
        .filter(|l| l.starts_with("shoal_errors_total{protocol=\"udp\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert!(udp_errors >= 1000, "garbage is counted: {udp_errors}\n{m}");
    assert!(
        shoal.metric("shoal_errors_total{protocol=\"udp\",kind=\"oversized\"}") > 0,
        "{m}"
    );
    assert!(
        shoal.metric("shoal_errors_total{protocol=\"udp\",kind=\"bad_connection_id\"}") > 0,
        "{m}"
    );
    assert!(
        shoal.metric("shoal_errors_total{protocol=\"http\",kind=\"head_too_large\"}") > 0,
        "{m}"
    );
    assert!(
        shoal.metric("shoal_errors_total{protocol=\"http\",kind=\"head_timeout\"}") > 0,
        "{m}"
    );
    let (status, _) = shoal.stop();
    assert!(status.success(), "the server survived and stopped cleanly");
}

#[test]
fn connections_over_the_limit_are_closed_and_counted() {
    let dir = temp_dir();
    let shoal = Setup {
        http_extra: "max_connections = 50\nheader_timeout_ms = 20000",
        ..Setup::default()
    }
    .start(dir.path());
    let http = shoal.http[0];
    let mut held: Vec<TcpStream> = (0..50).map(|_| TcpStream::connect(http).unwrap()).collect();
    // Let the server accept all 50 before the extra ones arrive.
    wait_until("50 connections accepted", Duration::from_secs(5), || {
        let mut probe = TcpStream::connect(http).unwrap();
        closed_within(&mut probe, Duration::from_millis(300))
    });
    let mut extra: Vec<TcpStream> = (0..20).map(|_| TcpStream::connect(http).unwrap()).collect();
    let closed = extra
        .iter_mut()
        .map(|c| closed_within(c, Duration::from_secs(3)))
        .filter(|&b| b)
        .count();
    assert_eq!(closed, 20);
    assert!(
        shoal.metric("shoal_errors_total{protocol=\"http\",kind=\"too_many_connections\"}") >= 20
    );
    // The held ones still work, and freeing slots lets new clients in.
    let (status, _) = http_exchange(&mut held[0], "/announce?port=1", false);
    assert_eq!(status, 200);
    held.clear();
    wait_until("a slot frees up", Duration::from_secs(5), || {
        TcpStream::connect(http).ok().is_some_and(|mut s| {
            s.set_read_timeout(Some(Duration::from_secs(2))).ok();
            s.write_all(b"GET /scrape?info_hash=aaaaaaaaaaaaaaaaaaaa HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").is_ok()
                && { let mut b = Vec::new(); let _ = s.read_to_end(&mut b); b.starts_with(b"HTTP/1.1 200") }
        })
    });
}
