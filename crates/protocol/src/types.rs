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
}
