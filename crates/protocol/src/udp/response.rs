//! Answers: written into the caller's buffer, and read back for clients and tests.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::*;
use crate::types::ResponsePeer;

/// A response as a client reads it; the server writes each kind from its own type below.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    Connect {
        transaction_id: TransactionId,
        connection_id: ConnectionId,
    },
    Announce {
        transaction_id: TransactionId,
        interval: u32,
        leechers: u32,
        seeders: u32,
        peers: Vec<SocketAddr>,
    },
    Scrape {
        transaction_id: TransactionId,
        stats: Vec<ScrapeStats>,
    },
    Error {
        transaction_id: TransactionId,
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
    /// The transaction id the answer echoes.
    pub fn transaction_id(&self) -> TransactionId {
        match self {
            Response::Connect { transaction_id, .. }
            | Response::Announce { transaction_id, .. }
            | Response::Scrape { transaction_id, .. }
            | Response::Error { transaction_id, .. } => *transaction_id,
        }
    }

    /// `ipv6` says which peer format an announce response carries: it follows the family of
    /// the socket the request arrived on.
    pub fn parse(b: &[u8], ipv6: bool) -> Option<Response> {
        if b.len() < 8 {
            return None;
        }
        let transaction_id = TransactionId(u32_at(b, 4));
        match u32_at(b, 0) {
            ACTION_CONNECT if b.len() == 16 => Some(Response::Connect {
                transaction_id,
                connection_id: ConnectionId(u64_at(b, 8)),
            }),
            ACTION_ANNOUNCE if b.len() >= 20 => {
                let size = if ipv6 { 18 } else { 6 };
                let rest = &b[20..];
                if !rest.len().is_multiple_of(size) {
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
            ACTION_SCRAPE if (b.len() - 8).is_multiple_of(12) => Some(Response::Scrape {
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

/// The answer to a connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectResponse {
    pub transaction_id: TransactionId,
    pub connection_id: ConnectionId,
}

impl ConnectResponse {
    pub fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&ACTION_CONNECT.to_be_bytes());
        out.extend_from_slice(&self.transaction_id.0.to_be_bytes());
        out.extend_from_slice(&self.connection_id.0.to_be_bytes());
    }
}

/// The answer to an announce. Every peer must be of the family of the socket the request
/// came in on: the format has no room to say which family an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnnounceResponse<'a> {
    pub transaction_id: TransactionId,
    pub interval: u32,
    pub leechers: u32,
    pub seeders: u32,
    pub peers: &'a [ResponsePeer],
}

impl AnnounceResponse<'_> {
    pub fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&ACTION_ANNOUNCE.to_be_bytes());
        out.extend_from_slice(&self.transaction_id.0.to_be_bytes());
        out.extend_from_slice(&self.interval.to_be_bytes());
        out.extend_from_slice(&self.leechers.to_be_bytes());
        out.extend_from_slice(&self.seeders.to_be_bytes());
        for p in self.peers {
            match p.addr {
                SocketAddr::V4(a) => out.extend_from_slice(&a.ip().octets()),
                SocketAddr::V6(a) => out.extend_from_slice(&a.ip().octets()),
            }
            out.extend_from_slice(&p.addr.port().to_be_bytes());
        }
    }
}

/// The answer to a scrape: one entry per asked info-hash, in the order asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScrapeResponse<I> {
    pub transaction_id: TransactionId,
    pub stats: I,
}

impl<I: IntoIterator<Item = ScrapeStats>> ScrapeResponse<I> {
    pub fn write(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&ACTION_SCRAPE.to_be_bytes());
        out.extend_from_slice(&self.transaction_id.0.to_be_bytes());
        for s in self.stats {
            out.extend_from_slice(&s.seeders.to_be_bytes());
            out.extend_from_slice(&s.completed.to_be_bytes());
            out.extend_from_slice(&s.leechers.to_be_bytes());
        }
    }
}

/// A refusal or a parse error, told to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorResponse<'a> {
    pub transaction_id: TransactionId,
    pub message: &'a str,
}

impl ErrorResponse<'_> {
    /// Writes no more than `max_len` bytes (the request's length), cutting the message if
    /// needed, so that errors never amplify a spoofed request.
    pub fn write(&self, max_len: usize, out: &mut Vec<u8>) {
        out.extend_from_slice(&ACTION_ERROR.to_be_bytes());
        out.extend_from_slice(&self.transaction_id.0.to_be_bytes());
        let room = max_len.saturating_sub(8);
        let msg = self.message.as_bytes();
        out.extend_from_slice(&msg[..msg.len().min(room)]);
    }
}
