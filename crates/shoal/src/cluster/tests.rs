//! The agreement property (docs/design.md, "Agreement"), checked against a model: several
//! in-process nodes on the real `Swarm`, the real record encoding and the real `Follower`,
//! joined by an in-memory stream whose delivery the test controls. Proptest draws the
//! operations (announces from clients on any node, clients moving between nodes, batches
//! published and read in any order, time passing, sweeps, graceful restarts and kills,
//! Redis down, Redis restarted empty) and shrinks a failure to its shortest sequence.
//!
//! Time passes as it does for a real node: every `SWEEP` seconds each node sweeps (expiring
//! and renewing leases), publishes and reads, if the bus is up. The stream keeps entries for
//! one lease and one sweep (`Tracker::stream_reach`), so a node that starts late replays
//! only that much.
//!
//! Once traffic stops and every batch is published and read, each node's view of every
//! swarm (endpoint, peer id, role, owning incarnation) must be the model's for the entries
//! that node read: those records applied in stream order by a single map, where a join
//! places a peer, a stop removes it, an expiry removes it only from its owner, and a peer of
//! an incarnation that is gone expires one peer timeout plus one lease after its last
//! record. And every node must hold the same view of the peers live incarnations own,
//! however late it started: the renewals make the short stream enough. `PROPTEST_CASES`
//! sets the number of cases (scripts/agreement for long runs).

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;

use proptest::prelude::*;
use protocol::{AnnounceEvent, InfoHash, PeerId};
use swarm::{Announce, Delivery, Families, PeerState, Policy, Swarm};

use super::follow::{Entry, Follower, Model};
use super::record::{self, Record};

const T: u32 = 100;
const LEASE: u32 = T / 2;
/// As `Tracker::sweep_every`: a tenth of the timeout.
const SWEEP: u32 = T / 10;
/// As `Tracker::stream_reach`: one lease and one sweep, and a second of slack.
const RETAIN: u32 = LEASE + SWEEP + 1;
const NODES: usize = 3;
const CLIENTS: u8 = 6;
const TORRENTS: [InfoHash; 2] = [InfoHash([1; 20]), InfoHash([2; 20])];

#[derive(Debug, Clone)]
enum Op {
    Announce {
        client: u8,
        node: usize,
        torrent: usize,
        event: u8,
        seeder: bool,
        id: u8,
    },
    Publish(usize),
    Read(usize, usize),
    Tick(u32),
    Sweep(usize),
    Flush(usize),
    Restart {
        node: usize,
        kill: bool,
    },
    BusDown,
    BusUp,
    BusWiped,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        10 => (0..CLIENTS, 0..NODES, 0..2usize, 0..4u8, any::<bool>(), 0..2u8).prop_map(
            |(client, node, torrent, event, seeder, id)| Op::Announce {
                client,
                node,
                torrent,
                event,
                seeder,
                id
            }
        ),
        4 => (0..NODES).prop_map(Op::Publish),
        4 => (0..NODES, 1..4usize).prop_map(|(n, k)| Op::Read(n, k)),
        2 => (1..=60u32).prop_map(Op::Tick),
        1 => (0..NODES).prop_map(Op::Sweep),
        1 => (0..NODES).prop_map(Op::Flush),
        1 => (0..NODES, any::<bool>()).prop_map(|(node, kill)| Op::Restart { node, kill }),
        1 => Just(Op::BusDown),
        1 => Just(Op::BusUp),
        1 => Just(Op::BusWiped),
    ]
}

#[derive(Clone)]
struct StreamEntry {
    seq: u64,
    secs: u32,
    node: String,
    inc: String,
    data: Vec<u8>,
}

/// One node: what `cluster::publish` and `cluster::read` keep, without Redis.
struct Node {
    name: String,
    inc: String,
    swarm: Swarm,
    follower: Follower,
    /// The sequence number of the next entry to read.
    next: u64,
    /// The entries this incarnation read since it started or the stream was lost.
    read: Vec<u64>,
    replaying: bool,
    backlog: Vec<Record>,
    pub_epoch: Option<u64>,
    read_epoch: Option<u64>,
}

impl Node {
    fn start(name: String, inc: String, db: &BTreeMap<InfoHash, u64>) -> Self {
        let swarm = Swarm::with_policy(
            4,
            Policy {
                lease_every: LEASE,
                max_outbox: 1 << 20,
                ..Policy::default()
            },
        );
        swarm.load_downloads(db.iter().map(|(h, n)| (*h, *n)));
        Node {
            follower: Follower::new(&name, &inc),
            name,
            inc,
            swarm,
            next: 0,
            read: Vec::new(),
            replaying: true,
            backlog: Vec::new(),
            pub_epoch: None,
            read_epoch: None,
        }
    }
}

struct Sim {
    now: u32,
    stream: Vec<StreamEntry>,
    /// Every entry ever written, by sequence number, trimmed or not.
    history: BTreeMap<u64, StreamEntry>,
    next_seq: u64,
    epoch: u64,
    up: bool,
    nodes: Vec<Node>,
    starts: u64,
    db: BTreeMap<InfoHash, u64>,
    /// Completions the nodes answered as counted, and those a kill lost unflushed.
    counted: u64,
    lost: u64,
    /// A restart, a lost stream, or entries trimmed before a node read them: a node's
    /// in-memory counts may miss increments the database holds (docs/scaling.md,
    /// "Agreement"), so only the database is compared.
    counts_may_lag: bool,
    /// Entries trimmed before a node read them.
    views_may_differ: bool,
}

type View = BTreeMap<(InfoHash, SocketAddr), ([u8; 20], bool, (String, String))>;

impl Sim {
    fn new() -> Self {
        let mut sim = Sim {
            now: 1000,
            stream: Vec::new(),
            history: BTreeMap::new(),
            next_seq: 0,
            epoch: 0,
            up: true,
            nodes: Vec::new(),
            starts: 0,
            db: BTreeMap::new(),
            counted: 0,
            lost: 0,
            counts_may_lag: false,
            views_may_differ: false,
        };
        for n in 0..NODES {
            let node = sim.incarnation(n);
            sim.nodes.push(node);
            sim.read(n, usize::MAX);
        }
        sim
    }

    fn incarnation(&mut self, n: usize) -> Node {
        self.starts += 1;
        Node::start(format!("n{n}"), format!("i{}", self.starts), &self.db)
    }

    fn run(&mut self, op: &Op) {
        match *op {
            Op::Announce {
                client,
                node,
                torrent,
                event,
                seeder,
                id,
            } => self.announce(client, node, torrent, event, seeder, id),
            Op::Publish(n) => self.publish(n),
            Op::Read(n, k) => self.read(n, k),
            Op::Tick(s) => self.pass(s),
            Op::Sweep(n) => self.sweep(n),
            Op::Flush(n) => self.flush(n),
            Op::Restart { node, kill } => {
                if kill {
                    self.lost += self.nodes[node].swarm.stats().pending_deltas;
                } else {
                    // SIGTERM: the publisher's last batch, the flusher's last flush.
                    self.publish(node);
                    self.flush(node);
                }
                self.nodes[node] = self.incarnation(node);
                self.counts_may_lag = true;
                self.read(node, usize::MAX);
            }
            Op::BusDown => self.up = false,
            Op::BusUp => self.up = true,
            Op::BusWiped => {
                self.stream.clear();
                self.epoch += 1;
                self.counts_may_lag = true;
                self.up = true;
            }
        }
    }

    /// `s` seconds pass: every `SWEEP` seconds each node sweeps, publishes and reads, as
    /// `serve`'s sweep task and the bus's two tasks do.
    fn pass(&mut self, s: u32) {
        let end = self.now + s;
        while self.now < end {
            let next = (self.now / SWEEP + 1) * SWEEP;
            self.now = next.min(end);
            if self.now == next {
                for n in 0..NODES {
                    self.sweep(n);
                    self.publish(n);
                }
                for n in 0..NODES {
                    self.read(n, usize::MAX);
                }
            }
        }
    }

    fn sweep(&mut self, n: usize) {
        self.nodes[n].swarm.sweep(self.now, self.now - T);
    }

    fn announce(&mut self, client: u8, n: usize, torrent: usize, event: u8, seeder: bool, id: u8) {
        let addr: SocketAddr = if client == CLIENTS - 1 {
            "[2001:db8::9]:6881".parse().unwrap()
        } else {
            format!("10.0.0.{client}:6881").parse().unwrap()
        };
        let event = match event {
            0 => AnnounceEvent::None,
            1 => AnnounceEvent::Started,
            2 => AnnounceEvent::Completed,
            _ => AnnounceEvent::Stopped,
        };
        let a = Announce {
            info_hash: TORRENTS[torrent],
            peer_id: PeerId([client * 2 + id; 20]),
            addr,
            left: if seeder || event == AnnounceEvent::Completed {
                0
            } else {
                100
            },
            event,
            numwant: 50,
            families: Families::Both,
        };
        let node = &mut self.nodes[n];
        let before = node.swarm.stats().pending_deltas;
        node.swarm.announce(&a, self.now, &mut Vec::new()).unwrap();
        self.counted += node.swarm.stats().pending_deltas - before;
        // The outbox and the backlog are one queue: moving it early changes nothing, and
        // shows what the announce published. A stop must reach every node, known here or
        // not: a single tracker fed the same announces would drop the peer.
        let changes = node.swarm.take_changes();
        if event == AnnounceEvent::Stopped {
            assert!(
                changes
                    .iter()
                    .any(|c| c.addr == addr && c.state == PeerState::Stopped),
                "a stop was not published"
            );
        }
        node.backlog.extend(changes.into_iter().map(Record::Peer));
    }

    fn flush(&mut self, n: usize) {
        for (h, d) in self.nodes[n].swarm.take_pending() {
            *self.db.entry(h).or_default() += d;
        }
    }

    /// One tick of `cluster::publish`.
    fn publish(&mut self, n: usize) {
        let node = &mut self.nodes[n];
        node.backlog
            .extend(node.swarm.take_changes().into_iter().map(Record::Peer));
        if !self.up {
            return;
        }
        if node.pub_epoch.is_some_and(|e| e != self.epoch) {
            node.swarm.republish_owned();
            node.backlog
                .extend(node.swarm.take_changes().into_iter().map(Record::Peer));
        }
        node.pub_epoch = Some(self.epoch);
        if node.backlog.is_empty() {
            return;
        }
        let entry = StreamEntry {
            seq: self.next_seq,
            secs: self.now,
            node: node.name.clone(),
            inc: node.inc.clone(),
            data: record::encode(&node.backlog),
        };
        self.history.insert(entry.seq, entry.clone());
        self.stream.push(entry);
        node.backlog.clear();
        self.next_seq += 1;
        // XADD MINID: entries older than the retention go. A node that had not read one
        // misses the downloads it carried, and the peers until their next renewal.
        let now = self.now;
        let gone = self.stream.iter().filter(|e| e.secs + RETAIN < now);
        if let Some(last) = gone.map(|e| e.seq).max() {
            let missed = self.nodes.iter().any(|n| n.next <= last);
            self.counts_may_lag |= missed;
            self.views_may_differ |= missed;
        }
        self.stream.retain(|e| e.secs + RETAIN >= now);
    }

    /// `cluster::read` taking up to `k` entries.
    fn read(&mut self, n: usize, k: usize) {
        if !self.up {
            return;
        }
        let node = &mut self.nodes[n];
        if node.read_epoch.is_some_and(|e| e != self.epoch) {
            node.swarm.forget_remote();
            node.next = 0;
            node.read.clear();
        }
        // `cluster::after_reconnect`: entries this node had not read were trimmed (the bus
        // was away for longer than the stream's reach); it reads the rest as a node that
        // starts now would, its remote peers forgotten.
        let first = self.stream.first().map_or(self.next_seq, |e| e.seq);
        if node.next < first && !node.read.is_empty() {
            node.swarm.forget_remote();
            node.read.clear();
        }
        node.read_epoch = Some(self.epoch);
        let from = self.stream.partition_point(|e| e.seq < node.next);
        let cutoff = self.now - T;
        for e in self.stream[from..].iter().take(k) {
            let entry = Entry {
                id: e.seq.to_string(),
                ms: u64::from(e.secs) * 1000,
                node: e.node.clone(),
                inc: e.inc.clone(),
                data: e.data.clone(),
            };
            let (swarm, count) = (&node.swarm, !node.replaying);
            let applied = node.follower.entry(&entry, |c, origin| {
                let d = Delivery {
                    origin,
                    at: e.secs,
                    cutoff,
                    count,
                };
                swarm.apply(c, &d).unwrap();
            });
            assert!(!applied.malformed);
            node.next = e.seq + 1;
            node.read.push(e.seq);
        }
        if self.stream.last().is_none_or(|e| e.seq < node.next) {
            node.replaying = false;
        }
    }

    /// Traffic stopped: every batch published and read, twice over for what reading one
    /// makes others publish.
    fn settle(&mut self) {
        self.up = true;
        for _ in 0..3 {
            for n in 0..NODES {
                self.publish(n);
            }
            for n in 0..NODES {
                self.read(n, usize::MAX);
            }
        }
    }

    fn view(&self, n: usize) -> View {
        let node = &self.nodes[n];
        let mut out = View::new();
        for h in TORRENTS {
            for p in node.swarm.peers(&h) {
                let owner = match p.owner {
                    None => (node.name.clone(), node.inc.clone()),
                    Some(i) => node.follower.name(i).cloned().expect("a known origin"),
                };
                out.insert((h, p.addr), (p.peer_id, p.seeder, owner));
            }
        }
        out
    }

    /// The entries node `n` read, applied in order by one map, less the peers whose lease
    /// ran out and whose writer does not own them (gone, or no longer the owner).
    fn model(&self, n: usize) -> View {
        let mut m = Model::default();
        for e in self.nodes[n].read.iter().map(|s| &self.history[s]) {
            m.entry(&Entry {
                id: e.seq.to_string(),
                ms: u64::from(e.secs) * 1000,
                node: e.node.clone(),
                inc: e.inc.clone(),
                data: e.data.clone(),
            });
        }
        // A live writer that still owns the peer will say when it leaves; any other record
        // places its peer for one timeout and one lease (a writer that is gone, or one that
        // no longer owns it because of a record this node never read back).
        let owns = |(h, addr): &(InfoHash, SocketAddr), writer: &(String, String)| {
            self.nodes.iter().any(|n| {
                (&n.name, &n.inc) == (&writer.0, &writer.1)
                    && n.swarm
                        .peers(h)
                        .iter()
                        .any(|p| p.addr == *addr && p.owner.is_none())
            })
        };
        let cutoff = self.now - T;
        m.peers
            .into_iter()
            .filter(|(k, p)| owns(k, &p.writer) || (p.ms / 1000) as u32 + LEASE >= cutoff)
            .map(|(k, p)| (k, (p.peer_id.0, p.seeder, p.writer)))
            .collect()
    }
}

fn agree(ops: &[Op]) -> Result<(), TestCaseError> {
    let mut sim = Sim::new();
    for op in ops {
        sim.run(op);
    }
    sim.settle();
    for n in 0..NODES {
        sim.sweep(n);
    }
    sim.settle();
    for n in 0..NODES {
        let model = sim.model(n);
        prop_assert_eq!(&sim.view(n), &model, "node {} differs from its model", n);
    }
    // Every peer a live node owns is on every node, as that node's, however late it started:
    // the renewals make the short stream enough.
    let owned: View = (0..NODES)
        .flat_map(|n| {
            let me = (sim.nodes[n].name.clone(), sim.nodes[n].inc.clone());
            sim.view(n).into_iter().filter(move |(_, p)| p.2 == me)
        })
        .collect();
    for n in 0..NODES {
        let view = sim.view(n);
        for (k, p) in &owned {
            prop_assert_eq!(view.get(k), Some(p), "node {} misses a live node's peer", n);
        }
    }
    // And unless a node missed entries (the bus away for longer than the stream's reach,
    // when a copy may outlive its writer's claim by one timeout and one lease, as a dead
    // node's do), every node holds the same view of what live incarnations wrote.
    if !sim.views_may_differ {
        let alive: HashSet<(String, String)> = sim
            .nodes
            .iter()
            .map(|n| (n.name.clone(), n.inc.clone()))
            .collect();
        let live = |n: usize| -> View {
            let mut v = sim.view(n);
            v.retain(|_, p| alive.contains(&p.2));
            v
        };
        for n in 1..NODES {
            prop_assert_eq!(&live(n), &live(0), "node {} and node 0 differ", n);
        }
    }
    for n in 0..NODES {
        sim.flush(n);
    }
    let db: u64 = sim.db.values().sum();
    prop_assert_eq!(
        db,
        sim.counted - sim.lost,
        "every counted download flushed once"
    );
    if !sim.counts_may_lag {
        for h in TORRENTS {
            let counts: Vec<u64> = (0..NODES)
                .map(|n| sim.nodes[n].swarm.scrape(&h).downloaded)
                .collect();
            prop_assert!(
                counts
                    .iter()
                    .all(|c| *c == sim.db.get(&h).copied().unwrap_or(0)),
                "download counts {:?} vs database {:?}",
                counts,
                sim.db.get(&h)
            );
        }
    }
    Ok(())
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]
    #[test]
    fn every_node_agrees_with_the_model(ops in proptest::collection::vec(op(), 1..150)) {
        agree(&ops)?;
    }
}

/// The four cases issue 18 reported, as operation sequences.
mod reported;
