//! What travels on the bus: one stream entry per batch, its records packed end to end
//! (docs/design.md, "Several nodes").
//!
//! Version 3, the one written: a version byte, a table of client prefixes (a count, then the
//! six bytes between the dashes of each Azureus-style peer id `-XX1234-`), then the records,
//! sorted by info-hash (stable, so one endpoint's records keep their order; records of
//! different peers commute). A record is a head byte (bits 0-2 the state: 0 leecher,
//! 1 seeder, 2 stopped, 3 "whitelist or keys changed", 4 expired; bit 3 completed; bit 4
//! IPv6; bit 5 the info-hash of the record before; bit 6 a peer id from the table), the
//! info-hash unless bit 5, for a join or role change the peer id (a table index and its 12
//! last bytes with bit 6, else 20 bytes), then the address and the port. A departure
//! carries no peer id: a stop or an expiry removes an endpoint whatever id it had. An
//! IPv4 join is 27 to 47 bytes, a departure 7 to 27.
//!
//! Versions 1 and 2 (a tag, a flags byte, the info-hash, the peer id, a family byte, the
//! address and the port: 49 bytes for IPv4) are still read; a version 1 tag 2 meant "left"
//! for a stop and an expiry alike and is read as an expiry, the reading that never evicts a
//! peer another node owns.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use protocol::{InfoHash, PeerId};
use swarm::{PeerChange, PeerState};

const VERSION: u8 = 3;
const NOTICE: u8 = 3;
const STATE: u8 = 0b111;
const COMPLETED: u8 = 1 << 3;
const V6: u8 = 1 << 4;
const SAME_HASH: u8 = 1 << 5;
const SHORT_ID: u8 = 1 << 6;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record {
    Peer(PeerChange),
    /// The whitelist or the keys changed in the store: reload them.
    AccessChanged,
}

fn state_bits(s: PeerState) -> u8 {
    match s {
        PeerState::Leecher => 0,
        PeerState::Seeder => 1,
        PeerState::Stopped => 2,
        PeerState::Expired => 4,
    }
}

fn joins(s: PeerState) -> bool {
    matches!(s, PeerState::Leecher | PeerState::Seeder)
}

/// The six bytes between the dashes of an Azureus-style peer id.
fn client_prefix(id: &PeerId) -> Option<[u8; 6]> {
    (id.0[0] == b'-' && id.0[7] == b'-').then(|| id.0[1..7].try_into().unwrap())
}

pub fn encode(records: &[Record]) -> Vec<u8> {
    let mut sorted: Vec<&Record> = records.iter().collect();
    sorted.sort_by_key(|r| match r {
        Record::AccessChanged => None,
        Record::Peer(c) => Some(c.info_hash.0),
    });
    let mut table: Vec<[u8; 6]> = Vec::new();
    for r in &sorted {
        if let Record::Peer(c) = r
            && joins(c.state)
            && let Some(p) = client_prefix(&c.peer_id)
            && table.len() < 255
            && !table.contains(&p)
        {
            table.push(p);
        }
    }
    let mut out = Vec::with_capacity(2 + table.len() * 6 + records.len() * 40);
    out.push(VERSION);
    out.push(table.len() as u8);
    table.iter().for_each(|p| out.extend_from_slice(p));
    let mut previous: Option<InfoHash> = None;
    for r in sorted {
        let Record::Peer(c) = r else {
            out.push(NOTICE);
            continue;
        };
        let mut head = state_bits(c.state) | if c.completed { COMPLETED } else { 0 };
        if c.addr.is_ipv6() {
            head |= V6;
        }
        if previous == Some(c.info_hash) {
            head |= SAME_HASH;
        }
        let short = joins(c.state)
            .then(|| client_prefix(&c.peer_id))
            .flatten()
            .and_then(|p| table.iter().position(|t| *t == p));
        if short.is_some() {
            head |= SHORT_ID;
        }
        out.push(head);
        if previous != Some(c.info_hash) {
            out.extend_from_slice(&c.info_hash.0);
            previous = Some(c.info_hash);
        }
        if joins(c.state) {
            match short {
                Some(i) => {
                    out.push(i as u8);
                    out.extend_from_slice(&c.peer_id.0[8..]);
                }
                None => out.extend_from_slice(&c.peer_id.0),
            }
        }
        match c.addr.ip() {
            IpAddr::V4(ip) => out.extend_from_slice(&ip.octets()),
            IpAddr::V6(ip) => out.extend_from_slice(&ip.octets()),
        }
        out.extend_from_slice(&c.addr.port().to_be_bytes());
    }
    out
}

fn peer(
    info_hash: InfoHash,
    peer_id: PeerId,
    addr: SocketAddr,
    state: PeerState,
    completed: bool,
) -> Record {
    Record::Peer(PeerChange {
        info_hash,
        peer_id,
        addr,
        state,
        completed,
    })
}

/// Takes `n` bytes off the front of `b`.
fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    let (head, rest) = b.split_at_checked(n)?;
    *b = rest;
    Some(head)
}

fn array<const N: usize>(b: &mut &[u8]) -> Option<[u8; N]> {
    take(b, N)?.try_into().ok()
}

/// Reads a batch; None if any of it is malformed (an unknown version, a cut entry).
pub fn decode(b: &[u8]) -> Option<Vec<Record>> {
    let (&version, rest) = b.split_first()?;
    match version {
        VERSION => decode_v3(rest),
        1 | 2 => decode_v2(version, rest),
        _ => None,
    }
}

fn decode_v3(mut b: &[u8]) -> Option<Vec<Record>> {
    let n = usize::from(take(&mut b, 1)?[0]);
    let table = take(&mut b, n * 6)?;
    let mut out = Vec::new();
    let mut previous: Option<InfoHash> = None;
    while let Some(&head) = b.first() {
        b = &b[1..];
        let state = match head & STATE {
            0 => PeerState::Leecher,
            1 => PeerState::Seeder,
            2 => PeerState::Stopped,
            4 => PeerState::Expired,
            NOTICE if head == NOTICE => {
                out.push(Record::AccessChanged);
                continue;
            }
            _ => return None,
        };
        if head & 0x80 != 0 {
            return None;
        }
        let info_hash = if head & SAME_HASH != 0 {
            previous?
        } else {
            InfoHash(array(&mut b)?)
        };
        previous = Some(info_hash);
        let mut peer_id = PeerId([0; 20]);
        if joins(state) {
            if head & SHORT_ID != 0 {
                let i = usize::from(take(&mut b, 1)?[0]);
                let prefix = table.get(i * 6..i * 6 + 6)?;
                peer_id.0[0] = b'-';
                peer_id.0[1..7].copy_from_slice(prefix);
                peer_id.0[7] = b'-';
                peer_id.0[8..].copy_from_slice(take(&mut b, 12)?);
            } else {
                peer_id = PeerId(array(&mut b)?);
            }
        } else if head & SHORT_ID != 0 {
            return None;
        }
        let ip: IpAddr = if head & V6 != 0 {
            Ipv6Addr::from(array::<16>(&mut b)?).into()
        } else {
            Ipv4Addr::from(array::<4>(&mut b)?).into()
        };
        let addr = SocketAddr::new(ip, u16::from_be_bytes(array(&mut b)?));
        let completed = head & COMPLETED != 0;
        out.push(peer(info_hash, peer_id, addr, state, completed));
    }
    Some(out)
}

/// Versions 1 and 2: fixed records, a tag and a flags byte first.
fn decode_v2(version: u8, mut b: &[u8]) -> Option<Vec<Record>> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let [tag, flags] = array(&mut b)?;
        let state = match tag {
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
        let info_hash = InfoHash(array(&mut b)?);
        let peer_id = PeerId(array(&mut b)?);
        let ip: IpAddr = match take(&mut b, 1)?[0] {
            4 => Ipv4Addr::from(array::<4>(&mut b)?).into(),
            6 => Ipv6Addr::from(array::<16>(&mut b)?).into(),
            _ => return None,
        };
        let addr = SocketAddr::new(ip, u16::from_be_bytes(array(&mut b)?));
        out.push(peer(info_hash, peer_id, addr, state, flags & 1 != 0));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn peer(h: u8, id: &[u8; 20], addr: &str, state: PeerState, completed: bool) -> Record {
        Record::Peer(PeerChange {
            info_hash: InfoHash([h; 20]),
            peer_id: PeerId(*id),
            addr: addr.parse().unwrap(),
            state,
            completed,
        })
    }

    /// What decoding gives back: the records sorted by info-hash (notices first, stable),
    /// departures without their peer id.
    fn canonical(records: &[Record]) -> Vec<Record> {
        let mut out: Vec<Record> = records
            .iter()
            .map(|r| match *r {
                Record::Peer(mut c) if !joins(c.state) => {
                    c.peer_id = PeerId([0; 20]);
                    Record::Peer(c)
                }
                r => r,
            })
            .collect();
        out.sort_by_key(|r| match r {
            Record::AccessChanged => None,
            Record::Peer(c) => Some(c.info_hash.0),
        });
        out
    }

    #[test]
    fn batches_round_trip_small_and_cut_ones_are_refused() {
        let qb = *b"-qB4650-abcdefghijkl";
        let odd = [9u8; 20];
        let batch = vec![
            peer(7, &qb, "10.0.0.1:6881", PeerState::Seeder, true),
            Record::AccessChanged,
            peer(2, &odd, "[2001:db8::1]:1", PeerState::Stopped, false),
            peer(7, &odd, "10.0.0.2:2", PeerState::Leecher, false),
            peer(7, &qb, "10.0.0.3:3", PeerState::Expired, false),
        ];
        let b = encode(&batch);
        // version, a table of one prefix; a notice; a departure with its hash (IPv6); a
        // join with its hash and a short id; a join with the same hash and a whole id; a
        // departure with the same hash.
        assert_eq!(
            b.len(),
            2 + 6 + 1 + (1 + 20 + 18) + (1 + 20 + 13 + 6) + (1 + 20 + 6) + (1 + 6)
        );
        assert_eq!(decode(&b), Some(canonical(&batch)));
        for cut in 1..b.len() {
            if let Some(r) = decode(&b[..cut]) {
                // Only a cut exactly between records can read, and then as a prefix.
                assert!(r.len() < batch.len(), "cut at {cut}");
            }
        }
        assert_eq!(decode(&[9]), None, "another version");
        assert_eq!(decode(&[VERSION, 0, 0x80 | 1]), None, "an unknown head bit");
        assert_eq!(decode(&[VERSION, 0, SAME_HASH]), None, "no hash before");
    }

    #[test]
    fn version_2_and_1_entries_are_still_read() {
        let mut v2 = vec![2u8];
        v2.extend_from_slice(&[1, 1]);
        v2.extend_from_slice(&[7; 20]);
        v2.extend_from_slice(&[9; 20]);
        v2.extend_from_slice(&[4, 10, 0, 0, 1, 0x1a, 0xe1]);
        v2.extend_from_slice(&[NOTICE, 0]);
        v2.extend_from_slice(&[2, 0]);
        v2.extend_from_slice(&[7; 20]);
        v2.extend_from_slice(&[9; 20]);
        v2.extend_from_slice(&[6]);
        v2.extend_from_slice(&[0; 15]);
        v2.extend_from_slice(&[1, 0, 1]);
        let read = decode(&v2).expect("v2 is read");
        assert_eq!(
            read,
            vec![
                peer(7, &[9; 20], "10.0.0.1:6881", PeerState::Seeder, true),
                Record::AccessChanged,
                peer(7, &[9; 20], "[::1]:1", PeerState::Stopped, false),
            ]
        );
        // A version 1 "left" reads as an expiry.
        v2[0] = 1;
        assert!(matches!(
            decode(&v2).expect("v1 is read")[2],
            Record::Peer(PeerChange {
                state: PeerState::Expired,
                ..
            })
        ));
    }

    fn record() -> impl Strategy<Value = Record> {
        let id = prop_oneof![
            any::<[u8; 20]>(),
            (0..4u8, any::<[u8; 12]>()).prop_map(|(c, rest)| {
                let mut id = [0u8; 20];
                id[..8].copy_from_slice(&[b'-', b'q', b'B', b'4', b'6', b'5', b'0' + c, b'-']);
                id[8..].copy_from_slice(&rest);
                id
            }),
        ];
        let addr = prop_oneof![
            any::<([u8; 4], u16)>().prop_map(|(ip, port)| SocketAddr::from((ip, port))),
            any::<([u8; 16], u16)>().prop_map(|(ip, port)| SocketAddr::from((ip, port))),
        ];
        let state = prop_oneof![
            Just(PeerState::Leecher),
            Just(PeerState::Seeder),
            Just(PeerState::Stopped),
            Just(PeerState::Expired),
        ];
        prop_oneof![
            1 => Just(Record::AccessChanged),
            20 => (0..3u8, id, addr, state, any::<bool>()).prop_map(|(h, id, addr, state, completed)| {
                Record::Peer(PeerChange {
                    info_hash: InfoHash([h; 20]),
                    peer_id: PeerId(id),
                    addr,
                    state,
                    completed,
                })
            }),
        ]
    }

    proptest! {
        /// Any batch reads back as itself, sorted and without departures' ids; no bytes
        /// make the decoder panic.
        #[test]
        fn any_batch_round_trips(batch in proptest::collection::vec(record(), 0..60)) {
            prop_assert_eq!(decode(&encode(&batch)), Some(canonical(&batch)));
        }

        #[test]
        fn any_bytes_decode_or_are_refused(b in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(&b);
            let mut v3 = vec![VERSION];
            v3.extend_from_slice(&b);
            let _ = decode(&v3);
        }
    }
}
