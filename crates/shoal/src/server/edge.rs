//! What every TCP listener does before it serves a connection (docs/design.md, "The edge"):
//! a cap on open connections, then one deadline for everything the client must send first:
//! a trusted proxy's PROXY header, then the TLS handshake. A connection that closes
//! without sending a byte (a load balancer's TCP check) is no error and is not counted.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_rustls::server::TlsStream;

use super::proxy::Proxies;
use super::tls::Certs;
use crate::tracker::ErrorKind;

/// At most `max` connections open at once on one listener.
#[derive(Clone)]
pub struct Cap {
    open: Arc<Semaphore>,
    max: usize,
}

impl Cap {
    pub fn new(max: usize) -> Cap {
        Cap {
            open: Arc::new(Semaphore::new(max)),
            max,
        }
    }

    /// A place for one more connection, held until it closes; None when full.
    pub fn enter(&self) -> Option<OwnedSemaphorePermit> {
        self.open.clone().try_acquire_owned().ok()
    }

    /// Resolves once every connection has closed.
    pub async fn drained(&self) {
        let _ = self.open.acquire_many(self.max as u32).await;
    }
}

/// A connection ready to be served, and the client a trusted proxy's PROXY header named.
pub enum Opened {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// Why a connection ended before it was served.
#[derive(Debug, PartialEq, Eq)]
pub enum Closed {
    /// It closed without sending anything: a TCP health check. Not an error.
    Silent,
    Timeout,
    BadProxyHeader,
    TlsHandshake,
}

impl Closed {
    /// What the metrics count it as, if anything.
    pub fn kind(&self) -> Option<ErrorKind> {
        match self {
            Closed::Silent => None,
            Closed::Timeout => Some(ErrorKind::HeadTimeout),
            Closed::BadProxyHeader => Some(ErrorKind::BadProxyHeader),
            Closed::TlsHandshake => Some(ErrorKind::TlsHandshake),
        }
    }
}

/// The first bytes of `stream`, all before `deadline`: waits for the client to say
/// something, reads a PROXY header when `proxies` trust the peer, then does the TLS
/// handshake when `tls` is set.
pub async fn open(
    mut stream: TcpStream,
    remote: SocketAddr,
    proxies: &Proxies,
    tls: Option<&Certs>,
    deadline: Instant,
) -> Result<(Opened, Option<SocketAddr>), Closed> {
    says_something(&stream, deadline).await?;
    let named = proxies
        .read_header(&mut stream, remote, deadline)
        .await
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::TimedOut => Closed::Timeout,
            _ => Closed::BadProxyHeader,
        })?;
    if proxies.trusts(remote.ip()) {
        // A proxy's own health check may send its header and close.
        says_something(&stream, deadline).await?;
    }
    let opened = match tls {
        None => Opened::Plain(stream),
        Some(certs) => {
            let accept = certs.acceptor().accept(stream);
            match tokio::time::timeout_at(deadline, accept).await {
                Ok(Ok(tls)) => Opened::Tls(Box::new(tls)),
                Ok(Err(_)) => return Err(Closed::TlsHandshake),
                Err(_) => return Err(Closed::Timeout),
            }
        }
    };
    Ok((opened, named))
}

/// Waits for the first byte (not consumed): Silent if the peer closes first.
async fn says_something(stream: &TcpStream, deadline: Instant) -> Result<(), Closed> {
    let mut first = [0u8; 1];
    match tokio::time::timeout_at(deadline, stream.peek(&mut first)).await {
        Err(_) => Err(Closed::Timeout),
        Ok(Ok(0) | Err(_)) => Err(Closed::Silent),
        Ok(Ok(_)) => Ok(()),
    }
}
