//! Percent-decoding of query-string values. Info-hashes and peer ids arrive as raw bytes,
//! so this works on bytes and never assumes UTF-8.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadEscape {
    pub at: usize,
}

/// Decodes `%XX` escapes and `+` (as a space) into `out`.
pub fn decode_into(input: &[u8], out: &mut Vec<u8>) -> Result<(), BadEscape> {
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'%' => {
                let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
                let hi = input.get(i + 1).copied().and_then(hex);
                let lo = input.get(i + 2).copied().and_then(hex);
                match (hi, lo) {
                    (Some(h), Some(l)) => out.push(h << 4 | l),
                    _ => return Err(BadEscape { at: i }),
                }
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Ok(())
}

pub fn decode(input: &[u8]) -> Result<Vec<u8>, BadEscape> {
    let mut out = Vec::with_capacity(input.len());
    decode_into(input, &mut out)?;
    Ok(out)
}

/// Encodes every byte outside the unreserved set, as clients do for info_hash.
pub fn encode(input: &[u8]) -> String {
    let mut s = String::with_capacity(input.len() * 3);
    for &b in input {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trip(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            prop_assert_eq!(decode(encode(&bytes).as_bytes()).unwrap(), bytes);
        }

        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode(&bytes);
        }
    }

    #[test]
    fn rejects_bad_escapes() {
        assert_eq!(decode(b"ab%"), Err(BadEscape { at: 2 }));
        assert_eq!(decode(b"ab%4"), Err(BadEscape { at: 2 }));
        assert_eq!(decode(b"%zz"), Err(BadEscape { at: 0 }));
        assert_eq!(decode(b"%41+b").unwrap(), b"A b");
    }
}
