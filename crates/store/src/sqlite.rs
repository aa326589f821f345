//! The embedded default: one SQLite file, WAL journal with `synchronous = FULL`, so an
//! acknowledged flush survives power loss.

use std::str::FromStr;
use std::time::Duration;

use futures_util::TryStreamExt;
use protocol::InfoHash;
use sqlx::migrate::{MigrateError, Migrator};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool};

use crate::{DOWNLOADS_TOTAL, DatabaseUrl, SchemaMigrator, Store, StoreError, TorrentMetricsStore, from_db, hash_from_db, to_db};

static MIGRATOR: Migrator = sqlx::migrate!("migrations/sqlite");

const ADD_TO_COUNTER: &str = "INSERT INTO counters (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = counters.value + excluded.value";

/// Rows per multi-row INSERT; 2 parameters each stays far below SQLite's variable limit.
const BATCH_ROWS: usize = 1000;

#[derive(Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating the file and its folder if missing) without touching the schema.
    pub async fn open(url: &DatabaseUrl, max_connections: u32) -> Result<Self, StoreError> {
        let connect_err = |source| StoreError::Connect { url: url.redacted(), source };
        if let Some(dir) = url.sqlite_path().as_deref().and_then(std::path::Path::parent) {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir).map_err(|e| connect_err(sqlx::Error::Io(e)))?;
            }
        }
        let options = SqliteConnectOptions::from_str(url.expose())
            .map_err(connect_err)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await
            .map_err(connect_err)?;
        Ok(SqliteStore { pool })
    }
}

/// Turns sqlx's migration errors into messages an operator can act on.
pub(crate) fn explain_migrate_error(e: MigrateError) -> StoreError {
    StoreError::Migrate(match e {
        MigrateError::VersionMissing(v) => format!(
            "the database has migration {v}, which this shoal does not know: it was written by a newer shoal; run that version or newer"
        ),
        MigrateError::VersionMismatch(v) => format!(
            "applied migration {v} differs from the one built into this shoal (checksum mismatch); shipped migrations must never be edited"
        ),
        MigrateError::Dirty(v) => format!("migration {v} was left partially applied; repair it by hand before starting"),
        other => other.to_string(),
    })
}

impl SchemaMigrator for SqliteStore {
    async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR.run(&self.pool).await.map_err(explain_migrate_error)
    }
}

impl TorrentMetricsStore for SqliteStore {
    async fn load_torrent_downloads(&self, h: &InfoHash) -> Result<Option<u64>, StoreError> {
        let row: Option<(i64,)> = sqlx::query_as("SELECT completed FROM torrents WHERE info_hash = ?")
            .bind(&h.0[..])
            .fetch_optional(&self.pool)
            .await?;
        row.map(|(n,)| from_db("completed", n)).transpose()
    }

    async fn save_torrent_downloads(&self, h: &InfoHash, n: u64) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO torrents (info_hash, completed) VALUES (?, ?) ON CONFLICT (info_hash) DO UPDATE SET completed = excluded.completed")
            .bind(&h.0[..])
            .bind(to_db(n)?)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn increase_downloads_for_torrent(&self, h: &InfoHash) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO torrents (info_hash, completed) VALUES (?, 1) ON CONFLICT (info_hash) DO UPDATE SET completed = torrents.completed + 1")
            .bind(&h.0[..])
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn load_all_torrents_downloads<F>(&self, mut sink: F) -> Result<u64, StoreError>
    where
        F: FnMut(InfoHash, u64) + Send,
    {
        let mut rows = sqlx::query("SELECT info_hash, completed FROM torrents").fetch(&self.pool);
        let mut n = 0;
        while let Some(row) = rows.try_next().await? {
            let hash = hash_from_db(row.try_get::<&[u8], _>(0)?)?;
            sink(hash, from_db("completed", row.try_get(1)?)?);
            n += 1;
        }
        Ok(n)
    }

    async fn add_downloads(&self, deltas: &[(InfoHash, u64)]) -> Result<(), StoreError> {
        if deltas.is_empty() {
            return Ok(());
        }
        let total = deltas.iter().try_fold(0u64, |acc, (_, d)| acc.checked_add(*d));
        let total = to_db(total.unwrap_or(u64::MAX))?;
        let rows = deltas.iter().map(|(h, d)| Ok((h, to_db(*d)?))).collect::<Result<Vec<_>, StoreError>>()?;
        let mut tx = self.pool.begin().await?;
        for chunk in rows.chunks(BATCH_ROWS) {
            let mut q = QueryBuilder::<Sqlite>::new("INSERT INTO torrents (info_hash, completed) ");
            q.push_values(chunk, |mut row, (h, d)| {
                row.push_bind(&h.0[..]).push_bind(*d);
            });
            q.push(" ON CONFLICT (info_hash) DO UPDATE SET completed = torrents.completed + excluded.completed");
            q.build().execute(&mut *tx).await?;
        }
        sqlx::query(ADD_TO_COUNTER)
            .bind(DOWNLOADS_TOTAL)
            .bind(total)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn load_global_downloads(&self) -> Result<Option<u64>, StoreError> {
        let row: Option<(i64,)> = sqlx::query_as("SELECT value FROM counters WHERE name = ?")
            .bind(DOWNLOADS_TOTAL)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|(n,)| from_db("downloads_total", n)).transpose()
    }

    async fn save_global_downloads(&self, n: u64) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO counters (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value")
            .bind(DOWNLOADS_TOTAL)
            .bind(to_db(n)?)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn increase_global_downloads(&self, by: u64) -> Result<(), StoreError> {
        sqlx::query(ADD_TO_COUNTER)
            .bind(DOWNLOADS_TOTAL)
            .bind(to_db(by)?)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

impl Store for SqliteStore {
    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn close(&self) {
        self.pool.close().await;
    }

    fn driver(&self) -> &'static str {
        "sqlite"
    }
}
