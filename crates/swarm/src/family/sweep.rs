//! A family's part of the expiry sweep (docs/design.md, "Expiry"): a small family all at
//! once, a large one a slice at a time so that no announce waits for a swarm of millions.
//! The same walk renews the leases of owned peers that are due (docs/design.md, "Several
//! nodes"), so that the stream holds a record of every live peer within one lease.

use hashbrown::DefaultHashBuilder;

use super::{Family, Ip, Peer, lease_at};
use crate::PeerState;

/// Which owned peers a sweep renews: those whose last record is `every` seconds old at
/// `now` (`every` 0: none, a single node or a sweep that only removes).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Renewal {
    pub now: u32,
    pub every: u32,
}

impl Renewal {
    pub(crate) const NONE: Renewal = Renewal { now: 0, every: 0 };

    /// Renews `p`'s lease if it is due; true if it was (its record is to be published).
    fn renew<A: Ip>(self, p: &mut Peer<A>) -> bool {
        let due = self.every > 0 && p.owned() && p.lease_due(self.now, self.every);
        if due {
            p.lease = lease_at(self.now);
        }
        due
    }
}

fn role(seeder: bool) -> PeerState {
    if seeder {
        PeerState::Seeder
    } else {
        PeerState::Leecher
    }
}

impl<A: Ip> Family<A> {
    /// Drops the peers `gone` picks (last seen before a cutoff, or every remote one),
    /// telling `tell` of each this node owned (as `Expired`) and of each owned peer whose
    /// lease `renewal` renewed (as its role); returns how many seeders and leechers went.
    /// One pass and an index rebuild: for families a shard can be held for whole.
    pub(crate) fn remove_where(
        &mut self,
        gone: impl Fn(&Peer<A>) -> bool,
        renewal: Renewal,
        hasher: &DefaultHashBuilder,
        mut tell: impl FnMut(&Peer<A>, PeerState),
    ) -> (usize, usize) {
        let (seeders, before) = (self.seeders as usize, self.peers.len());
        let mut i = 0;
        let mut kept_seeders = 0;
        // `retain` keeps order, so seeders stay in front.
        self.peers.retain_mut(|p| {
            let keep = !gone(p);
            if !keep && p.owned() {
                tell(p, PeerState::Expired);
            }
            if keep && renewal.renew(p) {
                tell(p, role(i < seeders));
            }
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

    /// The same a slice at a time, for a family too large to sweep under one lock: looks at
    /// up to `budget` peers below position `below`, from the top down, and removes the gone
    /// ones in place, index and per-address counts kept as an announce's removal keeps them.
    /// The peer that fills a hole comes from above it, already looked at, so one slice misses
    /// nothing; between slices the caller releases the shard, and a peer an announce moves
    /// above `below` waits for the next sweep. Returns the seeders and leechers gone and
    /// where the next slice starts (None: the family is done).
    pub(crate) fn remove_some(
        &mut self,
        below: usize,
        budget: usize,
        gone: impl Fn(&Peer<A>) -> bool,
        renewal: Renewal,
        hasher: &DefaultHashBuilder,
        mut tell: impl FnMut(&Peer<A>, PeerState),
    ) -> (usize, usize, Option<usize>) {
        let mut at = below.min(self.peers.len());
        let stop = at.saturating_sub(budget.max(1));
        let (mut seeders, mut leechers) = (0, 0);
        while at > stop {
            at -= 1;
            let p = self.peers[at];
            if !gone(&p) {
                let seeder = at < self.seeders as usize;
                if renewal.renew(&mut self.peers[at]) {
                    tell(&self.peers[at], role(seeder));
                }
            } else {
                if p.owned() {
                    tell(&p, PeerState::Expired);
                }
                if at < self.seeders as usize {
                    seeders += 1;
                } else {
                    leechers += 1;
                }
                self.remove_at(at, hasher);
            }
        }
        // Shrinking copies the whole list under the lock: only when most of it is slack.
        if at == 0 && self.peers.capacity() > 4 * self.peers.len() + 4 {
            self.peers.shrink_to_fit();
        }
        (seeders, leechers, (at > 0).then_some(at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::family::{Admission, Announcer};
    use protocol::{AnnounceEvent, PeerId};
    use std::net::SocketAddr;

    const OPEN: Admission = Admission {
        tracker_full: false,
        torrent_full: false,
        per_ip: usize::MAX,
    };

    fn family(n: u32, hasher: &DefaultHashBuilder) -> Family<[u8; 4]> {
        let mut f = Family::default();
        for i in 0..n {
            let addr = SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 6881));
            let Announcer::V4(p) = Announcer::new(PeerId([i as u8; 20]), addr, i % 7) else {
                unreachable!()
            };
            let left = if i % 3 == 0 { 0 } else { 1 };
            f.update(p, left, AnnounceEvent::None, hasher, OPEN, 0)
                .unwrap();
        }
        f
    }

    /// Slices of any size, resumed where the last stopped, remove what one pass removes and
    /// leave a family whose order, index and per-address counts are whole.
    #[test]
    fn slices_remove_what_one_pass_removes() {
        let hasher = DefaultHashBuilder::default();
        for budget in [1, 7, 100, 5000] {
            let mut whole = family(3000, &hasher);
            let mut sliced = family(3000, &hasher);
            let gone = |p: &Peer<[u8; 4]>| p.seen() < 3;
            let by_pass = whole.remove_where(gone, Renewal::NONE, &hasher, |_, _| {});
            let (mut s, mut l, mut below) = (0, 0, Some(usize::MAX));
            while let Some(b) = below {
                let (ds, dl, next) =
                    sliced.remove_some(b, budget, gone, Renewal::NONE, &hasher, |_, _| {});
                (s, l, below) = (s + ds, l + dl, next);
            }
            assert_eq!((s, l), by_pass, "budget {budget}");
            assert_eq!(sliced.counts(), whole.counts());
            assert!(sliced.with_roles().all(|(p, _)| !gone(p)));
            let mut a: Vec<_> = whole.with_roles().map(|(p, r)| (p.addr(), r)).collect();
            let mut b: Vec<_> = sliced.with_roles().map(|(p, r)| (p.addr(), r)).collect();
            a.sort();
            b.sort();
            assert_eq!(a, b, "budget {budget}");
            whole_and_indexed(&sliced, &hasher);
        }
    }

    /// Every peer is found where it is, and the per-address counts are a recount.
    fn whole_and_indexed(f: &Family<[u8; 4]>, hasher: &DefaultHashBuilder) {
        assert!(f.index.is_some() && f.seeders as usize <= f.peers.len());
        let mut counts = hashbrown::HashMap::new();
        for (i, p) in f.peers.iter().enumerate() {
            assert_eq!(f.find(p, p.hash(hasher)), Some(i));
            *counts.entry(p.ip).or_insert(0u32) += 1;
        }
        assert_eq!(f.per_ip.as_deref(), Some(&counts));
    }

    /// Every peer sits where the index says, seeders are a prefix, per-address counts (where
    /// kept) are a recount.
    fn consistent(f: &Family<[u8; 4]>, hasher: &DefaultHashBuilder) {
        assert!(f.seeders as usize <= f.peers.len());
        for (i, p) in f.peers.iter().enumerate() {
            assert_eq!(f.find(p, p.hash(hasher)), Some(i));
        }
        if let Some(per_ip) = f.per_ip.as_deref() {
            let mut counts = hashbrown::HashMap::new();
            for p in &f.peers {
                *counts.entry(p.ip).or_insert(0u32) += 1;
            }
            assert_eq!(per_ip, &counts);
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Announce {
            ep: u8,
            seeder: bool,
            stop: bool,
            seen: u32,
        },
        Slice(usize),
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            3 => (0..60u8, any::<bool>(), proptest::bool::weighted(0.15), 0..10u32)
                .prop_map(|(ep, seeder, stop, seen)| Op::Announce { ep, seeder, stop, seen }),
            2 => (1..20usize).prop_map(Op::Slice),
        ]
    }

    type View = std::collections::BTreeMap<SocketAddr, (u32, bool)>;

    fn view(f: &Family<[u8; 4]>) -> View {
        f.with_roles()
            .map(|(p, s)| (p.addr(), (p.seen(), s)))
            .collect()
    }

    proptest::proptest! {
        /// A sliced sweep with announces between its slices (the shard is released between
        /// them, docs/design.md "Expiry"), against a map: a slice removes only peers last
        /// seen before the cutoff, the family stays whole after every step, and a full pass
        /// at the end leaves exactly the map's peers seen since.
        #[test]
        fn slices_between_announces_remove_only_what_is_gone(
            ops in proptest::collection::vec(op(), 1..200)
        ) {
            const CUTOFF: u32 = 5;
            let hasher = DefaultHashBuilder::default();
            let mut f = Family::<[u8; 4]>::default();
            let mut model = View::new();
            let mut below: Option<usize> = None;
            let gone = |p: &Peer<[u8; 4]>| p.seen() < CUTOFF;
            for op in ops {
                match op {
                    Op::Announce { ep, seeder, stop, seen } => {
                        // Three endpoints share each address.
                        let addr = SocketAddr::from(([10, 0, 0, ep % 20], 6881 + u16::from(ep / 20)));
                        let Announcer::V4(p) = Announcer::new(PeerId([ep; 20]), addr, seen) else {
                            unreachable!()
                        };
                        let event = if stop { AnnounceEvent::Stopped } else { AnnounceEvent::None };
                        f.update(p, u64::from(!seeder), event, &hasher, OPEN, 0).unwrap();
                        if stop {
                            model.remove(&addr);
                        } else {
                            model.insert(addr, (seen, seeder));
                        }
                    }
                    Op::Slice(budget) => {
                        let from = below.unwrap_or(usize::MAX);
                        let before = view(&f);
                        let (_, _, next) =
                            f.remove_some(from, budget, gone, Renewal::NONE, &hasher, |_, _| {});
                        below = next;
                        let after = view(&f);
                        for (addr, (seen, _)) in &before {
                            if !after.contains_key(addr) {
                                proptest::prop_assert!(*seen < CUTOFF, "{addr} seen at {seen} removed");
                                model.remove(addr);
                            }
                        }
                    }
                }
                consistent(&f, &hasher);
                proptest::prop_assert_eq!(view(&f), model.clone());
            }
            f.remove_where(gone, Renewal::NONE, &hasher, |_, _| {});
            model.retain(|_, (seen, _)| *seen >= CUTOFF);
            consistent(&f, &hasher);
            proptest::prop_assert_eq!(view(&f), model);
        }
    }
}
