//! `shoal bench cluster`: what several nodes cost. The price of applying one other node's
//! peer change, and the Redis memory a stream holding one million live peers takes, measured
//! by writing that stream as the publisher does. Prints one JSON object.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Instant;

use protocol::{InfoHash, PeerId};
use redis::Value;
use swarm::{PeerChange, PeerState};

use crate::cluster::record::{self, Record};
use crate::config::{AnnounceConfig, Mode};
use crate::tracker::Tracker;

pub struct Args {
    pub redis_url: String,
    pub changes: usize,
    pub torrents: usize,
    /// Records per stream entry: a node publishing every 100 ms at this many changes per batch.
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
        state: if i % 3 == 0 {
            PeerState::Seeder
        } else {
            PeerState::Leecher
        },
        completed: false,
    }
}

pub async fn run(a: Args) -> Result<(), String> {
    let changes: Vec<PeerChange> = (0..a.changes).map(|i| change(i, a.torrents)).collect();

    // Applying: every change a join (the dearest kind), then every one again as a renewal.
    let t = Tracker::clustered(
        AnnounceConfig::default(),
        Mode::Public,
        swarm::Limits::NONE,
        1,
    );
    let started = Instant::now();
    for c in &changes {
        let _ = t.apply_remote(c, 0, true);
    }
    let join_ns = started.elapsed().as_nanos() as f64 / a.changes as f64;
    let started = Instant::now();
    for c in &changes {
        let _ = t.apply_remote(c, 0, true);
    }
    let renew_ns = started.elapsed().as_nanos() as f64 / a.changes as f64;
    let held = t.stats();

    // The stream: every live peer has about two records within one peer timeout (a join or
    // renewal, and the renewal half a timeout later); one million peers, two records each.
    let client = redis::Client::open(a.redis_url.as_str()).map_err(|e| e.to_string())?;
    let mut c = client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| format!("cannot reach {}: {e}", store::redact_url(&a.redis_url)))?;
    let key = "shoal:bench";
    let _: Value = redis::cmd("DEL")
        .arg(key)
        .query_async(&mut c)
        .await
        .map_err(|e| e.to_string())?;
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
                .map_err(|e| e.to_string())?;
        }
    }
    let usage: i64 = redis::cmd("MEMORY")
        .arg("USAGE")
        .arg(key)
        .arg("SAMPLES")
        .arg(0)
        .query_async(&mut c)
        .await
        .map_err(|e| e.to_string())?;
    let _: Value = redis::cmd("DEL")
        .arg(key)
        .query_async(&mut c)
        .await
        .map_err(|e| e.to_string())?;
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
        })
    );
    Ok(())
}
