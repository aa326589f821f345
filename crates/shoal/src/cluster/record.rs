//! What travels on the bus: one stream entry per batch, its records packed end to end.
//!
//! A record is a tag byte (0 leecher, 1 seeder, 2 stopped, 3 "whitelist or keys changed",
//! 4 expired), a flags byte (bit 0: completed), and for peers the info-hash, the peer id,
//! the family byte (4 or 6), the address and the port: 49 bytes for IPv4, 61 for IPv6.
//!
//! Version 1 entries (before departures said why) are still read: their tag 2 meant "left"
//! for a stop and an expiry alike, and is read as an expiry, the reading that never evicts
//! a peer another node owns.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use protocol::{InfoHash, PeerId};
use swarm::{PeerChange, PeerState};

const VERSION: u8 = 2;
const NOTICE: u8 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record {
    Peer(PeerChange),
    /// The whitelist or the keys changed in the store: reload them.
    AccessChanged,
}

pub fn encode(records: &[Record]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + records.len() * 49);
    out.push(VERSION);
    for r in records {
        match r {
            Record::AccessChanged => out.extend_from_slice(&[NOTICE, 0]),
            Record::Peer(c) => {
                out.push(match c.state {
                    PeerState::Leecher => 0,
                    PeerState::Seeder => 1,
                    PeerState::Stopped => 2,
                    PeerState::Expired => 4,
                });
                out.push(c.completed as u8);
                out.extend_from_slice(&c.info_hash.0);
                out.extend_from_slice(&c.peer_id.0);
                match c.addr.ip() {
                    IpAddr::V4(ip) => {
                        out.push(4);
                        out.extend_from_slice(&ip.octets());
                    }
                    IpAddr::V6(ip) => {
                        out.push(6);
                        out.extend_from_slice(&ip.octets());
                    }
                }
                out.extend_from_slice(&c.addr.port().to_be_bytes());
            }
        }
    }
    out
}

/// Reads a batch; None if any of it is malformed (another version, a cut entry).
pub fn decode(b: &[u8]) -> Option<Vec<Record>> {
    let (&version, mut b) = b.split_first()?;
    if version != VERSION && version != 1 {
        return None;
    }
    let mut out = Vec::new();
    while !b.is_empty() {
        let take = |b: &mut &[u8], n: usize| -> Option<Vec<u8>> {
            let (head, rest) = b.split_at_checked(n)?;
            *b = rest;
            Some(head.to_vec())
        };
        let head = take(&mut b, 2)?;
        let state = match head[0] {
            0 => PeerState::Leecher,
            1 => PeerState::Seeder,
            2 if version == 1 => PeerState::Expired,
            2 => PeerState::Stopped,
            4 => PeerState::Expired,
            NOTICE => {
                out.push(Record::AccessChanged);
                continue;
            }
            _ => return None,
        };
        let info_hash = InfoHash(take(&mut b, 20)?.try_into().ok()?);
        let peer_id = PeerId(take(&mut b, 20)?.try_into().ok()?);
        let ip: IpAddr = match take(&mut b, 1)?[0] {
            4 => Ipv4Addr::from(<[u8; 4]>::try_from(take(&mut b, 4)?).ok()?).into(),
            6 => Ipv6Addr::from(<[u8; 16]>::try_from(take(&mut b, 16)?).ok()?).into(),
            _ => return None,
        };
        let port = u16::from_be_bytes(take(&mut b, 2)?.try_into().ok()?);
        out.push(Record::Peer(PeerChange {
            info_hash,
            peer_id,
            addr: SocketAddr::new(ip, port),
            state,
            completed: head[1] & 1 != 0,
        }));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_round_trip_and_cut_ones_are_refused() {
        let peer = |addr: &str, state, completed| {
            Record::Peer(PeerChange {
                info_hash: InfoHash([7; 20]),
                peer_id: PeerId([9; 20]),
                addr: addr.parse().unwrap(),
                state,
                completed,
            })
        };
        let batch = vec![
            peer("10.0.0.1:6881", PeerState::Seeder, true),
            Record::AccessChanged,
            peer("[2001:db8::1]:1", PeerState::Stopped, false),
            peer("10.0.0.2:2", PeerState::Leecher, false),
        ];
        let mut batch = batch;
        batch.push(peer("10.0.0.3:3", PeerState::Expired, false));
        let b = encode(&batch);
        assert_eq!(b.len(), 1 + 49 + 2 + 61 + 49 + 49);
        assert_eq!(decode(&b).as_ref(), Some(&batch));
        for cut in 1..b.len() {
            if let Some(r) = decode(&b[..cut]) {
                // Only a cut exactly between records can read, and then as a prefix.
                assert!(r.len() < 5, "cut at {cut}");
            }
        }
        assert_eq!(decode(&[3]), None, "another version");
        // A version 1 "left" reads as an expiry.
        let mut v1 = encode(&batch[2..3]);
        v1[0] = 1;
        let r = decode(&v1).expect("v1 is read");
        assert!(matches!(
            r[..],
            [Record::Peer(PeerChange {
                state: PeerState::Expired,
                ..
            })]
        ));
    }
}
