//! The one SQL implementation of every store trait, shared by all three backends. Each backend
//! supplies a [`Dialect`]: how it writes placeholders, quotes names and spells an upsert.
//! Queries are rendered once per store, so the hot paths only clone an `Arc`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures_util::TryStreamExt;
use protocol::{InfoHash, Key};
use sqlx::migrate::{Migrate, Migrator};
use sqlx::pool::PoolOptions;
use sqlx::{
    ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Pool, QueryBuilder, Row, Type,
};

use crate::{
    AuthKey, AuthKeyStore, Connection, DOWNLOADS_TOTAL, DatabaseUrl, Foreign, MigrationInfo,
    MigrationState, SchemaMigrator, StoreError, TorrentMetricsStore, WhitelistEntry,
    WhitelistStore, from_db, hash_from_db, to_db,
};

/// What differs between backends. Everything else is written once, below. The defaults are
/// standard SQL, as SQLite and PostgreSQL speak it.
pub trait Dialect: Database {
    const DRIVER: &'static str;
    fn migrator() -> &'static Migrator;
    /// Portable SQL uses `?` placeholders and backtick-quoted names; this turns it into the
    /// backend's own.
    fn render(portable: &str) -> String {
        portable.replace('`', "\"")
    }
    /// The clause that turns an INSERT into an update of the row with the same `pk`.
    fn on_conflict_update(pk: &str) -> String {
        format!("ON CONFLICT ({pk}) DO UPDATE SET")
    }
    /// The value the INSERT tried to write into `col`, inside that clause.
    fn inserted(col: &str) -> String {
        format!("excluded.{col}")
    }
    /// Returns the server's version as text.
    const VERSION_QUERY: &'static str = "SELECT version()";
    /// The larger of two values, as an SQL function name.
    const GREATEST: &'static str = "GREATEST";
    /// The type name for `CAST(x AS …)` to a signed 64-bit integer.
    const BIGINT: &'static str = "BIGINT";
    /// A query with one placeholder, the table name, counting tables of that name in the
    /// current database.
    const TABLE_EXISTS: &'static str;
    /// sqlx has no shared trait for query results; each backend's type has this method.
    fn rows_affected(r: &Self::QueryResult) -> u64;
    /// Run once a database is known to be Shoal's, before its first migration: settings
    /// that write to the database itself (SQLite's journal mode lives in its file header).
    const ADOPT: Option<&'static str> = None;
    /// Run first in a transaction that must read every table as of one moment, where
    /// `BEGIN` alone does not (SQLite's and InnoDB's default transactions already do).
    const SNAPSHOT: Option<&'static str> = None;
    /// One text value naming the database itself, whatever URL reached it: two URLs whose
    /// answers are equal lead to the same data.
    const IDENTITY_QUERY: &'static str;
}

/// Renders `?` as `$1, $2, …` for PostgreSQL.
pub(crate) fn numbered_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut n = 0;
    for c in sql.chars() {
        if c == '?' {
            n += 1;
            out.push('$');
            out.push_str(&n.to_string());
        } else {
            out.push(c);
        }
    }
    out
}

/// Rows per multi-row INSERT: 2 parameters each stays far below every backend's limit.
const BATCH_ROWS: usize = 1000;

/// A store on one sqlx pool; `SqliteStore`, `PgStore` and `MySqlStore` are this type.
pub struct SqlStore<DB: Database> {
    pub(crate) pool: Pool<DB>,
    q: Arc<Queries>,
}

impl<DB: Database> Clone for SqlStore<DB> {
    fn clone(&self) -> Self {
        SqlStore {
            pool: self.pool.clone(),
            q: self.q.clone(),
        }
    }
}

impl<DB: Dialect> SqlStore<DB> {
    /// Opens the pool with one connection up front, so a wrong address or password fails
    /// here, naming the URL without its password.
    pub(crate) async fn connect(
        url: &DatabaseUrl,
        options: Result<<DB::Connection as sqlx::Connection>::Options, sqlx::Error>,
        max_connections: u32,
    ) -> Result<Self, StoreError> {
        let connect_err = |source| StoreError::Connect {
            url: url.redacted(),
            source,
        };
        let pool = PoolOptions::<DB>::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(Duration::from_secs(5))
            // sqlx would ping every connection before each query, doubling the round trips;
            // a dead connection fails its query instead, and callers retry.
            .test_before_acquire(false)
            .connect_with(options.map_err(connect_err)?)
            .await
            .map_err(connect_err)?;
        Ok(SqlStore {
            pool,
            q: Arc::new(Queries::new::<DB>()),
        })
    }

    /// The pool, for backend-specific work such as bulk copies.
    pub fn pool(&self) -> &Pool<DB> {
        &self.pool
    }
}

/// Turns sqlx's migration errors into messages an operator can act on.
pub(crate) fn explain_migrate_error(e: sqlx::migrate::MigrateError) -> StoreError {
    use sqlx::migrate::MigrateError;
    StoreError::Migrate(match e {
        MigrateError::VersionMissing(v) => format!(
            "the database has migration {v}, which this shoal does not know: it was written by a newer shoal; run that version or newer"
        ),
        MigrateError::VersionMismatch(v) => format!(
            "applied migration {v} differs from the one built into this shoal (checksum mismatch); shipped migrations must never be edited"
        ),
        MigrateError::Dirty(v) => {
            format!("migration {v} was left partially applied; repair it by hand before starting")
        }
        other => other.to_string(),
    })
}

/// Sorts and merges deltas: one row per torrent (PostgreSQL refuses to update a row twice in
/// one statement) and a fixed lock order, so concurrent flushers from several nodes cannot
/// deadlock each other.
fn merged(deltas: &[(InfoHash, u64)]) -> Result<Vec<(InfoHash, i64)>, StoreError> {
    let mut by_hash: BTreeMap<InfoHash, u64> = BTreeMap::new();
    for (h, d) in deltas {
        let slot = by_hash.entry(*h).or_default();
        *slot = slot.checked_add(*d).ok_or_else(|| StoreError::BadRow {
            what: "count",
            detail: "delta overflows u64".into(),
        })?;
    }
    by_hash
        .into_iter()
        .map(|(h, d)| Ok((h, to_db(d)?)))
        .collect()
}

mod queries;
mod rows;
mod rules;
mod torrust;
mod transfer;

use queries::Queries;
use rows::{key_row, whitelist_row};

// Each store trait is implemented once for every backend. The where-clauses say "this backend
// can run these queries with these Rust types": Rust cannot imply them from `Dialect`, so each
// impl lists what its own queries bind and read.

impl<DB: Dialect> SchemaMigrator for SqlStore<DB>
where
    for<'c> &'c mut <DB as Database>::Connection: Executor<'c, Database = DB>,
    <DB as Database>::Arguments: IntoArguments<DB>,
    <DB as Database>::Connection: Migrate,
    for<'q> i64: Decode<'q, DB> + Type<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> Vec<u8>: Decode<'q, DB> + Type<DB>,
    for<'q> String: Decode<'q, DB> + Type<DB>,
    for<'q> bool: Decode<'q, DB> + Type<DB>,
    usize: ColumnIndex<<DB as Database>::Row>,
{
    async fn migrate(&self) -> Result<(), StoreError> {
        // A database this binary refuses is refused here, before anything is written to it:
        // not a row, not a lock, not a journal mode.
        let status = self.migration_status().await?;
        if let Some(found) = self.foreign_in(&status).await? {
            return Err(StoreError::Foreign(found));
        }
        use sqlx::migrate::MigrateError;
        for m in &status {
            let refused = match m.state {
                MigrationState::Unknown | MigrationState::Torrust => {
                    MigrateError::VersionMissing(m.version)
                }
                MigrationState::Changed => MigrateError::VersionMismatch(m.version),
                MigrationState::Dirty => MigrateError::Dirty(m.version),
                MigrationState::Applied | MigrationState::Pending => continue,
            };
            return Err(explain_migrate_error(refused));
        }
        if let Some(sql) = DB::ADOPT {
            sqlx::query(sql).execute(&self.pool).await?;
        }
        let mut conn = self.pool.acquire().await?;
        // run_direct, not run: the latter trips a higher-ranked `Send` limit of the compiler.
        let result = DB::migrator().run_direct(None, &mut *conn, false).await;
        if result.is_err() {
            // sqlx keeps its session-level migration lock when it refuses a history; a pooled
            // connection would hand that lock to the next caller, so this one is closed.
            conn.close_on_drop();
        }
        result.map_err(explain_migrate_error)
    }

    async fn migration_status(&self) -> Result<Vec<MigrationInfo>, StoreError> {
        let (exists,): (i64,) = sqlx::query_as(self.q.table_exists.clone())
            .bind("_sqlx_migrations")
            .fetch_one(&self.pool)
            .await?;
        let mut applied = HashMap::new();
        if exists > 0 {
            let rows = sqlx::query(self.q.applied_migrations.clone())
                .fetch_all(&self.pool)
                .await?;
            for row in rows {
                let version: i64 = row.try_get(0)?;
                let description: String = row.try_get(1)?;
                let success: bool = row.try_get(2)?;
                let checksum: Vec<u8> = row.try_get(3)?;
                applied.insert(version, (description, success, checksum));
            }
        }
        let mut out = Vec::new();
        for m in DB::migrator().iter() {
            let state = match applied.remove(&m.version) {
                None => MigrationState::Pending,
                Some((_, false, _)) => MigrationState::Dirty,
                Some((_, true, sum)) if sum != *m.checksum => MigrationState::Changed,
                Some(_) => MigrationState::Applied,
            };
            out.push(MigrationInfo {
                version: m.version,
                description: m.description.to_string(),
                state,
            });
        }
        for (version, (description, _, _)) in applied {
            let state = if description.starts_with("torrust tracker") {
                MigrationState::Torrust
            } else {
                MigrationState::Unknown
            };
            out.push(MigrationInfo {
                version,
                description,
                state,
            });
        }
        out.sort_by_key(|m| m.version);
        Ok(out)
    }

    async fn foreign(&self) -> Result<Option<Foreign>, StoreError> {
        let status = self.migration_status().await?;
        self.foreign_in(&status).await
    }
}

impl<DB: Dialect> SqlStore<DB>
where
    for<'c> &'c mut <DB as Database>::Connection: Executor<'c, Database = DB>,
    <DB as Database>::Arguments: IntoArguments<DB>,
    for<'q> i64: Decode<'q, DB> + Type<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    usize: ColumnIndex<<DB as Database>::Row>,
{
    /// A `torrents` table while shoal's first migration is not applied is someone else's:
    /// Torrust's v3 without history, v4 by its migrations' names, or unrecognised.
    async fn foreign_in(&self, status: &[MigrationInfo]) -> Result<Option<Foreign>, StoreError> {
        let (torrents,): (i64,) = sqlx::query_as(self.q.table_exists.clone())
            .bind("torrents")
            .fetch_one(&self.pool)
            .await?;
        let first = DB::migrator().iter().next().map(|m| m.version);
        let ours = status
            .iter()
            .any(|m| Some(m.version) == first && m.state != MigrationState::Pending);
        if torrents == 0 || ours {
            return Ok(None);
        }
        let theirs: Vec<i64> = status
            .iter()
            .filter(|m| m.state == MigrationState::Torrust)
            .map(|m| m.version)
            .collect();
        let others = status.iter().any(|m| m.state == MigrationState::Unknown);
        Ok(Some(match (theirs.is_empty(), others) {
            (true, false) => Foreign::TorrustV3,
            (false, false) => Foreign::TorrustV4 { migrations: theirs },
            _ => Foreign::Unrecognised,
        }))
    }
}

impl<DB: Dialect> TorrentMetricsStore for SqlStore<DB>
where
    for<'c> &'c mut <DB as Database>::Connection: Executor<'c, Database = DB>,
    <DB as Database>::Arguments: IntoArguments<DB>,
    for<'q> i64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> &'q [u8]: Encode<'q, DB> + Type<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> Vec<u8>: Decode<'q, DB> + Type<DB>,
    usize: ColumnIndex<<DB as Database>::Row>,
{
    async fn load_torrent_downloads(&self, h: &InfoHash) -> Result<Option<u64>, StoreError> {
        let row: Option<(i64,)> = sqlx::query_as(self.q.load_torrent.clone())
            .bind(&h.0[..])
            .fetch_optional(&self.pool)
            .await?;
        row.map(|(n,)| from_db("completed", n)).transpose()
    }

    async fn save_torrent_downloads(&self, h: &InfoHash, n: u64) -> Result<(), StoreError> {
        sqlx::query(self.q.save_torrent.clone())
            .bind(&h.0[..])
            .bind(to_db(n)?)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn increase_downloads_for_torrent(&self, h: &InfoHash) -> Result<(), StoreError> {
        sqlx::query(self.q.increase_torrent.clone())
            .bind(&h.0[..])
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn load_all_torrents_downloads<F>(&self, mut sink: F) -> Result<u64, StoreError>
    where
        F: FnMut(InfoHash, u64) + Send,
    {
        let mut rows = sqlx::query(self.q.load_all_torrents.clone()).fetch(&self.pool);
        let mut n = 0;
        while let Some(row) = rows.try_next().await? {
            let hash = hash_from_db(&row.try_get::<Vec<u8>, _>(0)?)?;
            sink(hash, from_db("completed", row.try_get(1)?)?);
            n += 1;
        }
        Ok(n)
    }

    async fn add_downloads(&self, deltas: &[(InfoHash, u64)]) -> Result<(), StoreError> {
        let rows = merged(deltas)?;
        if rows.is_empty() {
            return Ok(());
        }
        let total = rows
            .iter()
            .try_fold(0i64, |acc, (_, d)| acc.checked_add(*d));
        let total = total.ok_or_else(|| StoreError::BadRow {
            what: "count",
            detail: "sum of deltas exceeds 2^63-1".into(),
        })?;
        let mut conn = self.pool.acquire().await?;
        let written = async {
            let mut tx = sqlx::Connection::begin(&mut *conn).await?;
            for chunk in rows.chunks(BATCH_ROWS) {
                let mut q = QueryBuilder::<DB>::new("INSERT INTO torrents (info_hash, completed) ");
                q.push_values(chunk, |mut row, (h, d)| {
                    row.push_bind(&h.0[..]).push_bind(*d);
                });
                q.push(&self.q.add_torrents_tail);
                q.build().execute(&mut *tx).await?;
            }
            sqlx::query(self.q.add_to_counter.clone())
                .bind(DOWNLOADS_TOTAL)
                .bind(total)
                .execute(&mut *tx)
                .await?;
            tx.commit().await
        }
        .await;
        if written.is_err() {
            // SQLite rolls back by itself on SQLITE_FULL; sqlx's ROLLBACK then fails and the
            // connection keeps believing it is inside a transaction, so every later write on it
            // would vanish into a transaction nobody commits. Never reuse a connection that failed.
            let _ = conn.close().await;
        }
        written?;
        Ok(())
    }

    async fn load_global_downloads(&self) -> Result<Option<u64>, StoreError> {
        let row: Option<(i64,)> = sqlx::query_as(self.q.load_counter.clone())
            .bind(DOWNLOADS_TOTAL)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|(n,)| from_db(DOWNLOADS_TOTAL, n)).transpose()
    }

    async fn save_global_downloads(&self, n: u64) -> Result<(), StoreError> {
        sqlx::query(self.q.save_counter.clone())
            .bind(DOWNLOADS_TOTAL)
            .bind(to_db(n)?)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn increase_global_downloads(&self, by: u64) -> Result<(), StoreError> {
        sqlx::query(self.q.add_to_counter.clone())
            .bind(DOWNLOADS_TOTAL)
            .bind(to_db(by)?)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

impl<DB: Dialect> WhitelistStore for SqlStore<DB>
where
    for<'c> &'c mut <DB as Database>::Connection: Executor<'c, Database = DB>,
    <DB as Database>::Arguments: IntoArguments<DB>,
    for<'q> i64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Decode<'q, DB> + Type<DB>,
    for<'q> &'q [u8]: Encode<'q, DB> + Type<DB>,
    for<'q> Vec<u8>: Decode<'q, DB> + Type<DB>,
    for<'q> String: Decode<'q, DB> + Type<DB>,
    usize: ColumnIndex<<DB as Database>::Row>,
{
    async fn add_info_hash_to_whitelist(&self, e: &WhitelistEntry) -> Result<(), StoreError> {
        sqlx::query(self.q.whitelist_add.clone())
            .bind(&e.info_hash.0[..])
            .bind(e.added_at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn get_info_hash_from_whitelist(
        &self,
        h: &InfoHash,
    ) -> Result<Option<WhitelistEntry>, StoreError> {
        let row = sqlx::query(self.q.whitelist_get.clone())
            .bind(&h.0[..])
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(whitelist_row).transpose()
    }

    async fn remove_info_hash_from_whitelist(&self, h: &InfoHash) -> Result<bool, StoreError> {
        let done = sqlx::query(self.q.whitelist_remove.clone())
            .bind(&h.0[..])
            .execute(&self.pool)
            .await?;
        Ok(DB::rows_affected(&done) > 0)
    }

    async fn load_whitelist(&self) -> Result<Vec<WhitelistEntry>, StoreError> {
        let mut rows = sqlx::query(self.q.whitelist_load.clone()).fetch(&self.pool);
        let mut out = Vec::new();
        while let Some(row) = rows.try_next().await? {
            out.push(whitelist_row(&row)?);
        }
        Ok(out)
    }
}

impl<DB: Dialect> AuthKeyStore for SqlStore<DB>
where
    for<'c> &'c mut <DB as Database>::Connection: Executor<'c, Database = DB>,
    <DB as Database>::Arguments: IntoArguments<DB>,
    for<'q> i64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> Vec<u8>: Decode<'q, DB> + Type<DB>,
    for<'q> String: Decode<'q, DB> + Type<DB>,
    usize: ColumnIndex<<DB as Database>::Row>,
{
    async fn add_key_to_keys(&self, k: &AuthKey) -> Result<(), StoreError> {
        sqlx::query(self.q.key_add.clone())
            .bind(k.key.as_str())
            .bind(k.valid_until)
            .bind(k.created_at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn get_key_from_keys(&self, k: &Key) -> Result<Option<AuthKey>, StoreError> {
        let row = sqlx::query(self.q.key_get.clone())
            .bind(k.as_str())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(key_row).transpose()
    }

    async fn remove_key_from_keys(&self, k: &Key) -> Result<bool, StoreError> {
        let done = sqlx::query(self.q.key_remove.clone())
            .bind(k.as_str())
            .execute(&self.pool)
            .await?;
        Ok(DB::rows_affected(&done) > 0)
    }

    async fn load_keys(&self) -> Result<Vec<AuthKey>, StoreError> {
        let mut rows = sqlx::query(self.q.key_load.clone()).fetch(&self.pool);
        let mut out = Vec::new();
        while let Some(row) = rows.try_next().await? {
            out.push(key_row(&row)?);
        }
        Ok(out)
    }
}

impl<DB: Dialect> Connection for SqlStore<DB>
where
    for<'c> &'c mut <DB as Database>::Connection: Executor<'c, Database = DB>,
    <DB as Database>::Arguments: IntoArguments<DB>,
    for<'q> String: Decode<'q, DB> + Type<DB>,
    usize: ColumnIndex<<DB as Database>::Row>,
{
    async fn ping(&self) -> Result<(), StoreError> {
        // Pooled connections are not tested before use (it halves read latency), so after a
        // server restart the first query meets a dead connection, which the pool then drops.
        // Only a second failure says the server is unreachable.
        if sqlx::query("SELECT 1").execute(&self.pool).await.is_ok() {
            return Ok(());
        }
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn close(&self) {
        self.pool.close().await;
    }

    fn driver(&self) -> &'static str {
        DB::DRIVER
    }

    async fn server_version(&self) -> Result<String, StoreError> {
        Ok(sqlx::query_scalar(DB::VERSION_QUERY)
            .fetch_one(&self.pool)
            .await?)
    }

    async fn identity(&self) -> Result<String, StoreError> {
        Ok(sqlx::query_scalar(DB::IDENTITY_QUERY)
            .fetch_one(&self.pool)
            .await?)
    }
}
