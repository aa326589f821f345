//! The admin listener's connections: a cap, one deadline for the request (TLS included), an
//! idle timeout (docs/design.md, "The edge").

use std::sync::Arc;
use std::time::Duration;

use axum::Router;

use crate::server::edge::{self, Cap, Opened};
use crate::server::proxy::Proxies;
use crate::server::tls::Certs;

/// Serves the admin router on `listener` (HTTPS with `tls`) until the process ends, at most
/// `max_connections` at once, each closed when it says nothing for `idle`: the first
/// request (handshake included) and every later one must come within it.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    tls: Option<Arc<Certs>>,
    max_connections: usize,
    idle: Duration,
) {
    let cap = Cap::new(max_connections);
    let none = Proxies::default();
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("admin api accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(permit) = cap.enter() else {
            drop(stream);
            continue;
        };
        let (app, tls, none) = (app.clone(), tls.clone(), none.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let deadline = tokio::time::Instant::now() + idle;
            let Ok((opened, _)) = edge::open(stream, remote, &none, tls.as_deref(), deadline).await
            else {
                return;
            };
            match opened {
                Opened::Plain(s) => serve_connection(s, app, idle).await,
                Opened::Tls(s) => serve_connection(s, app, idle).await,
            }
        });
    }
}

async fn serve_connection<IO>(io: IO, app: Router, idle: Duration)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper_util::service::TowerToHyperService::new(app);
    // hyper starts the header timer when it waits for a request, so it also closes a
    // keep-alive connection that stays idle.
    let _ = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(idle)
        .serve_connection(hyper_util::rt::TokioIo::new(io), service)
        .await;
}
