//! BEP 3 announce: the query a client sends, and the bencoded answer with compact (BEP 23),
//! IPv6 (BEP 7) or dictionary peers.

use std::net::{IpAddr, SocketAddr};

use super::*;
use crate::bencode::{put_bytes, put_int};
use crate::types::{AnnounceEvent, InfoHash, PeerId};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnounceRequest {
    pub info_hash: InfoHash,
    pub peer_id: PeerId,
    pub port: u16,
    pub uploaded: u64,
    pub downloaded: u64,
    pub left: u64,
    pub event: AnnounceEvent,
    /// BEP 23: compact unless the client asks for `compact=0`.
    pub compact: bool,
    pub no_peer_id: bool,
    /// `None` when absent or negative: the tracker's default applies.
    pub numwant: Option<u32>,
}

impl AnnounceRequest {
    /// Parses the query string (the part after `?`, still percent-encoded).
    pub fn parse(query: &[u8]) -> Result<Self, RequestError> {
        let mut buf = Vec::with_capacity(20);
        let (mut info_hash, mut peer_id, mut port, mut left) = (None, None, None, None);
        let mut req = AnnounceRequest {
            info_hash: InfoHash::default(),
            peer_id: PeerId::default(),
            port: 0,
            uploaded: 0,
            downloaded: 0,
            left: 0,
            event: AnnounceEvent::None,
            compact: true,
            no_peer_id: false,
            numwant: None,
        };
        for (key, value) in pairs(query) {
            match key {
                b"info_hash" if info_hash.is_none() => {
                    info_hash = Some(InfoHash(twenty("info_hash", value, &mut buf)?));
                }
                b"peer_id" => peer_id = Some(PeerId(twenty("peer_id", value, &mut buf)?)),
                b"port" => {
                    let p = number("port", value)?;
                    port = Some(u16::try_from(p).map_err(|_| RequestError::NotANumber("port"))?);
                }
                b"left" => left = Some(number("left", value)?),
                b"uploaded" => req.uploaded = number("uploaded", value)?,
                b"downloaded" => req.downloaded = number("downloaded", value)?,
                b"event" => {
                    req.event = match value {
                        b"started" => AnnounceEvent::Started,
                        b"completed" => AnnounceEvent::Completed,
                        b"stopped" => AnnounceEvent::Stopped,
                        // BEP 21's "paused" is a partial seed staying put: a regular announce.
                        b"" | b"empty" | b"paused" => AnnounceEvent::None,
                        other => {
                            let shown = String::from_utf8_lossy(&other[..other.len().min(32)]);
                            return Err(RequestError::UnknownEvent(shown.into_owned()));
                        }
                    }
                }
                b"compact" => req.compact = value != b"0",
                b"no_peer_id" => req.no_peer_id = value != b"0",
                b"numwant" => {
                    // Negative means "default"; an absurdly large one is capped later.
                    req.numwant = match value.first() {
                        Some(b'-') => None,
                        _ => Some(saturating_u32("numwant", value)?),
                    };
                }
                _ => {}
            }
        }
        req.info_hash = info_hash.ok_or(RequestError::Missing("info_hash"))?;
        req.peer_id = peer_id.ok_or(RequestError::Missing("peer_id"))?;
        req.port = port.ok_or(RequestError::Missing("port"))?;
        if req.port == 0 {
            return Err(RequestError::PortZero);
        }
        req.left = left.ok_or(RequestError::Missing("left"))?;
        Ok(req)
    }

    /// Writes this request as a query string; the inverse of `parse`, used by tests and tools.
    pub fn to_query(&self) -> String {
        let event = match self.event {
            AnnounceEvent::None => "",
            AnnounceEvent::Started => "&event=started",
            AnnounceEvent::Completed => "&event=completed",
            AnnounceEvent::Stopped => "&event=stopped",
        };
        let mut q = format!(
            "info_hash={}&peer_id={}&port={}&uploaded={}&downloaded={}&left={}&compact={}{}",
            percent::encode(&self.info_hash.0),
            percent::encode(&self.peer_id.0),
            self.port,
            self.uploaded,
            self.downloaded,
            self.left,
            u8::from(self.compact),
            event
        );
        if self.no_peer_id {
            q.push_str("&no_peer_id=1");
        }
        if let Some(n) = self.numwant {
            q.push_str(&format!("&numwant={n}"));
        }
        q
    }
}

pub struct AnnounceResponse<'a> {
    pub interval: u32,
    pub min_interval: u32,
    pub complete: u32,
    pub incomplete: u32,
    pub peers: &'a [ResponsePeer],
}

impl AnnounceResponse<'_> {
    /// Bencodes the response. Keys are written in sorted order, as bencode requires.
    pub fn write(&self, compact: bool, no_peer_id: bool, out: &mut Vec<u8>) {
        out.push(b'd');
        put_bytes(out, b"complete");
        put_int(out, self.complete.into());
        put_bytes(out, b"incomplete");
        put_int(out, self.incomplete.into());
        put_bytes(out, b"interval");
        put_int(out, self.interval.into());
        put_bytes(out, b"min interval");
        put_int(out, self.min_interval.into());
        if compact {
            let v4 = self.peers.iter().filter(|p| p.addr.is_ipv4()).count();
            put_bytes(out, b"peers");
            out.extend_from_slice(format!("{}:", v4 * 6).as_bytes());
            for p in self.peers {
                if let SocketAddr::V4(a) = p.addr {
                    out.extend_from_slice(&a.ip().octets());
                    out.extend_from_slice(&a.port().to_be_bytes());
                }
            }
            let v6 = self.peers.len() - v4;
            if v6 > 0 {
                put_bytes(out, b"peers6");
                out.extend_from_slice(format!("{}:", v6 * 18).as_bytes());
                for p in self.peers {
                    if let SocketAddr::V6(a) = p.addr {
                        out.extend_from_slice(&a.ip().octets());
                        out.extend_from_slice(&a.port().to_be_bytes());
                    }
                }
            }
        } else {
            put_bytes(out, b"peers");
            out.push(b'l');
            for p in self.peers {
                out.push(b'd');
                put_bytes(out, b"ip");
                put_bytes(out, ip_text(p.addr.ip()).as_bytes());
                if !no_peer_id {
                    put_bytes(out, b"peer id");
                    put_bytes(out, &p.peer_id.0);
                }
                put_bytes(out, b"port");
                put_int(out, p.addr.port().into());
                out.push(b'e');
            }
            out.push(b'e');
        }
        out.push(b'e');
    }
}

fn ip_text(ip: IpAddr) -> String {
    ip.to_string()
}
