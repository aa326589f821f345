//! The in-memory state of every torrent: who is in each swarm, how many have downloaded it,
//! which peers an announce gets back, and when silent peers leave. No I/O.
//!
//! Time is passed in as whole seconds from any fixed origin, so tests can move it.
//!
//! Memory is the design constraint here: a public tracker holds millions of peers and many
//! millions of counted torrents. A peer is a flat 32-byte record (44 for IPv6) in a vector;
//! only swarms past `INDEX_FROM` peers get a hash index of positions beside it. A torrent
//! with a count but no peers is 28 bytes in a sorted array.
//!
//! Memory latency is the other constraint: at that size nearly every lookup misses the
//! cache. The torrent tables and indexes are `slots::Slots`, whose probe addresses follow
//! from a hash, so `Swarm::prefetch` can start the misses of a whole batch at once.

use std::hash::{BuildHasher, Hash};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Mutex, MutexGuard};

use hashbrown::{DefaultHashBuilder, HashMap};
use protocol::{AnnounceEvent, InfoHash, PeerId, ResponsePeer};

mod slots;
use slots::{Slots, prefetch, prefetch_range};

/// Which address families an answer may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Families {
    /// Only the requester's own family: a UDP answer has one peer format, set by the socket.
    Same,
    /// IPv4 and IPv6: HTTP has `peers` and `peers6`.
    Both,
}

#[derive(Debug, Clone, Copy)]
pub struct Announce {
    pub info_hash: InfoHash,
    pub peer_id: PeerId,
    /// The peer's IP as seen on the socket, with the port it announced. IPv4-mapped IPv6
    /// addresses must already be IPv4 (the caller canonicalises, once per request).
    pub addr: SocketAddr,
    pub left: u64,
    pub event: AnnounceEvent,
    /// Already capped by the caller's policy.
    pub numwant: usize,
    pub families: Families,
}

/// How a swarm behaves, fixed when it is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub limits: Limits,
    /// Whether a seeder's answer may list other seeders (by default it gets only leechers).
    pub seeders_get_seeders: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            limits: Limits::NONE,
            seeders_get_seeders: false,
        }
    }
}

/// What `Swarm::prefetch` needs to know of an announce.
#[derive(Debug, Clone, Copy)]
pub struct Warm {
    pub info_hash: InfoHash,
    /// As in `Announce::addr`: canonical IP, announced port.
    pub addr: SocketAddr,
    /// As `only_leechers` says for the announce.
    pub only_leechers: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TorrentStats {
    pub seeders: u32,
    pub leechers: u32,
    pub downloaded: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SwarmStats {
    /// Torrents with at least one peer.
    pub torrents: u64,
    /// Torrents with a download count, with or without peers.
    pub counted_torrents: u64,
    pub seeders: u64,
    pub leechers: u64,
    /// Download increments not yet taken by the flusher.
    pub pending_deltas: u64,
    /// Downloads of torrents without a count that `max_counted_torrents` kept from counting.
    pub uncounted_downloads: u64,
}

/// What the swarm may hold, so a hostile client cannot make it hold more (DESIGN section 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Torrents with peers.
    pub max_torrents: usize,
    /// Peers in all torrents together.
    pub max_peers: usize,
    /// Peers in one torrent, both families together.
    pub max_peers_per_torrent: usize,
    /// Peers from one IP address in one torrent.
    pub max_peers_per_ip: usize,
    /// Download counts held (with peers or without); past it a first download of a torrent
    /// is not counted. Counts loaded at start are always kept.
    pub max_counted_torrents: usize,
}

impl Limits {
    pub const NONE: Limits = Limits {
        max_torrents: usize::MAX,
        max_peers: usize::MAX,
        max_peers_per_torrent: usize::MAX,
        max_peers_per_ip: usize::MAX,
        max_counted_torrents: usize::MAX,
    };
}

/// Why an announce was not recorded: which limit it met.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Torrents,
    Peers,
    PeersPerTorrent,
    PeersPerIp,
}

impl Refusal {
    /// The limit's configuration key under `[limits]`.
    pub fn key(self) -> &'static str {
        match self {
            Refusal::Torrents => "max_torrents",
            Refusal::Peers => "max_peers",
            Refusal::PeersPerTorrent => "max_peers_per_torrent",
            Refusal::PeersPerIp => "max_peers_per_ip",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            Refusal::Torrents => {
                "tracker full: it holds limits.max_torrents torrents and takes no new one"
            }
            Refusal::Peers => "tracker full: it holds limits.max_peers peers and takes no new one",
            Refusal::PeersPerTorrent => {
                "swarm full: this torrent has limits.max_peers_per_torrent peers"
            }
            Refusal::PeersPerIp => {
                "too many peers from your address in this torrent (limits.max_peers_per_ip)"
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Expired {
    pub peers: u64,
    pub torrents: u64,
}

/// Below this many peers a list is searched linearly (a few cache lines); from it on, a hash
/// index of positions keeps announces O(1) in swarms of any size.
const INDEX_FROM: usize = 24;

/// The bytes of an address of one family.
trait Ip: Copy + Eq + Hash {
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
struct Peer<A> {
    id: PeerId,
    ip: A,
    port: u16,
    seen: u32,
}

impl<A: Ip> Peer<A> {
    fn is(&self, other: &Peer<A>) -> bool {
        self.port == other.port && self.ip == other.ip
    }

    fn hash(&self, hasher: &DefaultHashBuilder) -> u64 {
        hasher.hash_one((&self.ip, self.port))
    }
}

/// The peers of one address family in one torrent: seeders first (`..seeders`), then
/// leechers, so a seeder's answer is a window over the leechers alone and a peer changing
/// role is one swap across the boundary.
#[derive(Debug)]
struct Family<A> {
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
struct Room {
    /// The tracker holds `max_peers` peers.
    tracker_full: bool,
    /// The torrent holds `max_peers_per_torrent` peers.
    torrent_full: bool,
    per_ip: usize,
}

/// What an announce changed in a swarm's counts.
#[derive(Default)]
struct Change {
    seeders: i64,
    leechers: i64,
    completed: bool,
}

impl<A: Ip> Family<A> {
    fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    fn counts(&self) -> (usize, usize) {
        (
            self.seeders as usize,
            self.peers.len() - self.seeders as usize,
        )
    }

    fn find(&self, p: &Peer<A>, hash: u64) -> Option<usize> {
        match &self.index {
            Some(index) => index.find(hash, |i| self.peers[i].is(p)),
            None => self.peers.iter().position(|q| q.is(p)),
        }
    }

    fn swap(&mut self, a: usize, b: usize, hasher: &DefaultHashBuilder) {
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
    fn peers_at(&self, ip: &A) -> usize {
        match &self.per_ip {
            Some(counts) => counts.get(ip).map_or(0, |n| *n as usize),
            None => self.peers.iter().filter(|q| q.ip == *ip).count(),
        }
    }

    /// Adds a peer known to be absent.
    fn push(&mut self, p: Peer<A>, hash: u64, seeder: bool, hasher: &DefaultHashBuilder) {
        let at = self.peers.len();
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

    fn remove_at(&mut self, mut at: usize, hasher: &DefaultHashBuilder) {
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

    fn rebuild_index(&mut self, hasher: &DefaultHashBuilder) {
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
    fn update(
        &mut self,
        p: Peer<A>,
        left: u64,
        event: AnnounceEvent,
        hasher: &DefaultHashBuilder,
        room: Room,
    ) -> Result<Change, Refusal> {
        let mut c = Change::default();
        let hash = p.hash(hasher);
        let found = self.find(&p, hash);
        if event == AnnounceEvent::Stopped {
            if let Some(at) = found {
                if at < self.seeders as usize {
                    c.seeders = -1;
                } else {
                    c.leechers = -1;
                }
                self.remove_at(at, hasher);
            }
            return Ok(c);
        }
        let seeder = left == 0;
        match found {
            Some(at) => {
                // The endpoint's latest announce wins, whatever peer id it carries now.
                self.peers[at].seen = p.seen;
                self.peers[at].id = p.id;
                let was_seeder = at < self.seeders as usize;
                if seeder && !was_seeder {
                    self.swap(at, self.seeders as usize, hasher);
                    self.seeders += 1;
                    (c.seeders, c.leechers) = (1, -1);
                    // One download per leecher that says it completed; a repeated `completed`
                    // from a peer that is already a seeder counts nothing.
                    c.completed = event == AnnounceEvent::Completed;
                } else if !seeder && was_seeder {
                    self.swap(at, self.seeders as usize - 1, hasher);
                    self.seeders -= 1;
                    (c.seeders, c.leechers) = (-1, 1);
                }
            }
            None => {
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
            }
        }
        Ok(c)
    }

    /// The peers an answer draws from: leechers only, or everyone.
    fn candidates(&self, only_leechers: bool) -> &[Peer<A>] {
        &self.peers[if only_leechers {
            self.seeders as usize
        } else {
            0
        }..]
    }

    /// Appends up to `n - out.len()` peers from the window at the cursor, wrapping round,
    /// and moves the cursor past them. `skip` is the asker.
    fn pick(
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
    fn warm_list(
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
    fn warm_peer(&self, hash: u64) {
        if let Some(at) = self.index.as_ref().and_then(|i| i.guess(hash)) {
            prefetch(self.peers.as_ptr().wrapping_add(at));
        }
    }

    /// Drops peers last seen before `cutoff`; returns how many seeders and leechers went.
    fn expire(&mut self, cutoff: u32, hasher: &DefaultHashBuilder) -> (usize, usize) {
        let (seeders, before) = (self.seeders as usize, self.peers.len());
        let mut i = 0;
        let mut kept_seeders = 0;
        // `retain` keeps order, so seeders stay in front.
        self.peers.retain(|p| {
            let keep = p.seen >= cutoff;
            if keep && i < seeders {
                kept_seeders += 1;
            }
            i += 1;
            keep
        });
        self.seeders = kept_seeders as u32;
        let gone = before - self.peers.len();
        if gone > 0 {
            if self.peers.capacity() > 2 * self.peers.len() + 4 {
                self.peers.shrink_to_fit();
            }
            self.rebuild_index(hasher);
        }
        (seeders - kept_seeders, gone - (seeders - kept_seeders))
    }
}

/// The announcing peer, as a record of its family.
enum Asker {
    V4(Peer<[u8; 4]>),
    V6(Peer<[u8; 16]>),
}

impl Asker {
    fn new(id: PeerId, addr: SocketAddr, seen: u32) -> Self {
        match addr {
            SocketAddr::V4(a) => Asker::V4(Peer {
                id,
                ip: a.ip().octets(),
                port: a.port(),
                seen,
            }),
            SocketAddr::V6(a) => Asker::V6(Peer {
                id,
                ip: a.ip().octets(),
                port: a.port(),
                seen,
            }),
        }
    }
}

#[derive(Debug, Default)]
struct Torrent {
    v4: Family<[u8; 4]>,
    /// Most swarms have no IPv6 peer: eight bytes instead of a second family.
    v6: Option<Box<Family<[u8; 16]>>>,
    /// The torrent's download count, mirrored from `Counts` so announces need no second lookup.
    downloaded: u64,
}

impl Torrent {
    fn stats(&self) -> TorrentStats {
        let (seeders, leechers) = self.counts();
        TorrentStats {
            seeders,
            leechers,
            downloaded: self.downloaded,
        }
    }

    fn peers(&self) -> usize {
        self.v4.peers.len() + self.v6.as_ref().map_or(0, |f| f.peers.len())
    }

    fn counts(&self) -> (u32, u32) {
        let (s4, l4) = self.v4.counts();
        let (s6, l6) = self.v6.as_ref().map_or((0, 0), |f| f.counts());
        ((s4 + s6) as u32, (l4 + l6) as u32)
    }

    fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.as_ref().is_none_or(|f| f.is_empty())
    }
}

/// A persisted count of a torrent without (or before) peers. The count is split in two
/// halves so the record packs into 28 bytes.
#[derive(Debug, Clone, Copy)]
struct Cold {
    hash: InfoHash,
    count: [u32; 2],
}

impl Cold {
    fn new(hash: InfoHash, n: u64) -> Self {
        Cold {
            hash,
            count: [(n >> 32) as u32, n as u32],
        }
    }

    fn get(&self) -> u64 {
        (u64::from(self.count[0]) << 32) | u64::from(self.count[1])
    }
}

/// Download counts of one shard's torrents, with or without peers.
#[derive(Default)]
struct Counts {
    /// Counts loaded at start, sorted by hash; their values change in place.
    cold: Vec<Cold>,
    /// Counts of torrents not in `cold`.
    hot: HashMap<InfoHash, u64>,
    /// Increments not yet taken by the flusher.
    pending: HashMap<InfoHash, u64>,
}

impl Counts {
    fn cold_at(&self, h: &InfoHash) -> Result<usize, usize> {
        self.cold.binary_search_by(|c| c.hash.cmp(h))
    }

    fn get(&self, h: &InfoHash) -> u64 {
        match self.cold_at(h) {
            Ok(i) => self.cold[i].get(),
            Err(_) => self.hot.get(h).copied().unwrap_or(0),
        }
    }

    /// Counts one download; returns the new total.
    fn add_one(&mut self, h: InfoHash) -> u64 {
        *self.pending.entry(h).or_default() += 1;
        match self.cold_at(&h) {
            Ok(i) => {
                let n = self.cold[i].get() + 1;
                self.cold[i] = Cold::new(h, n);
                n
            }
            Err(_) => {
                let n = self.hot.entry(h).or_default();
                *n += 1;
                *n
            }
        }
    }

    fn len(&self) -> usize {
        self.cold.len() + self.hot.len()
    }

    fn has(&self, h: &InfoHash) -> bool {
        self.cold_at(h).is_ok() || self.hot.contains_key(h)
    }
}

/// The torrents with peers in one shard: dense entries, found through `Slots` by a keyed
/// hash of the info-hash (keyed, because anyone can choose info-hashes to collide).
#[derive(Default)]
struct Torrents {
    hasher: DefaultHashBuilder,
    slots: Slots,
    entries: Vec<(InfoHash, Torrent)>,
}

impl Torrents {
    fn hash(&self, h: &InfoHash) -> u64 {
        self.hasher.hash_one(h)
    }

    fn position(&self, h: &InfoHash, hash: u64) -> Option<usize> {
        self.slots.find(hash, |p| self.entries[p].0 == *h)
    }

    fn get(&self, h: &InfoHash) -> Option<&Torrent> {
        let at = self.position(h, self.hash(h))?;
        Some(&self.entries[at].1)
    }

    fn get_mut(&mut self, h: &InfoHash) -> Option<&mut Torrent> {
        let at = self.position(h, self.hash(h))?;
        Some(&mut self.entries[at].1)
    }

    fn contains_key(&self, h: &InfoHash) -> bool {
        self.position(h, self.hash(h)).is_some()
    }

    /// Adds a torrent known to be absent; returns its position.
    fn insert(&mut self, h: InfoHash, hash: u64, t: Torrent) -> usize {
        self.entries.push((h, t));
        let at = self.entries.len() - 1;
        self.slots.insert(hash, at, self.entries.len());
        at
    }

    fn remove_at(&mut self, at: usize) {
        self.slots.remove(self.hash(&self.entries[at].0), at);
        let last = self.entries.len() - 1;
        if at != last {
            self.slots
                .repoint(self.hash(&self.entries[last].0), last, at);
        }
        self.entries.swap_remove(at);
    }

    /// Looks at up to `budget` entries from `from` on, dropping those `keep` refuses; returns
    /// where the next call should go on, or None once the end was reached (then the table
    /// is shrunk if it has become much too large).
    fn retain_some(
        &mut self,
        from: usize,
        budget: usize,
        mut keep: impl FnMut(&mut Torrent) -> bool,
    ) -> Option<usize> {
        let mut i = from;
        for _ in 0..budget {
            if i >= self.entries.len() {
                break;
            }
            if keep(&mut self.entries[i].1) {
                i += 1;
            } else {
                // The last entry moves into `i` and is looked at next.
                self.remove_at(i);
            }
        }
        if i < self.entries.len() {
            return Some(i);
        }
        if self.entries.len() < self.entries.capacity() / 4 {
            self.entries.shrink_to_fit();
        }
        if self.slots.capacity() > 8 * self.entries.len().max(8) {
            self.slots.resize(self.entries.len());
        }
        None
    }

    fn len(&self) -> usize {
        self.entries.len()
    }

    fn keys(&self) -> impl Iterator<Item = &InfoHash> {
        self.entries.iter().map(|(h, _)| h)
    }
}

#[derive(Default)]
struct Shard {
    torrents: Torrents,
    counts: Counts,
    seeders: u64,
    leechers: u64,
}

impl Shard {
    fn stats(&self, h: &InfoHash) -> TorrentStats {
        match self.torrents.get(h) {
            Some(t) => t.stats(),
            None => TorrentStats {
                downloaded: self.counts.get(h),
                ..TorrentStats::default()
            },
        }
    }
}

pub struct Swarm {
    shards: Box<[Mutex<Shard>]>,
    hasher: DefaultHashBuilder,
    limits: Limits,
    seeders_get_seeders: bool,
    /// Torrents with peers, in all shards: checked against `max_torrents` without locks.
    held: AtomicUsize,
    /// Peers in all shards: checked against `max_peers`.
    peers: AtomicUsize,
    /// Download counts, in all shards: checked against `max_counted_torrents`.
    counted: AtomicUsize,
    uncounted: AtomicU64,
}

impl Default for Swarm {
    fn default() -> Self {
        Swarm::new(64)
    }
}

/// Collects persisted counts at start without locking, then installs them sorted.
pub struct Loader<'a> {
    swarm: &'a Swarm,
    /// Fixed-size chunks, so memory is returned chunk by chunk while they are sorted in.
    chunks: Vec<Vec<Cold>>,
}

const LOAD_CHUNK: usize = 1 << 16;

/// Torrents looked at per shard lock while expiring.
const EXPIRE_CHUNK: usize = 1024;

impl Loader<'_> {
    pub fn add(&mut self, h: InfoHash, n: u64) {
        if n == 0 {
            return;
        }
        if self.chunks.last().is_none_or(|c| c.len() == LOAD_CHUNK) {
            self.chunks.push(Vec::with_capacity(LOAD_CHUNK));
        }
        self.chunks
            .last_mut()
            .expect("a chunk")
            .push(Cold::new(h, n));
    }

    /// Sorts the counts into the shards. A hash loaded twice keeps its last count.
    pub fn finish(self) {
        let s = self.swarm;
        let mut sizes = vec![0usize; s.shards.len()];
        for c in self.chunks.iter().flatten() {
            sizes[s.shard_of(&c.hash)] += 1;
        }
        let mut parts: Vec<Vec<Cold>> = sizes.iter().map(|n| Vec::with_capacity(*n)).collect();
        for chunk in self.chunks {
            for c in chunk {
                parts[s.shard_of(&c.hash)].push(c);
            }
        }
        for (i, mut part) in parts.into_iter().enumerate() {
            if part.is_empty() {
                continue;
            }
            let mut guard = s.lock(i);
            let shard = &mut *guard;
            let before = shard.counts.len();
            part.append(&mut shard.counts.cold);
            // Stable: of two equal hashes the later one (just loaded) wins after dedup.
            part.sort_by(|a, b| a.hash.cmp(&b.hash));
            part.dedup_by(|later, earlier| {
                let same = later.hash == earlier.hash;
                if same {
                    *earlier = *later;
                }
                same
            });
            part.shrink_to_fit();
            for c in &part {
                shard.counts.hot.remove(&c.hash);
                if let Some(t) = shard.torrents.get_mut(&c.hash) {
                    t.downloaded = c.get();
                }
            }
            shard.counts.cold = part;
            let after = shard.counts.len();
            s.counted.fetch_add(after, Relaxed);
            s.counted.fetch_sub(before, Relaxed);
        }
    }
}

impl Swarm {
    /// A swarm without limits, whose seeders get only leechers (see `with_policy`).
    pub fn new(shards: usize) -> Self {
        Swarm::with_policy(shards, Policy::default())
    }

    pub fn with_policy(shards: usize, policy: Policy) -> Self {
        let shards = shards.max(1);
        Swarm {
            shards: (0..shards).map(|_| Mutex::default()).collect(),
            hasher: DefaultHashBuilder::default(),
            limits: policy.limits,
            seeders_get_seeders: policy.seeders_get_seeders,
            held: AtomicUsize::new(0),
            peers: AtomicUsize::new(0),
            counted: AtomicUsize::new(0),
            uncounted: AtomicU64::new(0),
        }
    }

    fn shard_of(&self, h: &InfoHash) -> usize {
        u64::from_le_bytes(h.0[..8].try_into().unwrap()) as usize % self.shards.len()
    }

    fn lock(&self, i: usize) -> MutexGuard<'_, Shard> {
        // A panic while holding a shard cannot leave it half-written in a way later
        // announces would trip over, so keep serving rather than poisoning every request.
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    fn shard(&self, h: &InfoHash) -> MutexGuard<'_, Shard> {
        self.lock(self.shard_of(h))
    }

    /// Whether the answer to an announce with `left` bytes to go lists leechers only: a
    /// seeder's does, unless seeders get seeders too.
    pub fn only_leechers(&self, left: u64) -> bool {
        left == 0 && !self.seeders_get_seeders
    }

    /// Records an announce and appends the peers to answer with to `out`. An announce that
    /// would take the swarm past a limit is refused and changes nothing.
    pub fn announce(
        &self,
        a: &Announce,
        now: u32,
        out: &mut Vec<ResponsePeer>,
    ) -> Result<TorrentStats, Refusal> {
        let mut guard = self.shard(&a.info_hash);
        let Shard {
            torrents,
            counts,
            seeders,
            leechers,
        } = &mut *guard;
        let hasher = &self.hasher;
        let h = a.info_hash;
        let th = torrents.hash(&h);
        let at = match torrents.position(&h, th) {
            Some(at) => at,
            None if a.event == AnnounceEvent::Stopped => {
                return Ok(TorrentStats {
                    downloaded: counts.get(&h),
                    ..TorrentStats::default()
                });
            }
            None => {
                // Checked without a lock across shards: racing announces may overshoot by
                // at most one torrent per thread.
                if self.held.load(Relaxed) >= self.limits.max_torrents {
                    return Err(Refusal::Torrents);
                }
                self.held.fetch_add(1, Relaxed);
                let t = Torrent {
                    downloaded: counts.get(&h),
                    ..Torrent::default()
                };
                torrents.insert(h, th, t)
            }
        };
        let torrent = &mut torrents.entries[at].1;
        let room = Room {
            tracker_full: self.peers.load(Relaxed) >= self.limits.max_peers,
            torrent_full: torrent.peers() >= self.limits.max_peers_per_torrent,
            per_ip: self.limits.max_peers_per_ip,
        };
        let (change, asker_v4, asker_v6) = match Asker::new(a.peer_id, a.addr, now) {
            Asker::V4(p) => (
                torrent.v4.update(p, a.left, a.event, hasher, room),
                Some(p),
                None,
            ),
            Asker::V6(p) => {
                let family = torrent.v6.get_or_insert_with(Box::default);
                (
                    family.update(p, a.left, a.event, hasher, room),
                    None,
                    Some(p),
                )
            }
        };
        let change = match change {
            Ok(c) => c,
            Err(refused) => {
                // A refusal changed nothing, but may leave a torrent made for it empty.
                self.drop_if_empty(torrents, at);
                return Err(refused);
            }
        };
        *seeders = seeders.wrapping_add_signed(change.seeders);
        *leechers = leechers.wrapping_add_signed(change.leechers);
        match change.seeders + change.leechers {
            1 => self.peers.fetch_add(1, Relaxed),
            -1 => self.peers.fetch_sub(1, Relaxed),
            _ => 0,
        };
        if change.completed {
            if counts.has(&h)
                || self.counted.fetch_add(1, Relaxed) < self.limits.max_counted_torrents
            {
                torrent.downloaded = counts.add_one(h);
            } else {
                self.counted.fetch_sub(1, Relaxed);
                self.uncounted.fetch_add(1, Relaxed);
            }
        }
        let stats = torrent.stats();

        if a.event == AnnounceEvent::Stopped {
            self.drop_if_empty(torrents, at);
            return Ok(stats);
        }
        let only_leechers = self.only_leechers(a.left);
        let v6 = torrent.v6.as_deref_mut();
        match (asker_v4, asker_v6) {
            (Some(p), _) => {
                torrent.v4.pick(only_leechers, Some(&p), a.numwant, out);
                if a.families == Families::Both
                    && let Some(f) = v6
                {
                    f.pick(only_leechers, None, a.numwant, out);
                }
            }
            (_, p) => {
                if let Some(f) = v6 {
                    f.pick(only_leechers, p.as_ref(), a.numwant, out);
                }
                if a.families == Families::Both {
                    torrent.v4.pick(only_leechers, None, a.numwant, out);
                }
            }
        }
        Ok(stats)
    }

    /// Drops the torrent at `at` if no peer is left (its count stays), or else its IPv6
    /// family if that is empty.
    fn drop_if_empty(&self, torrents: &mut Torrents, at: usize) {
        let t = &mut torrents.entries[at].1;
        if t.v6.as_ref().is_some_and(|f| f.is_empty()) {
            t.v6 = None;
        }
        if t.is_empty() {
            torrents.remove_at(at);
            self.held.fetch_sub(1, Relaxed);
        }
    }

    /// Starts loading into the cache what a batch of announces is about to touch, one level
    /// of the structure per pass over the batch, so that the batch waits on memory about as
    /// long as one announce would rather than once per announce. Only a hint: it changes
    /// nothing, and what it loads may be stale by the time the announce runs.
    pub fn prefetch(&self, batch: &[Warm]) {
        const CHUNK: usize = 32;
        for chunk in batch.chunks(CHUNK) {
            let mut hashes = [0u64; CHUNK];
            let mut at = [usize::MAX; CHUNK];
            for (i, w) in chunk.iter().enumerate() {
                let s = self.shard(&w.info_hash);
                hashes[i] = s.torrents.hash(&w.info_hash);
                prefetch(s.torrents.slots.home(hashes[i]));
            }
            for (i, w) in chunk.iter().enumerate() {
                let s = self.shard(&w.info_hash);
                if let Some(p) = s.torrents.slots.guess(hashes[i]) {
                    at[i] = p;
                    prefetch_range(&s.torrents.entries[p], size_of::<(InfoHash, Torrent)>());
                }
            }
            // From here `hashes` holds the asker's peer hash, for indexed families.
            for (i, w) in chunk.iter().enumerate() {
                if at[i] == usize::MAX {
                    continue;
                }
                let s = self.shard(&w.info_hash);
                // Another thread may have removed torrents since the last pass.
                let Some((key, t)) = s.torrents.entries.get(at[i]) else {
                    at[i] = usize::MAX;
                    continue;
                };
                let indexed = match Asker::new(PeerId([0; 20]), w.addr, 0) {
                    _ if *key != w.info_hash => None,
                    Asker::V4(p) => t.v4.warm_list(&p, w.only_leechers, &self.hasher),
                    Asker::V6(p) => {
                        t.v6.as_ref()
                            .and_then(|f| f.warm_list(&p, w.only_leechers, &self.hasher))
                    }
                };
                match indexed {
                    Some(h) => hashes[i] = h,
                    None => at[i] = usize::MAX,
                }
            }
            for (i, w) in chunk.iter().enumerate() {
                if at[i] == usize::MAX {
                    continue;
                }
                let s = self.shard(&w.info_hash);
                let Some((_, t)) = s.torrents.entries.get(at[i]) else {
                    continue;
                };
                match w.addr {
                    SocketAddr::V4(_) => t.v4.warm_peer(hashes[i]),
                    SocketAddr::V6(_) => t.v6.iter().for_each(|f| f.warm_peer(hashes[i])),
                }
            }
        }
    }

    pub fn scrape(&self, h: &InfoHash) -> TorrentStats {
        self.shard(h).stats(h)
    }

    /// A torrent's counts, or `None` when the tracker knows nothing of it (no peers, no count).
    pub fn torrent(&self, h: &InfoHash) -> Option<TorrentStats> {
        let shard = self.shard(h);
        let st = shard.stats(h);
        (shard.torrents.contains_key(h) || st.downloaded > 0).then_some(st)
    }

    /// Every known torrent ordered by info-hash, skipping `offset` and returning at most
    /// `limit`, with the total. Sorting all hashes costs O(n log n): this is for the admin
    /// API, never the announce path.
    pub fn page(&self, offset: usize, limit: usize) -> (usize, Vec<(InfoHash, TorrentStats)>) {
        let mut hashes = Vec::new();
        for i in 0..self.shards.len() {
            let s = self.lock(i);
            hashes.extend(s.torrents.keys().copied());
            hashes.extend(
                s.counts
                    .hot
                    .keys()
                    .filter(|h| !s.torrents.contains_key(*h))
                    .copied(),
            );
            hashes.extend(
                s.counts
                    .cold
                    .iter()
                    .map(|c| c.hash)
                    .filter(|h| !s.torrents.contains_key(h)),
            );
        }
        let total = hashes.len();
        let end = offset.saturating_add(limit).min(total);
        if offset >= end {
            return (total, Vec::new());
        }
        hashes.select_nth_unstable(end - 1);
        let page = &mut hashes[..end];
        page.sort_unstable();
        (
            total,
            page[offset..]
                .iter()
                .map(|h| (*h, self.scrape(h)))
                .collect(),
        )
    }

    /// Removes peers last seen before `cutoff` and drops torrents left without peers; their
    /// download counts stay. A shard is locked for `EXPIRE_CHUNK` torrents at a time, so
    /// announces wait at most that long however many torrents there are; entries moved by
    /// announces in between may be looked at twice or wait for the next pass.
    pub fn remove_expired(&self, cutoff: u32) -> Expired {
        let mut expired = Expired::default();
        for i in 0..self.shards.len() {
            let mut from = Some(0);
            while let Some(at) = from {
                let mut guard = self.lock(i);
                let shard = &mut *guard;
                let (mut gone_s, mut gone_l) = (0, 0);
                let before = shard.torrents.len();
                from = shard.torrents.retain_some(at, EXPIRE_CHUNK, |t| {
                    let (s, l) = t.v4.expire(cutoff, &self.hasher);
                    gone_s += s;
                    gone_l += l;
                    if let Some(f) = &mut t.v6 {
                        let (s, l) = f.expire(cutoff, &self.hasher);
                        gone_s += s;
                        gone_l += l;
                        if f.is_empty() {
                            t.v6 = None;
                        }
                    }
                    !t.is_empty()
                });
                shard.seeders -= gone_s as u64;
                shard.leechers -= gone_l as u64;
                let dropped = before - shard.torrents.len();
                expired.peers += (gone_s + gone_l) as u64;
                expired.torrents += dropped as u64;
                self.held.fetch_sub(dropped, Relaxed);
                self.peers.fetch_sub(gone_s + gone_l, Relaxed);
            }
        }
        expired
    }

    /// Starts loading persisted counts, as streamed from the store at start.
    pub fn loader(&self) -> Loader<'_> {
        Loader {
            swarm: self,
            chunks: Vec::new(),
        }
    }

    /// Loads persisted counts in one go (see `loader` for a stream).
    pub fn load_downloads(&self, counts: impl IntoIterator<Item = (InfoHash, u64)>) {
        let mut loader = self.loader();
        for (h, n) in counts {
            loader.add(h, n);
        }
        loader.finish();
    }

    /// Hands the flusher every download increment since the last call.
    pub fn take_pending(&self) -> Vec<(InfoHash, u64)> {
        let mut out = Vec::new();
        for i in 0..self.shards.len() {
            out.extend(self.lock(i).counts.pending.drain());
        }
        out
    }

    pub fn stats(&self) -> SwarmStats {
        let mut st = SwarmStats::default();
        for i in 0..self.shards.len() {
            let s = self.lock(i);
            st.torrents += s.torrents.len() as u64;
            st.counted_torrents += s.counts.len() as u64;
            st.seeders += s.seeders;
            st.leechers += s.leechers;
            st.pending_deltas += s.counts.pending.values().sum::<u64>();
        }
        st.uncounted_downloads = self.uncounted.load(Relaxed);
        st
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::{HashMap, HashSet};

    const IH: InfoHash = InfoHash([1; 20]);

    fn peer(n: u8, addr: &str, left: u64, event: AnnounceEvent) -> Announce {
        Announce {
            info_hash: IH,
            peer_id: PeerId([n; 20]),
            addr: addr.parse().unwrap(),
            left,
            event,
            numwant: 50,
            families: Families::Both,
        }
    }

    fn announce(s: &Swarm, a: Announce) -> (TorrentStats, Vec<ResponsePeer>) {
        let mut out = Vec::new();
        let st = s.announce(&a, 0, &mut out).unwrap();
        (st, out)
    }

    #[test]
    fn clients_behind_one_ip_stay_apart() {
        let s = Swarm::default();
        announce(&s, peer(1, "10.0.0.1:6881", 10, AnnounceEvent::Started));
        let (st, peers) = announce(&s, peer(1, "10.0.0.1:6882", 10, AnnounceEvent::Started));
        assert_eq!(st.leechers, 2);
        assert_eq!(
            peers,
            vec![ResponsePeer {
                peer_id: PeerId([1; 20]),
                addr: "10.0.0.1:6881".parse().unwrap()
            }]
        );
    }

    #[test]
    fn a_restarted_client_replaces_its_endpoint_and_is_never_its_own_peer() {
        let s = Swarm::default();
        announce(&s, peer(1, "10.0.0.1:7001", 10, AnnounceEvent::Started));
        announce(&s, peer(3, "10.0.0.3:7003", 10, AnnounceEvent::Started));
        // The same endpoint with a new peer id: a client after a restart.
        let (st, peers) = announce(&s, peer(2, "10.0.0.1:7001", 10, AnnounceEvent::Started));
        assert_eq!((st.seeders, st.leechers), (0, 2), "counted once");
        let addrs: Vec<SocketAddr> = peers.iter().map(|p| p.addr).collect();
        assert_eq!(addrs, vec!["10.0.0.3:7003".parse().unwrap()]);
        let (_, peers) = announce(&s, peer(3, "10.0.0.3:7003", 10, AnnounceEvent::None));
        assert_eq!(
            peers,
            vec![ResponsePeer {
                peer_id: PeerId([2; 20]),
                addr: "10.0.0.1:7001".parse().unwrap()
            }],
            "others see the endpoint's latest peer id"
        );
        let (st, _) = announce(&s, peer(1, "10.0.0.1:7001", 10, AnnounceEvent::Stopped));
        assert_eq!(
            (st.seeders, st.leechers),
            (0, 1),
            "the endpoint's stopped removes it"
        );
    }

    fn limited(limits: Limits) -> Swarm {
        Swarm::with_policy(
            4,
            Policy {
                limits,
                ..Policy::default()
            },
        )
    }

    fn on(n: u8, a: Announce) -> Announce {
        Announce {
            info_hash: InfoHash([n; 20]),
            ..a
        }
    }

    #[test]
    fn past_max_torrents_new_torrents_are_refused_and_known_ones_served() {
        let s = limited(Limits {
            max_torrents: 3,
            ..Limits::NONE
        });
        let started = |n: u8, t: u8| {
            on(
                t,
                peer(n, &format!("10.0.0.{n}:1"), 5, AnnounceEvent::Started),
            )
        };
        for t in 0..3 {
            s.announce(&started(1, t), 0, &mut Vec::new()).unwrap();
        }
        assert_eq!(
            s.announce(&started(1, 3), 0, &mut Vec::new()),
            Err(Refusal::Torrents)
        );
        assert_eq!(s.stats().torrents, 3, "the refused torrent was not made");
        let st = s.announce(&started(2, 0), 0, &mut Vec::new()).unwrap();
        assert_eq!(st.leechers, 2, "a known torrent takes new peers");
        // A torrent that empties frees its place, by stopped or by expiry.
        let stopped = |t: u8| on(t, peer(1, "10.0.0.1:1", 5, AnnounceEvent::Stopped));
        s.announce(&stopped(1), 0, &mut Vec::new()).unwrap();
        s.announce(&started(1, 3), 0, &mut Vec::new()).unwrap();
        s.remove_expired(1);
        assert_eq!(s.stats().torrents, 0);
        for t in 10..13 {
            s.announce(&started(1, t), 5, &mut Vec::new()).unwrap();
        }
        assert!(s.announce(&started(1, 13), 5, &mut Vec::new()).is_err());
    }

    #[test]
    fn one_ip_cannot_crowd_out_a_swarm() {
        let s = limited(Limits {
            max_peers_per_ip: 3,
            max_peers_per_torrent: 40,
            ..Limits::NONE
        });
        // Grow past INDEX_FROM so the indexed count is exercised too.
        for n in 0..30u8 {
            let honest = peer(n, &format!("10.1.0.{n}:6881"), 5, AnnounceEvent::Started);
            s.announce(&honest, 0, &mut Vec::new()).unwrap();
        }
        for port in 0..10u16 {
            let hostile = peer(
                200,
                &format!("10.9.9.9:{}", 7000 + port),
                5,
                AnnounceEvent::None,
            );
            let got = s.announce(&hostile, 0, &mut Vec::new());
            assert_eq!(got.is_ok(), port < 3, "port {port}: {got:?}");
            if port >= 3 {
                assert_eq!(got, Err(Refusal::PeersPerIp));
            }
        }
        // A re-announce of an endpoint already in is not a new peer.
        let again = peer(201, "10.9.9.9:7001", 0, AnnounceEvent::None);
        assert_eq!(s.announce(&again, 0, &mut Vec::new()).unwrap().seeders, 1);
        // Another family, another address: IPv6 peers are counted per their own address.
        for port in 0..3u16 {
            let v6 = peer(
                202,
                &format!("[2001:db8::9]:{}", 7000 + port),
                5,
                AnnounceEvent::None,
            );
            s.announce(&v6, 0, &mut Vec::new()).unwrap();
        }
        let v6 = peer(202, "[2001:db8::9]:7999", 5, AnnounceEvent::None);
        assert_eq!(
            s.announce(&v6, 0, &mut Vec::new()),
            Err(Refusal::PeersPerIp)
        );
        // When one of the address's peers leaves, another may join.
        let leave = peer(200, "10.9.9.9:7000", 5, AnnounceEvent::Stopped);
        s.announce(&leave, 0, &mut Vec::new()).unwrap();
        let join = peer(200, "10.9.9.9:7009", 5, AnnounceEvent::None);
        s.announce(&join, 0, &mut Vec::new()).unwrap();
        // The whole swarm: 30 honest, 3 + 3 hostile = 36; four more fill it to 40.
        for n in 0..4u8 {
            let late = peer(n, &format!("10.2.0.{n}:6881"), 5, AnnounceEvent::Started);
            s.announce(&late, 0, &mut Vec::new()).unwrap();
        }
        let late = peer(9, "10.2.0.9:6881", 5, AnnounceEvent::Started);
        assert_eq!(
            s.announce(&late, 0, &mut Vec::new()),
            Err(Refusal::PeersPerTorrent)
        );
        let elsewhere = on(2, late);
        assert!(
            s.announce(&elsewhere, 0, &mut Vec::new()).is_ok(),
            "other torrents take it"
        );
        let known = peer(0, "10.1.0.0:6881", 0, AnnounceEvent::None);
        assert!(
            s.announce(&known, 0, &mut Vec::new()).is_ok(),
            "members still announce"
        );
        let st = s.scrape(&IH);
        assert_eq!(st.seeders + st.leechers, 40);
    }

    #[test]
    fn past_max_peers_new_peers_are_refused_until_some_leave() {
        let s = limited(Limits {
            max_peers: 5,
            ..Limits::NONE
        });
        for n in 0..5u8 {
            let a = on(
                n,
                peer(n, &format!("10.0.0.{n}:1"), 5, AnnounceEvent::Started),
            );
            s.announce(&a, 0, &mut Vec::new()).unwrap();
        }
        let sixth = on(0, peer(9, "10.0.0.9:1", 5, AnnounceEvent::Started));
        assert_eq!(s.announce(&sixth, 0, &mut Vec::new()), Err(Refusal::Peers));
        let again = on(1, peer(1, "10.0.0.1:1", 0, AnnounceEvent::None));
        assert!(
            s.announce(&again, 0, &mut Vec::new()).is_ok(),
            "members still announce"
        );
        let stop = on(2, peer(2, "10.0.0.2:1", 5, AnnounceEvent::Stopped));
        s.announce(&stop, 0, &mut Vec::new()).unwrap();
        s.announce(&sixth, 0, &mut Vec::new()).unwrap();
        assert_eq!(
            s.announce(&on(7, sixth), 0, &mut Vec::new()),
            Err(Refusal::Peers)
        );
        s.remove_expired(1);
        assert!(
            s.announce(&on(7, sixth), 2, &mut Vec::new()).is_ok(),
            "expiry frees room"
        );
    }

    #[test]
    fn counts_past_max_counted_torrents_are_not_made_but_existing_ones_go_on() {
        let s = limited(Limits {
            max_counted_torrents: 2,
            ..Limits::NONE
        });
        s.load_downloads([(InfoHash([50; 20]), 4)]);
        let download = |t: u8| {
            s.announce(
                &on(t, peer(1, "10.0.0.1:1", 5, AnnounceEvent::Started)),
                0,
                &mut Vec::new(),
            )
            .unwrap();
            s.announce(
                &on(t, peer(1, "10.0.0.1:1", 0, AnnounceEvent::Completed)),
                0,
                &mut Vec::new(),
            )
            .unwrap()
            .downloaded
        };
        assert_eq!(download(1), 1);
        assert_eq!(download(2), 0, "a third count would pass the limit");
        assert_eq!(download(50), 5, "a loaded count counts on");
        assert_eq!(download(1), 2, "so does one made before the limit");
        let st = s.stats();
        assert_eq!((st.counted_torrents, st.uncounted_downloads), (2, 1));
    }

    #[test]
    fn expiry_walks_a_shard_in_chunks_and_misses_nobody() {
        let s = Swarm::new(1);
        let n = 3 * EXPIRE_CHUNK as u32 + 17;
        let ih = |i: u32| {
            let mut h = [9u8; 20];
            h[..4].copy_from_slice(&i.to_be_bytes());
            InfoHash(h)
        };
        for i in 0..n {
            let a = Announce {
                info_hash: ih(i),
                ..peer(1, "10.0.0.1:1", 5, AnnounceEvent::Started)
            };
            // Every third torrent's peer is fresh; the others have gone silent.
            s.announce(&a, if i % 3 == 0 { 100 } else { 1 }, &mut Vec::new())
                .unwrap();
        }
        let gone = s.remove_expired(50);
        let kept = n.div_ceil(3);
        assert_eq!(gone.torrents, u64::from(n - kept));
        let st = s.stats();
        assert_eq!(
            (st.torrents, st.leechers),
            (u64::from(kept), u64::from(kept))
        );
        for i in 0..n {
            assert_eq!(
                s.scrape(&ih(i)).leechers,
                u32::from(i % 3 == 0),
                "torrent {i}"
            );
        }
        // The freed room is back: max_peers and max_torrents count only the survivors.
        assert_eq!(s.held.load(Relaxed), kept as usize);
        assert_eq!(s.peers.load(Relaxed), kept as usize);
    }

    /// Every torrent has an IPv4 family inline: a byte more each is a megabyte per million.
    #[test]
    fn records_keep_their_size() {
        assert_eq!(size_of::<Peer<[u8; 4]>>(), 32);
        assert_eq!(size_of::<Family<[u8; 4]>>(), 56);
        assert_eq!(size_of::<(InfoHash, Torrent)>(), 96);
    }

    #[test]
    fn stopped_from_another_address_evicts_nobody() {
        let s = Swarm::default();
        announce(&s, peer(1, "10.0.0.1:6881", 0, AnnounceEvent::Started));
        let (st, _) = announce(&s, peer(1, "10.0.0.2:6881", 0, AnnounceEvent::Stopped));
        assert_eq!(st.seeders, 1);
        let (st, _) = announce(&s, peer(1, "10.0.0.1:6881", 0, AnnounceEvent::Stopped));
        assert_eq!(st.seeders, 0);
        assert_eq!(
            s.stats().torrents,
            0,
            "a torrent without peers leaves the swarm"
        );
    }

    #[test]
    fn left_zero_is_a_seeder_and_moves_between_sets() {
        let s = Swarm::default();
        let (st, _) = announce(&s, peer(1, "10.0.0.1:1", 5, AnnounceEvent::Started));
        assert_eq!((st.seeders, st.leechers), (0, 1));
        let (st, _) = announce(&s, peer(1, "10.0.0.1:1", 0, AnnounceEvent::None));
        assert_eq!((st.seeders, st.leechers), (1, 0));
        let (st, _) = announce(&s, peer(1, "10.0.0.1:1", 3, AnnounceEvent::None));
        assert_eq!((st.seeders, st.leechers), (0, 1));
        assert_eq!(
            st.downloaded, 0,
            "becoming a seeder without `completed` is not a download"
        );
        let stats = s.stats();
        assert_eq!((stats.seeders, stats.leechers), (0, 1));
    }

    #[test]
    fn completed_counts_once_and_only_from_a_known_leecher() {
        let s = Swarm::default();
        let (st, _) = announce(&s, peer(9, "10.0.0.9:1", 0, AnnounceEvent::Completed));
        assert_eq!(
            st.downloaded, 0,
            "an unknown peer's completed is not a download"
        );
        announce(&s, peer(1, "10.0.0.1:1", 5, AnnounceEvent::Started));
        let (st, _) = announce(&s, peer(1, "10.0.0.1:1", 0, AnnounceEvent::Completed));
        assert_eq!(st.downloaded, 1);
        let (st, _) = announce(&s, peer(1, "10.0.0.1:1", 0, AnnounceEvent::Completed));
        assert_eq!(st.downloaded, 1, "a repeated completed counts nothing");
        assert_eq!(s.take_pending(), vec![(IH, 1)]);
        assert_eq!(
            s.take_pending(),
            vec![],
            "pending deltas are handed out once"
        );
        assert_eq!(s.scrape(&IH).downloaded, 1, "the count itself stays");
    }

    #[test]
    fn answers_never_list_the_asker_and_seeders_get_only_leechers() {
        let s = Swarm::default();
        for i in 0..5 {
            announce(
                &s,
                peer(i, &format!("10.0.0.{i}:1"), 0, AnnounceEvent::Started),
            );
        }
        for i in 5..10 {
            announce(
                &s,
                peer(i, &format!("10.0.0.{i}:1"), 9, AnnounceEvent::Started),
            );
        }
        let (_, got) = announce(&s, peer(0, "10.0.0.0:1", 0, AnnounceEvent::None));
        assert_eq!(got.len(), 5);
        assert!(
            got.iter().all(|p| p.peer_id.0[0] >= 5),
            "a seeder is given leechers only: {got:?}"
        );
        let (_, got) = announce(&s, peer(7, "10.0.0.7:1", 9, AnnounceEvent::None));
        assert_eq!(got.len(), 9);
        assert!(got.iter().all(|p| p.peer_id.0[0] != 7));
    }

    #[test]
    fn numwant_caps_and_selection_rotates() {
        let s = Swarm::default();
        for i in 0..60u8 {
            announce(
                &s,
                peer(i, &format!("10.0.1.{i}:1"), 9, AnnounceEvent::Started),
            );
        }
        let mut seen = HashSet::new();
        for _ in 0..40 {
            let mut a = peer(200, "10.9.9.9:1", 9, AnnounceEvent::None);
            a.numwant = 5;
            let (_, got) = announce(&s, a);
            assert_eq!(got.len(), 5);
            seen.extend(got.iter().map(|p| p.peer_id));
        }
        assert!(
            seen.len() > 30,
            "40 announces of 5 reached only {} of 60 peers",
            seen.len()
        );
    }

    #[test]
    fn families_follow_the_request() {
        let s = Swarm::default();
        announce(&s, peer(1, "10.0.0.1:1", 0, AnnounceEvent::Started));
        announce(&s, peer(2, "[2001:db8::2]:1", 0, AnnounceEvent::Started));
        let mut a = peer(3, "10.0.0.3:1", 9, AnnounceEvent::Started);
        a.families = Families::Same;
        let (st, got) = announce(&s, a);
        assert_eq!(st.seeders, 2, "counts cover both families");
        assert_eq!(got.len(), 1);
        assert!(got[0].addr.is_ipv4());
        let mut a = peer(4, "[2001:db8::4]:1", 9, AnnounceEvent::Started);
        a.families = Families::Both;
        let (_, got) = announce(&s, a);
        assert_eq!(got.len(), 3);
        assert!(got[0].addr.is_ipv6(), "own family first");
    }

    #[test]
    fn expiry_removes_silent_peers_but_keeps_counts() {
        let s = Swarm::default();
        announce(&s, peer(1, "10.0.0.1:1", 5, AnnounceEvent::Started));
        announce(&s, peer(1, "10.0.0.1:1", 0, AnnounceEvent::Completed));
        let mut out = Vec::new();
        s.announce(
            &peer(2, "10.0.0.2:1", 5, AnnounceEvent::Started),
            100,
            &mut out,
        )
        .unwrap();
        let other = InfoHash([2; 20]);
        s.announce(
            &Announce {
                info_hash: other,
                ..peer(3, "10.0.0.3:1", 5, AnnounceEvent::Started)
            },
            10,
            &mut out,
        )
        .unwrap();
        assert_eq!(
            s.remove_expired(50),
            Expired {
                peers: 2,
                torrents: 1
            }
        );
        let st = s.scrape(&IH);
        assert_eq!((st.seeders, st.leechers, st.downloaded), (0, 1, 1));
        assert_eq!(s.scrape(&other), TorrentStats::default());
        let stats = s.stats();
        assert_eq!(
            (
                stats.torrents,
                stats.counted_torrents,
                stats.seeders,
                stats.leechers
            ),
            (1, 1, 0, 1)
        );
    }

    #[test]
    fn loaded_counts_answer_scrapes() {
        let s = Swarm::new(4);
        s.load_downloads([(IH, 1u64 << 40), (InfoHash([2; 20]), 0)]);
        assert_eq!(s.scrape(&IH).downloaded, 1 << 40);
        assert_eq!(s.stats().counted_torrents, 1, "zero counts take no memory");
        announce(&s, peer(1, "10.0.0.1:1", 5, AnnounceEvent::Started));
        let (st, _) = announce(&s, peer(1, "10.0.0.1:1", 0, AnnounceEvent::Completed));
        assert_eq!(st.downloaded, (1 << 40) + 1);
        assert_eq!(
            s.take_pending(),
            vec![(IH, 1)],
            "only the increment is pending, not the total"
        );
    }

    #[derive(Debug, Clone)]
    struct Op {
        torrent: u8,
        peer: u8,
        addr: u8,
        left: u64,
        event: AnnounceEvent,
    }

    fn op(torrents: u8, peers: u8) -> impl Strategy<Value = Op> {
        (
            0u8..torrents,
            0u8..peers,
            0u8..3,
            0u64..2,
            prop_oneof![
                Just(AnnounceEvent::None),
                Just(AnnounceEvent::Started),
                Just(AnnounceEvent::Completed),
                Just(AnnounceEvent::Stopped),
            ],
        )
            .prop_map(|(torrent, peer, addr, left, event)| Op {
                torrent,
                peer,
                addr,
                left,
                event,
            })
    }

    /// Runs `ops` against the swarm and a plain map model, comparing counts, downloads,
    /// answer sizes and pending deltas after every step.
    fn agrees_with_model(ops: &[Op]) -> Result<(), TestCaseError> {
        // Half the cases answer seeders from the whole swarm.
        let seeders_get_seeders = ops.len() % 2 == 0;
        let s = Swarm::with_policy(
            2,
            Policy {
                seeders_get_seeders,
                ..Policy::default()
            },
        );
        let mut model: HashMap<(u8, u8, u8), bool> = HashMap::new();
        let mut downloads: HashMap<u8, u64> = HashMap::new();
        for o in ops {
            let a = Announce {
                info_hash: InfoHash([o.torrent; 20]),
                peer_id: PeerId([o.peer; 20]),
                // 10.0.0.0:1000 is one endpoint that every peer id shares (a client that
                // restarts); the others give each peer id an endpoint of its own.
                addr: match o.addr {
                    0 => "10.0.0.0:1000".to_string(),
                    1 => format!("10.0.0.1:{}", 1000 + o.peer as u16),
                    _ => format!("[::1]:{}", 1000 + o.peer as u16),
                }
                .parse()
                .unwrap(),
                left: o.left,
                event: o.event,
                numwant: 100,
                families: Families::Both,
            };
            let key = (o.torrent, o.addr, if o.addr == 0 { 0 } else { o.peer });
            if o.event == AnnounceEvent::Stopped {
                model.remove(&key);
            } else {
                let was = model.insert(key, o.left == 0);
                if was == Some(false) && o.left == 0 && o.event == AnnounceEvent::Completed {
                    *downloads.entry(o.torrent).or_default() += 1;
                }
            }
            let mut out = Vec::new();
            let st = s.announce(&a, 0, &mut out).unwrap();
            let seeders = model
                .iter()
                .filter(|(k, v)| k.0 == o.torrent && **v)
                .count() as u32;
            let leechers = model
                .iter()
                .filter(|(k, v)| k.0 == o.torrent && !**v)
                .count() as u32;
            prop_assert_eq!((st.seeders, st.leechers), (seeders, leechers));
            prop_assert_eq!(
                st.downloaded,
                downloads.get(&o.torrent).copied().unwrap_or(0)
            );
            if o.event != AnnounceEvent::Stopped {
                let expect = if o.left == 0 && !seeders_get_seeders {
                    leechers
                } else {
                    seeders + leechers - 1
                };
                prop_assert_eq!(out.len() as u32, expect.min(100));
                let distinct: HashSet<_> = out.iter().map(|p| p.addr).collect();
                prop_assert_eq!(distinct.len(), out.len(), "no endpoint twice");
                prop_assert!(!distinct.contains(&a.addr), "never the asker's endpoint");
            }
        }
        let stats = s.stats();
        prop_assert_eq!(stats.seeders, model.values().filter(|v| **v).count() as u64);
        prop_assert_eq!(
            stats.leechers,
            model.values().filter(|v| !**v).count() as u64
        );
        let mut pending = s.take_pending();
        pending.sort();
        let mut expect: Vec<_> = downloads
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(t, n)| (InfoHash([*t; 20]), *n))
            .collect();
        expect.sort();
        prop_assert_eq!(pending, expect);
        Ok(())
    }

    proptest! {
        #[test]
        fn matches_a_simple_model(ops in proptest::collection::vec(op(3, 4), 1..200)) {
            agrees_with_model(&ops)?;
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// Swarms that grow past INDEX_FROM and shrink below it again exercise the index.
        #[test]
        fn large_swarms_match_the_model(ops in proptest::collection::vec(op(1, 90), 1..1500)) {
            agrees_with_model(&ops)?;
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Many torrents coming and going move entries around the shards' torrent tables.
        #[test]
        fn many_torrents_match_the_model(ops in proptest::collection::vec(op(80, 3), 1..800)) {
            agrees_with_model(&ops)?;
        }
    }

    #[test]
    fn prefetch_changes_nothing_and_survives_concurrent_removals() {
        let s = Swarm::new(2);
        let hash = |n: u8| InfoHash([n; 20]);
        let batch: Vec<Warm> = (0..40u8)
            .map(|n| Warm {
                info_hash: hash(n % 20),
                addr: if n % 3 == 0 {
                    format!("[::1]:{}", 1000 + u16::from(n))
                } else {
                    format!("10.0.0.{n}:1000")
                }
                .parse()
                .unwrap(),
                only_leechers: n % 2 == 0,
            })
            .collect();
        std::thread::scope(|scope| {
            scope.spawn(|| {
                for round in 0..300u32 {
                    for w in &batch {
                        let event = if round % 2 == 0 {
                            AnnounceEvent::Started
                        } else {
                            AnnounceEvent::Stopped
                        };
                        // Big enough swarms on some torrents to have an index.
                        for k in 0..(u32::from(w.info_hash.0[0]) % 4) * 10 {
                            let mut a = peer(k as u8, &format!("10.1.0.{k}:7"), 0, event);
                            a.info_hash = w.info_hash;
                            s.announce(&a, round, &mut Vec::new()).unwrap();
                        }
                    }
                }
            });
            for _ in 0..2000 {
                s.prefetch(&batch);
            }
        });
        let before = s.stats();
        s.prefetch(&batch);
        assert_eq!(s.stats(), before);
        assert_eq!(
            before.seeders + before.leechers,
            0,
            "the last round stopped everyone"
        );
    }

    #[test]
    fn expiry_leaves_the_survivors_findable() {
        let s = Swarm::new(3);
        for n in 0..600u32 {
            let mut a = peer(1, "10.0.0.1:1", 5, AnnounceEvent::Started);
            a.info_hash = InfoHash([
                n as u8,
                (n >> 8) as u8,
                9,
                9,
                9,
                9,
                9,
                9,
                9,
                9,
                9,
                9,
                9,
                9,
                9,
                9,
                9,
                9,
                9,
                9,
            ]);
            s.announce(&a, n % 2, &mut Vec::new()).unwrap();
        }
        assert_eq!(
            s.remove_expired(1),
            Expired {
                peers: 300,
                torrents: 300
            }
        );
        for n in 0..600u32 {
            let h = InfoHash([
                n as u8,
                (n >> 8) as u8,
                9,
                9,
                9,
                9,
                9,
                9,
                9,
                9,
                9,
                9,
                9,
                9,
                9,
                9,
                9,
                9,
                9,
                9,
            ]);
            let expect = (n % 2 == 1).then_some(TorrentStats {
                seeders: 0,
                leechers: 1,
                downloaded: 0,
            });
            assert_eq!(s.torrent(&h), expect, "torrent {n}");
        }
        assert_eq!(s.stats().torrents, 300);
    }

    #[test]
    fn loaded_counts_merge_and_count_on() {
        let s = Swarm::new(2);
        let mut loader = s.loader();
        for n in 0..200u8 {
            loader.add(InfoHash([n; 20]), u64::from(n) + 1);
        }
        loader.add(InfoHash([5; 20]), 1000);
        loader.finish();
        assert_eq!(
            s.scrape(&InfoHash([5; 20])).downloaded,
            1000,
            "the later load wins"
        );
        assert_eq!(s.scrape(&InfoHash([199; 20])).downloaded, 200);
        assert_eq!(s.stats().counted_torrents, 200);
        let mut a = peer(1, "10.0.0.1:1", 5, AnnounceEvent::Started);
        a.info_hash = InfoHash([7; 20]);
        s.announce(&a, 0, &mut Vec::new()).unwrap();
        a.left = 0;
        a.event = AnnounceEvent::Completed;
        assert_eq!(s.announce(&a, 0, &mut Vec::new()).unwrap().downloaded, 9);
        // A second load (not done by the server, but allowed) keeps what is there.
        s.load_downloads([(InfoHash([250; 20]), 3)]);
        assert_eq!(s.scrape(&InfoHash([7; 20])).downloaded, 9);
        assert_eq!(s.scrape(&InfoHash([250; 20])).downloaded, 3);
        assert_eq!(s.stats().counted_torrents, 201);
    }

    #[test]
    fn pages_cover_every_known_torrent_once_in_order() {
        let swarm = Swarm::new(4);
        let hash = |n: u8| InfoHash([n; 20]);
        swarm.load_downloads((1..=5).map(|n| (hash(n * 2), u64::from(n))));
        for n in [3u8, 4, 9] {
            let mut a = peer(n, "10.0.0.1:6881", 0, AnnounceEvent::Started);
            a.info_hash = hash(n);
            swarm.announce(&a, 1, &mut Vec::new()).unwrap();
        }
        assert_eq!(
            swarm.torrent(&hash(4)),
            Some(TorrentStats {
                seeders: 1,
                leechers: 0,
                downloaded: 2
            })
        );
        assert_eq!(swarm.torrent(&hash(7)), None);
        let mut seen = Vec::new();
        for offset in (0..10).step_by(3) {
            let (total, page) = swarm.page(offset, 3);
            assert_eq!(total, 7);
            seen.extend(page.into_iter().map(|(h, _)| h.0[0]));
        }
        assert_eq!(seen, vec![2, 3, 4, 6, 8, 9, 10]);
        assert!(swarm.page(7, 3).1.is_empty() && swarm.page(usize::MAX, usize::MAX).1.is_empty());
    }
}
