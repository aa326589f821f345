//! Several nodes, one swarm (docs/design.md, "Several nodes"): what this node's peers did, for the
//! publisher to put on the bus, and what other nodes' peers did, applied here.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;

use protocol::{InfoHash, PeerId};

use crate::family::{Announcer, Ip, Origin, lease_at};
use crate::torrents::Shard;
use crate::{Refusal, Swarm};

/// What a record says of its peer. Departures say why: a stop removes the endpoint on
/// every node, an expiry only where its writer owns it (docs/design.md, "Agreement").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerState {
    Seeder,
    Leecher,
    /// The client said `stopped`.
    Stopped,
    /// The owner's lease ran out: the client stopped announcing there.
    Expired,
}

/// How a record read from the bus is applied here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    pub origin: Origin,
    /// When the record was written, on this node's clock.
    pub at: u32,
    /// Peers last seen before it are expired here (now minus one peer timeout).
    pub cutoff: u32,
    /// Whether a `completed` raises the count here (not while replaying history the
    /// database already holds, nor for this node's own records, counted when announced).
    pub count: bool,
}

/// A peer as one node sees it, for comparing views.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PeerView {
    pub addr: SocketAddr,
    pub peer_id: [u8; 20],
    pub seeder: bool,
    /// None: this node owns it; else the `Origin::Node` index of its latest record's writer.
    pub owner: Option<u16>,
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
            for (h, t) in torrents.iter() {
                owned_changes(h, &t.v4, |c| self.publish(outbox, c));
                for f in t.v6().into_iter().chain(t.rtc()) {
                    owned_changes(h, f, |c| self.publish(outbox, c));
                }
            }
        }
    }

    /// Applies a record read from the bus (docs/design.md, "Agreement"). A peer placed by
    /// another node's record lives here one lease interval longer than on its owner, so the
    /// owner's expiry record, not this node's clock, normally removes it; a peer of a node
    /// that died expires here by the same clock on every node.
    pub fn apply(&self, c: &PeerChange, d: &Delivery) -> Result<(), Refusal> {
        let mut guard = self.shard(&c.info_hash);
        let shard = &mut *guard;
        let h = c.info_hash;
        let (seen, lease) = match d.origin {
            Origin::Me => (d.at, lease_at(d.at)),
            Origin::Node(i) => (d.at.saturating_add(self.lease_every), i & Origin::MAX_NODE),
        };
        // Another node's record whose lease ran out on the way places nothing. This node's
        // own is placed: its sweep announces the expiry to everyone.
        let stale = d.origin != Origin::Me && seen < d.cutoff;
        let joins = matches!(c.state, PeerState::Seeder | PeerState::Leecher) && !stale;
        // The download happened whatever this node makes of the peer, even a record too
        // late to place it: count it first.
        let downloaded = (c.completed && d.count && d.origin != Origin::Me)
            .then(|| self.count_remote(&mut shard.counts, h))
            .flatten();
        let Some(at) = self.find_or_make(&mut shard.torrents, &shard.counts, h, joins)? else {
            return Ok(());
        };
        let torrent = shard.torrents.at(at);
        let room = self.room(torrent);
        let change = match Announcer::new(c.peer_id, c.addr, seen) {
            Announcer::V4(p) => {
                let p = p.with_lease(lease);
                torrent
                    .v4
                    .apply(p, d.origin, c.state, stale, &self.hasher, room)
            }
            a @ (Announcer::V6(p) | Announcer::Rtc(p)) => {
                let (v6, rtc) = torrent.rare_mut();
                let family = if matches!(a, Announcer::Rtc(_)) {
                    rtc
                } else {
                    v6
                };
                let p = p.with_lease(lease);
                family.apply(p, d.origin, c.state, stale, &self.hasher, room)
            }
        };
        let change = match change {
            Ok(change) => change,
            Err(refused) => {
                self.drop_if_empty(&mut shard.torrents, at);
                return Err(refused);
            }
        };
        self.account(&mut shard.seeders, &mut shard.leechers, &change);
        if let Some(n) = downloaded {
            torrent.downloaded = n;
        }
        self.drop_if_empty(&mut shard.torrents, at);
        Ok(())
    }

    /// Counts another node's download in memory (its node flushes it), within
    /// `max_counted_torrents`; the new count, or None past that limit.
    fn count_remote(&self, counts: &mut crate::counts::Counts, h: InfoHash) -> Option<u64> {
        if counts.has(&h) || self.counted.fetch_add(1, Relaxed) < self.limits.max_counted_torrents {
            Some(counts.add_remote(h))
        } else {
            self.counted.fetch_sub(1, Relaxed);
            None
        }
    }

    /// Drops every peer another node's record placed here: the bus lost the records they
    /// stand on (a Redis that restarted empty), and their owners publish them again.
    pub fn forget_remote(&self) -> u64 {
        self.remove_where(&|_, owned| !owned, crate::family::Renewal::NONE)
            .peers
    }

    /// Every peer of a torrent as this node sees it, for comparing nodes' views.
    pub fn peers(&self, h: &InfoHash) -> Vec<PeerView> {
        let shard = self.shard(h);
        let mut out = Vec::new();
        if let Some(t) = shard.torrents.get(h) {
            views(&t.v4, &mut out);
            for f in t.v6().into_iter().chain(t.rtc()) {
                views(f, &mut out);
            }
        }
        out.sort();
        out
    }
}

fn views<A: Ip>(f: &crate::family::Family<A>, out: &mut Vec<PeerView>) {
    for (p, seeder) in f.with_roles() {
        out.push(PeerView {
            addr: p.addr(),
            peer_id: p.id().0,
            seeder,
            owner: match p.owner() {
                Origin::Me => None,
                Origin::Node(n) => Some(n),
            },
        });
    }
}

fn owned_changes<A: Ip>(
    h: &InfoHash,
    f: &crate::family::Family<A>,
    mut out: impl FnMut(PeerChange),
) {
    for (p, seeder) in f.with_roles() {
        if p.owned() {
            out(PeerChange {
                info_hash: *h,
                peer_id: p.id(),
                addr: p.addr(),
                state: if seeder {
                    PeerState::Seeder
                } else {
                    PeerState::Leecher
                },
                completed: false,
            });
        }
    }
}
