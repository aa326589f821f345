//! A hostile client against the limits (docs/design.md, "Peers"): one address makes torrent after
//! torrent, counts downloads on each and floods one swarm with peer ids, while honest peers
//! on other addresses keep announcing. The tracker must refuse past each limit, keep serving
//! the honest peers, and stay within the memory the limits allow.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use common::*;
use protocol::udp::{ConnectionId, Request, Response};
use protocol::{AnnounceEvent, InfoHash};

const MAX_TORRENTS: u64 = 50_000;
const MAX_PEERS: u64 = 80_000;
const MAX_PER_IP: u64 = 16;
const MAX_COUNTED: u64 = 20_000;

/// Peak and current resident memory of a process, in bytes.
fn memory(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib = |key: &str| -> u64 {
        let line = status.lines().find(|l| l.starts_with(key)).unwrap();
        line.split_whitespace()
            .nth(1)
            .unwrap()
            .parse::<u64>()
            .unwrap()
            * 1024
    };
    (kib("VmHWM:"), kib("VmRSS:"))
}

/// Sends announces as fast as the server answers, a window at a time; returns answers seen.
struct Flood {
    socket: UdpSocket,
    server: SocketAddr,
    cid: ConnectionId,
    window: Vec<Vec<u8>>,
    answers: u64,
}

impl Flood {
    fn new(server: SocketAddr) -> Flood {
        let mut c = UdpClient::new(server);
        let cid = c.connect();
        Flood {
            socket: c.socket,
            server,
            cid,
            window: Vec::new(),
            answers: 0,
        }
    }

    fn announce(&mut self, ih: InfoHash, peer: u32, port: u16, left: u64, event: AnnounceEvent) {
        let mut id = [b'h'; 20];
        id[..4].copy_from_slice(&peer.to_be_bytes());
        let req = announce_req(self.cid, peer, ih, protocol::PeerId(id), port, left, event);
        let mut out = Vec::new();
        Request::Announce(req).write(&mut out);
        self.window.push(out);
        if self.window.len() == 256 {
            self.flush();
        }
    }

    fn flush(&mut self) {
        for packet in self.window.drain(..) {
            self.socket.send_to(&packet, self.server).unwrap();
        }
        self.socket
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut buf = [0u8; 2048];
        for _ in 0..256 {
            match self.socket.recv_from(&mut buf) {
                Ok(_) => self.answers += 1,
                Err(_) => break,
            }
        }
    }
}

fn hostile_hash(n: u32) -> InfoHash {
    let mut h = [0x5a; 20];
    h[..4].copy_from_slice(&n.wrapping_mul(2_654_435_761).to_be_bytes());
    h[4..8].copy_from_slice(&n.to_le_bytes());
    InfoHash(h)
}

/// An honest peer at 127.0.0.`n`, announcing to the contested torrent; returns the ports of
/// the peers it was given.
fn honest(n: u8, server: SocketAddr) -> Vec<u16> {
    let socket = UdpSocket::bind((std::net::Ipv4Addr::new(127, 0, 0, n), 0)).unwrap();
    let mut c = UdpClient::from_socket(socket, server);
    let cid = c.connect();
    match c.announce(
        cid,
        hash(99),
        peer_id(n),
        6000 + u16::from(n),
        10,
        AnnounceEvent::None,
    ) {
        Response::Announce { peers, .. } => peers.iter().map(|p| p.port()).collect(),
        other => panic!("honest peer {n} refused: {other:?}"),
    }
}

#[test]
fn one_address_cannot_grow_the_state_or_crowd_out_honest_peers() {
    let dir = temp_dir();
    let shoal = Shoal::start(
        dir.path(),
        &format!(
            "[limits]\nmax_torrents = {MAX_TORRENTS}\nmax_peers = {MAX_PEERS}\n\
             max_peers_per_torrent = 1000\nmax_peers_per_ip = {MAX_PER_IP}\n\
             max_counted_torrents = {MAX_COUNTED}\n"
        ),
    );
    let server = shoal.udp[0];
    let (_, base) = memory(shoal.pid());
    for n in 2..=6 {
        honest(n, server);
    }
    let honest_ports: Vec<u16> = (2..=6).map(|n| 6000 + n).collect();
    let check_honest = |round: u32| {
        let got = honest(2, server);
        for port in &honest_ports[1..] {
            assert!(
                got.contains(port),
                "round {round}: peer {port} missing from {got:?}"
            );
        }
    };

    let mut flood = Flood::new(server);
    // 200,000 announces on new info-hashes; every fourth completes, to make a count.
    for n in 0..200_000u32 {
        let ih = hostile_hash(n);
        if n % 4 == 0 {
            flood.announce(ih, n, 7000, 10, AnnounceEvent::Started);
            flood.announce(ih, n, 7000, 0, AnnounceEvent::Completed);
        } else {
            flood.announce(ih, n, 7000, 10, AnnounceEvent::Started);
        }
        if n % 20_000 == 0 {
            flood.flush();
            check_honest(n);
        }
    }
    // 20,000 peer ids into the honest peers' torrent: half on one port (one endpoint, as a
    // restarting client), half each on a port of its own.
    for n in 0..20_000u32 {
        let port = if n % 2 == 0 { 9999 } else { 10_000 + n as u16 };
        flood.announce(hash(99), n, port, 10, AnnounceEvent::Started);
        if n % 2_000 == 0 {
            flood.flush();
            check_honest(n);
        }
    }
    flood.flush();
    check_honest(u32::MAX);
    assert!(
        flood.answers > 150_000,
        "the flood was answered: {}",
        flood.answers
    );

    let contested = udp_scrape(server, hash(99)).unwrap();
    assert_eq!(
        u64::from(contested.leechers),
        5 + MAX_PER_IP,
        "five honest peers and at most max_peers_per_ip from the hostile address"
    );
    let torrents = shoal.metric("shoal_torrents");
    let peers = shoal.metric("shoal_peers");
    assert!(torrents <= MAX_TORRENTS + 2, "{torrents} torrents");
    assert!(
        torrents >= MAX_TORRENTS - 10,
        "the limit, not the flood, stopped it: {torrents}"
    );
    assert!(peers <= MAX_PEERS, "{peers} peers");
    assert!(shoal.metric("shoal_counted_torrents") <= MAX_COUNTED);
    for kind in ["max_torrents", "max_peers_per_ip"] {
        let refused = shoal.metric(&format!(
            "shoal_errors_total{{protocol=\"udp\",kind=\"{kind}\"}}"
        ));
        assert!(refused > 0, "refusals past {kind} are counted");
    }

    // docs/security.md: a torrent with peers costs at most 400 bytes with its first peer,
    // each further peer at most 110 and each count at most 80 (hash map slack included).
    let allowed = MAX_TORRENTS * 400 + MAX_PEERS * 110 + MAX_COUNTED * 80;
    let (peak, _) = memory(shoal.pid());
    let grown = peak.saturating_sub(base);
    eprintln!(
        "peak RSS grew by {} KiB; the limits allow {} KiB",
        grown / 1024,
        allowed / 1024
    );
    assert!(
        grown < allowed,
        "peak RSS grew by {grown} bytes, the limits allow {allowed}"
    );
}
