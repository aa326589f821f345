//! Limits: refusals past each bound, room made again when peers leave.

use super::*;

fn limited(limits: Limits) -> Swarm {
    Swarm::with_policy(
        4,
        Policy {
            limits,
            ..Policy::default()
        },
    )
}

fn on(n: u8, a: Announce) -> Announce {
    Announce {
        info_hash: InfoHash([n; 20]),
        ..a
    }
}

#[test]
fn past_max_torrents_new_torrents_are_refused_and_known_ones_served() {
    let s = limited(Limits {
        max_torrents: 3,
        ..Limits::NONE
    });
    let started = |n: u8, t: u8| {
        on(
            t,
            peer(n, &format!("10.0.0.{n}:1"), 5, AnnounceEvent::Started),
        )
    };
    for t in 0..3 {
        s.announce(&started(1, t), 0, &mut Vec::new()).unwrap();
    }
    assert_eq!(
        s.announce(&started(1, 3), 0, &mut Vec::new()),
        Err(Refusal::Torrents)
    );
    assert_eq!(s.stats().torrents, 3, "the refused torrent was not made");
    let st = s.announce(&started(2, 0), 0, &mut Vec::new()).unwrap();
    assert_eq!(st.leechers, 2, "a known torrent takes new peers");
    // A torrent that empties frees its place, by stopped or by expiry.
    let stopped = |t: u8| on(t, peer(1, "10.0.0.1:1", 5, AnnounceEvent::Stopped));
    s.announce(&stopped(1), 0, &mut Vec::new()).unwrap();
    s.announce(&started(1, 3), 0, &mut Vec::new()).unwrap();
    s.remove_expired(1);
    assert_eq!(s.stats().torrents, 0);
    for t in 10..13 {
        s.announce(&started(1, t), 5, &mut Vec::new()).unwrap();
    }
    assert!(s.announce(&started(1, 13), 5, &mut Vec::new()).is_err());
}

#[test]
fn one_ip_cannot_crowd_out_a_swarm() {
    let s = limited(Limits {
        max_peers_per_ip: 3,
        max_peers_per_torrent: 40,
        ..Limits::NONE
    });
    // Grow past INDEX_FROM so the indexed count is exercised too.
    for n in 0..30u8 {
        let honest = peer(n, &format!("10.1.0.{n}:6881"), 5, AnnounceEvent::Started);
        s.announce(&honest, 0, &mut Vec::new()).unwrap();
    }
    for port in 0..10u16 {
        let hostile = peer(
            200,
            &format!("10.9.9.9:{}", 7000 + port),
            5,
            AnnounceEvent::None,
        );
        let got = s.announce(&hostile, 0, &mut Vec::new());
        assert_eq!(got.is_ok(), port < 3, "port {port}: {got:?}");
        if port >= 3 {
            assert_eq!(got, Err(Refusal::PeersPerIp));
        }
    }
    // A re-announce of an endpoint already in is not a new peer.
    let again = peer(201, "10.9.9.9:7001", 0, AnnounceEvent::None);
    assert_eq!(s.announce(&again, 0, &mut Vec::new()).unwrap().seeders, 1);
    // Another family, another address: IPv6 peers are counted per their own address.
    for port in 0..3u16 {
        let v6 = peer(
            202,
            &format!("[2001:db8::9]:{}", 7000 + port),
            5,
            AnnounceEvent::None,
        );
        s.announce(&v6, 0, &mut Vec::new()).unwrap();
    }
    let v6 = peer(202, "[2001:db8::9]:7999", 5, AnnounceEvent::None);
    assert_eq!(
        s.announce(&v6, 0, &mut Vec::new()),
        Err(Refusal::PeersPerIp)
    );
    // When one of the address's peers leaves, another may join.
    let leave = peer(200, "10.9.9.9:7000", 5, AnnounceEvent::Stopped);
    s.announce(&leave, 0, &mut Vec::new()).unwrap();
    let join = peer(200, "10.9.9.9:7009", 5, AnnounceEvent::None);
    s.announce(&join, 0, &mut Vec::new()).unwrap();
    // The whole swarm: 30 honest, 3 + 3 hostile = 36; four more fill it to 40.
    for n in 0..4u8 {
        let late = peer(n, &format!("10.2.0.{n}:6881"), 5, AnnounceEvent::Started);
        s.announce(&late, 0, &mut Vec::new()).unwrap();
    }
    let late = peer(9, "10.2.0.9:6881", 5, AnnounceEvent::Started);
    assert_eq!(
        s.announce(&late, 0, &mut Vec::new()),
        Err(Refusal::PeersPerTorrent)
    );
    let elsewhere = on(2, late);
    assert!(
        s.announce(&elsewhere, 0, &mut Vec::new()).is_ok(),
        "other torrents take it"
    );
    let known = peer(0, "10.1.0.0:6881", 0, AnnounceEvent::None);
    assert!(
        s.announce(&known, 0, &mut Vec::new()).is_ok(),
        "members still announce"
    );
    let st = s.scrape(&IH);
    assert_eq!(st.seeders + st.leechers, 40);
}

#[test]
fn past_max_peers_new_peers_are_refused_until_some_leave() {
    let s = limited(Limits {
        max_peers: 5,
        ..Limits::NONE
    });
    for n in 0..5u8 {
        let a = on(
            n,
            peer(n, &format!("10.0.0.{n}:1"), 5, AnnounceEvent::Started),
        );
        s.announce(&a, 0, &mut Vec::new()).unwrap();
    }
    let sixth = on(0, peer(9, "10.0.0.9:1", 5, AnnounceEvent::Started));
    assert_eq!(s.announce(&sixth, 0, &mut Vec::new()), Err(Refusal::Peers));
    let again = on(1, peer(1, "10.0.0.1:1", 0, AnnounceEvent::None));
    assert!(
        s.announce(&again, 0, &mut Vec::new()).is_ok(),
        "members still announce"
    );
    let stop = on(2, peer(2, "10.0.0.2:1", 5, AnnounceEvent::Stopped));
    s.announce(&stop, 0, &mut Vec::new()).unwrap();
    s.announce(&sixth, 0, &mut Vec::new()).unwrap();
    assert_eq!(
        s.announce(&on(7, sixth), 0, &mut Vec::new()),
        Err(Refusal::Peers)
    );
    s.remove_expired(1);
    assert!(
        s.announce(&on(7, sixth), 2, &mut Vec::new()).is_ok(),
        "expiry frees room"
    );
}

#[test]
fn counts_past_max_counted_torrents_are_not_made_but_existing_ones_go_on() {
    let s = limited(Limits {
        max_counted_torrents: 2,
        ..Limits::NONE
    });
    s.load_downloads([(InfoHash([50; 20]), 4)]);
    let download = |t: u8| {
        s.announce(
            &on(t, peer(1, "10.0.0.1:1", 5, AnnounceEvent::Started)),
            0,
            &mut Vec::new(),
        )
        .unwrap();
        s.announce(
            &on(t, peer(1, "10.0.0.1:1", 0, AnnounceEvent::Completed)),
            0,
            &mut Vec::new(),
        )
        .unwrap()
        .downloaded
    };
    assert_eq!(download(1), 1);
    assert_eq!(download(2), 0, "a third count would pass the limit");
    assert_eq!(download(50), 5, "a loaded count counts on");
    assert_eq!(download(1), 2, "so does one made before the limit");
    let st = s.stats();
    assert_eq!((st.counted_torrents, st.uncounted_downloads), (2, 1));
}

#[test]
fn expiry_walks_a_shard_in_chunks_and_misses_nobody() {
    let s = Swarm::new(1);
    let n = 3 * crate::expiry::CHUNK as u32 + 17;
    let ih = |i: u32| {
        let mut h = [9u8; 20];
        h[..4].copy_from_slice(&i.to_be_bytes());
        InfoHash(h)
    };
    for i in 0..n {
        let a = Announce {
            info_hash: ih(i),
            ..peer(1, "10.0.0.1:1", 5, AnnounceEvent::Started)
        };
        // Every third torrent's peer is fresh; the others have gone silent.
        s.announce(&a, if i % 3 == 0 { 100 } else { 1 }, &mut Vec::new())
            .unwrap();
    }
    let gone = s.remove_expired(50);
    let kept = n.div_ceil(3);
    assert_eq!(gone.torrents, u64::from(n - kept));
    let st = s.stats();
    assert_eq!(
        (st.torrents, st.leechers),
        (u64::from(kept), u64::from(kept))
    );
    for i in 0..n {
        assert_eq!(
            s.scrape(&ih(i)).leechers,
            u32::from(i % 3 == 0),
            "torrent {i}"
        );
    }
    // The freed room is back: max_peers and max_torrents count only the survivors.
    assert_eq!(s.held.load(Relaxed), kept as usize);
    assert_eq!(s.peers.load(Relaxed), kept as usize);
}

/// A swarm larger than a chunk is swept in slices, the shard released between them, while
/// another thread keeps announcing into it, some peers switching roles (which moves them):
/// no fresh peer is lost, the counts stay a recount, and an old peer a move carried past the
/// sweep leaves at the next pass.
#[test]
fn a_large_swarm_expires_in_slices_while_announces_go_on() {
    let s = Swarm::new(1);
    let n = 40 * crate::expiry::CHUNK as u32;
    let at = |i: u32| {
        let b = i.to_be_bytes();
        Announce {
            addr: SocketAddr::from(([10, b[1], b[2], b[3]], 6881)),
            ..peer(b[3], "10.0.0.1:1", u64::from(i % 3), AnnounceEvent::None)
        }
    };
    // Even peers have gone silent; odd ones keep announcing.
    for i in 0..n {
        s.announce(&at(i), if i % 2 == 0 { 1 } else { 100 }, &mut Vec::new())
            .unwrap();
    }
    let first = std::thread::scope(|sc| {
        sc.spawn(|| {
            for round in 0..20u64 {
                for i in (1..n).step_by(2) {
                    let a = Announce {
                        left: (u64::from(i) + round) % 3,
                        ..at(i)
                    };
                    s.announce(&a, 100, &mut Vec::new()).unwrap();
                }
            }
        });
        s.remove_expired(50)
    });
    let second = s.remove_expired(50);
    assert_eq!(first.peers + second.peers, u64::from(n / 2));
    let left: Vec<_> = s.peers(&IH).iter().map(|p| p.addr).collect();
    assert_eq!(left.len(), (n / 2) as usize);
    for i in (1..n).step_by(2) {
        assert!(left.contains(&at(i).addr), "fresh peer {i} lost");
    }
    let st = s.stats();
    assert_eq!(st.seeders + st.leechers, u64::from(n / 2));
    assert_eq!(s.peers.load(Relaxed), (n / 2) as usize);
}
