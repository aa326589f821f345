//! Several nodes, one swarm (docs/design.md, "Several nodes"): this node's peer changes go into a Redis
//! stream in batches; every other node's are read from it and applied to the local swarm.
//! Nothing on the request path waits on Redis: announces only fill the swarm's outbox.

pub mod follow;
pub mod record;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Value};
use store::AnyStore;

use self::follow::{Entry, Follower};
use self::record::Record;
use crate::config::ClusterConfig;
use crate::tracker::Tracker;
use crate::tracker::metrics::Text;

/// The stream every node writes to and reads from.
pub const STREAM: &str = "shoal:swarm";
/// A random value the first node to reach an empty Redis sets: when it changes, the bus
/// lost its data (a Redis restarted empty) and every node starts the stream afresh.
pub const EPOCH: &str = "shoal:epoch";
/// While the bus stays unreachable, its error is logged again at most this often.
const ERROR_LOG_EVERY: Duration = Duration::from_secs(60);
/// Records per stream entry at most.
const ENTRY_RECORDS: usize = 10_000;
/// How long after a peer's last record the stream keeps it, beyond one timeout and one lease.
const RETAIN_SLACK_MS: u64 = 60_000;
/// A node that had nothing to say for this long says so (an empty entry), so every node
/// knows which nodes are alive.
const PRESENCE: Duration = Duration::from_secs(5);

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
        let mut r = [0u8; 8];
        // Without the OS's randomness, the time still tells two starts apart.
        if getrandom::fill(&mut r).is_err() {
            r = (unix_ms() as u64).to_le_bytes();
        }
        BusState {
            node_id,
            incarnation: format!("{:016x}", u64::from_le_bytes(r)),
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
    fn error(&self, what: &str, e: &redis::RedisError) {
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
    fn answered(&self) {
        if !self.up.load(Relaxed) {
            self.reached();
        }
    }

    /// The bus answered: ends an outage, saying so if one was logged.
    fn reached(&self) {
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

    /// Peer records this node has put on the bus.
    pub fn published(&self) -> u64 {
        self.published.load(Relaxed)
    }

    /// Nodes heard from within `window`, this one included.
    pub fn nodes(&self, window: Duration) -> usize {
        let nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        1 + nodes.values().filter(|t| t.elapsed() <= window).count()
    }

    fn heard(&self, node: &str) {
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

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Where the bus is: its URL, and for `rediss://` the CA to trust (None: the system's).
#[derive(Clone)]
struct Bus {
    url: String,
    ca: Option<Vec<u8>>,
}

async fn connect(bus: &Bus) -> redis::RedisResult<MultiplexedConnection> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(5)));
    let client = match &bus.ca {
        Some(pem) => redis::Client::build_with_tls(
            bus.url.as_str(),
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(pem.clone()),
            },
        )?,
        None => redis::Client::open(bus.url.as_str())?,
    };
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
}

/// This node's view of the bus's epoch (`EPOCH`), one per task: the publisher republishes
/// and the reader forgets and rereads when it changes.
#[derive(Default)]
struct Epoch(Option<String>);

impl Epoch {
    /// Reads the bus's epoch, setting one if the bus has none; true if it changed since the
    /// last call (never on the first).
    async fn changed(&mut self, c: &mut MultiplexedConnection) -> redis::RedisResult<bool> {
        let mut r = [0u8; 8];
        let _ = getrandom::fill(&mut r);
        let mine = format!("{:016x}", u64::from_le_bytes(r) ^ unix_ms());
        let _: Value = redis::cmd("SET")
            .arg(EPOCH)
            .arg(&mine)
            .arg("NX")
            .query_async(c)
            .await?;
        let now: String = redis::cmd("GET").arg(EPOCH).query_async(c).await?;
        let changed = self.0.as_ref().is_some_and(|known| *known != now);
        self.0 = Some(now);
        Ok(changed)
    }
}

/// Starts the publisher and the reader. The reader first replays one peer timeout of the
/// stream, then sets `ready`.
pub fn start(
    config: &ClusterConfig,
    tracker: Arc<Tracker>,
    store: AnyStore,
    state: Arc<BusState>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinSet<()> {
    let mut tasks = tokio::task::JoinSet::new();
    // rustls needs one process-wide crypto provider for rediss://; a second install is a no-op.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let url = Bus {
        url: config.redis_url.expose().to_string(),
        ca: (!config.redis_ca_cert_path.is_empty())
            .then(|| std::fs::read(&config.redis_ca_cert_path).ok())
            .flatten(),
    };
    // A peer of another node lives here one timeout and one lease past its last record
    // (swarm `apply`): a node replaying the stream must see that far back.
    let timeout = tracker.policy().peer_timeout;
    let retain_ms = u64::from(timeout + (timeout / 2).max(1)) * 1000 + RETAIN_SLACK_MS;
    tasks.spawn(publish(
        url.clone(),
        tracker.clone(),
        state.clone(),
        Duration::from_millis(config.batch_ms.get()),
        config.max_backlog.get(),
        retain_ms,
        stop.clone(),
    ));
    tasks.spawn(read(url, tracker, store, state, retain_ms, stop));
    tasks
}

async fn publish(
    url: Bus,
    tracker: Arc<Tracker>,
    state: Arc<BusState>,
    every: Duration,
    max_backlog: usize,
    retain_ms: u64,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut backlog: VecDeque<Record> = VecDeque::new();
    let mut conn: Option<MultiplexedConnection> = None;
    let mut epoch = Epoch::default();
    let mut last_sent: Option<Instant> = None;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let me = (state.node_id.as_str(), state.incarnation.as_str());
    loop {
        let stopping = tokio::select! {
            _ = tick.tick() => false,
            _ = stop.changed() => true,
        };
        if tracker.access().take_changed() {
            backlog.push_back(Record::AccessChanged);
        }
        backlog.extend(tracker.take_changes().into_iter().map(Record::Peer));
        while backlog.len() > max_backlog {
            backlog.pop_front();
            state.dropped.fetch_add(1, Relaxed);
        }
        if conn.is_none() {
            let connected = match connect(&url).await {
                Ok(mut c) => epoch.changed(&mut c).await.map(|lost| (c, lost)),
                Err(e) => Err(e),
            };
            match connected {
                Ok((c, lost)) => {
                    conn = Some(c);
                    state.reached();
                    if lost {
                        // The bus lost everything (a Redis restarted empty): the other
                        // nodes learn this node's peers again.
                        tracker.republish_owned();
                        backlog.extend(tracker.take_changes().into_iter().map(Record::Peer));
                    }
                }
                Err(e) => state.error("cannot reach the bus", &e),
            }
        }
        if let Some(c) = &mut conn {
            if backlog.is_empty() && last_sent.is_none_or(|t| t.elapsed() >= PRESENCE) {
                match add(c, me, &[], retain_ms).await {
                    Ok(()) => last_sent = Some(Instant::now()),
                    Err(e) => {
                        state.error("cannot publish to the bus", &e);
                        conn = None;
                    }
                }
            }
        }
        if let Some(c) = &mut conn {
            while !backlog.is_empty() {
                let n = backlog.len().min(ENTRY_RECORDS);
                let batch: Vec<Record> = backlog.range(..n).copied().collect();
                match add(c, me, &batch, retain_ms).await {
                    Ok(()) => {
                        state.answered();
                        last_sent = Some(Instant::now());
                        backlog.drain(..n);
                        let peers = batch.iter().filter(|r| matches!(r, Record::Peer(_)));
                        state.published.fetch_add(peers.count() as u64, Relaxed);
                    }
                    Err(e) => {
                        state.error("cannot publish to the bus", &e);
                        conn = None;
                        break;
                    }
                }
            }
        }
        state.backlog.store(backlog.len() as u64, Relaxed);
        if stopping {
            return;
        }
    }
}

async fn add(
    c: &mut MultiplexedConnection,
    (node, inc): (&str, &str),
    batch: &[Record],
    retain_ms: u64,
) -> redis::RedisResult<()> {
    // Entries older than one peer timeout (and a little) hold no live peer: trim them as
    // this one goes in, so the stream never grows beyond that.
    let min_id = unix_ms().saturating_sub(retain_ms);
    let _: Value = redis::cmd("XADD")
        .arg(STREAM)
        .arg("MINID")
        .arg("~")
        .arg(min_id)
        .arg("*")
        .arg("node")
        .arg(node)
        .arg("inc")
        .arg(inc)
        .arg("d")
        .arg(record::encode(batch))
        .query_async(c)
        .await?;
    Ok(())
}

fn bytes(v: &Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b.clone()),
        Value::SimpleString(s) => Some(s.clone().into_bytes()),
        _ => None,
    }
}

/// Entries of an XRANGE reply, or of one stream of an XREAD reply.
pub fn entries(v: &Value) -> Vec<Entry> {
    let Value::Array(items) = v else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for item in items {
        let Value::Array(pair) = item else { continue };
        let (Some(id), Some(Value::Array(fields))) = (pair.first().and_then(bytes), pair.get(1))
        else {
            continue;
        };
        let id = String::from_utf8_lossy(&id).into_owned();
        let ms = id
            .split('-')
            .next()
            .and_then(|m| m.parse().ok())
            .unwrap_or(0);
        let (mut node, mut inc, mut data) = (String::new(), String::new(), Vec::new());
        for kv in fields.chunks(2) {
            match (kv.first().and_then(bytes), kv.get(1).and_then(bytes)) {
                (Some(k), Some(v)) if k == b"node" => node = String::from_utf8_lossy(&v).into(),
                (Some(k), Some(v)) if k == b"inc" => inc = String::from_utf8_lossy(&v).into(),
                (Some(k), Some(v)) if k == b"d" => data = v,
                _ => {}
            }
        }
        out.push(Entry {
            id,
            ms,
            node,
            inc,
            data,
        });
    }
    out
}

async fn read(
    url: Bus,
    tracker: Arc<Tracker>,
    store: AnyStore,
    state: Arc<BusState>,
    retain_ms: u64,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    // Replaying from one peer timeout ago rebuilds every live remote peer: each has a
    // record within that window.
    let mut last = format!("{}-0", unix_ms().saturating_sub(retain_ms));
    let mut replaying = true;
    let mut conn: Option<MultiplexedConnection> = None;
    let mut epoch = Epoch::default();
    let mut follower = Follower::new(&state.node_id, &state.incarnation);
    loop {
        if *stop.borrow() {
            return;
        }
        if conn.is_none() {
            let connected = match connect(&url).await {
                Ok(mut c) => epoch.changed(&mut c).await.map(|lost| (c, lost)),
                Err(e) => Err(e),
            };
            match connected {
                Ok((mut c, lost)) => {
                    if lost {
                        // What this node learned from the lost stream stands on nothing
                        // now; the owners publish their peers again, read from the start.
                        let n = tracker.forget_remote();
                        tracing::warn!(
                            "the bus lost its data (Redis restarted empty?): forgot {n} peers of other nodes; rereading the stream as the nodes republish"
                        );
                        last = "0-0".into();
                    } else if !replaying {
                        after_reconnect(&mut c, &mut last).await;
                    }
                    if !replaying {
                        reload_access(&tracker, &store, "after a bus reconnect").await;
                    }
                    conn = Some(c);
                }
                Err(e) => {
                    state.error("cannot reach the bus", &e);
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                        _ = stop.changed() => {}
                    }
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        let reply: redis::RedisResult<Value> = if replaying {
            redis::cmd("XRANGE")
                .arg(STREAM)
                .arg(format!("({last}"))
                .arg("+")
                .arg("COUNT")
                .arg(100)
                .query_async(c)
                .await
        } else {
            redis::cmd("XREAD")
                .arg("COUNT")
                .arg(100)
                .arg("BLOCK")
                .arg(1000)
                .arg("STREAMS")
                .arg(STREAM)
                .arg(&last)
                .query_async(c)
                .await
        };
        let reply = match reply {
            Ok(v) => {
                state.answered();
                v
            }
            Err(e) => {
                state.error("cannot read the bus", &e);
                conn = None;
                continue;
            }
        };
        let batch = if replaying {
            entries(&reply)
        } else {
            match &reply {
                // [[stream, entries]]
                Value::Array(streams) => streams
                    .iter()
                    .flat_map(|s| match s {
                        Value::Array(kv) => kv.get(1).map(entries).unwrap_or_default(),
                        _ => Vec::new(),
                    })
                    .collect(),
                _ => Vec::new(),
            }
        };
        if replaying && batch.is_empty() {
            replaying = false;
            state.ready.store(true, Relaxed);
            tracing::info!("caught up with the bus: the swarm holds every node's peers");
            // A node that could not read the stream in time took no notices either.
            reload_access(&tracker, &store, "after catching up").await;
            continue;
        }
        let now = unix_ms();
        for e in &batch {
            last.clone_from(&e.id);
            if e.node != state.node_id {
                state.heard(&e.node);
            }
            let age = (now.saturating_sub(e.ms) / 1000) as u32;
            let applied = follower.entry(e, |c, origin| {
                // A refusal (a limit met) leaves the peer out of this node's view only.
                let _ = tracker.apply_remote(c, origin, age, !replaying);
            });
            if applied.malformed {
                state.errors.fetch_add(1, Relaxed);
                tracing::warn!(
                    "bus entry {} from node {} is malformed; skipped",
                    e.id,
                    e.node
                );
            }
            state.applied.fetch_add(applied.peers as u64, Relaxed);
            if applied.access_changed && !replaying {
                reload_access(&tracker, &store, "after a notice").await;
            }
        }
        if let Some(e) = batch.last() {
            state.lag_ms.store(now.saturating_sub(e.ms), Relaxed);
        }
    }
}

async fn reload_access(tracker: &Tracker, store: &AnyStore, when: &str) {
    if let Err(e) = tracker.access().reload(store).await {
        tracing::warn!("cannot reload the whitelist and keys {when}: {e}");
    }
}

/// After the bus was away with its data kept: if the stream's ids went back (a Redis
/// restored from an older snapshot), read it from its start.
async fn after_reconnect(c: &mut MultiplexedConnection, last: &mut String) {
    let ours = last
        .split('-')
        .next()
        .and_then(|m| m.parse::<u64>().ok())
        .unwrap_or(0);
    let info: redis::RedisResult<Value> = redis::cmd("XINFO")
        .arg("STREAM")
        .arg(STREAM)
        .query_async(c)
        .await;
    let theirs = match info {
        Ok(Value::Array(kv)) => kv
            .chunks(2)
            .find(|p| p.first().and_then(bytes).as_deref() == Some(b"last-generated-id"))
            .and_then(|p| p.get(1).and_then(bytes))
            .and_then(|id| {
                String::from_utf8_lossy(&id)
                    .split('-')
                    .next()?
                    .parse::<u64>()
                    .ok()
            }),
        _ => None,
    };
    if theirs.is_none_or(|t| t < ours) {
        *last = "0-0".into();
    }
}
