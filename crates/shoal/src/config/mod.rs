//! Configuration: one TOML file, every key overridable from `SHOAL_` environment variables
//! (`__` between levels). Errors name the key and, for the environment, the variable.

use std::fmt;
use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroU64, NonZeroUsize};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize, Serializer};

mod cluster;
mod forms;
mod operator;
mod validate;
mod ws;
pub use self::operator::{ClientsConfig, StatusConfig, valid_prefix};
pub use cluster::ClusterConfig;
pub use ws::WsConfig;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub mode: Mode,
    pub database: DatabaseConfig,
    pub udp: UdpConfig,
    pub http: HttpConfig,
    pub api: ApiConfig,
    pub announce: AnnounceConfig,
    pub limits: LimitsConfig,
    pub cluster: ClusterConfig,
    pub ws: WsConfig,
    pub clients: ClientsConfig,
    pub status: StatusConfig,
    pub log: LogConfig,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    #[default]
    Public,
    Listed,
    Private,
    PrivateListed,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// Parsed once, here; its `Debug` and what `shoal config` prints are redacted.
    #[serde(
        serialize_with = "forms::redacted_url",
        deserialize_with = "forms::database_url"
    )]
    pub url: store::DatabaseUrl,
    /// How often completed-event deltas are written, in milliseconds.
    pub flush_interval_ms: NonZeroU64,
    pub max_connections: NonZeroU32,
    /// Torrents whose download deltas may wait in memory while the database is unreachable;
    /// beyond it, increments for further torrents are dropped and counted in metrics.
    pub max_pending_torrents: NonZeroUsize,
    /// What the last flush at SIGTERM may take, retries included, in milliseconds; what it
    /// has not written by then is logged as lost. Keep it under the service's stop timeout.
    pub final_flush_timeout_ms: NonZeroU64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct UdpConfig {
    #[serde(deserialize_with = "forms::one_or_many")]
    pub bind: Vec<SocketAddr>,
    /// Receive loops per socket; 0 means one per available core.
    pub workers: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    #[serde(deserialize_with = "forms::one_or_many")]
    pub bind: Vec<SocketAddr>,
    /// Open connections per listener; more are closed at once and counted.
    pub max_connections: NonZeroUsize,
    /// Request line plus headers, in bytes; larger heads get 431 and the connection closes.
    pub max_header_bytes: usize,
    /// A request's head must arrive within this; an idle keep-alive connection closes after it.
    pub header_timeout_ms: NonZeroU64,
    /// PEM certificate chain; with `tls_key_path`, the HTTP tracker speaks HTTPS.
    #[serde(with = "forms::path")]
    pub tls_cert_path: Option<PathBuf>,
    #[serde(with = "forms::path")]
    pub tls_key_path: Option<PathBuf>,
    /// CIDRs (or bare addresses, read as /32 or /128) whose `X-Forwarded-For` or PROXY
    /// protocol header names the client.
    #[serde(with = "forms::nets")]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Lets `trusted_proxies` hold a /0 (every address may name any client): only for a
    /// tracker no client can reach except through its proxies.
    pub trust_every_address: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    pub bind: SocketAddr,
    pub token: Secret,
    /// Names (besides IP addresses and `localhost`) that a request's `Host` may carry: a
    /// browser tricked by DNS rebinding sends the attacker's name, which is refused.
    pub hosts: Vec<String>,
    /// PEM chain and key: the admin API speaks HTTPS (for a bind that is not loopback).
    #[serde(with = "forms::path")]
    pub tls_cert_path: Option<PathBuf>,
    #[serde(with = "forms::path")]
    pub tls_key_path: Option<PathBuf>,
    /// Admin connections open at once; more are closed at accept. Scrapers and scripts
    /// need a few; the cap keeps idle ones from taking the trackers' file descriptors.
    pub max_connections: NonZeroUsize,
    /// A connection must send its request (TLS handshake included) within this, and is
    /// closed after this long idle between requests.
    pub idle_timeout_ms: NonZeroU64,
}

/// A UDP datagram carries at most 65,507 bytes: a 20-byte answer header, 18 per IPv6 peer.
const MAX_NUMWANT: u32 = (65_507 - 20) / 18;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AnnounceConfig {
    /// Seconds a client should wait between announces.
    pub interval: NonZeroU32,
    pub min_interval: u32,
    /// Seconds of silence after which a peer leaves the swarm.
    pub peer_timeout: u32,
    /// Most peers one answer carries, whatever the client asks.
    pub max_numwant: NonZeroU32,
    /// Peers given when the client does not say.
    pub default_numwant: u32,
    /// A seeder gets only leechers by default: other seeders are of no use to it. `true`
    /// answers seeders from the whole swarm, as aquatic does (for like-for-like benchmarks).
    pub seeders_get_seeders: bool,
    /// Each answer's interval is `interval` plus a random part of up to this fraction of it
    /// (0.1: 120 s becomes 120-132 s), so clients that came back together drift apart.
    pub interval_jitter: f64,
}

/// What a hostile client can make the tracker hold (docs/security.md has the memory each
/// default allows). Zero is refused: it would refuse every announce.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Torrents with peers; an announce that would add one more is refused.
    pub max_torrents: NonZeroUsize,
    /// Peers in all torrents together.
    pub max_peers: NonZeroUsize,
    pub max_peers_per_torrent: NonZeroUsize,
    /// Peers from one IP address in one torrent: one address cannot crowd out a swarm.
    pub max_peers_per_ip: NonZeroUsize,
    /// Download counts held in memory (and rows in the database); past it the first
    /// download of a torrent without a count is not counted.
    pub max_counted_torrents: NonZeroUsize,
}

impl LimitsConfig {
    pub fn swarm(&self) -> swarm::Limits {
        swarm::Limits {
            max_torrents: self.max_torrents.get(),
            max_peers: self.max_peers.get(),
            max_peers_per_torrent: self.max_peers_per_torrent.get(),
            max_peers_per_ip: self.max_peers_per_ip.get(),
            max_counted_torrents: self.max_counted_torrents.get(),
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let n = |v: usize| NonZeroUsize::new(v).expect("non-zero default");
        LimitsConfig {
            max_torrents: n(2_000_000),
            max_peers: n(10_000_000),
            max_peers_per_torrent: n(100_000),
            max_peers_per_ip: n(64),
            max_counted_torrents: n(10_000_000),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A tracing filter: `info`, `debug`, `shoal=debug,sqlx=warn`, ...
    pub level: String,
    /// `text` for people, `json` (one object per line) for Loki, ELK and the like.
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// A value that never shows in `Debug`, logs or `shoal config`.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() {
            "\"\""
        } else {
            "\"<redacted>\""
        })
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(if self.0.is_empty() { "" } else { "<redacted>" })
    }
}

/// A listener's certificate chain and key (PEM files), and the config keys that named them.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub keys: (&'static str, &'static str),
}

impl TlsFiles {
    /// Both paths or none: `validate` refuses one without the other.
    fn of(
        cert: &Option<PathBuf>,
        key: &Option<PathBuf>,
        keys: (&'static str, &'static str),
    ) -> Option<TlsFiles> {
        Some(TlsFiles {
            cert: cert.clone()?,
            key: key.clone()?,
            keys,
        })
    }
}

impl HttpConfig {
    pub fn tls(&self) -> Option<TlsFiles> {
        TlsFiles::of(
            &self.tls_cert_path,
            &self.tls_key_path,
            ("http.tls_cert_path", "http.tls_key_path"),
        )
    }
}

impl ApiConfig {
    pub fn tls(&self) -> Option<TlsFiles> {
        TlsFiles::of(
            &self.tls_cert_path,
            &self.tls_key_path,
            ("api.tls_cert_path", "api.tls_key_path"),
        )
    }
}

/// Accepts `"127.0.0.1:6969"` as well as `["127.0.0.1:6969", "[::1]:6969"]`.
impl Default for Config {
    fn default() -> Self {
        Config {
            mode: Mode::Public,
            database: DatabaseConfig::default(),
            udp: UdpConfig::default(),
            http: HttpConfig::default(),
            api: ApiConfig::default(),
            announce: AnnounceConfig::default(),
            limits: LimitsConfig::default(),
            cluster: ClusterConfig::default(),
            ws: WsConfig::default(),
            clients: ClientsConfig::default(),
            status: StatusConfig::default(),
            log: LogConfig::default(),
        }
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: store::DatabaseUrl::parse("sqlite://data/shoal.db").expect("a valid default"),
            flush_interval_ms: NonZeroU64::new(1000).unwrap(),
            max_connections: NonZeroU32::new(8).unwrap(),
            max_pending_torrents: NonZeroUsize::new(1_000_000).unwrap(),
            final_flush_timeout_ms: NonZeroU64::new(8000).unwrap(),
        }
    }
}

impl Default for UdpConfig {
    fn default() -> Self {
        UdpConfig {
            bind: vec![SocketAddr::from(([0, 0, 0, 0], 6969))],
            workers: 0,
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            bind: vec![SocketAddr::from(([0, 0, 0, 0], 7070))],
            max_connections: NonZeroUsize::new(4096).unwrap(),
            max_header_bytes: 8192,
            header_timeout_ms: NonZeroU64::new(10_000).unwrap(),
            tls_cert_path: None,
            tls_key_path: None,
            trusted_proxies: Vec::new(),
            trust_every_address: false,
        }
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 1212)),
            token: Secret::default(),
            hosts: Vec::new(),
            tls_cert_path: None,
            tls_key_path: None,
            max_connections: NonZeroUsize::new(64).unwrap(),
            idle_timeout_ms: NonZeroU64::new(10_000).unwrap(),
        }
    }
}

impl Default for AnnounceConfig {
    fn default() -> Self {
        AnnounceConfig {
            interval: NonZeroU32::new(120).unwrap(),
            min_interval: 60,
            peer_timeout: 1800,
            max_numwant: NonZeroU32::new(74).unwrap(),
            default_numwant: 50,
            seeders_get_seeders: false,
            interval_jitter: 0.1,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Syntax { path: String, message: String },
    #[error("config: unknown key '{key}' in {origin}")]
    UnknownKey { key: String, origin: String },
    #[error("config key '{key}'{origin}: {message}")]
    BadValue {
        key: String,
        origin: String,
        message: String,
    },
}

/// What a loaded configuration came with besides its values.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    /// `SHOAL_` variables that name no key: worth a warning, not a refusal.
    pub ignored_env: Vec<String>,
}

pub fn load(
    file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Loaded, ConfigError> {
    let defaults = toml::Table::try_from(Config::default()).expect("defaults serialise");
    let mut merged = toml::Table::new();
    let mut origins: Vec<(String, String)> = Vec::new();

    if let Some(path) = file {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: shown.clone(),
            source,
        })?;
        let table: toml::Table =
            text.parse()
                .map_err(|e: toml::de::Error| ConfigError::Syntax {
                    path: shown.clone(),
                    message: syntax_error(&text, &e),
                })?;
        check_known(&table, &defaults, "", &shown)?;
        merged = table;
    }

    let mut ignored_env = Vec::new();
    let mut env: Vec<_> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with("SHOAL_"))
        .collect();
    env.sort();
    for (name, raw) in env {
        let path: Vec<String> = name["SHOAL_".len()..]
            .split("__")
            .map(str::to_lowercase)
            .collect();
        let Some(default) = lookup(&defaults, &path) else {
            ignored_env.push(name);
            continue;
        };
        // A string key takes the raw text; others are read as a TOML value, so that
        // `SHOAL_UDP__BIND='["127.0.0.1:6969"]'` is a list and `SHOAL_ANNOUNCE__INTERVAL=60` a number.
        let value = match default {
            toml::Value::String(_) => toml::Value::String(raw),
            _ => format!("v = {raw}")
                .parse::<toml::Table>()
                .ok()
                .and_then(|mut t| t.remove("v"))
                .unwrap_or(toml::Value::String(raw)),
        };
        insert(&mut merged, &path, value);
        origins.push((path.join("."), name));
    }

    let config: Config =
        serde_path_to_error::deserialize(toml::Value::Table(merged)).map_err(|e| {
            let key = e.path().to_string();
            let origin = origins
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, var)| format!(" (from {var})"))
                .unwrap_or_default();
            ConfigError::BadValue {
                key,
                origin,
                message: e.into_inner().to_string().trim_end().to_string(),
            }
        })?;
    config.validate()?;
    Ok(Loaded {
        config,
        ignored_env,
    })
}

/// Where the TOML went wrong and why, without the offending line: it may hold a secret
/// (a token, a database password), which docs/security.md promises never to print.
fn syntax_error(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim_end();
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!(
                "TOML syntax error at line {line}, column {column}: {message} (the line is not shown: it may hold a secret)"
            )
        }
        None => format!("TOML syntax error: {message}"),
    }
}

fn lookup<'a>(table: &'a toml::Table, path: &[String]) -> Option<&'a toml::Value> {
    let (first, rest) = path.split_first()?;
    let v = table.get(first)?;
    match (v, rest.is_empty()) {
        (_, true) => Some(v),
        (toml::Value::Table(t), false) => lookup(t, rest),
        _ => None,
    }
}

fn insert(table: &mut toml::Table, path: &[String], value: toml::Value) {
    let (first, rest) = path.split_first().expect("non-empty path");
    if rest.is_empty() {
        table.insert(first.clone(), value);
        return;
    }
    let entry = table
        .entry(first.clone())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    if !entry.is_table() {
        *entry = toml::Value::Table(toml::Table::new());
    }
    insert(
        entry.as_table_mut().expect("just made a table"),
        rest,
        value,
    );
}

/// Every key in `given` must exist in the defaults, at the same nesting.
fn check_known(
    given: &toml::Table,
    defaults: &toml::Table,
    prefix: &str,
    origin: &str,
) -> Result<(), ConfigError> {
    for (k, v) in given {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match (defaults.get(k), v) {
            (None, _) => {
                return Err(ConfigError::UnknownKey {
                    key,
                    origin: origin.to_string(),
                });
            }
            (Some(toml::Value::Table(d)), toml::Value::Table(g)) => {
                check_known(g, d, &key, origin)?
            }
            _ => {}
        }
    }
    Ok(())
}

impl Config {
    /// The effective configuration as TOML, secrets redacted.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("config serialises")
    }
}

#[cfg(test)]
mod tests;
