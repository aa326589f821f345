//! `[clients]` and `[status]`: what operators of a public or private tracker ask for.

use std::num::NonZeroU64;

use serde::{Deserialize, Serialize};

/// Client rules by peer-id prefix (`tracker/clients.rs`): deny wins; with allow rules, only
/// matching clients announce. Reloaded from the file on SIGHUP.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ClientsConfig {
    pub allow: Vec<String>,
    pub deny: Vec<String>,
}

/// Whether `p` may be a client rule: 1-20 printable ASCII characters, no quote or
/// backslash (it goes into failure reasons and metric labels as it is).
pub fn valid_prefix(p: &str) -> Result<(), String> {
    if p.is_empty() || p.len() > 20 {
        return Err(format!("{p:?}: a prefix is 1 to 20 characters"));
    }
    if let Some(c) = p
        .chars()
        .find(|c| !c.is_ascii_graphic() || *c == '"' || *c == '\\')
    {
        return Err(format!("{p:?}: {c:?} cannot be part of a prefix"));
    }
    if p.chars().all(|c| c == '.') {
        // "." and ".." are path steps in a URL, not prefixes any client sends.
        return Err(format!("{p:?}: dots alone are not a prefix"));
    }
    Ok(())
}

/// The status page (`GET /` and `/api/v1/status` on the admin listener).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StatusConfig {
    /// Seconds between two samples of the request counters; the page charts the last 120.
    pub sample_secs: NonZeroU64,
}

impl Default for StatusConfig {
    fn default() -> Self {
        StatusConfig {
            sample_secs: NonZeroU64::new(30).unwrap(),
        }
    }
}
