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

/// Makes sure this process may open `needed` file descriptors: raises the soft
/// `RLIMIT_NOFILE` up to the hard one if it must. Err((soft, hard)) when even the hard
/// limit is lower.
pub fn ensure_open_files(needed: u64) -> Result<(), (u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Ok(()); // Unknown: nothing to check against.
    }
    if lim.rlim_cur == libc::RLIM_INFINITY || lim.rlim_cur >= needed {
        return Ok(());
    }
    if lim.rlim_max != libc::RLIM_INFINITY && lim.rlim_max < needed {
        return Err((lim.rlim_cur, lim.rlim_max));
    }
    let raised = libc::rlimit {
        rlim_cur: needed,
        rlim_max: lim.rlim_max,
    };
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        return Err((lim.rlim_cur, lim.rlim_max));
    }
    Ok(())
}
