//! What both tracker protocols share: the swarm, the announce policy, metrics, the clock.

pub mod access;
pub mod metrics;

use std::net::{IpAddr, SocketAddr};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use protocol::{AnnounceEvent, InfoHash, PeerId, ResponsePeer};
use swarm::{Announce, Families, Limits, Refusal, Swarm, TorrentStats};

use self::access::Access;
use self::metrics::Metrics;
use crate::config::{AnnounceConfig, Mode};

pub struct Tracker {
    pub swarm: Swarm,
    pub access: Access,
    pub metrics: Metrics,
    pub policy: AnnounceConfig,
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
        Tracker {
            swarm: Swarm::with_limits(64, limits),
            access: Access::new(mode),
            metrics: Metrics::default(),
            policy,
            started: Instant::now(),
        }
    }

    /// Seconds since start: the swarm's clock for last-seen times.
    pub fn uptime_secs(&self) -> u32 {
        self.started.elapsed().as_secs() as u32
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
            uptime: self.uptime_secs(),
        }
    }

    /// Whether an announce with `left` bytes to go gets leechers only in its answer.
    pub fn only_leechers(&self, left: u64) -> bool {
        swarm::only_leechers(left, self.policy.seeders_get_seeders)
    }

    pub fn announce(
        &self,
        a: &PeerAnnounce,
        out: &mut Vec<ResponsePeer>,
    ) -> Result<TorrentStats, Refusal> {
        self.announce_at(a, self.uptime_secs(), out)
    }

    /// `announce` with the clock already read (`uptime` as from `uptime_secs`).
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
        .min(self.policy.max_numwant) as usize;
        let req = Announce {
            info_hash: a.info_hash,
            peer_id: a.peer_id,
            addr: SocketAddr::new(canonical(a.ip), a.port),
            left: a.left,
            event: a.event,
            numwant,
            families: a.families,
            seeders_get_seeders: self.policy.seeders_get_seeders,
        };
        self.swarm.announce(&req, uptime, out)
    }
}

/// IPv4 clients reaching a dual-stack socket appear as ::ffff:a.b.c.d; they are IPv4 peers.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}
