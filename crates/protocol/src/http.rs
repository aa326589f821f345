//! HTTP tracker requests and responses: BEP 3 announce, BEP 23 compact peers, BEP 7 `peers6`,
//! BEP 48 scrape. Requests are parsed from the raw query string; responses are bencoded.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use crate::bencode::{put_bytes, put_int};
use crate::percent;
use crate::types::{AnnounceEvent, InfoHash, PeerId};

/// Most info-hashes one HTTP scrape may ask for; more gets a failure, not a huge answer.
pub const MAX_SCRAPE_HASHES: usize = 256;

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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScrapeRequest {
    pub info_hashes: Vec<InfoHash>,
}

/// Why a request was refused; `Display` is the `failure reason` a person reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestError {
    Missing(&'static str),
    BadEscape(&'static str),
    WrongLength { param: &'static str, len: usize },
    NotANumber(&'static str),
    PortZero,
    UnknownEvent(String),
    TooManyInfoHashes(usize),
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestError::Missing(p) => write!(f, "missing parameter '{p}'"),
            RequestError::BadEscape(p) => write!(f, "parameter '{p}' has a malformed %-escape"),
            RequestError::WrongLength { param, len } => {
                write!(f, "parameter '{param}' must be 20 bytes, got {len}")
            }
            RequestError::NotANumber(p) => write!(f, "parameter '{p}' must be a whole number"),
            RequestError::PortZero => write!(f, "parameter 'port' must be between 1 and 65535"),
            RequestError::UnknownEvent(e) => write!(f, "unknown event '{e}'"),
            RequestError::TooManyInfoHashes(n) => {
                write!(
                    f,
                    "scrape asks for {n} info-hashes, at most {MAX_SCRAPE_HASHES} allowed"
                )
            }
        }
    }
}

impl std::error::Error for RequestError {}

impl RequestError {
    /// A short stable label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            RequestError::Missing(_) => "missing_param",
            RequestError::BadEscape(_) => "bad_escape",
            RequestError::WrongLength { .. } => "wrong_length",
            RequestError::NotANumber(_) => "not_a_number",
            RequestError::PortZero => "port_zero",
            RequestError::UnknownEvent(_) => "unknown_event",
            RequestError::TooManyInfoHashes(_) => "too_many_info_hashes",
        }
    }
}

fn pairs(query: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    query
        .split(|&b| b == b'&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.iter().position(|&b| b == b'=') {
            Some(i) => (&p[..i], &p[i + 1..]),
            None => (p, &[][..]),
        })
}

fn twenty(param: &'static str, raw: &[u8], buf: &mut Vec<u8>) -> Result<[u8; 20], RequestError> {
    buf.clear();
    percent::decode_into(raw, buf).map_err(|_| RequestError::BadEscape(param))?;
    buf.as_slice()
        .try_into()
        .map_err(|_| RequestError::WrongLength {
            param,
            len: buf.len(),
        })
}

fn number(param: &'static str, raw: &[u8]) -> Result<u64, RequestError> {
    if raw.is_empty() || raw.len() > 20 || !raw.iter().all(u8::is_ascii_digit) {
        return Err(RequestError::NotANumber(param));
    }
    std::str::from_utf8(raw)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(RequestError::NotANumber(param))
}

fn saturating_u32(param: &'static str, raw: &[u8]) -> Result<u32, RequestError> {
    if raw.is_empty() || !raw.iter().all(u8::is_ascii_digit) {
        return Err(RequestError::NotANumber(param));
    }
    Ok(raw
        .iter()
        .try_fold(0u32, |n, &d| {
            n.checked_mul(10)?.checked_add((d - b'0') as u32)
        })
        .unwrap_or(u32::MAX))
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

impl ScrapeRequest {
    pub fn parse(query: &[u8]) -> Result<Self, RequestError> {
        let mut buf = Vec::with_capacity(20);
        let mut info_hashes = Vec::new();
        for (key, value) in pairs(query) {
            if key == b"info_hash" {
                if info_hashes.len() == MAX_SCRAPE_HASHES {
                    let n = pairs(query).filter(|(k, _)| *k == b"info_hash").count();
                    return Err(RequestError::TooManyInfoHashes(n));
                }
                info_hashes.push(InfoHash(twenty("info_hash", value, &mut buf)?));
            }
        }
        if info_hashes.is_empty() {
            // A full scrape of every torrent is not offered: it is a cheap way to load a tracker.
            return Err(RequestError::Missing("info_hash"));
        }
        Ok(ScrapeRequest { info_hashes })
    }
}

/// A peer as it appears in a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponsePeer {
    pub peer_id: PeerId,
    pub addr: SocketAddr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SwarmCounts {
    pub complete: u32,
    pub incomplete: u32,
    pub downloaded: u64,
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

/// Writes a BEP 48 scrape response; `files` may come in any order.
pub fn write_scrape(files: &mut [(InfoHash, SwarmCounts)], out: &mut Vec<u8>) {
    files.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    out.extend_from_slice(b"d5:filesd");
    let mut last = None;
    for (hash, c) in files.iter() {
        if last == Some(hash) {
            continue; // a hash asked twice is answered once: dictionary keys are unique
        }
        last = Some(hash);
        put_bytes(out, &hash.0);
        out.push(b'd');
        put_bytes(out, b"complete");
        put_int(out, c.complete.into());
        put_bytes(out, b"downloaded");
        put_int(out, i64::try_from(c.downloaded).unwrap_or(i64::MAX));
        put_bytes(out, b"incomplete");
        put_int(out, c.incomplete.into());
        out.push(b'e');
    }
    out.extend_from_slice(b"ee");
}

pub fn write_failure(reason: &str, out: &mut Vec<u8>) {
    out.push(b'd');
    put_bytes(out, b"failure reason");
    put_bytes(out, reason.as_bytes());
    out.push(b'e');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bencode::{Value, decode};
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV6};

    fn request() -> AnnounceRequest {
        AnnounceRequest {
            info_hash: InfoHash([0xAB; 20]),
            peer_id: PeerId(*b"-qB4650-abcdefghijkl"),
            port: 6881,
            uploaded: 1,
            downloaded: 2,
            left: 3,
            event: AnnounceEvent::Started,
            compact: true,
            no_peer_id: false,
            numwant: Some(50),
        }
    }

    fn event_strategy() -> impl Strategy<Value = AnnounceEvent> {
        prop_oneof![
            Just(AnnounceEvent::None),
            Just(AnnounceEvent::Started),
            Just(AnnounceEvent::Completed),
            Just(AnnounceEvent::Stopped),
        ]
    }

    proptest! {
        #[test]
        fn announce_round_trip(
            ih in any::<[u8; 20]>(), pid in any::<[u8; 20]>(), port in 1u16..,
            up in any::<u64>(), down in any::<u64>(), left in any::<u64>(),
            event in event_strategy(), compact in any::<bool>(), no_peer_id in any::<bool>(),
            numwant in proptest::option::of(any::<u32>()),
        ) {
            let req = AnnounceRequest {
                info_hash: InfoHash(ih), peer_id: PeerId(pid), port, uploaded: up, downloaded: down,
                left, event, compact, no_peer_id, numwant,
            };
            prop_assert_eq!(AnnounceRequest::parse(req.to_query().as_bytes()).unwrap(), req);
        }

        #[test]
        fn parsers_never_panic(q in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = AnnounceRequest::parse(&q);
            let _ = ScrapeRequest::parse(&q);
        }

        #[test]
        fn compact_response_decodes(n4 in 0usize..30, n6 in 0usize..30, complete in any::<u32>()) {
            let mut peers = Vec::new();
            for i in 0..n4 {
                peers.push(ResponsePeer { peer_id: PeerId([i as u8; 20]), addr: SocketAddr::from((Ipv4Addr::new(10, 0, 0, i as u8), 1000 + i as u16)) });
            }
            for i in 0..n6 {
                peers.push(ResponsePeer { peer_id: PeerId([i as u8; 20]), addr: SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, i as u16), 2000, 0, 0)) });
            }
            let resp = AnnounceResponse { interval: 120, min_interval: 60, complete, incomplete: 7, peers: &peers };
            let mut out = Vec::new();
            resp.write(true, false, &mut out);
            let v = decode(&out).unwrap();
            prop_assert_eq!(v.get("complete").unwrap().as_int(), Some(complete as i64));
            prop_assert_eq!(v.get("peers").unwrap().as_bytes().unwrap().len(), n4 * 6);
            prop_assert_eq!(v.get("peers6").map(|p| p.as_bytes().unwrap().len()).unwrap_or(0), n6 * 18);
            let mut out = Vec::new();
            resp.write(false, true, &mut out);
            let v = decode(&out).unwrap();
            let list = v.get("peers").unwrap().as_list().unwrap();
            prop_assert_eq!(list.len(), n4 + n6);
            for (entry, p) in list.iter().zip(&peers) {
                prop_assert!(entry.get("peer id").is_none());
                let ip: IpAddr = std::str::from_utf8(entry.get("ip").unwrap().as_bytes().unwrap()).unwrap().parse().unwrap();
                prop_assert_eq!(SocketAddr::new(ip, entry.get("port").unwrap().as_int().unwrap() as u16), p.addr);
            }
        }
    }

    #[test]
    fn compact_peers_are_network_order() {
        let peers = [ResponsePeer {
            peer_id: PeerId([1; 20]),
            addr: "1.2.3.4:6881".parse().unwrap(),
        }];
        let resp = AnnounceResponse {
            interval: 1,
            min_interval: 1,
            complete: 0,
            incomplete: 1,
            peers: &peers,
        };
        let mut out = Vec::new();
        resp.write(true, false, &mut out);
        let v = decode(&out).unwrap();
        assert_eq!(
            v.get("peers").unwrap().as_bytes().unwrap(),
            &[1, 2, 3, 4, 0x1a, 0xe1]
        );
        assert!(v.get("peers6").is_none());
    }

    #[test]
    fn dictionary_form_carries_peer_id_unless_told() {
        let peers = [ResponsePeer {
            peer_id: PeerId(*b"-TR3000-000000000000"),
            addr: "[::1]:51413".parse().unwrap(),
        }];
        let resp = AnnounceResponse {
            interval: 1,
            min_interval: 1,
            complete: 1,
            incomplete: 0,
            peers: &peers,
        };
        let mut out = Vec::new();
        resp.write(false, false, &mut out);
        let v = decode(&out).unwrap();
        let p = &v.get("peers").unwrap().as_list().unwrap()[0];
        assert_eq!(
            p.get("peer id").unwrap().as_bytes().unwrap(),
            b"-TR3000-000000000000"
        );
        assert_eq!(p.get("ip").unwrap().as_bytes().unwrap(), b"::1");
    }

    #[test]
    fn each_malformed_class_is_named() {
        let ok = request().to_query();
        let without = |p: &str| {
            ok.split('&')
                .filter(|kv| !kv.starts_with(&format!("{p}=")))
                .collect::<Vec<_>>()
                .join("&")
        };
        for p in ["info_hash", "peer_id", "port", "left"] {
            let err = AnnounceRequest::parse(without(p).as_bytes()).unwrap_err();
            assert_eq!(
                err,
                RequestError::Missing(match p {
                    "info_hash" => "info_hash",
                    "peer_id" => "peer_id",
                    "port" => "port",
                    _ => "left",
                })
            );
            assert!(err.to_string().contains(p));
        }
        let bad = |q: String| AnnounceRequest::parse(q.as_bytes()).unwrap_err();
        assert_eq!(
            bad(ok.replacen("info_hash=", "info_hash=%zz", 1)),
            RequestError::BadEscape("info_hash")
        );
        assert_eq!(
            bad(ok.replacen("info_hash=", "info_hash=x", 1)),
            RequestError::WrongLength {
                param: "info_hash",
                len: 21
            }
        );
        assert_eq!(
            bad(format!("{}&info_hash=abc", without("info_hash"))),
            RequestError::WrongLength {
                param: "info_hash",
                len: 3
            }
        );
        assert_eq!(
            bad(ok.replace("port=6881", "port=0")),
            RequestError::PortZero
        );
        assert_eq!(
            bad(ok.replace("port=6881", "port=70000")),
            RequestError::NotANumber("port")
        );
        assert_eq!(
            bad(ok.replace("left=3", "left=-3")),
            RequestError::NotANumber("left")
        );
        assert_eq!(
            bad(ok.replace("event=started", "event=exploded")),
            RequestError::UnknownEvent("exploded".into())
        );
        assert_eq!(
            bad(ok.replace("numwant=50", "numwant=lots")),
            RequestError::NotANumber("numwant")
        );
    }

    #[test]
    fn numwant_extremes() {
        let q = |n: &str| {
            AnnounceRequest::parse(
                request()
                    .to_query()
                    .replace("numwant=50", &format!("numwant={n}"))
                    .as_bytes(),
            )
            .unwrap()
            .numwant
        };
        assert_eq!(q("-1"), None);
        assert_eq!(q("99999999999"), Some(u32::MAX));
        assert_eq!(q("999999999999999999999999999999"), Some(u32::MAX));
        assert_eq!(q("0"), Some(0));
    }

    #[test]
    fn scrape_many_and_too_many() {
        let q: String = (0..3u8)
            .map(|i| format!("info_hash={}&", percent::encode(&[i; 20])))
            .collect();
        let req = ScrapeRequest::parse(q.as_bytes()).unwrap();
        assert_eq!(
            req.info_hashes,
            vec![InfoHash([0; 20]), InfoHash([1; 20]), InfoHash([2; 20])]
        );
        let q: String = (0..MAX_SCRAPE_HASHES + 5)
            .map(|_| format!("info_hash={}&", percent::encode(&[7; 20])))
            .collect();
        assert_eq!(
            ScrapeRequest::parse(q.as_bytes()),
            Err(RequestError::TooManyInfoHashes(MAX_SCRAPE_HASHES + 5))
        );
        assert_eq!(
            ScrapeRequest::parse(b""),
            Err(RequestError::Missing("info_hash"))
        );
    }

    #[test]
    fn scrape_response_is_sorted_and_deduplicated() {
        let c = SwarmCounts {
            complete: 1,
            incomplete: 2,
            downloaded: 1 << 40,
        };
        let mut files = vec![
            (InfoHash([9; 20]), c),
            (InfoHash([1; 20]), c),
            (InfoHash([9; 20]), c),
        ];
        let mut out = Vec::new();
        write_scrape(&mut files, &mut out);
        let v = decode(&out).unwrap();
        let Value::Dict(files) = v.get("files").unwrap() else {
            panic!()
        };
        assert_eq!(files.len(), 2);
        assert_eq!(
            files[&vec![9u8; 20]].get("downloaded").unwrap().as_int(),
            Some(1 << 40)
        );
    }

    #[test]
    fn failure_is_a_bencoded_dictionary() {
        let mut out = Vec::new();
        write_failure("missing parameter 'port'", &mut out);
        assert_eq!(
            decode(&out)
                .unwrap()
                .get("failure reason")
                .unwrap()
                .as_bytes()
                .unwrap(),
            b"missing parameter 'port'"
        );
    }
}
