//! Request bodies of the admin API, parsed from raw bytes. It depends on nothing but
//! `protocol`, `serde` and `serde_json`, so the fuzz target compiles this very file.

use protocol::Key;
use serde::Deserialize;

/// What `POST /api/v1/keys` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NewKey {
    /// A random key; `None` never expires.
    Generate { valid_for_secs: Option<u64> },
    /// A given key with its expiry (`None` never expires; a past one is stored as it is).
    Import { key: Key, valid_until: Option<i64> },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    valid_for_secs: Option<u64>,
    key: Option<String>,
    #[serde(default, deserialize_with = "present")]
    valid_until: Option<Option<i64>>,
}

/// Tells `"valid_until": null` (present, never expires) from an absent field.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<i64>>, D::Error> {
    Option::<i64>::deserialize(d).map(Some)
}

/// Parses a body: `{}` (or nothing), `{"valid_for_secs": N}`, or
/// `{"key": "...", "valid_until": T|null}`. The error is a sentence for a 400 response.
pub fn parse_new_key(body: &[u8]) -> Result<NewKey, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(NewKey::Generate {
            valid_for_secs: None,
        });
    }
    let b: Body = serde_json::from_slice(body).map_err(|e| format!("malformed JSON body: {e}"))?;
    match (b.key, b.valid_for_secs, b.valid_until) {
        (Some(_), Some(_), _) => {
            Err("give either key (to import) or valid_for_secs (to generate), not both".into())
        }
        (None, _, Some(_)) => Err(
            "valid_until is only for importing a key; use valid_for_secs to generate one".into(),
        ),
        (Some(raw), None, valid_until) => {
            let key = raw.parse().map_err(|e| format!("malformed key: {e}"))?;
            Ok(NewKey::Import {
                key,
                valid_until: valid_until.flatten(),
            })
        }
        (None, Some(0), None) => Err("valid_for_secs must be at least 1".into()),
        (None, Some(n), None) if i64::try_from(n).is_err() => {
            Err("valid_for_secs is too large".into())
        }
        (None, lifetime, None) => Ok(NewKey::Generate {
            valid_for_secs: lifetime,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies() {
        assert_eq!(
            parse_new_key(b""),
            Ok(NewKey::Generate {
                valid_for_secs: None
            })
        );
        assert_eq!(
            parse_new_key(b"{}"),
            Ok(NewKey::Generate {
                valid_for_secs: None
            })
        );
        assert_eq!(
            parse_new_key(br#"{"valid_for_secs": 60}"#),
            Ok(NewKey::Generate {
                valid_for_secs: Some(60)
            })
        );
        let k = "abcdefghijklmnopqrstuvwxyz012345";
        assert_eq!(
            parse_new_key(format!(r#"{{"key": "{k}", "valid_until": null}}"#).as_bytes()),
            Ok(NewKey::Import {
                key: k.parse().unwrap(),
                valid_until: None
            })
        );
        for bad in [
            &br#"{"valid_for_secs": 0}"#[..],
            br#"{"x": 1}"#,
            b"[",
            br#"{"key": "short"}"#,
            br#"{"valid_until": 3}"#,
            b"\xff",
        ] {
            assert!(parse_new_key(bad).is_err(), "{}", bad.escape_ascii());
        }
    }
}
