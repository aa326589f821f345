//! The in-memory state of every torrent: who is in each swarm, how many have downloaded it,
//! which peers an announce gets back, and when silent peers leave. No I/O.
//!
//! Time is passed in as whole seconds from any fixed origin, so tests can move it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard};

use indexmap::IndexMap;
use protocol::{AnnounceEvent, InfoHash, PeerId, ResponsePeer};

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
    /// The peer's IP as seen on the socket, with the port it announced.
    pub addr: SocketAddr,
    pub left: u64,
    pub event: AnnounceEvent,
    /// Already capped by the caller's policy.
    pub numwant: usize,
    pub families: Families,
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Expired {
    pub peers: u64,
    pub torrents: u64,
}

/// A peer is the pair of its id and its address: two clients behind one NAT stay apart,
/// and nobody can evict a peer by sending its id from elsewhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct PeerKey {
    peer_id: PeerId,
    addr: SocketAddr,
}

#[derive(Debug, Default)]
struct PeerSet {
    seeders: IndexMap<PeerKey, u32>,
    leechers: IndexMap<PeerKey, u32>,
}

#[derive(Debug, Default)]
struct Torrent {
    v4: PeerSet,
    v6: PeerSet,
}

#[derive(Default)]
struct Shard {
    torrents: HashMap<InfoHash, Torrent>,
    /// Download counts, including torrents without peers (loaded from the store at start).
    downloads: HashMap<InfoHash, u64>,
    pending: HashMap<InfoHash, u64>,
    seeders: u64,
    leechers: u64,
}

pub struct Swarm {
    shards: Box<[Mutex<Shard>]>,
}

impl Default for Swarm {
    fn default() -> Self {
        Swarm::new(64)
    }
}

impl Torrent {
    fn set_mut(&mut self, addr: &SocketAddr) -> &mut PeerSet {
        if addr.is_ipv4() {
            &mut self.v4
        } else {
            &mut self.v6
        }
    }

    fn counts(&self) -> (u32, u32) {
        let s = self.v4.seeders.len() + self.v6.seeders.len();
        let l = self.v4.leechers.len() + self.v6.leechers.len();
        (s as u32, l as u32)
    }

    fn is_empty(&self) -> bool {
        self.counts() == (0, 0)
    }
}

impl PeerSet {
    /// Appends up to `n - out.len()` peers from a window that starts at a random place, so
    /// that repeated announces spread over the whole swarm.
    fn pick(&self, only_leechers: bool, skip: &PeerKey, n: usize, out: &mut Vec<ResponsePeer>) {
        let seeders = if only_leechers { 0 } else { self.seeders.len() };
        let total = seeders + self.leechers.len();
        if total == 0 || out.len() >= n {
            return;
        }
        let start = fastrand::usize(..total);
        for i in 0..total {
            if out.len() >= n {
                break;
            }
            let idx = (start + i) % total;
            let (key, _) = if idx < seeders {
                self.seeders.get_index(idx)
            } else {
                self.leechers.get_index(idx - seeders)
            }
            .expect("index within bounds");
            if key != skip {
                out.push(ResponsePeer {
                    peer_id: key.peer_id,
                    addr: key.addr,
                });
            }
        }
    }
}

impl Swarm {
    pub fn new(shards: usize) -> Self {
        let shards = shards.max(1);
        Swarm {
            shards: (0..shards).map(|_| Mutex::default()).collect(),
        }
    }

    fn shard(&self, h: &InfoHash) -> MutexGuard<'_, Shard> {
        let i = u64::from_le_bytes(h.0[..8].try_into().unwrap()) as usize % self.shards.len();
        // A panic while holding a shard cannot leave it half-written in a way later
        // announces would trip over, so keep serving rather than poisoning every request.
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records an announce and appends the peers to answer with to `out`.
    pub fn announce(&self, a: &Announce, now: u32, out: &mut Vec<ResponsePeer>) -> TorrentStats {
        let key = PeerKey {
            peer_id: a.peer_id,
            addr: a.addr,
        };
        let mut guard = self.shard(&a.info_hash);
        let shard = &mut *guard;

        if a.event == AnnounceEvent::Stopped {
            if let Some(t) = shard.torrents.get_mut(&a.info_hash) {
                let set = t.set_mut(&a.addr);
                if set.seeders.swap_remove(&key).is_some() {
                    shard.seeders -= 1;
                } else if set.leechers.swap_remove(&key).is_some() {
                    shard.leechers -= 1;
                }
                if t.is_empty() {
                    shard.torrents.remove(&a.info_hash);
                }
            }
            return stats_of(shard, &a.info_hash);
        }

        let torrent = shard.torrents.entry(a.info_hash).or_default();
        let set = torrent.set_mut(&a.addr);
        let seeder = a.left == 0;
        if seeder {
            if let Some(seen) = set.seeders.get_mut(&key) {
                *seen = now;
            } else {
                let was_leecher = set.leechers.swap_remove(&key).is_some();
                set.seeders.insert(key, now);
                shard.seeders += 1;
                if was_leecher {
                    shard.leechers -= 1;
                }
                // One download per leecher that says it completed; a repeated `completed`
                // from a peer that is already a seeder counts nothing.
                if was_leecher && a.event == AnnounceEvent::Completed {
                    *shard.downloads.entry(a.info_hash).or_default() += 1;
                    *shard.pending.entry(a.info_hash).or_default() += 1;
                }
            }
        } else if let Some(seen) = set.leechers.get_mut(&key) {
            *seen = now;
        } else {
            if set.seeders.swap_remove(&key).is_some() {
                shard.seeders -= 1;
            }
            set.leechers.insert(key, now);
            shard.leechers += 1;
        }

        let torrent = &shard.torrents[&a.info_hash];
        let (own, other) = if a.addr.is_ipv4() {
            (&torrent.v4, &torrent.v6)
        } else {
            (&torrent.v6, &torrent.v4)
        };
        own.pick(seeder, &key, a.numwant, out);
        if a.families == Families::Both {
            other.pick(seeder, &key, a.numwant, out);
        }
        stats_of(shard, &a.info_hash)
    }

    pub fn scrape(&self, h: &InfoHash) -> TorrentStats {
        stats_of(&self.shard(h), h)
    }

    /// A torrent's counts, or `None` when the tracker knows nothing of it (no peers, no count).
    pub fn torrent(&self, h: &InfoHash) -> Option<TorrentStats> {
        let shard = self.shard(h);
        (shard.torrents.contains_key(h) || shard.downloads.contains_key(h))
            .then(|| stats_of(&shard, h))
    }

    /// Every known torrent ordered by info-hash, skipping `offset` and returning at most
    /// `limit`, with the total. Sorting all hashes costs O(n log n): this is for the admin
    /// API, never the announce path.
    pub fn page(&self, offset: usize, limit: usize) -> (usize, Vec<(InfoHash, TorrentStats)>) {
        let mut hashes = Vec::new();
        for shard in self.shards.iter() {
            let s = shard.lock().unwrap_or_else(|e| e.into_inner());
            hashes.extend(s.torrents.keys().copied());
            hashes.extend(
                s.downloads
                    .keys()
                    .filter(|h| !s.torrents.contains_key(h))
                    .copied(),
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
    /// download counts stay.
    pub fn remove_expired(&self, cutoff: u32) -> Expired {
        let mut expired = Expired::default();
        for shard in self.shards.iter() {
            let mut guard = shard.lock().unwrap_or_else(|e| e.into_inner());
            let shard = &mut *guard;
            let (mut gone_s, mut gone_l) = (0, 0);
            let before = shard.torrents.len();
            shard.torrents.retain(|_, t| {
                for set in [&mut t.v4, &mut t.v6] {
                    let (s, l) = (set.seeders.len(), set.leechers.len());
                    set.seeders.retain(|_, seen| *seen >= cutoff);
                    set.leechers.retain(|_, seen| *seen >= cutoff);
                    gone_s += s - set.seeders.len();
                    gone_l += l - set.leechers.len();
                }
                !t.is_empty()
            });
            shard.seeders -= gone_s as u64;
            shard.leechers -= gone_l as u64;
            expired.peers += (gone_s + gone_l) as u64;
            expired.torrents += (before - shard.torrents.len()) as u64;
        }
        expired
    }

    /// Sets persisted download counts, as streamed from the store at start.
    pub fn load_downloads(&self, counts: impl IntoIterator<Item = (InfoHash, u64)>) {
        for (h, n) in counts {
            if n > 0 {
                self.shard(&h).downloads.insert(h, n);
            }
        }
    }

    /// Hands the flusher every download increment since the last call.
    pub fn take_pending(&self) -> Vec<(InfoHash, u64)> {
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            let mut s = shard.lock().unwrap_or_else(|e| e.into_inner());
            out.extend(s.pending.drain());
        }
        out
    }

    pub fn stats(&self) -> SwarmStats {
        let mut st = SwarmStats::default();
        for shard in self.shards.iter() {
            let s = shard.lock().unwrap_or_else(|e| e.into_inner());
            st.torrents += s.torrents.len() as u64;
            st.counted_torrents += s.downloads.len() as u64;
            st.seeders += s.seeders;
            st.leechers += s.leechers;
            st.pending_deltas += s.pending.values().sum::<u64>();
        }
        st
    }
}

fn stats_of(shard: &Shard, h: &InfoHash) -> TorrentStats {
    let (seeders, leechers) = shard.torrents.get(h).map_or((0, 0), Torrent::counts);
    TorrentStats {
        seeders,
        leechers,
        downloaded: shard.downloads.get(h).copied().unwrap_or(0),
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
        let st = s.announce(&a, 0, &mut out);
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
        );
        let other = InfoHash([2; 20]);
        s.announce(
            &Announce {
                info_hash: other,
                ..peer(3, "10.0.0.3:1", 5, AnnounceEvent::Started)
            },
            10,
            &mut out,
        );
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

    fn op() -> impl Strategy<Value = Op> {
        (
            0u8..3,
            0u8..4,
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

    proptest! {
        /// The swarm agrees with a plain map model on counts, downloads and pending deltas.
        #[test]
        fn matches_a_simple_model(ops in proptest::collection::vec(op(), 1..200)) {
            let s = Swarm::new(2);
            let mut model: HashMap<(u8, u8, u8), bool> = HashMap::new();
            let mut downloads: HashMap<u8, u64> = HashMap::new();
            for o in &ops {
                let a = Announce {
                    info_hash: InfoHash([o.torrent; 20]),
                    peer_id: PeerId([o.peer; 20]),
                    addr: if o.addr == 2 { format!("[::1]:{}", 1000 + o.peer as u16) } else { format!("10.0.0.{}:1000", o.addr) }.parse().unwrap(),
                    left: o.left, event: o.event, numwant: 100, families: Families::Both,
                };
                let key = (o.torrent, o.peer, o.addr);
                if o.event == AnnounceEvent::Stopped {
                    model.remove(&key);
                } else {
                    let was = model.insert(key, o.left == 0);
                    if was == Some(false) && o.left == 0 && o.event == AnnounceEvent::Completed {
                        *downloads.entry(o.torrent).or_default() += 1;
                    }
                }
                let mut out = Vec::new();
                let st = s.announce(&a, 0, &mut out);
                let seeders = model.iter().filter(|(k, v)| k.0 == o.torrent && **v).count() as u32;
                let leechers = model.iter().filter(|(k, v)| k.0 == o.torrent && !**v).count() as u32;
                prop_assert_eq!((st.seeders, st.leechers), (seeders, leechers));
                prop_assert_eq!(st.downloaded, downloads.get(&o.torrent).copied().unwrap_or(0));
                if o.event != AnnounceEvent::Stopped {
                    let expect = if o.left == 0 { leechers } else { seeders + leechers - 1 };
                    prop_assert_eq!(out.len() as u32, expect);
                }
            }
            let stats = s.stats();
            prop_assert_eq!(stats.seeders, model.values().filter(|v| **v).count() as u64);
            prop_assert_eq!(stats.leechers, model.values().filter(|v| !**v).count() as u64);
            let mut pending = s.take_pending();
            pending.sort();
            let mut expect: Vec<_> = downloads.iter().filter(|(_, n)| **n > 0).map(|(t, n)| (InfoHash([*t; 20]), *n)).collect();
            expect.sort();
            prop_assert_eq!(pending, expect);
        }
    }

    #[test]
    fn pages_cover_every_known_torrent_once_in_order() {
        let swarm = Swarm::new(4);
        let hash = |n: u8| InfoHash([n; 20]);
        swarm.load_downloads((1..=5).map(|n| (hash(n * 2), u64::from(n))));
        for n in [3u8, 4, 9] {
            let mut a = peer(n, "10.0.0.1:6881", 0, AnnounceEvent::Started);
            a.info_hash = hash(n);
            swarm.announce(&a, 1, &mut Vec::new());
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
