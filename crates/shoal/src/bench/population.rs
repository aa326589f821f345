//! A swarm the way the internet fills one, computed rather than stored: peer `i` of a
//! population has a torrent drawn by Zipf-like popularity (a few huge swarms, a long tail of
//! tiny ones), one endpoint of its own spread over 127.0.0.0/8, a role and a client. Nothing
//! is kept per peer, so the generator costs no memory the tracker's figures would include.

use std::net::Ipv4Addr;

use protocol::{InfoHash, PeerId};

use crate::cmd::{Error, Result};

/// Addresses 127.0.0.1 to 127.255.255.254: a peer's address is its number modulo this, and
/// its port counts how many times the numbers went round, so every endpoint is distinct.
const ADDRESSES: u64 = (1 << 24) - 2;

/// Peer id prefixes in rough proportion to what public trackers see.
const CLIENTS: [&[u8; 8]; 8] = [
    b"-qB4650-",
    b"-qB4650-",
    b"-qB5010-",
    b"-TR4060-",
    b"-LT2090-",
    b"-UT3600-",
    b"-lt0D80-",
    b"-BC0205-",
];

/// splitmix64's finaliser: a bijection that spreads consecutive numbers.
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A uniform draw in [0, 1) from a hash.
fn unit(h: u64) -> f64 {
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// "50M", "250k", "1000".
pub fn parse_count(s: &str) -> std::result::Result<u64, String> {
    let (digits, unit) = match s.trim().as_bytes().last() {
        Some(b'k' | b'K') => (&s[..s.len() - 1], 1_000),
        Some(b'm' | b'M') => (&s[..s.len() - 1], 1_000_000),
        _ => (s, 1),
    };
    match digits.trim().parse::<u64>() {
        Ok(n) if n > 0 => Ok(n * unit),
        _ => Err(format!("{s:?} is not a count such as 1000, 250k or 50M")),
    }
}

/// The population a bench draws and the sizes it fills to: the options `bench swarm` and
/// `bench udp-swarm` share.
#[derive(clap::Args)]
pub struct Shape {
    /// Sizes to fill to, in peers, ascending (suffixes k and M: 1M,10M,50M).
    #[arg(long, value_delimiter = ',', value_parser = parse_count, default_value = "1M")]
    pub peers: Vec<u64>,
    /// Torrents the peers spread over (default: one per five peers of the largest size).
    #[arg(long, value_parser = parse_count)]
    pub torrents: Option<u64>,
    /// Zipf exponent of torrent popularity.
    #[arg(long, default_value_t = 1.0)]
    pub zipf: f64,
    /// Share of peers that seed.
    #[arg(long, default_value_t = 0.6)]
    pub seeders: f64,
}

impl Shape {
    /// The sizes, ascending and distinct, and the population they draw from.
    pub fn resolve(&self) -> Result<(Vec<u64>, Population)> {
        if !(0.0..=1.0).contains(&self.seeders) || self.zipf <= 0.0 {
            return Err(Error::Said(
                "--seeders is a share (0 to 1), --zipf above 0".into(),
            ));
        }
        let mut sizes = self.peers.clone();
        sizes.sort_unstable();
        sizes.dedup();
        let largest = *sizes.last().unwrap_or(&1_000_000);
        let pop = Population {
            torrents: self.torrents.unwrap_or((largest / 5).max(1)),
            zipf: self.zipf,
            seeders: self.seeders,
        };
        Ok((sizes, pop))
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Population {
    /// Torrents the peers spread over, ranked by popularity.
    pub torrents: u64,
    /// Zipf exponent: torrent of rank r holds a share proportional to 1/r^s.
    pub zipf: f64,
    /// Share of peers that seed.
    pub seeders: f64,
}

#[derive(Debug, Clone, Copy)]
pub struct Peer {
    pub info_hash: InfoHash,
    pub peer_id: PeerId,
    pub ip: Ipv4Addr,
    pub port: u16,
    pub seeder: bool,
}

impl Population {
    /// Rank (0 = most popular) of the torrent peer `i` is in: the inverse of the continuous
    /// Zipf distribution's CDF at a uniform draw.
    pub fn rank(&self, i: u64) -> u64 {
        let u = unit(mix(i ^ 0x5a5a));
        let t = self.torrents as f64;
        let s = self.zipf;
        let r = if (s - 1.0).abs() < 1e-9 {
            t.powf(u)
        } else {
            let e = 1.0 - s;
            (1.0 + u * (t.powf(e) - 1.0)).powf(1.0 / e)
        };
        (r as u64).saturating_sub(1).min(self.torrents - 1)
    }

    pub fn info_hash(rank: u64) -> InfoHash {
        let mut h = [0u8; 20];
        for (k, chunk) in h.chunks_mut(8).enumerate() {
            let v = mix(rank.wrapping_mul(3).wrapping_add(k as u64) ^ 0xfeed);
            chunk.copy_from_slice(&v.to_le_bytes()[..chunk.len()]);
        }
        InfoHash(h)
    }

    pub fn peer(&self, i: u64) -> Peer {
        let h = mix(i);
        let mut id = [0u8; 20];
        id[..8].copy_from_slice(CLIENTS[(h % CLIENTS.len() as u64) as usize]);
        id[8..16].copy_from_slice(&h.to_le_bytes());
        id[16..].copy_from_slice(&(i as u32).to_le_bytes());
        let addr = 0x7f00_0001 + (i % ADDRESSES) as u32;
        Peer {
            info_hash: Self::info_hash(self.rank(i)),
            peer_id: PeerId(id),
            ip: Ipv4Addr::from(addr),
            port: 6881u16.wrapping_add((i / ADDRESSES) as u16),
            seeder: unit(mix(i ^ 0xc0ffee)) < self.seeders,
        }
    }

    /// A quarter of the peers, spread over every torrent: the ones a mass expiry removes.
    pub fn expiring(i: u64) -> bool {
        i.is_multiple_of(4)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{HashMap, HashSet};

    #[test]
    fn popularity_is_skewed_endpoints_are_distinct_and_shares_hold() {
        let pop = Population {
            torrents: 10_000,
            zipf: 1.0,
            seeders: 0.6,
        };
        let n = 200_000u64;
        let mut per_rank: HashMap<u64, u64> = HashMap::new();
        let mut endpoints = HashSet::new();
        let mut seeders = 0;
        for i in 0..n {
            let p = pop.peer(i);
            *per_rank.entry(pop.rank(i)).or_default() += 1;
            assert!(
                endpoints.insert((p.ip, p.port)),
                "endpoint of peer {i} repeats"
            );
            assert!(p.ip.is_loopback());
            seeders += u64::from(p.seeder);
        }
        // Rank 0 holds ln 2 / ln T of the peers under s = 1 (7.5% for 10,000 torrents);
        // the tail is long: most torrents hold a handful or none.
        let top = per_rank[&0] as f64 / n as f64;
        assert!((0.06..0.09).contains(&top), "top share {top}");
        let tiny = (0..10_000)
            .filter(|r| per_rank.get(r).copied().unwrap_or(0) <= 5)
            .count();
        assert!(tiny > 5_000, "{tiny} torrents of 5 peers or fewer");
        let share = seeders as f64 / n as f64;
        assert!((0.58..0.62).contains(&share), "seeder share {share}");
        // The same number gives the same peer: every tracker gets the same swarm.
        assert_eq!(pop.peer(77).peer_id, pop.peer(77).peer_id);
        assert_eq!(Population::info_hash(3), Population::info_hash(3));
        assert_ne!(Population::info_hash(3), Population::info_hash(4));
    }

    #[test]
    fn counts_parse_with_suffixes_and_refuse_the_rest() {
        assert_eq!(parse_count("50M"), Ok(50_000_000));
        assert_eq!(parse_count("250k"), Ok(250_000));
        assert_eq!(parse_count("1000"), Ok(1000));
        assert!(parse_count("0").is_err());
        assert!(parse_count("1G").unwrap_err().contains("1G"));
        assert!(parse_count("").is_err());
    }

    #[test]
    fn a_gentler_exponent_flattens_the_head() {
        let steep = Population {
            torrents: 10_000,
            zipf: 1.0,
            seeders: 0.5,
        };
        let gentle = Population { zipf: 0.7, ..steep };
        let top = |p: &Population| (0..100_000).filter(|&i| p.rank(i) == 0).count();
        assert!(top(&gentle) * 3 < top(&steep));
        assert!((0..100_000).all(|i| gentle.rank(i) < 10_000));
    }
}
