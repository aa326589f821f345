//! `shoal bench …`: measuring tools. Benchmarks print numbers; none of this serves traffic.

pub mod cluster;
pub mod persistence;
pub mod population;
pub mod stream;
pub mod swarm;
pub mod udp_expiry;
pub mod udp_floor;
pub mod udp_load;
pub mod udp_swarm;
