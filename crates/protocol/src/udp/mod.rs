//! The UDP tracker protocol (BEP 15) with URL data options (BEP 41).
//! Requests are read from the datagram without trusting any length in it; responses are
//! written into a caller's buffer.

pub const PROTOCOL_ID: u64 = 0x0417_2710_1980;
/// Largest datagram accepted; bigger ones are dropped. 74 scrape hashes (BEP 15's limit) fit.
pub const MAX_REQUEST_LEN: usize = 1500;
pub const MAX_SCRAPE_HASHES: usize = 74;
const _: () = assert!(16 + 20 * MAX_SCRAPE_HASHES <= MAX_REQUEST_LEN);
const ANNOUNCE_LEN: usize = 98;

const ACTION_CONNECT: u32 = 0;
const ACTION_ANNOUNCE: u32 = 1;
const ACTION_SCRAPE: u32 = 2;
const ACTION_ERROR: u32 = 3;

/// The client's tag for one exchange, echoed in the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TransactionId(pub u32);

/// What a connect answer hands out and every later request carries (BEP 15).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ConnectionId(pub u64);

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes(b[at..at + 2].try_into().unwrap())
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().unwrap())
}
fn twenty(b: &[u8], at: usize) -> [u8; 20] {
    b[at..at + 20].try_into().unwrap()
}

mod request;
mod response;

pub use request::*;
pub use response::*;

#[cfg(test)]
mod tests;
