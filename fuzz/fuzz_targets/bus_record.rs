//! Any bus entry (another node's batch, or a damaged one): records or a refusal, never a
//! panic; what reads re-encodes to bytes that read as the same records.
#![no_main]

use libfuzzer_sys::fuzz_target;

use shoal::cluster::record::{decode, encode};

fuzz_target!(|data: &[u8]| {
    if let Some(records) = decode(data) {
        let again = decode(&encode(&records)).expect("an encoded batch reads");
        assert_eq!(again.len(), records.len());
        assert_eq!(decode(&encode(&again)), Some(again));
    }
});
