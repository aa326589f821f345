//! Expiry (docs/design.md, "Expiry"): silent peers leave without any announce waiting long.
//! A shard is held for about `CHUNK` peers at a time and then handed to a waiting announce
//! (`unlock_fair`: a plain unlock lets the sweep take it straight back, and an announce would
//! wait for the whole shard), and every half millisecond the core is yielded, so a UDP
//! worker sharing it answers between chunks instead of after the scheduler's time slice. A
//! family larger than a chunk is put aside and swept in slices after its shard's pass, so a
//! swarm of millions costs announces no more than a small one.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;

use parking_lot::MutexGuard;
use protocol::{InfoHash, PeerId};

use crate::family::{Family, Ip, Peer, Renewal};
use crate::torrents::{Shard, Torrent};
use crate::{Expired, PeerChange, PeerState, Swarm};

/// What a sweep decides of a peer: gone by its last-seen time and whether it is owned.
type Gone<'a> = &'a dyn Fn(u32, bool) -> bool;

/// Peers (and torrents) looked at per shard lock: tens of microseconds. Tiny under test, so
/// that every test with a swarm of more than a few peers goes through the sliced sweep.
pub(crate) const CHUNK: usize = if cfg!(test) { 8 } else { 1024 };

/// The sweep yields its core at most this long after the last time, between chunks.
const YIELD_EVERY: std::time::Duration = std::time::Duration::from_micros(500);

/// Yields the core between chunks every `YIELD_EVERY`: a UDP worker sharing the core then
/// waits about that long for it, not the scheduler's whole time slice, while a sweep on a
/// busy core still gets a slice of its own each time (yielding after every chunk would leave
/// it one chunk per worker slice).
struct Pace {
    last: std::time::Instant,
}

impl Pace {
    fn new() -> Self {
        Pace {
            last: std::time::Instant::now(),
        }
    }

    fn chunk_done(&mut self) {
        if self.last.elapsed() >= YIELD_EVERY {
            std::thread::yield_now();
            self.last = std::time::Instant::now();
        }
    }
}

/// A torrent's family, for sweeping one later.
#[derive(Clone, Copy)]
enum Kind {
    V4,
    V6,
    Rtc,
}

/// The seeders and leechers a sweep removed, and the torrents it dropped.
#[derive(Default)]
struct Removed {
    seeders: usize,
    leechers: usize,
    torrents: usize,
}

impl Swarm {
    /// Removes peers last seen before `cutoff` and drops torrents left without peers; their
    /// download counts stay. The expiry of a peer this node owns goes on the bus. In a
    /// cluster the same walk renews, as of `now`, the lease of every owned peer whose last
    /// record is one lease old, so the stream holds a record of every live peer within one
    /// lease and a sweep period (docs/design.md, "Several nodes").
    pub fn sweep(&self, now: u32, cutoff: u32) -> Expired {
        let renewal = Renewal {
            now,
            every: self.lease_every,
        };
        self.remove_where(&|seen, _| seen < cutoff, renewal)
    }

    /// Only removes peers last seen before `cutoff` (`sweep` without renewals).
    pub fn remove_expired(&self, cutoff: u32) -> Expired {
        self.remove_where(&|seen, _| seen < cutoff, Renewal::NONE)
    }

    /// Removes the peers `gone` picks by their last-seen time and whether this node owns
    /// them; the removal of an owned one goes on the bus as its expiry, and so does each
    /// lease `renewal` renews. Entries moved by announces between chunks may be looked at
    /// twice or wait for the next pass.
    pub(crate) fn remove_where(&self, gone: Gone, renewal: Renewal) -> Expired {
        let mut expired = Expired::default();
        let mut large = Vec::new();
        let mut pace = Pace::new();
        for i in 0..self.shards.len() {
            let mut from = Some(0);
            while let Some(at) = from {
                let mut guard = self.lock(i);
                let shard = &mut *guard;
                let before = shard.torrents.len();
                let mut g = Removed::default();
                let renewal = self.room_for(&shard.outbox, renewal);
                let outbox = &mut shard.outbox;
                from = shard.torrents.retain_some(at, CHUNK, |h, t| {
                    let mut tell =
                        |addr, id, state| self.publish(outbox, change(*h, addr, id, state));
                    let mut looked = 1;
                    for kind in [Kind::V4, Kind::V6, Kind::Rtc] {
                        let n = family_len(t, kind);
                        if n > CHUNK {
                            large.push((*h, kind));
                            continue;
                        }
                        looked += n;
                        let (s, l, _) =
                            self.sweep_kind(t, kind, usize::MAX, gone, renewal, &mut tell);
                        g.seeders += s;
                        g.leechers += l;
                    }
                    t.shrink();
                    (!t.is_empty(), looked)
                });
                g.torrents = before - shard.torrents.len();
                self.count_gone(shard, &g, &mut expired);
                MutexGuard::unlock_fair(guard);
                pace.chunk_done();
            }
            for (h, kind) in large.drain(..) {
                self.sweep_large(i, (h, kind), gone, renewal, &mut expired, &mut pace);
            }
        }
        expired
    }

    /// Sweeps one large family of shard `i` a chunk per lock, from its top down.
    fn sweep_large(
        &self,
        i: usize,
        (h, kind): (InfoHash, Kind),
        gone: Gone,
        renewal: Renewal,
        expired: &mut Expired,
        pace: &mut Pace,
    ) {
        let mut below = Some(usize::MAX);
        while let Some(b) = below {
            let mut guard = self.lock(i);
            let shard = &mut *guard;
            let renewal = self.room_for(&shard.outbox, renewal);
            let outbox = &mut shard.outbox;
            // The torrent may have gone meanwhile (its peers stopped): nothing left to do.
            let Some(t) = shard.torrents.get_mut(&h) else {
                break;
            };
            let mut tell = |addr, id, state| self.publish(outbox, change(h, addr, id, state));
            let (s, l, next) = self.sweep_kind(t, kind, b, gone, renewal, &mut tell);
            t.shrink();
            let emptied = t.is_empty();
            if emptied {
                let at = shard.torrents.position(&h, shard.torrents.hash(&h));
                at.into_iter().for_each(|at| shard.torrents.remove_at(at));
            }
            let g = Removed {
                seeders: s,
                leechers: l,
                torrents: usize::from(emptied),
            };
            self.count_gone(shard, &g, expired);
            MutexGuard::unlock_fair(guard);
            pace.chunk_done();
            below = next;
        }
    }

    /// Sweeps one family of `t`: whole when `below` is `usize::MAX` and the family is small,
    /// else one chunk below `below`.
    fn sweep_kind(
        &self,
        t: &mut Torrent,
        kind: Kind,
        below: usize,
        gone: Gone,
        renewal: Renewal,
        tell: &mut impl FnMut(SocketAddr, PeerId, PeerState),
    ) -> (usize, usize, Option<usize>) {
        let (r, none) = (renewal, (0, 0, None));
        match kind {
            Kind::V4 => self.sweep_family(&mut t.v4, below, gone, r, tell),
            Kind::V6 => t
                .v6_mut()
                .map_or(none, |f| self.sweep_family(f, below, gone, r, tell)),
            Kind::Rtc => t
                .rtc_mut()
                .map_or(none, |f| self.sweep_family(f, below, gone, r, tell)),
        }
    }

    fn sweep_family<A: Ip>(
        &self,
        f: &mut Family<A>,
        below: usize,
        gone: Gone,
        renewal: Renewal,
        tell: &mut impl FnMut(SocketAddr, PeerId, PeerState),
    ) -> (usize, usize, Option<usize>) {
        let gone = |p: &Peer<A>| gone(p.seen(), p.owned());
        let tell = |p: &Peer<A>, state| tell(p.addr(), p.id(), state);
        if below == usize::MAX && f.len() <= CHUNK {
            let (s, l) = f.remove_where(gone, renewal, &self.hasher, tell);
            return (s, l, None);
        }
        f.remove_some(below, CHUNK, gone, renewal, &self.hasher, tell)
    }

    /// The renewals a chunk may make: none while the shard's outbox could not take all a
    /// chunk adds, so a sweep of millions never overflows it (dropping changes); a renewal
    /// that waits is made by the peer's next announce or the next sweep.
    fn room_for(&self, outbox: &[PeerChange], renewal: Renewal) -> Renewal {
        if outbox.len() + 4 * CHUNK <= self.outbox_cap {
            renewal
        } else {
            Renewal::NONE
        }
    }

    /// What a chunk removed, in the shard's and the swarm's totals.
    fn count_gone(&self, shard: &mut Shard, g: &Removed, expired: &mut Expired) {
        let peers = g.seeders + g.leechers;
        shard.seeders -= g.seeders as u64;
        shard.leechers -= g.leechers as u64;
        expired.peers += peers as u64;
        expired.torrents += g.torrents as u64;
        self.held.fetch_sub(g.torrents, Relaxed);
        self.peers.fetch_sub(peers, Relaxed);
    }
}

fn family_len(t: &Torrent, kind: Kind) -> usize {
    match kind {
        Kind::V4 => t.v4.len(),
        Kind::V6 => t.v6().map_or(0, Family::len),
        Kind::Rtc => t.rtc().map_or(0, Family::len),
    }
}

/// An owner tells the others its peer's lease ran out (`Expired`) or renews it (its role).
fn change(info_hash: InfoHash, addr: SocketAddr, peer_id: PeerId, state: PeerState) -> PeerChange {
    PeerChange {
        info_hash,
        peer_id,
        addr,
        state,
        completed: false,
    }
}
