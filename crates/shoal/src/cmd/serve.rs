//! `shoal serve`: open the store, bind every listener, load counts, serve until a signal,
//! then flush and exit.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol as SockProtocol, Socket, Type};
use store::{AnyStore, Connection, SchemaMigrator, TorrentMetricsStore};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::config::Config;
use crate::persist::flusher::FlusherThread;
use crate::server::{admin as api, http, udp};
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

pub async fn run(config: Config) -> Result<(), String> {
    let url = config.database.url.clone();
    let store = AnyStore::open(&url, config.database.max_connections.get())
        .await
        .map_err(|e| e.to_string())?;
    store
        .migrate()
        .await
        .map_err(|e| crate::persist::explain(e, &url))?;
    serve_with(config, url, store).await
}

async fn serve_with(
    config: Config,
    url: store::DatabaseUrl,
    store: AnyStore,
) -> Result<(), String> {
    // Bind everything before the (possibly long) load, so a taken port fails fast.
    let mut udp_sockets = Vec::new();
    for addr in &config.udp.bind {
        udp_sockets.push(bind_udp(*addr).map_err(|e| format!("cannot bind udp.bind {addr}: {e}"))?);
    }
    // A missing, unreadable or mismatched pair stops start-up here, naming the key.
    let http_tls = match (
        &config.http.tls_cert_path[..],
        &config.http.tls_key_path[..],
    ) {
        ("", _) | (_, "") => None,
        (cert, key) => Some(crate::server::tls::Certs::open(
            cert,
            key,
            ("http.tls_cert_path", "http.tls_key_path"),
        )?),
    };
    let api_tls = match (&config.api.tls_cert_path[..], &config.api.tls_key_path[..]) {
        ("", _) | (_, "") => None,
        (cert, key) => Some(crate::server::tls::Certs::open(
            cert,
            key,
            ("api.tls_cert_path", "api.tls_key_path"),
        )?),
    };
    let mut http_listeners = Vec::new();
    for addr in &config.http.bind {
        http_listeners
            .push(bind_tcp(*addr).map_err(|e| format!("cannot bind http.bind {addr}: {e}"))?);
    }
    let api_listener = bind_tcp(config.api.bind)
        .map_err(|e| format!("cannot bind api.bind {}: {e}", config.api.bind))?;

    let cluster = &config.cluster;
    let tracker = Arc::new(if cluster.enabled() {
        Tracker::clustered(
            config.announce.clone(),
            config.mode,
            config.limits.swarm(),
            cluster.max_backlog.get(),
        )
    } else {
        Tracker::new(config.announce.clone(), config.mode, config.limits.swarm())
    });
    let (whitelisted, keys) = tracker
        .access()
        .reload(&store)
        .await
        .map_err(|e| format!("cannot load the whitelist and keys: {e}"))?;
    tracing::info!("loaded {whitelisted} whitelisted info-hashes and {keys} keys");
    let started = Instant::now();
    let mut loader = tracker.loader();
    let loaded = store
        .load_all_torrents_downloads(|h, n| loader.add(h, n))
        .await
        .map_err(|e| format!("cannot load download counts: {e}"))?;
    loader.finish();
    tracing::info!(
        "loaded {loaded} download counts from {} in {:?}",
        store.driver(),
        started.elapsed()
    );

    let mut servers = JoinSet::new();
    let mut http_servers = JoinSet::new();
    let (stop_http, http_stop) = tokio::sync::watch::channel(false);
    let workers = match config.udp.workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let udp_stop = Arc::new(AtomicBool::new(false));
    let ids = Arc::new(if cluster.enabled() {
        udp::connection_id::ConnectionIds::shared([
            cluster.secret.expose(),
            cluster.previous_secret.expose(),
        ])
    } else {
        udp::connection_id::ConnectionIds::default()
    });
    let (stop_bus, bus_stop) = tokio::sync::watch::channel(false);
    let mut bus_tasks = None;
    let bus = cluster.enabled().then(|| {
        let node_id = match cluster.node_id.as_str() {
            "" => format!("{:016x}", rand_u64()),
            id => id.to_string(),
        };
        Arc::new(crate::cluster::BusState::new(
            node_id,
            Duration::from_millis(cluster.catch_up_timeout_ms.get()),
        ))
    });
    if let Some(state) = &bus {
        tracing::info!(
            "cluster node {} (incarnation {}) on bus {} (stream {}); catching up before /health reports ready",
            state.node_id,
            state.incarnation,
            store::redact_url(cluster.redis_url.expose()),
            crate::cluster::STREAM
        );
        bus_tasks = Some(crate::cluster::start(
            cluster,
            tracker.clone(),
            store.clone(),
            state.clone(),
            bus_stop,
        ));
    }
    let mut udp_threads = Vec::new();
    for socket in &udp_sockets {
        tracing::info!(
            "udp tracker listening on {}",
            socket.local_addr().map_err(|e| e.to_string())?
        );
        udp_threads.extend(
            udp::spawn(socket, &tracker, &ids, workers, &udp_stop)
                .map_err(|e| format!("cannot start udp workers: {e}"))?,
        );
    }
    if http_tls.is_some() {
        tracing::info!(
            "the http tracker speaks HTTPS with {}; reloaded on change and on SIGHUP",
            config.http.tls_cert_path
        );
    }
    let watched: Vec<_> = http_tls.iter().chain(api_tls.iter()).cloned().collect();
    if !watched.is_empty() {
        servers.spawn(crate::server::tls::watch(watched));
    }
    for listener in http_listeners {
        tracing::info!(
            "http tracker listening on {}",
            listener.local_addr().map_err(|e| e.to_string())?
        );
        http_servers.spawn(http::serve(
            listener,
            tracker.clone(),
            config.http.clone(),
            http_stop.clone(),
            http_tls.clone(),
        ));
    }
    tracing::info!(
        "admin api listening on {}",
        api_listener.local_addr().map_err(|e| e.to_string())?
    );
    if config.api.token.expose().is_empty() {
        tracing::warn!(
            "api.token is empty: the admin API on {} is open to every local user (web pages are refused: docs/security.md)",
            config.api.bind
        );
    }
    let app = api::router(Arc::new(api::ApiState {
        tracker: tracker.clone(),
        store: store.clone(),
        token: config.api.token.clone(),
        hosts: config
            .api
            .hosts
            .iter()
            .map(|h| h.to_ascii_lowercase())
            .collect(),
        bus: bus.clone(),
    }));
    match api_tls {
        None => {
            servers.spawn(async move {
                if let Err(e) = axum::serve(api_listener, app).await {
                    tracing::error!("admin api stopped: {e}");
                }
            });
        }
        Some(certs) => {
            tracing::info!(
                "the admin api speaks HTTPS with {}",
                config.api.tls_cert_path
            );
            servers.spawn(api::serve_tls(api_listener, app, certs));
        }
    }
    servers.spawn(clean_expired(tracker.clone()));

    let flusher = FlusherThread::start(
        url,
        tracker.clone(),
        config.database.max_pending_torrents.get(),
        Duration::from_millis(config.database.flush_interval_ms.get()),
    )
    .await?;
    tracing::info!(
        "ready: {} mode, database {}",
        format!("{:?}", config.mode).to_lowercase(),
        config.database.url.redacted()
    );

    let signal = shutdown_signal().await;
    tracing::info!("{signal} received: stopping listeners and flushing");
    // HTTP first: connections finish what they are answering, so every announce answered is
    // in the swarm before the final flush. A client that never finishes its request is
    // cut off after the header timeout at most.
    let _ = stop_http.send(true);
    let drain = Duration::from_millis(config.http.header_timeout_ms.get()) + Duration::from_secs(1);
    if tokio::time::timeout(drain, async {
        while http_servers.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        tracing::warn!("http connections still open after {drain:?}; closing them");
    }
    http_servers.shutdown().await;
    servers.shutdown().await;
    udp_stop.store(true, Ordering::Relaxed);
    tokio::task::spawn_blocking(move || udp_threads.into_iter().for_each(|t| drop(t.join())))
        .await
        .map_err(|e| e.to_string())?;
    // Last changes (departures of stopping clients) go out before the bus tasks end.
    let _ = stop_bus.send(true);
    if let Some(mut tasks) = bus_tasks {
        let _ = tokio::time::timeout(Duration::from_secs(3), async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
    }
    let result = flusher.finish().await;
    store.close().await;
    result?;
    tracing::info!("all download counts flushed; bye");
    Ok(())
}

fn rand_u64() -> u64 {
    let mut b = [0u8; 8];
    let _ = getrandom::fill(&mut b);
    u64::from_le_bytes(b)
}

/// Removes silent peers about ten times per peer timeout.
async fn clean_expired(tracker: Arc<Tracker>) {
    let every = Duration::from_secs(u64::from(tracker.policy().peer_timeout / 10).clamp(1, 60));
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

async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}

fn socket_for(addr: SocketAddr, ty: Type, proto: SockProtocol) -> std::io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), ty, Some(proto))?;
    if addr.is_ipv6() {
        // Lets [::]:6969 and 0.0.0.0:6969 be bound side by side, as operators list them.
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    Ok(socket)
}

fn bind_udp(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    let socket = socket_for(addr, Type::DGRAM, SockProtocol::UDP)?;
    // The workers block in recvmmsg (with a read timeout) on threads of their own.
    socket.set_nonblocking(false)?;
    // A larger receive buffer absorbs bursts; the kernel caps it at net.core.rmem_max.
    let _ = socket.set_recv_buffer_size(8 << 20);
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

fn bind_tcp(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = socket_for(addr, Type::STREAM, SockProtocol::TCP)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}
