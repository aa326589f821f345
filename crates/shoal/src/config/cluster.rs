//! `[cluster]`: several nodes on one Redis/Valkey stream and one SQL database.

use std::num::{NonZeroU64, NonZeroUsize};

use serde::{Deserialize, Serialize, Serializer};

use super::validate::bad;
use super::{Config, ConfigError, Secret};

/// Several nodes on one Redis/Valkey stream and one SQL database (docs/scaling.md).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// `redis://` or `rediss://`; empty: one node.
    #[serde(serialize_with = "redacted_text")]
    pub redis_url: Secret,
    /// PEM file of the CA that signed a `rediss://` server's certificate, when it is not in
    /// the system's trust store; empty: the system's.
    pub redis_ca_cert_path: String,
    /// Unique per node; empty: random at start.
    pub node_id: String,
    /// Shared by every node, so a connection id from one is valid on all.
    pub secret: Secret,
    /// The secret before the last rotation, accepted for connection ids until removed.
    pub previous_secret: Secret,
    /// How often this node's peer changes go on the bus, in milliseconds.
    pub batch_ms: NonZeroU64,
    /// Changes waiting while the bus is away; past it they are dropped and counted.
    pub max_backlog: NonZeroUsize,
    /// How long a starting node may take to read the stream before it serves as degraded
    /// (`/health` 200, the reason shown) instead of catching up (503), in milliseconds.
    pub catch_up_timeout_ms: NonZeroU64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            redis_url: Secret::default(),
            redis_ca_cert_path: String::new(),
            node_id: String::new(),
            secret: Secret::default(),
            previous_secret: Secret::default(),
            batch_ms: NonZeroU64::new(100).unwrap(),
            max_backlog: NonZeroUsize::new(1_000_000).unwrap(),
            catch_up_timeout_ms: NonZeroU64::new(5_000).unwrap(),
        }
    }
}

impl ClusterConfig {
    pub fn enabled(&self) -> bool {
        !self.redis_url.expose().is_empty()
    }
}

fn redacted_text<S: Serializer>(url: &Secret, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&store::redact_url(url.expose()))
}

impl Config {
    pub(super) fn validate_cluster(&self) -> Result<(), ConfigError> {
        let c = &self.cluster;
        let url = c.redis_url.expose();
        if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
            return bad(
                "cluster.redis_url",
                format!(
                    "{} is not a redis:// or rediss:// URL",
                    store::redact_url(url)
                ),
            );
        }
        if self.database.url.backend().ok() == Some(store::Backend::Sqlite) {
            return bad(
                "cluster.redis_url",
                "is set while database.url is SQLite: SQLite is one node's file, and every node of a cluster must flush into one shared PostgreSQL or MySQL/MariaDB database".into(),
            );
        }
        if !c.redis_ca_cert_path.is_empty() {
            if !url.starts_with("rediss://") {
                return bad(
                    "cluster.redis_ca_cert_path",
                    "is set but cluster.redis_url is not a rediss:// (TLS) URL".into(),
                );
            }
            if let Err(e) = std::fs::read(&c.redis_ca_cert_path) {
                return bad(
                    "cluster.redis_ca_cert_path",
                    format!("cannot read {}: {e}", c.redis_ca_cert_path),
                );
            }
        }
        if c.secret.expose().is_empty() {
            return bad(
                "cluster.secret",
                "must be set (the same on every node) when cluster.redis_url is: without it a connection id from one node is refused by the others".into(),
            );
        }
        // Leases are renewed every half timeout; the swarm times them in a few bits.
        if self.announce.peer_timeout / 2 >= swarm::MAX_LEASE_EVERY {
            return bad(
                "announce.peer_timeout",
                format!(
                    "must be below {} seconds in a cluster (the swarm times a lease, half a timeout, in 15 bits)",
                    2 * swarm::MAX_LEASE_EVERY
                ),
            );
        }
        Ok(())
    }
}
