use super::*;
use crate::bencode::{Value, decode};
use crate::types::{AnnounceEvent, InfoHash, PeerId};
use proptest::prelude::*;
use std::net::IpAddr;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};

fn request() -> AnnounceRequest {
    AnnounceRequest {
        info_hash: InfoHash([0xAB; 20]),
        peer_id: PeerId(*b"-qB4650-abcdefghijkl"),
        port: 6881,
        uploaded: 1,
        downloaded: 2,
        left: 3,
        event: AnnounceEvent::Started,
        compact: true,
        no_peer_id: false,
        numwant: Some(50),
    }
}

fn event_strategy() -> impl Strategy<Value = AnnounceEvent> {
    prop_oneof![
        Just(AnnounceEvent::None),
        Just(AnnounceEvent::Started),
        Just(AnnounceEvent::Completed),
        Just(AnnounceEvent::Stopped),
    ]
}

proptest! {
    #[test]
    fn announce_round_trip(
        ih in any::<[u8; 20]>(), pid in any::<[u8; 20]>(), port in 1u16..,
        up in any::<u64>(), down in any::<u64>(), left in any::<u64>(),
        event in event_strategy(), compact in any::<bool>(), no_peer_id in any::<bool>(),
        numwant in proptest::option::of(any::<u32>()),
    ) {
        let req = AnnounceRequest {
            info_hash: InfoHash(ih), peer_id: PeerId(pid), port, uploaded: up, downloaded: down,
            left, event, compact, no_peer_id, numwant,
        };
        prop_assert_eq!(AnnounceRequest::parse(req.to_query().as_bytes()).unwrap(), req);
    }

    #[test]
    fn parsers_never_panic(q in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = AnnounceRequest::parse(&q);
        let _ = ScrapeRequest::parse(&q);
    }

    #[test]
    fn compact_response_decodes(n4 in 0usize..30, n6 in 0usize..30, complete in any::<u32>()) {
        let mut peers = Vec::new();
        for i in 0..n4 {
            peers.push(ResponsePeer { peer_id: PeerId([i as u8; 20]), addr: SocketAddr::from((Ipv4Addr::new(10, 0, 0, i as u8), 1000 + i as u16)) });
        }
        for i in 0..n6 {
            peers.push(ResponsePeer { peer_id: PeerId([i as u8; 20]), addr: SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, i as u16), 2000, 0, 0)) });
        }
        let resp = AnnounceResponse { interval: 120, min_interval: 60, complete, incomplete: 7, peers: &peers };
        let mut out = Vec::new();
        resp.write(true, false, &mut out);
        let v = decode(&out).unwrap();
        prop_assert_eq!(v.get("complete").unwrap().as_int(), Some(complete as i64));
        prop_assert_eq!(v.get("peers").unwrap().as_bytes().unwrap().len(), n4 * 6);
        prop_assert_eq!(v.get("peers6").map(|p| p.as_bytes().unwrap().len()).unwrap_or(0), n6 * 18);
        let mut out = Vec::new();
        resp.write(false, true, &mut out);
        let v = decode(&out).unwrap();
        let list = v.get("peers").unwrap().as_list().unwrap();
        prop_assert_eq!(list.len(), n4 + n6);
        for (entry, p) in list.iter().zip(&peers) {
            prop_assert!(entry.get("peer id").is_none());
            let ip: IpAddr = std::str::from_utf8(entry.get("ip").unwrap().as_bytes().unwrap()).unwrap().parse().unwrap();
            prop_assert_eq!(SocketAddr::new(ip, entry.get("port").unwrap().as_int().unwrap() as u16), p.addr);
        }
    }
}

#[test]
fn compact_peers_are_network_order() {
    let peers = [ResponsePeer {
        peer_id: PeerId([1; 20]),
        addr: "1.2.3.4:6881".parse().unwrap(),
    }];
    let resp = AnnounceResponse {
        interval: 1,
        min_interval: 1,
        complete: 0,
        incomplete: 1,
        peers: &peers,
    };
    let mut out = Vec::new();
    resp.write(true, false, &mut out);
    let v = decode(&out).unwrap();
    assert_eq!(
        v.get("peers").unwrap().as_bytes().unwrap(),
        &[1, 2, 3, 4, 0x1a, 0xe1]
    );
    assert!(v.get("peers6").is_none());
}

#[test]
fn dictionary_form_carries_peer_id_unless_told() {
    let peers = [ResponsePeer {
        peer_id: PeerId(*b"-TR3000-000000000000"),
        addr: "[::1]:51413".parse().unwrap(),
    }];
    let resp = AnnounceResponse {
        interval: 1,
        min_interval: 1,
        complete: 1,
        incomplete: 0,
        peers: &peers,
    };
    let mut out = Vec::new();
    resp.write(false, false, &mut out);
    let v = decode(&out).unwrap();
    let p = &v.get("peers").unwrap().as_list().unwrap()[0];
    assert_eq!(
        p.get("peer id").unwrap().as_bytes().unwrap(),
        b"-TR3000-000000000000"
    );
    assert_eq!(p.get("ip").unwrap().as_bytes().unwrap(), b"::1");
}

#[test]
fn each_malformed_class_is_named() {
    let ok = request().to_query();
    let without = |p: &str| {
        ok.split('&')
            .filter(|kv| !kv.starts_with(&format!("{p}=")))
            .collect::<Vec<_>>()
            .join("&")
    };
    for p in ["info_hash", "peer_id", "port", "left"] {
        let err = AnnounceRequest::parse(without(p).as_bytes()).unwrap_err();
        assert_eq!(
            err,
            RequestError::Missing(match p {
                "info_hash" => "info_hash",
                "peer_id" => "peer_id",
                "port" => "port",
                _ => "left",
            })
        );
        assert!(err.to_string().contains(p));
    }
    let bad = |q: String| AnnounceRequest::parse(q.as_bytes()).unwrap_err();
    assert_eq!(
        bad(ok.replacen("info_hash=", "info_hash=%zz", 1)),
        RequestError::BadEscape("info_hash")
    );
    assert_eq!(
        bad(ok.replacen("info_hash=", "info_hash=x", 1)),
        RequestError::WrongLength {
            param: "info_hash",
            len: 21
        }
    );
    assert_eq!(
        bad(format!("{}&info_hash=abc", without("info_hash"))),
        RequestError::WrongLength {
            param: "info_hash",
            len: 3
        }
    );
    assert_eq!(
        bad(ok.replace("port=6881", "port=0")),
        RequestError::PortZero
    );
    assert_eq!(
        bad(ok.replace("port=6881", "port=70000")),
        RequestError::NotANumber("port")
    );
    assert_eq!(
        bad(ok.replace("left=3", "left=-3")),
        RequestError::NotANumber("left")
    );
    assert_eq!(
        bad(ok.replace("event=started", "event=exploded")),
        RequestError::UnknownEvent("exploded".into())
    );
    assert_eq!(
        bad(ok.replace("numwant=50", "numwant=lots")),
        RequestError::NotANumber("numwant")
    );
}

#[test]
fn numwant_extremes() {
    let q = |n: &str| {
        AnnounceRequest::parse(
            request()
                .to_query()
                .replace("numwant=50", &format!("numwant={n}"))
                .as_bytes(),
        )
        .unwrap()
        .numwant
    };
    assert_eq!(q("-1"), None);
    assert_eq!(q("99999999999"), Some(u32::MAX));
    assert_eq!(q("999999999999999999999999999999"), Some(u32::MAX));
    assert_eq!(q("0"), Some(0));
}

#[test]
fn scrape_many_and_too_many() {
    let q: String = (0..3u8)
        .map(|i| format!("info_hash={}&", percent::encode(&[i; 20])))
        .collect();
    let req = ScrapeRequest::parse(q.as_bytes()).unwrap();
    assert_eq!(
        req.info_hashes,
        vec![InfoHash([0; 20]), InfoHash([1; 20]), InfoHash([2; 20])]
    );
    let q: String = (0..MAX_SCRAPE_HASHES + 5)
        .map(|_| format!("info_hash={}&", percent::encode(&[7; 20])))
        .collect();
    assert_eq!(
        ScrapeRequest::parse(q.as_bytes()),
        Err(RequestError::TooManyInfoHashes(MAX_SCRAPE_HASHES + 5))
    );
    assert_eq!(
        ScrapeRequest::parse(b""),
        Err(RequestError::Missing("info_hash"))
    );
}

#[test]
fn scrape_response_is_sorted_and_deduplicated() {
    let c = SwarmCounts {
        complete: 1,
        incomplete: 2,
        downloaded: 1 << 40,
    };
    let mut files = vec![
        (InfoHash([9; 20]), c),
        (InfoHash([1; 20]), c),
        (InfoHash([9; 20]), c),
    ];
    let mut out = Vec::new();
    write_scrape(&mut files, &mut out);
    let v = decode(&out).unwrap();
    let Value::Dict(files) = v.get("files").unwrap() else {
        panic!()
    };
    assert_eq!(files.len(), 2);
    assert_eq!(
        files[&vec![9u8; 20]].get("downloaded").unwrap().as_int(),
        Some(1 << 40)
    );
}

#[test]
fn failure_is_a_bencoded_dictionary() {
    let mut out = Vec::new();
    write_failure("missing parameter 'port'", &mut out);
    assert_eq!(
        decode(&out)
            .unwrap()
            .get("failure reason")
            .unwrap()
            .as_bytes()
            .unwrap(),
        b"missing parameter 'port'"
    );
}
