//! The bus as this node sees it: up or not, replayed or not, its figures, and its trouble,
//! logged the way an operator can read (docs/design.md, "Several nodes").

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use crate::tracker::Tracker;
use crate::tracker::metrics::Text;

/// While the bus stays unreachable, its error is logged again at most this often.
const ERROR_LOG_EVERY: Duration = Duration::from_secs(60);

/// What `/health`, `/api/v1/stats` and `/metrics` show of the bus.
#[derive(Default)]
pub struct BusState {
    pub node_id: String,
    /// This start of the node: entries of its earlier incarnations are another node's.
    pub incarnation: String,
    /// The stream has been replayed: the swarm holds every other node's peers.
    ready: AtomicBool,
    up: AtomicBool,
    published: AtomicU64,
    applied: AtomicU64,
    errors: AtomicU64,
    /// Records waiting to be published.
    backlog: AtomicU64,
    /// Records dropped because the backlog was full.
    dropped: AtomicU64,
    /// Milliseconds from a record's publication to its application here, last batch.
    lag_ms: AtomicU64,
    nodes: Mutex<HashMap<String, Instant>>,
    /// Past it, a node that has not read the stream serves as degraded.
    catch_up_by: Option<Instant>,
    trouble: Mutex<Trouble>,
}

/// The bus's current outage, as logged and shown.
#[derive(Default)]
struct Trouble {
    /// The last error, with its kind: shown by `/health` while the bus is away.
    last: Option<String>,
    /// Errors since the outage began, and since the last log line.
    errors: u64,
    unlogged: u64,
    logged_at: Option<Instant>,
}

/// What `/health` makes of the bus.
#[derive(Debug, PartialEq, Eq)]
pub enum BusHealth {
    Ready,
    /// Replaying the stream, within `cluster.catch_up_timeout_ms`: not ready.
    CatchingUp,
    /// Serving from this node's own view: the bus is away, or could not be read in time.
    Degraded(String),
}

impl BusState {
    pub fn new(node_id: String, catch_up_timeout: Duration) -> Self {
        BusState {
            node_id,
            incarnation: format!("{:016x}", crate::os::random_u64()),
            catch_up_by: Instant::now().checked_add(catch_up_timeout),
            ..Default::default()
        }
    }

    pub fn health(&self) -> BusHealth {
        let up = self.up.load(Relaxed);
        let ready = self.ready.load(Relaxed);
        if up && ready {
            return BusHealth::Ready;
        }
        let why = || {
            let t = self.trouble.lock().unwrap_or_else(|e| e.into_inner());
            t.last.clone().unwrap_or_else(|| "not connected yet".into())
        };
        if !ready {
            if self.catch_up_by.is_some_and(|t| Instant::now() < t) {
                return BusHealth::CatchingUp;
            }
            return BusHealth::Degraded(format!(
                "has not read the stream within cluster.catch_up_timeout_ms: {}",
                why()
            ));
        }
        BusHealth::Degraded(format!("bus unreachable: {}", why()))
    }

    /// Counts a failed bus operation and logs it: the first of an outage at once, then at
    /// most once a minute with how many there were.
    pub(super) fn error(&self, what: &str, e: &redis::RedisError) {
        self.errors.fetch_add(1, Relaxed);
        self.up.store(false, Relaxed);
        let line = format!("{what} ({}): {e}", kind(e));
        let mut t = self.trouble.lock().unwrap_or_else(|e| e.into_inner());
        t.errors += 1;
        t.unlogged += 1;
        t.last = Some(line.clone());
        if t.logged_at.is_none_or(|at| at.elapsed() >= ERROR_LOG_EVERY) {
            if t.errors == 1 {
                tracing::warn!("{line}; answering from this node's view until it returns");
            } else {
                tracing::warn!("{line}; {} bus errors since the last report", t.unlogged);
            }
            t.logged_at = Some(Instant::now());
            t.unlogged = 0;
        }
    }

    /// A bus operation succeeded: after an error elsewhere (the other task's connection),
    /// this connection shows the bus is back.
    pub(super) fn answered(&self) {
        if !self.up.load(Relaxed) {
            self.reached();
        }
    }

    /// The bus answered: ends an outage, saying so if one was logged.
    pub(super) fn reached(&self) {
        self.up.store(true, Relaxed);
        let mut t = self.trouble.lock().unwrap_or_else(|e| e.into_inner());
        if t.errors > 0 {
            tracing::info!("the bus is reachable again after {} errors", t.errors);
        }
        *t = Trouble::default();
    }

    /// Whether the stream has been replayed since start.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Relaxed)
    }

    /// The replay is done: the swarm holds every other node's peers.
    pub(super) fn caught_up(&self) {
        self.ready.store(true, Relaxed);
    }

    /// `n` peer records went on the bus.
    pub(super) fn sent(&self, n: u64) {
        self.published.fetch_add(n, Relaxed);
    }

    /// `n` records wait for the bus.
    pub(super) fn waiting(&self, n: usize) {
        self.backlog.store(n as u64, Relaxed);
    }

    /// A record was dropped: the backlog was full.
    pub(super) fn dropped_one(&self) {
        self.dropped.fetch_add(1, Relaxed);
    }

    /// An entry could not be read.
    pub(super) fn malformed(&self) {
        self.errors.fetch_add(1, Relaxed);
    }

    /// `n` records of an entry written `lag_ms` ago were applied.
    pub(super) fn applied(&self, n: usize, lag_ms: u64) {
        self.applied.fetch_add(n as u64, Relaxed);
        self.lag_ms.store(lag_ms, Relaxed);
    }

    /// Peer records this node has put on the bus.
    pub fn published(&self) -> u64 {
        self.published.load(Relaxed)
    }

    /// Nodes heard from within `window`, this one included.
    pub fn nodes(&self, window: Duration) -> usize {
        let nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        1 + nodes.values().filter(|t| t.elapsed() <= window).count()
    }

    pub(super) fn heard(&self, node: &str) {
        let mut nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        nodes.insert(node.to_string(), Instant::now());
    }
}

/// The bus as `/health` and `/api/v1/stats` show it.
pub fn json(b: &BusState, tracker: &Tracker) -> serde_json::Value {
    let window = Duration::from_secs(u64::from(tracker.policy().peer_timeout));
    let problem = match b.health() {
        BusHealth::Degraded(why) => Some(why),
        _ => None,
    };
    serde_json::json!({
        "node_id": b.node_id,
        "incarnation": b.incarnation,
        "problem": problem,
        "up": b.up.load(Relaxed),
        "ready": b.ready.load(Relaxed),
        "nodes": b.nodes(window),
        "lag_ms": b.lag_ms.load(Relaxed),
        "published": b.published.load(Relaxed),
        "applied": b.applied.load(Relaxed),
        "backlog": b.backlog.load(Relaxed),
        "dropped": b.dropped.load(Relaxed) + tracker.dropped_changes(),
        "errors": b.errors.load(Relaxed),
    })
}

/// The bus in Prometheus text, appended to `/metrics`.
pub fn metrics(b: &BusState, tracker: &Tracker, out: &mut Text) {
    let window = Duration::from_secs(u64::from(tracker.policy().peer_timeout));
    out.gauge(
        "shoal_cluster_bus_up",
        "1 while this node reaches the bus.",
        u8::from(b.up.load(Relaxed)),
    );
    out.gauge(
        "shoal_cluster_ready",
        "1 once the stream was replayed at start.",
        u8::from(b.ready.load(Relaxed)),
    );
    out.gauge(
        "shoal_cluster_nodes",
        "Nodes heard from within one peer timeout, this one included.",
        b.nodes(window),
    );
    out.counter(
        "shoal_cluster_published_total",
        "Peer changes this node put on the bus.",
        b.published.load(Relaxed),
    );
    out.counter(
        "shoal_cluster_applied_total",
        "Peer changes read from the bus and applied here.",
        b.applied.load(Relaxed),
    );
    out.counter(
        "shoal_cluster_bus_errors_total",
        "Failed bus operations (connects, writes, reads, malformed entries).",
        b.errors.load(Relaxed),
    );
    out.gauge(
        "shoal_cluster_backlog",
        "Peer changes waiting for the bus.",
        b.backlog.load(Relaxed),
    );
    out.counter(
        "shoal_cluster_dropped_total",
        "Peer changes dropped because the backlog was full.",
        b.dropped.load(Relaxed) + tracker.dropped_changes(),
    );
    out.gauge(
        "shoal_cluster_lag_seconds",
        "From publication on another node to application here, last batch.",
        b.lag_ms.load(Relaxed) as f64 / 1000.0,
    );
}

/// A failed bus operation's kind, for the log line an operator reads first.
fn kind(e: &redis::RedisError) -> &'static str {
    let text = e.to_string().to_ascii_lowercase();
    if e.kind() == redis::ErrorKind::AuthenticationFailed
        || text.contains("wrongpass")
        || text.contains("noauth")
        || text.contains("auth")
    {
        "authentication"
    } else if e.is_connection_refusal() {
        "refused"
    } else if e.is_timeout() {
        "timeout"
    } else if text.contains("tls") || text.contains("certificate") || text.contains("handshake") {
        "TLS"
    } else if e.is_io_error() || e.is_connection_dropped() {
        "connection"
    } else {
        "server"
    }
}
