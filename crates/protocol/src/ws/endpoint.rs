//! Where a WebSocket peer is: not an address another peer could dial (WebRTC peers meet
//! through offers the tracker relays), but the tracker connection that holds it and its
//! place on that connection (clients pool one socket per tracker, so one connection may
//! carry several peers, even of one torrent). The swarm keys every peer by an endpoint, so
//! a WebSocket peer's endpoint is written as an address in `100::/64`, the IPv6
//! discard-only prefix (RFC 6666) that no real peer can announce from:
//! `[100::<node>:<conn>]:<slot>`. The node half names the incarnation that holds the
//! connection, so every node of a cluster can tell where to relay an offer
//! (docs/design.md, "WebSocket").

use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};

const PREFIX: [u8; 8] = [0x01, 0, 0, 0, 0, 0, 0, 0];

/// A WebSocket connection of one node, as the swarm's endpoint for its peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// Which node incarnation holds the connection (the low 32 bits of its id).
    pub node: u32,
    /// The connection's number on that node.
    pub conn: u32,
    /// The peer's place on its connection (from 1: a port is never 0).
    pub slot: u16,
}

impl Endpoint {
    pub fn addr(self) -> SocketAddr {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&PREFIX);
        b[8..12].copy_from_slice(&self.node.to_be_bytes());
        b[12..].copy_from_slice(&self.conn.to_be_bytes());
        SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::from(b), self.slot, 0, 0))
    }

    /// The endpoint an address stands for, if it is one.
    pub fn of(addr: &SocketAddr) -> Option<Endpoint> {
        let SocketAddr::V6(a) = addr else {
            return None;
        };
        let b = a.ip().octets();
        if b[..8] != PREFIX {
            return None;
        }
        Some(Endpoint {
            node: u32::from_be_bytes(b[8..12].try_into().unwrap()),
            conn: u32::from_be_bytes(b[12..].try_into().unwrap()),
            slot: a.port(),
        })
    }
}

/// Whether `ip` lies in the prefix of WebSocket endpoints (a UDP or HTTP client that
/// claims one is refused: it would be handed out to browsers).
pub fn is_endpoint_ip(ip: &[u8; 16]) -> bool {
    ip[..8] == PREFIX
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endpoint_survives_its_address_and_real_addresses_are_none() {
        for (node, conn, slot) in [
            (0, 0, 1),
            (1, 2, 3),
            (u32::MAX, u32::MAX, u16::MAX),
            (0xdead_beef, 7, 9),
        ] {
            let e = Endpoint { node, conn, slot };
            assert_eq!(Endpoint::of(&e.addr()), Some(e));
        }
        for real in [
            "1.2.3.4:5",
            "[::1]:6969",
            "[2001:db8::1]:1",
            "[101::1]:1",
            "[100:0:0:1::]:1",
        ] {
            assert_eq!(Endpoint::of(&real.parse().unwrap()), None, "{real}");
        }
    }
}
