//! Any announce query string: never a panic, and what parses writes back to the same request.
#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::http::AnnounceRequest;

fuzz_target!(|query: &[u8]| {
    match AnnounceRequest::parse(query) {
        Ok(req) => {
            let again = AnnounceRequest::parse(req.to_query().as_bytes()).expect("a written request parses");
            assert_eq!(again.info_hash, req.info_hash);
            assert_eq!(again.peer_id, req.peer_id);
            assert_eq!((again.port, again.left, again.event, again.compact), (req.port, req.left, req.event, req.compact));
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
