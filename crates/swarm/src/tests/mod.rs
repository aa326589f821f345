//! The swarm's promises, one test each; the model and limits suites are beside this file.

use super::*;
use crate::family::{Family, Peer};
use proptest::prelude::*;
use std::collections::{HashMap, HashSet};

const IH: InfoHash = InfoHash([1; 20]);

fn peer(n: u8, addr: &str, left: u64, event: AnnounceEvent) -> Announce {
    Announce {
        info_hash: IH,
        peer_id: PeerId([n; 20]),
        addr: addr.parse().unwrap(),
        left,
        event,
        numwant: 50,
        families: Families::Both,
    }
}

fn announce(s: &Swarm, a: Announce) -> (TorrentStats, Vec<ResponsePeer>) {
    let mut out = Vec::new();
    let st = s.announce(&a, 0, &mut out).unwrap();
    (st, out)
}

#[test]
fn clients_behind_one_ip_stay_apart() {
    let s = Swarm::default();
    announce(&s, peer(1, "10.0.0.1:6881", 10, AnnounceEvent::Started));
    let (st, peers) = announce(&s, peer(1, "10.0.0.1:6882", 10, AnnounceEvent::Started));
    assert_eq!(st.leechers, 2);
    assert_eq!(
        peers,
        vec![ResponsePeer {
            peer_id: PeerId([1; 20]),
            addr: "10.0.0.1:6881".parse().unwrap()
        }]
    );
}

#[test]
fn a_restarted_client_replaces_its_endpoint_and_is_never_its_own_peer() {
    let s = Swarm::default();
    announce(&s, peer(1, "10.0.0.1:7001", 10, AnnounceEvent::Started));
    announce(&s, peer(3, "10.0.0.3:7003", 10, AnnounceEvent::Started));
    // The same endpoint with a new peer id: a client after a restart.
    let (st, peers) = announce(&s, peer(2, "10.0.0.1:7001", 10, AnnounceEvent::Started));
    assert_eq!((st.seeders, st.leechers), (0, 2), "counted once");
    let addrs: Vec<SocketAddr> = peers.iter().map(|p| p.addr).collect();
    assert_eq!(addrs, vec!["10.0.0.3:7003".parse().unwrap()]);
    let (_, peers) = announce(&s, peer(3, "10.0.0.3:7003", 10, AnnounceEvent::None));
    assert_eq!(
        peers,
        vec![ResponsePeer {
            peer_id: PeerId([2; 20]),
            addr: "10.0.0.1:7001".parse().unwrap()
        }],
        "others see the endpoint's latest peer id"
    );
    let (st, _) = announce(&s, peer(1, "10.0.0.1:7001", 10, AnnounceEvent::Stopped));
    assert_eq!(
        (st.seeders, st.leechers),
        (0, 1),
        "the endpoint's stopped removes it"
    );
}

/// Every torrent has an IPv4 family inline: a byte more each is a megabyte per million.
#[test]
fn records_keep_their_size() {
    assert_eq!(size_of::<Peer<[u8; 4]>>(), 32);
    assert_eq!(size_of::<Family<[u8; 4]>>(), 56);
    assert_eq!(size_of::<(InfoHash, Torrent)>(), 96);
}

#[test]
fn stopped_from_another_address_evicts_nobody() {
    let s = Swarm::default();
    announce(&s, peer(1, "10.0.0.1:6881", 0, AnnounceEvent::Started));
    let (st, _) = announce(&s, peer(1, "10.0.0.2:6881", 0, AnnounceEvent::Stopped));
    assert_eq!(st.seeders, 1);
    let (st, _) = announce(&s, peer(1, "10.0.0.1:6881", 0, AnnounceEvent::Stopped));
    assert_eq!(st.seeders, 0);
    assert_eq!(
        s.stats().torrents,
        0,
        "a torrent without peers leaves the swarm"
    );
}

#[test]
fn left_zero_is_a_seeder_and_moves_between_sets() {
    let s = Swarm::default();
    let (st, _) = announce(&s, peer(1, "10.0.0.1:1", 5, AnnounceEvent::Started));
    assert_eq!((st.seeders, st.leechers), (0, 1));
    let (st, _) = announce(&s, peer(1, "10.0.0.1:1", 0, AnnounceEvent::None));
    assert_eq!((st.seeders, st.leechers), (1, 0));
    let (st, _) = announce(&s, peer(1, "10.0.0.1:1", 3, AnnounceEvent::None));
    assert_eq!((st.seeders, st.leechers), (0, 1));
    assert_eq!(
        st.downloaded, 0,
        "becoming a seeder without `completed` is not a download"
    );
    let stats = s.stats();
    assert_eq!((stats.seeders, stats.leechers), (0, 1));
}

#[test]
fn completed_counts_once_and_only_from_a_known_leecher() {
    let s = Swarm::default();
    let (st, _) = announce(&s, peer(9, "10.0.0.9:1", 0, AnnounceEvent::Completed));
    assert_eq!(
        st.downloaded, 0,
        "an unknown peer's completed is not a download"
    );
    announce(&s, peer(1, "10.0.0.1:1", 5, AnnounceEvent::Started));
    let (st, _) = announce(&s, peer(1, "10.0.0.1:1", 0, AnnounceEvent::Completed));
    assert_eq!(st.downloaded, 1);
    let (st, _) = announce(&s, peer(1, "10.0.0.1:1", 0, AnnounceEvent::Completed));
    assert_eq!(st.downloaded, 1, "a repeated completed counts nothing");
    assert_eq!(s.take_pending(), vec![(IH, 1)]);
    assert_eq!(
        s.take_pending(),
        vec![],
        "pending deltas are handed out once"
    );
    assert_eq!(s.scrape(&IH).downloaded, 1, "the count itself stays");
}

#[test]
fn answers_never_list_the_asker_and_seeders_get_only_leechers() {
    let s = Swarm::default();
    for i in 0..5 {
        announce(
            &s,
            peer(i, &format!("10.0.0.{i}:1"), 0, AnnounceEvent::Started),
        );
    }
    for i in 5..10 {
        announce(
            &s,
            peer(i, &format!("10.0.0.{i}:1"), 9, AnnounceEvent::Started),
        );
    }
    let (_, got) = announce(&s, peer(0, "10.0.0.0:1", 0, AnnounceEvent::None));
    assert_eq!(got.len(), 5);
    assert!(
        got.iter().all(|p| p.peer_id.0[0] >= 5),
        "a seeder is given leechers only: {got:?}"
    );
    let (_, got) = announce(&s, peer(7, "10.0.0.7:1", 9, AnnounceEvent::None));
    assert_eq!(got.len(), 9);
    assert!(got.iter().all(|p| p.peer_id.0[0] != 7));
}

#[test]
fn numwant_caps_and_selection_rotates() {
    let s = Swarm::default();
    for i in 0..60u8 {
        announce(
            &s,
            peer(i, &format!("10.0.1.{i}:1"), 9, AnnounceEvent::Started),
        );
    }
    let mut seen = HashSet::new();
    for _ in 0..40 {
        let mut a = peer(200, "10.9.9.9:1", 9, AnnounceEvent::None);
        a.numwant = 5;
        let (_, got) = announce(&s, a);
        assert_eq!(got.len(), 5);
        seen.extend(got.iter().map(|p| p.peer_id));
    }
    assert!(
        seen.len() > 30,
        "40 announces of 5 reached only {} of 60 peers",
        seen.len()
    );
}

#[test]
fn families_follow_the_request() {
    let s = Swarm::default();
    announce(&s, peer(1, "10.0.0.1:1", 0, AnnounceEvent::Started));
    announce(&s, peer(2, "[2001:db8::2]:1", 0, AnnounceEvent::Started));
    let mut a = peer(3, "10.0.0.3:1", 9, AnnounceEvent::Started);
    a.families = Families::Same;
    let (st, got) = announce(&s, a);
    assert_eq!(st.seeders, 2, "counts cover both families");
    assert_eq!(got.len(), 1);
    assert!(got[0].addr.is_ipv4());
    let mut a = peer(4, "[2001:db8::4]:1", 9, AnnounceEvent::Started);
    a.families = Families::Both;
    let (_, got) = announce(&s, a);
    assert_eq!(got.len(), 3);
    assert!(got[0].addr.is_ipv6(), "own family first");
}

#[test]
fn expiry_removes_silent_peers_but_keeps_counts() {
    let s = Swarm::default();
    announce(&s, peer(1, "10.0.0.1:1", 5, AnnounceEvent::Started));
    announce(&s, peer(1, "10.0.0.1:1", 0, AnnounceEvent::Completed));
    let mut out = Vec::new();
    s.announce(
        &peer(2, "10.0.0.2:1", 5, AnnounceEvent::Started),
        100,
        &mut out,
    )
    .unwrap();
    let other = InfoHash([2; 20]);
    s.announce(
        &Announce {
            info_hash: other,
            ..peer(3, "10.0.0.3:1", 5, AnnounceEvent::Started)
        },
        10,
        &mut out,
    )
    .unwrap();
    assert_eq!(
        s.remove_expired(50),
        Expired {
            peers: 2,
            torrents: 1
        }
    );
    let st = s.scrape(&IH);
    assert_eq!((st.seeders, st.leechers, st.downloaded), (0, 1, 1));
    assert_eq!(s.scrape(&other), TorrentStats::default());
    let stats = s.stats();
    assert_eq!(
        (
            stats.torrents,
            stats.counted_torrents,
            stats.seeders,
            stats.leechers
        ),
        (1, 1, 0, 1)
    );
}

#[test]
fn loaded_counts_answer_scrapes() {
    let s = Swarm::new(4);
    s.load_downloads([(IH, 1u64 << 40), (InfoHash([2; 20]), 0)]);
    assert_eq!(s.scrape(&IH).downloaded, 1 << 40);
    assert_eq!(s.stats().counted_torrents, 1, "zero counts take no memory");
    announce(&s, peer(1, "10.0.0.1:1", 5, AnnounceEvent::Started));
    let (st, _) = announce(&s, peer(1, "10.0.0.1:1", 0, AnnounceEvent::Completed));
    assert_eq!(st.downloaded, (1 << 40) + 1);
    assert_eq!(
        s.take_pending(),
        vec![(IH, 1)],
        "only the increment is pending, not the total"
    );
}

mod cluster;
mod limits;
mod model;

/// WebRTC reaches only WebRTC: WebSocket peers (endpoints in `100::/64`) are answered with
/// each other alone, UDP and HTTP peers never see them, and one scrape counts every kind.
#[test]
fn websocket_peers_are_their_own_family_and_counted_with_the_rest() {
    let s = Swarm::default();
    let ws = |conn: u32| {
        protocol::ws::Endpoint {
            node: 7,
            conn,
            slot: 1,
        }
        .addr()
        .to_string()
    };
    announce(&s, peer(1, "10.0.0.1:6881", 0, AnnounceEvent::Started));
    announce(
        &s,
        peer(2, "[2001:db8::2]:6881", 10, AnnounceEvent::Started),
    );
    let (st, peers) = announce(&s, peer(3, &ws(1), 0, AnnounceEvent::Started));
    assert!(peers.is_empty(), "no WebSocket peer yet: {peers:?}");
    assert_eq!((st.seeders, st.leechers), (2, 1));
    let (_, peers) = announce(&s, peer(4, &ws(2), 10, AnnounceEvent::Started));
    assert_eq!(peers.len(), 1);
    assert_eq!(
        protocol::ws::Endpoint::of(&peers[0].addr).map(|e| e.conn),
        Some(1)
    );
    for who in ["10.0.0.9:1", "[2001:db8::9]:1"] {
        let (st, peers) = announce(&s, peer(9, who, 10, AnnounceEvent::Started));
        assert!(
            peers
                .iter()
                .all(|p| protocol::ws::Endpoint::of(&p.addr).is_none()),
            "{who} got {peers:?}"
        );
        assert_eq!(st.seeders, 2, "both seeders counted, whatever their kind");
    }
    assert_eq!(s.scrape(&IH).seeders + s.scrape(&IH).leechers, 6);
    announce(&s, peer(3, &ws(1), 0, AnnounceEvent::Stopped));
    announce(&s, peer(4, &ws(2), 0, AnnounceEvent::Stopped));
    assert_eq!(s.scrape(&IH).seeders + s.scrape(&IH).leechers, 4);
    assert_eq!(
        s.remove_expired(u32::MAX).peers,
        4,
        "expiry sweeps every family"
    );
    assert_eq!(s.stats().torrents, 0);
}

/// The survey names the biggest swarms, most peers first and ties by info-hash, and counts
/// every family's peers.
#[test]
fn a_survey_ranks_swarms_by_peers_and_counts_families() {
    let s = Swarm::default();
    for t in 1..=6u8 {
        for p in 0..(t % 4 + 1) {
            let mut a = peer(p, &format!("10.0.{t}.{p}:6881"), 10, AnnounceEvent::Started);
            a.info_hash = InfoHash([t; 20]);
            announce(&s, a);
        }
    }
    let mut v6 = peer(9, "[2001:db8::9]:1", 0, AnnounceEvent::Started);
    v6.info_hash = InfoHash([1; 20]);
    announce(&s, v6);
    let survey = s.survey(3);
    // Peers: t1 2+1, t2 3, t3 4, t4 1, t5 2, t6 3.
    let ranked: Vec<(u8, u32)> = survey
        .top
        .iter()
        .map(|(h, st)| (h.0[0], st.seeders + st.leechers))
        .collect();
    assert_eq!(ranked, vec![(3, 4), (1, 3), (2, 3)]);
    assert_eq!((survey.v4, survey.v6, survey.rtc), (15, 1, 0));
    assert!(s.survey(0).top.is_empty());
}
