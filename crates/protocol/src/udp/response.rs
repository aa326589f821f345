//! Answers: written into the caller's buffer, and read back for clients and tests.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::*;

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
