//! The real binary over real sockets: HTTP announce and scrape, peers as endpoints, expiry,
//! restarts. The UDP tracker's own tests are in `udp.rs`.

mod common;

use std::collections::HashSet;
use std::net::TcpStream;
use std::time::Duration;

use common::*;
use protocol::AnnounceEvent;
use protocol::http::AnnounceRequest as HttpAnnounce;
use protocol::udp::{Response, ScrapeStats};

#[test]
fn http_announce_compact_dictionary_and_ipv6() {
    let dir = temp_dir();
    let shoal = Shoal::start(dir.path(), "");
    let (v4, v6) = (shoal.http[0], shoal.http[1]);
    let ih = hash(3);
    let first = http_announce(
        v4,
        "/announce",
        &http_request(ih, 1, 4001, 0, AnnounceEvent::Started, true),
    )
    .unwrap();
    let interval = first.get("interval").unwrap().as_int().unwrap();
    assert!(
        (120..=132).contains(&interval),
        "{interval} (announce.interval_jitter 0.1)"
    );
    assert_eq!(first.get("min interval").unwrap().as_int(), Some(60));
    assert_eq!(
        first.get("peers").unwrap().as_bytes().unwrap(),
        b"",
        "the asker is never listed"
    );
    http_announce(
        v6,
        "/announce",
        &http_request(ih, 2, 4002, 0, AnnounceEvent::Started, true),
    )
    .unwrap();

    let compact = http_announce(
        v4,
        "/announce",
        &http_request(ih, 3, 4003, 10, AnnounceEvent::Started, true),
    )
    .unwrap();
    assert_eq!(
        (
            compact.get("complete").unwrap().as_int(),
            compact.get("incomplete").unwrap().as_int()
        ),
        (Some(2), Some(1))
    );
    assert_eq!(
        compact.get("peers").unwrap().as_bytes().unwrap(),
        &[127, 0, 0, 1, 0x0f, 0xa1]
    );
    let mut v6peer = std::net::Ipv6Addr::LOCALHOST.octets().to_vec();
    v6peer.extend_from_slice(&4002u16.to_be_bytes());
    assert_eq!(
        compact.get("peers6").unwrap().as_bytes().unwrap(),
        v6peer.as_slice()
    );

    let dict = http_announce(
        v4,
        "/announce",
        &http_request(ih, 4, 4004, 10, AnnounceEvent::Started, false),
    )
    .unwrap();
    let peers = dict.get("peers").unwrap().as_list().unwrap();
    let mut seen = HashSet::new();
    for p in peers {
        assert_eq!(p.get("peer id").unwrap().as_bytes().unwrap().len(), 20);
        seen.insert(p.get("port").unwrap().as_int().unwrap());
    }
    assert_eq!(seen, HashSet::from([4001, 4002, 4003]));

    let q = HttpAnnounce {
        info_hash: ih,
        peer_id: peer_id(4),
        port: 4004,
        uploaded: 0,
        downloaded: 0,
        left: 10,
        event: AnnounceEvent::None,
        compact: false,
        no_peer_id: true,
        numwant: Some(1),
    };
    let (_, body) = http_get(v4, &format!("/announce?{}", q.to_query()));
    let peers = bdecode(&body)
        .get("peers")
        .unwrap()
        .as_list()
        .unwrap()
        .to_vec();
    assert_eq!(peers.len(), 1, "numwant honoured");
    assert!(peers[0].get("peer id").is_none(), "no_peer_id honoured");
}

/// docs/design.md, "Peers": a peer is its endpoint. A client that restarts announces from the same
/// IP and port with a new peer id: it replaces its old record and is never handed itself.
#[test]
fn a_restarted_client_is_one_peer_and_never_its_own_peer() {
    let dir = temp_dir();
    let shoal = Shoal::start(dir.path(), "");
    for (n, server) in shoal.udp.iter().enumerate() {
        let ih = hash(40 + n as u8);
        let mut c = UdpClient::new(*server);
        let cid = c.connect();
        c.announce(cid, ih, peer_id(3), 7003, 10, AnnounceEvent::Started);
        c.announce(cid, ih, peer_id(1), 7001, 10, AnnounceEvent::Started);
        match c.announce(cid, ih, peer_id(2), 7001, 10, AnnounceEvent::Started) {
            Response::Announce {
                seeders,
                leechers,
                peers,
                ..
            } => {
                assert_eq!((seeders, leechers), (0, 2), "udp {server}: counted once");
                let ports: Vec<u16> = peers.iter().map(|p| p.port()).collect();
                assert_eq!(
                    ports,
                    vec![7003],
                    "udp {server}: never the asker's endpoint"
                );
            }
            other => panic!("{other:?}"),
        }
    }
    for (n, server) in shoal.http.iter().enumerate() {
        for compact in [true, false] {
            let ih = hash(50 + 2 * n as u8 + compact as u8);
            http_announce(
                *server,
                "/announce",
                &http_request(ih, 3, 7003, 10, AnnounceEvent::Started, compact),
            )
            .unwrap();
            http_announce(
                *server,
                "/announce",
                &http_request(ih, 1, 7001, 10, AnnounceEvent::Started, compact),
            )
            .unwrap();
            let answer = http_announce(
                *server,
                "/announce",
                &http_request(ih, 2, 7001, 10, AnnounceEvent::Started, compact),
            )
            .unwrap();
            let what = format!("http {server}, compact={compact}");
            assert_eq!(
                answer.get("incomplete").unwrap().as_int(),
                Some(2),
                "{what}: counted once"
            );
            let key = if server.is_ipv6() && compact {
                "peers6"
            } else {
                "peers"
            };
            let ports: Vec<i64> = match answer.get(key).unwrap() {
                protocol::bencode::Value::Bytes(b) => b
                    .chunks(if server.is_ipv6() { 18 } else { 6 })
                    .map(|c| i64::from(u16::from_be_bytes([c[c.len() - 2], c[c.len() - 1]])))
                    .collect(),
                list => list
                    .as_list()
                    .unwrap()
                    .iter()
                    .map(|p| p.get("port").unwrap().as_int().unwrap())
                    .collect(),
            };
            assert_eq!(ports, vec![7003], "{what}: never the asker's endpoint");
        }
    }
}

#[test]
fn http_scrape_one_and_many_with_keep_alive() {
    let dir = temp_dir();
    let shoal = Shoal::start(dir.path(), "");
    let addr = shoal.http[0];
    http_announce(
        addr,
        "/announce",
        &http_request(hash(1), 1, 5001, 7, AnnounceEvent::Started, true),
    )
    .unwrap();
    http_announce(
        addr,
        "/announce",
        &http_request(hash(1), 1, 5001, 0, AnnounceEvent::Completed, true),
    )
    .unwrap();
    http_announce(
        addr,
        "/announce",
        &http_request(hash(2), 2, 5002, 7, AnnounceEvent::Started, true),
    )
    .unwrap();

    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let one = format!(
        "/scrape?info_hash={}",
        protocol::percent::encode(&hash(1).0)
    );
    let (status, body) = http_exchange(&mut stream, &one, false);
    assert_eq!(status, 200);
    let files = bdecode(&body);
    let f = files.get("files").unwrap();
    let Some(protocol::bencode::Value::Dict(map)) = Some(f) else {
        panic!()
    };
    let stats = &map[&hash(1).0.to_vec()];
    assert_eq!(
        (
            stats.get("complete").unwrap().as_int(),
            stats.get("downloaded").unwrap().as_int(),
            stats.get("incomplete").unwrap().as_int()
        ),
        (Some(1), Some(1), Some(0))
    );

    // Second request on the same connection: keep-alive works.
    let many = format!(
        "{one}&info_hash={}&info_hash={}",
        protocol::percent::encode(&hash(2).0),
        protocol::percent::encode(&hash(3).0)
    );
    let (status, body) = http_exchange(&mut stream, &many, false);
    assert_eq!(status, 200);
    let v = bdecode(&body);
    let protocol::bencode::Value::Dict(map) = v.get("files").unwrap() else {
        panic!()
    };
    assert_eq!(map.len(), 3);
    assert_eq!(
        map[&hash(2).0.to_vec()].get("incomplete").unwrap().as_int(),
        Some(1)
    );
    assert_eq!(
        map[&hash(3).0.to_vec()].get("complete").unwrap().as_int(),
        Some(0)
    );
}

#[test]
fn http_bad_requests_get_failure_reasons_and_are_counted() {
    let dir = temp_dir();
    let shoal = Shoal::start(dir.path(), "[announce]\nmax_numwant = 2\n");
    let addr = shoal.http[0];
    let good = HttpAnnounce {
        info_hash: hash(1),
        peer_id: peer_id(1),
        port: 6000,
        uploaded: 0,
        downloaded: 0,
        left: 1,
        event: AnnounceEvent::Started,
        compact: true,
        no_peer_id: false,
        numwant: None,
    }
    .to_query();
    let ih = format!("info_hash={}", protocol::percent::encode(&hash(1).0));
    let cases = [
        (
            good.replace(&ih, ""),
            "missing parameter 'info_hash'",
            "missing_param",
        ),
        (
            good.replace(&ih, "info_hash=%GG"),
            "malformed %-escape",
            "bad_escape",
        ),
        (
            good.replace(&ih, "info_hash=abc"),
            "must be 20 bytes, got 3",
            "wrong_length",
        ),
        (
            good.replace("port=6000", "port=0"),
            "'port' must be between 1 and 65535",
            "port_zero",
        ),
        (
            good.replace("left=1", "left=lots"),
            "'left' must be a whole number",
            "not_a_number",
        ),
    ];
    for (query, reason, _) in &cases {
        let (status, body) = http_get(addr, &format!("/announce?{query}"));
        assert_eq!(status, 200, "BEP 3 failures are 200 with a bencoded reason");
        let got = failure_reason(&body);
        assert!(got.contains(reason), "{got} should contain {reason}");
    }
    let (status, body) = http_get(addr, "/scrape");
    assert_eq!(status, 200);
    assert!(failure_reason(&body).contains("info_hash"));
    let (status, body) = http_get(addr, "/nothing-here");
    assert_eq!(status, 404);
    assert!(failure_reason(&body).contains("/announce"));

    for i in 2..7 {
        http_announce(
            addr,
            "/announce",
            &http_request(hash(1), i, 6000 + i as u16, 1, AnnounceEvent::Started, true),
        )
        .unwrap();
    }
    let (_, body) = http_get(
        addr,
        &format!(
            "/announce?{}",
            good.replace("peer_id=", "numwant=999999999999999999999&peer_id=")
        ),
    );
    assert_eq!(
        bdecode(&body)
            .get("peers")
            .unwrap()
            .as_bytes()
            .unwrap()
            .len(),
        2 * 6,
        "huge numwant capped"
    );

    for (_, _, kind) in &cases {
        // The bare /scrape above is a missing info_hash too.
        let expect = if *kind == "missing_param" { 2 } else { 1 };
        assert_eq!(
            shoal.metric(&format!(
                "shoal_errors_total{{protocol=\"http\",kind=\"{kind}\"}}"
            )),
            expect,
            "{kind}"
        );
    }
    assert_eq!(
        shoal.metric("shoal_errors_total{protocol=\"http\",kind=\"not_found\"}"),
        1
    );
}

#[test]
fn silent_peers_expire_and_counts_stay() {
    let dir = temp_dir();
    let shoal = Shoal::start(
        dir.path(),
        "[announce]\ninterval = 1\nmin_interval = 1\npeer_timeout = 2\n",
    );
    let udp = shoal.udp[0];
    let mut c = UdpClient::new(udp);
    let cid = c.connect();
    c.announce(cid, hash(5), peer_id(1), 7001, 5, AnnounceEvent::Started);
    c.announce(cid, hash(5), peer_id(1), 7001, 0, AnnounceEvent::Completed);
    c.announce(cid, hash(5), peer_id(2), 7002, 5, AnnounceEvent::Started);
    assert_eq!(
        udp_scrape(udp, hash(5)).unwrap(),
        ScrapeStats {
            seeders: 1,
            completed: 1,
            leechers: 1
        }
    );
    let waited = wait_until("peers to expire", Duration::from_secs(10), || {
        let s = udp_scrape(udp, hash(5)).unwrap();
        s.seeders + s.leechers == 0
    });
    assert!(
        waited >= Duration::from_secs(1),
        "peers expired before their timeout"
    );
    assert_eq!(
        udp_scrape(udp, hash(5)).unwrap(),
        ScrapeStats {
            seeders: 0,
            completed: 1,
            leechers: 0
        }
    );
    assert_eq!(
        shoal.metric("shoal_torrents"),
        0,
        "a torrent without peers leaves the swarm"
    );
    assert_eq!(shoal.metric("shoal_expired_peers_total"), 2);
}

#[test]
fn download_counts_survive_restarts() {
    let dir = temp_dir();
    let shoal = Shoal::start(dir.path(), "");
    let http = shoal.http[0];
    for i in 0..3 {
        http_announce(
            http,
            "/announce",
            &http_request(hash(8), i, 8000 + i as u16, 9, AnnounceEvent::Started, true),
        )
        .unwrap();
        http_announce(
            http,
            "/announce",
            &http_request(
                hash(8),
                i,
                8000 + i as u16,
                0,
                AnnounceEvent::Completed,
                true,
            ),
        )
        .unwrap();
    }
    // Graceful stop flushes.
    let (status, log) = shoal.stop();
    assert!(status.success(), "{log:?}");
    assert!(
        log.iter()
            .any(|l| l.contains("all download counts flushed")),
        "{log:?}"
    );

    let shoal = Shoal::start(dir.path(), "");
    assert_eq!(
        udp_scrape(shoal.udp[0], hash(8)).unwrap().completed,
        3,
        "right from the first request"
    );
    // The periodic flush persists without a shutdown too: wait for it, then SIGKILL.
    let http = shoal.http[0];
    http_announce(
        http,
        "/announce",
        &http_request(hash(8), 9, 8009, 9, AnnounceEvent::Started, true),
    )
    .unwrap();
    http_announce(
        http,
        "/announce",
        &http_request(hash(8), 9, 8009, 0, AnnounceEvent::Completed, true),
    )
    .unwrap();
    wait_until("a periodic flush", Duration::from_secs(10), || {
        shoal.metric("shoal_flushed_deltas_total") >= 1
    });
    shoal.kill();
    let shoal = Shoal::start(dir.path(), "");
    let (_, body) = http_get(
        shoal.http[0],
        &format!(
            "/scrape?info_hash={}",
            protocol::percent::encode(&hash(8).0)
        ),
    );
    let v = bdecode(&body);
    let protocol::bencode::Value::Dict(map) = v.get("files").unwrap() else {
        panic!()
    };
    assert_eq!(
        map[&hash(8).0.to_vec()].get("downloaded").unwrap().as_int(),
        Some(4)
    );
}
