//! `shoal bench udp-swarm`: the population of `bench swarm`, over UDP to any BEP 15 tracker.
//! Every peer sends from its own address in 127.0.0.0/8 through one socket (`IP_PKTINFO`
//! names each datagram's source), connects once per address as a client does (again when
//! the id is a minute old), and announces its own port. Fills the tracker to each size, then
//! re-announces random peers for a while; prints a JSON line per phase, and a line when a
//! steady phase starts so that a script can read the tracker's CPU time around it.

use std::io::Write;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use protocol::AnnounceEvent;
use protocol::udp::{AnnounceRequest, ConnectionId, Request, TransactionId};
use serde_json::json;

use super::population::{Population, Shape, mix};
use crate::cmd::{Error, Result};

/// Fill a UDP tracker with a Zipf-like population, each peer from its own loopback address,
/// and measure its answer rate at each size. Prints JSON lines.
#[derive(clap::Args)]
pub struct Args {
    #[arg(long, default_value = "127.0.0.1:3000", value_name = "ADDR")]
    pub server: SocketAddrV4,
    #[command(flatten)]
    pub shape: Shape,
    /// Seconds of re-announces at each size.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Requests in flight.
    #[arg(long, default_value_t = 512)]
    pub window: usize,
    /// Steady phases at each size.
    #[arg(long, default_value_t = 1)]
    pub rounds: u32,
    /// Wait for a line on standard input before each phase, so that a script can
    /// interleave several trackers (scripts/bench-scale).
    #[arg(long)]
    pub paced: bool,
    /// After the steady phases, every leecher announces `completed` once: one download per
    /// leecher pending in the tracker (scripts/bench-scale times their flush at SIGTERM).
    #[arg(long)]
    pub complete: bool,
    /// Instead of the steady phases: a quarter of the peers (filled first) fall silent while
    /// the rest re-announce at `--expire-rate` until this many seconds after the fill began;
    /// the answers are timed while the tracker's expiry removes the quarter (one size only).
    #[arg(long, default_value_t = 0)]
    pub expire_secs: u64,
    /// Re-announces per second during `--expire-secs`, open loop.
    #[arg(long, default_value_t = 20_000)]
    pub expire_rate: u64,
    /// With `--expire-secs`: seconds of silence between the quarter's fill and the rest's,
    /// so the tracker's expiry takes the quarter well before any of the rest is due.
    #[arg(long, default_value_t = 0)]
    pub expire_gap: u64,
}

/// What a phase's announces say.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// A leecher's first announce says `started`.
    Fill,
    Steady,
    /// A leecher finished: `completed`, nothing left.
    Complete,
}

const BATCH: usize = 64;
const PACKET: usize = 128;
/// A connection id older than this is renewed (BEP 15 ids live two minutes).
const ID_AGE: u64 = 60;

/// One socket bound to the wildcard address (so that replies to any 127/8 address reach
/// it), sending each datagram from the address `IP_PKTINFO` names.
pub(super) struct Wire {
    sock: UdpSocket,
    server: SocketAddrV4,
    pub(super) out: Vec<([u8; PACKET], usize, Ipv4Addr)>,
    inbox: Vec<[u8; PACKET]>,
}

impl Wire {
    fn new(server: SocketAddrV4) -> Result<Self> {
        let sock = UdpSocket::bind("0.0.0.0:0").map_err(Error::io("binding the load socket"))?;
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .map_err(Error::io("setting a read timeout"))?;
        let fd = sock.as_raw_fd();
        let big: libc::c_int = 16 << 20;
        // SAFETY: plain setsockopt calls on our socket with an int option.
        unsafe {
            let p = (&big as *const libc::c_int).cast();
            let len = size_of::<libc::c_int>() as libc::socklen_t;
            // FORCE passes rmem_max when root; otherwise the plain option, capped.
            if libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, p, len) != 0 {
                libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, p, len);
            }
        }
        Ok(Wire {
            sock,
            server,
            out: Vec::with_capacity(BATCH),
            inbox: vec![[0; PACKET]; BATCH],
        })
    }

    fn queue(&mut self, from: Ipv4Addr, r: &Request) {
        let mut buf = Vec::with_capacity(PACKET);
        r.write(&mut buf);
        let mut p = [0u8; PACKET];
        p[..buf.len()].copy_from_slice(&buf);
        self.out.push((p, buf.len(), from));
    }

    /// Sends what is queued; returns how many went.
    pub(super) fn flush(&mut self) -> usize {
        let n = self.out.len();
        if n == 0 {
            return 0;
        }
        const CMSG: usize = 64;
        // SAFETY: zeroed C structs; every pointer set below points into these locals or
        // `self.out`, alive and unmoved until sendmmsg returns.
        let mut hdrs: Vec<libc::mmsghdr> = (0..n).map(|_| unsafe { zeroed() }).collect();
        let mut iovs: Vec<libc::iovec> = Vec::with_capacity(n);
        let mut ctrl = vec![[0u64; CMSG / 8]; n];
        let mut dst: libc::sockaddr_in = unsafe { zeroed() };
        dst.sin_family = libc::AF_INET as libc::sa_family_t;
        dst.sin_port = self.server.port().to_be();
        dst.sin_addr.s_addr = u32::from(*self.server.ip()).to_be();
        for (p, len, _) in &mut self.out {
            iovs.push(libc::iovec {
                iov_base: p.as_mut_ptr().cast(),
                iov_len: *len,
            });
        }
        for i in 0..n {
            let h = &mut hdrs[i].msg_hdr;
            h.msg_name = (&mut dst as *mut libc::sockaddr_in).cast();
            h.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
            h.msg_iov = &mut iovs[i];
            h.msg_iovlen = 1;
            h.msg_control = ctrl[i].as_mut_ptr().cast();
            h.msg_controllen = CMSG as _;
            // SAFETY: the control buffer is CMSG bytes, room for one in_pktinfo message.
            unsafe {
                let c = libc::CMSG_FIRSTHDR(h);
                (*c).cmsg_level = libc::IPPROTO_IP;
                (*c).cmsg_type = libc::IP_PKTINFO;
                (*c).cmsg_len = libc::CMSG_LEN(size_of::<libc::in_pktinfo>() as u32) as _;
                let info = libc::CMSG_DATA(c).cast::<libc::in_pktinfo>();
                let mut pi: libc::in_pktinfo = zeroed();
                pi.ipi_spec_dst.s_addr = u32::from(self.out[i].2).to_be();
                info.write_unaligned(pi);
                h.msg_controllen = libc::CMSG_SPACE(size_of::<libc::in_pktinfo>() as u32) as _;
            }
        }
        let (mut at, mut sent) = (0, 0);
        while at < n {
            // SAFETY: headers from `at` on are initialised above.
            let r = unsafe {
                libc::sendmmsg(
                    self.sock.as_raw_fd(),
                    hdrs[at..].as_mut_ptr(),
                    (n - at) as u32,
                    0,
                )
            };
            if r <= 0 {
                at += 1;
            } else {
                at += r as usize;
                sent += r as usize;
            }
        }
        self.out.clear();
        sent
    }

    /// Waits for answers (200 ms at most) and hands each datagram from the server to `f`;
    /// returns how many came.
    fn recv(&mut self, f: impl FnMut(&[u8])) -> usize {
        self.recv_with(libc::MSG_WAITFORONE, f)
    }

    /// `recv` with `recvmmsg`'s flags: `MSG_DONTWAIT` takes only what has come.
    pub(super) fn recv_with(&mut self, flags: libc::c_int, mut f: impl FnMut(&[u8])) -> usize {
        // SAFETY: as in `flush`: zeroed headers pointing into `self.inbox` and locals.
        let mut hdrs: Vec<libc::mmsghdr> = (0..BATCH).map(|_| unsafe { zeroed() }).collect();
        let mut names: Vec<libc::sockaddr_in> = (0..BATCH).map(|_| unsafe { zeroed() }).collect();
        let mut iovs: Vec<libc::iovec> = self
            .inbox
            .iter_mut()
            .map(|b| libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: PACKET,
            })
            .collect();
        for i in 0..BATCH {
            let h = &mut hdrs[i].msg_hdr;
            h.msg_name = (&mut names[i] as *mut libc::sockaddr_in).cast();
            h.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
            h.msg_iov = &mut iovs[i];
            h.msg_iovlen = 1;
        }
        // SAFETY: every header points at live buffers of the sizes given.
        let n = unsafe {
            libc::recvmmsg(
                self.sock.as_raw_fd(),
                hdrs.as_mut_ptr(),
                BATCH as u32,
                flags,
                std::ptr::null_mut(),
            )
        };
        let server_ip = u32::from(*self.server.ip()).to_be();
        let mut got = 0;
        for i in 0..n.max(0) as usize {
            // Only the tracker's answers: the wildcard socket could hear anyone.
            if names[i].sin_addr.s_addr != server_ip
                || names[i].sin_port != self.server.port().to_be()
            {
                continue;
            }
            got += 1;
            f(&self.inbox[i][..(hdrs[i].msg_len as usize).min(PACKET)]);
        }
        got
    }
}

/// What one phase sent and got.
#[derive(Default)]
pub(super) struct Tally {
    pub(super) connects: u64,
    pub(super) announces: u64,
    pub(super) errors: u64,
    pub(super) lost: u64,
}

pub(super) struct Load {
    pub(super) pop: Population,
    pub(super) wire: Wire,
    /// Connection id per address index, and the second it came (0: none yet).
    pub(super) ids: Vec<u64>,
    pub(super) issued: Vec<u32>,
    started: Instant,
    window: usize,
}

impl Load {
    pub(super) fn address(i: u64) -> usize {
        (i % ((1 << 24) - 2)) as usize
    }

    pub(super) fn secs(&self) -> u32 {
        self.started.elapsed().as_secs() as u32 + 1
    }

    /// Queues peer `i`'s next request: a connect if its address has no fresh id.
    pub(super) fn queue(&mut self, i: u64, phase: Phase) {
        let p = self.pop.peer(i);
        let a = Self::address(i);
        let tid = TransactionId(i as u32);
        if self.issued[a] == 0 || u64::from(self.secs() - self.issued[a]) > ID_AGE {
            self.wire.queue(
                p.ip,
                &Request::Connect {
                    transaction_id: tid,
                },
            );
            return;
        }
        let r = Request::Announce(AnnounceRequest {
            connection_id: ConnectionId(self.ids[a]),
            transaction_id: tid,
            info_hash: p.info_hash,
            peer_id: p.peer_id,
            downloaded: 0,
            left: if p.seeder || phase == Phase::Complete {
                0
            } else {
                1 << 20
            },
            uploaded: 0,
            event: match phase {
                Phase::Fill if !p.seeder => AnnounceEvent::Started,
                Phase::Complete => AnnounceEvent::Completed,
                _ => AnnounceEvent::None,
            },
            ip: 0,
            key: i as u32,
            numwant: 50,
            port: p.port,
            url_data: Vec::new(),
        });
        self.wire.queue(p.ip, &r);
    }

    /// Runs peers from `next` until `done` says stop, `window` requests in flight.
    pub(super) fn run(&mut self, mut next: impl FnMut() -> Option<u64>, phase: Phase) -> Tally {
        let mut t = Tally::default();
        let mut flying = 0usize;
        let mut more = true;
        // Peer numbers by transaction id's answer: the id is the peer's number.
        let mut again: Vec<u64> = Vec::with_capacity(BATCH);
        while more || flying > 0 {
            while more && flying + self.wire.out.len() < self.window {
                match again.pop().or_else(&mut next) {
                    Some(i) => self.queue(i, phase),
                    None => more = false,
                }
                if self.wire.out.len() == BATCH {
                    flying += self.wire.flush();
                }
            }
            flying += self.wire.flush();
            let now = self.secs();
            let (ids, issued) = (&mut self.ids, &mut self.issued);
            let got = self.wire.recv(|d| {
                if d.len() < 8 {
                    return;
                }
                let action = u32::from_be_bytes(d[..4].try_into().unwrap());
                let i = u64::from(u32::from_be_bytes(d[4..8].try_into().unwrap()));
                match action {
                    0 if d.len() >= 16 => {
                        let a = Self::address(i);
                        ids[a] = u64::from_be_bytes(d[8..16].try_into().unwrap());
                        issued[a] = now;
                        t.connects += 1;
                        again.push(i);
                    }
                    1 => t.announces += 1,
                    _ => t.errors += 1,
                }
            });
            flying = flying.saturating_sub(got);
            if got == 0 && flying > 0 {
                // Nothing for 200 ms: what is still out was dropped.
                t.lost += flying as u64;
                flying = 0;
            }
            // Connect answers put their peers back; announce them now, before new ones.
            while let Some(i) = again.pop() {
                self.queue(i, phase);
                if self.wire.out.len() == BATCH {
                    flying += self.wire.flush();
                }
            }
        }
        t
    }
}

/// The generator for `a`: the sizes to fill to and the load that fills them.
pub(super) fn start(a: &Args) -> Result<(Vec<u64>, Load)> {
    let (sizes, pop) = a.shape.resolve()?;
    let largest = *sizes.last().unwrap_or(&1);
    if largest > u64::from(u32::MAX) {
        return Err(Error::Said(
            "at most 4 294 967 295 peers (their numbers are transaction ids)".into(),
        ));
    }
    let addresses = largest.min((1 << 24) - 2) as usize;
    let load = Load {
        pop,
        wire: Wire::new(a.server)?,
        ids: vec![0; addresses],
        issued: vec![0; addresses],
        started: Instant::now(),
        window: a.window.max(1),
    };
    Ok((sizes, load))
}

/// Prints one JSON line at once, for the script reading it.
pub(super) fn line(v: serde_json::Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}

/// With `--paced`, waits for a line on standard input before a phase.
pub(super) fn go(a: &Args) {
    if a.paced {
        let mut l = String::new();
        // End of input ends the run, as a script that stopped would want.
        if std::io::stdin().read_line(&mut l).unwrap_or(0) == 0 {
            std::process::exit(0);
        }
    }
}

/// The fill and steady phases (`--expire-secs` runs `udp_expiry::main` instead).
pub fn run(a: Args) -> Result<()> {
    let (sizes, mut load) = start(&a)?;
    let mut filled = 0u64;
    let go = || go(&a);
    for &size in &sizes {
        go();
        let started = Instant::now();
        let from = filled;
        let t = load.run(
            || {
                (filled < size).then(|| {
                    filled += 1;
                    filled - 1
                })
            },
            Phase::Fill,
        );
        line(json!({
            "phase": "filled", "peers": size, "secs": started.elapsed().as_secs_f64(),
            "announces": t.announces, "expected": size - from, "connects": t.connects,
            "errors": t.errors, "lost": t.lost,
        }));
        for round in 0..a.rounds {
            go();
            line(json!({"phase": "steady_start", "peers": size, "round": round}));
            let started = Instant::now();
            let end = started + Duration::from_secs(a.seconds);
            let mut k = size;
            let t = load.run(
                || {
                    k += 1;
                    (Instant::now() < end).then(|| mix(k) % size)
                },
                Phase::Steady,
            );
            let secs = started.elapsed().as_secs_f64();
            line(json!({
                "phase": "steady", "peers": size, "secs": secs,
                "answers_per_sec": (t.announces + t.connects) as f64 / secs,
                "announces_per_sec": t.announces as f64 / secs,
                "connects": t.connects, "errors": t.errors, "lost": t.lost, "round": round,
            }));
        }
        if a.complete {
            go();
            let started = Instant::now();
            let pop = load.pop;
            let mut leechers = (0..size).filter(move |&i| !pop.peer(i).seeder);
            let t = load.run(|| leechers.next(), Phase::Complete);
            line(json!({
                "phase": "completed", "peers": size, "secs": started.elapsed().as_secs_f64(),
                "announces": t.announces, "errors": t.errors, "lost": t.lost,
            }));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AnnounceConfig, Mode};
    use crate::tracker::Tracker;
    use std::net::SocketAddr;

    /// Against Shoal's own UDP server: every peer lands, each from its own address.
    #[test]
    fn a_small_population_fills_a_tracker_from_many_addresses() {
        let t = std::sync::Arc::new(Tracker::new(
            AnnounceConfig::default(),
            Mode::Public,
            swarm::Limits::NONE,
        ));
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let server = match sock.local_addr().unwrap() {
            SocketAddr::V4(a) => a,
            _ => unreachable!(),
        };
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let ids = std::sync::Arc::new(crate::server::udp::connection_id::ConnectionIds::default());
        let workers = crate::server::udp::spawn(&sock, &t, &ids, 1, &stop).unwrap();
        let pop = Population {
            torrents: 50,
            zipf: 1.0,
            seeders: 0.6,
        };
        let mut load = Load {
            pop,
            wire: Wire::new(server).unwrap(),
            ids: vec![0; 3000],
            issued: vec![0; 3000],
            started: Instant::now(),
            window: 64,
        };
        let mut n = 0u64;
        let tally = load.run(
            || {
                (n < 3000).then(|| {
                    n += 1;
                    n - 1
                })
            },
            Phase::Fill,
        );
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        workers.into_iter().for_each(|w| w.join().unwrap());
        assert_eq!((tally.announces, tally.errors, tally.lost), (3000, 0, 0));
        assert_eq!(tally.connects, 3000, "one connect per address");
        let st = t.stats();
        assert_eq!(st.seeders + st.leechers, 3000);
        // The peers came from their own addresses: the busiest torrent lists many.
        let top = t.peers(&Population::info_hash(0));
        let distinct: std::collections::HashSet<_> = top.iter().map(|p| p.addr.ip()).collect();
        assert!(
            distinct.len() > 100 && distinct.len() == top.len(),
            "{} of {}",
            distinct.len(),
            top.len()
        );
    }
}
