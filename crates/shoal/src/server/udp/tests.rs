//! The UDP handler in process, without sockets: the codec around `Tracker`.

use super::*;
use crate::config::{AnnounceConfig, Mode};
use protocol::udp::{AnnounceRequest, ConnectionId, Response, TransactionId};
use protocol::{AnnounceEvent, InfoHash, PeerId};

const SRC: &str = "10.0.0.1:40000";

fn tracker(mode: Mode) -> Tracker {
    Tracker::new(AnnounceConfig::default(), mode, swarm::Limits::NONE)
}

/// The answer to `request` from `src`, as a client reads it.
fn answer(t: &Tracker, ids: &ConnectionIds, request: Request, src: &str) -> Response {
    let (mut out, mut peers) = (Vec::new(), Vec::new());
    let src: SocketAddr = src.parse().unwrap();
    let mut packet = Vec::new();
    request.write(&mut packet);
    handle(
        t,
        ids,
        Ok(request),
        (packet.len(), src),
        t.now(),
        &mut out,
        &mut peers,
    );
    Response::parse(&out, false).expect("an answer")
}

fn connect(t: &Tracker, ids: &ConnectionIds, src: &str) -> ConnectionId {
    match answer(
        t,
        ids,
        Request::Connect {
            transaction_id: TransactionId(1),
        },
        src,
    ) {
        Response::Connect { connection_id, .. } => connection_id,
        other => panic!("{other:?}"),
    }
}

fn announce(cid: ConnectionId, port: u16, url_data: &[u8]) -> Request {
    Request::Announce(AnnounceRequest {
        connection_id: cid,
        transaction_id: TransactionId(7),
        info_hash: InfoHash([3; 20]),
        peer_id: PeerId([port as u8; 20]),
        downloaded: 0,
        left: 5,
        uploaded: 0,
        event: AnnounceEvent::Started,
        ip: 0,
        key: 0,
        numwant: -1,
        port,
        url_data: url_data.to_vec(),
    })
}

#[test]
fn an_announce_with_a_valid_connection_id_joins_and_is_answered() {
    let (t, ids) = (tracker(Mode::Public), ConnectionIds::default());
    let cid = connect(&t, &ids, SRC);
    answer(&t, &ids, announce(cid, 6881, b""), SRC);
    let other = "10.0.0.2:40000";
    let cid2 = connect(&t, &ids, other);
    match answer(&t, &ids, announce(cid2, 6882, b""), other) {
        Response::Announce {
            transaction_id,
            leechers,
            peers,
            interval,
            ..
        } => {
            assert_eq!(transaction_id, TransactionId(7));
            assert_eq!(leechers, 2);
            let base = AnnounceConfig::default().interval.get();
            assert!((base..=base + base / 10).contains(&interval), "{interval}");
            assert_eq!(peers, vec!["10.0.0.1:6881".parse().unwrap()]);
        }
        other => panic!("{other:?}"),
    }
    let text = t.metrics_text();
    assert!(text.contains("shoal_requests_total{protocol=\"udp\",action=\"announce\"} 2"));
    assert!(text.contains("shoal_requests_total{protocol=\"udp\",action=\"connect\"} 2"));
}

#[test]
fn a_connection_id_from_another_address_is_refused_and_counted() {
    let (t, ids) = (tracker(Mode::Public), ConnectionIds::default());
    let cid = connect(&t, &ids, SRC);
    match answer(&t, &ids, announce(cid, 6881, b""), "10.0.0.9:40000") {
        Response::Error { message, .. } => {
            assert!(String::from_utf8_lossy(&message).contains("connection id"));
        }
        other => panic!("{other:?}"),
    }
    let text = t.metrics_text();
    assert!(text.contains("kind=\"bad_connection_id\"} 1"), "{text}");
}

#[test]
fn a_private_tracker_refuses_an_announce_without_a_key_and_a_udp_scrape() {
    let (t, ids) = (tracker(Mode::Private), ConnectionIds::default());
    let cid = connect(&t, &ids, SRC);
    match answer(&t, &ids, announce(cid, 6881, b"/announce"), SRC) {
        Response::Error { message, .. } => {
            assert!(String::from_utf8_lossy(&message).starts_with("private tracker"));
        }
        other => panic!("{other:?}"),
    }
    let scrape = Request::Scrape(protocol::udp::ScrapeRequest {
        connection_id: cid,
        transaction_id: TransactionId(8),
        info_hashes: vec![InfoHash([3; 20])],
    });
    assert!(matches!(
        answer(&t, &ids, scrape, SRC),
        Response::Error { .. }
    ));
    let text = t.metrics_text();
    assert!(text.contains("kind=\"missing_key\"} 1"), "{text}");
    assert!(text.contains("kind=\"scrape_needs_key\"} 1"), "{text}");
}

#[test]
fn a_malformed_datagram_is_counted_and_answered_no_longer_than_it() {
    let (t, ids) = (tracker(Mode::Public), ConnectionIds::default());
    // A connect with a wrong protocol id: 16 bytes, transaction id readable.
    let mut packet = vec![0u8; 16];
    packet[12..16].copy_from_slice(&9u32.to_be_bytes());
    let (mut out, mut peers) = (Vec::new(), Vec::new());
    let parsed = Request::parse(&packet);
    assert!(parsed.is_err());
    let src = SRC.parse().unwrap();
    handle(
        &t,
        &ids,
        parsed,
        (packet.len(), src),
        t.now(),
        &mut out,
        &mut peers,
    );
    assert!(!out.is_empty() && out.len() <= packet.len());
    let text = t.metrics_text();
    assert!(text.contains("kind=\"bad_protocol_id\"} 1"), "{text}");
}
