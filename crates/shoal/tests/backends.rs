//! `shoal serve` on each backend, and the flusher riding out a PostgreSQL restart.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use protocol::udp::Response;
use protocol::{AnnounceEvent, InfoHash, Key};
use serde_json::json;
use store::{AnyStore, AuthKeyStore, Connection, DatabaseUrl, TorrentMetricsStore, WhitelistStore};

const TOKEN: &str = "backend-test-token";

/// One download: a leecher starts, then completes.
fn complete(server: SocketAddr, ih: InfoHash, peer: u8) {
    let mut c = UdpClient::new(server);
    let cid = c.connect();
    for (left, event) in [(10, AnnounceEvent::Started), (0, AnnounceEvent::Completed)] {
        match c.announce(cid, ih, peer_id(peer), 7000 + u16::from(peer), left, event) {
            Response::Announce { .. } => {}
            other => panic!("announce answered with {other:?}"),
        }
    }
}

fn open_store(url: &str) -> AnyStore {
    block_on(AnyStore::open(&DatabaseUrl::parse(url).unwrap(), 2)).unwrap()
}

fn count(store: &AnyStore, ih: InfoHash) -> Option<u64> {
    block_on(store.load_torrent_downloads(&ih)).unwrap()
}

fn serves_on(backend: &str) {
    let dir = temp_dir();
    let url =
        database(backend).unwrap_or_else(|| format!("sqlite://{}/shoal.db", dir.path().display()));
    let setup = Setup {
        db_url: Some(url.clone()),
        token: TOKEN,
        ..Setup::default()
    };
    let shoal = setup.start(dir.path());
    for peer in 1..=3 {
        complete(shoal.udp[peer as usize % 2], hash(1), peer);
    }
    let (status, _) = api(
        shoal.api,
        "PUT",
        &format!("/api/v1/whitelist/{}", hash(1).to_hex()),
        Some(TOKEN),
        None,
    );
    assert_eq!(status, 201);
    let (_, key) = api(
        shoal.api,
        "POST",
        "/api/v1/keys",
        Some(TOKEN),
        Some(r#"{"valid_for_secs": 600}"#),
    );
    let (_, health) = api(shoal.api, "GET", "/health", None, None);
    assert_eq!(
        health["database"],
        json!({"driver": if backend == "mariadb" { "mysql" } else { backend }, "reachable": true, "flushing": true, "flush_failures": 0, "unflushed_deltas": 0})
    );

    let store = open_store(&url);
    wait_until("counts flushed", Duration::from_secs(10), || {
        count(&store, hash(1)) == Some(3)
    });
    assert_eq!(block_on(store.load_global_downloads()).unwrap(), Some(3));
    assert!(
        block_on(store.get_info_hash_from_whitelist(&hash(1)))
            .unwrap()
            .is_some(),
        "the API wrote the store"
    );
    let key: Key = key["key"].as_str().unwrap().parse().unwrap();
    assert!(
        block_on(store.get_key_from_keys(&key))
            .unwrap()
            .unwrap()
            .valid_until
            .is_some()
    );
    block_on(store.close());
    let (status, log) = shoal.stop();
    assert!(status.success(), "{log:?}");
    assert!(
        log.iter().all(|l| !l.contains("shoal-test-pw")),
        "the database password must never be logged"
    );

    // A new process loads the counts: scrape answers them from the first request.
    let shoal = setup.start(dir.path());
    let mut c = UdpClient::new(shoal.udp[0]);
    let cid = c.connect();
    match c.scrape(cid, &[hash(1)]) {
        Response::Scrape { stats, .. } => assert_eq!(stats[0].completed, 3),
        other => panic!("{other:?}"),
    }
}

#[test]
fn serves_on_sqlite() {
    serves_on("sqlite");
}

#[test]
fn serves_on_postgres() {
    serves_on("postgres");
}

#[test]
fn serves_on_mariadb() {
    serves_on("mariadb");
}

#[test]
fn flusher_keeps_every_increment_while_postgres_is_down() {
    let mut pg = block_on(testkit::Server::launch(testkit::Kind::Postgres)).unwrap();
    let url = block_on(pg.create_database("flusher")).unwrap();
    let dir = temp_dir();
    let setup = Setup {
        db_url: Some(url.clone()),
        token: TOKEN,
        database_extra: "max_pending_torrents = 5",
        ..Setup::default()
    };
    let shoal = setup.start(dir.path());
    let udp = shoal.udp[0];
    let store = open_store(&url);
    for n in 1..=5 {
        complete(udp, hash(n), 1);
        complete(udp, hash(n), 2);
    }
    wait_until("first flush", Duration::from_secs(10), || {
        (1..=5).all(|n| count(&store, hash(n)) == Some(2))
    });
    block_on(store.close());

    pg.stop();
    // Announces keep being answered while the database is gone.
    for n in 1..=5 {
        for peer in 3..=5 {
            complete(udp, hash(n), peer);
        }
    }
    wait_until(
        "a failed flush keeps five torrents",
        Duration::from_secs(10),
        || {
            shoal.metric("shoal_pending_torrents") == 5
                && shoal.metric("shoal_flush_failures_total") >= 1
        },
    );
    assert_eq!(shoal.metric("shoal_pending_deltas"), 15);
    // Past the bound, increments for new torrents are dropped and counted, not hidden.
    for n in 6..=8 {
        complete(udp, hash(n), 1);
    }
    wait_until("three dropped", Duration::from_secs(10), || {
        shoal.metric("shoal_dropped_deltas_total") == 3
    });
    let (status, health) = api(shoal.api, "GET", "/health", None, None);
    assert_eq!((status, &health["status"]), (503, &json!("degraded")));
    let (status, body) = api(
        shoal.api,
        "PUT",
        &format!("/api/v1/whitelist/{}", hash(1).to_hex()),
        Some(TOKEN),
        None,
    );
    assert_eq!(status, 503, "{body}");
    assert_eq!(
        api(shoal.api, "GET", "/api/v1/whitelist", Some(TOKEN), None).1,
        json!([]),
        "a refused write leaves the cache alone"
    );

    pg.restart().unwrap();
    let store = open_store(&url);
    wait_until(
        "every kept increment lands",
        Duration::from_secs(40),
        || (1..=5).all(|n| count(&store, hash(n)) == Some(5)),
    );
    assert_eq!(block_on(store.load_global_downloads()).unwrap(), Some(25));
    assert!((6..=8).all(|n| count(&store, hash(n)).is_none()));
    assert_eq!(shoal.metric("shoal_pending_deltas"), 0);
    assert_eq!(api(shoal.api, "GET", "/health", None, None).0, 200);
    let (status, log) = shoal.stop();
    assert!(status.success(), "{log:?}");
}
