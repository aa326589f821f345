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

use protocol::ResponsePeer;
use protocol::udp::{
    self, AnnounceResponse, ConnectResponse, ErrorResponse, Request, ScrapeResponse, ScrapeStats,
};

use self::connection_id::ConnectionIds;
use self::io::{BATCH, Io, MsgBatch};
use crate::tracker::{Action, Batch, ErrorKind, Now, PeerAnnounce, Protocol::Udp, Tracker};

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
    let mut warm = Batch::with_capacity(BATCH);
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
                tracker.warm(&mut warm, a.info_hash, src.ip(), a.port, a.left);
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
                (packet.len(), src),
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
/// the datagram gets no answer. The codec around `Tracker`: it checks what only UDP has
/// (the connection id), and encodes what the tracker decided.
pub fn handle(
    t: &Tracker,
    ids: &ConnectionIds,
    request: Result<Request, udp::ParseError>,
    (request_len, src): (usize, SocketAddr),
    now: Now,
    out: &mut Vec<u8>,
    peers: &mut Vec<ResponsePeer>,
) {
    // An error answer is never longer than the request (BEP 15 amplification).
    let error = |transaction_id, message: &str, out: &mut Vec<u8>| {
        ErrorResponse {
            transaction_id,
            message,
        }
        .write(request_len, out)
    };
    let request = match request {
        Ok(r) => r,
        Err(e) => {
            t.count_error(Udp, e.action().map(Action::from), ErrorKind::from(&e));
            // Too short to hold a transaction id, or too long: nothing to answer.
            if let Some(transaction_id) = e.transaction_id() {
                error(transaction_id, &e.to_string(), out);
            }
            return;
        }
    };
    let (action, transaction_id, connection_id) = match &request {
        Request::Connect { transaction_id } => {
            t.count_connect();
            let connection_id = ids.issue(&src, now.unix);
            return ConnectResponse {
                transaction_id: *transaction_id,
                connection_id,
            }
            .write(out);
        }
        Request::Announce(a) => (Action::Announce, a.transaction_id, a.connection_id),
        Request::Scrape(s) => (Action::Scrape, s.transaction_id, s.connection_id),
    };
    if !ids.is_valid(connection_id, &src, now.unix) {
        t.count_error(Udp, Some(action), ErrorKind::BadConnectionId);
        return error(transaction_id, "connection id expired or invalid", out);
    }
    match request {
        Request::Connect { .. } => {}
        Request::Announce(a) => {
            // BEP 41: udp://host:port/announce/<key> arrives as URL data.
            let key = Some(a.url_last_segment()).filter(|k| !k.is_empty() && *k != b"announce");
            let announce = PeerAnnounce {
                info_hash: a.info_hash,
                peer_id: a.peer_id,
                ip: src.ip(),
                port: a.port,
                left: a.left,
                event: a.event,
                numwant: (a.numwant > 0).then_some(a.numwant as u32),
                key,
            };
            peers.clear();
            match t.announce(Udp, &announce, now, peers) {
                Ok(answer) => AnnounceResponse {
                    transaction_id,
                    interval: answer.interval,
                    leechers: answer.leechers,
                    seeders: answer.seeders,
                    peers,
                }
                .write(out),
                Err(refused) => error(transaction_id, &refused.to_string(), out),
            }
        }
        Request::Scrape(s) => match t.scrape(Udp, &s.info_hashes, None, now) {
            Ok(counts) => ScrapeResponse {
                transaction_id,
                stats: counts.map(|st| ScrapeStats {
                    seeders: st.seeders,
                    completed: u32::try_from(st.downloaded).unwrap_or(u32::MAX),
                    leechers: st.leechers,
                }),
            }
            .write(out),
            Err(refused) => error(transaction_id, &refused.to_string(), out),
        },
    }
}

#[cfg(test)]
mod tests;
