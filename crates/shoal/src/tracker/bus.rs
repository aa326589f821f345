//! The tracker's side of several nodes (docs/design.md, "Several nodes"): what the
//! publisher takes, what the reader applies, and how far back the stream must reach.

use swarm::{Delivery, Origin, PeerChange, Prefetch, Refusal};

use super::{Tracker, lease_every};

/// A record read from the bus, with its writer and its age.
#[derive(Debug, Clone, Copy)]
pub struct Remote {
    pub change: PeerChange,
    pub origin: Origin,
    pub age_secs: u32,
}

impl Tracker {
    /// How far back the stream must reach for a node that starts now to find a record of
    /// every peer a live node owns: owners renew each lease at an announce or at the first
    /// sweep after it is due, so no live peer's last record is older than one lease and
    /// one sweep period; `slack` covers a sweep's own length and the nodes' clocks.
    pub fn stream_reach(&self, slack: std::time::Duration) -> std::time::Duration {
        std::time::Duration::from_secs(u64::from(lease_every(&self.policy)))
            + self.sweep_every()
            + slack
    }

    /// Changes of the peers this node owns since the last call, for the cluster publisher.
    pub fn take_changes(&self) -> Vec<PeerChange> {
        self.swarm.take_changes()
    }

    /// Changes dropped because the publisher's queue was full.
    pub fn dropped_changes(&self) -> u64 {
        self.swarm.dropped_changes()
    }

    /// Queues every owned peer again, for a bus that lost its data.
    pub fn republish_owned(&self) {
        self.swarm.republish_owned();
    }

    /// Applies a peer change read from the bus, written by `origin` `age_secs` ago; `count`
    /// is false while replaying history whose downloads the database already holds.
    pub fn apply_remote(
        &self,
        c: &PeerChange,
        origin: Origin,
        age_secs: u32,
        count: bool,
    ) -> Result<(), Refusal> {
        self.swarm.apply(c, &self.delivery(origin, age_secs, count))
    }

    /// `apply_remote` for many records, in order: the clock read once, and the cache misses
    /// of each run of 32 started together (`Swarm::prefetch`), as the UDP server does for a
    /// batch of announces. Returns how many a limit refused.
    pub fn apply_remote_batch(&self, records: &[Remote], count: bool) -> usize {
        let now = self.clock();
        let mut refused = 0;
        let mut warm = Vec::with_capacity(32);
        for run in records.chunks(32) {
            warm.clear();
            warm.extend(run.iter().map(|r| Prefetch {
                info_hash: r.change.info_hash,
                addr: r.change.addr,
                only_leechers: false,
            }));
            self.swarm.prefetch(&warm);
            for r in run {
                let d = self.delivery_at(now, r.origin, r.age_secs, count);
                refused += usize::from(self.swarm.apply(&r.change, &d).is_err());
            }
        }
        refused
    }

    fn delivery(&self, origin: Origin, age_secs: u32, count: bool) -> Delivery {
        self.delivery_at(self.clock(), origin, age_secs, count)
    }

    fn delivery_at(&self, now: u32, origin: Origin, age_secs: u32, count: bool) -> Delivery {
        Delivery {
            origin,
            at: now.saturating_sub(age_secs),
            cutoff: now - self.policy.peer_timeout,
            count,
        }
    }

    /// Drops every peer learned from the bus, for a bus that lost its data.
    pub fn forget_remote(&self) -> u64 {
        self.swarm.forget_remote()
    }
}
