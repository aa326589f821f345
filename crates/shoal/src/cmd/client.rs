//! A small blocking HTTP/1.1 client for the commands that talk to trackers and to the admin
//! API (`shoal check`, `shoal whitelist`, `shoal keys`): one request per connection, over
//! TCP or over TLS (rustls) with the system's roots or a given CA.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

/// How long a command waits for any one exchange.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// Why an exchange failed, with its cause kept.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{url}: {why}")]
    Url { url: String, why: String },
    #[error("{}: {source}", path.display())]
    Ca {
        path: PathBuf,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("cannot set up TLS: {0}")]
    Tls(#[from] rustls::Error),
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
}

impl Client {
    /// Trusts `ca` (a PEM file) if given, else the system's roots.
    pub fn new(ca: Option<&Path>) -> Result<Client, Error> {
        let mut roots = rustls::RootCertStore::empty();
        match ca {
            Some(path) => {
                let bad = |e: Box<dyn std::error::Error + Send + Sync>| Error::Ca {
                    path: path.to_path_buf(),
                    source: e,
                };
                for c in CertificateDer::pem_file_iter(path).map_err(|e| bad(e.into()))? {
                    roots
                        .add(c.map_err(|e| bad(e.into()))?)
                        .map_err(|e| bad(e.into()))?;
                }
            }
            None => {
                for c in rustls_native_certs::load_native_certs().certs {
                    let _ = roots.add(c);
                }
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Client { tls: Arc::new(tls) })
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
        let tcp = TcpStream::connect_timeout(&addr, TIMEOUT)
            .map_err(|source| Error::Connect { addr, source })?;
        tcp.set_read_timeout(Some(TIMEOUT))
            .map_err(io("setting a read timeout"))?;
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
            s.write_all(req.as_bytes())
                .map_err(io(format!("TLS with {addr}")))?;
            read_all(&mut s, &mut raw)?;
        } else {
            let mut s = tcp;
            s.write_all(req.as_bytes())
                .map_err(io(format!("sending to {addr}")))?;
            read_all(&mut s, &mut raw)?;
        }
        split(&raw)
    }
}

fn read_all<S: Read>(s: &mut S, out: &mut Vec<u8>) -> Result<(), Error> {
    match s.read_to_end(out) {
        Ok(_) => Ok(()),
        // A TLS peer that closes without close_notify still sent the whole answer.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !out.is_empty() => Ok(()),
        Err(e) => Err(io("reading the answer")(e)),
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
