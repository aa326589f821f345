//! Requests as a client sends them: connect, announce (with BEP 41 options) and scrape,
//! each read from the datagram once, every field checked.

use std::fmt;

use super::*;
use crate::types::{AnnounceEvent, InfoHash, PeerId};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Connect { transaction_id: TransactionId },
    Announce(AnnounceRequest),
    Scrape(ScrapeRequest),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnounceRequest {
    pub connection_id: ConnectionId,
    pub transaction_id: TransactionId,
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
    pub connection_id: ConnectionId,
    pub transaction_id: TransactionId,
    pub info_hashes: Vec<InfoHash>,
}

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

/// A datagram that is not a valid request. All but `TooShort` and `TooLong` carry the
/// transaction id, so the sender can be told what went wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    TooShort(usize),
    /// Longer than any request (`MAX_REQUEST_LEN`): dropped unanswered.
    TooLong(usize),
    BadProtocolId {
        transaction_id: TransactionId,
    },
    UnknownAction {
        transaction_id: TransactionId,
        action: u32,
    },
    Truncated {
        transaction_id: TransactionId,
        action: Action,
    },
    ScrapeLength {
        transaction_id: TransactionId,
    },
    UnknownEvent {
        transaction_id: TransactionId,
    },
    BadOptions {
        transaction_id: TransactionId,
    },
    PortZero {
        transaction_id: TransactionId,
    },
}

impl ParseError {
    pub fn transaction_id(&self) -> Option<TransactionId> {
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

impl Request {
    /// Reads one datagram: every field checked, nothing read twice later.
    pub fn parse(packet: &[u8]) -> Result<Request, ParseError> {
        if packet.len() < 16 {
            return Err(ParseError::TooShort(packet.len()));
        }
        if packet.len() > MAX_REQUEST_LEN {
            return Err(ParseError::TooLong(packet.len()));
        }
        let connection_id = ConnectionId(u64_at(packet, 0));
        let action = u32_at(packet, 8);
        let transaction_id = TransactionId(u32_at(packet, 12));
        match action {
            ACTION_CONNECT => {
                if connection_id.0 != PROTOCOL_ID {
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
                if hashes.is_empty() || !hashes.len().is_multiple_of(20) {
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
                out.extend_from_slice(&transaction_id.0.to_be_bytes());
            }
            Request::Announce(a) => {
                out.extend_from_slice(&a.connection_id.0.to_be_bytes());
                out.extend_from_slice(&ACTION_ANNOUNCE.to_be_bytes());
                out.extend_from_slice(&a.transaction_id.0.to_be_bytes());
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
                out.extend_from_slice(&s.connection_id.0.to_be_bytes());
                out.extend_from_slice(&ACTION_SCRAPE.to_be_bytes());
                out.extend_from_slice(&s.transaction_id.0.to_be_bytes());
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
pub(super) fn parse_options(mut b: &[u8]) -> Option<Vec<u8>> {
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
