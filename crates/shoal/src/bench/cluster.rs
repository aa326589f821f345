//! `shoal bench cluster`: what several nodes cost. The price of applying one other node's
//! peer change, and the Redis memory a stream holding one million live peers takes, measured
//! by writing that stream as the publisher does. Prints one JSON object.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Instant;

use protocol::{InfoHash, PeerId};
use redis::Value;
use swarm::{PeerChange, PeerState};

use crate::cluster::record::{self, Record};
use crate::cmd::{Error, Result};
use crate::config::{AnnounceConfig, Mode};
use crate::tracker::Tracker;

/// The cost of several nodes: applying another node's peer changes (ns each) and the Redis
/// memory of a stream that holds one million live peers; prints one JSON object.
#[derive(clap::Args)]
pub struct Args {
    #[arg(long, value_name = "URL")]
    pub redis_url: String,
    /// Announces timed from one node to another (two nodes in this process on the bus).
    #[arg(long, default_value_t = 300, value_name = "N")]
    pub lag_samples: usize,
    /// Peer changes to apply and to write (two records each) into the stream.
    #[arg(long, default_value_t = 1_000_000, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub changes: u64,
    #[arg(long, default_value_t = 100_000, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub torrents: u64,
    /// Records per stream entry: a node publishing every 100 ms at this many changes per batch.
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub per_entry: usize,
}

fn change(i: usize, torrents: usize) -> PeerChange {
    let t = (i % torrents) as u64;
    let mut h = [0u8; 20];
    h[..8].copy_from_slice(&t.to_le_bytes());
    h[8..16].copy_from_slice(&t.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_le_bytes());
    let n = i as u32;
    PeerChange {
        info_hash: InfoHash(h),
        peer_id: PeerId([n as u8; 20]),
        addr: SocketAddr::from((
            Ipv4Addr::from(0x0a00_0000 | (n >> 8)),
            1024 + (n & 0xff) as u16,
        )),
        state: if i.is_multiple_of(3) {
            PeerState::Seeder
        } else {
            PeerState::Leecher
        },
        completed: false,
    }
}

pub async fn run(a: Args) -> Result<()> {
    let changes: Vec<PeerChange> = (0..a.changes as usize)
        .map(|i| change(i, a.torrents as usize))
        .collect();

    // Applying: every change a join (the dearest kind), then every one again as a renewal.
    let t = Tracker::clustered(
        AnnounceConfig::default(),
        Mode::Public,
        swarm::Limits::NONE,
        1,
    );
    let other = swarm::Origin::Node(1);
    let started = Instant::now();
    for c in &changes {
        let _ = t.apply_remote(c, other, 0, true);
    }
    let join_ns = started.elapsed().as_nanos() as f64 / a.changes as f64;
    let started = Instant::now();
    for c in &changes {
        let _ = t.apply_remote(c, other, 0, true);
    }
    let renew_ns = started.elapsed().as_nanos() as f64 / a.changes as f64;
    let held = t.stats();

    // The stream: every live peer has about two records within one peer timeout (a join or
    // renewal, and the renewal half a timeout later); one million peers, two records each.
    let mut c = connect(&a.redis_url).await?;
    let key = "shoal:bench";
    let _: Value = redis::cmd("DEL")
        .arg(key)
        .query_async(&mut c)
        .await
        .map_err(Error::bus("DEL"))?;
    let mut bytes = 0usize;
    let mut entries = 0usize;
    for _round in 0..2 {
        for chunk in changes.chunks(a.per_entry.max(1)) {
            let records: Vec<Record> = chunk.iter().copied().map(Record::Peer).collect();
            let data = record::encode(&records);
            bytes += data.len();
            entries += 1;
            let _: Value = redis::cmd("XADD")
                .arg(key)
                .arg("*")
                .arg("node")
                .arg("bench-node")
                .arg("d")
                .arg(data)
                .query_async(&mut c)
                .await
                .map_err(Error::bus("XADD"))?;
        }
    }
    let usage: i64 = redis::cmd("MEMORY")
        .arg("USAGE")
        .arg(key)
        .arg("SAMPLES")
        .arg(0)
        .query_async(&mut c)
        .await
        .map_err(Error::bus("MEMORY USAGE"))?;
    let _: Value = redis::cmd("DEL")
        .arg(key)
        .query_async(&mut c)
        .await
        .map_err(Error::bus("DEL"))?;
    let lag = lag(&a.redis_url, a.lag_samples).await?;
    let per_million = usage as f64 * 1_000_000.0 / a.changes as f64;
    println!(
        "{}",
        serde_json::json!({
            "changes": a.changes,
            "torrents": a.torrents,
            "apply_join_ns_per_change": (join_ns * 10.0).round() / 10.0,
            "apply_renewal_ns_per_change": (renew_ns * 10.0).round() / 10.0,
            "peers_held": held.seeders + held.leechers,
            "stream_records": 2 * a.changes,
            "stream_entries": entries,
            "record_bytes_per_change": bytes as f64 / (2 * a.changes) as f64,
            "redis_bytes": usage,
            "redis_mib_per_million_peers": (per_million / 1048576.0 * 10.0).round() / 10.0,
            "lag_samples": lag.len(),
            "lag_ms_p50": percentile(&lag, 0.50),
            "lag_ms_p99": percentile(&lag, 0.99),
        })
    );
    Ok(())
}

/// A connection to the Redis a bench may fill, its URL redacted in errors.
pub async fn connect(url: &str) -> Result<redis::aio::MultiplexedConnection> {
    let shown = store::redact_url(url);
    let client = redis::Client::open(url).map_err(Error::bus(&shown))?;
    client
        .get_multiplexed_async_connection()
        .await
        .map_err(Error::bus(format!("cannot reach {shown}")))
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let v = sorted[((sorted.len() - 1) as f64 * q).round() as usize];
    (v * 10.0).round() / 10.0
}

/// A node in this process: the real swarm, publisher and reader on the bus, with a SQLite
/// access database of its own.
pub struct InProcess {
    pub tracker: std::sync::Arc<Tracker>,
    pub state: std::sync::Arc<crate::cluster::BusState>,
    tasks: tokio::task::JoinSet<()>,
    stop: tokio::sync::watch::Sender<bool>,
    db: store::AnyStore,
    dir: std::path::PathBuf,
}

impl InProcess {
    pub async fn start(redis_url: &str, id: &str) -> Result<InProcess> {
        use std::sync::Arc;
        let dir = std::env::temp_dir().join(format!("shoal-bench-{id}-{}", std::process::id()));
        std::fs::create_dir_all(&dir)
            .map_err(Error::io(format!("cannot make {}", dir.display())))?;
        let url = store::DatabaseUrl::parse(&format!("sqlite://{}/access.db", dir.display()))
            .map_err(Error::store("a SQLite URL"))?;
        let db = store::AnyStore::open(&url, 2)
            .await
            .map_err(Error::store("opening the access database"))?;
        store::SchemaMigrator::migrate(&db)
            .await
            .map_err(Error::store("migrating the access database"))?;
        let config: crate::config::ClusterConfig =
            toml::from_str(&format!("redis_url = {redis_url:?}"))
                .map_err(|e| Error::Said(e.to_string()))?;
        let (stop, rx) = tokio::sync::watch::channel(false);
        let tracker = Arc::new(Tracker::clustered(
            AnnounceConfig::default(),
            Mode::Public,
            swarm::Limits::NONE,
            1_000_000,
        ));
        let state = Arc::new(crate::cluster::BusState::new(
            id.into(),
            std::time::Duration::from_secs(3600),
        ));
        let tasks = crate::cluster::start(&config, tracker.clone(), db.clone(), state.clone(), rx);
        Ok(InProcess {
            tracker,
            state,
            tasks,
            stop,
            db,
            dir,
        })
    }

    /// Waits until the node has replayed the stream.
    pub async fn ready(&self) {
        while !self.state.is_ready() {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        while self.tasks.join_next().await.is_some() {}
        store::Connection::close(&self.db).await;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Two nodes in this process, each with the real publisher and reader on the bus: the time
/// from an announce answered by one to its peer being in the other's scrape, sorted (ms).
async fn lag(redis_url: &str, samples: usize) -> Result<Vec<f64>> {
    let mut nodes = Vec::new();
    for id in ["bench-a", "bench-b"] {
        nodes.push(InProcess::start(redis_url, id).await?);
    }
    for node in &nodes {
        node.ready().await;
    }
    let (a, b) = (&nodes[0].tracker, &nodes[1].tracker);
    let mut lags = Vec::with_capacity(samples);
    let mut out = Vec::new();
    for i in 0..samples {
        let c = change(i, usize::MAX);
        // Spread over the batch interval, as real announces arrive.
        tokio::time::sleep(std::time::Duration::from_millis(7)).await;
        let started = Instant::now();
        let _ = a.announce(
            crate::tracker::Protocol::Http,
            &crate::tracker::PeerAnnounce {
                info_hash: c.info_hash,
                peer_id: c.peer_id,
                ip: c.addr.ip(),
                port: c.addr.port(),
                left: 1,
                event: protocol::AnnounceEvent::Started,
                numwant: Some(1),
                key: None,
            },
            a.now(),
            &mut out,
        );
        let deadline = started + std::time::Duration::from_secs(5);
        while b.torrent(&c.info_hash).is_none_or(|t| t.leechers == 0) && Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_micros(500)).await;
        }
        if b.torrent(&c.info_hash).is_none_or(|t| t.leechers == 0) {
            return Err(Error::Said(format!(
                "sample {i} never reached the other node"
            )));
        }
        lags.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    for node in nodes {
        node.stop().await;
    }
    lags.sort_by(f64::total_cmp);
    Ok(lags)
}
