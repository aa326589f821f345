//! BEP 41 options after a well-formed announce: never a panic, and URL data round-trips.
#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::udp::Request;

fuzz_target!(|options: &[u8]| {
    let mut packet = Vec::with_capacity(98 + options.len());
    packet.extend_from_slice(&0x41727101980u64.to_be_bytes()); // any connection id
    packet.extend_from_slice(&1u32.to_be_bytes()); // announce
    packet.extend_from_slice(&7u32.to_be_bytes()); // transaction id
    packet.extend_from_slice(&[0xab; 40]); // info-hash, peer id
    packet.extend_from_slice(&[0; 24]); // downloaded, left, uploaded
    packet.extend_from_slice(&2u32.to_be_bytes()); // started
    packet.extend_from_slice(&[0; 12]); // ip, key, numwant
    packet.extend_from_slice(&6881u16.to_be_bytes());
    packet.extend_from_slice(options);
    if let Ok(Request::Announce(a)) = Request::parse(&packet) {
        let _ = a.url_last_segment();
        let mut out = Vec::new();
        Request::Announce(a.clone()).write(&mut out);
        match Request::parse(&out) {
            Ok(Request::Announce(b)) => assert_eq!(a.url_data, b.url_data),
            other => panic!("re-parse gave {other:?}"),
        }
    }
});
