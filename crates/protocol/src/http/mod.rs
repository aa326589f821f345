//! HTTP tracker requests and responses: BEP 3 announce, BEP 23 compact peers, BEP 7 `peers6`,
//! BEP 48 scrape. Requests are parsed from the raw query string; responses are bencoded.

use std::fmt;

use crate::bencode::put_bytes;
use crate::percent;
pub use crate::types::ResponsePeer;

/// Most info-hashes one HTTP scrape may ask for; more gets a failure, not a huge answer.
pub const MAX_SCRAPE_HASHES: usize = 256;

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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SwarmCounts {
    pub complete: u32,
    pub incomplete: u32,
    pub downloaded: u64,
}

pub fn write_failure(reason: &str, out: &mut Vec<u8>) {
    out.push(b'd');
    put_bytes(out, b"failure reason");
    put_bytes(out, reason.as_bytes());
    out.push(b'e');
}

mod announce;
mod scrape;

pub use announce::*;
pub use scrape::*;

#[cfg(test)]
mod tests;
