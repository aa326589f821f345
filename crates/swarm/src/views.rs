//! Whole-swarm views for the admin API and the status page: pages of torrents in info-hash
//! order, and one survey (the biggest swarms, peers by family). Each walks every torrent,
//! one shard locked at a time: never on the announce path.

use protocol::InfoHash;

use crate::{Survey, Swarm, TorrentStats};

impl Swarm {
    /// Every known torrent ordered by info-hash, skipping `offset` and returning at most
    /// `limit`, with the total. Sorting all hashes costs O(n log n): this is for the admin
    /// API, never the announce path.
    pub fn page(&self, offset: usize, limit: usize) -> (usize, Vec<(InfoHash, TorrentStats)>) {
        let mut hashes = Vec::new();
        for i in 0..self.shards.len() {
            let s = self.lock(i);
            hashes.extend(s.torrents.keys().copied());
            let counted_only = s.counts.hashes().filter(|h| !s.torrents.contains_key(h));
            hashes.extend(counted_only);
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

    /// One pass over every torrent for a status page: the `n` torrents with the most peers
    /// (most first, ties by info-hash) and the peers of each family. O(torrents), one
    /// shard locked at a time: never on the announce path.
    pub fn survey(&self, n: usize) -> Survey {
        use std::cmp::Reverse;
        use std::collections::BinaryHeap;
        let mut heap = BinaryHeap::new();
        let mut out = Survey::default();
        for i in 0..self.shards.len() {
            let s = self.lock(i);
            for (h, t) in s.torrents.iter() {
                out.v4 += t.v4.len() as u64;
                out.v6 += t.v6().map_or(0, |f| f.len()) as u64;
                out.rtc += t.rtc().map_or(0, |f| f.len()) as u64;
                if n == 0 {
                    continue;
                }
                heap.push(Reverse((t.peers(), Reverse(*h))));
                if heap.len() > n {
                    heap.pop();
                }
            }
        }
        let mut top: Vec<_> = heap.into_iter().map(|Reverse((_, Reverse(h)))| h).collect();
        top.sort_unstable();
        out.top = top.into_iter().map(|h| (h, self.scrape(&h))).collect();
        out.top.sort_by(|a, b| {
            let peers = |s: &TorrentStats| u64::from(s.seeders) + u64::from(s.leechers);
            peers(&b.1).cmp(&peers(&a.1)).then(a.0.cmp(&b.0))
        });
        out
    }
}
