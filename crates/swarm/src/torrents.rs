//! Torrents with peers: one record per torrent, and each shard's table of them.

use std::hash::BuildHasher;

use hashbrown::DefaultHashBuilder;
use protocol::InfoHash;

use crate::TorrentStats;
use crate::counts::Counts;
use crate::family::Family;
use crate::slots::{Slots, prefetch, prefetch_range};

/// The families most swarms lack: IPv6 peers and WebSocket (WebRTC) peers, whose
/// endpoints are 16 bytes too (`protocol::ws::Endpoint`).
#[derive(Debug, Default)]
pub(crate) struct Rare {
    v6: Family<[u8; 16]>,
    rtc: Family<[u8; 16]>,
}

#[derive(Debug, Default)]
pub(crate) struct Torrent {
    pub(crate) v4: Family<[u8; 4]>,
    /// Most swarms have neither IPv6 nor WebSocket peers: eight bytes instead of two families.
    rare: Option<Box<Rare>>,
    /// The torrent's download count, mirrored from `Counts` so announces need no second lookup.
    pub(crate) downloaded: u64,
}

impl Torrent {
    pub(crate) fn with_downloads(downloaded: u64) -> Self {
        Torrent {
            downloaded,
            ..Torrent::default()
        }
    }

    pub(crate) fn v6(&self) -> Option<&Family<[u8; 16]>> {
        self.rare.as_deref().map(|r| &r.v6)
    }

    pub(crate) fn rtc(&self) -> Option<&Family<[u8; 16]>> {
        self.rare.as_deref().map(|r| &r.rtc)
    }

    pub(crate) fn v6_mut(&mut self) -> Option<&mut Family<[u8; 16]>> {
        self.rare.as_deref_mut().map(|r| &mut r.v6)
    }

    pub(crate) fn rtc_mut(&mut self) -> Option<&mut Family<[u8; 16]>> {
        self.rare.as_deref_mut().map(|r| &mut r.rtc)
    }

    /// Both rare families, made if absent (for a peer about to join one).
    pub(crate) fn rare_mut(&mut self) -> (&mut Family<[u8; 16]>, &mut Family<[u8; 16]>) {
        let r = self.rare.get_or_insert_with(Box::default);
        (&mut r.v6, &mut r.rtc)
    }

    /// Frees the rare families once neither holds a peer.
    pub(crate) fn shrink(&mut self) {
        if self
            .rare
            .as_ref()
            .is_some_and(|r| r.v6.is_empty() && r.rtc.is_empty())
        {
            self.rare = None;
        }
    }

    pub(crate) fn stats(&self) -> TorrentStats {
        let (seeders, leechers) = self.counts();
        TorrentStats {
            seeders,
            leechers,
            downloaded: self.downloaded,
        }
    }

    pub(crate) fn peers(&self) -> usize {
        self.v4.len() + self.rare.as_ref().map_or(0, |r| r.v6.len() + r.rtc.len())
    }

    /// Seeders and leechers of every family: a torrent has one set of numbers, whichever
    /// protocol its peers speak.
    pub(crate) fn counts(&self) -> (u32, u32) {
        let (s4, l4) = self.v4.counts();
        let (s6, l6) = self.rare.as_ref().map_or((0, 0), |r| {
            let ((a, b), (c, d)) = (r.v6.counts(), r.rtc.counts());
            (a + c, b + d)
        });
        ((s4 + s6) as u32, (l4 + l6) as u32)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.v4.is_empty()
            && self
                .rare
                .as_ref()
                .is_none_or(|r| r.v6.is_empty() && r.rtc.is_empty())
    }
}

/// The torrents with peers in one shard: dense entries, found through `Slots` by a keyed
/// hash of the info-hash (keyed, because anyone can choose info-hashes to collide).
#[derive(Default)]
pub(crate) struct Torrents {
    hasher: DefaultHashBuilder,
    slots: Slots,
    entries: Vec<(InfoHash, Torrent)>,
}

impl Torrents {
    /// The torrent at a position `position` or `insert` returned.
    pub(crate) fn at(&mut self, at: usize) -> &mut Torrent {
        &mut self.entries[at].1
    }

    /// The entry at a position a prefetch guessed, if there still is one.
    pub(crate) fn entry(&self, at: usize) -> Option<&(InfoHash, Torrent)> {
        self.entries.get(at)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &(InfoHash, Torrent)> {
        self.entries.iter()
    }

    /// Prefetch, first pass: where the probe for `hash` starts.
    pub(crate) fn prefetch_home(&self, hash: u64) {
        prefetch(self.slots.home(hash));
    }

    /// Prefetch, second pass: the entry the probe for `hash` most likely ends at; its
    /// position, to follow.
    pub(crate) fn prefetch_entry(&self, hash: u64) -> Option<usize> {
        let at = self.slots.guess(hash)?;
        prefetch_range(&self.entries[at], size_of::<(InfoHash, Torrent)>());
        Some(at)
    }
    pub(crate) fn hash(&self, h: &InfoHash) -> u64 {
        self.hasher.hash_one(h)
    }

    pub(crate) fn position(&self, h: &InfoHash, hash: u64) -> Option<usize> {
        self.slots.find(hash, |p| self.entries[p].0 == *h)
    }

    pub(crate) fn get(&self, h: &InfoHash) -> Option<&Torrent> {
        let at = self.position(h, self.hash(h))?;
        Some(&self.entries[at].1)
    }

    pub(crate) fn get_mut(&mut self, h: &InfoHash) -> Option<&mut Torrent> {
        let at = self.position(h, self.hash(h))?;
        Some(&mut self.entries[at].1)
    }

    pub(crate) fn contains_key(&self, h: &InfoHash) -> bool {
        self.position(h, self.hash(h)).is_some()
    }

    /// Adds a torrent known to be absent; returns its position.
    pub(crate) fn insert(&mut self, h: InfoHash, hash: u64, t: Torrent) -> usize {
        self.entries.push((h, t));
        let at = self.entries.len() - 1;
        self.slots.insert(hash, at, self.entries.len());
        at
    }

    pub(crate) fn remove_at(&mut self, at: usize) {
        self.slots.remove(self.hash(&self.entries[at].0), at);
        let last = self.entries.len() - 1;
        if at != last {
            self.slots
                .repoint(self.hash(&self.entries[last].0), last, at);
        }
        self.entries.swap_remove(at);
    }

    /// Looks at entries from `from` on until `keep` has reported `budget` of work (it says
    /// whether to keep an entry and what looking at it cost), dropping those it refuses;
    /// returns where the next call should go on, or None once the end was reached (then the
    /// table is shrunk if it has become much too large).
    pub(crate) fn retain_some(
        &mut self,
        from: usize,
        budget: usize,
        mut keep: impl FnMut(&InfoHash, &mut Torrent) -> (bool, usize),
    ) -> Option<usize> {
        let mut i = from;
        let mut spent = 0;
        while spent < budget {
            if i >= self.entries.len() {
                break;
            }
            let (h, t) = &mut self.entries[i];
            let (kept, cost) = keep(h, t);
            spent += cost.max(1);
            if kept {
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

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn keys(&self) -> impl Iterator<Item = &InfoHash> {
        self.entries.iter().map(|(h, _)| h)
    }
}

#[derive(Default)]
pub(crate) struct Shard {
    pub(crate) torrents: Torrents,
    pub(crate) counts: Counts,
    pub(crate) seeders: u64,
    pub(crate) leechers: u64,
    /// Changes of peers this node owns, for the cluster publisher (empty on a single node).
    pub(crate) outbox: Vec<crate::PeerChange>,
}

impl Shard {
    pub(crate) fn stats(&self, h: &InfoHash) -> TorrentStats {
        match self.torrents.get(h) {
            Some(t) => t.stats(),
            None => TorrentStats {
                downloaded: self.counts.get(h),
                ..TorrentStats::default()
            },
        }
    }
}
