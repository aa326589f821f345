//! Several nodes, one swarm (DESIGN section 8): what this node's peers did, for the
//! publisher to put on the bus, and what other nodes' peers did, applied here.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;

use protocol::{InfoHash, PeerId};

use crate::family::{Asker, Ip, Room};
use crate::torrents::{Shard, Torrent};
use crate::{Refusal, Swarm};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerState {
    Seeder,
    Leecher,
    Left,
}

/// One peer's change as it travels between nodes: a join, a role change, a departure or a
/// lease renewal (the same state again).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerChange {
    pub info_hash: InfoHash,
    pub peer_id: PeerId,
    pub addr: SocketAddr,
    pub state: PeerState,
    /// The peer turned seeder with a `completed`: one download, counted where it was
    /// announced and flushed by that node only.
    pub completed: bool,
}

impl Swarm {
    pub(crate) fn publish(&self, outbox: &mut Vec<PeerChange>, c: PeerChange) {
        if outbox.len() < self.outbox_cap {
            outbox.push(c);
        } else {
            self.dropped_changes.fetch_add(1, Relaxed);
        }
    }

    /// Hands the publisher every change of an owned peer since the last call.
    pub fn take_changes(&self) -> Vec<PeerChange> {
        let mut out = Vec::new();
        for i in 0..self.shards.len() {
            out.append(&mut self.lock(i).outbox);
        }
        out
    }

    /// Changes dropped because the outbox was full (the bus was away too long).
    pub fn dropped_changes(&self) -> u64 {
        self.dropped_changes.load(Relaxed)
    }

    /// Queues a join of every peer this node owns: after the bus lost its data (a Redis
    /// restarted empty) the other nodes learn them again.
    pub fn republish_owned(&self) {
        for i in 0..self.shards.len() {
            let mut guard = self.lock(i);
            let Shard {
                torrents, outbox, ..
            } = &mut *guard;
            for (h, t) in &torrents.entries {
                owned_changes(h, &t.v4, |c| self.publish(outbox, c));
                if let Some(f) = &t.v6 {
                    owned_changes(h, f, |c| self.publish(outbox, c));
                }
            }
        }
    }

    /// Applies another node's record, as seen at `now` (the record's time on this node's
    /// clock: the peer expires here one timeout after it). `count` says whether a
    /// `completed` raises the count here (not while replaying history the database already
    /// holds); it never becomes a pending delta: its own node flushes it.
    pub fn apply(&self, c: &PeerChange, now: u32, count: bool) -> Result<(), Refusal> {
        let mut guard = self.shard(&c.info_hash);
        let shard = &mut *guard;
        let h = c.info_hash;
        let th = shard.torrents.hash(&h);
        let at = match shard.torrents.position(&h, th) {
            Some(at) => at,
            None if c.state == PeerState::Left => return Ok(()),
            None => {
                if self.held.load(Relaxed) >= self.limits.max_torrents {
                    return Err(Refusal::Torrents);
                }
                self.held.fetch_add(1, Relaxed);
                let t = Torrent {
                    downloaded: shard.counts.get(&h),
                    ..Torrent::default()
                };
                shard.torrents.insert(h, th, t)
            }
        };
        let torrent = &mut shard.torrents.entries[at].1;
        let room = Room {
            tracker_full: self.peers.load(Relaxed) >= self.limits.max_peers,
            torrent_full: torrent.peers() >= self.limits.max_peers_per_torrent,
            per_ip: self.limits.max_peers_per_ip,
        };
        let seeder = match c.state {
            PeerState::Seeder => Some(true),
            PeerState::Leecher => Some(false),
            PeerState::Left => None,
        };
        let change = match Asker::new(c.peer_id, c.addr, now) {
            Asker::V4(p) => torrent.v4.apply(p, seeder, &self.hasher, room),
            Asker::V6(p) => {
                torrent
                    .v6
                    .get_or_insert_with(Box::default)
                    .apply(p, seeder, &self.hasher, room)
            }
        };
        let change = match change {
            Ok(change) => change,
            Err(refused) => {
                self.drop_if_empty(&mut shard.torrents, at);
                return Err(refused);
            }
        };
        shard.seeders = shard.seeders.wrapping_add_signed(change.seeders);
        shard.leechers = shard.leechers.wrapping_add_signed(change.leechers);
        match change.seeders + change.leechers {
            1 => self.peers.fetch_add(1, Relaxed),
            -1 => self.peers.fetch_sub(1, Relaxed),
            _ => 0,
        };
        if c.completed && count {
            if shard.counts.has(&h)
                || self.counted.fetch_add(1, Relaxed) < self.limits.max_counted_torrents
            {
                torrent.downloaded = shard.counts.add_remote(h);
            } else {
                self.counted.fetch_sub(1, Relaxed);
            }
        }
        self.drop_if_empty(&mut shard.torrents, at);
        Ok(())
    }
}

fn owned_changes<A: Ip>(
    h: &InfoHash,
    f: &crate::family::Family<A>,
    mut out: impl FnMut(PeerChange),
) {
    for (i, p) in f.peers.iter().enumerate() {
        if p.owned() {
            out(PeerChange {
                info_hash: *h,
                peer_id: p.id,
                addr: p.ip.socket(p.port),
                state: if i < f.seeders as usize {
                    PeerState::Seeder
                } else {
                    PeerState::Leecher
                },
                completed: false,
            });
        }
    }
}
