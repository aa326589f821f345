//! How values are written in TOML and the environment: database URLs (printed redacted),
//! optional paths (`""` for none), networks (a bare address is its own /32 or /128), and
//! one address or a list.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub(super) fn redacted_url<S: Serializer>(
    url: &store::DatabaseUrl,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.serialize_str(&url.redacted())
}

pub(super) fn database_url<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<store::DatabaseUrl, D::Error> {
    let text = String::deserialize(d)?;
    store::DatabaseUrl::parse(&text).map_err(serde::de::Error::custom)
}

/// An optional file's path, written `""` when there is none (as the documented defaults and
/// the environment spell it), so every key has a default to check names and types against.
pub(super) mod path {
    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
        let s = String::deserialize(d)?;
        Ok((!s.is_empty()).then(|| PathBuf::from(s)))
    }

    pub fn serialize<S: Serializer>(p: &Option<PathBuf>, s: S) -> Result<S::Ok, S::Error> {
        match p {
            Some(p) => p.serialize(s),
            None => s.serialize_str(""),
        }
    }
}

/// Networks as CIDRs; a bare address is its own /32 or /128.
pub(super) mod nets {
    use super::*;
    use ipnet::IpNet;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpNet>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|s| {
                s.parse::<IpNet>()
                    .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
                    .map_err(|_| {
                        serde::de::Error::custom(format!(
                            "{s:?} is neither an address nor a CIDR such as 10.0.0.0/8"
                        ))
                    })
            })
            .collect()
    }

    pub fn serialize<S: Serializer>(nets: &[IpNet], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(nets.iter().map(|n| n.to_string()))
    }
}

pub(super) fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<SocketAddr>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    let list = match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    };
    list.iter()
        .map(|s| {
            s.parse().map_err(|_| {
                serde::de::Error::custom(format!(
                    "'{s}' is not an address like 0.0.0.0:6969 or [::]:6969"
                ))
            })
        })
        .collect()
}
