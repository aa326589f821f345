//! What every tracker protocol shares: the swarm, the announce policy, metrics, the clock.
//! `Tracker` is the one interface every server and task calls; its parts stay private, so
//! where peers go (today the local swarm) changes in this file only.

pub mod access;
mod bus;
pub mod clients;
pub mod history;
pub mod metrics;
pub mod software;

pub use bus::Remote;

use std::net::IpAddr;
use std::time::Instant;

use protocol::{AnnounceEvent, CanonicalIp, InfoHash, PeerId, ResponsePeer};
use swarm::{
    Announce, Expired, Families, Limits, Loader, PeerView, Prefetch, Swarm, SwarmStats,
    TorrentStats,
};

use self::access::Access;
use self::clients::{ClientRefusal, Clients};
use self::metrics::Metrics;
pub use self::metrics::{Action, ErrorKind, Protocol};
use crate::config::{AnnounceConfig, Mode};

pub struct Tracker {
    swarm: Swarm,
    access: Access,
    clients: Clients,
    metrics: Metrics,
    /// Announces per client software.
    software: software::Software,
    history: history::History,
    policy: AnnounceConfig,
    /// The most `announce.interval_jitter` adds to an interval, in whole seconds.
    jitter: u32,
    started: Instant,
}

#[derive(Debug, Clone, Copy)]
pub struct Now {
    /// Unix seconds, for connection ids.
    pub unix: u32,
    /// The swarm's clock (`Tracker::clock`): seconds since start plus one peer timeout.
    pub swarm: u32,
}

/// An announce after decoding, in the protocol-neutral form every server hands over.
pub struct PeerAnnounce<'a> {
    pub info_hash: InfoHash,
    pub peer_id: PeerId,
    /// The client's address: the socket's, or a trusted proxy's word for it; never a
    /// parameter anyone could set.
    pub ip: IpAddr,
    pub port: u16,
    pub left: u64,
    pub event: AnnounceEvent,
    pub numwant: Option<u32>,
    /// A private tracker's key, as the request carried it (HTTP path, BEP 41 URL data).
    pub key: Option<&'a [u8]>,
}

/// What an announce's answer says besides its peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    pub interval: u32,
    pub min_interval: u32,
    pub seeders: u32,
    pub leechers: u32,
}

/// Why a request was refused: the access policy or a limit, with its metric kind and the
/// message the client reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    Access(access::Refusal),
    /// A client rule (`[clients]`).
    Client(ClientRefusal),
    Limit(swarm::Refusal),
    /// An address of the WebSocket endpoints' prefix, from another protocol.
    Address,
}

impl Refused {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Refused::Access(r) => (*r).into(),
            Refused::Client(_) => ErrorKind::ClientRefused,
            Refused::Limit(r) => (*r).into(),
            Refused::Address => ErrorKind::BadAddress,
        }
    }
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Access(r) => r.fmt(f),
            Refused::Client(r) => r.fmt(f),
            Refused::Limit(r) => f.write_str(r.message()),
            Refused::Address => f.write_str("this address cannot announce"),
        }
    }
}

/// A uniform draw from 0..=most: a per-thread xorshift (a few nanoseconds; it needs to
/// spread clients out, not to be unpredictable).
fn jitter(most: u32) -> u32 {
    use std::cell::Cell;
    thread_local!(static STATE: Cell<u64> = Cell::new(crate::os::random_u64() | 1));
    if most == 0 {
        return 0;
    }
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        ((x >> 32) % (u64::from(most) + 1)) as u32
    })
}

/// The announces of one batch, for `Tracker::prefetch`.
#[derive(Default)]
pub struct Batch(Vec<Prefetch>);

impl Batch {
    pub fn with_capacity(n: usize) -> Self {
        Batch(Vec::with_capacity(n))
    }

    pub fn clear(&mut self) {
        self.0.clear();
    }
}

/// A cluster's lease renewal period: half a peer timeout.
fn lease_every(policy: &AnnounceConfig) -> u32 {
    (policy.peer_timeout / 2).max(1)
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
        let lease_every = lease_every(&policy);
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
            clients: Clients::default(),
            metrics: Metrics::default(),
            software: Default::default(),
            history: Default::default(),
            jitter: (f64::from(policy.interval.get()) * policy.interval_jitter) as u32,
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

    /// Adds an announce about to be answered to `batch`.
    pub fn warm(&self, batch: &mut Batch, h: InfoHash, ip: IpAddr, port: u16, left: u64) {
        batch.0.push(Prefetch {
            info_hash: h,
            addr: CanonicalIp::from(ip).with_port(port),
            only_leechers: self.swarm.only_leechers(left),
        });
    }

    /// Starts the cache misses of a batch of announces about to be answered.
    pub fn prefetch(&self, batch: &Batch) {
        self.swarm.prefetch(&batch.0);
    }

    /// Counts what only a server can see go wrong: a malformed request, a bad connection
    /// id, a refused connection. `action` is None when the request was too broken to tell.
    pub fn count_error(&self, p: Protocol, action: Option<Action>, kind: ErrorKind) {
        self.metrics.error(p, action, kind);
    }

    /// The tracker's Prometheus text, for tests of what a request counted.
    #[cfg(test)]
    pub fn metrics_text(&self) -> String {
        let mut out = metrics::Text::default();
        self.render_metrics(&mut out);
        out.into_string()
    }

    /// Every figure the tracker keeps, in Prometheus text.
    pub fn render_metrics(&self, out: &mut metrics::Text) {
        self.metrics.render(&self.stats(), out);
        self.clients.render(out);
        self.software.render(out);
    }

    /// Announces per client software: (name, announces).
    pub fn software(&self) -> Vec<(&'static str, u64)> {
        self.software.totals()
    }

    /// Takes one sample of the request counters into the last hour's history.
    pub fn sample_history(&self) {
        let totals = history::SERIES.map(|(p, a)| self.metrics.requests(p, a));
        self.history.sample(totals);
    }

    /// The last hour's samples, oldest first (`history::SERIES` order).
    pub fn history(&self) -> Vec<[u32; history::SERIES.len()]> {
        self.history.samples()
    }

    /// The `n` torrents with the most peers and the peers of each family (a walk over every
    /// torrent: call it off the request path).
    pub fn survey(&self, n: usize) -> swarm::Survey {
        self.swarm.survey(n)
    }

    /// The client rules in force, swapped whole on reload.
    pub fn clients(&self) -> &Clients {
        &self.clients
    }

    /// Everything the store says about access, read again: the whitelist, the keys and the
    /// stored client rules. (whitelisted, keys, client rules).
    pub async fn reload_access<S: store::Store>(
        &self,
        store: &S,
    ) -> Result<(usize, usize, usize), store::StoreError> {
        let rules = store.load_client_rules().await?;
        let (whitelisted, keys) = self.access.reload(store).await?;
        let n = rules.len();
        self.clients.set_stored(rules);
        Ok((whitelisted, keys, n))
    }

    /// A client rule into the store, then in force here; every node of a cluster follows
    /// on the notice this change raises.
    pub async fn add_client_rule<S: store::Store>(
        &self,
        store: &S,
        rule: &store::ClientRule,
    ) -> Result<(), store::StoreError> {
        store.add_client_rule(rule).await?;
        self.clients.set_stored(store.load_client_rules().await?);
        self.access.mark_changed();
        Ok(())
    }

    /// Removes a stored client rule; whether there was one.
    pub async fn remove_client_rule<S: store::Store>(
        &self,
        store: &S,
        prefix: &str,
    ) -> Result<bool, store::StoreError> {
        let removed = store.remove_client_rule(prefix).await?;
        self.clients.set_stored(store.load_client_rules().await?);
        self.access.mark_changed();
        Ok(removed)
    }

    /// Counts a UDP connect, the one request that needs no policy.
    /// The WebSocket tracker's connection and relay counters.
    pub fn ws_counters(&self) -> &metrics::WsCounters {
        self.metrics.ws()
    }

    pub fn count_connect(&self) {
        self.metrics.request(Protocol::Udp, Action::Connect);
    }

    /// Download increments since the last call, for the flusher.
    pub fn take_pending(&self) -> Vec<(InfoHash, u64)> {
        self.swarm.take_pending()
    }

    /// A torrent's peers as this node sees them.
    pub fn peers(&self, h: &InfoHash) -> Vec<PeerView> {
        self.swarm.peers(h)
    }

    /// Persisted download counts, streamed in at start.
    pub fn loader(&self) -> Loader<'_> {
        self.swarm.loader()
    }

    /// Removes peers silent for longer than the peer timeout and, in a cluster, renews the
    /// leases of owned peers that are due (docs/design.md, "Several nodes"). Walks every
    /// torrent: call it off the request path, every `sweep_every`.
    pub fn expire(&self) -> Expired {
        self.expire_at(self.clock())
    }

    /// `expire` as of swarm second `now`: for benchmarks that run a clock of their own.
    pub fn expire_at(&self, now: u32) -> Expired {
        let gone = self
            .swarm
            .sweep(now, now.saturating_sub(self.policy.peer_timeout));
        self.metrics.expired(gone.peers);
        gone
    }

    /// How often `expire` runs: about ten times per peer timeout, at least once a minute.
    pub fn sweep_every(&self) -> std::time::Duration {
        std::time::Duration::from_secs(u64::from(self.policy.peer_timeout / 10).clamp(1, 60))
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

    /// Both clocks, read once for a whole batch of datagrams.
    pub fn now(&self) -> Now {
        Now {
            unix: crate::os::unix_secs() as u32,
            swarm: self.clock(),
        }
    }

    /// One announce, for every protocol: the access policy, the count, the swarm, the
    /// limits and the answer's timing, in that order. `now` as `now()` returned it, read
    /// once per batch. The peers to answer with go to `peers`.
    pub fn announce(
        &self,
        p: Protocol,
        a: &PeerAnnounce,
        now: Now,
        peers: &mut Vec<ResponsePeer>,
    ) -> Result<Answer, Refused> {
        let refuse = |r: Refused| {
            self.metrics.error(p, Some(Action::Announce), r.kind());
            r
        };
        self.access
            .check_announce(&a.info_hash, a.key, i64::from(now.unix))
            .map_err(|r| refuse(Refused::Access(r)))?;
        self.clients
            .check(&a.peer_id)
            .map_err(|r| refuse(Refused::Client(r)))?;
        let addr = CanonicalIp::from(a.ip).with_port(a.port);
        // A WebSocket peer's endpoint is its connection, in a prefix no real peer has
        // (protocol::ws::Endpoint); a UDP or HTTP client claiming one would be handed to
        // browsers as a WebRTC peer.
        if (p == Protocol::Ws) != protocol::ws::Endpoint::of(&addr).is_some() {
            return Err(refuse(Refused::Address));
        }
        self.metrics.request(p, Action::Announce);
        self.software.count(&a.peer_id);
        let numwant = match (p, a.numwant) {
            // One peer per offer the browser sent, and none without offers.
            (Protocol::Ws, n) => n.unwrap_or(0),
            // 0 and negative both mean "whatever the tracker gives", as most clients intend.
            (_, None | Some(0)) => self.policy.default_numwant,
            (_, Some(n)) => n,
        }
        .min(self.policy.max_numwant.get()) as usize;
        let req = Announce {
            info_hash: a.info_hash,
            peer_id: a.peer_id,
            addr,
            left: a.left,
            event: a.event,
            numwant,
            // A UDP answer has one peer format, set by the socket; HTTP has peers and peers6.
            families: match p {
                Protocol::Udp | Protocol::Ws => Families::Same,
                Protocol::Http => Families::Both,
            },
        };
        let stats = self
            .swarm
            .announce(&req, now.swarm, peers)
            .map_err(|r| refuse(Refused::Limit(r)))?;
        Ok(Answer {
            interval: self.policy.interval.get() + jitter(self.jitter),
            min_interval: self.policy.min_interval,
            seeders: stats.seeders,
            leechers: stats.leechers,
        })
    }

    /// A peer whose connection closed leaves its swarm: no access check (its key may have
    /// expired since), no request counted; the same removal a `stopped` makes.
    pub fn leave(&self, info_hash: InfoHash, peer_id: PeerId, addr: std::net::SocketAddr) {
        let req = Announce {
            info_hash,
            peer_id,
            addr,
            left: 0,
            event: AnnounceEvent::Stopped,
            numwant: 0,
            families: Families::Same,
        };
        let _ = self.swarm.announce(&req, self.clock(), &mut Vec::new());
    }

    /// One scrape, for every protocol: the access policy, the count, the counts of each
    /// info-hash in order. A UDP scrape cannot carry a key.
    pub fn scrape<'a>(
        &'a self,
        p: Protocol,
        hashes: &'a [InfoHash],
        key: Option<&[u8]>,
        now: Now,
    ) -> Result<impl Iterator<Item = TorrentStats> + 'a, Refused> {
        let key = (p != Protocol::Udp).then_some(key);
        if let Err(r) = self.access.check_scrape(hashes, key, i64::from(now.unix)) {
            self.metrics
                .error(p, Some(Action::Scrape), ErrorKind::from(r));
            return Err(Refused::Access(r));
        }
        self.metrics.request(p, Action::Scrape);
        Ok(hashes.iter().map(|h| self.swarm.scrape(h)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn intervals(jitter: f64, n: u16) -> Vec<u32> {
        let policy = AnnounceConfig {
            interval_jitter: jitter,
            ..AnnounceConfig::default()
        };
        let t = Tracker::new(policy, Mode::Public, Limits::NONE);
        (0..n)
            .map(|i| {
                let a = PeerAnnounce {
                    info_hash: InfoHash([1; 20]),
                    peer_id: PeerId([2; 20]),
                    ip: IpAddr::from([10, 0, (i >> 8) as u8, i as u8]),
                    port: 6881,
                    left: 1,
                    event: AnnounceEvent::None,
                    numwant: Some(1),
                    key: None,
                };
                t.announce(Protocol::Udp, &a, t.now(), &mut Vec::new())
                    .unwrap()
                    .interval
            })
            .collect()
    }

    /// With jitter 0.1 an interval of 120 s becomes 120-132 s, every second of it about as
    /// likely as any other; `min interval` never exceeds it. Without jitter it stays 120.
    #[test]
    fn interval_jitter_spreads_answers_uniformly_over_its_range() {
        let got = intervals(0.1, 13_000);
        let mut counts = [0u32; 13];
        for i in &got {
            assert!((120..=132).contains(i), "{i}");
            counts[(i - 120) as usize] += 1;
        }
        // 1000 expected per second; a uniform draw stays well within 15% of it.
        for (s, n) in counts.iter().enumerate() {
            assert!(
                (850..=1150).contains(n),
                "{}: {n} of 13000: {counts:?}",
                120 + s
            );
        }
        assert!(
            got.iter()
                .all(|&i| i >= AnnounceConfig::default().min_interval)
        );
        assert!(intervals(0.0, 1000).iter().all(|&i| i == 120));
    }
}
