//! Any bytes: decoding never panics or recurses without bound, and what decodes re-encodes to
//! a value that decodes the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::bencode;

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = bencode::decode(data) {
        let mut out = Vec::new();
        v.encode(&mut out);
        assert_eq!(bencode::decode(&out).as_ref(), Ok(&v));
    }
});
