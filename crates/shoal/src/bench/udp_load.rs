//! `shoal bench udp-load`: a UDP load at a fixed rate, for measuring what a tracker's CPU
//! spends per response below saturation (aquatic's load tester only knows "as fast as
//! possible"). Same mix as aquatic_udp_load_test's defaults: connect 50, announce 50,
//! scrape 1; 75% of announces say `completed` with nothing left, the rest `started`.

use crate::cmd::{Error, Result};
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use protocol::udp::{AnnounceRequest, ConnectionId, Request, ScrapeRequest, TransactionId};
use protocol::{AnnounceEvent, InfoHash, PeerId};

/// Send BEP 15 requests at a fixed rate (aquatic_udp_load_test's default mix) and count
/// answers: for measuring a tracker's CPU per response below saturation.
#[derive(clap::Args)]
pub struct Args {
    #[arg(long, default_value = "127.0.0.1:3000", value_name = "ADDR")]
    pub server: SocketAddr,
    /// Requests per second.
    #[arg(long, default_value_t = 50_000, value_name = "N")]
    pub rate: u64,
    #[arg(long, default_value_t = 20, value_name = "S")]
    pub seconds: u64,
    #[arg(long, default_value_t = 100_000, value_name = "N")]
    pub torrents: usize,
    #[arg(long, default_value_t = 1_000_000, value_name = "N")]
    pub peers: usize,
    /// Every peer keeps its role and re-announces without an event (a settled swarm);
    /// otherwise announces flip between `started` leechers and `completed` seeders.
    #[arg(long)]
    pub steady: bool,
}

/// splitmix64: deterministic, so every tracker gets the same requests.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const SOCKETS: usize = 4;

// One measurement after another, in the order the report prints them: longer than a
// function should be, but read top to bottom it is the report.
pub fn run(a: Args) -> Result<()> {
    let mut rng = Rng(7);
    let hashes: Vec<InfoHash> = (0..a.torrents.max(1))
        .map(|_| {
            let mut h = [0u8; 20];
            for chunk in h.chunks_mut(8) {
                chunk.copy_from_slice(&rng.next().to_le_bytes()[..chunk.len()]);
            }
            InfoHash(h)
        })
        .collect();
    // A peer is a torrent, a port and a socket; its id is its number.
    let peers: Vec<(u32, u16, u8)> = (0..a.peers.max(1))
        .map(|_| {
            (
                rng.below(hashes.len()) as u32,
                1024 + rng.below(60000) as u16,
                rng.below(SOCKETS) as u8,
            )
        })
        .collect();
    let mut sockets = Vec::new();
    for _ in 0..SOCKETS {
        let s = UdpSocket::bind("127.0.0.1:0").map_err(Error::io("binding a load socket"))?;
        s.connect(a.server)
            .map_err(Error::io(format!("connecting to {}", a.server)))?;
        sockets.push(s);
    }
    let mut ids = Vec::new();
    let mut buf = [0u8; 2048];
    let mut out = Vec::with_capacity(1500);
    for s in &sockets {
        s.set_read_timeout(Some(Duration::from_secs(2)))
            .map_err(Error::io("setting a read timeout"))?;
        out.clear();
        Request::Connect {
            transaction_id: TransactionId(1),
        }
        .write(&mut out);
        s.send(&out).map_err(Error::io("sending a connect"))?;
        let n = s
            .recv(&mut buf)
            .map_err(Error::io(format!("no connect answer from {}", a.server)))?;
        if n < 16 {
            return Err(Error::Said("short connect answer".into()));
        }
        ids.push(ConnectionId(u64::from_be_bytes(
            buf[8..16].try_into().unwrap(),
        )));
        s.set_nonblocking(true)
            .map_err(Error::io("making a socket non-blocking"))?;
    }

    let (mut sent, mut received) = (0u64, 0u64);
    let started = Instant::now();
    let end = started + Duration::from_secs(a.seconds);
    let mut next_peer = 0usize;
    // Paced in 1 ms ticks: every tick sends what the rate owes by then.
    while Instant::now() < end {
        let owed = (started.elapsed().as_secs_f64() * a.rate as f64) as u64;
        while sent < owed {
            let kind = rng.below(101);
            let (p_torrent, port, sock) = peers[next_peer];
            let sock = sock as usize;
            out.clear();
            let tid = TransactionId(sent as u32);
            if kind < 50 {
                Request::Connect {
                    transaction_id: tid,
                }
                .write(&mut out);
            } else if kind < 100 {
                next_peer = (next_peer + 1) % peers.len();
                let completed = if a.steady {
                    !next_peer.is_multiple_of(4)
                } else {
                    rng.below(4) != 0
                };
                let mut id = [0u8; 20];
                id[..8].copy_from_slice(&(next_peer as u64).to_be_bytes());
                Request::Announce(AnnounceRequest {
                    connection_id: ids[sock],
                    transaction_id: tid,
                    info_hash: hashes[p_torrent as usize],
                    peer_id: PeerId(id),
                    downloaded: 50,
                    left: if completed { 0 } else { 50 },
                    uploaded: 50,
                    event: if a.steady {
                        AnnounceEvent::None
                    } else if completed {
                        AnnounceEvent::Completed
                    } else {
                        AnnounceEvent::Started
                    },
                    ip: 0,
                    key: 0,
                    numwant: 30,
                    port,
                    url_data: Vec::new(),
                })
                .write(&mut out);
            } else {
                let info_hashes = (0..10).map(|_| hashes[rng.below(hashes.len())]).collect();
                Request::Scrape(ScrapeRequest {
                    connection_id: ids[sock],
                    transaction_id: tid,
                    info_hashes,
                })
                .write(&mut out);
            }
            let _ = sockets[sock].send(&out);
            sent += 1;
        }
        for (i, s) in sockets.iter().enumerate() {
            while let Ok(n) = s.recv(&mut buf) {
                received += 1;
                // Keep connection ids fresh from connect answers, as a client would.
                if n >= 16 && buf[..4] == [0, 0, 0, 0] {
                    ids[i] = ConnectionId(u64::from_be_bytes(buf[8..16].try_into().unwrap()));
                }
            }
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    // Answers still in flight.
    std::thread::sleep(Duration::from_millis(200));
    for s in &sockets {
        while s.recv(&mut buf).is_ok() {
            received += 1;
        }
    }
    println!(
        "sent {sent} received {received} in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
