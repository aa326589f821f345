use std::fmt;

/// A torrent's v1 info-hash: the SHA-1 of its bencoded info dictionary.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct InfoHash(pub [u8; 20]);

/// The 20-byte id a client picks for itself.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct PeerId(pub [u8; 20]);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HexError {
    Length(usize),
    Digit(usize),
}

impl fmt::Display for HexError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HexError::Length(n) => write!(f, "expected 40 hex characters, got {n}"),
            HexError::Digit(i) => write!(f, "character {i} is not a hex digit"),
        }
    }
}

impl std::error::Error for HexError {}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

impl InfoHash {
    pub fn from_hex(s: &str) -> Result<Self, HexError> {
        let b = s.as_bytes();
        if b.len() != 40 {
            return Err(HexError::Length(b.len()));
        }
        let mut out = [0u8; 20];
        for (i, byte) in out.iter_mut().enumerate() {
            let hi = hex_value(b[2 * i]).ok_or(HexError::Digit(2 * i))?;
            let lo = hex_value(b[2 * i + 1]).ok_or(HexError::Digit(2 * i + 1))?;
            *byte = hi << 4 | lo;
        }
        Ok(InfoHash(out))
    }

    pub fn to_hex(&self) -> String {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut s = String::with_capacity(40);
        for b in self.0 {
            s.push(DIGITS[(b >> 4) as usize] as char);
            s.push(DIGITS[(b & 15) as usize] as char);
        }
        s
    }

    pub fn from_slice(b: &[u8]) -> Option<Self> {
        Some(InfoHash(b.try_into().ok()?))
    }
}

impl std::str::FromStr for InfoHash {
    type Err = HexError;

    fn from_str(s: &str) -> Result<Self, HexError> {
        InfoHash::from_hex(s)
    }
}

impl fmt::Display for InfoHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for InfoHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InfoHash({})", self.to_hex())
    }
}

impl PeerId {
    pub fn from_slice(b: &[u8]) -> Option<Self> {
        Some(PeerId(b.try_into().ok()?))
    }
}

impl fmt::Debug for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Client prefixes such as -qB4650- are printable; show the rest escaped.
        write!(f, "PeerId(\"{}\")", self.0.escape_ascii())
    }
}

/// A private-tracker key: exactly 32 characters from `[A-Za-z0-9]`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key([u8; Key::LEN]);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyError {
    Length(usize),
    Character(usize),
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::Length(n) => write!(f, "a key has {} characters, got {n}", Key::LEN),
            KeyError::Character(i) => {
                write!(f, "character {i} of the key is not a letter or digit")
            }
        }
    }
}

impl std::error::Error for KeyError {}

impl Key {
    pub const LEN: usize = 32;
    pub const ALPHABET: &'static [u8; 62] =
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

    pub fn parse(b: &[u8]) -> Result<Self, KeyError> {
        let arr: [u8; Key::LEN] = b.try_into().map_err(|_| KeyError::Length(b.len()))?;
        match arr.iter().position(|c| !c.is_ascii_alphanumeric()) {
            Some(i) => Err(KeyError::Character(i)),
            None => Ok(Key(arr)),
        }
    }

    /// Builds a key from 32 random bytes (the caller brings a CSPRNG). Rejection sampling
    /// keeps every character equally likely.
    pub fn from_random(mut fill: impl FnMut(&mut [u8])) -> Self {
        let mut out = [0u8; Key::LEN];
        let mut n = 0;
        let mut buf = [0u8; 64];
        while n < Key::LEN {
            fill(&mut buf);
            // 248 = 4 * 62: bytes at or above it would favour the first characters.
            for &b in buf.iter().filter(|&&b| b < 248) {
                if n == Key::LEN {
                    break;
                }
                out[n] = Key::ALPHABET[(b % 62) as usize];
                n += 1;
            }
        }
        Key(out)
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII alphanumerics are ever stored.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl std::str::FromStr for Key {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        Key::parse(s.as_bytes())
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A key is a credential: show enough to tell keys apart, not enough to use one.
        write!(f, "Key({}…)", &self.as_str()[..4])
    }
}

/// What a peer says about itself in an announce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AnnounceEvent {
    #[default]
    None,
    Started,
    Completed,
    Stopped,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn hex_round_trip(bytes in any::<[u8; 20]>()) {
            let h = InfoHash(bytes);
            prop_assert_eq!(InfoHash::from_hex(&h.to_hex()).unwrap(), h);
            prop_assert_eq!(InfoHash::from_hex(&h.to_hex().to_uppercase()).unwrap(), h);
        }
    }

    #[test]
    fn hex_rejects_wrong_length_and_digits() {
        assert_eq!(InfoHash::from_hex("abc"), Err(HexError::Length(3)));
        let mut s = "0".repeat(40);
        s.replace_range(7..8, "g");
        assert_eq!(InfoHash::from_hex(&s), Err(HexError::Digit(7)));
        // A multi-byte character must not slip past the length check.
        assert!(InfoHash::from_hex(&format!("{}é", "0".repeat(38))).is_err());
    }

    #[test]
    fn keys_are_32_alphanumerics() {
        let k: Key = "abcdefghijklmnopqrstuvwxyzABCDE1".parse().unwrap();
        assert_eq!(k.to_string(), "abcdefghijklmnopqrstuvwxyzABCDE1");
        assert!(
            !format!("{k:?}").contains("efgh"),
            "Debug must not show the whole key"
        );
        assert_eq!(Key::parse(b"short"), Err(KeyError::Length(5)));
        assert_eq!(
            Key::parse(b"abcdefghijklmnopqrstuvwxyzABCD-1"),
            Err(KeyError::Character(30))
        );
        assert_eq!(
            Key::parse("é".repeat(16).as_bytes()),
            Err(KeyError::Character(0))
        );
    }

    #[test]
    fn random_keys_use_the_whole_alphabet_evenly() {
        let mut state = 0x9e3779b97f4a7c15u64;
        let mut fill = |b: &mut [u8]| {
            for x in b {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                *x = state as u8;
            }
        };
        let mut counts = [0u32; 62];
        for _ in 0..2000 {
            let k = Key::from_random(&mut fill);
            assert!(Key::parse(k.as_str().as_bytes()).is_ok());
            for c in k.as_str().bytes() {
                counts[Key::ALPHABET.iter().position(|&a| a == c).unwrap()] += 1;
            }
        }
        // 64,000 characters over 62 symbols: about 1032 each; a biased mapping skews the first ones.
        assert!(
            counts.iter().all(|&c| (850..1220).contains(&c)),
            "{counts:?}"
        );
    }
}

/// A peer's IP as the tracker keys it. A dual-stack socket reports an IPv4 client as
/// `::ffff:a.b.c.d`; that client is an IPv4 peer. `From` is the only way to make one, so no
/// path can forget the rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CanonicalIp(std::net::IpAddr);

impl From<std::net::IpAddr> for CanonicalIp {
    fn from(ip: std::net::IpAddr) -> Self {
        CanonicalIp(match ip {
            std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, std::net::IpAddr::V4),
            v4 => v4,
        })
    }
}

impl CanonicalIp {
    pub fn ip(self) -> std::net::IpAddr {
        self.0
    }

    /// The peer's endpoint: this address with the port it announced.
    pub fn with_port(self, port: u16) -> std::net::SocketAddr {
        std::net::SocketAddr::new(self.0, port)
    }
}

#[cfg(test)]
mod canonical_tests {
    use super::CanonicalIp;
    use std::net::IpAddr;

    #[test]
    fn mapped_ipv4_is_ipv4_and_nothing_else_changes() {
        let c = |s: &str| CanonicalIp::from(s.parse::<IpAddr>().unwrap()).ip();
        assert_eq!(c("::ffff:10.0.0.1"), "10.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(c("10.0.0.1"), "10.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(c("2001:db8::1"), "2001:db8::1".parse::<IpAddr>().unwrap());
        // IPv4-compatible (deprecated ::a.b.c.d) is not mapped: it stays IPv6.
        assert_eq!(c("::10.0.0.1"), "::10.0.0.1".parse::<IpAddr>().unwrap());
        let at = CanonicalIp::from("::ffff:10.0.0.1".parse::<IpAddr>().unwrap()).with_port(7);
        assert_eq!(at, "10.0.0.1:7".parse().unwrap());
    }
}

/// A peer as it appears in an answer, on either protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponsePeer {
    pub peer_id: PeerId,
    pub addr: std::net::SocketAddr,
}
