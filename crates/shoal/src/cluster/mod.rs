//! Several nodes, one swarm (DESIGN section 8): this node's peer changes go into a Redis
//! stream in batches; every other node's are read from it and applied to the local swarm.
//! Nothing on the request path waits on Redis: announces only fill the swarm's outbox.

pub mod record;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Value};
use store::AnyStore;

use self::record::Record;
use crate::config::ClusterConfig;
use crate::tracker::Tracker;

/// The stream every node writes to and reads from.
pub const STREAM: &str = "shoal:swarm";
/// Records per stream entry at most.
const ENTRY_RECORDS: usize = 10_000;
/// How long after a peer's last record the stream keeps it, beyond one peer timeout.
const RETAIN_SLACK_MS: u64 = 60_000;
/// A node that had nothing to say for this long says so (an empty entry), so every node
/// knows which nodes are alive.
const PRESENCE: Duration = Duration::from_secs(5);

/// What `/health`, `/api/v1/stats` and `/metrics` show of the bus.
#[derive(Default)]
pub struct BusState {
    pub node_id: String,
    /// The stream has been replayed: the swarm holds every other node's peers.
    pub ready: AtomicBool,
    pub up: AtomicBool,
    pub published: AtomicU64,
    pub applied: AtomicU64,
    pub errors: AtomicU64,
    /// Records waiting to be published.
    pub backlog: AtomicU64,
    /// Records dropped because the backlog was full.
    pub dropped: AtomicU64,
    /// Milliseconds from a record's publication to its application here, last batch.
    pub lag_ms: AtomicU64,
    nodes: Mutex<HashMap<String, Instant>>,
}

impl BusState {
    pub fn new(node_id: String) -> Self {
        BusState {
            node_id,
            ..Default::default()
        }
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
    serde_json::json!({
        "node_id": b.node_id,
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
pub fn metrics(b: &BusState, tracker: &Tracker) -> String {
    use std::fmt::Write;
    let window = Duration::from_secs(u64::from(tracker.policy().peer_timeout));
    let mut out = String::new();
    let mut put = |name: &str, kind: &str, help: &str, v: u64| {
        let _ = write!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}\n"
        );
    };
    put(
        "shoal_cluster_bus_up",
        "gauge",
        "1 while this node reaches the bus.",
        b.up.load(Relaxed) as u64,
    );
    put(
        "shoal_cluster_ready",
        "gauge",
        "1 once the stream was replayed at start.",
        b.ready.load(Relaxed) as u64,
    );
    put(
        "shoal_cluster_nodes",
        "gauge",
        "Nodes heard from within one peer timeout, this one included.",
        b.nodes(window) as u64,
    );
    put(
        "shoal_cluster_published_total",
        "counter",
        "Peer changes this node put on the bus.",
        b.published.load(Relaxed),
    );
    put(
        "shoal_cluster_applied_total",
        "counter",
        "Peer changes of other nodes applied here.",
        b.applied.load(Relaxed),
    );
    put(
        "shoal_cluster_bus_errors_total",
        "counter",
        "Failed bus operations (connects, writes, reads, malformed entries).",
        b.errors.load(Relaxed),
    );
    put(
        "shoal_cluster_backlog",
        "gauge",
        "Peer changes waiting for the bus.",
        b.backlog.load(Relaxed),
    );
    put(
        "shoal_cluster_dropped_total",
        "counter",
        "Peer changes dropped because the backlog was full.",
        b.dropped.load(Relaxed) + tracker.dropped_changes(),
    );
    let lag = b.lag_ms.load(Relaxed) as f64 / 1000.0;
    let _ = write!(
        out,
        "# HELP shoal_cluster_lag_seconds From publication on another node to application here, last batch.\n# TYPE shoal_cluster_lag_seconds gauge\nshoal_cluster_lag_seconds {lag}\n"
    );
    out
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
    let retain_ms = u64::from(tracker.policy().peer_timeout) * 1000 + RETAIN_SLACK_MS;
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
    let mut last_sent: Option<Instant> = None;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
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
            match connect(&url).await {
                Ok(c) => {
                    conn = Some(c);
                    if !state.up.swap(true, Relaxed) {
                        // The bus may have lost everything (a Redis restarted empty): the
                        // other nodes learn this node's peers again.
                        tracker.republish_owned();
                        backlog.extend(tracker.take_changes().into_iter().map(Record::Peer));
                    }
                }
                Err(e) => bus_error(&state, &format!("cannot reach the bus: {e}")),
            }
        }
        if let Some(c) = &mut conn {
            if backlog.is_empty() && last_sent.is_none_or(|t| t.elapsed() >= PRESENCE) {
                match add(c, &state.node_id, &[], retain_ms).await {
                    Ok(()) => last_sent = Some(Instant::now()),
                    Err(e) => {
                        bus_error(&state, &format!("cannot publish to the bus: {e}"));
                        conn = None;
                    }
                }
            }
        }
        if let Some(c) = &mut conn {
            while !backlog.is_empty() {
                let n = backlog.len().min(ENTRY_RECORDS);
                let batch: Vec<Record> = backlog.range(..n).copied().collect();
                match add(c, &state.node_id, &batch, retain_ms).await {
                    Ok(()) => {
                        last_sent = Some(Instant::now());
                        backlog.drain(..n);
                        let peers = batch.iter().filter(|r| matches!(r, Record::Peer(_)));
                        state.published.fetch_add(peers.count() as u64, Relaxed);
                    }
                    Err(e) => {
                        bus_error(&state, &format!("cannot publish to the bus: {e}"));
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

fn bus_error(state: &BusState, what: &str) {
    state.errors.fetch_add(1, Relaxed);
    if state.up.swap(false, Relaxed) {
        tracing::warn!("{what}; answering from this node's view until it returns");
    }
}

async fn add(
    c: &mut MultiplexedConnection,
    node: &str,
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
        .arg("d")
        .arg(record::encode(batch))
        .query_async(c)
        .await?;
    Ok(())
}

/// A stream entry: its id's milliseconds, the node that wrote it, its records.
struct Entry {
    id: String,
    ms: u64,
    node: String,
    data: Vec<u8>,
}

fn bytes(v: &Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b.clone()),
        Value::SimpleString(s) => Some(s.clone().into_bytes()),
        _ => None,
    }
}

/// Entries of an XRANGE reply, or of one stream of an XREAD reply.
fn entries(v: &Value) -> Vec<Entry> {
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
        let (mut node, mut data) = (String::new(), Vec::new());
        for kv in fields.chunks(2) {
            match (kv.first().and_then(bytes), kv.get(1).and_then(bytes)) {
                (Some(k), Some(v)) if k == b"node" => node = String::from_utf8_lossy(&v).into(),
                (Some(k), Some(v)) if k == b"d" => data = v,
                _ => {}
            }
        }
        out.push(Entry { id, ms, node, data });
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
    loop {
        if *stop.borrow() {
            return;
        }
        if conn.is_none() {
            match connect(&url).await {
                Ok(mut c) => {
                    if !replaying {
                        after_reconnect(&mut c, &mut last, &tracker, &store).await;
                    }
                    conn = Some(c);
                }
                Err(e) => {
                    bus_error(&state, &format!("cannot reach the bus: {e}"));
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
            Ok(v) => v,
            Err(e) => {
                bus_error(&state, &format!("cannot read the bus: {e}"));
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
            continue;
        }
        let now = unix_ms();
        for e in &batch {
            last.clone_from(&e.id);
            if e.node == state.node_id {
                continue;
            }
            state.heard(&e.node);
            apply(&tracker, &store, &state, e, now, !replaying).await;
        }
        if let Some(e) = batch.last() {
            state.lag_ms.store(now.saturating_sub(e.ms), Relaxed);
        }
    }
}

/// After the bus was away: if the stream was lost (Redis restarted empty) read it from its
/// start, since its ids began again; reload the whitelist and keys, whose notices may have
/// been missed.
async fn after_reconnect(
    c: &mut MultiplexedConnection,
    last: &mut String,
    tracker: &Tracker,
    store: &AnyStore,
) {
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
    if let Err(e) = tracker.access().reload(store).await {
        tracing::warn!("cannot reload the whitelist and keys after a bus reconnect: {e}");
    }
}

async fn apply(
    tracker: &Tracker,
    store: &AnyStore,
    state: &BusState,
    e: &Entry,
    now_ms: u64,
    live: bool,
) {
    let Some(records) = record::decode(&e.data) else {
        state.errors.fetch_add(1, Relaxed);
        tracing::warn!(
            "bus entry {} from node {} is malformed; skipped",
            e.id,
            e.node
        );
        return;
    };
    let age = (now_ms.saturating_sub(e.ms) / 1000) as u32;
    for r in records {
        match r {
            Record::Peer(c) => {
                // A refusal (a limit met) leaves the peer out of this node's view only.
                let _ = tracker.apply_remote(&c, age, live);
                state.applied.fetch_add(1, Relaxed);
            }
            Record::AccessChanged if live => {
                if let Err(err) = tracker.access().reload(store).await {
                    tracing::warn!("cannot reload the whitelist and keys: {err}");
                }
            }
            Record::AccessChanged => {}
        }
    }
}
