//! The UDP tracker (BEP 15): worker threads that take datagrams in batches and answer from
//! the swarm, never waiting on anything but the socket.

pub mod connection_id;
pub mod io;

use std::io as stdio;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::thread::JoinHandle;
use std::time::Duration;

use protocol::udp::{
    self, AnnounceResponse, ConnectResponse, ErrorResponse, Request, ScrapeResponse, ScrapeStats,
    TransactionId,
};
use protocol::{CanonicalIp, ResponsePeer};
use swarm::{Families, Warm};

use self::connection_id::ConnectionIds;
use self::io::{BATCH, Io, MsgBatch};
use crate::tracker::access::Refusal;
use crate::tracker::metrics::{Action, Protocol::Udp};
use crate::tracker::{Now, PeerAnnounce, Tracker};

/// Starts `workers` threads answering on `socket` until `stop` is set. Each blocks in a
/// batched receive; the socket's read timeout bounds how long a stop takes to be seen.
pub fn spawn(
    socket: &UdpSocket,
    tracker: &Arc<Tracker>,
    ids: &Arc<ConnectionIds>,
    workers: usize,
    stop: &Arc<AtomicBool>,
) -> stdio::Result<Vec<JoinHandle<()>>> {
    socket.set_read_timeout(Some(Duration::from_millis(100)))?;
    let mut threads = Vec::new();
    for n in 0..workers {
        let (socket, tracker, stop) = (socket.try_clone()?, tracker.clone(), stop.clone());
        let ids = ids.clone();
        let thread = std::thread::Builder::new()
            .name(format!("shoal-udp-{n}"))
            .spawn(move || serve(&socket, &tracker, &ids, &stop))?;
        threads.push(thread);
    }
    Ok(threads)
}

/// The largest answer: a full announce of IPv6 peers, a full scrape, or an error (never
/// larger than the request).
fn max_answer(max_numwant: u32) -> usize {
    (20 + 18 * max_numwant as usize)
        .max(8 + 12 * udp::MAX_SCRAPE_HASHES)
        .max(udp::MAX_REQUEST_LEN)
}

fn serve(socket: &UdpSocket, tracker: &Tracker, ids: &ConnectionIds, stop: &AtomicBool) {
    // One byte more than the largest request tells an oversized datagram from a full one.
    let mut inbox = MsgBatch::new(udp::MAX_REQUEST_LEN + 1);
    let mut outbox = MsgBatch::new(max_answer(tracker.policy().max_numwant.get()));
    let mut io = Io::new();
    let mut out = Vec::with_capacity(1500);
    let mut peers = Vec::with_capacity(tracker.policy().max_numwant.get() as usize);
    let mut warm = Vec::with_capacity(BATCH);
    let mut parsed = Vec::with_capacity(BATCH);
    while !stop.load(Relaxed) {
        // Timeouts let the loop see `stop`; ICMP errors from earlier sends surface here on
        // Linux and concern nobody now.
        let Ok(n) = io.recv(socket, &mut inbox) else {
            continue;
        };
        // Each datagram is parsed once. Most of an announce is waiting on memory: start every
        // lookup of the batch before answering any of it.
        warm.clear();
        parsed.clear();
        for i in 0..n {
            let (packet, src) = inbox.get(i);
            let request = Request::parse(packet);
            if let (Ok(Request::Announce(a)), Some(src)) = (&request, src) {
                warm.push(Warm {
                    info_hash: a.info_hash,
                    addr: CanonicalIp::from(src.ip()).with_port(a.port),
                    only_leechers: tracker.only_leechers(a.left),
                });
            }
            parsed.push(request);
        }
        tracker.prefetch(&warm);
        let now = tracker.now();
        for (i, request) in parsed.drain(..).enumerate() {
            let (packet, src) = inbox.get(i);
            let Some(src) = src else { continue };
            out.clear();
            handle(
                tracker,
                ids,
                request,
                packet.len(),
                src,
                now,
                &mut out,
                &mut peers,
            );
            if !out.is_empty() {
                outbox.push(&out, src);
            }
        }
        io.send(socket, &mut outbox);
    }
}

/// Answers one parsed datagram of `request_len` bytes into `out`; leaves `out` empty when
/// the datagram gets no answer.
#[allow(clippy::too_many_arguments)]
pub fn handle(
    t: &Tracker,
    ids: &ConnectionIds,
    request: Result<Request, udp::ParseError>,
    request_len: usize,
    src: SocketAddr,
    now: Now,
    out: &mut Vec<u8>,
    peers: &mut Vec<ResponsePeer>,
) {
    let request = match request {
        Ok(r) => r,
        Err(e) => {
            // Too short to hold a transaction id, or too long: nothing to answer, only to count.
            t.metrics()
                .error(Udp, e.action().map(Action::from), e.kind());
            if let Some(transaction_id) = e.transaction_id() {
                let message = &e.to_string();
                ErrorResponse {
                    transaction_id,
                    message,
                }
                .write(request_len, out);
            }
            return;
        }
    };
    match request {
        Request::Connect { transaction_id } => {
            t.metrics().request(Udp, Action::Connect);
            ConnectResponse {
                transaction_id,
                connection_id: ids.issue(&src, now.unix),
            }
            .write(out);
        }
        Request::Announce(a) => {
            if !ids.is_valid(a.connection_id, &src, now.unix) {
                return refuse_connection(t, Action::Announce, a.transaction_id, request_len, out);
            }
            // BEP 41: udp://host:port/announce/<key> arrives as URL data.
            let key = Some(a.url_last_segment()).filter(|k| !k.is_empty() && *k != b"announce");
            if let Err(r) = t
                .access()
                .check_announce(&a.info_hash, key, i64::from(now.unix))
            {
                return refuse(t, Action::Announce, r, a.transaction_id, request_len, out);
            }
            t.metrics().request(Udp, Action::Announce);
            peers.clear();
            let announced = t.announce_at(
                &PeerAnnounce {
                    info_hash: a.info_hash,
                    peer_id: a.peer_id,
                    ip: src.ip(),
                    port: a.port,
                    left: a.left,
                    event: a.event,
                    numwant: (a.numwant > 0).then_some(a.numwant as u32),
                    // The socket's family sets the peer format of the whole answer.
                    families: Families::Same,
                },
                now.uptime,
                peers,
            );
            let stats = match announced {
                Ok(stats) => stats,
                Err(limit) => {
                    t.metrics().error(Udp, Some(Action::Announce), limit.key());
                    ErrorResponse {
                        transaction_id: a.transaction_id,
                        message: limit.message(),
                    }
                    .write(request_len, out);
                    return;
                }
            };
            AnnounceResponse {
                transaction_id: a.transaction_id,
                interval: t.policy().interval.get(),
                leechers: stats.leechers,
                seeders: stats.seeders,
                peers,
            }
            .write(out);
        }
        Request::Scrape(s) => {
            if !ids.is_valid(s.connection_id, &src, now.unix) {
                return refuse_connection(t, Action::Scrape, s.transaction_id, request_len, out);
            }
            if let Err(r) = t
                .access()
                .check_scrape(&s.info_hashes, None, i64::from(now.unix))
            {
                return refuse(t, Action::Scrape, r, s.transaction_id, request_len, out);
            }
            t.metrics().request(Udp, Action::Scrape);
            ScrapeResponse {
                transaction_id: s.transaction_id,
                stats: s.info_hashes.iter().map(|h| {
                    let st = t.scrape(h);
                    ScrapeStats {
                        seeders: st.seeders,
                        completed: u32::try_from(st.downloaded).unwrap_or(u32::MAX),
                        leechers: st.leechers,
                    }
                }),
            }
            .write(out);
        }
    }
}

fn refuse_connection(
    t: &Tracker,
    action: Action,
    transaction_id: TransactionId,
    request_len: usize,
    out: &mut Vec<u8>,
) {
    t.metrics().error(Udp, Some(action), "bad_connection_id");
    ErrorResponse {
        transaction_id,
        message: "connection id expired or invalid",
    }
    .write(request_len, out);
}

fn refuse(
    t: &Tracker,
    action: Action,
    r: Refusal,
    transaction_id: TransactionId,
    request_len: usize,
    out: &mut Vec<u8>,
) {
    t.metrics().error(Udp, Some(action), r.kind());
    ErrorResponse {
        transaction_id,
        message: &r.to_string(),
    }
    .write(request_len, out);
}
