//! Any body for POST /api/v1/keys: a request or a sentence for a 400, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

use shoal::server::admin::body::{NewKey, parse_new_key};

fuzz_target!(|body: &[u8]| {
    match parse_new_key(body) {
        Ok(NewKey::Generate { valid_for_secs: Some(n) }) => assert!(n >= 1 && n <= i64::MAX as u64),
        Ok(NewKey::Import { key, .. }) => assert_eq!(key.as_str().len(), 32),
        Ok(_) => {}
        Err(why) => assert!(!why.is_empty()),
    }
});
