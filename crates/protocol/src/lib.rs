//! The wire: bencode, HTTP announce/scrape (BEP 3, 7, 23, 48), UDP packets (BEP 15, 41)
//! and the value types every other crate shares. No I/O, no async.

pub mod bencode;
pub mod http;
pub mod percent;
pub mod types;
pub mod udp;
pub mod ws;

pub use types::{AnnounceEvent, CanonicalIp, InfoHash, Key, KeyError, PeerId, ResponsePeer};
