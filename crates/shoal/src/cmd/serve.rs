//! `shoal serve`: open the store, bind every listener, load counts, serve until a signal,
//! then flush and exit.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use store::{AnyStore, Connection, SchemaMigrator, TorrentMetricsStore};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use self::bind::{bind_tcp, bind_udp, check_fd_budget};
use self::signals::{Signal, Signals};
use super::{Error, Result};

mod bind;
mod signals;
use crate::cluster::BusState;
use crate::config::{Config, TlsFiles};
use crate::persist::flusher::FlusherThread;
use crate::server::tls::Certs;
use crate::server::udp::connection_id::ConnectionIds;
use crate::server::{admin as api, http, udp, ws};
use crate::tracker::Tracker;

/// Logs to stderr as `[log]` says: text (coloured on a terminal) or JSON lines.
pub fn init_logs(log: &crate::config::LogConfig) {
    let logs = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&log.level))
        .with_writer(std::io::stderr);
    match log.format {
        crate::config::LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        crate::config::LogFormat::Json => logs.json().init(),
    }
}

/// Serves with `config`, read from `file` (and the environment): SIGHUP reads them again
/// for what can change without a restart (the client rules).
pub async fn run(config: Config, file: Option<std::path::PathBuf>) -> Result<()> {
    // Before anything slow: from here on SIGHUP can no longer end the process (its default
    // action), whatever phase it arrives in (docs/operations.md, "Signals").
    let signals = Signals::install()?;
    let url = config.database.url.clone();
    let store = AnyStore::open(&url, config.database.max_connections.get())
        .await
        .map_err(Error::store("cannot open the database"))?;
    store
        .migrate()
        .await
        .map_err(|e| crate::persist::explain(e, &url))?;
    serve_with(config, file, url, store, signals).await
}

async fn serve_with(
    config: Config,
    file: Option<std::path::PathBuf>,
    url: store::DatabaseUrl,
    store: AnyStore,
    mut signals: Signals,
) -> Result<()> {
    // Bind everything before the (possibly long) load, so a taken port fails fast.
    let bound = Bound::bind(&config)?;
    // Loading counts can take seconds at scale: a stop asked meanwhile ends start-up (nothing
    // is counted yet, so nothing is lost).
    let tracker = tokio::select! {
        loaded = load(&config, &store) => loaded?,
        name = signals.stop() => {
            tracing::info!("{name} received during start-up: stopping before serving");
            store.close().await;
            return Ok(());
        }
    };
    let mut node = Node::start(&config, bound, tracker, store, url).await?;
    node.config_file = file;
    tracing::info!(
        "ready: {} mode, database {}",
        format!("{:?}", config.mode).to_lowercase(),
        config.database.url.redacted()
    );
    loop {
        match signals.next().await {
            Signal::Reload => node.reload().await,
            Signal::Stop(name) => {
                tracing::info!("{name} received: stopping listeners and flushing");
                break;
            }
        }
    }
    node.shutdown().await?;
    tracing::info!("all download counts flushed; bye");
    Ok(())
}

/// Every listener, bound, and the certificates they serve: a taken port or a bad
/// certificate stops start-up here, naming its key.
struct Bound {
    udp: Vec<std::net::UdpSocket>,
    http: Vec<TcpListener>,
    ws: Vec<TcpListener>,
    api: TcpListener,
    http_tls: Option<Arc<Certs>>,
    ws_tls: Option<Arc<Certs>>,
    api_tls: Option<Arc<Certs>>,
}

impl Bound {
    fn bind(config: &Config) -> Result<Bound> {
        let needed = check_fd_budget(config)?;
        tracing::debug!("file descriptor budget: {needed}");
        let certs = |files: Option<TlsFiles>| files.map(Certs::open).transpose();
        let mut udp = Vec::new();
        for addr in &config.udp.bind {
            udp.push(bind_udp(*addr).map_err(Error::io(format!("cannot bind udp.bind {addr}")))?);
        }
        let mut http = Vec::new();
        for addr in &config.http.bind {
            http.push(bind_tcp(*addr).map_err(Error::io(format!("cannot bind http.bind {addr}")))?);
        }
        let mut ws = Vec::new();
        for addr in &config.ws.bind {
            ws.push(bind_tcp(*addr).map_err(Error::io(format!("cannot bind ws.bind {addr}")))?);
        }
        let api = config.api.bind;
        Ok(Bound {
            ws,
            ws_tls: certs(config.ws.tls())?,
            http_tls: certs(config.http.tls())?,
            api_tls: certs(config.api.tls())?,
            udp,
            http,
            api: bind_tcp(api).map_err(Error::io(format!("cannot bind api.bind {api}")))?,
        })
    }
}

fn set_client_rules(tracker: &Tracker, config: &Config) {
    let c = &config.clients;
    tracker.clients().set_config(&c.allow, &c.deny);
    if !c.allow.is_empty() || !c.deny.is_empty() {
        tracing::info!("client rules: allow {:?}, deny {:?}", c.allow, c.deny);
    }
}

/// The tracker, with the whitelist, keys and download counts the store holds.
async fn load(config: &Config, store: &AnyStore) -> Result<Arc<Tracker>> {
    let (announce, limits) = (config.announce.clone(), config.limits.swarm());
    let tracker = Arc::new(match &config.cluster {
        c if c.enabled() => Tracker::clustered(announce, config.mode, limits, c.max_backlog.get()),
        _ => Tracker::new(announce, config.mode, limits),
    });
    let (whitelisted, keys, rules) = tracker.reload_access(store).await.map_err(Error::store(
        "cannot load the whitelist, keys and client rules",
    ))?;
    tracing::info!(
        "loaded {whitelisted} whitelisted info-hashes, {keys} keys and {rules} stored client rules"
    );
    set_client_rules(&tracker, config);
    let started = Instant::now();
    let mut loader = tracker.loader();
    let loaded = store
        .load_all_torrents_downloads(|h, n| loader.add(h, n))
        .await
        .map_err(Error::store("cannot load download counts"))?;
    loader.finish();
    tracing::info!(
        "loaded {loaded} download counts from {} in {:?}",
        store.driver(),
        started.elapsed()
    );
    Ok(tracker)
}

/// A running node: what `shutdown` stops, in the order that loses nothing.
struct Node {
    store: AnyStore,
    flusher: FlusherThread,
    /// HTTP listeners drain before anything else stops.
    http: JoinSet<()>,
    stop_http: tokio::sync::watch::Sender<bool>,
    http_drain: Duration,
    udp: Vec<std::thread::JoinHandle<()>>,
    stop_udp: Arc<AtomicBool>,
    /// The admin API, certificate watching, expiry.
    tasks: JoinSet<()>,
    bus: Option<JoinSet<()>>,
    stop_bus: tokio::sync::watch::Sender<bool>,
    /// What SIGHUP reloads besides the access lists.
    certs: Vec<Arc<Certs>>,
    tracker: Arc<Tracker>,
    /// Read again on SIGHUP for the client rules.
    config_file: Option<std::path::PathBuf>,
}

impl Node {
    async fn start(
        config: &Config,
        bound: Bound,
        tracker: Arc<Tracker>,
        store: AnyStore,
        url: store::DatabaseUrl,
    ) -> Result<Node> {
        let (stop_http, http_stop) = tokio::sync::watch::channel(false);
        let (stop_bus, bus_stop) = tokio::sync::watch::channel(false);
        let mut node = Node {
            flusher: FlusherThread::start(
                url,
                tracker.clone(),
                config.database.max_pending_torrents.get(),
                Duration::from_millis(config.database.flush_interval_ms.get()),
                Duration::from_millis(config.database.final_flush_timeout_ms.get()),
            )
            .await?,
            store,
            http: JoinSet::new(),
            stop_http,
            http_drain: Duration::from_millis(config.http.header_timeout_ms.get())
                + Duration::from_secs(1),
            udp: Vec::new(),
            stop_udp: Arc::new(AtomicBool::new(false)),
            tasks: JoinSet::new(),
            bus: None,
            stop_bus,
            certs: Vec::new(),
            tracker: tracker.clone(),
            config_file: None,
        };
        let bus = node.start_bus(config, &tracker, bus_stop);
        // The charts' baseline, before any listener serves: every request lands in a sample.
        tracker.sample_history();
        node.start_udp(config, &bound.udp, &tracker)?;
        let watched: Vec<_> = bound
            .http_tls
            .iter()
            .chain(&bound.ws_tls)
            .chain(&bound.api_tls)
            .cloned()
            .collect();
        if !watched.is_empty() {
            node.tasks.spawn(crate::server::tls::watch(watched.clone()));
        }
        node.certs = watched;
        if let Some(certs) = &bound.http_tls {
            tracing::info!(
                "the http tracker speaks HTTPS with {}; reloaded on change and on SIGHUP",
                certs.cert().display()
            );
        }
        for listener in bound.http {
            tracing::info!("http tracker listening on {}", local(&listener)?);
            node.http.spawn(http::serve(
                listener,
                tracker.clone(),
                config.http.clone(),
                http_stop.clone(),
                bound.http_tls.clone(),
            ));
        }
        node.start_ws(
            config,
            bound.ws,
            bound.ws_tls,
            &tracker,
            bus.as_deref(),
            &http_stop,
        )?;
        node.start_api(config, bound.api, bound.api_tls, &tracker, bus)?;
        node.tasks.spawn(sample_history(
            tracker.clone(),
            Duration::from_secs(config.status.sample_secs.get()),
        ));
        node.tasks.spawn(clean_expired(tracker));
        Ok(node)
    }

    /// The WebSocket tracker: drained with the HTTP tracker, before the final flush.
    fn start_ws(
        &mut self,
        config: &Config,
        listeners: Vec<TcpListener>,
        tls: Option<Arc<Certs>>,
        tracker: &Arc<Tracker>,
        bus: Option<&BusState>,
        stop: &tokio::sync::watch::Receiver<bool>,
    ) -> Result<()> {
        if listeners.is_empty() {
            return Ok(());
        }
        let c = &config.ws;
        // A connection's endpoint names its node: in a cluster, this incarnation.
        let node = bus
            .and_then(|b| u64::from_str_radix(&b.incarnation, 16).ok())
            .unwrap_or_else(crate::os::random_u64) as u32;
        let offers = c.max_connections.get() * c.max_offers.get();
        let hub = Arc::new(ws::hub::Hub::new(
            node,
            Duration::from_millis(c.offer_timeout_ms.get()),
            offers,
        ));
        let relay = config.cluster.enabled().then(|| {
            let bus = crate::cluster::Bus::of(&config.cluster);
            ws::relay::start(bus, hub.clone(), tracker.clone(), &mut self.tasks)
        });
        let setup = ws::Setup {
            tracker: tracker.clone(),
            hub,
            config: c.clone(),
            proxies: crate::server::proxy::Proxies::new(&config.http.trusted_proxies),
            tls,
            relay,
        };
        for listener in listeners {
            let scheme = if setup.tls.is_some() { "wss" } else { "ws" };
            tracing::info!("{scheme} tracker listening on {}", local(&listener)?);
            self.http
                .spawn(ws::serve(listener, setup.clone(), stop.clone()));
        }
        Ok(())
    }

    /// In a cluster: the publisher and the reader of the bus.
    fn start_bus(
        &mut self,
        config: &Config,
        tracker: &Arc<Tracker>,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> Option<Arc<BusState>> {
        let cluster = &config.cluster;
        if !cluster.enabled() {
            return None;
        }
        let node_id = match cluster.node_id.as_str() {
            "" => format!("{:016x}", crate::os::random_u64()),
            id => id.to_string(),
        };
        let state = Arc::new(BusState::new(
            node_id,
            Duration::from_millis(cluster.catch_up_timeout_ms.get()),
        ));
        tracing::info!(
            "cluster node {} (incarnation {}) on bus {} (stream {}); catching up before /health reports ready",
            state.node_id,
            state.incarnation,
            store::redact_url(cluster.redis_url.expose()),
            crate::cluster::STREAM
        );
        self.bus = Some(crate::cluster::start(
            cluster,
            tracker.clone(),
            self.store.clone(),
            state.clone(),
            stop,
        ));
        Some(state)
    }

    fn start_udp(
        &mut self,
        config: &Config,
        sockets: &[std::net::UdpSocket],
        tracker: &Arc<Tracker>,
    ) -> Result<()> {
        let cluster = &config.cluster;
        let ids = Arc::new(if cluster.enabled() {
            ConnectionIds::shared([cluster.secret.expose(), cluster.previous_secret.expose()])
        } else {
            ConnectionIds::default()
        });
        let workers = match config.udp.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        for socket in sockets {
            let addr = socket.local_addr().map_err(Error::io("udp socket"))?;
            tracing::info!("udp tracker listening on {addr}");
            self.udp.extend(
                udp::spawn(socket, tracker, &ids, workers, &self.stop_udp)
                    .map_err(Error::io("cannot start udp workers"))?,
            );
        }
        Ok(())
    }

    fn start_api(
        &mut self,
        config: &Config,
        listener: TcpListener,
        tls: Option<Arc<Certs>>,
        tracker: &Arc<Tracker>,
        bus: Option<Arc<BusState>>,
    ) -> Result<()> {
        tracing::info!("admin api listening on {}", local(&listener)?);
        if config.api.token.expose().is_empty() {
            tracing::warn!(
                "api.token is empty: the admin API on {} is open to every local user (web pages are refused: docs/security.md)",
                config.api.bind
            );
        }
        let app = api::router(Arc::new(api::ApiState {
            tracker: tracker.clone(),
            store: self.store.clone(),
            token: config.api.token.clone(),
            hosts: config
                .api
                .hosts
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            bus,
            sample_secs: config.status.sample_secs.get(),
            survey: Default::default(),
        }));
        if let Some(certs) = &tls {
            tracing::info!("the admin api speaks HTTPS with {}", certs.cert().display());
        }
        self.tasks.spawn(api::serve(
            listener,
            app,
            tls,
            config.api.max_connections.get(),
            Duration::from_millis(config.api.idle_timeout_ms.get()),
        ));
        Ok(())
    }

    /// SIGHUP: certificates and the access lists (whitelist, keys) from the store. What
    /// fails to load is logged and the previous version keeps serving; nothing stops.
    async fn reload(&self) {
        for c in &self.certs {
            c.reload();
        }
        match crate::config::load(self.config_file.as_deref(), std::env::vars()) {
            Ok(loaded) => set_client_rules(&self.tracker, &loaded.config),
            Err(e) => tracing::error!(
                "SIGHUP received: the configuration does not load, the client rules in force stay: {e}"
            ),
        }
        match self.tracker.reload_access(&self.store).await {
            Ok((whitelisted, keys, _)) => {
                let (allow, deny) = self.tracker.clients().len();
                tracing::info!(
                    "SIGHUP received: reloaded {} certificate(s), {whitelisted} whitelisted info-hashes and {keys} keys, {allow} allow and {deny} deny client rules",
                    self.certs.len()
                )
            }
            Err(e) => tracing::error!(
                "SIGHUP received: the access lists were not reloaded, the previous ones stay: {e}"
            ),
        }
    }

    /// HTTP first: connections finish what they are answering, so every announce answered
    /// is in the swarm before the final flush (a client that never finishes its request is
    /// cut off after the header timeout at most). Then UDP, then the bus (the last changes,
    /// departures of stopping clients, go out), then the final flush.
    async fn shutdown(mut self) -> Result<()> {
        let _ = self.stop_http.send(true);
        let drained = tokio::time::timeout(self.http_drain, async {
            while self.http.join_next().await.is_some() {}
        });
        if drained.await.is_err() {
            tracing::warn!(
                "http connections still open after {:?}; closing them",
                self.http_drain
            );
        }
        self.http.shutdown().await;
        self.tasks.shutdown().await;
        self.stop_udp.store(true, Ordering::Relaxed);
        let threads = std::mem::take(&mut self.udp);
        tokio::task::spawn_blocking(move || threads.into_iter().for_each(|t| drop(t.join())))
            .await
            .map_err(|e| Error::Said(format!("a udp worker failed: {e}")))?;
        let _ = self.stop_bus.send(true);
        if let Some(mut tasks) = self.bus.take() {
            let _ = tokio::time::timeout(Duration::from_secs(3), async {
                while tasks.join_next().await.is_some() {}
            })
            .await;
        }
        let result = self.flusher.finish().await;
        self.store.close().await;
        Ok(result?)
    }
}

fn local(listener: &TcpListener) -> Result<SocketAddr> {
    listener.local_addr().map_err(Error::io("listener"))
}

/// Samples the request counters for the status page's charts.
async fn sample_history(tracker: Arc<Tracker>, every: Duration) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tick.tick().await;
        tracker.sample_history();
    }
}

/// Removes silent peers (and renews due leases) every `Tracker::sweep_every`.
async fn clean_expired(tracker: Arc<Tracker>) {
    let every = tracker.sweep_every();
    loop {
        tokio::time::sleep(every).await;
        // A walk over every torrent: on the blocking pool, never on a runtime worker.
        let walker = tracker.clone();
        let Ok(gone) = tokio::task::spawn_blocking(move || walker.expire()).await else {
            continue;
        };
        if gone.peers > 0 {
            tracing::debug!(
                "expired {} peers, dropped {} empty torrents",
                gone.peers,
                gone.torrents
            );
        }
    }
}
