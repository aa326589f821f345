//! A small blocking HTTP/1.1 client for the commands that talk to trackers and to the admin
//! API (`shoal check`, `shoal whitelist`, `shoal keys`), and nothing else: one request per
//! connection, over TCP or over TLS (rustls) with the system's roots or a given CA file
//! (`trust.rs`: its certificates are also pinned). It trusts no server: the whole exchange
//! has one deadline however slowly the answer trickles, and an answer larger than the
//! client's limit is cut off with an error.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use std::time::Instant;

use rustls::pki_types::ServerName;

/// How long a command waits for one whole exchange, connect to last byte.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// The largest answer read by default (the admin API's lists fit well within it).
pub const MAX_ANSWER: usize = 16 << 20;

/// Why an exchange failed, with its cause kept.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{url}: {why}")]
    Url { url: String, why: String },
    #[error(transparent)]
    Trust(#[from] crate::trust::Error),
    #[error("cannot set up TLS: {0}")]
    Tls(#[from] rustls::Error),
    #[error("no whole answer within {0:?}")]
    Timeout(Duration),
    #[error("the answer is larger than {0} bytes; not read further")]
    TooLarge(usize),
    #[error("cannot resolve {host}: {source}")]
    Resolve {
        host: String,
        source: std::io::Error,
    },
    #[error("{0} has no address")]
    NoAddress(String),
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("the answer is not HTTP: {0}")]
    NotHttp(&'static str),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}

/// A parsed `http://` or `https://` URL: where to connect and what to ask for.
pub struct Target {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
}

impl Target {
    pub fn parse(url: &str) -> Result<Target, Error> {
        let bad = |why: String| Error::Url {
            url: url.to_string(),
            why,
        };
        let u = url::Url::parse(url).map_err(|e| bad(e.to_string()))?;
        let tls = match u.scheme() {
            "http" => false,
            "https" => true,
            other => return Err(bad(format!("scheme {other} is not http or https"))),
        };
        let host = u.host_str().ok_or_else(|| bad("no host".into()))?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = u.port_or_known_default().unwrap_or(80);
        let mut path = u.path().to_string();
        if let Some(q) = u.query() {
            path.push('?');
            path.push_str(q);
        }
        Ok(Target {
            tls,
            host,
            port,
            path,
        })
    }
}

pub struct Client {
    tls: Arc<rustls::ClientConfig>,
    limit: usize,
    timeout: Duration,
}

impl Client {
    /// Trusts `ca` (a PEM file; its certificates pinned too) if given, else the system's
    /// roots; answers up to `MAX_ANSWER` within `TIMEOUT`.
    pub fn new(ca: Option<&Path>) -> Result<Client, Error> {
        Ok(Client {
            tls: crate::trust::client_config(ca)?,
            limit: MAX_ANSWER,
            timeout: TIMEOUT,
        })
    }

    /// Answers longer than `bytes` are an error.
    pub fn limit(mut self, bytes: usize) -> Client {
        self.limit = bytes;
        self
    }

    /// One exchange, connect to last byte, must end within `t`.
    pub fn timeout(mut self, t: Duration) -> Client {
        self.timeout = t;
        self
    }

    /// One request; (status, body). `headers` are whole lines without the line end.
    pub fn request(
        &self,
        method: &str,
        t: &Target,
        headers: &[String],
        body: Option<&str>,
    ) -> Result<(u16, Vec<u8>), Error> {
        let addr = (t.host.as_str(), t.port)
            .to_socket_addrs()
            .map_err(|source| Error::Resolve {
                host: t.host.clone(),
                source,
            })?
            .next()
            .ok_or_else(|| Error::NoAddress(t.host.clone()))?;
        let deadline = Instant::now() + self.timeout;
        let tcp = TcpStream::connect_timeout(&addr, self.timeout)
            .map_err(|source| Error::Connect { addr, source })?;
        tcp.set_write_timeout(Some(self.timeout))
            .map_err(io("setting a write timeout"))?;
        let clock = Deadline {
            at: deadline,
            whole: self.timeout,
            tcp: tcp.try_clone().map_err(io("the socket"))?,
        };
        let host = if t.host.contains(':') {
            format!("[{}]:{}", t.host, t.port)
        } else {
            format!("{}:{}", t.host, t.port)
        };
        let mut req = format!(
            "{method} {} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nUser-Agent: shoal\r\n",
            t.path
        );
        for h in headers {
            req.push_str(h);
            req.push_str("\r\n");
        }
        if let Some(b) = body {
            req.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                b.len()
            ));
        }
        req.push_str("\r\n");
        req.push_str(body.unwrap_or(""));
        let mut raw = Vec::new();
        if t.tls {
            let name = ServerName::try_from(t.host.clone()).map_err(|e| Error::Url {
                url: t.host.clone(),
                why: e.to_string(),
            })?;
            let conn = rustls::ClientConnection::new(self.tls.clone(), name)?;
            let mut s = rustls::StreamOwned::new(conn, tcp);
            clock.arm()?;
            s.write_all(req.as_bytes())
                .map_err(clock.or(io(format!("TLS with {addr}"))))?;
            clock.read_all(&mut s, &mut raw, self.limit)?;
        } else {
            let mut s = tcp;
            s.write_all(req.as_bytes())
                .map_err(clock.or(io(format!("sending to {addr}"))))?;
            clock.read_all(&mut s, &mut raw, self.limit)?;
        }
        split(&raw)
    }
}

/// One deadline for a whole exchange: every blocking read waits only for what is left.
struct Deadline {
    at: Instant,
    whole: Duration,
    tcp: TcpStream,
}

impl Deadline {
    /// Sets the socket's read timeout to what is left; an error once nothing is.
    fn arm(&self) -> Result<(), Error> {
        let left = self.at.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Error::Timeout(self.whole));
        }
        self.tcp
            .set_read_timeout(Some(left))
            .map_err(io("setting a read timeout"))
    }

    /// A timed-out socket operation is the deadline's error; others are `other`'s.
    fn or(
        &self,
        other: impl FnOnce(std::io::Error) -> Error,
    ) -> impl FnOnce(std::io::Error) -> Error {
        let whole = self.whole;
        move |e| match e.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => Error::Timeout(whole),
            _ => other(e),
        }
    }

    fn read_all<S: Read>(&self, s: &mut S, out: &mut Vec<u8>, limit: usize) -> Result<(), Error> {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            self.arm()?;
            match s.read(&mut chunk) {
                Ok(0) => return Ok(()),
                Ok(n) => {
                    if out.len() + n > limit {
                        return Err(Error::TooLarge(limit));
                    }
                    out.extend_from_slice(&chunk[..n]);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                // A TLS peer that closes without close_notify still sent the whole answer.
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !out.is_empty() => {
                    return Ok(());
                }
                Err(e) => return Err(self.or(io("reading the answer"))(e)),
            }
        }
    }
}

/// Status and body of a `Connection: close` answer (Content-Length or read to the end).
fn split(raw: &[u8]) -> Result<(u16, Vec<u8>), Error> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or(Error::NotHttp("no end of headers"))?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or(Error::NotHttp("no status"))?;
    let mut body = raw[end + 4..].to_vec();
    if let Some(len) = head.lines().find_map(|l| {
        l.to_ascii_lowercase()
            .strip_prefix("content-length:")
            .and_then(|v| v.trim().parse::<usize>().ok())
    }) {
        body.truncate(len);
    }
    Ok((status, body))
}
