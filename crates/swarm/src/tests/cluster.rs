//! Two swarms as two nodes: what one publishes, applied by the other.

use super::*;

fn node() -> Swarm {
    Swarm::with_policy(
        4,
        Policy {
            lease_every: 900,
            max_outbox: 1000,
            ..Policy::default()
        },
    )
}

fn at(s: &Swarm, a: Announce, now: u32) -> Vec<ResponsePeer> {
    let mut out = Vec::new();
    s.announce(&a, now, &mut out).unwrap();
    out
}

/// How `to` applies a record another node wrote at `now`.
fn from_other(now: u32) -> Delivery {
    Delivery {
        origin: Origin::Node(1),
        at: now,
        cutoff: now.saturating_sub(1800),
        count: true,
    }
}

/// Everything `from` published, applied to `to`; returns how many records went.
fn relay(from: &Swarm, to: &Swarm, now: u32) -> usize {
    let changes = from.take_changes();
    for c in &changes {
        to.apply(c, &from_other(now)).unwrap();
    }
    changes.len()
}

#[test]
fn single_node_publishes_nothing() {
    let s = Swarm::default();
    at(&s, peer(1, "10.0.0.1:1", 5, AnnounceEvent::Started), 0);
    assert!(s.take_changes().is_empty());
}

#[test]
fn a_peer_announced_on_one_node_is_answered_by_the_other() {
    let (a, b) = (node(), node());
    at(&a, peer(1, "10.0.0.1:1", 5, AnnounceEvent::Started), 0);
    assert_eq!(relay(&a, &b, 0), 1);
    let got = at(&b, peer(2, "10.0.0.2:2", 5, AnnounceEvent::Started), 0);
    assert_eq!(
        got.iter().map(|p| p.addr).collect::<Vec<_>>(),
        ["10.0.0.1:1".parse().unwrap()]
    );
    assert_eq!(b.scrape(&IH).leechers, 2);

    // Re-announces within a lease send nothing; a role change does, with its download.
    at(&a, peer(1, "10.0.0.1:1", 5, AnnounceEvent::None), 100);
    assert_eq!(a.take_changes().len(), 0);
    at(&a, peer(1, "10.0.0.1:1", 0, AnnounceEvent::Completed), 200);
    let changes = a.take_changes();
    assert_eq!(changes.len(), 1);
    assert!(changes[0].completed && changes[0].state == PeerState::Seeder);
    b.apply(&changes[0], &from_other(200)).unwrap();
    let st = b.scrape(&IH);
    assert_eq!((st.seeders, st.leechers, st.downloaded), (1, 1, 1));
    // Counted in memory on both, but flushed only by the node that was announced to.
    assert_eq!(a.take_pending(), vec![(IH, 1)]);
    assert_eq!(b.take_pending(), vec![]);

    // A lease is renewed once half a timeout has passed.
    at(&a, peer(1, "10.0.0.1:1", 0, AnnounceEvent::None), 200 + 899);
    assert_eq!(a.take_changes().len(), 0);
    at(&a, peer(1, "10.0.0.1:1", 0, AnnounceEvent::None), 200 + 900);
    assert_eq!(relay(&a, &b, 1100), 1);

    // A stop leaves everywhere.
    at(&a, peer(1, "10.0.0.1:1", 0, AnnounceEvent::Stopped), 1200);
    assert_eq!(relay(&a, &b, 1200), 1);
    assert_eq!(b.scrape(&IH).seeders, 0);
}

#[test]
fn remote_peers_expire_by_the_local_clock_and_owners_announce_their_expiry() {
    let (a, b) = (node(), node());
    at(&a, peer(1, "10.0.0.1:1", 5, AnnounceEvent::Started), 10);
    relay(&a, &b, 10);
    // a owns it: its expiry goes out, saying why.
    assert_eq!(a.remove_expired(11).peers, 1);
    let gone = a.take_changes();
    assert_eq!(gone.len(), 1);
    assert_eq!(gone[0].state, PeerState::Expired);
    // b keeps a remote peer one lease interval longer than its owner would, then drops it
    // by its own clock, publishing nothing.
    assert_eq!(b.remove_expired(11).peers, 0);
    assert_eq!(b.remove_expired(10 + 900 + 1).peers, 1);
    assert!(b.take_changes().is_empty());
}

#[test]
fn a_client_that_moves_to_another_node_is_owned_there() {
    let (a, b) = (node(), node());
    at(&a, peer(1, "10.0.0.1:1", 5, AnnounceEvent::Started), 0);
    relay(&a, &b, 0);
    // The same endpoint now announces to b: b takes it over and says so.
    at(&b, peer(1, "10.0.0.1:1", 5, AnnounceEvent::None), 5);
    assert_eq!(relay(&b, &a, 5), 1);
    // a no longer owns it: its expiry there publishes nothing, and a's stale departure
    // record could not remove b's live peer anyway.
    a.remove_expired(6);
    assert!(a.take_changes().is_empty());
    let mut left = PeerChange {
        info_hash: IH,
        peer_id: PeerId([1; 20]),
        addr: "10.0.0.1:1".parse().unwrap(),
        state: PeerState::Expired,
        completed: false,
    };
    b.apply(&left, &from_other(6)).unwrap();
    assert_eq!(
        b.scrape(&IH).leechers,
        1,
        "an expiry from elsewhere cannot evict an owned peer"
    );
    // A stop is the client leaving, wherever it said so.
    left.state = PeerState::Stopped;
    b.apply(&left, &from_other(7)).unwrap();
    assert_eq!(b.scrape(&IH).leechers, 0);
}

#[test]
fn a_stop_is_published_even_where_the_peer_was_unknown() {
    let (a, b) = (node(), node());
    at(&a, peer(1, "10.0.0.1:1", 5, AnnounceEvent::Started), 0);
    relay(&a, &b, 0);
    let c = node();
    at(&c, peer(1, "10.0.0.1:1", 5, AnnounceEvent::Stopped), 1);
    let stop = c.take_changes();
    assert_eq!(stop.len(), 1);
    assert_eq!(stop[0].state, PeerState::Stopped);
    a.apply(&stop[0], &from_other(1)).unwrap();
    b.apply(&stop[0], &from_other(1)).unwrap();
    assert_eq!(a.scrape(&IH).leechers, 0, "the owner too");
    assert_eq!(b.scrape(&IH).leechers, 0);
}

#[test]
fn a_nodes_own_record_read_back_restores_what_a_foreign_record_took() {
    let (a, b) = (node(), node());
    // a takes the peer; before a's record is read, b's earlier stop of it arrives at a.
    at(&a, peer(1, "10.0.0.1:1", 5, AnnounceEvent::Started), 0);
    let mine = a.take_changes();
    at(&b, peer(1, "10.0.0.1:1", 5, AnnounceEvent::Stopped), 0);
    relay(&b, &a, 0);
    assert_eq!(a.scrape(&IH).leechers, 0);
    // Then a reads its own join back: the stream says the client is a's again.
    let me = Delivery {
        origin: Origin::Me,
        ..from_other(0)
    };
    a.apply(&mine[0], &me).unwrap();
    assert_eq!(a.peers(&IH)[0].owner, None);
    // Its records read back in stream order end in its latest state, and its own
    // `completed` is not counted a second time.
    at(&a, peer(1, "10.0.0.1:1", 0, AnnounceEvent::Completed), 1);
    let done = a.take_changes();
    for c in mine.iter().chain(&done) {
        a.apply(c, &me).unwrap();
    }
    let st = a.scrape(&IH);
    assert_eq!((st.seeders, st.leechers, st.downloaded), (1, 0, 1));
}

#[test]
fn forgetting_the_bus_keeps_only_owned_peers() {
    let (a, b) = (node(), node());
    at(&a, peer(1, "10.0.0.1:1", 5, AnnounceEvent::Started), 0);
    at(&b, peer(2, "10.0.0.2:2", 5, AnnounceEvent::Started), 0);
    relay(&b, &a, 0);
    assert_eq!(a.scrape(&IH).leechers, 2);
    assert_eq!(a.forget_remote(), 1);
    assert_eq!(a.peers(&IH).len(), 1);
    assert!(
        a.take_changes()
            .iter()
            .all(|c| c.state != PeerState::Expired)
    );
}

#[test]
fn republishing_lists_every_owned_peer_once() {
    let (a, b) = (node(), node());
    at(&a, peer(1, "10.0.0.1:1", 0, AnnounceEvent::Started), 0);
    at(&a, peer(2, "[2001:db8::1]:2", 5, AnnounceEvent::Started), 0);
    at(&b, peer(3, "10.0.0.3:3", 5, AnnounceEvent::Started), 0);
    relay(&b, &a, 0);
    a.take_changes();
    a.republish_owned();
    let mut again = a.take_changes();
    again.sort_by_key(|c| c.addr);
    let states: Vec<_> = again
        .iter()
        .map(|c| (c.addr.to_string(), c.state))
        .collect();
    assert_eq!(
        states,
        [
            ("10.0.0.1:1".to_string(), PeerState::Seeder),
            ("[2001:db8::1]:2".to_string(), PeerState::Leecher)
        ]
    );
}

#[test]
fn a_full_outbox_drops_and_counts() {
    let s = Swarm::with_policy(
        1,
        Policy {
            lease_every: 900,
            max_outbox: 2,
            ..Policy::default()
        },
    );
    for n in 1..=3 {
        at(
            &s,
            peer(n, &format!("10.0.0.{n}:1"), 5, AnnounceEvent::Started),
            0,
        );
    }
    assert_eq!(s.take_changes().len(), 2);
    assert_eq!(s.dropped_changes(), 1);
}

/// A peer that stops announcing (its client keeps a longer interval, or will expire) still
/// has its lease renewed by its owner's sweep, so the stream holds a record of every live
/// peer within one lease and a sweep; remote peers and a single node renew nothing.
#[test]
fn the_sweep_renews_owned_leases_that_are_due_and_nothing_else() {
    let (a, b) = (node(), node());
    // 100 peers over one large swarm (swept in slices) and small ones.
    for i in 0..100u32 {
        let mut p = peer(
            i as u8,
            &format!("10.0.{}.{}:1", i / 50, i % 50),
            i as u64 % 2,
            AnnounceEvent::Started,
        );
        if i % 10 == 0 {
            p.info_hash = InfoHash([i as u8 + 1; 20]);
        }
        at(&a, p, 0);
    }
    assert_eq!(relay(&a, &b, 0), 100);
    a.sweep(899, 0);
    assert!(a.take_changes().is_empty(), "nothing due before a lease");
    a.sweep(900, 0);
    let renewed = a.take_changes();
    assert_eq!(renewed.len(), 100, "every owned peer once");
    let stats = a.scrape(&IH);
    let seeders = renewed
        .iter()
        .filter(|c| c.info_hash == IH && c.state == PeerState::Seeder)
        .count();
    assert_eq!(
        seeders as u32, stats.seeders,
        "each renewal carries its role"
    );
    assert!(renewed.iter().all(|c| !c.completed));
    a.sweep(1000, 0);
    assert!(a.take_changes().is_empty(), "renewed once per lease");
    // The other node applies the renewals as another join: nothing changes in its view but
    // the time its copies last.
    let before: Vec<_> = b.peers(&IH);
    for c in &renewed {
        b.apply(c, &from_other(900)).unwrap();
    }
    assert_eq!(b.peers(&IH), before);
    b.sweep(1800, 0);
    assert!(
        b.take_changes().is_empty(),
        "remote peers are their owners' to renew"
    );
    // Past the owner's timeout they expire there (and say so), renewals or not.
    a.sweep(1801, 1801 - 1800);
    let gone = a.take_changes();
    assert_eq!(gone.len(), 100);
    assert!(gone.iter().all(|c| c.state == PeerState::Expired));

    let single = Swarm::default();
    at(&single, peer(1, "10.0.0.1:1", 5, AnnounceEvent::Started), 0);
    single.sweep(100_000, 0);
    assert!(single.take_changes().is_empty());
}

/// A sweep that finds more leases due than the outbox holds renews what fits and leaves the
/// rest for the next sweep: nothing is dropped, every peer is renewed once.
#[test]
fn renewals_wait_for_room_in_the_outbox_rather_than_drop() {
    let s = Swarm::with_policy(
        4,
        Policy {
            lease_every: 900,
            max_outbox: 4 * 64,
            ..Policy::default()
        },
    );
    let n = 1500u32;
    let mut renewed = std::collections::HashSet::new();
    for i in 0..n {
        let mut p = peer(
            1,
            &format!("10.{}.{}.{}:1", i >> 16, (i >> 8) & 255, i & 255),
            1,
            AnnounceEvent::Started,
        );
        p.info_hash = InfoHash([(i % 97) as u8 + 1; 20]);
        at(&s, p, 0);
        // The publisher takes the joins as they come.
        s.take_changes();
    }
    let mut sweeps = 0;
    while renewed.len() < n as usize && sweeps < 100 {
        s.sweep(900 + sweeps, 0);
        sweeps += 1;
        let batch = s.take_changes();
        assert!(batch.len() <= 4 * 64, "no more than the outbox holds");
        for c in batch {
            assert!(renewed.insert(c.addr), "{} renewed twice", c.addr);
        }
    }
    assert_eq!(renewed.len(), n as usize, "every lease renewed");
    assert!(sweeps > 1, "more than one sweep was needed");
    assert_eq!(s.dropped_changes(), 0);
}
