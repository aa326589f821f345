//! The WebSocket tracker across nodes: a browser on one node meets a peer whose socket is
//! held by another, through the same Redis (presence on the stream, offers and answers by
//! pub/sub to the node holding the connection); without a shared bus they never meet.

mod common;

use std::time::Duration;

use common::nodes::*;
use common::ws::*;
use common::*;
use serde_json::json;

const H: [u8; 20] = [0x5A; 20];
const WS: &str = "[ws]\nbind = [\"127.0.0.1:0\"]\n";

/// Announces a seeder on `seeder_node`, then a leecher with one offer on `leecher_node`
/// once the leecher's node counts the seeder; returns both connections.
fn seeder_and_leecher(
    seeder_node: &Shoal,
    leecher_node: &Shoal,
) -> (WsClient<std::net::TcpStream>, WsClient<std::net::TcpStream>) {
    let mut seeder = ws_connect(seeder_node.ws[0]);
    seeder.announce(&H, &id(1), json!({"left": 0}));
    assert_eq!(seeder.recv()["complete"], 1);
    let leecher = ws_connect(leecher_node.ws[0]);
    (seeder, leecher)
}

#[test]
fn an_offer_and_its_answer_cross_nodes_through_redis() {
    let redis = testkit::Redis::launch().unwrap();
    let db = database("postgres").unwrap();
    let dir = temp_dir();
    let n1 = node_with(dir.path(), &db, &redis.url(), "n1", "public", WS);
    let n2 = node_with(dir.path(), &db, &redis.url(), "n2", "public", WS);
    let (mut seeder, mut leecher) = seeder_and_leecher(&n1, &n2);
    let mut probe = ws_connect(n2.ws[0]);
    wait_until(
        "node 2 to count node 1's WebSocket seeder",
        Duration::from_secs(5),
        || probe.scrape(&[H])["files"][latin1(&H)]["complete"] == 1,
    );
    leecher.announce(&H, &id(2), json!({"left": 10, "offers": offers(3, 1)}));
    assert_eq!(leecher.recv()["complete"], 1);
    let offer = seeder.recv();
    assert_eq!(
        offer["peer_id"].as_str().unwrap(),
        latin1(&id(2)),
        "{offer}"
    );
    assert!(
        offer["offer"]["sdp"]
            .as_str()
            .unwrap()
            .starts_with("v=0 offer 3/")
    );
    seeder.send(&json!({"action": "announce", "info_hash": latin1(&H), "peer_id": latin1(&id(1)),
        "to_peer_id": latin1(&id(2)), "offer_id": offer["offer_id"], "answer": {"type": "answer", "sdp": "v=0 from n1"}}));
    let answer = leecher.recv();
    assert_eq!(answer["answer"]["sdp"], "v=0 from n1", "{answer}");
    assert_eq!(answer["peer_id"].as_str().unwrap(), latin1(&id(1)));

    // The seeder's socket closes on node 1: node 2 drops it too.
    drop(seeder);
    wait_until(
        "node 2 to drop the closed socket's seeder",
        Duration::from_secs(5),
        || probe.scrape(&[H])["files"][latin1(&H)]["complete"] == 0,
    );
}

#[test]
fn nodes_without_a_shared_bus_never_relay() {
    let (r1, r2) = (
        testkit::Redis::launch().unwrap(),
        testkit::Redis::launch().unwrap(),
    );
    let db = database("postgres").unwrap();
    let dir = temp_dir();
    let n1 = node_with(dir.path(), &db, &r1.url(), "n1", "public", WS);
    let n2 = node_with(dir.path(), &db, &r2.url(), "n2", "public", WS);
    let (mut seeder, mut leecher) = seeder_and_leecher(&n1, &n2);
    leecher.announce(&H, &id(2), json!({"left": 10, "offers": offers(3, 1)}));
    assert_eq!(leecher.recv()["complete"], 0, "node 2 knows no seeder");
    seeder
        .ws
        .get_ref()
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    assert!(
        seeder.try_recv().is_none(),
        "an offer crossed without a bus"
    );
}
