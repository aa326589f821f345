//! The UDP tracker (BEP 15) over real sockets: announce and scrape on IPv4 and IPv6,
//! connection ids, malformed datagrams and their metrics.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use protocol::udp::{ConnectionId, Request, Response, ScrapeStats, TransactionId};
use protocol::{AnnounceEvent, InfoHash};

#[test]
fn udp_announce_and_scrape_over_ipv4_and_ipv6() {
    let dir = temp_dir();
    let shoal = Shoal::start(dir.path(), "");
    assert_eq!(shoal.udp.len(), 2);
    for server in shoal.udp.clone() {
        let ih = hash(if server.is_ipv6() { 6 } else { 4 });
        let mut a = UdpClient::new(server);
        let mut b = UdpClient::new(server);
        let (ca, cb) = (a.connect(), b.connect());

        match a.announce(ca, ih, peer_id(1), 1001, 0, AnnounceEvent::Started) {
            Response::Announce {
                interval,
                seeders,
                leechers,
                peers,
                ..
            } => {
                assert_eq!((seeders, leechers), (1, 0));
                // 120 s plus announce.interval_jitter's 10% at most.
                assert!((120..=132).contains(&interval), "{interval}");
                assert!(peers.is_empty(), "the asker is never listed");
            }
            other => panic!("{other:?}"),
        }
        match b.announce(cb, ih, peer_id(2), 1002, 500, AnnounceEvent::Started) {
            Response::Announce {
                seeders,
                leechers,
                peers,
                ..
            } => {
                assert_eq!((seeders, leechers), (1, 1));
                let loopback = if server.is_ipv6() {
                    "[::1]:1001"
                } else {
                    "127.0.0.1:1001"
                };
                assert_eq!(
                    peers,
                    vec![loopback.parse::<SocketAddr>().unwrap()],
                    "the socket's address with the announced port"
                );
            }
            other => panic!("{other:?}"),
        }
        // Many info-hashes in one scrape, known and unknown.
        let hashes: Vec<InfoHash> = std::iter::once(ih).chain((100..170).map(hash)).collect();
        match a.scrape(ca, &hashes) {
            Response::Scrape { stats, .. } => {
                assert_eq!(stats.len(), 71);
                assert_eq!(
                    stats[0],
                    ScrapeStats {
                        seeders: 1,
                        completed: 0,
                        leechers: 1
                    }
                );
                assert!(stats[1..].iter().all(|s| *s == ScrapeStats::default()));
            }
            other => panic!("{other:?}"),
        }
        // The leecher completes: one download, counted once.
        b.announce(cb, ih, peer_id(2), 1002, 0, AnnounceEvent::Completed);
        b.announce(cb, ih, peer_id(2), 1002, 0, AnnounceEvent::Completed);
        assert_eq!(
            udp_scrape(server, ih).unwrap(),
            ScrapeStats {
                seeders: 2,
                completed: 1,
                leechers: 0
            }
        );
        // Stopped removes the peer.
        b.announce(cb, ih, peer_id(2), 1002, 0, AnnounceEvent::Stopped);
        assert_eq!(
            udp_scrape(server, ih).unwrap(),
            ScrapeStats {
                seeders: 1,
                completed: 1,
                leechers: 0
            }
        );
    }
    assert!(shoal.metric("shoal_requests_total{protocol=\"udp\",action=\"announce\"}") >= 8);
}

#[test]
fn udp_bad_connection_ids_get_an_error_and_no_swarm_entry() {
    let dir = temp_dir();
    let shoal = Shoal::start(dir.path(), "");
    let server = shoal.udp[0];
    let mut c = UdpClient::new(server);
    let real = c.connect();
    // A forged id, and a real id used from another address (the IPv6 loopback).
    let mut other = UdpClient::new(shoal.udp[1]);
    for (client, cid) in [(&mut c, ConnectionId(0xdead_beef)), (&mut other, real)] {
        match client.announce(cid, hash(9), peer_id(1), 2000, 5, AnnounceEvent::Started) {
            Response::Error { message, .. } => assert!(
                message.starts_with(b"connection id"),
                "{}",
                message.escape_ascii()
            ),
            other => panic!("{other:?}"),
        }
        match client.scrape(cid, &[hash(9)]) {
            Response::Error { .. } => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(udp_scrape(server, hash(9)).unwrap(), ScrapeStats::default());
    assert_eq!(
        udp_scrape(shoal.udp[1], hash(9)).unwrap(),
        ScrapeStats::default()
    );
    assert_eq!(
        shoal.metric("shoal_errors_total{protocol=\"udp\",kind=\"bad_connection_id\"}"),
        4
    );
    // The same IP from a new source port keeps its id (NAT rebinding, shared client caches).
    let mut rebound = UdpClient::new(server);
    assert!(matches!(
        rebound.announce(real, hash(9), peer_id(1), 2000, 5, AnnounceEvent::Started),
        Response::Announce { leechers: 1, .. }
    ));
}

#[test]
fn udp_malformed_packets_are_answered_or_dropped_and_counted() {
    let dir = temp_dir();
    let shoal = Shoal::start(dir.path(), "[announce]\nmax_numwant = 3\n");
    let server = shoal.udp[0];
    let mut c = UdpClient::new(server);
    let cid = c.connect();
    let quiet = Duration::from_millis(300);

    c.send_raw(&[1, 2, 3]);
    assert_eq!(c.recv_raw(quiet), None, "too short to answer");
    c.send_raw(&vec![0u8; 1600]);
    assert_eq!(c.recv_raw(quiet), None, "oversized is dropped");

    let mut full = Vec::new();
    Request::Announce(announce_req(
        cid,
        77,
        hash(1),
        peer_id(1),
        3000,
        1,
        AnnounceEvent::None,
    ))
    .write(&mut full);
    for (packet, expect) in [
        (full[..60].to_vec(), "truncated announce"),
        (
            {
                let mut p = full[..16].to_vec();
                p[11] = 9;
                p
            },
            "unknown action 9",
        ),
        (
            {
                let mut p = full.clone();
                p[96] = 0;
                p[97] = 0;
                p
            },
            "port must not be 0",
        ),
        (
            {
                let mut p = full[..16].to_vec();
                p[11] = 2;
                p.extend_from_slice(&[0; 30]);
                p
            },
            "scrape needs whole",
        ),
    ] {
        c.send_raw(&packet);
        let resp = c.recv_raw(Duration::from_secs(3)).expect("an error answer");
        assert!(
            resp.len() <= packet.len(),
            "an error never outgrows its request"
        );
        match Response::parse(&resp, false).unwrap() {
            Response::Error {
                transaction_id,
                message,
            } => {
                assert_eq!(transaction_id, TransactionId(77));
                assert!(
                    message.starts_with(&expect.as_bytes()[..expect.len().min(message.len())]),
                    "{}",
                    message.escape_ascii()
                );
            }
            other => panic!("{other:?}"),
        }
    }
    // Huge numwant is capped; the server is still healthy.
    for i in 0..6 {
        c.announce(
            cid,
            hash(2),
            peer_id(i),
            3000 + i as u16,
            1,
            AnnounceEvent::Started,
        );
    }
    let mut req = announce_req(
        cid,
        5,
        hash(2),
        peer_id(50),
        3050,
        1,
        AnnounceEvent::Started,
    );
    req.numwant = i32::MAX;
    match c.request(&Request::Announce(req)) {
        Response::Announce {
            peers, leechers, ..
        } => {
            assert_eq!(peers.len(), 3);
            assert_eq!(leechers, 7);
        }
        other => panic!("{other:?}"),
    }
    for kind in [
        "too_short",
        "oversized",
        "truncated",
        "unknown_action",
        "port_zero",
        "scrape_length",
    ] {
        assert_eq!(
            shoal.metric(&format!(
                "shoal_errors_total{{protocol=\"udp\",kind=\"{kind}\"}}"
            )),
            1,
            "{kind}"
        );
    }
}
