//! A small blocking HTTP/1.1 client for the commands that talk to trackers and to the admin
//! API (`shoal check`, `shoal whitelist`, `shoal keys`): one request per connection, over
//! TCP or over TLS (rustls) with the system's roots or a given CA.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

/// How long a command waits for any one exchange.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// A parsed `http://` or `https://` URL: where to connect and what to ask for.
pub struct Target {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
}

impl Target {
    pub fn parse(url: &str) -> Result<Target, String> {
        let u = url::Url::parse(url).map_err(|e| format!("{url}: {e}"))?;
        let tls = match u.scheme() {
            "http" => false,
            "https" => true,
            other => return Err(format!("{url}: scheme {other} is not http or https")),
        };
        let host = u.host_str().ok_or_else(|| format!("{url}: no host"))?;
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
    pub fn new(ca: Option<&Path>) -> Result<Client, String> {
        let mut roots = rustls::RootCertStore::empty();
        match ca {
            Some(path) => {
                for c in CertificateDer::pem_file_iter(path)
                    .map_err(|e| format!("{}: {e}", path.display()))?
                {
                    let c = c.map_err(|e| format!("{}: {e}", path.display()))?;
                    roots
                        .add(c)
                        .map_err(|e| format!("{}: {e}", path.display()))?;
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
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
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
    ) -> Result<(u16, Vec<u8>), String> {
        let addr = (t.host.as_str(), t.port)
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {}: {e}", t.host))?
            .next()
            .ok_or_else(|| format!("{} has no address", t.host))?;
        let tcp = TcpStream::connect_timeout(&addr, TIMEOUT)
            .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        tcp.set_read_timeout(Some(TIMEOUT))
            .map_err(|e| e.to_string())?;
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
            let name =
                ServerName::try_from(t.host.clone()).map_err(|e| format!("{}: {e}", t.host))?;
            let conn =
                rustls::ClientConnection::new(self.tls.clone(), name).map_err(|e| e.to_string())?;
            let mut s = rustls::StreamOwned::new(conn, tcp);
            s.write_all(req.as_bytes())
                .map_err(|e| format!("TLS with {addr}: {e}"))?;
            read_all(&mut s, &mut raw)?;
        } else {
            let mut s = tcp;
            s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
            read_all(&mut s, &mut raw)?;
        }
        split(&raw)
    }
}

fn read_all<S: Read>(s: &mut S, out: &mut Vec<u8>) -> Result<(), String> {
    match s.read_to_end(out) {
        Ok(_) => Ok(()),
        // A TLS peer that closes without close_notify still sent the whole answer.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !out.is_empty() => Ok(()),
        Err(e) => Err(format!("reading the answer: {e}")),
    }
}

/// Status and body of a `Connection: close` answer (Content-Length or read to the end).
fn split(raw: &[u8]) -> Result<(u16, Vec<u8>), String> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("the answer is not HTTP")?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("the answer has no status")?;
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
