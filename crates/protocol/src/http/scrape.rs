//! BEP 48 scrape: the info-hashes asked for, and the bencoded `files` dictionary.

use super::*;
use crate::bencode::{put_bytes, put_int};
use crate::types::InfoHash;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScrapeRequest {
    pub info_hashes: Vec<InfoHash>,
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

/// Writes a BEP 48 scrape response; `files` may come in any order.
pub fn write_scrape(files: &mut [(InfoHash, SwarmCounts)], out: &mut Vec<u8>) {
    files.sort_unstable_by_key(|a| a.0);
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
