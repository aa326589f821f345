//! Several nodes, one swarm (docs/design.md, "Several nodes"): this node's peer changes go into a Redis
//! stream in batches; every other node's are read from it and applied to the local swarm.
//! Nothing on the request path waits on Redis: announces only fill the swarm's outbox.

pub mod follow;
pub mod record;
mod state;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::streams::{StreamId, StreamRangeReply, StreamReadReply};
use redis::{AsyncConnectionConfig, Value};
use store::AnyStore;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use self::follow::{Entry, Follower};
use self::record::Record;
pub use self::state::{BusHealth, BusState, json, metrics};
use crate::config::ClusterConfig;
use crate::tracker::{Remote, Tracker};

/// The stream every node writes to and reads from.
pub const STREAM: &str = "shoal:swarm";
/// A random value the first node to reach an empty Redis sets: when it changes, the bus
/// lost its data (a Redis restarted empty) and every node starts the stream afresh.
pub const EPOCH: &str = "shoal:epoch";
/// Records per stream entry at most.
const ENTRY_RECORDS: usize = 10_000;
/// How long the stream keeps entries beyond one lease and one sweep period: a sweep of tens
/// of millions of peers and the nodes' clocks.
pub const RETAIN_SLACK: Duration = Duration::from_secs(60);
/// A node that had nothing to say for this long says so (an empty entry), so every node
/// knows which nodes are alive.
const PRESENCE: Duration = Duration::from_secs(5);

/// Where the bus is: its URL, and for `rediss://` the CA file to trust (None: the
/// system's roots).
#[derive(Clone)]
pub struct Bus {
    url: String,
    ca: Option<std::path::PathBuf>,
}

impl Bus {
    pub fn of(config: &ClusterConfig) -> Bus {
        // rustls needs one process-wide crypto provider for rediss://; a second install is
        // a no-op.
        let _ = rustls::crypto::ring::default_provider().install_default();
        Bus {
            url: config.redis_url.expose().to_string(),
            ca: (!config.redis_ca_cert_path.is_empty())
                .then(|| config.redis_ca_cert_path.clone().into()),
        }
    }

    /// A client of the bus (no connection yet).
    fn client(&self) -> redis::RedisResult<redis::Client> {
        redis::Client::open(self.url.as_str())
    }

    /// With a CA file, `rediss://` runs over Shoal's own TLS (`trust.rs`: its CA
    /// certificates, or the server's own self-signed certificate pinned, which the redis
    /// crate's verifier refuses); the redis protocol then runs on that stream.
    async fn pinned_tls(
        &self,
    ) -> redis::RedisResult<Option<(TlsStream<TcpStream>, redis::RedisConnectionInfo)>> {
        let Some(ca) = &self.ca else {
            return Ok(None);
        };
        let info = redis::IntoConnectionInfo::into_connection_info(self.url.as_str())?;
        let redis::ConnectionAddr::TcpTls { host, port, .. } = info.addr() else {
            return Ok(None);
        };
        let config = crate::trust::client_config(Some(ca)).map_err(|e| {
            redis::RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "cluster.redis_ca_cert_path",
                e.to_string(),
            ))
        })?;
        let name = rustls::pki_types::ServerName::try_from(host.clone()).map_err(|e| {
            redis::RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "cluster.redis_url host",
                e.to_string(),
            ))
        })?;
        let opened = tokio::time::timeout(CONNECT_TIMEOUT, async {
            let tcp = TcpStream::connect((host.as_str(), *port)).await?;
            let _ = tcp.set_nodelay(true);
            tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await
        })
        .await
        .map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::TimedOut, "connecting to the bus")
        })??;
        Ok(Some((opened, info.redis_settings().clone())))
    }

    /// A pub/sub connection to the bus.
    pub async fn pubsub(&self) -> redis::RedisResult<redis::aio::PubSub> {
        match self.pinned_tls().await? {
            Some((tls, info)) => redis::aio::PubSub::new(&info, tls).await,
            None => self.client()?.get_async_pubsub().await,
        }
    }
}

/// How long opening a connection to the bus may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

pub async fn connect(bus: &Bus) -> redis::RedisResult<MultiplexedConnection> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(Duration::from_secs(5)));
    match bus.pinned_tls().await? {
        Some((tls, info)) => {
            let (conn, driver) = MultiplexedConnection::new_with_config(&info, tls, config).await?;
            tokio::spawn(driver);
            Ok(conn)
        }
        None => {
            bus.client()?
                .get_multiplexed_async_connection_with_config(&config)
                .await
        }
    }
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
        let mine = format!("{:016x}", u64::from_le_bytes(r) ^ crate::os::unix_ms());
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

/// Starts the publisher and the reader. The reader first replays the stream as far back as
/// it reaches (`Tracker::stream_reach`), then sets `ready`.
pub fn start(
    config: &ClusterConfig,
    tracker: Arc<Tracker>,
    store: AnyStore,
    state: Arc<BusState>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinSet<()> {
    let mut tasks = tokio::task::JoinSet::new();
    let url = Bus::of(config);
    // Every live peer has a record within one lease and one sweep (its owner renews it):
    // the stream keeps that much, a node starting replays that much (docs/design.md,
    // "Several nodes").
    let retain_ms = tracker.stream_reach(RETAIN_SLACK).as_millis() as u64;
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
            state.dropped_one();
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
        if let Some(c) = &mut conn
            && backlog.is_empty()
            && last_sent.is_none_or(|t| t.elapsed() >= PRESENCE)
        {
            match add(c, me, &[], retain_ms).await {
                Ok(()) => last_sent = Some(Instant::now()),
                Err(e) => {
                    state.error("cannot publish to the bus", &e);
                    conn = None;
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
                        state.sent(peers.count() as u64);
                    }
                    Err(e) => {
                        state.error("cannot publish to the bus", &e);
                        conn = None;
                        break;
                    }
                }
            }
        }
        state.waiting(backlog.len());
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
    // Entries older than the stream's reach hold no live peer's latest record: trim them as
    // this one goes in, so the stream never grows beyond that.
    let min_id = crate::os::unix_ms().saturating_sub(retain_ms);
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

/// Stream entries as `Follower` reads them.
pub fn entries(ids: Vec<StreamId>) -> Vec<Entry> {
    ids.into_iter()
        .map(|s| Entry {
            ms: s
                .id
                .split('-')
                .next()
                .and_then(|m| m.parse().ok())
                .unwrap_or(0),
            node: s.get("node").unwrap_or_default(),
            inc: s.get("inc").unwrap_or_default(),
            data: s.get("d").unwrap_or_default(),
            id: s.id,
        })
        .collect()
}

async fn read(
    url: Bus,
    tracker: Arc<Tracker>,
    store: AnyStore,
    state: Arc<BusState>,
    retain_ms: u64,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut r = Reader {
        // Replaying the stream's reach rebuilds every peer a live node owns: each has a
        // record within it.
        last: format!("{}-0", crate::os::unix_ms().saturating_sub(retain_ms)),
        replaying: true,
        epoch: Epoch::default(),
        follower: Follower::new(&state.node_id, &state.incarnation),
        tracker,
        store,
        state,
    };
    let mut conn: Option<MultiplexedConnection> = None;
    while !*stop.borrow() {
        let Some(c) = conn.as_mut() else {
            conn = r.connect(&url).await;
            if conn.is_none() {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    _ = stop.changed() => {}
                }
            }
            continue;
        };
        match r.fetch(c).await {
            Ok(ids) => {
                r.state.answered();
                r.apply(entries(ids)).await;
            }
            Err(e) => {
                r.state.error("cannot read the bus", &e);
                conn = None;
            }
        }
    }
}

/// The stream's entries after `last` (XRANGE), a page at a time.
async fn range_after(
    mut c: MultiplexedConnection,
    last: String,
) -> redis::RedisResult<Vec<StreamId>> {
    redis::cmd("XRANGE")
        .arg(STREAM)
        .arg(format!("({last}"))
        .arg("+")
        .arg("COUNT")
        .arg(100)
        .query_async::<StreamRangeReply>(&mut c)
        .await
        .map(|r| r.ids)
}

/// The reader's place in the stream and what it does with each entry.
struct Reader {
    /// The id of the last entry read.
    last: String,
    /// Reading history at start (XRANGE) until it is exhausted, then following (XREAD).
    replaying: bool,
    epoch: Epoch,
    follower: Follower,
    tracker: Arc<Tracker>,
    store: AnyStore,
    state: Arc<BusState>,
}

impl Reader {
    async fn connect(&mut self, url: &Bus) -> Option<MultiplexedConnection> {
        let connected = match connect(url).await {
            Ok(mut c) => self.epoch.changed(&mut c).await.map(|lost| (c, lost)),
            Err(e) => Err(e),
        };
        let (mut c, lost) = match connected {
            Ok(c) => c,
            Err(e) => {
                self.state.error("cannot reach the bus", &e);
                return None;
            }
        };
        if lost {
            // What this node learned from the lost stream stands on nothing now; the
            // owners publish their peers again, read from the start.
            let n = self.tracker.forget_remote();
            tracing::warn!(
                "the bus lost its data (Redis restarted empty?): forgot {n} peers of other nodes; rereading the stream as the nodes republish"
            );
            self.last = "0-0".into();
        } else if !self.replaying && after_reconnect(&mut c, &mut self.last).await {
            // Entries this node had not read were trimmed while it was away: a later record
            // about a peer it holds may be among them. It forgets what other nodes told it
            // and reads the rest as a node starting now would (each live peer's renewal is
            // in it).
            let n = self.tracker.forget_remote();
            tracing::warn!(
                "away from the bus for longer than the stream keeps entries: forgot {n} peers of other nodes; reading them again from the stream"
            );
        }
        if !self.replaying {
            reload_access(&self.tracker, &self.store, "after a bus reconnect").await;
        }
        Some(c)
    }

    /// The next entries: history while replaying, then new ones as they come.
    async fn fetch(&self, c: &mut MultiplexedConnection) -> redis::RedisResult<Vec<StreamId>> {
        if self.replaying {
            return range_after(c.clone(), self.last.clone()).await;
        }
        // Nil when BLOCK times out with nothing new.
        let reply = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(100)
            .arg("BLOCK")
            .arg(1000)
            .arg("STREAMS")
            .arg(STREAM)
            .arg(&self.last)
            .query_async::<Option<StreamReadReply>>(c)
            .await?;
        Ok(reply
            .into_iter()
            .flat_map(|r| r.keys)
            .flat_map(|k| k.ids)
            .collect())
    }

    async fn apply(&mut self, batch: Vec<Entry>) {
        if self.replaying && batch.is_empty() {
            self.replaying = false;
            self.state.caught_up();
            tracing::info!("caught up with the bus: the swarm holds every node's peers");
            // A node that could not read the stream in time took no notices either.
            reload_access(&self.tracker, &self.store, "after catching up").await;
            return;
        }
        let now = crate::os::unix_ms();
        let live = !self.replaying;
        // Replaying, a page's records are applied together, sorted by info-hash (stable, so
        // an endpoint's records keep their order and the result is the same), so that one
        // torrent's records meet its entry in cache; live, each entry as it comes.
        let mut page = Vec::new();
        for e in &batch {
            self.last.clone_from(&e.id);
            if e.node != self.state.node_id {
                self.state.heard(&e.node);
            }
            let age_secs = (now.saturating_sub(e.ms) / 1000) as u32;
            let applied = self.follower.entry(e, |&change, origin| {
                page.push(Remote {
                    change,
                    origin,
                    age_secs,
                })
            });
            if live {
                // A refusal (a limit met) leaves the peer out of this node's view only.
                self.tracker.apply_remote_batch(&page, live);
                page.clear();
            }
            if applied.malformed {
                self.state.malformed();
                tracing::warn!(
                    "bus entry {} from node {} is malformed; skipped",
                    e.id,
                    e.node
                );
            }
            self.state.applied(applied.peers, now.saturating_sub(e.ms));
            if applied.access_changed && live {
                reload_access(&self.tracker, &self.store, "after a notice").await;
            }
        }
        page.sort_by_key(|r| r.change.info_hash.0);
        self.tracker.apply_remote_batch(&page, live);
    }
}

async fn reload_access(tracker: &Tracker, store: &AnyStore, when: &str) {
    if let Err(e) = tracker.reload_access(store).await {
        tracing::warn!("cannot reload the whitelist, keys and client rules {when}: {e}");
    }
}

/// After the bus was away with its data kept: if the stream's ids went back (a Redis
/// restored from an older snapshot), read it from its start. True if entries after `last`
/// may have been trimmed unread: the stream now starts past `last` (or is empty with newer
/// ids), so the node was away about as long as the stream keeps entries. (When the first
/// entry kept is exactly the next one, nothing was lost and the node only rereads what a
/// starting node would.)
async fn after_reconnect(c: &mut MultiplexedConnection, last: &mut String) -> bool {
    let info = redis::cmd("XINFO")
        .arg("STREAM")
        .arg(STREAM)
        .query_async::<std::collections::HashMap<String, Value>>(c)
        .await
        .unwrap_or_default();
    let id = |key: &str| match info.get(key) {
        Some(Value::BulkString(b)) => parse_id(&String::from_utf8_lossy(b)),
        Some(Value::SimpleString(s)) => parse_id(s),
        Some(Value::Array(entry)) => match entry.first() {
            Some(Value::BulkString(b)) => parse_id(&String::from_utf8_lossy(b)),
            _ => None,
        },
        _ => None,
    };
    let ours = parse_id(last).unwrap_or((0, 0));
    let Some(theirs) = id("last-generated-id").filter(|theirs| *theirs >= ours) else {
        *last = "0-0".into();
        return false;
    };
    match id("first-entry").filter(|first| *first > (0, 0)) {
        Some(first) => first > ours,
        None => theirs > ours,
    }
}

/// A stream id `ms-seq` as a pair that orders as the stream does.
fn parse_id(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

#[cfg(test)]
mod reconnect;
