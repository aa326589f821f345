//! `[ws]`: the WebSocket (WebTorrent) tracker.

use std::net::SocketAddr;
use std::num::{NonZeroU64, NonZeroUsize};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::validate::bad;
use super::{Config, ConfigError, TlsFiles};

/// The WebSocket tracker browsers announce to (docs/configuration.md, `[ws]`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WsConfig {
    /// Where to listen; empty (the default): no WebSocket tracker.
    #[serde(deserialize_with = "super::forms::one_or_many")]
    pub bind: Vec<SocketAddr>,
    /// PEM chain and key: `wss://`, reloaded like the HTTP tracker's.
    #[serde(with = "super::forms::path")]
    pub tls_cert_path: Option<PathBuf>,
    #[serde(with = "super::forms::path")]
    pub tls_key_path: Option<PathBuf>,
    /// Page origins (`https://example.org`) whose scripts may connect; empty: any.
    pub allowed_origins: Vec<String>,
    /// Open connections per listener; more are closed at once and counted.
    pub max_connections: NonZeroUsize,
    /// Open connections from one client address (after trusted proxies).
    pub max_connections_per_ip: NonZeroUsize,
    /// Everything a connection must send before it is served (PROXY header, TLS
    /// handshake, WebSocket upgrade) must arrive within this, in milliseconds.
    pub handshake_timeout_ms: NonZeroU64,
    /// A connection that sends nothing for this long is closed, in milliseconds (above
    /// `announce.interval`: clients announce once per interval).
    pub idle_timeout_ms: NonZeroU64,
    /// A connection that does not take a frame within this is closed, in milliseconds.
    pub write_timeout_ms: NonZeroU64,
    /// The largest message (and frame) a client may send, in bytes.
    pub max_message_bytes: NonZeroUsize,
    /// Peers one connection may announce, and distinct peer ids it may use (a browser
    /// pools one socket per tracker for all its torrents).
    pub max_torrents_per_connection: NonZeroUsize,
    /// Offers relayed per announce; more are ignored.
    pub max_offers: NonZeroUsize,
    /// An offer's answer is relayed only within this, in milliseconds.
    pub offer_timeout_ms: NonZeroU64,
    /// Frames waiting for a slow reader; past it, frames to it are dropped and counted.
    pub max_queued_frames: NonZeroUsize,
    /// The same in bytes: what a reader that stopped reading can make this node hold.
    pub max_queued_bytes: NonZeroUsize,
}

impl Default for WsConfig {
    fn default() -> Self {
        WsConfig {
            bind: Vec::new(),
            tls_cert_path: None,
            tls_key_path: None,
            allowed_origins: Vec::new(),
            max_connections: NonZeroUsize::new(10_000).unwrap(),
            max_connections_per_ip: NonZeroUsize::new(32).unwrap(),
            handshake_timeout_ms: NonZeroU64::new(10_000).unwrap(),
            idle_timeout_ms: NonZeroU64::new(300_000).unwrap(),
            write_timeout_ms: NonZeroU64::new(10_000).unwrap(),
            max_message_bytes: NonZeroUsize::new(64 * 1024).unwrap(),
            max_torrents_per_connection: NonZeroUsize::new(256).unwrap(),
            max_offers: NonZeroUsize::new(10).unwrap(),
            offer_timeout_ms: NonZeroU64::new(50_000).unwrap(),
            max_queued_frames: NonZeroUsize::new(256).unwrap(),
            max_queued_bytes: NonZeroUsize::new(1 << 20).unwrap(),
        }
    }
}

impl WsConfig {
    pub fn tls(&self) -> Option<TlsFiles> {
        TlsFiles::of(
            &self.tls_cert_path,
            &self.tls_key_path,
            ("ws.tls_cert_path", "ws.tls_key_path"),
        )
    }
}

impl Config {
    pub(super) fn validate_ws(&self) -> Result<(), ConfigError> {
        let w = &self.ws;
        if w.tls_cert_path.is_none() != w.tls_key_path.is_none() {
            return bad(
                "ws.tls_cert_path",
                "must be set together with ws.tls_key_path".into(),
            );
        }
        if w.idle_timeout_ms.get() <= u64::from(self.announce.interval.get()) * 1000 {
            return bad(
                "ws.idle_timeout_ms",
                format!(
                    "{} ms is not above announce.interval ({} s): every client would be cut between two announces",
                    w.idle_timeout_ms, self.announce.interval
                ),
            );
        }
        if w.max_torrents_per_connection.get() > usize::from(u16::MAX) {
            return bad(
                "ws.max_torrents_per_connection",
                "above 65535 (a connection's peers are numbered in 16 bits)".into(),
            );
        }
        if w.max_queued_bytes < w.max_message_bytes {
            return bad(
                "ws.max_queued_bytes",
                "below ws.max_message_bytes: the largest offer could never be queued".into(),
            );
        }
        if w.max_message_bytes.get() < 1024 {
            return bad(
                "ws.max_message_bytes",
                "below 1024 bytes no offer fits".into(),
            );
        }
        for o in &w.allowed_origins {
            if !(o.starts_with("http://") || o.starts_with("https://")) || o.ends_with('/') {
                return bad(
                    "ws.allowed_origins",
                    format!(
                        "'{o}' is not an origin like https://example.org (scheme, host, port; no path)"
                    ),
                );
            }
        }
        Ok(())
    }
}
