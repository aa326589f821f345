//! Several nodes, one swarm: three `shoal serve` processes on one real Redis and one real
//! PostgreSQL (MariaDB for admin changes too), spoken to over UDP, HTTP and the admin API.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::nodes::*;
use common::*;
use protocol::udp::Response;
use protocol::{AnnounceEvent, InfoHash};

/// Every bullet's deadline: "within one second", plus the polling step.
const SECOND: Duration = Duration::from_millis(1100);

fn http_peer_ports(node: SocketAddr, ih: InfoHash, peer: u8, port: u16) -> Vec<u16> {
    let v = http_announce(node, "/announce", &started(ih, peer, port)).unwrap();
    v.get("peers")
        .unwrap()
        .as_bytes()
        .unwrap()
        .chunks(6)
        .map(|c| u16::from_be_bytes([c[4], c[5]]))
        .collect()
}

fn udp_announce(
    c: &mut UdpClient,
    cid: protocol::udp::ConnectionId,
    ih: InfoHash,
    peer: u8,
    port: u16,
    left: u64,
    event: AnnounceEvent,
) {
    match c.announce(cid, ih, peer_id(peer), port, left, event) {
        Response::Announce { .. } => {}
        other => panic!("announce answered with {other:?}"),
    }
}

#[test]
fn one_swarm_across_three_nodes() {
    let redis = testkit::Redis::launch().unwrap();
    let db = database("postgres").unwrap();
    let dir = temp_dir();
    let nodes = three_nodes(dir.path(), &db, &redis.url());
    let ih = hash(1);
    let (n1, n2, n3) = (&nodes[0], &nodes[1], &nodes[2]);

    // A connect answered by node 1 is accepted by node 2.
    let mut on1 = UdpClient::new(n1.udp[0]);
    let cid = on1.connect();
    let mut on2 = UdpClient::new(n2.udp[0]);
    udp_announce(&mut on2, cid, hash(9), 9, 7009, 5, AnnounceEvent::Started);

    // A leecher on node 1 (UDP) is in node 2's HTTP answers and node 3's scrape.
    udp_announce(&mut on1, cid, ih, 1, 7001, 5, AnnounceEvent::Started);
    let took = wait_until("node 2 to list node 1's peer", SECOND, || {
        http_peer_ports(n2.http[0], ih, 2, 7002).contains(&7001)
    });
    eprintln!("visible on node 2 after {took:?}");
    wait_until("node 3 to count both", SECOND, || {
        udp_counts(n3.udp[0], ih) == (2, 0, 0)
    });

    // Leecher to seeder with `completed`: every node sees the role and the download; the
    // database counts it once.
    udp_announce(&mut on1, cid, ih, 1, 7001, 0, AnnounceEvent::Completed);
    for n in [n2, n3] {
        wait_until("the download everywhere", 2 * SECOND, || {
            udp_counts(n.udp[0], ih) == (1, 1, 1)
        });
    }
    wait_until("the flush", Duration::from_secs(5), || {
        stores::contents(&db).torrents.get(&ih) == Some(&1)
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        stores::contents(&db).torrents.get(&ih),
        Some(&1),
        "counted once, not per node"
    );
    assert_eq!(stores::contents(&db).total, Some(1));

    // A stop removes the peer everywhere.
    udp_announce(&mut on1, cid, ih, 1, 7001, 0, AnnounceEvent::Stopped);
    for n in [n2, n3] {
        wait_until("the departure everywhere", SECOND, || {
            udp_counts(n.udp[0], ih) == (1, 0, 1)
        });
    }

    // Re-announces within a lease publish nothing.
    let published = n2.metric("shoal_cluster_published_total");
    for _ in 0..5 {
        http_peer_ports(n2.http[0], ih, 2, 7002);
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(n2.metric("shoal_cluster_published_total"), published);
    assert_eq!(n1.metric("shoal_cluster_nodes"), 3);
    let (_, stats) = api(n1.api, "GET", "/api/v1/stats", Some(TOKEN), None);
    assert_eq!(stats["cluster"]["node_id"], "n1");
    assert!(stats["cluster"]["applied"].as_u64().unwrap() > 0, "{stats}");
}

#[test]
fn a_node_started_late_replays_the_swarm_before_it_reports_ready() {
    let redis = testkit::Redis::launch().unwrap();
    let db = database("postgres").unwrap();
    let dir = temp_dir();
    let n1 = node(dir.path(), &db, &redis.url(), "n1", "public");
    for p in 1..=20u8 {
        http_announce(
            n1.http[0],
            "/announce",
            &started(hash(p), p, 6000 + u16::from(p)),
        )
        .unwrap();
    }
    let (_, h) = health(&n1);
    assert_eq!(h["bus"]["up"], true, "{h}");
    wait_until("node 1 to publish its peers", SECOND, || {
        n1.metric("shoal_cluster_published_total") >= 20
    });
    // Ready means caught up: no waiting after it.
    let n2 = node(dir.path(), &db, &redis.url(), "n2", "public");
    for p in 1..=20u8 {
        assert_eq!(udp_counts(n2.udp[0], hash(p)), (1, 0, 0), "torrent {p}");
    }
}

fn listed_changes_reach_every_node(backend: &str) {
    let redis = testkit::Redis::launch().unwrap();
    let db = database(backend).unwrap();
    let dir = temp_dir();
    let n1 = node(dir.path(), &db, &redis.url(), "n1", "listed");
    let n2 = node(dir.path(), &db, &redis.url(), "n2", "listed");
    let ih = hash(5);
    let path = format!("/api/v1/whitelist/{}", ih.to_hex());
    assert!(http_announce(n2.http[0], "/announce", &started(ih, 1, 6001)).is_err());
    assert_eq!(api(n1.api, "PUT", &path, Some(TOKEN), None).0, 201);
    wait_until("node 2 to take the listed torrent", SECOND, || {
        http_announce(n2.http[0], "/announce", &started(ih, 1, 6001)).is_ok()
    });
    assert_eq!(api(n2.api, "DELETE", &path, Some(TOKEN), None).0, 204);
    wait_until("node 1 to refuse the unlisted torrent", SECOND, || {
        http_announce(n1.http[0], "/announce", &started(ih, 2, 6002)).is_err()
    });
}

#[test]
fn whitelist_changes_reach_every_node_on_postgres() {
    listed_changes_reach_every_node("postgres");
}

#[test]
fn whitelist_changes_reach_every_node_on_mariadb() {
    listed_changes_reach_every_node("mariadb");
}

#[test]
fn redis_stopped_under_load_and_back_empty_converges() {
    let mut redis = testkit::Redis::launch().unwrap();
    let db = database("postgres").unwrap();
    let dir = temp_dir();
    let n1 = node(dir.path(), &db, &redis.url(), "n1", "public");
    let n2 = node(dir.path(), &db, &redis.url(), "n2", "public");
    let ih = hash(3);
    http_announce(n1.http[0], "/announce", &started(ih, 1, 6001)).unwrap();
    wait_until("node 2 to see the first peer", SECOND, || {
        udp_counts(n2.udp[0], ih).0 == 1
    });

    // Load on node 1 throughout: 400 new peers over UDP from eight addresses, one every
    // 10 ms, each answered.
    const LOAD: u16 = 400;
    let loaded = hash(30);
    let udp1 = n1.udp[0];
    let load = std::thread::spawn(move || {
        // Eight addresses, 50 peers each: within limits.max_peers_per_ip.
        let mut clients: Vec<_> = (2..10)
            .map(|k| {
                let socket = std::net::UdpSocket::bind(format!("127.0.0.{k}:0")).unwrap();
                let mut c = UdpClient::from_socket(socket, udp1);
                let cid = c.connect();
                (c, cid)
            })
            .collect();
        let mut answered = 0;
        for i in 0..LOAD {
            let (c, cid) = &mut clients[usize::from(i) % 8];
            let started = AnnounceEvent::Started;
            if let Response::Announce { .. } =
                c.announce(*cid, loaded, peer_id(1), 10_000 + i, 5, started)
            {
                answered += 1;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        answered
    });
    std::thread::sleep(Duration::from_millis(500));

    redis.stop();
    // Both keep answering from their own view, and say the bus is down; changes wait.
    http_announce(n1.http[0], "/announce", &started(ih, 2, 6002)).unwrap();
    assert_eq!(udp_counts(n1.udp[0], ih).0, 2);
    wait_until(
        "health to report the bus down",
        Duration::from_secs(5),
        || {
            let (status, h) = health(&n1);
            status == 200 && h["bus"]["up"] == false && h["status"] == "degraded"
        },
    );
    assert!(n1.metric("shoal_cluster_bus_errors_total") > 0);
    wait_until(
        "changes to wait in the backlog",
        Duration::from_secs(3),
        || n1.metric("shoal_cluster_backlog") > 0,
    );

    // Back, empty: each node republishes the peers it owns.
    redis.restart().unwrap();
    assert_eq!(
        load.join().unwrap(),
        LOAD,
        "every announce answered while the bus was away"
    );
    wait_until(
        "node 2 to learn the peers announced while the bus was down",
        Duration::from_secs(10),
        || udp_counts(n2.udp[0], ih).0 == 2 && udp_counts(n2.udp[0], loaded).0 == u32::from(LOAD),
    );
    http_announce(n2.http[0], "/announce", &started(ih, 3, 6003)).unwrap();
    wait_until(
        "node 1 to hear node 2 again",
        Duration::from_secs(5),
        || udp_counts(n1.udp[0], ih).0 == 3,
    );
}

#[test]
fn a_killed_node_leaves_its_peers_on_the_others_until_they_expire() {
    let redis = testkit::Redis::launch().unwrap();
    let db = database("postgres").unwrap();
    let dir = temp_dir();
    // A 4 s peer timeout: leases renew every 2 s, expiry runs every second.
    let short = "[announce]\ninterval = 1\nmin_interval = 1\npeer_timeout = 4\n";
    let n1 = node_with(dir.path(), &db, &redis.url(), "n1", "public", short);
    let n2 = node_with(dir.path(), &db, &redis.url(), "n2", "public", short);
    let ih = hash(4);
    // A peer that keeps announcing to node 1 for longer than a timeout stays on node 2:
    // its lease renewals keep it alive there.
    for _ in 0..12 {
        http_announce(n1.http[0], "/announce", &started(ih, 1, 6001)).unwrap();
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(udp_counts(n2.udp[0], ih).0, 1, "renewed on node 2");
    n1.kill();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        udp_counts(n2.udp[0], ih).0,
        1,
        "kept until it expires or re-announces"
    );
    let gone = wait_until(
        "node 2 to expire the dead node's peer",
        Duration::from_secs(8),
        || udp_counts(n2.udp[0], ih).0 == 0,
    );
    eprintln!("expired on node 2 {gone:?} after the kill");
}

#[test]
fn cluster_mode_is_refused_on_sqlite_and_without_a_secret() {
    let dir = temp_dir();
    let cfg = config(
        dir.path(),
        "[cluster]\nredis_url = \"redis://:hunter2@127.0.0.1:9/\"\nsecret = \"s\"\n",
    );
    let out = command(&["config", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("cluster.redis_url") && err.contains("SQLite"),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");

    let cfg = Setup {
        db_url: Some("postgresql://u:p@127.0.0.1:9/db".into()),
        extra: "[cluster]\nredis_url = \"redis://:hunter2@127.0.0.1:9/\"\n",
        ..Setup::default()
    }
    .write(dir.path());
    let out = command(&["config", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cluster.secret"), "{err}");

    let cfg = Setup {
        db_url: Some("postgresql://u:p@127.0.0.1:9/db".into()),
        extra: "[cluster]\nredis_url = \"redis://:hunter2@127.0.0.1:9/\"\nsecret = \"s\"\n",
        ..Setup::default()
    }
    .write(dir.path());
    let out = command(&["config", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("redis://:***@127.0.0.1:9/") && !text.contains("hunter2"),
        "{text}"
    );
}

/// A node on the TLS-only `redis`, trusting the file `ca_path` names, ready.
fn tls_node(redis: &testkit::Redis, db: &str, dir: &std::path::Path, id: &str) -> Shoal {
    let extra = format!(
        "[cluster]\nredis_url = \"{}\"\nredis_ca_cert_path = \"{}\"\nnode_id = \"{id}\"\nsecret = \"s\"\n",
        redis.url(),
        redis.ca_path().display()
    );
    let s = Setup {
        db_url: Some(db.to_string()),
        extra: &extra,
        ..Setup::default()
    }
    .start(&subdir(dir, id));
    wait_ready(&s);
    s
}

#[test]
fn rediss_with_a_private_ca() {
    let redis = testkit::Redis::launch_tls().unwrap();
    assert!(redis.url().starts_with("rediss://"));
    let db = database("postgres").unwrap();
    let dir = temp_dir();
    let start = |id: &str| tls_node(&redis, &db, dir.path(), id);
    let (n1, n2) = (start("n1"), start("n2"));
    let ih = hash(8);
    http_announce(n1.http[0], "/announce", &started(ih, 1, 6001)).unwrap();
    wait_until("node 2 to see the peer over TLS", SECOND, || {
        udp_counts(n2.udp[0], ih).0 == 1
    });

    // Without the CA the server's certificate is not trusted: the bus stays down, and the
    // node still answers from its own view.
    let extra = format!(
        "[cluster]\nredis_url = \"{}\"\nnode_id = \"n3\"\nsecret = \"s\"\n",
        redis.url()
    );
    let n3 = Setup {
        db_url: Some(db.clone()),
        extra: &extra,
        ..Setup::default()
    }
    .start(&subdir(dir.path(), "n3"));
    wait_until(
        "the untrusted bus to count errors",
        Duration::from_secs(5),
        || n3.metric("shoal_cluster_bus_errors_total") > 0,
    );
    assert_eq!(health(&n3).1["bus"]["up"], false);
}

/// `openssl req -x509`'s self-signed certificate (marked CA) as the Redis server's, given as
/// `cluster.redis_ca_cert_path`: trusted as that server's own (pinned), for the stream and
/// the WebSocket relay alike.
#[test]
fn rediss_with_a_pinned_self_signed_certificate() {
    let redis = testkit::Redis::launch_tls_self_signed().unwrap();
    let db = database("postgres").unwrap();
    let dir = temp_dir();
    let start = |id: &str| tls_node(&redis, &db, dir.path(), id);
    let (n1, n2) = (start("n1"), start("n2"));
    let ih = hash(9);
    http_announce(n1.http[0], "/announce", &started(ih, 1, 6001)).unwrap();
    wait_until("node 2 to see the peer over pinned TLS", SECOND, || {
        udp_counts(n2.udp[0], ih).0 == 1
    });
    assert_eq!(health(&n2).1["bus"]["up"], true);
}

/// A client rule added through node 1's API refuses on node 3 within a second (store
/// first, a notice on the bus, every node reloads), and its removal reaches node 2.
#[test]
fn client_rules_reach_every_node() {
    let redis = testkit::Redis::launch().unwrap();
    let db = database("postgres").unwrap();
    let dir = temp_dir();
    let nodes = three_nodes(dir.path(), &db, &redis.url());
    let (n1, n2, n3) = (&nodes[0], &nodes[1], &nodes[2]);
    let mut req = started(hash(6), 1, 6001);
    req.peer_id.0[..4].copy_from_slice(b"-XL0");
    assert!(http_announce(n3.http[0], "/announce", &req).is_ok());
    let (status, _) = api(
        n1.api,
        "PUT",
        "/api/v1/clients/-XL",
        Some(TOKEN),
        Some("{\"kind\":\"deny\"}"),
    );
    assert_eq!(status, 201);
    let took = wait_until("node 3 to refuse -XL", SECOND, || {
        http_announce(n3.http[0], "/announce", &req)
            .is_err_and(|why| why == "client refused by rule deny -XL")
    });
    assert!(took <= SECOND);
    assert_eq!(
        api(n1.api, "DELETE", "/api/v1/clients/-XL", Some(TOKEN), None).0,
        204
    );
    wait_until("node 2 to let -XL in again", SECOND, || {
        http_announce(n2.http[0], "/announce", &req).is_ok()
    });

    // The status page of a node knows the cluster: its node, the bus, every node alive,
    // and the swarm.
    wait_until("node 2 to count the leecher", SECOND, || {
        udp_counts(n2.udp[0], hash(6)).0 >= 1
    });
    let (_, v) = api(n2.api, "GET", "/api/v1/status", Some(TOKEN), None);
    assert_eq!(v["cluster"]["node_id"], "n2", "{v}");
    assert_eq!(v["cluster"]["nodes"], 3, "{v}");
    assert_eq!(v["top_torrents"][0]["info_hash"], hash(6).to_hex(), "{v}");
    let mut s = std::net::TcpStream::connect(n2.api).unwrap();
    use std::io::{Read, Write};
    write!(
        s,
        "GET / HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        n2.api
    )
    .unwrap();
    let mut page = String::new();
    s.read_to_string(&mut page).unwrap();
    assert!(page.contains("cluster node n2 of 3, bus"), "{page}");
}
