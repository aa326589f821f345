//! Nodes agree on real processes (docs/scaling.md, "Agreement"): the cases an operator met
//! on three nodes, one redis-server and PostgreSQL, each a test that failed before
//! incarnations and departures that say why.

mod common;

use std::time::Duration;

use common::nodes::*;
use common::*;
use protocol::AnnounceEvent;

const SECOND: Duration = Duration::from_millis(1100);

fn announce(n: &Shoal, ih: protocol::InfoHash, peer: u8, left: u64, event: AnnounceEvent) {
    let req = http_request(ih, peer, 6000 + u16::from(peer), left, event, true);
    http_announce(n.http[0], "/announce", &req).unwrap();
}

#[test]
fn a_rolling_restart_keeps_the_restarted_nodes_peers() {
    let redis = testkit::Redis::launch().unwrap();
    let db = database("postgres").unwrap();
    let dir = temp_dir();
    let ids = ["n1", "n2", "n3"];
    let mut nodes: Vec<Shoal> = ids
        .iter()
        .map(|id| node(dir.path(), &db, &redis.url(), id, "public"))
        .collect();
    let ih = hash(1);
    // 30 seeders, 10 announced to each node.
    for p in 0..30u8 {
        announce(&nodes[usize::from(p % 3)], ih, p, 0, AnnounceEvent::Started);
    }
    for n in &nodes {
        wait_until("every node to hold 30", SECOND, || {
            udp_counts(n.udp[0], ih) == (0, 30, 0)
        });
    }
    // SIGTERM node 2 and start it again with the same config: ready means it holds them.
    let (status, _) = nodes.remove(1).stop();
    assert!(status.success());
    let n2 = node(dir.path(), &db, &redis.url(), "n2", "public");
    assert_eq!(
        udp_counts(n2.udp[0], ih),
        (0, 30, 0),
        "ready, yet peers missing"
    );
    nodes.insert(1, n2);
    // A client of the previous incarnation stops at the new one: every node drops it.
    announce(&nodes[1], ih, 1, 0, AnnounceEvent::Stopped);
    for n in &nodes {
        wait_until("every node to drop the stopped client", SECOND, || {
            udp_counts(n.udp[0], ih) == (0, 29, 0)
        });
    }
}

#[test]
fn a_stop_at_the_clients_previous_node_removes_it_from_its_owner() {
    let redis = testkit::Redis::launch().unwrap();
    let db = database("postgres").unwrap();
    let dir = temp_dir();
    let nodes: Vec<Shoal> = ["n1", "n2", "n3"]
        .iter()
        .map(|id| node(dir.path(), &db, &redis.url(), id, "public"))
        .collect();
    let ih = hash(2);
    for p in 1..=3u8 {
        announce(&nodes[2], ih, p, 5, AnnounceEvent::Started);
    }
    // The roaming client: started on node 1, then (DNS round robin) node 2 owns it.
    announce(&nodes[0], ih, 9, 5, AnnounceEvent::Started);
    for n in &nodes {
        wait_until("4 leechers everywhere", SECOND, || {
            udp_counts(n.udp[0], ih) == (4, 0, 0)
        });
    }
    let published = nodes[1].metric("shoal_cluster_published_total");
    announce(&nodes[1], ih, 9, 5, AnnounceEvent::None);
    wait_until("node 2 to take the client over", SECOND, || {
        nodes[1].metric("shoal_cluster_published_total") > published
    });
    std::thread::sleep(Duration::from_millis(300));
    // Its stop lands on node 1.
    announce(&nodes[0], ih, 9, 5, AnnounceEvent::Stopped);
    for n in &nodes {
        wait_until("3 leechers everywhere, the owner too", SECOND, || {
            udp_counts(n.udp[0], ih) == (3, 0, 0)
        });
    }
}

#[test]
fn a_node_that_cannot_reach_redis_serves_degraded_says_why_and_catches_up() {
    let mut redis = testkit::Redis::launch().unwrap();
    let db = database("postgres").unwrap();
    let dir = temp_dir();
    redis.stop();
    let n1 = spawn_node(
        dir.path(),
        &db,
        &redis.url(),
        "n1",
        "public",
        "catch_up_timeout_ms = 1500\n",
    );
    let (code, h) = health(&n1);
    assert_eq!(
        (code, h["status"].as_str()),
        (503, Some("catching_up")),
        "{h}"
    );
    wait_until(
        "degraded past the catch-up timeout",
        Duration::from_secs(5),
        || health(&n1).0 == 200,
    );
    let (_, h) = health(&n1);
    assert_eq!(h["status"], "degraded", "{h}");
    let problem = h["bus"]["problem"].as_str().unwrap_or_default().to_string();
    assert!(problem.contains("refused"), "{h}");
    // It answers announces meanwhile.
    announce(&n1, hash(3), 1, 5, AnnounceEvent::Started);
    assert_eq!(udp_counts(n1.udp[0], hash(3)), (1, 0, 0));
    // Redis comes: the node catches up, its peer goes out, it says it is back.
    redis.restart().unwrap();
    wait_until("ok once Redis answers", Duration::from_secs(10), || {
        health(&n1).1["status"] == "ok"
    });
    let n2 = node(dir.path(), &db, &redis.url(), "n2", "public");
    wait_until("node 2 to learn node 1's peer", SECOND, || {
        udp_counts(n2.udp[0], hash(3)) == (1, 0, 0)
    });
    let errors = n1.metric("shoal_cluster_bus_errors_total");
    let start_log = n1.start_log.clone();
    let (_, log) = n1.stop();
    let all: Vec<&String> = start_log.iter().chain(&log).collect();
    let reported = all
        .iter()
        .filter(|l| l.contains("cannot reach the bus (refused)"))
        .count();
    // Many failed attempts, one line naming the cause, one saying it is over.
    assert!(errors >= 3, "{errors} errors");
    assert_eq!(reported, 1, "{all:#?}");
    assert!(
        all.iter().any(|l| l.contains("reachable again")),
        "{all:#?}"
    );
}
