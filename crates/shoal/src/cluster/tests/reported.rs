//! The four cases issue 18 reported, as operation sequences.

use super::*;

fn announce(client: u8, node: usize, event: u8) -> Op {
    Op::Announce {
        client,
        node,
        torrent: 0,
        event,
        seeder: false,
        id: 0,
    }
}

fn all_read() -> Vec<Op> {
    (0..NODES)
        .map(Op::Publish)
        .chain((0..NODES).map(|n| Op::Read(n, usize::MAX)))
        .collect()
}

#[test]
fn a_restarted_node_keeps_the_peers_its_previous_incarnation_owned() {
    let mut ops: Vec<Op> = (0..3).map(|c| announce(c, c as usize, 1)).collect();
    ops.extend(all_read());
    ops.push(Op::Restart {
        node: 1,
        kill: false,
    });
    let mut sim = Sim::new();
    for op in &ops {
        sim.run(op);
    }
    assert_eq!(sim.nodes[1].swarm.scrape(&TORRENTS[0]).leechers, 3);
    // The client of the old incarnation stops at the new one: everyone drops it.
    sim.run(&announce(1, 1, 3));
    sim.settle();
    for n in 0..NODES {
        assert_eq!(sim.nodes[n].swarm.scrape(&TORRENTS[0]).leechers, 2);
    }
    agree(&ops).unwrap();
}

#[test]
fn a_stop_at_the_previous_node_removes_the_peer_from_its_owner() {
    let mut ops = vec![announce(0, 0, 1)];
    ops.extend(all_read());
    ops.push(announce(0, 1, 0));
    ops.extend(all_read());
    ops.push(announce(0, 0, 3));
    ops.extend(all_read());
    let mut sim = Sim::new();
    for op in &ops {
        sim.run(op);
    }
    for n in 0..NODES {
        assert_eq!(sim.nodes[n].swarm.scrape(&TORRENTS[0]).leechers, 0);
    }
    agree(&ops).unwrap();
}

#[test]
fn announces_to_two_nodes_within_one_batch_leave_one_owner() {
    let ops = vec![announce(0, 0, 1), announce(0, 1, 1)];
    let mut sim = Sim::new();
    for op in &ops {
        sim.run(op);
    }
    sim.settle();
    let owners: Vec<_> = (0..NODES)
        .map(|n| sim.view(n).values().next().unwrap().2.clone())
        .collect();
    assert!(owners.iter().all(|o| *o == owners[0]), "{owners:?}");
    // The owner renews the lease and announces the expiry; nobody else does.
    let owner = (0..NODES)
        .find(|&n| sim.nodes[n].swarm.peers(&TORRENTS[0])[0].owner.is_none())
        .expect("one node owns the peer");
    sim.run(&Op::Tick(T + 1));
    for n in 0..NODES {
        sim.run(&Op::Sweep(n));
    }
    let expiries: Vec<usize> = (0..NODES)
        .map(|n| sim.nodes[n].swarm.take_changes().len())
        .collect();
    assert_eq!(expiries.iter().sum::<usize>(), 1);
    assert_eq!(expiries[owner], 1);
    agree(&ops).unwrap();
}
