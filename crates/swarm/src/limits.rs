//! What the swarm may hold, and the refusal an announce gets past a limit.

/// What the swarm may hold, so a hostile client cannot make it hold more (docs/design.md, "Peers").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Torrents with peers.
    pub max_torrents: usize,
    /// Peers in all torrents together.
    pub max_peers: usize,
    /// Peers in one torrent, both families together.
    pub max_peers_per_torrent: usize,
    /// Peers from one IP address in one torrent.
    pub max_peers_per_ip: usize,
    /// Download counts held (with peers or without); past it a first download of a torrent
    /// is not counted. Counts loaded at start are always kept.
    pub max_counted_torrents: usize,
}

impl Limits {
    pub const NONE: Limits = Limits {
        max_torrents: usize::MAX,
        max_peers: usize::MAX,
        max_peers_per_torrent: usize::MAX,
        max_peers_per_ip: usize::MAX,
        max_counted_torrents: usize::MAX,
    };
}

/// Why an announce was not recorded: which limit it met.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Torrents,
    Peers,
    PeersPerTorrent,
    PeersPerIp,
}

impl Refusal {
    pub fn message(self) -> &'static str {
        match self {
            Refusal::Torrents => {
                "tracker full: it holds limits.max_torrents torrents and takes no new one"
            }
            Refusal::Peers => "tracker full: it holds limits.max_peers peers and takes no new one",
            Refusal::PeersPerTorrent => {
                "swarm full: this torrent has limits.max_peers_per_torrent peers"
            }
            Refusal::PeersPerIp => {
                "too many peers from your address in this torrent (limits.max_peers_per_ip)"
            }
        }
    }
}
