//! Persistence: narrow store traits, one sqlx driver per backend, embedded migrations.
//! Nothing here is on the announce path: the flusher and start-up call it.

use std::fmt;
use std::future::Future;

use protocol::InfoHash;

mod sqlite;
mod url;

pub use sqlite::SqliteStore;
pub use url::{Backend, DatabaseUrl};

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
    #[error("row {what}: {detail}")]
    BadRow { what: &'static str, detail: String },
}

/// Applies and reports this binary's embedded migrations.
pub trait SchemaMigrator {
    /// Applies pending migrations. Refuses a database whose history holds a migration this
    /// binary does not know, or one whose applied migration has changed.
    fn migrate(&self) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// Download counts: per torrent and the global total.
pub trait TorrentMetricsStore {
    fn load_torrent_downloads(&self, h: &InfoHash) -> impl Future<Output = Result<Option<u64>, StoreError>> + Send;
    fn save_torrent_downloads(&self, h: &InfoHash, n: u64) -> impl Future<Output = Result<(), StoreError>> + Send;
    fn increase_downloads_for_torrent(&self, h: &InfoHash) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Streams every persisted count into `sink`, never holding the table in memory.
    fn load_all_torrents_downloads<F>(&self, sink: F) -> impl Future<Output = Result<u64, StoreError>> + Send
    where
        F: FnMut(InfoHash, u64) + Send;
    /// Adds each delta to its torrent and their sum to the global total, in one transaction.
    /// Deltas are added, never assigned, so several nodes flushing to one database add up.
    fn add_downloads(&self, deltas: &[(InfoHash, u64)]) -> impl Future<Output = Result<(), StoreError>> + Send;
    fn load_global_downloads(&self) -> impl Future<Output = Result<Option<u64>, StoreError>> + Send;
    fn save_global_downloads(&self, n: u64) -> impl Future<Output = Result<(), StoreError>> + Send;
    fn increase_global_downloads(&self, by: u64) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// Everything a running tracker needs from its database.
pub trait Store: SchemaMigrator + TorrentMetricsStore + Send + Sync + 'static {
    /// A cheap round trip, for `/health`.
    fn ping(&self) -> impl Future<Output = Result<(), StoreError>> + Send;
    fn close(&self) -> impl Future<Output = ()> + Send;
    fn driver(&self) -> &'static str;
}

/// Counts are u64 in Shoal and signed 64-bit in every SQL backend.
fn to_db(n: u64) -> Result<i64, StoreError> {
    i64::try_from(n).map_err(|_| StoreError::BadRow { what: "count", detail: format!("{n} exceeds 2^63-1") })
}

fn from_db(what: &'static str, n: i64) -> Result<u64, StoreError> {
    u64::try_from(n).map_err(|_| StoreError::BadRow { what, detail: format!("negative value {n}") })
}

fn hash_from_db(b: &[u8]) -> Result<InfoHash, StoreError> {
    InfoHash::from_slice(b).ok_or_else(|| StoreError::BadRow { what: "info_hash", detail: format!("{} bytes, expected 20", b.len()) })
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}
