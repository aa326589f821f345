//! Nodes of a cluster: `shoal serve` on a shared Redis and SQL database, and what they say.

use std::net::SocketAddr;
use std::time::Duration;

use protocol::InfoHash;

use super::*;

pub const TOKEN: &str = "cluster-token-0123456789";

pub fn node(dir: &std::path::Path, db: &str, redis: &str, id: &str, mode: &str) -> Shoal {
    node_with(dir, db, redis, id, mode, "")
}

/// `more` is appended to the config (e.g. an `[announce]` table).
pub fn node_with(
    dir: &std::path::Path,
    db: &str,
    redis: &str,
    id: &str,
    mode: &str,
    more: &str,
) -> Shoal {
    let shoal = spawn_node(dir, db, redis, id, mode, more);
    wait_ready(&shoal);
    shoal
}

/// A node started in `dir/<id>` (the same directory, so the same config, on a restart),
/// listening but perhaps not yet ready.
pub fn spawn_node(
    dir: &std::path::Path,
    db: &str,
    redis: &str,
    id: &str,
    mode: &str,
    more: &str,
) -> Shoal {
    let extra = format!(
        "[cluster]\nredis_url = \"{redis}\"\nnode_id = \"{id}\"\nsecret = \"shared-secret\"\n{more}"
    );
    Setup {
        mode,
        db_url: Some(db.to_string()),
        token: TOKEN,
        extra: &extra,
        ..Setup::default()
    }
    .start(&subdir(dir, id))
}

pub fn health(s: &Shoal) -> (u16, serde_json::Value) {
    api(s.api, "GET", "/health", None, None)
}

pub fn wait_ready(s: &Shoal) {
    wait_until("the node to catch up", Duration::from_secs(20), || {
        health(s).0 == 200
    });
}

/// Leechers, seeders and downloads as a UDP scrape of `node` reports them.
pub fn udp_counts(node: SocketAddr, ih: InfoHash) -> (u32, u32, u32) {
    let s = udp_scrape(node, ih).unwrap();
    (s.leechers, s.seeders, s.completed)
}

/// Three nodes n1, n2, n3 (in `dir/n1` …) on one Redis and one database, each ready.
pub fn three_nodes(dir: &std::path::Path, db: &str, redis: &str) -> Vec<Shoal> {
    ["n1", "n2", "n3"]
        .iter()
        .map(|id| node(dir, db, redis, id, "public"))
        .collect()
}

/// A node's view of a torrent's peers (`GET /api/v1/torrents/{info_hash}/peers`): each
/// endpoint and whether it seeds, sorted.
pub fn peer_view(node: &Shoal, ih: InfoHash) -> Vec<(String, bool)> {
    let target = format!("/api/v1/torrents/{}/peers?limit=1000", ih.to_hex());
    let (code, v) = api(node.api, "GET", &target, Some(TOKEN), None);
    assert_eq!(code, 200, "{v}");
    let mut out: Vec<(String, bool)> = v["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["addr"].as_str().unwrap().to_string(),
                p["seeder"].as_bool().unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}
