//! Any WebSocket tracker frame: a request, or an error that names its action, never a panic;
//! what parses re-encodes to frames that parse as JSON again.
#![no_main]

use libfuzzer_sys::fuzz_target;

use protocol::ws::{self, Request};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match ws::parse(text) {
        Ok(Request::Announce(a)) => {
            for o in &a.offers {
                let f = ws::offer(a.info_hash, a.peer_id, o);
                assert!(serde_json::from_str::<serde_json::Value>(&f).is_ok());
            }
            let r: serde_json::Value =
                serde_json::from_str(&ws::announce_reply(a.info_hash, 120, 1, 2)).unwrap();
            assert_eq!(r["action"], "announce");
        }
        Ok(Request::Answer(a)) => {
            assert!(serde_json::from_str::<serde_json::Value>(&ws::answer(&a)).is_ok());
        }
        Ok(Request::Scrape(hashes)) => assert!(hashes.len() <= ws::MAX_SCRAPE),
        Err(e) => {
            let f = ws::failure(e.action, e.info_hash, e.kind.message());
            assert!(f.contains("\"action\""));
        }
    }
});
