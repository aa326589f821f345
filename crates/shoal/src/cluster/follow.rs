//! Reading the stream, without I/O: which incarnation wrote an entry, and what its records
//! do to this node's swarm. The Redis reader and the agreement property test
//! (`cluster/tests.rs`) both go through `Follower`, so the test proves the code that runs.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;

use protocol::{InfoHash, PeerId};
use swarm::{Origin, PeerChange, PeerState};

use super::record::{self, Record};

/// One stream entry: its id, its id's milliseconds, the incarnation that wrote it, its
/// records (`record::encode`).
#[derive(Debug, Clone)]
pub struct Entry {
    pub id: String,
    pub ms: u64,
    pub node: String,
    /// The writer's incarnation (empty in entries of versions before incarnations).
    pub inc: String,
    pub data: Vec<u8>,
}

/// What applying one entry asks of the caller besides the peer records.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Applied {
    pub peers: usize,
    /// The whitelist or keys changed: reload them from the store.
    pub access_changed: bool,
    /// The entry could not be read; nothing of it was applied.
    pub malformed: bool,
}

/// Maps incarnations to the `Origin` indexes the swarm keeps in each remote peer, and tells
/// this node's own entries from those of its earlier incarnations (which are another
/// node's, docs/design.md "Agreement").
pub struct Follower {
    node: String,
    inc: String,
    origins: HashMap<(String, String), u16>,
    /// Index → (incarnation, entry ms of its latest entry), for reuse when full.
    last: Vec<((String, String), u64)>,
}

impl Follower {
    pub fn new(node: &str, inc: &str) -> Self {
        Follower {
            node: node.to_string(),
            inc: inc.to_string(),
            origins: HashMap::new(),
            last: Vec::new(),
        }
    }

    /// The `Origin` of entries written by `node`/`inc`.
    pub fn origin(&mut self, node: &str, inc: &str, ms: u64) -> Origin {
        if node == self.node && inc == self.inc {
            return Origin::Me;
        }
        let key = (node.to_string(), inc.to_string());
        if let Some(&i) = self.origins.get(&key) {
            self.last[usize::from(i) - 1].1 = ms;
            return Origin::Node(i);
        }
        let i = if self.last.len() < usize::from(Origin::MAX_NODE) {
            self.last.push((key.clone(), ms));
            self.last.len() as u16
        } else {
            // Every index taken (32767 incarnations seen): reuse the one silent longest.
            // Its peers expired long ago unless it wrote within one peer timeout, which
            // 32767 live incarnations at once would need.
            let (at, _) = self
                .last
                .iter()
                .enumerate()
                .min_by_key(|(_, (_, ms))| *ms)
                .expect("full");
            let old = std::mem::replace(&mut self.last[at], (key.clone(), ms));
            self.origins.remove(&old.0);
            at as u16 + 1
        };
        self.origins.insert(key, i);
        Origin::Node(i)
    }

    /// The incarnation behind an `Origin::Node` index (node id, incarnation).
    pub fn name(&self, i: u16) -> Option<&(String, String)> {
        self.last
            .get(usize::from(i).checked_sub(1)?)
            .map(|(k, _)| k)
    }

    /// Reads an entry and hands each peer record to `apply` with its origin.
    pub fn entry(&mut self, e: &Entry, mut apply: impl FnMut(&PeerChange, Origin)) -> Applied {
        let Some(records) = record::decode(&e.data) else {
            return Applied {
                malformed: true,
                ..Applied::default()
            };
        };
        let origin = self.origin(&e.node, &e.inc, e.ms);
        let mut out = Applied::default();
        for r in records {
            match r {
                Record::Peer(c) => {
                    apply(&c, origin);
                    out.peers += 1;
                }
                // This node's own notice was acted on when it was made.
                Record::AccessChanged => out.access_changed |= origin != Origin::Me,
            }
        }
        out
    }
}

/// The agreement rule as one map (docs/design.md, "Agreement"): the stream's records applied
/// in stream order, where a join places a peer owned by its writer, a stop removes it, and
/// an expiry removes it only from its owner. Once every node has read the same entries,
/// each node's view must equal this; the property tests hold the nodes to it.
#[derive(Debug, Default)]
pub struct Model {
    pub peers: BTreeMap<(InfoHash, SocketAddr), ModelPeer>,
    /// Records that carried a counted `completed`, per torrent.
    pub completed: BTreeMap<InfoHash, u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelPeer {
    pub peer_id: PeerId,
    pub seeder: bool,
    /// (node id, incarnation) of the latest record's writer.
    pub writer: (String, String),
    /// That record's entry time.
    pub ms: u64,
}

impl Model {
    pub fn entry(&mut self, e: &Entry) {
        let writer = (e.node.clone(), e.inc.clone());
        for r in record::decode(&e.data).unwrap_or_default() {
            let Record::Peer(c) = r else { continue };
            if c.completed {
                *self.completed.entry(c.info_hash).or_default() += 1;
            }
            let key = (c.info_hash, c.addr);
            match c.state {
                PeerState::Seeder | PeerState::Leecher => {
                    let p = ModelPeer {
                        peer_id: c.peer_id,
                        seeder: c.state == PeerState::Seeder,
                        writer: writer.clone(),
                        ms: e.ms,
                    };
                    self.peers.insert(key, p);
                }
                PeerState::Stopped => {
                    self.peers.remove(&key);
                }
                PeerState::Expired => {
                    if self.peers.get(&key).is_some_and(|p| p.writer == writer) {
                        self.peers.remove(&key);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_earlier_incarnation_of_this_node_is_another_node() {
        let mut f = Follower::new("n2", "b");
        assert_eq!(f.origin("n2", "b", 0), Origin::Me);
        let old = f.origin("n2", "a", 0);
        assert_ne!(old, Origin::Me);
        assert_ne!(f.origin("n1", "a", 0), old);
        assert_eq!(f.origin("n2", "a", 1), old, "stable");
    }

    #[test]
    fn indexes_are_reused_when_all_are_taken() {
        let mut f = Follower::new("me", "x");
        for i in 0..Origin::MAX_NODE as u64 {
            f.origin("n", &i.to_string(), 1000 + i);
        }
        // The oldest (inc "0", ms 1000) gives its index to the newcomer.
        let first = f.origin("n", "0", 5000);
        let Origin::Node(i) = f.origin("n", "new", 6000) else {
            panic!()
        };
        assert!((1..=Origin::MAX_NODE).contains(&i));
        assert_ne!(Origin::Node(i), first);
    }
}
