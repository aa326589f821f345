//! Any datagram: parsing never panics, and what parses writes back to the same request.
#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::udp::{ErrorResponse, Request};

fuzz_target!(|data: &[u8]| {
    match Request::parse(data) {
        Ok(req) => {
            let mut out = Vec::new();
            req.write(&mut out);
            assert_eq!(Request::parse(&out).as_ref(), Ok(&req), "round trip");
        }
        Err(e) => {
            // Every error the server answers stays within the request's size.
            if let Some(transaction_id) = e.transaction_id() {
                let mut out = Vec::new();
                let message = &e.to_string();
                ErrorResponse { transaction_id, message }.write(data.len(), &mut out);
                assert!(out.len() <= data.len().max(16), "error of {} bytes for a {}-byte request", out.len(), data.len());
            }
        }
    }
});
