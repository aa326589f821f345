//! `shoal bench stream`: what the bus costs at internet scale (docs/benchmarking.md,
//! "Internet scale"). Two measurements, one JSON line each:
//!
//! - **steady**: a node's real swarm under a population that re-announces every interval
//!   (with the answer's jitter), leaves and is replaced at `--churn-per-hour`, and is swept
//!   every sweep period, on a simulated clock for three peer timeouts. Every record the node
//!   publishes is kept with its second; what the stream holds at the end (its reach, and for
//!   comparison the reach before renewals in the sweep) is written to Redis as the publisher
//!   writes it, and Redis is asked its size: records and bytes per live peer.
//! - **join**: a stream holding `--join` live peers written by two nodes at that steady
//!   ratio, then a node started in this process (the real reader and swarm) timed from start
//!   to ready, with the memory it took.
//!
//! `--redis-url` must be a Redis the bench may fill and empty: it deletes the cluster's keys
//! (`--keep-join` leaves the join's stream for a `shoal serve` node to be timed on).

use std::time::Instant;

use protocol::AnnounceEvent;
use redis::Value;
use redis::aio::MultiplexedConnection;
use swarm::{PeerChange, PeerState};

use super::population::{Population, mix, parse_count};
use crate::cluster::record::{self, Record};
use crate::cmd::{Error, Result};
use crate::config::{AnnounceConfig, Mode};
use crate::tracker::{Now, PeerAnnounce, Protocol, Tracker};

#[derive(clap::Args)]
pub struct Args {
    /// A Redis the bench may fill and empty (it deletes the cluster's stream and epoch).
    #[arg(long, value_name = "URL")]
    pub redis_url: String,
    /// Live peers of the steady-state run.
    #[arg(long, value_parser = parse_count, default_value = "200k")]
    pub steady: u64,
    /// Share of the peers that leave (`stopped`) and are replaced by new ones each hour.
    #[arg(long, default_value_t = 0.5)]
    pub churn_per_hour: f64,
    /// Live peers in the stream a node joins (the join is skipped for 0).
    #[arg(long, value_parser = parse_count_or_zero, default_value = "1M")]
    pub join: u64,
    /// Zipf exponent of torrent popularity (one torrent per five peers).
    #[arg(long, default_value_t = 1.0)]
    pub zipf: f64,
    /// Leaves the join's stream in Redis, so a `shoal serve` node can be timed joining it.
    #[arg(long)]
    pub keep_join: bool,
}

fn parse_count_or_zero(s: &str) -> std::result::Result<u64, String> {
    if s.trim() == "0" {
        Ok(0)
    } else {
        parse_count(s)
    }
}

/// The publisher's batches: records written within this many per second share an entry.
const ENTRIES_PER_SECOND: usize = 10;

pub async fn run(a: Args) -> Result<()> {
    let mut c = super::cluster::connect(&a.redis_url).await?;
    let steady = steady(&a, &mut c).await?;
    println!("{steady}");
    if a.join > 0 {
        let ratio = steady["records_per_live_peer"].as_f64().unwrap_or(1.0);
        println!("{}", join(&a, &mut c, ratio).await?);
    }
    Ok(())
}

/// The steady state: three peer timeouts of re-announces, churn and sweeps on a simulated
/// clock; what the stream holds at the end.
async fn steady(a: &Args, c: &mut MultiplexedConnection) -> Result<serde_json::Value> {
    let policy = AnnounceConfig::default();
    let (interval, timeout) = (policy.interval.get(), policy.peer_timeout);
    let tracker = Tracker::clustered(policy, Mode::Public, swarm::Limits::NONE, 1 << 24);
    let sweep = tracker.sweep_every().as_secs().max(1) as u32;
    let n = a.steady;
    let pop = Population {
        torrents: (n / 5).max(1),
        zipf: a.zipf,
        seeders: 0.6,
    };
    let end = 3 * timeout;
    let jitter = (f64::from(interval) * 0.1) as u64 + 1;
    // Slot j holds peer `ids[j]` of the population; a replacement takes the next free number.
    let mut ids: Vec<u64> = (0..n).collect();
    let mut next_id = n;
    let mut due: Vec<Vec<u32>> = vec![Vec::new(); end as usize + 1];
    for j in 0..n {
        due[(mix(j ^ 0xabc) % u64::from(interval)) as usize].push(j as u32);
    }
    let leave = a.churn_per_hour * f64::from(interval) / 3600.0;
    let mut log: Vec<(u32, Vec<PeerChange>)> = Vec::new();
    let mut out = Vec::new();
    let started = Instant::now();
    let mut announces = 0u64;
    for t in 0..end {
        let now = Now {
            unix: t,
            swarm: t + timeout,
        };
        for j in std::mem::take(&mut due[t as usize]) {
            let slot = j as u64;
            let draw = mix(ids[slot as usize] ^ u64::from(t) << 32);
            if (draw >> 11) as f64 / (1u64 << 53) as f64 <= leave {
                announce(
                    &tracker,
                    &pop,
                    ids[slot as usize],
                    AnnounceEvent::Stopped,
                    now,
                    &mut out,
                );
                ids[slot as usize] = next_id;
                next_id += 1;
            }
            announce(
                &tracker,
                &pop,
                ids[slot as usize],
                AnnounceEvent::None,
                now,
                &mut out,
            );
            announces += 1;
            let next = t as u64 + u64::from(interval) + draw % jitter;
            if next <= u64::from(end) {
                due[next as usize].push(j);
            }
        }
        if t % sweep == 0 {
            tracker.expire_at(t + timeout);
        }
        let changes = tracker.take_changes();
        if !changes.is_empty() {
            log.push((t, changes));
        }
    }
    let simulated = started.elapsed();
    let held = tracker.stats();
    let live = held.seeders + held.leechers;
    let reach = tracker.stream_reach(crate::cluster::RETAIN_SLACK).as_secs() as u32;
    let before = timeout + timeout / 2 + crate::cluster::RETAIN_SLACK.as_secs() as u32;
    let mut figures = serde_json::Map::new();
    for (name, secs) in [("reach", reach), ("reach_before", before)] {
        let kept: Vec<&(u32, Vec<PeerChange>)> =
            log.iter().filter(|(t, _)| *t + secs >= end).collect();
        let records: usize = kept.iter().map(|(_, r)| r.len()).sum();
        let (bytes, entries) = write(c, "shoal:bench-stream", kept.iter().map(|(_, r)| r)).await?;
        let usage = usage(c, "shoal:bench-stream").await?;
        del(c, &["shoal:bench-stream"]).await?;
        figures.insert(
            name.into(),
            serde_json::json!({
                "seconds": secs,
                "records": records,
                "entries": entries,
                "records_per_live_peer": round(records as f64 / live as f64, 3),
                "record_bytes": round(bytes as f64 / records.max(1) as f64, 1),
                "redis_bytes": usage,
                "redis_mib_per_million_live_peers": round(usage as f64 / live as f64 * 1e6 / 1048576.0, 1),
            }),
        );
    }
    let now = &figures["reach"];
    Ok(serde_json::json!({
        "bench": "stream-steady",
        "live_peers": live,
        "announces": announces,
        "churn_per_hour": a.churn_per_hour,
        "simulated_seconds": end,
        "wall_seconds": round(simulated.as_secs_f64(), 1),
        "records_per_live_peer": now["records_per_live_peer"],
        "redis_mib_per_million_live_peers": now["redis_mib_per_million_live_peers"],
        "stream": figures,
    }))
}

fn announce(
    tracker: &Tracker,
    pop: &Population,
    id: u64,
    event: AnnounceEvent,
    now: Now,
    out: &mut Vec<protocol::ResponsePeer>,
) {
    let p = pop.peer(id);
    out.clear();
    let _ = tracker.announce(
        Protocol::Udp,
        &PeerAnnounce {
            info_hash: p.info_hash,
            peer_id: p.peer_id,
            ip: p.ip.into(),
            port: p.port,
            left: u64::from(!p.seeder),
            event,
            numwant: Some(0),
            key: None,
        },
        now,
        out,
    );
}

/// Writes batches as the publisher does (`ENTRIES_PER_SECOND` entries per batch), pipelined;
/// returns the bytes of records and the entries written.
async fn write<'a>(
    c: &mut MultiplexedConnection,
    key: &str,
    batches: impl Iterator<Item = &'a Vec<PeerChange>>,
) -> Result<(usize, usize)> {
    let (mut bytes, mut entries) = (0, 0);
    let mut pipe = redis::pipe();
    for batch in batches {
        let per = batch.len().div_ceil(ENTRIES_PER_SECOND).max(1);
        for chunk in batch.chunks(per) {
            let records: Vec<Record> = chunk.iter().copied().map(Record::Peer).collect();
            let data = record::encode(&records);
            bytes += data.len();
            entries += 1;
            let node = if entries % 2 == 0 {
                "bench-a"
            } else {
                "bench-b"
            };
            pipe.cmd("XADD")
                .arg(key)
                .arg("*")
                .arg("node")
                .arg(node)
                .arg("inc")
                .arg("1")
                .arg("d")
                .arg(data)
                .ignore();
            if entries % 64 == 0 {
                let _: () = pipe.query_async(c).await.map_err(Error::bus("XADD"))?;
                pipe = redis::pipe();
            }
        }
    }
    if entries % 64 != 0 {
        let _: () = pipe.query_async(c).await.map_err(Error::bus("XADD"))?;
    }
    Ok((bytes, entries))
}

async fn usage(c: &mut MultiplexedConnection, key: &str) -> Result<i64> {
    redis::cmd("MEMORY")
        .arg("USAGE")
        .arg(key)
        .arg("SAMPLES")
        .arg(0)
        .query_async(c)
        .await
        .map_err(Error::bus("MEMORY USAGE"))
}

async fn del(c: &mut MultiplexedConnection, keys: &[&str]) -> Result<()> {
    let _: Value = redis::cmd("DEL")
        .arg(keys)
        .query_async(c)
        .await
        .map_err(Error::bus("DEL"))?;
    Ok(())
}

fn round(v: f64, places: i32) -> f64 {
    let f = 10f64.powi(places);
    (v * f).round() / f
}

/// A node joining a cluster whose stream holds `n` live peers at `ratio` records each.
async fn join(a: &Args, c: &mut MultiplexedConnection, ratio: f64) -> Result<serde_json::Value> {
    use crate::cluster::STREAM;
    del(c, &[STREAM, crate::cluster::EPOCH]).await?;
    let n = a.join;
    let pop = Population {
        torrents: (n / 5).max(1),
        zipf: a.zipf,
        seeders: 0.6,
    };
    // Every peer once, then the renewals of the oldest part again, as a stream that reaches
    // one lease back holds them; batches as large as the publisher's at that rate.
    let renewals = ((ratio - 1.0).max(0.0) * n as f64) as u64;
    let per_entry = 5_000u64;
    let started = Instant::now();
    let mut bytes = 0;
    let mut from = 0u64;
    while from < n + renewals {
        let to = (from + per_entry * 64).min(n + renewals);
        let batches: Vec<Vec<PeerChange>> = (from..to)
            .step_by(per_entry as usize)
            .map(|s| {
                (s..(s + per_entry).min(to))
                    .map(|k| change(&pop, k % n))
                    .collect()
            })
            .collect();
        bytes += write(c, STREAM, batches.iter()).await?.0;
        from = to;
    }
    let written = started.elapsed();
    let usage = usage(c, STREAM).await?;

    let (rss_before, _) = super::swarm::memory();
    let node = super::cluster::InProcess::start(&a.redis_url, "bench-joiner").await?;
    let started = Instant::now();
    node.ready().await;
    let ready = started.elapsed();
    let (rss_after, _) = super::swarm::memory();
    let held = node.tracker.stats();
    node.stop().await;
    if !a.keep_join {
        del(c, &[STREAM, crate::cluster::EPOCH]).await?;
    }
    let peers = held.seeders + held.leechers;
    Ok(serde_json::json!({
        "bench": "stream-join",
        "live_peers": n,
        "records": n + renewals,
        "record_bytes": round(bytes as f64 / (n + renewals) as f64, 1),
        "write_seconds": round(written.as_secs_f64(), 1),
        "redis_bytes": usage,
        "redis_mib_per_million_live_peers": round(usage as f64 / n as f64 * 1e6 / 1048576.0, 1),
        "ready_seconds": round(ready.as_secs_f64(), 2),
        "peers_held": peers,
        "bytes_per_peer_held": round(rss_after.saturating_sub(rss_before) as f64 / peers.max(1) as f64, 1),
    }))
}

/// Peer `i` of the population as its owner's record.
fn change(pop: &Population, i: u64) -> PeerChange {
    let p = pop.peer(i);
    PeerChange {
        info_hash: p.info_hash,
        peer_id: p.peer_id,
        addr: (p.ip, p.port).into(),
        state: if p.seeder {
            PeerState::Seeder
        } else {
            PeerState::Leecher
        },
        completed: false,
    }
}
