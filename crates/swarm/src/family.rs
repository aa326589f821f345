//! The peers of one address family in one torrent: flat records, seeders first, a hash index
//! and per-address counts only for large swarms.

use std::hash::{BuildHasher, Hash};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use hashbrown::{DefaultHashBuilder, HashMap};
use protocol::{AnnounceEvent, PeerId, ResponsePeer};

use crate::slots::{Slots, prefetch, prefetch_range};
use crate::{PeerState, Refusal};

mod sweep;

pub(crate) use sweep::Renewal;

/// Below this many peers a list is searched linearly (a few cache lines); from it on, a hash
/// index of positions keeps announces O(1) in swarms of any size.
pub(crate) const INDEX_FROM: usize = 24;

/// The bytes of an address of one family.
pub(crate) trait Ip: Copy + Eq + Hash {
    fn socket(self, port: u16) -> SocketAddr;
}

impl Ip for [u8; 4] {
    fn socket(self, port: u16) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::from(self), port))
    }
}

impl Ip for [u8; 16] {
    fn socket(self, port: u16) -> SocketAddr {
        SocketAddr::from((Ipv6Addr::from(self), port))
    }
}

/// A peer is its endpoint, IP and port: two clients behind one NAT stay apart, nobody can
/// evict a peer by sending its id from elsewhere, and a client that restarts with a new peer
/// id replaces its old record instead of being counted twice. The id is only carried along.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Peer<A> {
    id: PeerId,
    ip: A,
    port: u16,
    seen: u32,
    /// In a cluster: `OWNED` if this node answered the peer's last announce, with the low
    /// 15 bits of the second its record last went on the bus; otherwise the `Origin::Node`
    /// index of the incarnation whose record is the latest (0: none). It sits in what was
    /// padding, so a peer is no larger for it.
    lease: u16,
}

/// `Peer::lease`: this node owns the peer and publishes its changes.
pub(crate) const OWNED: u16 = 0x8000;
/// The other 15 bits: a lease's second, or a remote peer's origin.
const LOW: u16 = !OWNED;

/// The longest interval between lease renewals the 15 bits of a lease can time, in
/// seconds (`Policy::lease_every` must stay below it).
pub const MAX_LEASE_EVERY: u32 = LOW as u32;

pub(crate) fn lease_at(now: u32) -> u16 {
    OWNED | (now as u16 & LOW)
}

/// Who wrote a record on the bus (docs/design.md, "Agreement"): this node's current
/// incarnation, or another one, named by an index below `0x8000` that the cluster layer
/// keeps per incarnation (indexes are local; only their equality matters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Origin {
    Me,
    Node(u16),
}

impl Origin {
    /// The largest index a `Node` may carry.
    pub const MAX_NODE: u16 = LOW;
}

impl<A: Ip> Peer<A> {
    pub(crate) fn id(&self) -> PeerId {
        self.id
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.ip.socket(self.port)
    }

    /// The swarm second of its last announce (or record).
    pub(crate) fn seen(&self) -> u32 {
        self.seen
    }

    /// The peer as a record placed by `lease` (see `lease`'s layout above).
    pub(crate) fn with_lease(self, lease: u16) -> Self {
        Peer { lease, ..self }
    }

    pub(crate) fn is(&self, other: &Peer<A>) -> bool {
        self.port == other.port && self.ip == other.ip
    }

    pub(crate) fn hash(&self, hasher: &DefaultHashBuilder) -> u64 {
        hasher.hash_one((&self.ip, self.port))
    }

    pub(crate) fn owned(&self) -> bool {
        self.lease & OWNED != 0
    }

    /// Whose record placed the peer here.
    pub(crate) fn owner(&self) -> Origin {
        if self.owned() {
            Origin::Me
        } else {
            Origin::Node(self.lease)
        }
    }

    /// Whether an owned peer's last record is `every` seconds old or more.
    fn lease_due(&self, now: u32, every: u32) -> bool {
        let age = (now as u16 & LOW).wrapping_sub(self.lease & LOW) & LOW;
        u32::from(age) >= every
    }
}

/// The peers of one address family in one torrent: seeders first (`..seeders`), then
/// leechers, so a seeder's answer is a window over the leechers alone and a peer changing
/// role is one swap across the boundary.
#[derive(Debug)]
pub(crate) struct Family<A> {
    peers: Vec<Peer<A>>,
    /// u32, so that the per-IP counts fit beside it in the 56 bytes a family had before.
    seeders: u32,
    /// Where the next answer's window starts: answers walk round the list, so repeated
    /// announces spread over the whole swarm, and a batch can prefetch the window.
    cursor: u32,
    /// Positions in `peers`, hashed by identity; only for large swarms.
    index: Option<Slots>,
    /// Peers per IP, beside the index (a short list is counted by a scan).
    per_ip: Option<Box<HashMap<A, u32>>>,
}

impl<A> Default for Family<A> {
    fn default() -> Self {
        Family {
            peers: Vec::new(),
            seeders: 0,
            cursor: 0,
            index: None,
            per_ip: None,
        }
    }
}

/// Whether a new peer may join a family.
#[derive(Clone, Copy)]
pub(crate) struct Admission {
    /// The tracker holds `max_peers` peers.
    pub(crate) tracker_full: bool,
    /// The torrent holds `max_peers_per_torrent` peers.
    pub(crate) torrent_full: bool,
    pub(crate) per_ip: usize,
}

/// What an announce changed in a swarm's counts.
#[derive(Default)]
pub(crate) struct Change {
    pub(crate) seeders: i64,
    pub(crate) leechers: i64,
    pub(crate) completed: bool,
    /// In a cluster: the other nodes must hear of this announce (a join, a role change, a
    /// departure, a lease renewal due, or a peer another node owned until now).
    pub(crate) publish: bool,
}

impl<A: Ip> Family<A> {
    pub(crate) fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    pub(crate) fn len(&self) -> usize {
        self.peers.len()
    }

    /// Every peer with whether it seeds.
    pub(crate) fn with_roles(&self) -> impl Iterator<Item = (&Peer<A>, bool)> {
        let seeders = self.seeders as usize;
        self.peers
            .iter()
            .enumerate()
            .map(move |(i, p)| (p, i < seeders))
    }

    pub(crate) fn counts(&self) -> (usize, usize) {
        (
            self.seeders as usize,
            self.peers.len() - self.seeders as usize,
        )
    }

    pub(crate) fn find(&self, p: &Peer<A>, hash: u64) -> Option<usize> {
        match &self.index {
            Some(index) => index.find(hash, |i| self.peers[i].is(p)),
            None => self.peers.iter().position(|q| q.is(p)),
        }
    }

    pub(crate) fn swap(&mut self, a: usize, b: usize, hasher: &DefaultHashBuilder) {
        if a == b {
            return;
        }
        if let Some(index) = &mut self.index {
            let (ha, hb) = (self.peers[a].hash(hasher), self.peers[b].hash(hasher));
            index.swap(ha, a, hb, b);
        }
        self.peers.swap(a, b);
    }

    /// How many peers of this family announce from `ip`.
    pub(crate) fn peers_at(&self, ip: &A) -> usize {
        match &self.per_ip {
            Some(counts) => counts.get(ip).map_or(0, |n| *n as usize),
            None => self.peers.iter().filter(|q| q.ip == *ip).count(),
        }
    }

    /// Adds a peer known to be absent.
    pub(crate) fn push(
        &mut self,
        p: Peer<A>,
        hash: u64,
        seeder: bool,
        hasher: &DefaultHashBuilder,
    ) {
        let at = self.peers.len();
        // Past the index threshold a full list grows by a quarter, not double: at internet
        // size most peers are in large swarms, and doubling leaves a third of them slack.
        if at == self.peers.capacity() && at >= INDEX_FROM {
            self.peers.reserve_exact(at / 4);
        }
        self.peers.push(p);
        if let Some(counts) = &mut self.per_ip {
            *counts.entry(p.ip).or_default() += 1;
        }
        match &mut self.index {
            Some(index) => index.insert(hash, at, self.peers.len()),
            None if self.peers.len() >= INDEX_FROM => self.rebuild_index(hasher),
            None => {}
        }
        if seeder {
            self.swap(at, self.seeders as usize, hasher);
            self.seeders += 1;
        }
    }

    pub(crate) fn remove_at(&mut self, mut at: usize, hasher: &DefaultHashBuilder) {
        if at < self.seeders as usize {
            // Move it to the last seeder's place, which then becomes the first leecher's.
            self.swap(at, self.seeders as usize - 1, hasher);
            self.seeders -= 1;
            at = self.seeders as usize;
        }
        let last = self.peers.len() - 1;
        if let Some(counts) = &mut self.per_ip
            && let Some(n) = counts.get_mut(&self.peers[at].ip)
        {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.peers[at].ip);
            }
        }
        if let Some(index) = &mut self.index {
            index.remove(self.peers[at].hash(hasher), at);
            if at != last {
                index.repoint(self.peers[last].hash(hasher), last, at);
            }
        }
        self.peers.swap_remove(at);
        if self.index.is_some() && self.peers.len() < INDEX_FROM / 2 {
            self.index = None;
            self.per_ip = None;
        }
    }

    pub(crate) fn rebuild_index(&mut self, hasher: &DefaultHashBuilder) {
        if self.peers.len() < INDEX_FROM {
            self.index = None;
            self.per_ip = None;
            return;
        }
        let mut index = Slots::with_capacity(self.peers.len());
        let mut counts: HashMap<A, u32> = HashMap::new();
        for (i, p) in self.peers.iter().enumerate() {
            index.insert(p.hash(hasher), i, i + 1);
            *counts.entry(p.ip).or_default() += 1;
        }
        self.index = Some(index);
        self.per_ip = Some(Box::new(counts));
    }

    /// Records the announce of `p`. A peer not yet in the list joins only within `room`.
    /// `lease_every` is 0 on a single node, else the seconds between lease renewals.
    pub(crate) fn update(
        &mut self,
        mut p: Peer<A>,
        left: u64,
        event: AnnounceEvent,
        hasher: &DefaultHashBuilder,
        room: Admission,
        lease_every: u32,
    ) -> Result<Change, Refusal> {
        let mut c = Change::default();
        let hash = p.hash(hasher);
        let found = self.find(&p, hash);
        let clustered = lease_every > 0;
        if event == AnnounceEvent::Stopped {
            // A stop is the client leaving: every node must hear it, whether or not this
            // node knew the peer (its join may still be on its way here).
            c.publish = clustered;
            if let Some(at) = found {
                self.leave(at, hasher, &mut c);
            }
            return Ok(c);
        }
        let seeder = left == 0;
        match found {
            Some(at) => {
                // The endpoint's latest announce wins, whatever peer id it carries now.
                let q = &mut self.peers[at];
                let new_id = q.id != p.id;
                q.seen = p.seen;
                q.id = p.id;
                let was_seeder = at < self.seeders as usize;
                if clustered
                    && (!q.owned()
                        || q.lease_due(p.seen, lease_every)
                        || seeder != was_seeder
                        || new_id)
                {
                    c.publish = true;
                    q.lease = lease_at(p.seen);
                }
                // One download per leecher that says it completed; a repeated `completed`
                // from a peer that is already a seeder counts nothing.
                c.completed =
                    self.set_role(at, seeder, hasher, &mut c) && event == AnnounceEvent::Completed;
            }
            None => {
                if clustered {
                    c.publish = true;
                    p.lease = lease_at(p.seen);
                }
                self.join(p, hash, seeder, hasher, room, &mut c)?;
            }
        }
        Ok(c)
    }

    /// Applies a record read from the bus; `p` carries the time and lease `Swarm::apply`
    /// made for its origin, `stale` says its lease ran out before it arrived. Every node
    /// applies every record in stream order by these rules, so two nodes that read the same
    /// entries hold the same view (docs/design.md, "Agreement"):
    /// - a record is applied the same way by its writer, when it reads it back, as by every
    ///   other node: a newer local change of the writer's comes back later in the stream;
    /// - a join or role change places the peer, owned by its writer;
    /// - a stop removes the endpoint whoever owns it: the client left;
    /// - an expiry removes it only if its writer owns it here: a node that saw the client
    ///   later keeps it.
    pub(crate) fn apply(
        &mut self,
        p: Peer<A>,
        origin: Origin,
        state: PeerState,
        stale: bool,
        hasher: &DefaultHashBuilder,
        room: Admission,
    ) -> Result<Change, Refusal> {
        let mut c = Change::default();
        let hash = p.hash(hasher);
        let found = self.find(&p, hash);
        let seeder = match state {
            PeerState::Stopped => {
                if let Some(at) = found {
                    self.leave(at, hasher, &mut c);
                }
                return Ok(c);
            }
            PeerState::Expired => {
                if let Some(at) = found.filter(|&at| self.peers[at].owner() == origin) {
                    self.leave(at, hasher, &mut c);
                }
                return Ok(c);
            }
            PeerState::Seeder => true,
            PeerState::Leecher => false,
        };
        match found {
            // The latest record of an endpoint wins; one whose lease already ran out leaves
            // it as a sweep would.
            Some(at) if stale => self.leave(at, hasher, &mut c),
            None if stale => {}
            Some(at) => {
                let q = &mut self.peers[at];
                // Read back by its writer, a record is older than the announces since.
                if !(origin == Origin::Me && q.owned()) {
                    q.seen = p.seen;
                    q.lease = p.lease;
                }
                q.id = p.id;
                self.set_role(at, seeder, hasher, &mut c);
            }
            None => self.join(p, hash, seeder, hasher, room, &mut c)?,
        }
        Ok(c)
    }

    fn leave(&mut self, at: usize, hasher: &DefaultHashBuilder, c: &mut Change) {
        if at < self.seeders as usize {
            c.seeders = -1;
        } else {
            c.leechers = -1;
        }
        self.remove_at(at, hasher);
    }

    /// Moves the peer at `at` to the seeders or the leechers; true if it became a seeder.
    fn set_role(
        &mut self,
        at: usize,
        seeder: bool,
        hasher: &DefaultHashBuilder,
        c: &mut Change,
    ) -> bool {
        let was_seeder = at < self.seeders as usize;
        if seeder && !was_seeder {
            self.swap(at, self.seeders as usize, hasher);
            self.seeders += 1;
            (c.seeders, c.leechers) = (1, -1);
            return true;
        }
        if !seeder && was_seeder {
            self.swap(at, self.seeders as usize - 1, hasher);
            self.seeders -= 1;
            (c.seeders, c.leechers) = (-1, 1);
        }
        false
    }

    fn join(
        &mut self,
        p: Peer<A>,
        hash: u64,
        seeder: bool,
        hasher: &DefaultHashBuilder,
        room: Admission,
        c: &mut Change,
    ) -> Result<(), Refusal> {
        if room.tracker_full {
            return Err(Refusal::Peers);
        }
        if room.torrent_full {
            return Err(Refusal::PeersPerTorrent);
        }
        if self.peers_at(&p.ip) >= room.per_ip {
            return Err(Refusal::PeersPerIp);
        }
        self.push(p, hash, seeder, hasher);
        if seeder {
            c.seeders = 1;
        } else {
            c.leechers = 1;
        }
        Ok(())
    }

    /// The peers an answer draws from: leechers only, or everyone.
    pub(crate) fn candidates(&self, only_leechers: bool) -> &[Peer<A>] {
        &self.peers[if only_leechers {
            self.seeders as usize
        } else {
            0
        }..]
    }

    /// Appends up to `n - out.len()` peers from the window at the cursor, wrapping round,
    /// and moves the cursor past them. `skip` is the asker.
    pub(crate) fn pick(
        &mut self,
        only_leechers: bool,
        skip: Option<&Peer<A>>,
        n: usize,
        out: &mut Vec<ResponsePeer>,
    ) {
        let range = self.candidates(only_leechers);
        if range.is_empty() || out.len() >= n {
            return;
        }
        let start = self.cursor as usize % range.len();
        let (tail, head) = range.split_at(start);
        let before = out.len();
        for p in head.iter().chain(tail) {
            if out.len() >= n {
                break;
            }
            if !skip.is_some_and(|s| s.is(p)) {
                out.push(ResponsePeer {
                    peer_id: p.id,
                    addr: p.ip.socket(p.port),
                });
            }
        }
        self.cursor = self.cursor.wrapping_add((out.len() - before) as u32);
    }

    /// Prefetch, third pass: the peer list, or for an indexed family where `p`'s probe
    /// starts and the next answer's window. Returns `p`'s hash when there is an index to
    /// follow.
    pub(crate) fn warm_list(
        &self,
        p: &Peer<A>,
        only_leechers: bool,
        hasher: &DefaultHashBuilder,
    ) -> Option<u64> {
        match &self.index {
            Some(index) => {
                let h = p.hash(hasher);
                prefetch(index.home(h));
                let range = self.candidates(only_leechers);
                if !range.is_empty() {
                    let window = &range[self.cursor as usize % range.len()..];
                    prefetch_range(window.as_ptr(), size_of_val(window));
                }
                Some(h)
            }
            // Unindexed lists are short: all of it, for the search and the answer.
            None => {
                prefetch_range(self.peers.as_ptr(), size_of_val(&self.peers[..]));
                None
            }
        }
    }

    /// Prefetch, fourth pass: the asker's record in an indexed family.
    pub(crate) fn warm_peer(&self, hash: u64) {
        if let Some(at) = self.index.as_ref().and_then(|i| i.guess(hash)) {
            prefetch(self.peers.as_ptr().wrapping_add(at));
        }
    }
}

/// The announcing peer, as a record of its family.
#[derive(Clone, Copy)]
pub(crate) enum Announcer {
    V4(Peer<[u8; 4]>),
    V6(Peer<[u8; 16]>),
    /// A WebSocket peer: its endpoint is its connection (`protocol::ws::Endpoint`).
    Rtc(Peer<[u8; 16]>),
}

impl Announcer {
    pub(crate) fn new(id: PeerId, addr: SocketAddr, seen: u32) -> Self {
        match addr {
            SocketAddr::V4(a) => Announcer::V4(Peer {
                id,
                ip: a.ip().octets(),
                port: a.port(),
                seen,
                lease: 0,
            }),
            SocketAddr::V6(a) => {
                let p = Peer {
                    id,
                    ip: a.ip().octets(),
                    port: a.port(),
                    seen,
                    lease: 0,
                };
                if protocol::ws::is_endpoint_ip(&p.ip) {
                    Announcer::Rtc(p)
                } else {
                    Announcer::V6(p)
                }
            }
        }
    }
}
