//! BEP 15 connection ids without server state: the id carries the time it was issued and a
//! keyed hash of that time and the client's IP, so it cannot be forged for another address
//! or reused after it expires.
//!
//! The port is left out on purpose: spoofing protection comes from the IP having received the
//! connect answer, while clients do change source ports within an id's life (NAT rebinding,
//! and libtorrent caches ids per tracker across all its sockets in a process).

use std::hash::{Hash, Hasher};
use std::net::SocketAddr;

use siphasher::sip::SipHasher24;
use siphasher::sip128::{Hasher128, SipHasher13};

use protocol::CanonicalIp;
use protocol::udp::ConnectionId;

/// How long an id is accepted after it is issued, in seconds (BEP 15 says two minutes).
pub const VALID_FOR: u32 = 120;

/// SipHash-2-4 keyed with 128 secret bits: a MAC. The first key issues ids; every key is
/// accepted, so ids issued before a secret rotation stay valid.
pub struct ConnectionIds {
    keys: Vec<(u64, u64)>,
}

impl Default for ConnectionIds {
    /// A random key of this process: ids are valid on this node only.
    fn default() -> Self {
        let mut k = [0u8; 16];
        getrandom::fill(&mut k).expect("the OS random source");
        ConnectionIds {
            keys: vec![(
                u64::from_le_bytes(k[..8].try_into().unwrap()),
                u64::from_le_bytes(k[8..].try_into().unwrap()),
            )],
        }
    }
}

impl ConnectionIds {
    /// Keys derived from shared secrets (`cluster.secret`, then `cluster.previous_secret`):
    /// every node with the same secret issues and accepts the same ids.
    pub fn shared<'a>(secrets: impl IntoIterator<Item = &'a str>) -> Self {
        let keys = secrets
            .into_iter()
            .filter(|s| !s.is_empty())
            .map(|s| {
                let mut h = SipHasher13::new_with_keys(0x73686f616c, 0x636f6e6e6964);
                h.write(s.as_bytes());
                let k = h.finish128();
                (k.h1, k.h2)
            })
            .collect::<Vec<_>>();
        assert!(!keys.is_empty(), "at least one secret");
        ConnectionIds { keys }
    }

    fn mac(key: (u64, u64), addr: &SocketAddr, issued: u32) -> u32 {
        let mut h = SipHasher24::new_with_keys(key.0, key.1);
        (CanonicalIp::from(addr.ip()), issued).hash(&mut h);
        (h.finish() >> 32) as u32
    }

    /// `now` is unix time in seconds.
    pub fn issue(&self, addr: &SocketAddr, now: u32) -> ConnectionId {
        let mac = Self::mac(self.keys[0], addr, now);
        ConnectionId((u64::from(now) << 32) | u64::from(mac))
    }

    pub fn is_valid(&self, ConnectionId(id): ConnectionId, addr: &SocketAddr, now: u32) -> bool {
        let issued = (id >> 32) as u32;
        // A second of slack for ids issued by a clock that stepped back.
        let age = now.wrapping_sub(issued);
        (age <= VALID_FOR || issued.wrapping_sub(now) <= 1)
            && self
                .keys
                .iter()
                .any(|k| Self::mac(*k, addr, issued) == id as u32)
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

    #[test]
    fn a_shared_secret_makes_ids_valid_on_every_node_and_survives_a_rotation() {
        let a: SocketAddr = "10.0.0.1:5000".parse().unwrap();
        let (node1, node2) = (ConnectionIds::shared(["s1"]), ConnectionIds::shared(["s1"]));
        let id = node1.issue(&a, 1_000);
        assert!(node2.is_valid(id, &a, 1_000));
        assert!(
            !ConnectionIds::shared(["s2"]).is_valid(id, &a, 1_000),
            "another secret"
        );
        let rotated = ConnectionIds::shared(["s2", "s1"]);
        assert!(
            rotated.is_valid(id, &a, 1_000),
            "the previous secret is still accepted"
        );
        let new = rotated.issue(&a, 1_000);
        assert!(
            ConnectionIds::shared(["s2"]).is_valid(new, &a, 1_000),
            "and the new one issues"
        );
    }
}
