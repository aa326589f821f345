//! Download counts: a sorted array for those loaded at start (28 bytes each), a map for the
//! rest, the increments the flusher has not taken yet, and the loader that installs counts.

use std::sync::atomic::Ordering::Relaxed;

use hashbrown::HashMap;
use protocol::InfoHash;

use crate::Swarm;

/// A persisted count of a torrent without (or before) peers. The count is split in two
/// halves so the record packs into 28 bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cold {
    hash: InfoHash,
    count: [u32; 2],
}

impl Cold {
    pub(crate) fn new(hash: InfoHash, n: u64) -> Self {
        Cold {
            hash,
            count: [(n >> 32) as u32, n as u32],
        }
    }

    pub(crate) fn get(&self) -> u64 {
        (u64::from(self.count[0]) << 32) | u64::from(self.count[1])
    }
}

/// Download counts of one shard's torrents, with or without peers.
#[derive(Default)]
pub(crate) struct Counts {
    /// Counts loaded at start, sorted by hash; their values change in place.
    cold: Vec<Cold>,
    /// Counts of torrents not in `cold`.
    hot: HashMap<InfoHash, u64>,
    /// Increments not yet taken by the flusher.
    pending: HashMap<InfoHash, u64>,
}

impl Counts {
    /// Every torrent with a count.
    pub(crate) fn hashes(&self) -> impl Iterator<Item = InfoHash> + '_ {
        self.hot
            .keys()
            .copied()
            .chain(self.cold.iter().map(|c| c.hash))
    }

    /// The increments since the last call, for the flusher.
    pub(crate) fn take_pending(&mut self) -> impl Iterator<Item = (InfoHash, u64)> + '_ {
        self.pending.drain()
    }

    /// How many increments wait for the flusher.
    pub(crate) fn pending(&self) -> u64 {
        self.pending.values().sum()
    }

    fn cold_at(&self, h: &InfoHash) -> Result<usize, usize> {
        self.cold.binary_search_by(|c| c.hash.cmp(h))
    }

    pub(crate) fn get(&self, h: &InfoHash) -> u64 {
        match self.cold_at(h) {
            Ok(i) => self.cold[i].get(),
            Err(_) => self.hot.get(h).copied().unwrap_or(0),
        }
    }

    /// Counts one download; returns the new total.
    pub(crate) fn add_one(&mut self, h: InfoHash) -> u64 {
        *self.pending.entry(h).or_default() += 1;
        self.add_remote(h)
    }

    /// Counts one download that another node announced and will flush itself.
    pub(crate) fn add_remote(&mut self, h: InfoHash) -> u64 {
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

    pub(crate) fn len(&self) -> usize {
        self.cold.len() + self.hot.len()
    }

    pub(crate) fn has(&self, h: &InfoHash) -> bool {
        self.cold_at(h).is_ok() || self.hot.contains_key(h)
    }
}

/// Collects persisted counts at start without locking, then installs them sorted.
pub struct Loader<'a> {
    swarm: &'a Swarm,
    /// Fixed-size chunks, so memory is returned chunk by chunk while they are sorted in.
    chunks: Vec<Vec<Cold>>,
}

const LOAD_CHUNK: usize = 1 << 16;

impl<'a> Loader<'a> {
    pub(crate) fn new(swarm: &'a Swarm) -> Self {
        Loader {
            swarm,
            chunks: Vec::new(),
        }
    }

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
            part.sort_by_key(|a| a.hash);
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
