//! The HTTP tracker: `/announce` and `/scrape` over HTTP/1.1 keep-alive connections.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode, header};
use hyper_util::rt::{TokioIo, TokioTimer};
use protocol::http::{
    AnnounceRequest, AnnounceResponse, ScrapeRequest, SwarmCounts, write_failure, write_scrape,
};
use swarm::Families;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::proxy::Proxies;
use super::tls::Certs;
use crate::config::HttpConfig;
use crate::tracker::metrics::{Action, Protocol::Http};
use crate::tracker::{PeerAnnounce, Tracker};

/// Serves until `stop` turns true, then drains: no new connection is accepted, every open
/// one finishes the request it is reading or answering and closes, and only then does this
/// return, so the final flush comes after the last answered announce. With `tls` it speaks
/// HTTPS; a connection from `http.trusted_proxies` may name its client (see `proxy.rs`).
pub async fn serve(
    listener: TcpListener,
    tracker: Arc<Tracker>,
    limits: HttpConfig,
    mut stop: watch::Receiver<bool>,
    tls: Option<Arc<Certs>>,
) {
    let open = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.get()));
    let header_timeout = Duration::from_millis(limits.header_timeout_ms.get());
    let proxies = Proxies::new(&limits.trusted_proxies);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stopped(&mut stop) => break,
        };
        let (mut stream, remote) = match accepted {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!("http accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Over the limit: close at once, before hyper spends anything on the connection.
        let Ok(permit) = open.clone().try_acquire_owned() else {
            tracker.metrics().error(Http, None, "too_many_connections");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let conn = Conn {
            tracker: tracker.clone(),
            proxies: proxies.clone(),
            remote,
            named: None,
            header_timeout,
            max_header_bytes: limits.max_header_bytes,
            stop: stop.clone(),
        };
        let tls = tls.as_ref().map(|c| c.acceptor());
        tokio::spawn(async move {
            let _permit = permit;
            let mut conn = conn;
            // A PROXY header comes first, before any TLS.
            match conn
                .proxies
                .read_header(&mut stream, remote, header_timeout)
                .await
            {
                Ok(named) => conn.named = named,
                Err(_) => return conn.tracker.metrics().error(Http, None, "bad_proxy_header"),
            }
            match tls {
                None => conn.serve(stream).await,
                Some(acceptor) => {
                    match tokio::time::timeout(header_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => conn.serve(tls).await,
                        _ => conn.tracker.metrics().error(Http, None, "tls_handshake"),
                    }
                }
            }
        });
    }
    drop(listener);
    // Every connection holds a permit until it has closed.
    let _ = open.acquire_many(limits.max_connections.get() as u32).await;
}

/// One accepted connection and what its requests need.
struct Conn {
    tracker: Arc<Tracker>,
    proxies: Proxies,
    remote: SocketAddr,
    /// The client a trusted proxy's PROXY header named.
    named: Option<SocketAddr>,
    header_timeout: Duration,
    max_header_bytes: usize,
    stop: watch::Receiver<bool>,
}

impl Conn {
    async fn serve<IO>(self, io: IO)
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let Conn {
            tracker,
            proxies,
            remote,
            named,
            header_timeout,
            max_header_bytes,
            mut stop,
        } = self;
        let counted = tracker.clone();
        let service = service_fn(move |req: Request<Incoming>| {
            let client = named.unwrap_or_else(|| {
                let forwarded = req.headers().get_all("x-forwarded-for");
                let values = forwarded.iter().filter_map(|v| v.to_str().ok());
                SocketAddr::new(proxies.forwarded_for(remote.ip(), values), remote.port())
            });
            let resp = handle(&tracker, &req, client);
            async move { Ok::<_, Infallible>(resp) }
        });
        let conn = http1::Builder::new()
            .keep_alive(true)
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout)
            .max_buf_size(max_header_bytes)
            .max_headers(64)
            .serve_connection(TokioIo::new(io), service);
        tokio::pin!(conn);
        let served = tokio::select! {
            served = conn.as_mut() => served,
            _ = stopped(&mut stop) => {
                // Finish the request in flight, then close; an idle keep-alive closes now.
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        };
        if let Err(e) = served {
            let kind = if e.is_parse_too_large() {
                "head_too_large"
            } else if e.is_timeout() {
                "head_timeout"
            } else if e.is_parse() {
                "bad_http"
            } else {
                // Resets and the like: the client went away; nothing to count.
                return;
            };
            counted.metrics().error(Http, None, kind);
        }
    }
}

/// Resolves once `stop` is true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

fn reply(status: StatusCode, body: Vec<u8>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Full::new(Bytes::from(body)))
        .expect("static response parts are valid")
}

fn failure(t: &Tracker, action: Action, kind: &'static str, reason: &str) -> Response<Full<Bytes>> {
    t.metrics().error(Http, Some(action), kind);
    let mut body = Vec::with_capacity(32 + reason.len());
    write_failure(reason, &mut body);
    // BEP 3 failures travel in a 200 response: clients read the body, not the status.
    reply(StatusCode::OK, body)
}

pub fn handle<B>(t: &Tracker, req: &Request<B>, remote: SocketAddr) -> Response<Full<Bytes>> {
    let query = req.uri().query().unwrap_or("").as_bytes();
    // `/announce/<key>` and `/scrape/<key>` carry a private tracker's key.
    let path = req.uri().path();
    let (route, key) = match path[1.min(path.len())..].split_once('/') {
        Some((route, key)) => (route, Some(key.as_bytes())),
        None => (&path[1.min(path.len())..], None),
    };
    match route {
        "announce" => announce(t, query, key, remote),
        "scrape" => scrape(t, query, key),
        _ => {
            t.metrics().error(Http, None, "not_found");
            let mut body = Vec::new();
            write_failure(
                "not found: this tracker answers /announce and /scrape",
                &mut body,
            );
            reply(StatusCode::NOT_FOUND, body)
        }
    }
}

fn announce(
    t: &Tracker,
    query: &[u8],
    key: Option<&[u8]>,
    remote: SocketAddr,
) -> Response<Full<Bytes>> {
    let req = match AnnounceRequest::parse(query) {
        Ok(r) => r,
        Err(e) => return failure(t, Action::Announce, e.kind(), &e.to_string()),
    };
    if let Err(refusal) = t
        .access()
        .check_announce(&req.info_hash, key, Tracker::unix_now())
    {
        return failure(t, Action::Announce, refusal.kind(), &refusal.to_string());
    }
    t.metrics().request(Http, Action::Announce);
    let mut peers = Vec::new();
    let announced = t.announce(
        &PeerAnnounce {
            info_hash: req.info_hash,
            peer_id: req.peer_id,
            // The socket's address, never the `ip` parameter: anyone could claim any address.
            ip: remote.ip(),
            port: req.port,
            left: req.left,
            event: req.event,
            numwant: req.numwant,
            families: Families::Both,
        },
        &mut peers,
    );
    let stats = match announced {
        Ok(stats) => stats,
        Err(limit) => return failure(t, Action::Announce, limit.key(), limit.message()),
    };
    let mut body = Vec::with_capacity(96 + peers.len() * 18);
    AnnounceResponse {
        interval: t.policy().interval.get(),
        min_interval: t.policy().min_interval,
        complete: stats.seeders,
        incomplete: stats.leechers,
        peers: &peers,
    }
    .write(req.compact, req.no_peer_id, &mut body);
    reply(StatusCode::OK, body)
}

fn scrape(t: &Tracker, query: &[u8], key: Option<&[u8]>) -> Response<Full<Bytes>> {
    let req = match ScrapeRequest::parse(query) {
        Ok(r) => r,
        Err(e) => return failure(t, Action::Scrape, e.kind(), &e.to_string()),
    };
    if let Err(refusal) = t
        .access()
        .check_scrape(&req.info_hashes, Some(key), Tracker::unix_now())
    {
        return failure(t, Action::Scrape, refusal.kind(), &refusal.to_string());
    }
    t.metrics().request(Http, Action::Scrape);
    let mut files: Vec<_> = req
        .info_hashes
        .iter()
        .map(|h| {
            let s = t.scrape(h);
            (
                *h,
                SwarmCounts {
                    complete: s.seeders,
                    incomplete: s.leechers,
                    downloaded: s.downloaded,
                },
            )
        })
        .collect();
    let mut body = Vec::with_capacity(16 + files.len() * 80);
    write_scrape(&mut files, &mut body);
    reply(StatusCode::OK, body)
}
