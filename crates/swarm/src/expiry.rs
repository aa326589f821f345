//! Expiry (docs/design.md, "Expiry"): silent peers leave without any announce waiting long.
//! A shard is held for about `CHUNK` peers at a time and then handed to a waiting announce
//! (`unlock_fair`: a plain unlock lets the sweep take it straight back, and an announce would
//! wait for the whole shard). A family larger than a chunk is put aside and swept in slices
//! after its shard's pass, so a swarm of millions costs announces no more than a small one.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;

use parking_lot::MutexGuard;
use protocol::{InfoHash, PeerId};

use crate::family::{Family, Ip, Peer};
use crate::torrents::{Shard, Torrent};
use crate::{Expired, PeerChange, PeerState, Swarm};

/// Peers (and torrents) looked at per shard lock: tens of microseconds. Tiny under test, so
/// that every test with a swarm of more than a few peers goes through the sliced sweep.
pub(crate) const CHUNK: usize = if cfg!(test) { 8 } else { 1024 };

/// A torrent's family, for sweeping one later.
#[derive(Clone, Copy)]
enum Kind {
    V4,
    V6,
    Rtc,
}

/// The seeders and leechers a sweep removed, and the torrents it dropped.
#[derive(Default)]
struct Gone {
    seeders: usize,
    leechers: usize,
    torrents: usize,
}

impl Swarm {
    /// Removes peers last seen before `cutoff` and drops torrents left without peers; their
    /// download counts stay. The expiry of a peer this node owns goes on the bus.
    pub fn remove_expired(&self, cutoff: u32) -> Expired {
        self.remove_where(|seen, _| seen < cutoff)
    }

    /// Removes the peers `gone` picks by their last-seen time and whether this node owns
    /// them; the removal of an owned one goes on the bus as its expiry. Entries moved by
    /// announces between chunks may be looked at twice or wait for the next pass.
    pub(crate) fn remove_where(&self, gone: impl Fn(u32, bool) -> bool) -> Expired {
        let mut expired = Expired::default();
        let mut large = Vec::new();
        for i in 0..self.shards.len() {
            let mut from = Some(0);
            while let Some(at) = from {
                let mut guard = self.lock(i);
                let shard = &mut *guard;
                let before = shard.torrents.len();
                let mut g = Gone::default();
                let outbox = &mut shard.outbox;
                from = shard.torrents.retain_some(at, CHUNK, |h, t| {
                    let mut tell = |addr, id| self.publish(outbox, expiry(*h, addr, id));
                    let mut looked = 1;
                    for kind in [Kind::V4, Kind::V6, Kind::Rtc] {
                        let n = family_len(t, kind);
                        if n > CHUNK {
                            large.push((*h, kind));
                            continue;
                        }
                        looked += n;
                        let (s, l, _) = self.sweep(t, kind, usize::MAX, &gone, &mut tell);
                        g.seeders += s;
                        g.leechers += l;
                    }
                    t.shrink();
                    (!t.is_empty(), looked)
                });
                g.torrents = before - shard.torrents.len();
                self.count_gone(shard, &g, &mut expired);
                MutexGuard::unlock_fair(guard);
            }
            for (h, kind) in large.drain(..) {
                self.sweep_large(i, h, kind, &gone, &mut expired);
            }
        }
        expired
    }

    /// Sweeps one large family of shard `i` a chunk per lock, from its top down.
    fn sweep_large(
        &self,
        i: usize,
        h: InfoHash,
        kind: Kind,
        gone: &impl Fn(u32, bool) -> bool,
        expired: &mut Expired,
    ) {
        let mut below = Some(usize::MAX);
        while let Some(b) = below {
            let mut guard = self.lock(i);
            let shard = &mut *guard;
            let outbox = &mut shard.outbox;
            // The torrent may have gone meanwhile (its peers stopped): nothing left to do.
            let Some(t) = shard.torrents.get_mut(&h) else {
                break;
            };
            let mut tell = |addr, id| self.publish(outbox, expiry(h, addr, id));
            let (s, l, next) = self.sweep(t, kind, b, gone, &mut tell);
            t.shrink();
            let emptied = t.is_empty();
            if emptied {
                let at = shard.torrents.position(&h, shard.torrents.hash(&h));
                at.into_iter().for_each(|at| shard.torrents.remove_at(at));
            }
            let g = Gone {
                seeders: s,
                leechers: l,
                torrents: usize::from(emptied),
            };
            self.count_gone(shard, &g, expired);
            MutexGuard::unlock_fair(guard);
            below = next;
        }
    }

    /// Sweeps one family of `t`: whole when `below` is `usize::MAX` and the family is small,
    /// else one chunk below `below`.
    fn sweep(
        &self,
        t: &mut Torrent,
        kind: Kind,
        below: usize,
        gone: &impl Fn(u32, bool) -> bool,
        tell: &mut impl FnMut(SocketAddr, PeerId),
    ) -> (usize, usize, Option<usize>) {
        match kind {
            Kind::V4 => self.sweep_family(&mut t.v4, below, gone, tell),
            Kind::V6 => t
                .v6_mut()
                .map_or((0, 0, None), |f| self.sweep_family(f, below, gone, tell)),
            Kind::Rtc => t
                .rtc_mut()
                .map_or((0, 0, None), |f| self.sweep_family(f, below, gone, tell)),
        }
    }

    fn sweep_family<A: Ip>(
        &self,
        f: &mut Family<A>,
        below: usize,
        gone: &impl Fn(u32, bool) -> bool,
        tell: &mut impl FnMut(SocketAddr, PeerId),
    ) -> (usize, usize, Option<usize>) {
        let gone = |p: &Peer<A>| gone(p.seen(), p.owned());
        let owned_gone = |p: &Peer<A>| tell(p.addr(), p.id());
        if below == usize::MAX && f.len() <= CHUNK {
            let (s, l) = f.remove_where(gone, &self.hasher, owned_gone);
            return (s, l, None);
        }
        f.remove_some(below, CHUNK, gone, &self.hasher, owned_gone)
    }

    /// What a chunk removed, in the shard's and the swarm's totals.
    fn count_gone(&self, shard: &mut Shard, g: &Gone, expired: &mut Expired) {
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

/// An owner tells the others its peer's lease ran out.
fn expiry(info_hash: InfoHash, addr: SocketAddr, peer_id: PeerId) -> PeerChange {
    PeerChange {
        info_hash,
        peer_id,
        addr,
        state: PeerState::Expired,
        completed: false,
    }
}
