//! Persistence: narrow store traits, one sqlx driver per backend, embedded migrations.
//! Nothing here is on the announce path: the flusher and start-up call it.

use std::fmt;
use std::future::Future;

use protocol::{InfoHash, Key};

mod any;
pub mod copy;
mod mysql;
mod postgres;
mod sql;
mod sqlite;
mod url;

pub use any::AnyStore;
pub use mysql::MySqlStore;
pub use postgres::PgStore;
pub use sql::{Dialect, SqlStore};
pub use sqlite::SqliteStore;
pub use url::{Backend, DatabaseUrl, redact_url};

/// The name of the global download counter in `counters`.
pub const DOWNLOADS_TOTAL: &str = "downloads_total";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database url: {0}")]
    Url(String),
    #[error("cannot open {url}: {source}")]
    Connect { url: String, source: sqlx::Error },
    #[error("database schema: {0}")]
    Migrate(String),
    #[error("{0}")]
    Query(#[from] sqlx::Error),
    /// The database holds tables shoal did not create, such as Torrust Tracker's.
    #[error("{0}; shoal leaves it untouched")]
    Foreign(Foreign),
    #[error("copy: {0}")]
    Copy(String),
    #[error("row {what}: {detail}")]
    BadRow { what: &'static str, detail: String },
}

/// A database shoal did not create, as recognised by its tables and migration history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Foreign {
    /// Torrust Tracker v3: its tables, no migration history.
    TorrustV3,
    /// Torrust Tracker v4 and later: its tables and its own sqlx history (these versions).
    TorrustV4 { migrations: Vec<i64> },
    /// A `torrents` table with a history that is neither shoal's nor Torrust's.
    Unrecognised,
}

impl std::fmt::Display for Foreign {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Foreign::TorrustV3 => f.write_str(
                "this is a Torrust Tracker v3 database (its tables, no migration history)",
            ),
            Foreign::TorrustV4 { migrations } => {
                let v: Vec<String> = migrations.iter().map(i64::to_string).collect();
                write!(
                    f,
                    "this is a Torrust Tracker v4 database (Torrust's migrations {})",
                    v.join(", ")
                )
            }
            Foreign::Unrecognised => f.write_str(
                "the database has a torrents table that shoal did not create (a Torrust Tracker database?)",
            ),
        }
    }
}

/// Where a migration stands in a database, compared with the migrations built into this binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MigrationState {
    Applied,
    Pending,
    /// Applied, but its checksum differs from the shipped file: the file was edited.
    Changed,
    /// Applied, but this binary does not know it: a newer shoal wrote the database.
    Unknown,
    /// Started and never finished.
    Dirty,
    /// Torrust Tracker's own (its description starts "torrust tracker").
    Torrust,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationInfo {
    pub version: i64,
    pub description: String,
    pub state: MigrationState,
}

/// Applies and reports this binary's embedded migrations.
pub trait SchemaMigrator {
    /// Applies pending migrations. Refuses a database whose history holds a migration this
    /// binary does not know, or one whose applied migration has changed.
    fn migrate(&self) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Every migration known to the binary or the database, oldest first; writes nothing.
    fn migration_status(
        &self,
    ) -> impl Future<Output = Result<Vec<MigrationInfo>, StoreError>> + Send;
    /// Whether the database is someone else's (Torrust Tracker's); writes nothing.
    fn foreign(&self) -> impl Future<Output = Result<Option<Foreign>, StoreError>> + Send;
}

/// Download counts: per torrent and the global total.
pub trait TorrentMetricsStore {
    fn load_torrent_downloads(
        &self,
        h: &InfoHash,
    ) -> impl Future<Output = Result<Option<u64>, StoreError>> + Send;
    fn save_torrent_downloads(
        &self,
        h: &InfoHash,
        n: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    fn increase_downloads_for_torrent(
        &self,
        h: &InfoHash,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Streams every persisted count into `sink`, never holding the table in memory.
    fn load_all_torrents_downloads<F>(
        &self,
        sink: F,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send
    where
        F: FnMut(InfoHash, u64) + Send;
    /// Adds each delta to its torrent and their sum to the global total, in one transaction.
    /// Deltas are added, never assigned, so several nodes flushing to one database add up.
    fn add_downloads(
        &self,
        deltas: &[(InfoHash, u64)],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    fn load_global_downloads(&self)
    -> impl Future<Output = Result<Option<u64>, StoreError>> + Send;
    fn save_global_downloads(&self, n: u64) -> impl Future<Output = Result<(), StoreError>> + Send;
    fn increase_global_downloads(
        &self,
        by: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// A whitelisted torrent, for the listed modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WhitelistEntry {
    pub info_hash: InfoHash,
    /// Unix seconds.
    pub added_at: i64,
}

pub trait WhitelistStore {
    /// Adds the entry; an info-hash already listed keeps its original `added_at`.
    fn add_info_hash_to_whitelist(
        &self,
        e: &WhitelistEntry,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    fn get_info_hash_from_whitelist(
        &self,
        h: &InfoHash,
    ) -> impl Future<Output = Result<Option<WhitelistEntry>, StoreError>> + Send;
    /// Returns whether the info-hash was listed.
    fn remove_info_hash_from_whitelist(
        &self,
        h: &InfoHash,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
    fn load_whitelist(
        &self,
    ) -> impl Future<Output = Result<Vec<WhitelistEntry>, StoreError>> + Send;
}

/// A key for the private modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthKey {
    pub key: Key,
    /// Unix seconds; `None` never expires.
    pub valid_until: Option<i64>,
    /// Unix seconds.
    pub created_at: i64,
}

impl AuthKey {
    pub fn is_valid_at(&self, unix_secs: i64) -> bool {
        self.valid_until.is_none_or(|t| unix_secs < t)
    }
}

pub trait AuthKeyStore {
    /// Adds the key or replaces an existing one with the same value.
    fn add_key_to_keys(&self, k: &AuthKey) -> impl Future<Output = Result<(), StoreError>> + Send;
    fn get_key_from_keys(
        &self,
        k: &Key,
    ) -> impl Future<Output = Result<Option<AuthKey>, StoreError>> + Send;
    /// Returns whether the key existed.
    fn remove_key_from_keys(
        &self,
        k: &Key,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
    fn load_keys(&self) -> impl Future<Output = Result<Vec<AuthKey>, StoreError>> + Send;
}

/// Whether a client rule lets matching clients in or keeps them out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RuleKind {
    Allow,
    Deny,
}

impl RuleKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RuleKind::Allow => "allow",
            RuleKind::Deny => "deny",
        }
    }

    pub fn parse(s: &str) -> Option<RuleKind> {
        match s {
            "allow" => Some(RuleKind::Allow),
            "deny" => Some(RuleKind::Deny),
            _ => None,
        }
    }
}

/// A client rule by peer-id prefix (1-20 printable ASCII characters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientRule {
    pub prefix: String,
    pub kind: RuleKind,
    /// Unix seconds.
    pub added_at: i64,
}

/// Client rules, keyed by prefix: one prefix is either allowed or denied.
pub trait ClientRuleStore {
    /// Adds the rule, or changes the kind of the one with the same prefix (keeping its
    /// `added_at`).
    fn add_client_rule(
        &self,
        r: &ClientRule,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Returns whether the prefix had a rule.
    fn remove_client_rule(
        &self,
        prefix: &str,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
    fn load_client_rules(&self)
    -> impl Future<Output = Result<Vec<ClientRule>, StoreError>> + Send;
}

/// The connection itself: health, shutdown, name.
pub trait Connection {
    /// A cheap round trip, for `/health`.
    fn ping(&self) -> impl Future<Output = Result<(), StoreError>> + Send;
    fn close(&self) -> impl Future<Output = ()> + Send;
    fn driver(&self) -> &'static str;
    /// The server's own version string (`sqlite_version()`, `version()`).
    fn server_version(&self) -> impl Future<Output = Result<String, StoreError>> + Send;
    /// What names the database itself, however its URL is spelled: equal for two stores
    /// that reach the same data.
    fn identity(&self) -> impl Future<Output = Result<String, StoreError>> + Send;
}

/// Everything a running tracker needs from its database.
pub trait Store:
    SchemaMigrator
    + TorrentMetricsStore
    + WhitelistStore
    + AuthKeyStore
    + ClientRuleStore
    + Connection
    + Clone
    + Send
    + Sync
    + 'static
{
}

impl<T> Store for T where
    T: SchemaMigrator
        + TorrentMetricsStore
        + WhitelistStore
        + AuthKeyStore
        + ClientRuleStore
        + Connection
        + Clone
        + Send
        + Sync
        + 'static
{
}

/// Counts are u64 in Shoal and signed 64-bit in every SQL backend.
fn to_db(n: u64) -> Result<i64, StoreError> {
    i64::try_from(n).map_err(|_| StoreError::BadRow {
        what: "count",
        detail: format!("{n} exceeds 2^63-1"),
    })
}

fn from_db(what: &'static str, n: i64) -> Result<u64, StoreError> {
    u64::try_from(n).map_err(|_| StoreError::BadRow {
        what,
        detail: format!("negative value {n}"),
    })
}

fn hash_from_db(b: &[u8]) -> Result<InfoHash, StoreError> {
    InfoHash::from_slice(b).ok_or_else(|| StoreError::BadRow {
        what: "info_hash",
        detail: format!("{} bytes, expected 20", b.len()),
    })
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// Unix seconds now, as the store keeps times.
pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
