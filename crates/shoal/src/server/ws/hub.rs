//! What one node knows of its WebSocket connections, outside the swarm: where to send a
//! frame for a connection, which connection holds a peer id in a torrent, and which offers
//! are waiting for an answer (docs/design.md, "WebSocket").

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use protocol::ws::{Bytes20, Endpoint};
use protocol::{InfoHash, PeerId};
use tokio::sync::mpsc;

/// A frame on its way to a connection.
pub type Frame = String;

/// An offer sent to a connection, waiting for its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct OfferKey {
    info_hash: InfoHash,
    offer_id: Bytes20,
    /// The connection the offer went to: only it may answer.
    to: u32,
}

struct Pending {
    from: Offerer,
    expires: Instant,
}

/// Who made an offer: a connection of some node (this one or another), and its peer id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offerer {
    pub node: u32,
    pub conn: u32,
    pub peer: PeerId,
}

#[derive(Default)]
struct Offers {
    pending: HashMap<OfferKey, Pending>,
    /// Insertion order, for expiry and the bound.
    order: VecDeque<(Instant, OfferKey)>,
}

pub struct Hub {
    /// This node's half of every endpoint it hands out.
    node: u32,
    next: AtomicU32,
    conns: Mutex<HashMap<u32, Outbox>>,
    /// Which connection holds a peer id in a torrent: another cannot take it over.
    holders: Mutex<HashMap<(InfoHash, PeerId), u32>>,
    offers: Mutex<Offers>,
    offer_timeout: Duration,
    max_offers: usize,
}

/// A connection's queue: frames and their bytes, both bounded, so a reader that stops
/// reading holds at most `max_bytes` of frames however large each is.
#[derive(Clone)]
struct Outbox {
    tx: mpsc::Sender<Frame>,
    queued: Arc<AtomicUsize>,
    max_bytes: usize,
}

/// The receiving end of a connection's queue.
pub struct Queue {
    rx: mpsc::Receiver<Frame>,
    queued: Arc<AtomicUsize>,
}

impl Queue {
    pub async fn recv(&mut self) -> Option<Frame> {
        let f = self.rx.recv().await?;
        self.queued.fetch_sub(f.len(), Relaxed);
        Some(f)
    }

    /// `out` and up to `max` frames more that are already waiting.
    pub fn drain_into(&mut self, mut out: Vec<Frame>, max: usize) -> Vec<Frame> {
        while out.len() < max {
            match self.rx.try_recv() {
                Ok(f) => {
                    self.queued.fetch_sub(f.len(), Relaxed);
                    out.push(f);
                }
                Err(_) => break,
            }
        }
        out
    }

    pub fn close(&mut self) {
        self.rx.close();
    }
}

/// Why a frame for another connection was not queued.
#[derive(Debug, PartialEq, Eq)]
pub enum Undelivered {
    /// The connection is gone.
    Gone,
    /// Its queue is full: a reader slower than its peers write.
    Full,
}

impl Hub {
    /// `node`: the endpoints' node half (a cluster node's incarnation); `max_offers`: the
    /// most offers waiting at once, the oldest forgotten first.
    pub fn new(node: u32, offer_timeout: Duration, max_offers: usize) -> Self {
        Hub {
            node,
            next: AtomicU32::new(1),
            conns: Mutex::default(),
            holders: Mutex::default(),
            offers: Mutex::default(),
            offer_timeout,
            max_offers,
        }
    }

    /// A new connection: its number, and the receiving end of its queue (at most `frames`
    /// frames and `max_bytes` bytes).
    pub fn open(&self, frames: usize, max_bytes: usize) -> (u32, Queue) {
        let (tx, rx) = mpsc::channel(frames);
        let queued = Arc::new(AtomicUsize::new(0));
        let outbox = Outbox {
            tx,
            queued: queued.clone(),
            max_bytes,
        };
        let mut conns = self.conns.lock().unwrap();
        let conn = loop {
            // Wraps after four billion connections; skip numbers still open.
            let n = self.next.fetch_add(1, Relaxed);
            if n != 0 && !conns.contains_key(&n) {
                break n;
            }
        };
        conns.insert(conn, outbox);
        (conn, Queue { rx, queued })
    }

    /// The endpoint of the peer in `slot` of connection `conn` of this node.
    pub fn endpoint(&self, conn: u32, slot: u16) -> Endpoint {
        Endpoint {
            node: self.node,
            conn,
            slot,
        }
    }

    /// The connection closed: its peer ids are free again.
    pub fn close(&self, conn: u32, held: impl Iterator<Item = (InfoHash, PeerId)>) {
        self.conns.lock().unwrap().remove(&conn);
        let mut holders = self.holders.lock().unwrap();
        for k in held {
            if holders.get(&k) == Some(&conn) {
                holders.remove(&k);
            }
        }
    }

    pub fn is_mine(&self, e: Endpoint) -> bool {
        e.node == self.node
    }

    /// This node's half of its endpoints.
    pub fn node(&self) -> u32 {
        self.node
    }

    /// Claims `peer_id` in `h` for `conn`; false if another open connection holds it.
    pub fn hold(&self, h: InfoHash, peer_id: PeerId, conn: u32) -> bool {
        let mut holders = self.holders.lock().unwrap();
        match holders.get(&(h, peer_id)) {
            Some(&other) if other != conn && self.conns.lock().unwrap().contains_key(&other) => {
                false
            }
            _ => {
                holders.insert((h, peer_id), conn);
                true
            }
        }
    }

    pub fn release(&self, h: InfoHash, peer_id: PeerId, conn: u32) {
        let mut holders = self.holders.lock().unwrap();
        if holders.get(&(h, peer_id)) == Some(&conn) {
            holders.remove(&(h, peer_id));
        }
    }

    /// Queues `frame` for `conn` without waiting.
    pub fn send(&self, conn: u32, frame: Frame) -> Result<(), Undelivered> {
        let Some(out) = self.conns.lock().unwrap().get(&conn).cloned() else {
            return Err(Undelivered::Gone);
        };
        let len = frame.len();
        if out.queued.fetch_add(len, Relaxed) + len > out.max_bytes {
            out.queued.fetch_sub(len, Relaxed);
            return Err(Undelivered::Full);
        }
        match out.tx.try_send(frame) {
            Ok(()) => Ok(()),
            Err(e) => {
                out.queued.fetch_sub(len, Relaxed);
                match e {
                    mpsc::error::TrySendError::Full(_) => Err(Undelivered::Full),
                    mpsc::error::TrySendError::Closed(_) => Err(Undelivered::Gone),
                }
            }
        }
    }

    /// Queues an offer for connection `to` of this node and remembers who may be answered.
    pub fn offer(
        &self,
        to: u32,
        key: (InfoHash, Bytes20),
        from: Offerer,
        frame: Frame,
    ) -> Result<(), Undelivered> {
        self.send(to, frame)?;
        let now = Instant::now();
        let k = OfferKey {
            info_hash: key.0,
            offer_id: key.1,
            to,
        };
        let mut o = self.offers.lock().unwrap();
        // Room for one more, unless the offer replaces one already waiting.
        let keep = match o.pending.contains_key(&k) {
            true => self.max_offers,
            false => self.max_offers.saturating_sub(1),
        };
        o.expire(now, keep);
        o.pending.insert(
            k,
            Pending {
                from,
                expires: now + self.offer_timeout,
            },
        );
        o.order.push_back((now + self.offer_timeout, k));
        Ok(())
    }

    /// Where an answer from `to` goes: only for an offer it was really sent, from the peer
    /// the answer names, not yet expired; the offer is then spent.
    pub fn answer(&self, to: u32, key: (InfoHash, Bytes20), offerer: PeerId) -> Option<Offerer> {
        let k = OfferKey {
            info_hash: key.0,
            offer_id: key.1,
            to,
        };
        let mut o = self.offers.lock().unwrap();
        let now = Instant::now();
        let p = o.pending.get(&k)?;
        if p.expires <= now || p.from.peer != offerer {
            return None;
        }
        let from = p.from;
        o.pending.remove(&k);
        Some(from)
    }

    /// Offers waiting for an answer.
    pub fn pending_offers(&self) -> usize {
        self.offers.lock().unwrap().pending.len()
    }
}

impl Offers {
    /// Forgets expired offers, and the oldest beyond `keep`.
    fn expire(&mut self, now: Instant, keep: usize) {
        while let Some(&(at, k)) = self.order.front() {
            if at > now && self.pending.len() <= keep {
                break;
            }
            self.order.pop_front();
            // A key offered again later has a later expiry: keep that one.
            if self.pending.get(&k).is_some_and(|p| p.expires <= at) {
                self.pending.remove(&k);
            }
        }
        if self.order.len() > 2 * self.pending.len() + 64 {
            self.order
                .retain(|(at, k)| self.pending.get(k).is_some_and(|p| p.expires == *at));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: InfoHash = InfoHash([1; 20]);
    const O: Bytes20 = Bytes20([2; 20]);

    #[test]
    fn an_answer_goes_only_to_its_offerer_once_and_in_time() {
        let hub = Hub::new(9, Duration::from_millis(50), 100);
        let (a, _ra) = hub.open(8, 1 << 20);
        let (b, mut rb) = hub.open(8, 1 << 20);
        let (c, _rc) = hub.open(8, 1 << 20);
        let alice = PeerId([b'a'; 20]);
        let from = Offerer {
            node: 9,
            conn: a,
            peer: alice,
        };
        hub.offer(b, (H, O), from, "offer".into()).unwrap();
        assert_eq!(rb.rx.try_recv().unwrap(), "offer");
        assert_eq!(hub.answer(c, (H, O), alice), None, "not sent to c");
        assert_eq!(
            hub.answer(b, (H, O), PeerId([b'x'; 20])),
            None,
            "names another offerer"
        );
        assert_eq!(hub.answer(b, (H, O), alice), Some(from));
        assert_eq!(hub.answer(b, (H, O), alice), None, "spent");
        hub.offer(b, (H, O), from, "again".into()).unwrap();
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(hub.answer(b, (H, O), alice), None, "expired");
    }

    #[test]
    fn offers_are_bounded_and_a_full_queue_drops() {
        let hub = Hub::new(9, Duration::from_secs(60), 3);
        let (a, _ra) = hub.open(2, 1 << 20);
        let (b, _rb) = hub.open(100, 1 << 20);
        for i in 0..10u8 {
            let from = Offerer {
                node: 9,
                conn: a,
                peer: PeerId([0; 20]),
            };
            hub.offer(b, (H, Bytes20([i; 20])), from, String::new())
                .unwrap();
        }
        assert!(hub.pending_offers() <= 3, "{}", hub.pending_offers());
        assert_eq!(hub.send(a, "1".into()), Ok(()));
        assert_eq!(hub.send(a, "2".into()), Ok(()));
        assert_eq!(hub.send(a, "3".into()), Err(Undelivered::Full));
        hub.close(a, std::iter::empty());
        assert_eq!(hub.send(a, "4".into()), Err(Undelivered::Gone));
        // A byte budget bounds what a reader that stopped holds, however large each frame.
        let (c, mut rc) = hub.open(100, 10);
        assert_eq!(hub.send(c, "x".repeat(8)), Ok(()));
        assert_eq!(hub.send(c, "y".repeat(8)), Err(Undelivered::Full));
        assert_eq!(rc.rx.try_recv().map(|f| f.len()), Ok(8));
        rc.queued.fetch_sub(8, Relaxed);
        assert_eq!(hub.send(c, "y".repeat(8)), Ok(()), "room again once read");
    }

    #[test]
    fn a_peer_id_held_by_an_open_connection_cannot_be_taken() {
        let hub = Hub::new(9, Duration::from_secs(60), 10);
        let (a, _ra) = hub.open(2, 1 << 20);
        let (b, _rb) = hub.open(2, 1 << 20);
        let p = PeerId([7; 20]);
        assert!(hub.hold(H, p, a));
        assert!(hub.hold(H, p, a), "its own again");
        assert!(!hub.hold(H, p, b));
        assert!(hub.hold(InfoHash([3; 20]), p, b), "another torrent");
        hub.close(a, [(H, p)].into_iter());
        assert!(hub.hold(H, p, b), "free once a closed");
    }

    /// What the hub does, drawn in random orders and held to a plain model: an answer
    /// reaches the offerer of an offer that went to the answering connection, naming that
    /// offerer, once; an offer made again replaces the first; a peer id is held by at most
    /// one open connection per torrent; pending offers stay within their bound.
    mod model {
        use super::*;
        use proptest::prelude::*;
        use std::collections::HashMap;

        #[derive(Debug, Clone)]
        enum Op {
            Offer {
                from: usize,
                to: usize,
                offer: u8,
                peer: u8,
            },
            Answer {
                by: usize,
                offer: u8,
                names: u8,
            },
            Hold {
                conn: usize,
                peer: u8,
            },
            Close {
                conn: usize,
            },
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                (0..4usize, 0..4usize, 0..3u8, 0..3u8).prop_map(|(from, to, offer, peer)| {
                    Op::Offer {
                        from,
                        to,
                        offer,
                        peer,
                    }
                }),
                (0..4usize, 0..3u8, 0..3u8).prop_map(|(by, offer, names)| Op::Answer {
                    by,
                    offer,
                    names
                }),
                (0..4usize, 0..3u8).prop_map(|(conn, peer)| Op::Hold { conn, peer }),
                (0..4usize).prop_map(|conn| Op::Close { conn }),
            ]
        }

        proptest! {
            #[test]
            fn the_hub_follows_the_model(ops in proptest::collection::vec(op(), 1..80)) {
                const MAX: usize = 5;
                let hub = Hub::new(1, Duration::from_secs(600), MAX);
                let conns: Vec<(u32, Queue)> = (0..4).map(|_| hub.open(1000, 1 << 20)).collect();
                let ids: Vec<u32> = conns.iter().map(|c| c.0).collect();
                let mut open = [true; 4];
                // (offer id, to) -> offerer (conn index, peer), in insertion order for the bound.
                let mut pending: Vec<((u8, usize), (usize, u8))> = Vec::new();
                let mut holders: HashMap<u8, usize> = HashMap::new();
                for op in ops {
                    match op {
                        Op::Offer { from, to, offer, peer } => {
                            let from_o = Offerer { node: 1, conn: ids[from], peer: PeerId([peer; 20]) };
                            let sent = hub.offer(ids[to], (H, Bytes20([offer; 20])), from_o, "o".into());
                            prop_assert_eq!(sent.is_ok(), open[to]);
                            if open[to] {
                                pending.retain(|(k, _)| *k != (offer, to));
                                pending.push(((offer, to), (from, peer)));
                                // The hub forgets the oldest beyond its bound.
                                while pending.len() > MAX {
                                    pending.remove(0);
                                }
                            }
                        }
                        Op::Answer { by, offer, names } => {
                            let got = hub.answer(ids[by], (H, Bytes20([offer; 20])), PeerId([names; 20]));
                            let at = pending.iter().position(|(k, v)| *k == (offer, by) && v.1 == names);
                            match at {
                                Some(i) => {
                                    let (_, (from, _)) = pending.remove(i);
                                    prop_assert_eq!(got.map(|o| o.conn), Some(ids[from]));
                                }
                                None => prop_assert!(got.is_none()),
                            }
                        }
                        Op::Hold { conn, peer } => {
                            let free = holders.get(&peer).is_none_or(|&c| c == conn || !open[c]);
                            prop_assert_eq!(hub.hold(H, PeerId([peer; 20]), ids[conn]), free);
                            if free {
                                holders.insert(peer, conn);
                            }
                        }
                        Op::Close { conn } => {
                            let held: Vec<_> = holders.iter().filter(|(_, c)| **c == conn).map(|(p, _)| (H, PeerId([*p; 20]))).collect();
                            hub.close(ids[conn], held.into_iter());
                            holders.retain(|_, c| *c != conn);
                            open[conn] = false;
                        }
                    }
                    prop_assert!(hub.pending_offers() <= MAX);
                }
            }
        }
    }
}
