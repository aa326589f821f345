//! Nodes agree on real processes (docs/scaling.md, "Agreement"): the cases an operator met
//! on three nodes, one redis-server and PostgreSQL, each a test that failed before
//! incarnations and departures that say why.

mod common;

use std::time::Duration;

use common::nodes::*;
use common::*;
use protocol::AnnounceEvent;

const SECOND: Duration = Duration::from_millis(1100);

/// Waits (one second at most) until every node's scrape of `ih` says `want`.
fn every_node_counts(nodes: &[Shoal], ih: protocol::InfoHash, want: (u32, u32, u32), what: &str) {
    for n in nodes {
        wait_until(what, SECOND, || udp_counts(n.udp[0], ih) == want);
    }
}

/// Waits until the node is past its catch-up timeout: 200 `degraded`; the bus's problem.
fn degraded_problem(n: &Shoal) -> String {
    wait_until(
        "degraded past the catch-up timeout",
        Duration::from_secs(5),
        || health(n).0 == 200,
    );
    let (_, h) = health(n);
    assert_eq!(h["status"], "degraded", "{h}");
    h["bus"]["problem"].as_str().unwrap_or_default().to_string()
}

fn announce(n: &Shoal, ih: protocol::InfoHash, peer: u8, left: u64, event: AnnounceEvent) {
    let req = http_request(ih, peer, 6000 + u16::from(peer), left, event, true);
    http_announce(n.http[0], "/announce", &req).unwrap();
}

#[test]
fn a_rolling_restart_keeps_the_restarted_nodes_peers() {
    let redis = testkit::Redis::launch().unwrap();
    let db = database("postgres").unwrap();
    let dir = temp_dir();
    let mut nodes = three_nodes(dir.path(), &db, &redis.url());
    let ih = hash(1);
    // 30 seeders, 10 announced to each node.
    for p in 0..30u8 {
        announce(&nodes[usize::from(p % 3)], ih, p, 0, AnnounceEvent::Started);
    }
    every_node_counts(&nodes, ih, (0, 30, 0), "every node to hold 30");
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
    every_node_counts(
        &nodes,
        ih,
        (0, 29, 0),
        "every node to drop the stopped client",
    );
}

#[test]
fn a_stop_at_the_clients_previous_node_removes_it_from_its_owner() {
    let redis = testkit::Redis::launch().unwrap();
    let db = database("postgres").unwrap();
    let dir = temp_dir();
    let nodes = three_nodes(dir.path(), &db, &redis.url());
    let ih = hash(2);
    for p in 1..=3u8 {
        announce(&nodes[2], ih, p, 5, AnnounceEvent::Started);
    }
    // The roaming client: started on node 1, then (DNS round robin) node 2 owns it.
    announce(&nodes[0], ih, 9, 5, AnnounceEvent::Started);
    every_node_counts(&nodes, ih, (4, 0, 0), "4 leechers everywhere");
    let published = nodes[1].metric("shoal_cluster_published_total");
    announce(&nodes[1], ih, 9, 5, AnnounceEvent::None);
    wait_until("node 2 to take the client over", SECOND, || {
        nodes[1].metric("shoal_cluster_published_total") > published
    });
    std::thread::sleep(Duration::from_millis(300));
    // Its stop lands on node 1.
    announce(&nodes[0], ih, 9, 5, AnnounceEvent::Stopped);
    every_node_counts(
        &nodes,
        ih,
        (3, 0, 0),
        "3 leechers everywhere, the owner too",
    );
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
    let problem = degraded_problem(&n1);
    assert!(problem.contains("refused"), "{problem}");
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

/// A TCP relay between one node and Redis that the test can cut: an outage of that node's
/// bus alone, the others untouched.
struct Relay {
    addr: std::net::SocketAddr,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
    live: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
}

impl Relay {
    fn to(target: std::net::SocketAddr) -> Relay {
        use std::sync::atomic::Ordering::SeqCst;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let relay = Relay {
            addr: listener.local_addr().unwrap(),
            cut: Default::default(),
            live: Default::default(),
        };
        let (cut, live) = (relay.cut.clone(), relay.live.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().map_while(Result::ok) {
                if cut.load(SeqCst) {
                    continue; // dropped: the connection is reset
                }
                let Ok(server) = std::net::TcpStream::connect(target) else {
                    continue;
                };
                let mut live = live.lock().unwrap();
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server.try_clone().unwrap(), client.try_clone().unwrap()),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
                live.extend([client, server]);
            }
        });
        relay
    }

    fn set_cut(&self, cut: bool) {
        self.cut.store(cut, std::sync::atomic::Ordering::SeqCst);
        if cut {
            for s in self.live.lock().unwrap().drain(..) {
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
        }
    }
}

/// Every entry the stream holds now, added to `into` by id.
fn record_stream(
    redis: &str,
    into: &mut std::collections::BTreeMap<(u64, u64), shoal::cluster::follow::Entry>,
) {
    let mut c = redis::Client::open(redis)
        .unwrap()
        .get_connection()
        .unwrap();
    let v: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(shoal::cluster::STREAM)
        .arg("-")
        .arg("+")
        .query(&mut c)
        .unwrap();
    for e in shoal::cluster::entries(v.ids) {
        let (ms, seq) = e.id.split_once('-').unwrap();
        into.insert((ms.parse().unwrap(), seq.parse().unwrap()), e);
    }
}

/// xorshift64*: a seeded run replays exactly.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

/// The agreement property on real processes: 2,000 announces from 200 clients over UDP and
/// HTTP to random nodes, with a rolling restart of every node, a SIGKILL, Redis restarted
/// empty and one node's bus cut for ten seconds; then every node's peers and counts must
/// equal each other's and the model's (the stream applied in order), and the database must
/// count every `completed` that went on the bus once.
#[test]
fn a_seeded_random_run_ends_with_every_node_agreeing_with_the_model() {
    use std::collections::BTreeMap;
    let seed: u64 = std::env::var("SHOAL_AGREEMENT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("seed {seed}: SHOAL_AGREEMENT_SEED={seed} replays this run");
    let mut rng = Rng(seed);
    let mut redis = testkit::Redis::launch().unwrap();
    let relay = Relay::to(format!("127.0.0.1:{}", redis.port()).parse().unwrap());
    let db = database("postgres").unwrap();
    let dir = temp_dir();
    let ids = ["n1", "n2", "n3"];
    let direct = redis.url();
    let url = |i: usize| match i {
        2 => format!("redis://{}", relay.addr),
        _ => direct.clone(),
    };
    let start = |i: usize| node(dir.path(), &db, &url(i), ids[i], "public");
    let mut nodes: Vec<Shoal> = (0..3).map(start).collect();
    let torrents: Vec<_> = (1..=5u8).map(hash).collect();
    // None: not in the swarm; Some(seeder).
    let mut clients: Vec<Option<bool>> = vec![None; 200];
    let mut before_wipe = BTreeMap::new();
    let mut after_wipe = BTreeMap::new();
    let quiet = || std::thread::sleep(Duration::from_millis(500));
    for i in 0..2000usize {
        match i {
            300 | 600 | 900 => {
                let k = i / 300 - 1;
                let (status, _) = nodes.remove(k).stop();
                assert!(status.success());
                nodes.insert(k, start(k));
            }
            1100 => {
                // What was answered has been flushed and published: a kill loses nothing
                // the model or the database would count.
                quiet();
                nodes.remove(1).kill();
                nodes.insert(1, start(1));
            }
            1400 => {
                quiet();
                record_stream(&direct, &mut before_wipe);
                redis.restart().unwrap();
            }
            1600 => relay.set_cut(true),
            _ => {}
        }
        if i > 1600 && relay.cut.load(std::sync::atomic::Ordering::SeqCst) {
            // Ten seconds of node 3 without its bus, under traffic.
            std::thread::sleep(Duration::from_millis(50));
            if i == 1800 {
                relay.set_cut(false);
            }
        }
        let c = rng.below(200) as usize;
        let k = rng.below(3) as usize;
        let ih = torrents[c % torrents.len()];
        let (left, event) = match clients[c] {
            None if rng.below(10) < 3 => (0, AnnounceEvent::Started),
            None => (5, AnnounceEvent::Started),
            Some(false) => match rng.below(20) {
                0..12 => (5, AnnounceEvent::None),
                12..17 => (0, AnnounceEvent::Completed),
                _ => (5, AnnounceEvent::Stopped),
            },
            Some(true) => match rng.below(20) {
                0..17 => (0, AnnounceEvent::None),
                _ => (0, AnnounceEvent::Stopped),
            },
        };
        clients[c] = (event != AnnounceEvent::Stopped).then_some(left == 0);
        let port = 20000 + c as u16;
        if rng.below(2) == 0 {
            let req = http_request(ih, c as u8, port, left, event, true);
            http_announce(nodes[k].http[0], "/announce", &req).unwrap();
        } else {
            let mut u = UdpClient::new(nodes[k].udp[0]);
            let cid = u.connect();
            let r = u.announce(cid, ih, peer_id(c as u8), port, left, event);
            assert!(
                matches!(r, protocol::udp::Response::Announce { .. }),
                "{r:?}"
            );
        }
    }
    // Traffic stops: one batch, one read, and every bus is back.
    for n in &nodes {
        wait_until("the node to be ok", Duration::from_secs(20), || {
            health(n).1["status"] == "ok"
        });
    }
    std::thread::sleep(Duration::from_secs(1));
    record_stream(&direct, &mut after_wipe);
    let mut model = shoal::cluster::follow::Model::default();
    for e in before_wipe.values() {
        model.entry(e);
    }
    // Redis came back empty: the views stand on what went on the bus since; the counts on
    // every `completed` that went on it, before and after.
    model.peers.clear();
    for e in after_wipe.values() {
        model.entry(e);
    }
    for ih in &torrents {
        let want: Vec<(String, bool)> = model
            .peers
            .iter()
            .filter(|((h, _), _)| h == ih)
            .map(|((_, a), p)| (a.to_string(), p.seeder))
            .collect();
        for (k, n) in nodes.iter().enumerate() {
            let got = peer_view(n, *ih);
            assert_eq!(got, want, "node {} torrent {ih} (seed {seed})", k + 1);
            let seeders = want.iter().filter(|p| p.1).count() as u32;
            let scrape = udp_counts(n.udp[0], *ih);
            assert_eq!((scrape.1, scrape.0), (seeders, want.len() as u32 - seeders));
        }
    }
    let all = model.completed;
    let stored = stores::contents(&db).torrents;
    for ih in &torrents {
        assert_eq!(
            stored.get(ih).copied().unwrap_or(0),
            all.get(ih).copied().unwrap_or(0),
            "downloads of {ih} (seed {seed})"
        );
    }
}

/// A rolling upgrade under steady UDP load: each node in turn gets SIGTERM and starts
/// again while 60 clients keep announcing round the nodes. Requests to a node that is away
/// time out; none is answered wrongly; nothing is lost: every client is on every node
/// after, in the role it last announced, and every `completed` answered is counted once.
#[test]
fn a_rolling_upgrade_under_load_answers_rightly_and_loses_nothing() {
    use protocol::udp::{ConnectionId, Request, Response, TransactionId};
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
    use std::sync::{Arc, Mutex};
    let redis = testkit::Redis::launch().unwrap();
    let db = database("postgres").unwrap();
    let dir = temp_dir();
    let ids = ["n1", "n2", "n3"];
    let mut nodes = three_nodes(dir.path(), &db, &redis.url());
    let addrs = Arc::new(Mutex::new(
        nodes.iter().map(|n| n.udp[0]).collect::<Vec<_>>(),
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let (answered, timed_out, completed) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let ih = hash(7);
    let load = {
        let (addrs, stop) = (addrs.clone(), stop.clone());
        let (answered, timed_out, completed) =
            (answered.clone(), timed_out.clone(), completed.clone());
        std::thread::spawn(move || {
            let cid = UdpClient::new(addrs.lock().unwrap()[0]).connect();
            // Per client: announces answered so far; it completes on its sixth.
            let mut done = [0u32; 60];
            let mut round = 0usize;
            while !stop.load(SeqCst) {
                for c in 0..60usize {
                    let to = addrs.lock().unwrap()[(round + c) % 3];
                    let u = UdpClient::new(to);
                    let event = match done[c] {
                        0 => AnnounceEvent::Started,
                        5 => AnnounceEvent::Completed,
                        _ => AnnounceEvent::None,
                    };
                    let left = if done[c] >= 5 { 0 } else { 5 };
                    let req = Request::Announce(announce_req(
                        ConnectionId(cid.0),
                        c as u32,
                        ih,
                        peer_id(c as u8),
                        30000 + c as u16,
                        left,
                        event,
                    ));
                    match u.try_request(&req) {
                        Some(Response::Announce { transaction_id, .. }) => {
                            assert_eq!(transaction_id, TransactionId(c as u32));
                            answered.fetch_add(1, SeqCst);
                            if event == AnnounceEvent::Completed {
                                completed.fetch_add(1, SeqCst);
                            }
                            done[c] += 1;
                        }
                        Some(other) => panic!("answered wrongly: {other:?}"),
                        None => {
                            timed_out.fetch_add(1, SeqCst);
                        }
                    }
                }
                round += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    std::thread::sleep(Duration::from_secs(2));
    for k in 0..3 {
        let (status, _) = nodes.remove(k).stop();
        assert!(status.success());
        let n = node(dir.path(), &db, &redis.url(), ids[k], "public");
        addrs.lock().unwrap()[k] = n.udp[0];
        nodes.insert(k, n);
        std::thread::sleep(Duration::from_secs(1));
    }
    stop.store(true, SeqCst);
    load.join().expect("no wrong answer");
    std::thread::sleep(Duration::from_secs(1));
    eprintln!(
        "{} answered, {} timed out while their node restarted, {} completed",
        answered.load(SeqCst),
        timed_out.load(SeqCst),
        completed.load(SeqCst)
    );
    let views: Vec<Vec<(String, bool)>> = nodes.iter().map(|n| peer_view(n, ih)).collect();
    assert_eq!(views[0].len(), 60, "every client on node 1");
    for v in &views[1..] {
        assert_eq!(v, &views[0], "views equal");
    }
    let seeders = views[0].iter().filter(|p| p.1).count() as u64;
    assert_eq!(
        seeders,
        completed.load(SeqCst),
        "each completion made a seeder"
    );
    wait_until("the counts flushed", Duration::from_secs(5), || {
        stores::contents(&db)
            .torrents
            .get(&ih)
            .copied()
            .unwrap_or(0)
            == completed.load(SeqCst)
    });
}

/// A bus that refuses the node's password: degraded past the catch-up timeout, the kind of
/// error named in `/health` and in the one log line.
#[test]
fn a_node_whose_redis_refuses_its_password_serves_degraded_and_says_so() {
    let redis = testkit::Redis::launch().unwrap();
    let db = database("postgres").unwrap();
    let dir = temp_dir();
    let url = redis
        .url()
        .replace("redis://", "redis://:not-the-password@");
    let n1 = spawn_node(
        dir.path(),
        &db,
        &url,
        "n1",
        "public",
        "catch_up_timeout_ms = 1000\n",
    );
    let problem = degraded_problem(&n1);
    assert!(problem.contains("(authentication)"), "{problem}");
    let start_log = n1.start_log.clone();
    let (_, log) = n1.stop();
    let reported = start_log
        .iter()
        .chain(&log)
        .filter(|l| l.contains("cannot reach the bus (authentication)"))
        .count();
    assert_eq!(reported, 1, "{start_log:#?} {log:#?}");
}
