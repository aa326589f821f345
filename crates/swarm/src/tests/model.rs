//! The swarm against a plain map model over random announce sequences, prefetch under
//! concurrent removals, expiry and loading.

use super::*;

#[derive(Debug, Clone)]
struct Op {
    torrent: u8,
    peer: u8,
    addr: u8,
    left: u64,
    event: AnnounceEvent,
}

fn op(torrents: u8, peers: u8) -> impl Strategy<Value = Op> {
    (
        0u8..torrents,
        0u8..peers,
        0u8..3,
        0u64..2,
        prop_oneof![
            Just(AnnounceEvent::None),
            Just(AnnounceEvent::Started),
            Just(AnnounceEvent::Completed),
            Just(AnnounceEvent::Stopped),
        ],
    )
        .prop_map(|(torrent, peer, addr, left, event)| Op {
            torrent,
            peer,
            addr,
            left,
            event,
        })
}

/// Runs `ops` against the swarm and a plain map model, comparing counts, downloads,
/// answer sizes and pending deltas after every step.
fn agrees_with_model(ops: &[Op]) -> Result<(), TestCaseError> {
    // Half the cases answer seeders from the whole swarm.
    let seeders_get_seeders = ops.len().is_multiple_of(2);
    let s = Swarm::with_policy(
        2,
        Policy {
            seeders_get_seeders,
            ..Policy::default()
        },
    );
    let mut model: HashMap<(u8, u8, u8), bool> = HashMap::new();
    let mut downloads: HashMap<u8, u64> = HashMap::new();
    for o in ops {
        let a = Announce {
            info_hash: InfoHash([o.torrent; 20]),
            peer_id: PeerId([o.peer; 20]),
            // 10.0.0.0:1000 is one endpoint that every peer id shares (a client that
            // restarts); the others give each peer id an endpoint of its own.
            addr: match o.addr {
                0 => "10.0.0.0:1000".to_string(),
                1 => format!("10.0.0.1:{}", 1000 + o.peer as u16),
                _ => format!("[::1]:{}", 1000 + o.peer as u16),
            }
            .parse()
            .unwrap(),
            left: o.left,
            event: o.event,
            numwant: 100,
            families: Families::Both,
        };
        let key = (o.torrent, o.addr, if o.addr == 0 { 0 } else { o.peer });
        if o.event == AnnounceEvent::Stopped {
            model.remove(&key);
        } else {
            let was = model.insert(key, o.left == 0);
            if was == Some(false) && o.left == 0 && o.event == AnnounceEvent::Completed {
                *downloads.entry(o.torrent).or_default() += 1;
            }
        }
        let mut out = Vec::new();
        let st = s.announce(&a, 0, &mut out).unwrap();
        let seeders = model
            .iter()
            .filter(|(k, v)| k.0 == o.torrent && **v)
            .count() as u32;
        let leechers = model
            .iter()
            .filter(|(k, v)| k.0 == o.torrent && !**v)
            .count() as u32;
        prop_assert_eq!((st.seeders, st.leechers), (seeders, leechers));
        prop_assert_eq!(
            st.downloaded,
            downloads.get(&o.torrent).copied().unwrap_or(0)
        );
        if o.event != AnnounceEvent::Stopped {
            let expect = if o.left == 0 && !seeders_get_seeders {
                leechers
            } else {
                seeders + leechers - 1
            };
            prop_assert_eq!(out.len() as u32, expect.min(100));
            let distinct: HashSet<_> = out.iter().map(|p| p.addr).collect();
            prop_assert_eq!(distinct.len(), out.len(), "no endpoint twice");
            prop_assert!(!distinct.contains(&a.addr), "never the asker's endpoint");
        }
    }
    let stats = s.stats();
    prop_assert_eq!(stats.seeders, model.values().filter(|v| **v).count() as u64);
    prop_assert_eq!(
        stats.leechers,
        model.values().filter(|v| !**v).count() as u64
    );
    let mut pending = s.take_pending();
    pending.sort();
    let mut expect: Vec<_> = downloads
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(t, n)| (InfoHash([*t; 20]), *n))
        .collect();
    expect.sort();
    prop_assert_eq!(pending, expect);
    Ok(())
}

proptest! {
    #[test]
    fn matches_a_simple_model(ops in proptest::collection::vec(op(3, 4), 1..200)) {
        agrees_with_model(&ops)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    /// Swarms that grow past INDEX_FROM and shrink below it again exercise the index.
    #[test]
    fn large_swarms_match_the_model(ops in proptest::collection::vec(op(1, 90), 1..1500)) {
        agrees_with_model(&ops)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// Many torrents coming and going move entries around the shards' torrent tables.
    #[test]
    fn many_torrents_match_the_model(ops in proptest::collection::vec(op(80, 3), 1..800)) {
        agrees_with_model(&ops)?;
    }
}

#[test]
fn prefetch_changes_nothing_and_survives_concurrent_removals() {
    let s = Swarm::new(2);
    let hash = |n: u8| InfoHash([n; 20]);
    let batch: Vec<Prefetch> = (0..40u8)
        .map(|n| Prefetch {
            info_hash: hash(n % 20),
            addr: if n % 3 == 0 {
                format!("[::1]:{}", 1000 + u16::from(n))
            } else {
                format!("10.0.0.{n}:1000")
            }
            .parse()
            .unwrap(),
            only_leechers: n % 2 == 0,
        })
        .collect();
    std::thread::scope(|scope| {
        scope.spawn(|| {
            for round in 0..300u32 {
                for w in &batch {
                    let event = if round % 2 == 0 {
                        AnnounceEvent::Started
                    } else {
                        AnnounceEvent::Stopped
                    };
                    // Big enough swarms on some torrents to have an index.
                    for k in 0..(u32::from(w.info_hash.0[0]) % 4) * 10 {
                        let mut a = peer(k as u8, &format!("10.1.0.{k}:7"), 0, event);
                        a.info_hash = w.info_hash;
                        s.announce(&a, round, &mut Vec::new()).unwrap();
                    }
                }
            }
        });
        for _ in 0..2000 {
            s.prefetch(&batch);
        }
    });
    let before = s.stats();
    s.prefetch(&batch);
    assert_eq!(s.stats(), before);
    assert_eq!(
        before.seeders + before.leechers,
        0,
        "the last round stopped everyone"
    );
}

#[test]
fn expiry_leaves_the_survivors_findable() {
    let s = Swarm::new(3);
    for n in 0..600u32 {
        let mut a = peer(1, "10.0.0.1:1", 5, AnnounceEvent::Started);
        a.info_hash = InfoHash([
            n as u8,
            (n >> 8) as u8,
            9,
            9,
            9,
            9,
            9,
            9,
            9,
            9,
            9,
            9,
            9,
            9,
            9,
            9,
            9,
            9,
            9,
            9,
        ]);
        s.announce(&a, n % 2, &mut Vec::new()).unwrap();
    }
    assert_eq!(
        s.remove_expired(1),
        Expired {
            peers: 300,
            torrents: 300
        }
    );
    for n in 0..600u32 {
        let h = InfoHash([
            n as u8,
            (n >> 8) as u8,
            9,
            9,
            9,
            9,
            9,
            9,
            9,
            9,
            9,
            9,
            9,
            9,
            9,
            9,
            9,
            9,
            9,
            9,
        ]);
        let expect = (n % 2 == 1).then_some(TorrentStats {
            seeders: 0,
            leechers: 1,
            downloaded: 0,
        });
        assert_eq!(s.torrent(&h), expect, "torrent {n}");
    }
    assert_eq!(s.stats().torrents, 300);
}

#[test]
fn loaded_counts_merge_and_count_on() {
    let s = Swarm::new(2);
    let mut loader = s.loader();
    for n in 0..200u8 {
        loader.add(InfoHash([n; 20]), u64::from(n) + 1);
    }
    loader.add(InfoHash([5; 20]), 1000);
    loader.finish();
    assert_eq!(
        s.scrape(&InfoHash([5; 20])).downloaded,
        1000,
        "the later load wins"
    );
    assert_eq!(s.scrape(&InfoHash([199; 20])).downloaded, 200);
    assert_eq!(s.stats().counted_torrents, 200);
    let mut a = peer(1, "10.0.0.1:1", 5, AnnounceEvent::Started);
    a.info_hash = InfoHash([7; 20]);
    s.announce(&a, 0, &mut Vec::new()).unwrap();
    a.left = 0;
    a.event = AnnounceEvent::Completed;
    assert_eq!(s.announce(&a, 0, &mut Vec::new()).unwrap().downloaded, 9);
    // A second load (not done by the server, but allowed) keeps what is there.
    s.load_downloads([(InfoHash([250; 20]), 3)]);
    assert_eq!(s.scrape(&InfoHash([7; 20])).downloaded, 9);
    assert_eq!(s.scrape(&InfoHash([250; 20])).downloaded, 3);
    assert_eq!(s.stats().counted_torrents, 201);
}

#[test]
fn pages_cover_every_known_torrent_once_in_order() {
    let swarm = Swarm::new(4);
    let hash = |n: u8| InfoHash([n; 20]);
    swarm.load_downloads((1..=5).map(|n| (hash(n * 2), u64::from(n))));
    for n in [3u8, 4, 9] {
        let mut a = peer(n, "10.0.0.1:6881", 0, AnnounceEvent::Started);
        a.info_hash = hash(n);
        swarm.announce(&a, 1, &mut Vec::new()).unwrap();
    }
    assert_eq!(
        swarm.torrent(&hash(4)),
        Some(TorrentStats {
            seeders: 1,
            leechers: 0,
            downloaded: 2
        })
    );
    assert_eq!(swarm.torrent(&hash(7)), None);
    let mut seen = Vec::new();
    for offset in (0..10).step_by(3) {
        let (total, page) = swarm.page(offset, 3);
        assert_eq!(total, 7);
        seen.extend(page.into_iter().map(|(h, _)| h.0[0]));
    }
    assert_eq!(seen, vec![2, 3, 4, 6, 8, 9, 10]);
    assert!(swarm.page(7, 3).1.is_empty() && swarm.page(usize::MAX, usize::MAX).1.is_empty());
}
