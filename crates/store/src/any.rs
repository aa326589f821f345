//! The store a URL names, chosen once at start. Callers hold an `AnyStore` and never branch
//! on the backend themselves.

use protocol::{InfoHash, Key};

use crate::copy::Transfer;
use crate::copy::{Batch, Exported, Format, Imported, Merge, Progress, TABLES, TableSum};
use crate::{
    AuthKey, AuthKeyStore, Backend, ClientRule, ClientRuleStore, Connection, DatabaseUrl, Foreign,
    MigrationInfo, MySqlStore, PgStore, SchemaMigrator, SqliteStore, StoreError,
    TorrentMetricsStore, WhitelistEntry, WhitelistStore,
};

#[derive(Clone)]
pub enum AnyStore {
    Sqlite(SqliteStore),
    Postgres(PgStore),
    MySql(MySqlStore),
}

impl AnyStore {
    /// Opens the database the URL names, with a pool of at most `max_connections`. Does not
    /// touch the schema; call `migrate` for that.
    pub async fn open(url: &DatabaseUrl, max_connections: u32) -> Result<Self, StoreError> {
        Ok(match url.backend()? {
            Backend::Sqlite => AnyStore::Sqlite(SqliteStore::open(url, max_connections).await?),
            Backend::Postgres => AnyStore::Postgres(PgStore::open(url, max_connections).await?),
            Backend::MySql => AnyStore::MySql(MySqlStore::open(url, max_connections).await?),
        })
    }

    /// Opens a database to copy from, in a way that cannot write to it where the backend
    /// allows (SQLite read-only, PostgreSQL read-only transactions); never creates a file.
    pub async fn open_read_only(url: &DatabaseUrl) -> Result<Self, StoreError> {
        Ok(match url.backend()? {
            Backend::Sqlite => AnyStore::Sqlite(SqliteStore::open_read_only(url).await?),
            Backend::Postgres => AnyStore::Postgres(PgStore::open_read_only(url).await?),
            Backend::MySql => AnyStore::MySql(MySqlStore::open_read_only(url).await?),
        })
    }
}

/// Runs `$call` on whichever backend this store is, with `$s` bound to it.
macro_rules! on_backend {
    ($self:ident, $s:ident => $call:expr) => {
        match $self {
            AnyStore::Sqlite($s) => $call,
            AnyStore::Postgres($s) => $call,
            AnyStore::MySql($s) => $call,
        }
    };
}

impl SchemaMigrator for AnyStore {
    async fn migrate(&self) -> Result<(), StoreError> {
        on_backend!(self, s => s.migrate().await)
    }
    async fn migration_status(&self) -> Result<Vec<MigrationInfo>, StoreError> {
        on_backend!(self, s => s.migration_status().await)
    }
    async fn foreign(&self) -> Result<Option<Foreign>, StoreError> {
        on_backend!(self, s => s.foreign().await)
    }
}

impl TorrentMetricsStore for AnyStore {
    async fn load_torrent_downloads(&self, h: &InfoHash) -> Result<Option<u64>, StoreError> {
        on_backend!(self, s => s.load_torrent_downloads(h).await)
    }
    async fn save_torrent_downloads(&self, h: &InfoHash, n: u64) -> Result<(), StoreError> {
        on_backend!(self, s => s.save_torrent_downloads(h, n).await)
    }
    async fn increase_downloads_for_torrent(&self, h: &InfoHash) -> Result<(), StoreError> {
        on_backend!(self, s => s.increase_downloads_for_torrent(h).await)
    }
    async fn load_all_torrents_downloads<F>(&self, sink: F) -> Result<u64, StoreError>
    where
        F: FnMut(InfoHash, u64) + Send,
    {
        on_backend!(self, s => s.load_all_torrents_downloads(sink).await)
    }
    async fn add_downloads(&self, deltas: &[(InfoHash, u64)]) -> Result<(), StoreError> {
        on_backend!(self, s => s.add_downloads(deltas).await)
    }
    async fn load_global_downloads(&self) -> Result<Option<u64>, StoreError> {
        on_backend!(self, s => s.load_global_downloads().await)
    }
    async fn save_global_downloads(&self, n: u64) -> Result<(), StoreError> {
        on_backend!(self, s => s.save_global_downloads(n).await)
    }
    async fn increase_global_downloads(&self, by: u64) -> Result<(), StoreError> {
        on_backend!(self, s => s.increase_global_downloads(by).await)
    }
}

impl WhitelistStore for AnyStore {
    async fn add_info_hash_to_whitelist(&self, e: &WhitelistEntry) -> Result<(), StoreError> {
        on_backend!(self, s => s.add_info_hash_to_whitelist(e).await)
    }
    async fn get_info_hash_from_whitelist(
        &self,
        h: &InfoHash,
    ) -> Result<Option<WhitelistEntry>, StoreError> {
        on_backend!(self, s => s.get_info_hash_from_whitelist(h).await)
    }
    async fn remove_info_hash_from_whitelist(&self, h: &InfoHash) -> Result<bool, StoreError> {
        on_backend!(self, s => s.remove_info_hash_from_whitelist(h).await)
    }
    async fn load_whitelist(&self) -> Result<Vec<WhitelistEntry>, StoreError> {
        on_backend!(self, s => s.load_whitelist().await)
    }
}

impl AuthKeyStore for AnyStore {
    async fn add_key_to_keys(&self, k: &AuthKey) -> Result<(), StoreError> {
        on_backend!(self, s => s.add_key_to_keys(k).await)
    }
    async fn get_key_from_keys(&self, k: &Key) -> Result<Option<AuthKey>, StoreError> {
        on_backend!(self, s => s.get_key_from_keys(k).await)
    }
    async fn remove_key_from_keys(&self, k: &Key) -> Result<bool, StoreError> {
        on_backend!(self, s => s.remove_key_from_keys(k).await)
    }
    async fn load_keys(&self) -> Result<Vec<AuthKey>, StoreError> {
        on_backend!(self, s => s.load_keys().await)
    }
}

impl ClientRuleStore for AnyStore {
    async fn add_client_rule(&self, r: &ClientRule) -> Result<(), StoreError> {
        on_backend!(self, s => s.add_client_rule(r).await)
    }
    async fn remove_client_rule(&self, prefix: &str) -> Result<bool, StoreError> {
        on_backend!(self, s => s.remove_client_rule(prefix).await)
    }
    async fn load_client_rules(&self) -> Result<Vec<ClientRule>, StoreError> {
        on_backend!(self, s => s.load_client_rules().await)
    }
}

impl Connection for AnyStore {
    async fn ping(&self) -> Result<(), StoreError> {
        on_backend!(self, s => s.ping().await)
    }
    async fn close(&self) {
        on_backend!(self, s => s.close().await)
    }
    fn driver(&self) -> &'static str {
        on_backend!(self, s => s.driver())
    }
    async fn server_version(&self) -> Result<String, StoreError> {
        on_backend!(self, s => s.server_version().await)
    }
    async fn identity(&self) -> Result<String, StoreError> {
        let id = on_backend!(self, s => s.identity().await)?;
        match self {
            // Device and inode: one file however its path is spelled, links included.
            AnyStore::Sqlite(_) if !id.is_empty() => {
                use std::os::unix::fs::MetadataExt;
                let m =
                    std::fs::metadata(&id).map_err(|e| StoreError::Copy(format!("{id}: {e}")))?;
                Ok(format!("sqlite:{}:{}", m.dev(), m.ino()))
            }
            _ => Ok(id),
        }
    }
}

impl Transfer for AnyStore {
    async fn export(
        &self,
        format: Format,
        skip_invalid: bool,
        now: i64,
        out: Option<&tokio::sync::mpsc::Sender<Batch>>,
        batch_rows: usize,
    ) -> Result<[Exported; TABLES], StoreError> {
        on_backend!(self, s => s.export(format, skip_invalid, now, out, batch_rows).await)
    }
    async fn import(
        &self,
        rx: tokio::sync::mpsc::Receiver<Batch>,
        source_done: tokio::sync::oneshot::Receiver<()>,
        merge: Option<Merge>,
        before: [TableSum; TABLES],
        progress: &Progress,
    ) -> Result<Imported, StoreError> {
        on_backend!(self, s => s.import(rx, source_done, merge, before, progress).await)
    }
}
