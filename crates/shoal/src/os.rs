//! What the operating system tells: the wall clock and randomness, each read one way.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Time since the Unix epoch (zero on a clock set before it).
pub fn since_epoch() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

pub fn unix_ms() -> u64 {
    since_epoch().as_millis() as u64
}

/// Unix seconds as the store keeps them.
pub fn unix_secs() -> i64 {
    since_epoch().as_secs() as i64
}

/// `N` bytes from the OS's random source; on the rare system where it fails, the clock's
/// nanoseconds mixed in, which still tell two calls apart (never used for secrets: those
/// call `getrandom` and fail loudly).
pub fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    if getrandom::fill(&mut b).is_err() {
        let t = since_epoch().as_nanos().to_le_bytes();
        for (i, x) in b.iter_mut().enumerate() {
            *x ^= t[i % t.len()];
        }
    }
    b
}

pub fn random_u64() -> u64 {
    u64::from_le_bytes(random())
}
