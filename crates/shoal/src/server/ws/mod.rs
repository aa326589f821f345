//! The WebSocket tracker (WebTorrent): browsers announce over one long-lived connection
//! and the tracker relays their WebRTC offers and answers. The frames are
//! `protocol::ws`; the announce policy is `Tracker`'s, as for UDP and HTTP; what only this
//! protocol has (connections, offers waiting for answers) is in `hub.rs`; one connection's
//! loop is `conn.rs` (docs/design.md, "WebSocket").

mod conn;
pub mod hub;
pub mod relay;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use self::hub::Hub;
use super::edge::{self, Cap, Opened};
use super::proxy::Proxies;
use super::tls::Certs;
use crate::config::WsConfig;
use crate::tracker::{ErrorKind, Protocol::Ws, Tracker};

/// What a WebSocket listener needs besides its socket.
#[derive(Clone)]
pub struct Setup {
    pub tracker: Arc<Tracker>,
    pub hub: Arc<Hub>,
    pub config: WsConfig,
    pub proxies: Proxies,
    pub tls: Option<Arc<Certs>>,
    /// In a cluster: offers and answers for peers other nodes hold.
    pub relay: Option<relay::Relay>,
}

/// Open connections per client address, over every listener.
#[derive(Default)]
struct PerIp(Mutex<HashMap<IpAddr, usize>>);

/// A connection's place in `PerIp`, given back when it closes.
struct IpSlot(Arc<PerIp>, IpAddr);

impl PerIp {
    fn take(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<IpSlot> {
        let mut m = self.0.lock().unwrap();
        let n = m.entry(ip).or_default();
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(IpSlot(self.clone(), ip))
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut m = self.0.0.lock().unwrap();
        if let Some(n) = m.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.1);
            }
        }
    }
}

/// Serves until `stop` turns true, then closes every connection (each announces its
/// peers' departure) and returns.
pub async fn serve(listener: TcpListener, setup: Setup, mut stop: watch::Receiver<bool>) {
    let cap = Cap::new(setup.config.max_connections.get());
    let per_ip = Arc::new(PerIp::default());
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = super::stopped(&mut stop) => break,
        };
        let (stream, remote) = match accepted {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("ws accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(permit) = cap.enter() else {
            setup
                .tracker
                .count_error(Ws, None, ErrorKind::TooManyConnections);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (setup, per_ip, stop) = (setup.clone(), per_ip.clone(), stop.clone());
        tokio::spawn(async move {
            let _permit = permit;
            accept(stream, remote, &setup, &per_ip, stop).await;
        });
    }
    drop(listener);
    cap.drained().await;
}

/// Everything before the first frame, within `ws.handshake_timeout_ms`: a trusted proxy's
/// PROXY header, TLS, the upgrade (path, Origin, `X-Forwarded-For`); then the connection.
async fn accept(
    stream: TcpStream,
    remote: SocketAddr,
    setup: &Setup,
    per_ip: &Arc<PerIp>,
    stop: watch::Receiver<bool>,
) {
    let limit = Duration::from_millis(setup.config.handshake_timeout_ms.get());
    let deadline = tokio::time::Instant::now() + limit;
    let tls = setup.tls.as_deref();
    match edge::open(stream, remote, &setup.proxies, tls, deadline).await {
        Ok((opened, named)) => {
            let remote = named.unwrap_or(remote);
            match opened {
                Opened::Plain(s) => upgrade(s, remote, setup, per_ip, stop, deadline).await,
                Opened::Tls(s) => upgrade(s, remote, setup, per_ip, stop, deadline).await,
            }
        }
        Err(closed) => {
            if let Some(kind) = closed.kind() {
                setup.tracker.count_error(Ws, None, kind);
            }
        }
    }
}

/// What the upgrade request said.
#[derive(Default)]
struct Upgrade {
    key: Option<Vec<u8>>,
    client: Option<IpAddr>,
    refused: Option<ErrorKind>,
}

async fn upgrade<IO>(
    io: IO,
    remote: SocketAddr,
    setup: &Setup,
    per_ip: &Arc<PerIp>,
    stop: watch::Receiver<bool>,
    deadline: tokio::time::Instant,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let c = &setup.config;
    // Small buffers: a tracker holds many idle sockets, each frame is small and written at
    // once (the library's defaults reserve 128 KiB each way per socket).
    let ws_config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_message_size(Some(c.max_message_bytes.get()))
        .max_frame_size(Some(c.max_message_bytes.get()));
    let mut said = Upgrade::default();
    let check = |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        let (key, client, refused) = read_request(req, remote, setup);
        said = Upgrade {
            key,
            client: Some(client),
            refused,
        };
        match refused {
            None => Ok(resp),
            Some(ErrorKind::BadOrigin) => Err(status(StatusCode::FORBIDDEN)),
            Some(_) => Err(status(StatusCode::NOT_FOUND)),
        }
    };
    let handshake = tokio_tungstenite::accept_hdr_async_with_config(io, check, Some(ws_config));
    let ws = match tokio::time::timeout_at(deadline, handshake).await {
        Ok(Ok(ws)) => ws,
        Ok(Err(_)) => {
            return setup.tracker.count_error(
                Ws,
                None,
                said.refused.unwrap_or(ErrorKind::BadUpgrade),
            );
        }
        Err(_) => return setup.tracker.count_error(Ws, None, ErrorKind::HeadTimeout),
    };
    let client = said.client.unwrap_or(remote.ip());
    let Some(_slot) = per_ip.take(client, c.max_connections_per_ip.get()) else {
        return setup
            .tracker
            .count_error(Ws, None, ErrorKind::TooManyConnectionsPerIp);
    };
    conn::run(ws, setup, said.key, stop).await;
}

fn status(code: StatusCode) -> ErrorResponse {
    let mut r = ErrorResponse::new(None);
    *r.status_mut() = code;
    r
}

/// The key in the path (`/announce/<key>`), the client (a trusted proxy's
/// `X-Forwarded-For`, else the socket), and why the upgrade is refused, if it is: a path
/// that is no tracker's, or a page whose origin is not allowed. A request without `Origin`
/// comes from a program, not a page, and is let in.
fn read_request(
    req: &Request,
    remote: SocketAddr,
    setup: &Setup,
) -> (Option<Vec<u8>>, IpAddr, Option<ErrorKind>) {
    let forwarded = req.headers().get_all("x-forwarded-for");
    let values = forwarded.iter().filter_map(|v| v.to_str().ok());
    let client = setup.proxies.forwarded_for(remote.ip(), values);
    let path = req.uri().path().trim_end_matches('/');
    let key = match path {
        "" | "/announce" => Ok(None),
        p => match p.strip_prefix("/announce/") {
            Some(k) if !k.is_empty() && !k.contains('/') => Ok(Some(k.as_bytes().to_vec())),
            _ => Err(ErrorKind::NotFound),
        },
    };
    let allowed = &setup.config.allowed_origins;
    let origin_ok = allowed.is_empty()
        || req.headers().get("origin").is_none_or(|o| {
            o.to_str()
                .is_ok_and(|o| allowed.iter().any(|a| a.eq_ignore_ascii_case(o)))
        });
    match (key, origin_ok) {
        (Err(kind), _) => (None, client, Some(kind)),
        (Ok(_), false) => (None, client, Some(ErrorKind::BadOrigin)),
        (Ok(key), true) => (key, client, None),
    }
}
