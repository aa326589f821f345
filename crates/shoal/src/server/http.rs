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
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::edge::{self, Cap, Opened};
use super::proxy::Proxies;
use super::stopped;
use super::tls::Certs;
use crate::config::HttpConfig;
use crate::tracker::{Action, ErrorKind, PeerAnnounce, Protocol::Http, Tracker};

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
    let cap = Cap::new(limits.max_connections.get());
    let header_timeout = Duration::from_millis(limits.header_timeout_ms.get());
    let proxies = Proxies::new(&limits.trusted_proxies);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stopped(&mut stop) => break,
        };
        let (stream, remote) = match accepted {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!("http accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Over the limit: close at once, before hyper spends anything on the connection.
        let Some(permit) = cap.enter() else {
            tracker.count_error(Http, None, ErrorKind::TooManyConnections);
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let deadline = tokio::time::Instant::now() + header_timeout;
        let mut conn = Conn {
            tracker: tracker.clone(),
            proxies: proxies.clone(),
            remote,
            named: None,
            header_timeout,
            max_header_bytes: limits.max_header_bytes,
            stop: stop.clone(),
        };
        let tls = tls.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match edge::open(stream, remote, &conn.proxies, tls.as_deref(), deadline).await {
                Ok((opened, named)) => {
                    conn.named = named;
                    match opened {
                        Opened::Plain(s) => conn.serve(s).await,
                        Opened::Tls(s) => conn.serve(s).await,
                    }
                }
                Err(closed) => {
                    if let Some(kind) = closed.kind() {
                        conn.tracker.count_error(Http, None, kind);
                    }
                }
            }
        });
    }
    drop(listener);
    cap.drained().await;
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
                ErrorKind::HeadTooLarge
            } else if e.is_timeout() {
                ErrorKind::HeadTimeout
            } else if e.is_parse() {
                ErrorKind::BadHttp
            } else {
                // Resets and the like: the client went away; nothing to count.
                return;
            };
            counted.count_error(Http, None, kind);
        }
    }
}

fn reply(status: StatusCode, body: Vec<u8>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Full::new(Bytes::from(body)))
        .expect("static response parts are valid")
}

/// A BEP 3 failure: it travels in a 200 response, as clients read the body, not the status.
fn failure(reason: &str) -> Response<Full<Bytes>> {
    let mut body = Vec::with_capacity(32 + reason.len());
    write_failure(reason, &mut body);
    reply(StatusCode::OK, body)
}

/// The codec around `Tracker`: routes, parses, and encodes what the tracker decided.
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
            t.count_error(Http, None, ErrorKind::NotFound);
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
        Err(e) => {
            t.count_error(Http, Some(Action::Announce), ErrorKind::from(&e));
            return failure(&e.to_string());
        }
    };
    let announce = PeerAnnounce {
        info_hash: req.info_hash,
        peer_id: req.peer_id,
        // The socket's address (or a trusted proxy's word), never the `ip` parameter.
        ip: remote.ip(),
        port: req.port,
        left: req.left,
        event: req.event,
        numwant: req.numwant,
        key,
    };
    let mut peers = Vec::new();
    let answer = match t.announce(Http, &announce, t.now(), &mut peers) {
        Ok(answer) => answer,
        Err(refused) => return failure(&refused.to_string()),
    };
    let mut body = Vec::with_capacity(96 + peers.len() * 18);
    AnnounceResponse {
        interval: answer.interval,
        min_interval: answer.min_interval,
        complete: answer.seeders,
        incomplete: answer.leechers,
        peers: &peers,
    }
    .write(req.compact, req.no_peer_id, &mut body);
    reply(StatusCode::OK, body)
}

fn scrape(t: &Tracker, query: &[u8], key: Option<&[u8]>) -> Response<Full<Bytes>> {
    let req = match ScrapeRequest::parse(query) {
        Ok(r) => r,
        Err(e) => {
            t.count_error(Http, Some(Action::Scrape), ErrorKind::from(&e));
            return failure(&e.to_string());
        }
    };
    let counts = match t.scrape(Http, &req.info_hashes, key, t.now()) {
        Ok(counts) => counts,
        Err(refused) => return failure(&refused.to_string()),
    };
    let mut files: Vec<_> = req
        .info_hashes
        .iter()
        .zip(counts)
        .map(|(h, s)| {
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

/// The HTTP handler in process, without sockets: the codec around `Tracker`.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AnnounceConfig, Mode};

    fn get(t: &Tracker, target: &str, from: &str) -> (StatusCode, Vec<u8>) {
        let req = Request::builder().uri(target).body(()).unwrap();
        let resp = handle(t, &req, from.parse().unwrap());
        let status = resp.status();
        let body = body_of(resp);
        (status, body)
    }

    fn body_of(resp: Response<Full<Bytes>>) -> Vec<u8> {
        use http_body_util::BodyExt;
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(resp.into_body().collect())
            .unwrap()
            .to_bytes()
            .to_vec()
    }

    fn query(port: u16, peer: u8) -> String {
        let ih = "%03".repeat(20);
        let id = format!("%{peer:02x}").repeat(20);
        format!("info_hash={ih}&peer_id={id}&port={port}&uploaded=0&downloaded=0&left=5&compact=1")
    }

    #[test]
    fn an_announce_is_answered_with_the_other_peers_and_counted() {
        let t = Tracker::new(AnnounceConfig::default(), Mode::Public, swarm::Limits::NONE);
        get(
            &t,
            &format!("/announce?{}", query(6881, 1)),
            "10.0.0.1:5000",
        );
        let (status, body) = get(
            &t,
            &format!("/announce?{}", query(6882, 2)),
            "10.0.0.2:5000",
        );
        assert_eq!(status, StatusCode::OK);
        let text = String::from_utf8_lossy(&body);
        assert!(text.contains("10:incompletei2e"), "{text}");
        // The other peer, compact: 10.0.0.1:6881.
        assert!(
            body.windows(6).any(|w| w == [10, 0, 0, 1, 0x1a, 0xe1]),
            "{text}"
        );
        let m = t.metrics_text();
        assert!(m.contains("shoal_requests_total{protocol=\"http\",action=\"announce\"} 2"));
    }

    #[test]
    fn refusals_and_malformed_queries_are_failures_with_their_kind() {
        let t = Tracker::new(
            AnnounceConfig::default(),
            Mode::Private,
            swarm::Limits::NONE,
        );
        let (status, body) = get(
            &t,
            &format!("/announce?{}", query(6881, 1)),
            "10.0.0.1:5000",
        );
        assert_eq!(status, StatusCode::OK, "BEP 3 failures travel in a 200");
        assert!(String::from_utf8_lossy(&body).contains("failure reason"));
        let (_, body) = get(&t, "/announce?info_hash=short", "10.0.0.1:5000");
        assert!(String::from_utf8_lossy(&body).contains("failure reason"));
        let (status, _) = get(&t, "/nowhere", "10.0.0.1:5000");
        assert_eq!(status, StatusCode::NOT_FOUND);
        let m = t.metrics_text();
        for kind in ["missing_key", "wrong_length", "not_found"] {
            assert!(m.contains(&format!("kind=\"{kind}\"}} 1")), "{kind} in {m}");
        }
    }
}
