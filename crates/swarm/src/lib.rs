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

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

use parking_lot::{Mutex, MutexGuard};

use hashbrown::DefaultHashBuilder;
use protocol::{AnnounceEvent, InfoHash, PeerId, ResponsePeer};

mod counts;
mod expiry;
mod family;
mod limits;
mod remote;
mod slots;
mod torrents;
mod views;

pub use counts::Loader;
pub use family::{MAX_LEASE_EVERY, Origin};
pub use limits::{Limits, Refusal};
pub use remote::{Delivery, PeerChange, PeerState, PeerView};

use family::{Admission, Announcer};
use torrents::{Shard, Torrent, Torrents};

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
    /// In a cluster, the seconds between lease renewals of a peer that keeps announcing (half
    /// the peer timeout; below 32768); 0 on a single node, where nothing is published.
    pub lease_every: u32,
    /// In a cluster, the most changes waiting for the publisher; past it they are dropped
    /// and counted (after the bus returns every node republishes its peers anyway).
    pub max_outbox: usize,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            limits: Limits::NONE,
            seeders_get_seeders: false,
            lease_every: 0,
            max_outbox: 0,
        }
    }
}

/// What `Swarm::prefetch` needs to know of an announce.
#[derive(Debug, Clone, Copy)]
pub struct Prefetch {
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

/// What `Swarm::survey` found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Survey {
    /// The torrents with the most peers, most first.
    pub top: Vec<(InfoHash, TorrentStats)>,
    /// Peers by family: IPv4, IPv6, WebSocket (WebRTC).
    pub v4: u64,
    pub v6: u64,
    pub rtc: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Expired {
    pub peers: u64,
    pub torrents: u64,
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
    lease_every: u32,
    /// `Policy::max_outbox` per shard.
    outbox_cap: usize,
    dropped_changes: AtomicU64,
}

impl Default for Swarm {
    fn default() -> Self {
        Swarm::new(64)
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
            lease_every: policy.lease_every,
            outbox_cap: policy.max_outbox.div_ceil(shards),
            dropped_changes: AtomicU64::new(0),
        }
    }

    fn shard_of(&self, h: &InfoHash) -> usize {
        u64::from_le_bytes(h.0[..8].try_into().unwrap()) as usize % self.shards.len()
    }

    /// parking_lot's lock: it does not poison (a panic while holding a shard cannot leave it
    /// half-written in a way later announces would trip over), and it can hand the lock to
    /// a waiter (`unlock_fair`), which the expiry sweep needs.
    fn lock(&self, i: usize) -> MutexGuard<'_, Shard> {
        self.shards[i].lock()
    }

    fn shard(&self, h: &InfoHash) -> MutexGuard<'_, Shard> {
        self.lock(self.shard_of(h))
    }

    /// The shard, unless another thread holds it (a sweep): for hints that can be skipped.
    fn shard_if_free(&self, h: &InfoHash) -> Option<MutexGuard<'_, Shard>> {
        self.shards[self.shard_of(h)].try_lock()
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
            outbox,
        } = &mut *guard;
        let hasher = &self.hasher;
        let h = a.info_hash;
        let at = match self.find_or_make(torrents, counts, h, a.event != AnnounceEvent::Stopped)? {
            Some(at) => at,
            None => {
                if self.lease_every > 0 {
                    // Other nodes may know the peer even if this one does not yet.
                    let c = PeerChange {
                        info_hash: h,
                        peer_id: a.peer_id,
                        addr: a.addr,
                        state: PeerState::Stopped,
                        completed: false,
                    };
                    self.publish(outbox, c);
                }
                return Ok(TorrentStats {
                    downloaded: counts.get(&h),
                    ..TorrentStats::default()
                });
            }
        };
        let torrent = torrents.at(at);
        let room = self.room(torrent);
        let asker = Announcer::new(a.peer_id, a.addr, now);
        let (left, event, every) = (a.left, a.event, self.lease_every);
        let change = match asker {
            Announcer::V4(p) => torrent.v4.update(p, left, event, hasher, room, every),
            Announcer::V6(p) => torrent
                .rare_mut()
                .0
                .update(p, left, event, hasher, room, every),
            Announcer::Rtc(p) => torrent
                .rare_mut()
                .1
                .update(p, left, event, hasher, room, every),
        };
        let change = match change {
            Ok(c) => c,
            Err(refused) => {
                // A refusal changed nothing, but may leave a torrent made for it empty.
                self.drop_if_empty(torrents, at);
                return Err(refused);
            }
        };
        self.account(seeders, leechers, &change);
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
        if change.publish {
            let state = match (a.event, a.left) {
                (AnnounceEvent::Stopped, _) => PeerState::Stopped,
                (_, 0) => PeerState::Seeder,
                _ => PeerState::Leecher,
            };
            self.publish(
                outbox,
                PeerChange {
                    info_hash: h,
                    peer_id: a.peer_id,
                    addr: a.addr,
                    state,
                    completed: change.completed,
                },
            );
        }

        if a.event == AnnounceEvent::Stopped {
            self.drop_if_empty(torrents, at);
            return Ok(stats);
        }
        self.answer(torrent, a, asker, out);
        Ok(stats)
    }

    /// The peers an announce gets back: its own family first, the other too when the
    /// protocol carries both; never the asker itself. A WebSocket peer gets WebSocket peers
    /// only (WebRTC reaches no other kind), and no other kind gets them.
    fn answer(
        &self,
        torrent: &mut Torrent,
        a: &Announce,
        asker: Announcer,
        out: &mut Vec<ResponsePeer>,
    ) {
        let only_leechers = self.only_leechers(a.left);
        let both = a.families == Families::Both;
        match asker {
            Announcer::V4(p) => {
                torrent.v4.pick(only_leechers, Some(&p), a.numwant, out);
                if let (true, Some(f)) = (both, torrent.v6_mut()) {
                    f.pick(only_leechers, None, a.numwant, out);
                }
            }
            Announcer::V6(p) => {
                if let Some(f) = torrent.v6_mut() {
                    f.pick(only_leechers, Some(&p), a.numwant, out);
                }
                if both {
                    torrent.v4.pick(only_leechers, None, a.numwant, out);
                }
            }
            Announcer::Rtc(p) => {
                if let Some(f) = torrent.rtc_mut() {
                    f.pick(only_leechers, Some(&p), a.numwant, out);
                }
            }
        }
    }

    /// The position of torrent `h`, made if absent and `make` says so (within
    /// `max_torrents`); None if absent and not made. Shared by a local announce and an
    /// applied record.
    fn find_or_make(
        &self,
        torrents: &mut Torrents,
        counts: &counts::Counts,
        h: InfoHash,
        make: bool,
    ) -> Result<Option<usize>, Refusal> {
        let th = torrents.hash(&h);
        if let Some(at) = torrents.position(&h, th) {
            return Ok(Some(at));
        }
        if !make {
            return Ok(None);
        }
        // Checked without a lock across shards: racing announces may overshoot by at most
        // one torrent per thread.
        if self.held.load(Relaxed) >= self.limits.max_torrents {
            return Err(Refusal::Torrents);
        }
        self.held.fetch_add(1, Relaxed);
        let t = Torrent::with_downloads(counts.get(&h));
        Ok(Some(torrents.insert(h, th, t)))
    }

    /// Whether a new peer may join `torrent` now.
    fn room(&self, torrent: &Torrent) -> Admission {
        Admission {
            tracker_full: self.peers.load(Relaxed) >= self.limits.max_peers,
            torrent_full: torrent.peers() >= self.limits.max_peers_per_torrent,
            per_ip: self.limits.max_peers_per_ip,
        }
    }

    /// Adds what a change did to a shard's seeders and leechers and the tracker's peers.
    fn account(&self, seeders: &mut u64, leechers: &mut u64, change: &family::Change) {
        *seeders = seeders.wrapping_add_signed(change.seeders);
        *leechers = leechers.wrapping_add_signed(change.leechers);
        match change.seeders + change.leechers {
            1 => self.peers.fetch_add(1, Relaxed),
            -1 => self.peers.fetch_sub(1, Relaxed),
            _ => 0,
        };
    }

    /// Drops the torrent at `at` if no peer is left (its count stays), or else its IPv6
    /// family if that is empty.
    fn drop_if_empty(&self, torrents: &mut Torrents, at: usize) {
        let t = torrents.at(at);
        t.shrink();
        if t.is_empty() {
            torrents.remove_at(at);
            self.held.fetch_sub(1, Relaxed);
        }
    }

    /// Starts loading into the cache what a batch of announces is about to touch, one level
    /// of the structure per pass over the batch, so that the batch waits on memory about as
    /// long as one announce would rather than once per announce. Only a hint: it changes
    /// nothing, and what it loads may be stale by the time the announce runs. A shard
    /// another thread holds (an expiry sweep) is skipped rather than waited for: the batch's
    /// other announces should not queue behind one busy shard twice.
    pub fn prefetch(&self, batch: &[Prefetch]) {
        const CHUNK: usize = 32;
        for chunk in batch.chunks(CHUNK) {
            let mut hashes = [0u64; CHUNK];
            let mut free = [false; CHUNK];
            let mut at = [usize::MAX; CHUNK];
            for (i, w) in chunk.iter().enumerate() {
                if let Some(s) = self.shard_if_free(&w.info_hash) {
                    hashes[i] = s.torrents.hash(&w.info_hash);
                    s.torrents.prefetch_home(hashes[i]);
                    free[i] = true;
                }
            }
            for (i, w) in chunk.iter().enumerate() {
                let Some(s) = self.shard_if_free(&w.info_hash).filter(|_| free[i]) else {
                    continue;
                };
                if let Some(p) = s.torrents.prefetch_entry(hashes[i]) {
                    at[i] = p;
                }
            }
            // From here `hashes` holds the asker's peer hash, for indexed families.
            for (i, w) in chunk.iter().enumerate() {
                if at[i] == usize::MAX {
                    continue;
                }
                let Some(s) = self.shard_if_free(&w.info_hash) else {
                    at[i] = usize::MAX;
                    continue;
                };
                // Another thread may have removed torrents since the last pass.
                let Some((key, t)) = s.torrents.entry(at[i]) else {
                    at[i] = usize::MAX;
                    continue;
                };
                let indexed = match Announcer::new(PeerId([0; 20]), w.addr, 0) {
                    _ if *key != w.info_hash => None,
                    Announcer::V4(p) => t.v4.warm_list(&p, w.only_leechers, &self.hasher),
                    Announcer::V6(p) => t
                        .v6()
                        .and_then(|f| f.warm_list(&p, w.only_leechers, &self.hasher)),
                    Announcer::Rtc(p) => t
                        .rtc()
                        .and_then(|f| f.warm_list(&p, w.only_leechers, &self.hasher)),
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
                let Some(s) = self.shard_if_free(&w.info_hash) else {
                    continue;
                };
                let Some((_, t)) = s.torrents.entry(at[i]) else {
                    continue;
                };
                match Announcer::new(PeerId([0; 20]), w.addr, 0) {
                    Announcer::V4(_) => t.v4.warm_peer(hashes[i]),
                    Announcer::V6(_) => t.v6().iter().for_each(|f| f.warm_peer(hashes[i])),
                    Announcer::Rtc(_) => t.rtc().iter().for_each(|f| f.warm_peer(hashes[i])),
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

    /// Starts loading persisted counts, as streamed from the store at start.
    pub fn loader(&self) -> Loader<'_> {
        Loader::new(self)
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
            out.extend(self.lock(i).counts.take_pending());
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
            st.pending_deltas += s.counts.pending();
        }
        st.uncounted_downloads = self.uncounted.load(Relaxed);
        st
    }
}

#[cfg(test)]
mod tests;
