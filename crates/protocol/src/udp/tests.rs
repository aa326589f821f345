use super::request::parse_options;
use super::*;
use crate::types::{AnnounceEvent, InfoHash, PeerId, ResponsePeer};
use proptest::prelude::*;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

fn event() -> impl Strategy<Value = AnnounceEvent> {
    prop_oneof![
        Just(AnnounceEvent::None),
        Just(AnnounceEvent::Started),
        Just(AnnounceEvent::Completed),
        Just(AnnounceEvent::Stopped),
    ]
}

prop_compose! {
    fn announce()(
        connection_id in any::<u64>(), transaction_id in any::<u32>(), ih in any::<[u8; 20]>(),
        pid in any::<[u8; 20]>(), downloaded in any::<u64>(), left in any::<u64>(),
        uploaded in any::<u64>(), event in event(), ip in any::<u32>(), key in any::<u32>(),
        numwant in any::<i32>(), port in 1u16.., url_data in proptest::collection::vec(any::<u8>(), 0..600),
    ) -> AnnounceRequest {
        AnnounceRequest { connection_id: ConnectionId(connection_id), transaction_id: TransactionId(transaction_id), info_hash: InfoHash(ih), peer_id: PeerId(pid),
            downloaded, left, uploaded, event, ip, key, numwant, port, url_data }
    }
}

proptest! {
    #[test]
    fn announce_round_trip(a in announce()) {
        let req = Request::Announce(a);
        let mut out = Vec::new();
        req.write(&mut out);
        prop_assert_eq!(Request::parse(&out).unwrap(), req);
    }

    #[test]
    fn scrape_round_trip(cid in any::<u64>(), tid in any::<u32>(), hashes in proptest::collection::vec(any::<[u8; 20]>(), 1..=MAX_SCRAPE_HASHES)) {
        let req = Request::Scrape(ScrapeRequest { connection_id: ConnectionId(cid), transaction_id: TransactionId(tid), info_hashes: hashes.into_iter().map(InfoHash).collect() });
        let mut out = Vec::new();
        req.write(&mut out);
        prop_assert!(out.len() <= MAX_REQUEST_LEN);
        prop_assert_eq!(Request::parse(&out).unwrap(), req);
    }

    #[test]
    fn connect_round_trip(tid in any::<u32>(), cid in any::<u64>()) {
        let mut out = Vec::new();
        let (tid, cid) = (TransactionId(tid), ConnectionId(cid));
        Request::Connect { transaction_id: tid }.write(&mut out);
        prop_assert_eq!(Request::parse(&out).unwrap(), Request::Connect { transaction_id: tid });
        let mut out = Vec::new();
        ConnectResponse { transaction_id: tid, connection_id: cid }.write(&mut out);
        prop_assert_eq!(Response::parse(&out, false).unwrap(), Response::Connect { transaction_id: tid, connection_id: cid });
    }

    #[test]
    fn announce_response_round_trip(tid in any::<u32>(), seeders in any::<u32>(), v6 in any::<bool>(), ports in proptest::collection::vec(1u16.., 0..50)) {
        let peers: Vec<SocketAddr> = ports.iter().map(|&p| if v6 {
            SocketAddr::new(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, p).into(), p)
        } else {
            SocketAddr::new(Ipv4Addr::from(p as u32).into(), p)
        }).collect();
        let listed: Vec<ResponsePeer> = peers.iter().map(|&addr| ResponsePeer { peer_id: PeerId([1; 20]), addr }).collect();
        let tid = TransactionId(tid);
        let mut out = Vec::new();
        AnnounceResponse { transaction_id: tid, interval: 120, leechers: 3, seeders, peers: &listed }.write(&mut out);
        prop_assert_eq!(Response::parse(&out, v6).unwrap(), Response::Announce { transaction_id: tid, interval: 120, leechers: 3, seeders, peers });
    }

    #[test]
    fn arbitrary_packets_never_panic(b in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = Request::parse(&b);
        let _ = Response::parse(&b, false);
        let _ = Response::parse(&b, true);
    }

    #[test]
    fn every_truncated_announce_is_answerable(a in announce(), cut in 16usize..98) {
        let mut out = Vec::new();
        Request::Announce(a.clone()).write(&mut out);
        let err = Request::parse(&out[..cut]).unwrap_err();
        prop_assert_eq!(err, ParseError::Truncated { transaction_id: a.transaction_id, action: Action::Announce });
    }

    #[test]
    fn errors_never_exceed_the_request(len in 0usize..200, msg in ".{0,300}") {
        let mut out = Vec::new();
        ErrorResponse { transaction_id: TransactionId(7), message: &msg }.write(len.max(8), &mut out);
        prop_assert!(out.len() <= len.max(8));
    }
}

fn header(cid: u64, action: u32, tid: u32) -> Vec<u8> {
    let mut b = cid.to_be_bytes().to_vec();
    b.extend_from_slice(&action.to_be_bytes());
    b.extend_from_slice(&tid.to_be_bytes());
    b
}

const TID: TransactionId = TransactionId(9);

#[test]
fn each_malformed_class() {
    assert_eq!(Request::parse(&[0; 15]), Err(ParseError::TooShort(15)));
    assert_eq!(
        Request::parse(&header(1, 0, 9)),
        Err(ParseError::BadProtocolId {
            transaction_id: TID
        })
    );
    assert_eq!(
        Request::parse(&header(1, 7, 9)),
        Err(ParseError::UnknownAction {
            transaction_id: TID,
            action: 7
        })
    );
    assert_eq!(
        Request::parse(&header(1, 2, 9)),
        Err(ParseError::ScrapeLength {
            transaction_id: TID
        })
    );
    let mut s = header(1, 2, 9);
    s.extend_from_slice(&[0; 21]);
    assert_eq!(
        Request::parse(&s),
        Err(ParseError::ScrapeLength {
            transaction_id: TID
        })
    );
    // One hash more than fits is a datagram over the largest request: dropped unanswered.
    let mut s = header(1, 2, 9);
    s.extend_from_slice(&[0; 20 * MAX_SCRAPE_HASHES]);
    assert!(Request::parse(&s).is_ok());
    s.extend_from_slice(&[0; 20]);
    assert_eq!(Request::parse(&s), Err(ParseError::TooLong(16 + 20 * 75)));
    assert_eq!(Request::parse(&s).unwrap_err().transaction_id(), None);

    let mut a = header(1, 1, 9);
    a.resize(98, 0);
    a[96..98].copy_from_slice(&6881u16.to_be_bytes());
    assert!(Request::parse(&a).is_ok());
    let mut bad_event = a.clone();
    bad_event[80..84].copy_from_slice(&4u32.to_be_bytes());
    assert_eq!(
        Request::parse(&bad_event),
        Err(ParseError::UnknownEvent {
            transaction_id: TID
        })
    );
    let mut port0 = a.clone();
    port0[96..98].copy_from_slice(&[0, 0]);
    assert_eq!(
        Request::parse(&port0),
        Err(ParseError::PortZero {
            transaction_id: TID
        })
    );
    let mut bad_opt = a.clone();
    bad_opt.extend_from_slice(&[2, 10, b'/']);
    assert_eq!(
        Request::parse(&bad_opt),
        Err(ParseError::BadOptions {
            transaction_id: TID
        })
    );
}

#[test]
fn bep41_options() {
    assert_eq!(parse_options(&[]), Some(vec![]));
    assert_eq!(
        parse_options(&[
            1, 1, 2, 3, b'/', b'a', b'n', 2, 2, b'/', b'k', 0, 2, 1, b'x'
        ]),
        Some(b"/an/k".to_vec())
    );
    assert_eq!(parse_options(&[2]), None);
    let a = AnnounceRequest {
        connection_id: ConnectionId(0),
        transaction_id: TransactionId(0),
        info_hash: InfoHash::default(),
        peer_id: PeerId::default(),
        downloaded: 0,
        left: 0,
        uploaded: 0,
        event: AnnounceEvent::None,
        ip: 0,
        key: 0,
        numwant: -1,
        port: 1,
        url_data: b"/announce/ABCDEFGHIJKLMNOPQRSTUVWXYZ012345?x=1".to_vec(),
    };
    assert_eq!(a.url_last_segment(), b"ABCDEFGHIJKLMNOPQRSTUVWXYZ012345");
}
