//! Any scrape query string: never a panic; never more hashes than the limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::http::ScrapeRequest;

fuzz_target!(|query: &[u8]| {
    if let Ok(req) = ScrapeRequest::parse(query) {
        assert!(!req.info_hashes.is_empty() && req.info_hashes.len() <= 256);
    }
});
