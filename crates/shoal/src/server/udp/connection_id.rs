//! BEP 15 connection ids without server state: the id carries the time it was issued and a
//! keyed hash of that time and the client's IP, so it cannot be forged for another address
//! or reused after it expires.
//!
//! The port is left out on purpose: spoofing protection comes from the IP having received the
//! connect answer, while clients do change source ports within an id's life (NAT rebinding,
//! and libtorrent caches ids per tracker across all its sockets in a process).

use std::hash::{BuildHasher, RandomState};
use std::net::SocketAddr;

use protocol::CanonicalIp;
use protocol::udp::ConnectionId;

/// How long an id is accepted after it is issued, in seconds (BEP 15 says two minutes).
pub const VALID_FOR: u32 = 120;

pub struct ConnectionIds {
    /// SipHash with a random 128-bit key per process: a secret-keyed MAC.
    key: RandomState,
}

impl Default for ConnectionIds {
    fn default() -> Self {
        ConnectionIds {
            key: RandomState::new(),
        }
    }
}

impl ConnectionIds {
    fn mac(&self, addr: &SocketAddr, issued: u32) -> u32 {
        (self.key.hash_one((CanonicalIp::from(addr.ip()), issued)) >> 32) as u32
    }

    /// `now` is unix time in seconds.
    pub fn issue(&self, addr: &SocketAddr, now: u32) -> ConnectionId {
        ConnectionId((u64::from(now) << 32) | u64::from(self.mac(addr, now)))
    }

    pub fn is_valid(&self, ConnectionId(id): ConnectionId, addr: &SocketAddr, now: u32) -> bool {
        let issued = (id >> 32) as u32;
        // A second of slack for ids issued by a clock that stepped back.
        let age = now.wrapping_sub(issued);
        (age <= VALID_FOR || issued.wrapping_sub(now) <= 1) && self.mac(addr, issued) == id as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_for_its_address_and_about_two_minutes() {
        let ids = ConnectionIds::default();
        let a: SocketAddr = "10.0.0.1:5000".parse().unwrap();
        let id = ids.issue(&a, 1_000_000);
        assert!(ids.is_valid(id, &a, 1_000_000));
        assert!(ids.is_valid(id, &a, 1_000_000 + VALID_FOR));
        assert!(!ids.is_valid(id, &a, 1_000_000 + VALID_FOR + 1), "expired");
        assert!(
            !ids.is_valid(id, &"10.0.0.2:5000".parse().unwrap(), 1_000_000),
            "another ip"
        );
        assert!(
            ids.is_valid(id, &"10.0.0.1:5001".parse().unwrap(), 1_000_000),
            "the same IP from another port"
        );
        assert!(
            ids.is_valid(id, &"[::ffff:10.0.0.1]:5000".parse().unwrap(), 1_000_000),
            "the same IPv4 client on a dual-stack socket"
        );
        assert!(
            !ids.is_valid(id, &"[2001:db8::1]:5000".parse().unwrap(), 1_000_000),
            "another family"
        );
        assert!(
            !ids.is_valid(ConnectionId(id.0 ^ 1), &a, 1_000_000),
            "tampered mac"
        );
        assert!(
            !ids.is_valid(ConnectionId(id.0 + (1 << 32)), &a, 1_000_001),
            "tampered time"
        );
        assert!(
            !ConnectionIds::default().is_valid(id, &a, 1_000_000),
            "another process's secret"
        );
    }
}
