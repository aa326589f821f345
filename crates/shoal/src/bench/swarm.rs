//! `shoal bench swarm`: the tracker's announce path in process, at internet size. Fills one
//! `Tracker` with a `Population` (Zipf-like torrents, one endpoint per peer) up to each size
//! asked, and at each prints one JSON line: resident memory per peer, the announce rate of
//! one thread re-announcing random peers (batched and prefetched as the UDP server does),
//! and the latency of each answer. After the last size a quarter of the peers expire
//! at once while another thread keeps announcing: the sweep's length and the announces'
//! latency during it. No sockets, so a memory or CPU regression shows without the network's
//! noise; `scripts/bench-scale` runs it and the same population over UDP.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use protocol::{AnnounceEvent, ResponsePeer};
use serde_json::json;

use super::population::{Peer, Population, Shape, mix};
use crate::cmd::Result;
use crate::config::{AnnounceConfig, Mode};
use crate::tracker::{Batch, Now, PeerAnnounce, Protocol, Tracker};

/// Fill one tracker in process to each size and measure memory, announce rate and latency
/// there; then expire a quarter of the peers at once under load. Prints JSON lines.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub shape: Shape,
    /// Seconds of re-announces measured at each size.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Skip the mass expiry after the last size.
    #[arg(long)]
    pub no_expiry: bool,
}

/// Latencies in log-linear buckets (16 per power of two: within 7%), a few KB whatever the
/// count, so recording them does not show in the memory measured beside them.
pub struct Hist {
    buckets: Vec<u64>,
    max: u64,
    n: u64,
}

impl Default for Hist {
    fn default() -> Self {
        Hist {
            buckets: vec![0; 64 * 16],
            max: 0,
            n: 0,
        }
    }
}

impl Hist {
    fn index(v: u64) -> usize {
        if v < 16 {
            return v as usize;
        }
        let e = 63 - v.leading_zeros() as usize;
        e * 16 + ((v >> (e - 4)) & 15) as usize
    }

    /// The largest value bucket `i` holds.
    fn upper(i: usize) -> u64 {
        if i < 16 {
            return i as u64;
        }
        let (e, sub) = (i / 16, (i % 16) as u64);
        ((16 + sub + 1) << (e - 4)) - 1
    }

    pub fn record(&mut self, v: u64) {
        self.buckets[Self::index(v)] += 1;
        self.max = self.max.max(v);
        self.n += 1;
    }

    /// The value below which a fraction `q` of the records lie (bucket's upper bound).
    pub fn quantile(&self, q: f64) -> u64 {
        let want = (q * self.n as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, &c) in self.buckets.iter().enumerate() {
            seen += c;
            if seen >= want {
                return Self::upper(i).min(self.max);
            }
        }
        self.max
    }

    fn json(&self) -> serde_json::Value {
        json!({
            "announces": self.n,
            "p50_ns": self.quantile(0.5),
            "p99_ns": self.quantile(0.99),
            "p999_ns": self.quantile(0.999),
            "max_ns": self.max,
        })
    }
}

/// (resident bytes, of which transparent huge pages) of this process.
pub fn memory() -> (u64, u64) {
    let field = |file: &str, name: &str| {
        std::fs::read_to_string(file)
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with(name))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            })
            .unwrap_or(0)
            * 1024
    };
    (
        field("/proc/self/status", "VmRSS:"),
        field("/proc/self/smaps_rollup", "AnonHugePages:"),
    )
}

const BATCH: usize = 32;

/// Announces peers `ids` as one batch, the UDP server's way: every lookup prefetched first.
/// The expiring quarter is dated at swarm second 1, so the tracker's own `expire` removes
/// exactly them once a second has passed. Returns refusals.
struct Announcer<'a> {
    t: &'a Tracker,
    pop: Population,
    batch: Batch,
    peers: Vec<ResponsePeer>,
    drawn: Vec<(u64, Peer)>,
}

impl<'a> Announcer<'a> {
    fn new(t: &'a Tracker, pop: Population) -> Self {
        Announcer {
            t,
            pop,
            batch: Batch::with_capacity(BATCH),
            peers: Vec::with_capacity(100),
            drawn: Vec::with_capacity(BATCH),
        }
    }

    /// Draws the batch's peers outside the timed part (a draw is a `powf`).
    fn draw(&mut self, ids: impl Iterator<Item = u64>) {
        self.drawn.clear();
        self.drawn.extend(ids.map(|i| (i, self.pop.peer(i))));
    }

    /// Answers the drawn batch. Each answer's latency goes to `hist`, counted from the
    /// batch's start as a datagram's is (it waits for the prefetch and the answers before
    /// it). Returns refusals.
    fn run(&mut self, first: bool, hist: &mut Hist) -> u64 {
        let t = self.t;
        let started = Instant::now();
        self.batch.clear();
        for (_, p) in &self.drawn {
            t.warm(
                &mut self.batch,
                p.info_hash,
                IpAddr::V4(p.ip),
                p.port,
                left(p),
            );
        }
        t.prefetch(&self.batch);
        let now = t.now();
        let old = Now { swarm: 1, ..now };
        let mut refused = 0;
        for (i, p) in &self.drawn {
            let a = PeerAnnounce {
                info_hash: p.info_hash,
                peer_id: p.peer_id,
                ip: IpAddr::V4(p.ip),
                port: p.port,
                left: left(p),
                event: match (first, p.seeder) {
                    (true, false) => AnnounceEvent::Started,
                    _ => AnnounceEvent::None,
                },
                numwant: None,
                key: None,
            };
            let when = if Population::expiring(*i) { old } else { now };
            self.peers.clear();
            let r = t.announce(Protocol::Udp, &a, when, &mut self.peers);
            hist.record(started.elapsed().as_nanos() as u64);
            refused += u64::from(r.is_err());
        }
        refused
    }
}

fn left(p: &Peer) -> u64 {
    if p.seeder { 0 } else { 1 << 20 }
}

pub fn run(a: Args) -> Result<()> {
    let (sizes, pop) = a.shape.resolve()?;
    let (rss_before, _) = memory();
    // An operator at this size lifts the limits; the policy is the default one.
    let tracker = Tracker::new(AnnounceConfig::default(), Mode::Public, swarm::Limits::NONE);
    let mut one = Announcer::new(&tracker, pop);
    let mut filled = 0u64;
    let mut refused = 0u64;
    for &size in &sizes {
        let (started, from) = (Instant::now(), filled);
        let mut fill = Hist::default();
        while filled < size {
            let end = (filled + BATCH as u64).min(size);
            one.draw(filled..end);
            refused += one.run(true, &mut fill);
            filled = end;
        }
        let fill_secs = started.elapsed().as_secs_f64();
        let (rss, huge) = memory();
        let stats = tracker.stats();
        // Steady re-announces of random peers, timed without the draws.
        let mut steady = Hist::default();
        let mut timed = Duration::ZERO;
        let mut k = size;
        let end = Instant::now() + Duration::from_secs(a.seconds);
        while Instant::now() < end {
            one.draw((0..BATCH).map(|_| {
                k += 1;
                mix(k) % size
            }));
            let started = Instant::now();
            refused += one.run(false, &mut steady);
            timed += started.elapsed();
        }
        let line = json!({
            "peers": size,
            "torrents": pop.torrents,
            "torrents_with_peers": stats.torrents,
            "seeders": stats.seeders,
            "leechers": stats.leechers,
            "rss_bytes": rss,
            "bytes_per_peer": (rss.saturating_sub(rss_before)) as f64 / size as f64,
            "huge_page_bytes": huge,
            "fill_per_sec": (size - from) as f64 / fill_secs.max(1e-9),
            "announces_per_sec": steady.n as f64 / timed.as_secs_f64().max(1e-9),
            "latency": steady.json(),
            "refused": refused,
        });
        println!("{line}");
    }
    if !a.no_expiry {
        println!("{}", mass_expiry(&tracker, pop, filled)?);
    }
    Ok(())
}

/// A quarter of `size` peers expire in one `Tracker::expire` while another thread keeps
/// announcing the rest: the sweep's length and the announces' latency before and during it.
fn mass_expiry(tracker: &Tracker, pop: Population, size: u64) -> Result<serde_json::Value> {
    // The expiring quarter is dated at second 1: `expire` takes it once the swarm's clock,
    // less a peer timeout, has passed that.
    while tracker.uptime_secs() < 2 {
        std::thread::sleep(Duration::from_millis(100));
    }
    let stop = AtomicBool::new(false);
    let sweeping = AtomicBool::new(false);
    let announced_during = AtomicU64::new(0);
    let (before, during, gone, took) = std::thread::scope(|s| {
        let worker = s.spawn(|| {
            let mut one = Announcer::new(tracker, pop);
            let (mut before, mut during) = (Hist::default(), Hist::default());
            let mut k = 0u64;
            while !stop.load(Relaxed) {
                one.draw((0..BATCH).map(|_| {
                    k += 1;
                    // Never an expiring peer: those must stay silent.
                    (mix(k) % size) | 1
                }));
                let hist = if sweeping.load(Relaxed) {
                    &mut during
                } else {
                    &mut before
                };
                one.run(false, hist);
            }
            announced_during.store(during.n, Relaxed);
            (before, during)
        });
        std::thread::sleep(Duration::from_secs(2));
        sweeping.store(true, Relaxed);
        let started = Instant::now();
        let gone = tracker.expire();
        let took = started.elapsed();
        sweeping.store(false, Relaxed);
        std::thread::sleep(Duration::from_millis(500));
        stop.store(true, Relaxed);
        let (before, during) = worker.join().unwrap_or_default();
        (before, during, gone, took)
    });
    let (rss, _) = memory();
    Ok(json!({
        "expiry": {
            "peers": size,
            "removed": gone.peers,
            "torrents_removed": gone.torrents,
            "sweep_ms": took.as_secs_f64() * 1e3,
            "rss_bytes_after": rss,
            "before": before.json(),
            "during": during.json(),
            "announces_per_sec_during": announced_during.load(Relaxed) as f64 / took.as_secs_f64().max(1e-9),
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_histogram_brackets_its_quantiles_within_a_bucket() {
        let mut h = Hist::default();
        for v in 1..=10_000u64 {
            h.record(v);
        }
        let p50 = h.quantile(0.5);
        assert!((5000..=5400).contains(&p50), "p50 {p50}");
        let p99 = h.quantile(0.99);
        assert!((9900..=10_000).contains(&p99), "p99 {p99}");
        assert_eq!(h.quantile(1.0), 10_000);
        for v in [0, 1, 15, 16, 17, 1000, u32::MAX as u64] {
            assert!(Hist::upper(Hist::index(v)) >= v, "{v}");
        }
    }

    #[test]
    fn a_small_run_fills_measures_and_expires_exactly_the_quarter() {
        let pop = Population {
            torrents: 500,
            zipf: 1.0,
            seeders: 0.6,
        };
        let t = Tracker::new(AnnounceConfig::default(), Mode::Public, swarm::Limits::NONE);
        let mut one = Announcer::new(&t, pop);
        let mut h = Hist::default();
        for start in (0..4000).step_by(BATCH) {
            one.draw(start..(start + BATCH as u64).min(4000));
            assert_eq!(one.run(true, &mut h), 0);
        }
        let st = t.stats();
        assert_eq!(st.seeders + st.leechers, 4000);
        assert_eq!(h.n, 4000);
        let e = mass_expiry(&t, pop, 4000).unwrap();
        assert_eq!(e["expiry"]["removed"], 1000);
        let st = t.stats();
        assert_eq!(st.seeders + st.leechers, 3000);
    }
}
