//! The UDP tracker protocol (BEP 15) with URL data options (BEP 41).
//! Requests are read from the datagram without trusting any length in it; responses are
//! written into a caller's buffer.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::types::{AnnounceEvent, InfoHash, PeerId};

pub const PROTOCOL_ID: u64 = 0x0417_2710_1980;
/// Largest datagram accepted; bigger ones are dropped. 74 scrape hashes (BEP 15's limit) fit.
pub const MAX_REQUEST_LEN: usize = 1500;
pub const MAX_SCRAPE_HASHES: usize = 74;
const _: () = assert!(16 + 20 * MAX_SCRAPE_HASHES <= MAX_REQUEST_LEN);
const ANNOUNCE_LEN: usize = 98;

const ACTION_CONNECT: u32 = 0;
const ACTION_ANNOUNCE: u32 = 1;
const ACTION_SCRAPE: u32 = 2;
const ACTION_ERROR: u32 = 3;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Connect { transaction_id: u32 },
    Announce(AnnounceRequest),
    Scrape(ScrapeRequest),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnounceRequest {
    pub connection_id: u64,
    pub transaction_id: u32,
    pub info_hash: InfoHash,
    pub peer_id: PeerId,
    pub downloaded: u64,
    pub left: u64,
    pub uploaded: u64,
    pub event: AnnounceEvent,
    /// The client's claimed IPv4 address, 0 for "use the source address".
    pub ip: u32,
    pub key: u32,
    /// -1 (or any negative) asks for the tracker's default.
    pub numwant: i32,
    pub port: u16,
    /// BEP 41 URL data, concatenated from every URLData option.
    pub url_data: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScrapeRequest {
    pub connection_id: u64,
    pub transaction_id: u32,
    pub info_hashes: Vec<InfoHash>,
}

/// A datagram that is not a valid request. All but `TooShort` carry the transaction id, so
/// the sender can be told what went wrong.
/// What a request asks for: BEP 15's three actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Connect,
    Announce,
    Scrape,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Connect => "connect",
            Action::Announce => "announce",
            Action::Scrape => "scrape",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    TooShort(usize),
    /// Longer than any request (`MAX_REQUEST_LEN`): dropped unanswered.
    TooLong(usize),
    BadProtocolId {
        transaction_id: u32,
    },
    UnknownAction {
        transaction_id: u32,
        action: u32,
    },
    Truncated {
        transaction_id: u32,
        action: Action,
    },
    ScrapeLength {
        transaction_id: u32,
    },
    UnknownEvent {
        transaction_id: u32,
    },
    BadOptions {
        transaction_id: u32,
    },
    PortZero {
        transaction_id: u32,
    },
}

impl ParseError {
    pub fn transaction_id(&self) -> Option<u32> {
        match *self {
            ParseError::TooShort(_) | ParseError::TooLong(_) => None,
            ParseError::BadProtocolId { transaction_id }
            | ParseError::UnknownAction { transaction_id, .. }
            | ParseError::Truncated { transaction_id, .. }
            | ParseError::ScrapeLength { transaction_id }
            | ParseError::UnknownEvent { transaction_id }
            | ParseError::BadOptions { transaction_id }
            | ParseError::PortZero { transaction_id } => Some(transaction_id),
        }
    }

    /// What the datagram tried to be, when that much could be read.
    pub fn action(&self) -> Option<Action> {
        match *self {
            ParseError::TooShort(_) | ParseError::TooLong(_) | ParseError::UnknownAction { .. } => {
                None
            }
            ParseError::BadProtocolId { .. } => Some(Action::Connect),
            ParseError::Truncated { action, .. } => Some(action),
            ParseError::ScrapeLength { .. } => Some(Action::Scrape),
            ParseError::UnknownEvent { .. }
            | ParseError::BadOptions { .. }
            | ParseError::PortZero { .. } => Some(Action::Announce),
        }
    }

    /// A short stable label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            ParseError::TooShort(_) => "too_short",
            ParseError::TooLong(_) => "oversized",
            ParseError::BadProtocolId { .. } => "bad_protocol_id",
            ParseError::UnknownAction { .. } => "unknown_action",
            ParseError::Truncated { .. } => "truncated",
            ParseError::ScrapeLength { .. } => "scrape_length",
            ParseError::UnknownEvent { .. } => "unknown_event",
            ParseError::BadOptions { .. } => "bad_options",
            ParseError::PortZero { .. } => "port_zero",
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::TooShort(n) => write!(f, "packet of {n} bytes is too short"),
            ParseError::TooLong(n) => write!(f, "packet of {n} bytes is too long"),
            ParseError::BadProtocolId { .. } => write!(f, "bad protocol id"),
            ParseError::UnknownAction { action, .. } => write!(f, "unknown action {action}"),
            ParseError::Truncated { action, .. } => write!(f, "truncated {action}"),
            ParseError::ScrapeLength { .. } => write!(f, "scrape needs whole 20-byte hashes"),
            ParseError::UnknownEvent { .. } => write!(f, "unknown event"),
            ParseError::BadOptions { .. } => write!(f, "malformed BEP 41 options"),
            ParseError::PortZero { .. } => write!(f, "port must not be 0"),
        }
    }
}

impl std::error::Error for ParseError {}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes(b[at..at + 2].try_into().unwrap())
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().unwrap())
}
fn twenty(b: &[u8], at: usize) -> [u8; 20] {
    b[at..at + 20].try_into().unwrap()
}

impl Request {
    pub fn action(&self) -> Action {
        match self {
            Request::Connect { .. } => Action::Connect,
            Request::Announce(_) => Action::Announce,
            Request::Scrape(_) => Action::Scrape,
        }
    }

    /// Reads one datagram: every field checked, nothing read twice later.
    pub fn parse(packet: &[u8]) -> Result<Request, ParseError> {
        if packet.len() < 16 {
            return Err(ParseError::TooShort(packet.len()));
        }
        if packet.len() > MAX_REQUEST_LEN {
            return Err(ParseError::TooLong(packet.len()));
        }
        let connection_id = u64_at(packet, 0);
        let action = u32_at(packet, 8);
        let transaction_id = u32_at(packet, 12);
        match action {
            ACTION_CONNECT => {
                if connection_id != PROTOCOL_ID {
                    return Err(ParseError::BadProtocolId { transaction_id });
                }
                Ok(Request::Connect { transaction_id })
            }
            ACTION_ANNOUNCE => {
                if packet.len() < ANNOUNCE_LEN {
                    return Err(ParseError::Truncated {
                        transaction_id,
                        action: Action::Announce,
                    });
                }
                let event = match u32_at(packet, 80) {
                    0 => AnnounceEvent::None,
                    1 => AnnounceEvent::Completed,
                    2 => AnnounceEvent::Started,
                    3 => AnnounceEvent::Stopped,
                    _ => return Err(ParseError::UnknownEvent { transaction_id }),
                };
                let port = u16_at(packet, 96);
                if port == 0 {
                    return Err(ParseError::PortZero { transaction_id });
                }
                let url_data = parse_options(&packet[ANNOUNCE_LEN..])
                    .ok_or(ParseError::BadOptions { transaction_id })?;
                Ok(Request::Announce(AnnounceRequest {
                    connection_id,
                    transaction_id,
                    info_hash: InfoHash(twenty(packet, 16)),
                    peer_id: PeerId(twenty(packet, 36)),
                    downloaded: u64_at(packet, 56),
                    left: u64_at(packet, 64),
                    uploaded: u64_at(packet, 72),
                    event,
                    ip: u32_at(packet, 84),
                    key: u32_at(packet, 88),
                    numwant: u32_at(packet, 92) as i32,
                    port,
                    url_data,
                }))
            }
            ACTION_SCRAPE => {
                let hashes = &packet[16..];
                if hashes.is_empty() || hashes.len() % 20 != 0 {
                    return Err(ParseError::ScrapeLength { transaction_id });
                }
                let info_hashes = hashes
                    .chunks_exact(20)
                    .map(|c| InfoHash(c.try_into().unwrap()))
                    .collect();
                Ok(Request::Scrape(ScrapeRequest {
                    connection_id,
                    transaction_id,
                    info_hashes,
                }))
            }
            action => Err(ParseError::UnknownAction {
                transaction_id,
                action,
            }),
        }
    }

    /// Writes the request as a client would send it.
    pub fn write(&self, out: &mut Vec<u8>) {
        match self {
            Request::Connect { transaction_id } => {
                out.extend_from_slice(&PROTOCOL_ID.to_be_bytes());
                out.extend_from_slice(&ACTION_CONNECT.to_be_bytes());
                out.extend_from_slice(&transaction_id.to_be_bytes());
            }
            Request::Announce(a) => {
                out.extend_from_slice(&a.connection_id.to_be_bytes());
                out.extend_from_slice(&ACTION_ANNOUNCE.to_be_bytes());
                out.extend_from_slice(&a.transaction_id.to_be_bytes());
                out.extend_from_slice(&a.info_hash.0);
                out.extend_from_slice(&a.peer_id.0);
                out.extend_from_slice(&a.downloaded.to_be_bytes());
                out.extend_from_slice(&a.left.to_be_bytes());
                out.extend_from_slice(&a.uploaded.to_be_bytes());
                let event: u32 = match a.event {
                    AnnounceEvent::None => 0,
                    AnnounceEvent::Completed => 1,
                    AnnounceEvent::Started => 2,
                    AnnounceEvent::Stopped => 3,
                };
                out.extend_from_slice(&event.to_be_bytes());
                out.extend_from_slice(&a.ip.to_be_bytes());
                out.extend_from_slice(&a.key.to_be_bytes());
                out.extend_from_slice(&a.numwant.to_be_bytes());
                out.extend_from_slice(&a.port.to_be_bytes());
                // URL data travels in options of at most 255 bytes each.
                for chunk in a.url_data.chunks(255) {
                    out.push(OPTION_URL_DATA);
                    out.push(chunk.len() as u8);
                    out.extend_from_slice(chunk);
                }
                if !a.url_data.is_empty() {
                    out.push(OPTION_END);
                }
            }
            Request::Scrape(s) => {
                out.extend_from_slice(&s.connection_id.to_be_bytes());
                out.extend_from_slice(&ACTION_SCRAPE.to_be_bytes());
                out.extend_from_slice(&s.transaction_id.to_be_bytes());
                for h in &s.info_hashes {
                    out.extend_from_slice(&h.0);
                }
            }
        }
    }
}

const OPTION_END: u8 = 0;
const OPTION_NOP: u8 = 1;
const OPTION_URL_DATA: u8 = 2;

/// Reads BEP 41 options and returns their URL data. An unknown option type cannot be skipped
/// (the BEP gives no length for it), so it ends parsing like EndOfOptions, as libtorrent does.
fn parse_options(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut url = Vec::new();
    while let Some((&kind, rest)) = b.split_first() {
        match kind {
            OPTION_NOP => b = rest,
            OPTION_URL_DATA => {
                let (&len, rest) = rest.split_first()?;
                let data = rest.get(..len as usize)?;
                url.extend_from_slice(data);
                b = &rest[len as usize..];
            }
            _ => break,
        }
    }
    Some(url)
}

impl AnnounceRequest {
    /// The last segment of the URL data's path, where private trackers carry the key
    /// (`/announce/<key>`); the query string, if any, is cut off.
    pub fn url_last_segment(&self) -> &[u8] {
        let path = self.url_data.split(|&b| b == b'?').next().unwrap_or(&[]);
        path.rsplit(|&b| b == b'/').next().unwrap_or(&[])
    }
}

/// A response as a client reads it; the server writes responses with the `write_*` functions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    Connect {
        transaction_id: u32,
        connection_id: u64,
    },
    Announce {
        transaction_id: u32,
        interval: u32,
        leechers: u32,
        seeders: u32,
        peers: Vec<SocketAddr>,
    },
    Scrape {
        transaction_id: u32,
        stats: Vec<ScrapeStats>,
    },
    Error {
        transaction_id: u32,
        message: Vec<u8>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ScrapeStats {
    pub seeders: u32,
    pub completed: u32,
    pub leechers: u32,
}

impl Response {
    /// `ipv6` says which peer format an announce response carries: it follows the family of
    /// the socket the request arrived on.
    pub fn parse(b: &[u8], ipv6: bool) -> Option<Response> {
        if b.len() < 8 {
            return None;
        }
        let transaction_id = u32_at(b, 4);
        match u32_at(b, 0) {
            ACTION_CONNECT if b.len() == 16 => Some(Response::Connect {
                transaction_id,
                connection_id: u64_at(b, 8),
            }),
            ACTION_ANNOUNCE if b.len() >= 20 => {
                let size = if ipv6 { 18 } else { 6 };
                let rest = &b[20..];
                if rest.len() % size != 0 {
                    return None;
                }
                let peers = rest
                    .chunks_exact(size)
                    .map(|c| {
                        let ip: IpAddr = if ipv6 {
                            Ipv6Addr::from(<[u8; 16]>::try_from(&c[..16]).unwrap()).into()
                        } else {
                            Ipv4Addr::from(<[u8; 4]>::try_from(&c[..4]).unwrap()).into()
                        };
                        SocketAddr::new(ip, u16_at(c, size - 2))
                    })
                    .collect();
                Some(Response::Announce {
                    transaction_id,
                    interval: u32_at(b, 8),
                    leechers: u32_at(b, 12),
                    seeders: u32_at(b, 16),
                    peers,
                })
            }
            ACTION_SCRAPE if (b.len() - 8) % 12 == 0 => Some(Response::Scrape {
                transaction_id,
                stats: b[8..]
                    .chunks_exact(12)
                    .map(|c| ScrapeStats {
                        seeders: u32_at(c, 0),
                        completed: u32_at(c, 4),
                        leechers: u32_at(c, 8),
                    })
                    .collect(),
            }),
            ACTION_ERROR => Some(Response::Error {
                transaction_id,
                message: b[8..].to_vec(),
            }),
            _ => None,
        }
    }
}

pub fn write_connect(transaction_id: u32, connection_id: u64, out: &mut Vec<u8>) {
    out.extend_from_slice(&ACTION_CONNECT.to_be_bytes());
    out.extend_from_slice(&transaction_id.to_be_bytes());
    out.extend_from_slice(&connection_id.to_be_bytes());
}

/// Writes the announce header; the caller appends peers with `write_peer`.
pub fn write_announce_header(
    transaction_id: u32,
    interval: u32,
    leechers: u32,
    seeders: u32,
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(&ACTION_ANNOUNCE.to_be_bytes());
    out.extend_from_slice(&transaction_id.to_be_bytes());
    out.extend_from_slice(&interval.to_be_bytes());
    out.extend_from_slice(&leechers.to_be_bytes());
    out.extend_from_slice(&seeders.to_be_bytes());
}

pub fn write_peer(addr: SocketAddr, out: &mut Vec<u8>) {
    match addr {
        SocketAddr::V4(a) => out.extend_from_slice(&a.ip().octets()),
        SocketAddr::V6(a) => out.extend_from_slice(&a.ip().octets()),
    }
    out.extend_from_slice(&addr.port().to_be_bytes());
}

pub fn write_scrape_header(transaction_id: u32, out: &mut Vec<u8>) {
    out.extend_from_slice(&ACTION_SCRAPE.to_be_bytes());
    out.extend_from_slice(&transaction_id.to_be_bytes());
}

pub fn write_scrape_stats(s: ScrapeStats, out: &mut Vec<u8>) {
    out.extend_from_slice(&s.seeders.to_be_bytes());
    out.extend_from_slice(&s.completed.to_be_bytes());
    out.extend_from_slice(&s.leechers.to_be_bytes());
}

/// Writes an error response no longer than `max_len` (the request's length), cutting the
/// message if needed, so that errors never amplify a spoofed request.
pub fn write_error(transaction_id: u32, message: &str, max_len: usize, out: &mut Vec<u8>) {
    out.extend_from_slice(&ACTION_ERROR.to_be_bytes());
    out.extend_from_slice(&transaction_id.to_be_bytes());
    let room = max_len.saturating_sub(8);
    out.extend_from_slice(&message.as_bytes()[..message.len().min(room)]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn event() -> impl Strategy<Value = AnnounceEvent> {
        prop_oneof![
            Just(AnnounceEvent::None),
            Just(AnnounceEvent::Started),
            Just(AnnounceEvent::Completed),
            Just(AnnounceEvent::Stopped),
        ]
    }

    prop_compose! {
        fn announce()(
            connection_id in any::<u64>(), transaction_id in any::<u32>(), ih in any::<[u8; 20]>(),
            pid in any::<[u8; 20]>(), downloaded in any::<u64>(), left in any::<u64>(),
            uploaded in any::<u64>(), event in event(), ip in any::<u32>(), key in any::<u32>(),
            numwant in any::<i32>(), port in 1u16.., url_data in proptest::collection::vec(any::<u8>(), 0..600),
        ) -> AnnounceRequest {
            AnnounceRequest { connection_id, transaction_id, info_hash: InfoHash(ih), peer_id: PeerId(pid),
                downloaded, left, uploaded, event, ip, key, numwant, port, url_data }
        }
    }

    proptest! {
        #[test]
        fn announce_round_trip(a in announce()) {
            let req = Request::Announce(a);
            let mut out = Vec::new();
            req.write(&mut out);
            prop_assert_eq!(Request::parse(&out).unwrap(), req);
        }

        #[test]
        fn scrape_round_trip(cid in any::<u64>(), tid in any::<u32>(), hashes in proptest::collection::vec(any::<[u8; 20]>(), 1..=MAX_SCRAPE_HASHES)) {
            let req = Request::Scrape(ScrapeRequest { connection_id: cid, transaction_id: tid, info_hashes: hashes.into_iter().map(InfoHash).collect() });
            let mut out = Vec::new();
            req.write(&mut out);
            prop_assert!(out.len() <= MAX_REQUEST_LEN);
            prop_assert_eq!(Request::parse(&out).unwrap(), req);
        }

        #[test]
        fn connect_round_trip(tid in any::<u32>(), cid in any::<u64>()) {
            let mut out = Vec::new();
            Request::Connect { transaction_id: tid }.write(&mut out);
            prop_assert_eq!(Request::parse(&out).unwrap(), Request::Connect { transaction_id: tid });
            let mut out = Vec::new();
            write_connect(tid, cid, &mut out);
            prop_assert_eq!(Response::parse(&out, false).unwrap(), Response::Connect { transaction_id: tid, connection_id: cid });
        }

        #[test]
        fn announce_response_round_trip(tid in any::<u32>(), seeders in any::<u32>(), v6 in any::<bool>(), ports in proptest::collection::vec(1u16.., 0..50)) {
            let peers: Vec<SocketAddr> = ports.iter().map(|&p| if v6 {
                SocketAddr::new(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, p).into(), p)
            } else {
                SocketAddr::new(Ipv4Addr::from(p as u32).into(), p)
            }).collect();
            let mut out = Vec::new();
            write_announce_header(tid, 120, 3, seeders, &mut out);
            peers.iter().for_each(|&p| write_peer(p, &mut out));
            prop_assert_eq!(Response::parse(&out, v6).unwrap(), Response::Announce { transaction_id: tid, interval: 120, leechers: 3, seeders, peers });
        }

        #[test]
        fn arbitrary_packets_never_panic(b in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Request::parse(&b);
            let _ = Response::parse(&b, false);
            let _ = Response::parse(&b, true);
        }

        #[test]
        fn every_truncated_announce_is_answerable(a in announce(), cut in 16usize..98) {
            let mut out = Vec::new();
            Request::Announce(a.clone()).write(&mut out);
            let err = Request::parse(&out[..cut]).unwrap_err();
            prop_assert_eq!(err, ParseError::Truncated { transaction_id: a.transaction_id, action: Action::Announce });
        }

        #[test]
        fn errors_never_exceed_the_request(len in 0usize..200, msg in ".{0,300}") {
            let mut out = Vec::new();
            write_error(7, &msg, len.max(8), &mut out);
            prop_assert!(out.len() <= len.max(8));
        }
    }

    fn header(cid: u64, action: u32, tid: u32) -> Vec<u8> {
        let mut b = cid.to_be_bytes().to_vec();
        b.extend_from_slice(&action.to_be_bytes());
        b.extend_from_slice(&tid.to_be_bytes());
        b
    }

    #[test]
    fn each_malformed_class() {
        assert_eq!(Request::parse(&[0; 15]), Err(ParseError::TooShort(15)));
        assert_eq!(
            Request::parse(&header(1, 0, 9)),
            Err(ParseError::BadProtocolId { transaction_id: 9 })
        );
        assert_eq!(
            Request::parse(&header(1, 7, 9)),
            Err(ParseError::UnknownAction {
                transaction_id: 9,
                action: 7
            })
        );
        assert_eq!(
            Request::parse(&header(1, 2, 9)),
            Err(ParseError::ScrapeLength { transaction_id: 9 })
        );
        let mut s = header(1, 2, 9);
        s.extend_from_slice(&[0; 21]);
        assert_eq!(
            Request::parse(&s),
            Err(ParseError::ScrapeLength { transaction_id: 9 })
        );
        // One hash more than fits is a datagram over the largest request: dropped unanswered.
        let mut s = header(1, 2, 9);
        s.extend_from_slice(&[0; 20 * MAX_SCRAPE_HASHES]);
        assert!(Request::parse(&s).is_ok());
        s.extend_from_slice(&[0; 20]);
        assert_eq!(Request::parse(&s), Err(ParseError::TooLong(16 + 20 * 75)));
        assert_eq!(Request::parse(&s).unwrap_err().transaction_id(), None);

        let mut a = header(1, 1, 9);
        a.resize(98, 0);
        a[96..98].copy_from_slice(&6881u16.to_be_bytes());
        assert!(Request::parse(&a).is_ok());
        let mut bad_event = a.clone();
        bad_event[80..84].copy_from_slice(&4u32.to_be_bytes());
        assert_eq!(
            Request::parse(&bad_event),
            Err(ParseError::UnknownEvent { transaction_id: 9 })
        );
        let mut port0 = a.clone();
        port0[96..98].copy_from_slice(&[0, 0]);
        assert_eq!(
            Request::parse(&port0),
            Err(ParseError::PortZero { transaction_id: 9 })
        );
        let mut bad_opt = a.clone();
        bad_opt.extend_from_slice(&[2, 10, b'/']);
        assert_eq!(
            Request::parse(&bad_opt),
            Err(ParseError::BadOptions { transaction_id: 9 })
        );
    }

    #[test]
    fn bep41_options() {
        assert_eq!(parse_options(&[]), Some(vec![]));
        assert_eq!(
            parse_options(&[
                1, 1, 2, 3, b'/', b'a', b'n', 2, 2, b'/', b'k', 0, 2, 1, b'x'
            ]),
            Some(b"/an/k".to_vec())
        );
        assert_eq!(parse_options(&[2]), None);
        let a = AnnounceRequest {
            connection_id: 0,
            transaction_id: 0,
            info_hash: InfoHash::default(),
            peer_id: PeerId::default(),
            downloaded: 0,
            left: 0,
            uploaded: 0,
            event: AnnounceEvent::None,
            ip: 0,
            key: 0,
            numwant: -1,
            port: 1,
            url_data: b"/announce/ABCDEFGHIJKLMNOPQRSTUVWXYZ012345?x=1".to_vec(),
        };
        assert_eq!(a.url_last_segment(), b"ABCDEFGHIJKLMNOPQRSTUVWXYZ012345");
    }
}
