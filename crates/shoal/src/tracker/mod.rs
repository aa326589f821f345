//! What both tracker protocols share: the swarm, the announce policy, metrics, the clock.
//! `Tracker` is the one interface every server and task calls; its parts stay private, so
//! where peers go (today the local swarm) changes in this file only.

pub mod access;
pub mod metrics;

use std::net::IpAddr;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use protocol::{AnnounceEvent, CanonicalIp, InfoHash, PeerId, ResponsePeer};
use swarm::{
    Announce, Delivery, Expired, Families, Limits, Loader, Origin, PeerChange, PeerView, Refusal,
    Swarm, SwarmStats, TorrentStats, Warm,
};

use self::access::Access;
use self::metrics::Metrics;
use crate::config::{AnnounceConfig, Mode};

pub struct Tracker {
    swarm: Swarm,
    access: Access,
    metrics: Metrics,
    policy: AnnounceConfig,
    started: Instant,
}

#[derive(Debug, Clone, Copy)]
pub struct Now {
    /// Unix seconds, for connection ids.
    pub unix: u32,
    /// Seconds since start, the swarm's clock.
    pub uptime: u32,
}

/// An announce after decoding, in the protocol-neutral form.
pub struct PeerAnnounce {
    pub info_hash: InfoHash,
    pub peer_id: PeerId,
    pub ip: IpAddr,
    pub port: u16,
    pub left: u64,
    pub event: AnnounceEvent,
    pub numwant: Option<u32>,
    pub families: Families,
}

impl Tracker {
    pub fn new(policy: AnnounceConfig, mode: Mode, limits: Limits) -> Self {
        Self::build(policy, mode, limits, 0, 0)
    }

    /// A node of a cluster: the changes of the peers it owns wait (at most `max_outbox`) for
    /// the publisher to take them (`take_changes`).
    pub fn clustered(
        policy: AnnounceConfig,
        mode: Mode,
        limits: Limits,
        max_outbox: usize,
    ) -> Self {
        let lease_every = (policy.peer_timeout / 2).max(1);
        Self::build(policy, mode, limits, lease_every, max_outbox)
    }

    fn build(
        policy: AnnounceConfig,
        mode: Mode,
        limits: Limits,
        lease_every: u32,
        max_outbox: usize,
    ) -> Self {
        Tracker {
            swarm: Swarm::with_policy(
                64,
                swarm::Policy {
                    limits,
                    seeders_get_seeders: policy.seeders_get_seeders,
                    lease_every,
                    max_outbox,
                },
            ),
            access: Access::new(mode),
            metrics: Metrics::default(),
            policy,
            started: Instant::now(),
        }
    }

    /// The announce settings, as configured.
    pub fn policy(&self) -> &AnnounceConfig {
        &self.policy
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Who may announce: the mode, the whitelist and the keys.
    pub fn access(&self) -> &Access {
        &self.access
    }

    /// A torrent's counts, zero when the tracker knows nothing of it.
    pub fn scrape(&self, h: &InfoHash) -> TorrentStats {
        self.swarm.scrape(h)
    }

    /// A torrent's counts, or None when it has neither peers nor a download count.
    pub fn torrent(&self, h: &InfoHash) -> Option<TorrentStats> {
        self.swarm.torrent(h)
    }

    /// Known torrents by info-hash, for the admin API: (total, the page).
    pub fn torrents(&self, offset: usize, limit: usize) -> (usize, Vec<(InfoHash, TorrentStats)>) {
        self.swarm.page(offset, limit)
    }

    pub fn stats(&self) -> SwarmStats {
        self.swarm.stats()
    }

    /// Starts the cache misses of a batch of announces about to be answered.
    pub fn prefetch(&self, batch: &[Warm]) {
        self.swarm.prefetch(batch);
    }

    /// Download increments since the last call, for the flusher.
    pub fn take_pending(&self) -> Vec<(InfoHash, u64)> {
        self.swarm.take_pending()
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
        let now = self.clock();
        let d = Delivery {
            origin,
            at: now.saturating_sub(age_secs),
            cutoff: now - self.policy.peer_timeout,
            count,
        };
        self.swarm.apply(c, &d)
    }

    /// Drops every peer learned from the bus, for a bus that lost its data.
    pub fn forget_remote(&self) -> u64 {
        self.swarm.forget_remote()
    }

    /// A torrent's peers as this node sees them.
    pub fn peers(&self, h: &InfoHash) -> Vec<PeerView> {
        self.swarm.peers(h)
    }

    /// Persisted download counts, streamed in at start.
    pub fn loader(&self) -> Loader<'_> {
        self.swarm.loader()
    }

    /// Removes peers silent for longer than the peer timeout. Walks every torrent: call it
    /// off the request path.
    pub fn expire(&self) -> Expired {
        let cutoff = self.clock() - self.policy.peer_timeout;
        let gone = self.swarm.remove_expired(cutoff);
        self.metrics
            .expired_peers
            .fetch_add(gone.peers, std::sync::atomic::Ordering::Relaxed);
        gone
    }

    /// Seconds since start: the swarm's clock for last-seen times.
    pub fn uptime_secs(&self) -> u32 {
        self.started.elapsed().as_secs() as u32
    }

    /// The swarm's clock: seconds since start plus one peer timeout, so that a record from
    /// another node, replayed at start, can be dated up to one timeout back.
    fn clock(&self) -> u32 {
        self.uptime_secs() + self.policy.peer_timeout
    }

    pub fn unix_secs() -> u32 {
        Self::unix_now() as u32
    }

    /// Unix seconds as the store keeps them.
    pub fn unix_now() -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64)
    }

    /// Both clocks, read once for a whole batch of datagrams.
    pub fn now(&self) -> Now {
        Now {
            unix: Self::unix_secs(),
            uptime: self.clock(),
        }
    }

    /// Whether an announce with `left` bytes to go gets leechers only in its answer.
    pub fn only_leechers(&self, left: u64) -> bool {
        self.swarm.only_leechers(left)
    }

    pub fn announce(
        &self,
        a: &PeerAnnounce,
        out: &mut Vec<ResponsePeer>,
    ) -> Result<TorrentStats, Refusal> {
        self.announce_at(a, self.clock(), out)
    }

    /// `announce` with the clock already read (`uptime` as in `now()`).
    pub fn announce_at(
        &self,
        a: &PeerAnnounce,
        uptime: u32,
        out: &mut Vec<ResponsePeer>,
    ) -> Result<TorrentStats, Refusal> {
        // 0 and negative both mean "whatever the tracker gives", as most clients intend.
        let numwant = match a.numwant {
            None | Some(0) => self.policy.default_numwant,
            Some(n) => n,
        }
        .min(self.policy.max_numwant.get()) as usize;
        let req = Announce {
            info_hash: a.info_hash,
            peer_id: a.peer_id,
            addr: CanonicalIp::from(a.ip).with_port(a.port),
            left: a.left,
            event: a.event,
            numwant,
            families: a.families,
        };
        self.swarm.announce(&req, uptime, out)
    }
}
