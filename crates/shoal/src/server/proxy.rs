//! The client's address behind a reverse proxy or load balancer. Only a connection from
//! `http.trusted_proxies` may name the client, by a PROXY protocol header (v1 or v2, read
//! with the `ppp` crate) or by `X-Forwarded-For`; from anyone else the socket's address is
//! the client's, whatever the request says.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use ppp::HeaderResult;
use protocol::CanonicalIp;
use tokio::net::TcpStream;

/// `http.trusted_proxies`.
#[derive(Clone, Default)]
pub struct Proxies(Arc<[IpNet]>);

const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";
/// The longest header either version may send that we accept (v2 with TLVs stays below).
const MAX_HEADER: usize = 536;

impl Proxies {
    pub fn new(nets: &[IpNet]) -> Self {
        Proxies(nets.into())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn trusts(&self, ip: IpAddr) -> bool {
        let ip = CanonicalIp::from(ip).ip();
        self.0.iter().any(|n| n.contains(&ip))
    }

    /// The client per `X-Forwarded-For` values (in header order) on a connection from
    /// `remote`: the right-most address that is not itself a trusted proxy. Anything not
    /// from a trusted proxy, or not parseable, leaves `remote`.
    pub fn forwarded_for<'a>(
        &self,
        remote: IpAddr,
        values: impl Iterator<Item = &'a str>,
    ) -> IpAddr {
        if !self.trusts(remote) {
            return remote;
        }
        let hops: Vec<&str> = values.flat_map(|v| v.split(',')).map(str::trim).collect();
        for hop in hops.iter().rev() {
            let Ok(ip) = hop.parse::<IpAddr>() else {
                // A hop we cannot read: everything left of it is the client's own say.
                return remote;
            };
            if !self.trusts(ip) {
                return ip;
            }
        }
        remote
    }

    /// On a connection from a trusted proxy, reads a PROXY protocol header if the stream
    /// starts with one and returns the client it names; the header is consumed, the HTTP
    /// request after it is not. Ok(None): no header (or not a trusted proxy), nothing read.
    /// The whole header must arrive before `deadline`, however it trickles in.
    pub async fn read_header(
        &self,
        stream: &mut TcpStream,
        remote: SocketAddr,
        deadline: tokio::time::Instant,
    ) -> std::io::Result<Option<SocketAddr>> {
        use std::io::{Error, ErrorKind};
        use tokio::io::AsyncReadExt;
        if !self.trusts(remote.ip()) {
            return Ok(None);
        }
        let mut buf = [0u8; MAX_HEADER];
        let timed_out = || Error::new(ErrorKind::TimedOut, "PROXY header timed out");
        loop {
            // `peek` returns at once while any byte waits, so the deadline is checked here
            // too: a header that stops half way (or whose sender left) ends at the deadline.
            if tokio::time::Instant::now() >= deadline {
                return Err(timed_out());
            }
            let n = tokio::time::timeout_at(deadline, stream.peek(&mut buf))
                .await
                .map_err(|_| timed_out())??;
            let seen = &buf[..n];
            let could_be =
                |prefix: &[u8]| prefix.starts_with(&seen[..seen.len().min(prefix.len())]);
            if n == 0 || !(could_be(V2_SIGNATURE) || could_be(b"PROXY ")) {
                return Ok(None);
            }
            let (len, client) = match HeaderResult::parse(seen) {
                HeaderResult::V1(Ok(h)) => (h.header.len(), v1_client(&h.addresses)),
                HeaderResult::V2(Ok(h)) => (h.len(), v2_client(&h.addresses)),
                h if ppp::PartialResult::is_incomplete(&h) && n < MAX_HEADER => {
                    // The rest of the header is on its way.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
                _ => return Err(Error::new(ErrorKind::InvalidData, "malformed PROXY header")),
            };
            let mut header = vec![0u8; len];
            tokio::time::timeout_at(deadline, stream.read_exact(&mut header))
                .await
                .map_err(|_| timed_out())??;
            return Ok(client);
        }
    }
}

fn v1_client(a: &ppp::v1::Addresses) -> Option<SocketAddr> {
    match a {
        ppp::v1::Addresses::Tcp4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        ppp::v1::Addresses::Tcp6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        ppp::v1::Addresses::Unknown => None,
    }
}

fn v2_client(a: &ppp::v2::Addresses) -> Option<SocketAddr> {
    match a {
        ppp::v2::Addresses::IPv4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        ppp::v2::Addresses::IPv6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        // LOCAL connections (health checks) and UNIX sockets name no client.
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_trusted_proxies_may_name_the_client() {
        let p = Proxies::new(&["10.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()]);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        // From a trusted proxy: the right-most untrusted hop.
        assert_eq!(
            p.forwarded_for(ip("10.0.0.1"), ["203.0.113.9, 10.0.0.7"].into_iter()),
            ip("203.0.113.9")
        );
        assert_eq!(
            p.forwarded_for(ip("10.0.0.1"), ["1.1.1.1", "203.0.113.9"].into_iter()),
            ip("203.0.113.9")
        );
        // A client's own forged hops to the left do not count.
        assert_eq!(
            p.forwarded_for(ip("10.0.0.1"), ["6.6.6.6, 203.0.113.9"].into_iter()),
            ip("203.0.113.9")
        );
        assert_eq!(
            p.forwarded_for(ip("::ffff:10.0.0.1"), ["203.0.113.9"].into_iter()),
            ip("203.0.113.9")
        );
        // From anyone else: the socket.
        assert_eq!(
            p.forwarded_for(ip("192.0.2.1"), ["203.0.113.9"].into_iter()),
            ip("192.0.2.1")
        );
        // Garbage or only trusted hops: the socket.
        assert_eq!(
            p.forwarded_for(ip("10.0.0.1"), ["bogus"].into_iter()),
            ip("10.0.0.1")
        );
        assert_eq!(
            p.forwarded_for(ip("10.0.0.1"), ["10.0.0.2"].into_iter()),
            ip("10.0.0.1")
        );
        assert!(!Proxies::default().trusts(ip("127.0.0.1")));
    }
}
