//! Bencode (BEP 3). Responses are written with the small `put_*` helpers straight into a
//! buffer; the decoder exists for clients, tests and fuzzing and bounds its nesting.

use std::collections::BTreeMap;
use std::fmt;

pub fn put_int(out: &mut Vec<u8>, n: i64) {
    out.push(b'i');
    out.extend_from_slice(n.to_string().as_bytes());
    out.push(b'e');
}

pub fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(b.len().to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(b);
}

/// A decoded value. Dictionaries keep keys sorted, as bencode requires.
#[derive(Clone, PartialEq, Eq)]
pub enum Value {
    Int(i64),
    Bytes(Vec<u8>),
    List(Vec<Value>),
    Dict(BTreeMap<Vec<u8>, Value>),
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Int(n) => write!(f, "{n}"),
            Value::Bytes(b) => write!(f, "b\"{}\"", b.escape_ascii()),
            Value::List(l) => f.debug_list().entries(l).finish(),
            Value::Dict(d) => f
                .debug_map()
                .entries(d.iter().map(|(k, v)| (k.escape_ascii().to_string(), v)))
                .finish(),
        }
    }
}

impl Value {
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Value::Int(n) => put_int(out, *n),
            Value::Bytes(b) => put_bytes(out, b),
            Value::List(l) => {
                out.push(b'l');
                l.iter().for_each(|v| v.encode(out));
                out.push(b'e');
            }
            Value::Dict(d) => {
                out.push(b'd');
                for (k, v) in d {
                    put_bytes(out, k);
                    v.encode(out);
                }
                out.push(b'e');
            }
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Dict(d) => d.get(key.as_bytes()),
            _ => None,
        }
    }

    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(n) => Some(*n),
            _ => None,
        }
    }

    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_list(&self) -> Option<&[Value]> {
        match self {
            Value::List(l) => Some(l),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    UnexpectedEnd,
    UnexpectedByte { at: usize, byte: u8 },
    BadInteger { at: usize },
    TooDeep,
    UnsortedKeys { at: usize },
    TrailingBytes { at: usize },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::UnexpectedEnd => write!(f, "input ends inside a value"),
            DecodeError::UnexpectedByte { at, byte } => {
                write!(f, "unexpected byte 0x{byte:02x} at offset {at}")
            }
            DecodeError::BadInteger { at } => write!(f, "malformed integer at offset {at}"),
            DecodeError::TooDeep => write!(f, "nesting deeper than {MAX_DEPTH}"),
            DecodeError::UnsortedKeys { at } => {
                write!(f, "dictionary keys unsorted or repeated at offset {at}")
            }
            DecodeError::TrailingBytes { at } => write!(f, "trailing bytes from offset {at}"),
        }
    }
}

impl std::error::Error for DecodeError {}

const MAX_DEPTH: usize = 64;

/// Decodes exactly one value that spans the whole input.
pub fn decode(input: &[u8]) -> Result<Value, DecodeError> {
    let mut d = Decoder { input, pos: 0 };
    let v = d.value(0)?;
    if d.pos != input.len() {
        return Err(DecodeError::TrailingBytes { at: d.pos });
    }
    Ok(v)
}

struct Decoder<'a> {
    input: &'a [u8],
    pos: usize,
}

impl Decoder<'_> {
    fn peek(&self) -> Result<u8, DecodeError> {
        self.input
            .get(self.pos)
            .copied()
            .ok_or(DecodeError::UnexpectedEnd)
    }

    fn value(&mut self, depth: usize) -> Result<Value, DecodeError> {
        if depth > MAX_DEPTH {
            return Err(DecodeError::TooDeep);
        }
        match self.peek()? {
            b'i' => {
                self.pos += 1;
                let n = self.integer(b'e')?;
                Ok(Value::Int(n))
            }
            b'0'..=b'9' => Ok(Value::Bytes(self.bytes()?.to_vec())),
            b'l' => {
                self.pos += 1;
                let mut items = Vec::new();
                while self.peek()? != b'e' {
                    items.push(self.value(depth + 1)?);
                }
                self.pos += 1;
                Ok(Value::List(items))
            }
            b'd' => {
                self.pos += 1;
                let mut map = BTreeMap::new();
                let mut last: Option<Vec<u8>> = None;
                while self.peek()? != b'e' {
                    let at = self.pos;
                    let key = self.bytes()?.to_vec();
                    if last.as_ref().is_some_and(|l| *l >= key) {
                        return Err(DecodeError::UnsortedKeys { at });
                    }
                    let v = self.value(depth + 1)?;
                    last = Some(key.clone());
                    map.insert(key, v);
                }
                self.pos += 1;
                Ok(Value::Dict(map))
            }
            byte => Err(DecodeError::UnexpectedByte { at: self.pos, byte }),
        }
    }

    /// Reads a decimal integer up to `end`, rejecting leading zeros and "-0" as BEP 3 asks.
    fn integer(&mut self, end: u8) -> Result<i64, DecodeError> {
        let start = self.pos;
        let rest = &self.input[start..];
        let len = rest
            .iter()
            .position(|&b| b == end)
            .ok_or(DecodeError::UnexpectedEnd)?;
        let digits = &rest[..len];
        let bad = DecodeError::BadInteger { at: start };
        let (neg, body) = match digits.first() {
            Some(b'-') => (true, &digits[1..]),
            _ => (false, digits),
        };
        if body.is_empty()
            || !body.iter().all(u8::is_ascii_digit)
            || (body.len() > 1 && body[0] == b'0')
            || (neg && body == b"0")
        {
            return Err(bad);
        }
        // Safe: only ASCII digits and an optional sign remain.
        let text = std::str::from_utf8(digits).map_err(|_| bad.clone())?;
        let n = text.parse::<i64>().map_err(|_| bad)?;
        self.pos = start + len + 1;
        Ok(n)
    }

    fn bytes(&mut self) -> Result<&[u8], DecodeError> {
        let at = self.pos;
        let len = self.integer(b':')?;
        let len = usize::try_from(len).map_err(|_| DecodeError::BadInteger { at })?;
        let end = self
            .pos
            .checked_add(len)
            .ok_or(DecodeError::UnexpectedEnd)?;
        let b = self
            .input
            .get(self.pos..end)
            .ok_or(DecodeError::UnexpectedEnd)?;
        self.pos = end;
        Ok(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn value_strategy() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            any::<i64>().prop_map(Value::Int),
            proptest::collection::vec(any::<u8>(), 0..24).prop_map(Value::Bytes),
        ];
        leaf.prop_recursive(4, 64, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::List),
                proptest::collection::btree_map(
                    proptest::collection::vec(any::<u8>(), 0..8),
                    inner,
                    0..6
                )
                .prop_map(Value::Dict),
            ]
        })
    }

    proptest! {
        #[test]
        fn round_trip(v in value_strategy()) {
            prop_assert_eq!(decode(&v.to_bytes()).unwrap(), v);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn every_truncation_is_an_error(v in value_strategy()) {
            let bytes = v.to_bytes();
            for cut in 0..bytes.len() {
                prop_assert!(decode(&bytes[..cut]).is_err());
            }
        }
    }

    #[test]
    fn rejects_each_malformed_class() {
        assert_eq!(decode(b"i03e"), Err(DecodeError::BadInteger { at: 1 }));
        assert_eq!(decode(b"i-0e"), Err(DecodeError::BadInteger { at: 1 }));
        assert_eq!(decode(b"ie"), Err(DecodeError::BadInteger { at: 1 }));
        assert_eq!(
            decode(b"i99999999999999999999e"),
            Err(DecodeError::BadInteger { at: 1 })
        );
        assert_eq!(decode(b"5:abc"), Err(DecodeError::UnexpectedEnd));
        assert_eq!(
            decode(b"d1:bi1e1:ai2ee"),
            Err(DecodeError::UnsortedKeys { at: 7 })
        );
        assert_eq!(
            decode(b"d1:ai1e1:ai2ee"),
            Err(DecodeError::UnsortedKeys { at: 7 })
        );
        assert_eq!(decode(b"i1ei2e"), Err(DecodeError::TrailingBytes { at: 3 }));
        assert_eq!(
            decode(b"x"),
            Err(DecodeError::UnexpectedByte { at: 0, byte: b'x' })
        );
        let deep = "l".repeat(100) + &"e".repeat(100);
        assert_eq!(decode(deep.as_bytes()), Err(DecodeError::TooDeep));
        assert_eq!(
            decode(b"99999999999999999999999:"),
            Err(DecodeError::BadInteger { at: 0 })
        );
    }
}
