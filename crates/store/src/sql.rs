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
    AssertSqlSafe, ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Pool,
    QueryBuilder, Row, SqlSafeStr, SqlStr, Type,
};

use crate::copy::{
    Batch, Exported, Format, Imported, Item, Merge, Progress, Table, TableImport, TableSum,
};
use crate::{
    AuthKey, AuthKeyStore, Connection, DOWNLOADS_TOTAL, DatabaseUrl, MigrationInfo, MigrationState,
    SchemaMigrator, StoreError, TorrentMetricsStore, Transfer, WhitelistEntry, WhitelistStore,
    from_db, hash_from_db, to_db,
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

struct Queries {
    load_torrent: SqlStr,
    save_torrent: SqlStr,
    increase_torrent: SqlStr,
    load_all_torrents: SqlStr,
    add_torrents_tail: String,
    add_to_counter: SqlStr,
    load_counter: SqlStr,
    save_counter: SqlStr,
    whitelist_add: SqlStr,
    whitelist_get: SqlStr,
    whitelist_remove: SqlStr,
    whitelist_load: SqlStr,
    key_add: SqlStr,
    key_get: SqlStr,
    key_remove: SqlStr,
    key_load: SqlStr,
    table_exists: SqlStr,
    applied_migrations: SqlStr,
    /// Per table (in `Table::ALL` order): reads in Shoal's and in Torrust's layout.
    export: [[SqlStr; 2]; 4],
    /// Per table: `INSERT INTO t (cols) ` and the tails for no merge, add, max.
    import_head: [String; 4],
    import_tail: [[String; 3]; 4],
    /// Per table: `SELECT <row> FROM t WHERE <pk> IN ` for merges.
    existing_head: [String; 4],
}

impl Queries {
    fn new<DB: Dialect>() -> Self {
        let q =
            |portable: &str| AssertSqlSafe(Arc::<str>::from(DB::render(portable))).into_sql_str();
        let upsert = DB::on_conflict_update;
        let new = DB::inserted;
        Queries {
            load_torrent: q("SELECT completed FROM torrents WHERE info_hash = ?"),
            save_torrent: q(&format!(
                "INSERT INTO torrents (info_hash, completed) VALUES (?, ?) {} completed = {}",
                upsert("info_hash"),
                new("completed")
            )),
            increase_torrent: q(&format!(
                "INSERT INTO torrents (info_hash, completed) VALUES (?, 1) {} completed = torrents.completed + 1",
                upsert("info_hash")
            )),
            load_all_torrents: q("SELECT info_hash, completed FROM torrents"),
            add_torrents_tail: DB::render(&format!(
                " {} completed = torrents.completed + {}",
                upsert("info_hash"),
                new("completed")
            )),
            add_to_counter: q(&format!(
                "INSERT INTO counters (`name`, `value`) VALUES (?, ?) {} `value` = counters.`value` + {}",
                upsert("`name`"),
                new("`value`")
            )),
            load_counter: q("SELECT `value` FROM counters WHERE `name` = ?"),
            save_counter: q(&format!(
                "INSERT INTO counters (`name`, `value`) VALUES (?, ?) {} `value` = {}",
                upsert("`name`"),
                new("`value`")
            )),
            // Re-listing keeps the original added_at: the no-op assignment works on every backend.
            whitelist_add: q(&format!(
                "INSERT INTO whitelist (info_hash, added_at) VALUES (?, ?) {} added_at = whitelist.added_at",
                upsert("info_hash")
            )),
            whitelist_get: q("SELECT info_hash, added_at FROM whitelist WHERE info_hash = ?"),
            whitelist_remove: q("DELETE FROM whitelist WHERE info_hash = ?"),
            whitelist_load: q("SELECT info_hash, added_at FROM whitelist"),
            key_add: q(&format!(
                "INSERT INTO `keys` (`key`, valid_until, created_at) VALUES (?, ?, ?) {} valid_until = {}, created_at = {}",
                upsert("`key`"),
                new("valid_until"),
                new("created_at")
            )),
            key_get: q("SELECT `key`, valid_until, created_at FROM `keys` WHERE `key` = ?"),
            key_remove: q("DELETE FROM `keys` WHERE `key` = ?"),
            key_load: q("SELECT `key`, valid_until, created_at FROM `keys`"),
            table_exists: q(DB::TABLE_EXISTS),
            applied_migrations: q(
                "SELECT version, description, success, checksum FROM _sqlx_migrations ORDER BY version",
            ),
            export: {
                let big = DB::BIGINT;
                [
                    [
                        q("SELECT info_hash, completed FROM torrents"),
                        q(&format!(
                            "SELECT CAST(id AS {big}), info_hash, CAST(completed AS {big}) FROM torrents"
                        )),
                    ],
                    [
                        q("SELECT `name`, `value` FROM counters"),
                        q(&format!(
                            "SELECT CAST(id AS {big}), metric_name, CAST(`value` AS {big}) FROM torrent_aggregate_metrics WHERE metric_name = 'torrents_downloads_total'"
                        )),
                    ],
                    [
                        q("SELECT info_hash, added_at FROM whitelist"),
                        q(&format!(
                            "SELECT CAST(id AS {big}), info_hash FROM whitelist"
                        )),
                    ],
                    [
                        q("SELECT `key`, valid_until, created_at FROM `keys`"),
                        q(&format!(
                            "SELECT CAST(id AS {big}), `key`, CAST(valid_until AS {big}) FROM `keys`"
                        )),
                    ],
                ]
            },
            import_head: [
                "INSERT INTO torrents (info_hash, completed) ",
                "INSERT INTO counters (`name`, `value`) ",
                "INSERT INTO whitelist (info_hash, added_at) ",
                "INSERT INTO `keys` (`key`, valid_until, created_at) ",
            ]
            .map(DB::render),
            import_tail: {
                let counted = |table: &str, pk: &str, col: &str| {
                    [
                        String::new(),
                        DB::render(&format!(
                            " {} {col} = {table}.{col} + {}",
                            upsert(pk),
                            new(col)
                        )),
                        DB::render(&format!(
                            " {} {col} = {}({table}.{col}, {})",
                            upsert(pk),
                            DB::GREATEST,
                            new(col)
                        )),
                    ]
                };
                // Whitelist entries and keys already in the destination are kept as they are.
                let kept = |table: &str, pk: &str, col: &str| {
                    let keep = DB::render(&format!(" {} {col} = {table}.{col}", upsert(pk)));
                    [String::new(), keep.clone(), keep]
                };
                [
                    counted("torrents", "info_hash", "completed"),
                    counted("counters", "`name`", "`value`"),
                    kept("whitelist", "info_hash", "added_at"),
                    kept("`keys`", "`key`", "valid_until"),
                ]
            },
            existing_head: [
                "SELECT info_hash, completed FROM torrents WHERE info_hash IN ",
                "SELECT `name`, `value` FROM counters WHERE `name` IN ",
                "SELECT info_hash, added_at FROM whitelist WHERE info_hash IN ",
                "SELECT `key`, valid_until, created_at FROM `keys` WHERE `key` IN ",
            ]
            .map(DB::render),
        }
    }
}

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

/// Implements a store trait for every backend at once. The bounds say "this backend can run
/// our queries with these Rust types"; Rust cannot imply them, so they are written here once.
macro_rules! for_every_backend {
    (impl $trait:ident { $($body:tt)* }) => {
        impl<DB: Dialect> $trait for SqlStore<DB>
        where
            for<'c> &'c mut <DB as Database>::Connection: Executor<'c, Database = DB>,
            <DB as Database>::Connection: Migrate,
            <DB as Database>::Arguments: IntoArguments<DB>,
            for<'q> i64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
            for<'q> Option<i64>: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
            for<'q> &'q [u8]: Encode<'q, DB> + Type<DB>,
            for<'q> Vec<u8>: Decode<'q, DB> + Type<DB>,
            for<'q> &'q str: Encode<'q, DB> + Type<DB>,
            for<'q> String: Decode<'q, DB> + Type<DB>,
            for<'q> bool: Decode<'q, DB> + Type<DB>,
            usize: ColumnIndex<<DB as Database>::Row>,
        {
            $($body)*
        }
    };
}

/// A whitelist or keys row in Shoal's layout, read by the same code the copy engine uses.
fn shoal_row<R: Row>(t: Table, row: &R) -> Result<Item, StoreError>
where
    usize: ColumnIndex<R>,
    for<'q> i64: Decode<'q, R::Database> + Type<R::Database>,
    for<'q> Option<i64>: Decode<'q, R::Database> + Type<R::Database>,
    for<'q> Vec<u8>: Decode<'q, R::Database> + Type<R::Database>,
    for<'q> String: Decode<'q, R::Database> + Type<R::Database>,
{
    decode_row(t, Format::Shoal, row, 0).map_err(|detail| StoreError::BadRow {
        what: t.name(),
        detail,
    })
}

fn whitelist_row<R: Row>(row: &R) -> Result<WhitelistEntry, StoreError>
where
    usize: ColumnIndex<R>,
    for<'q> i64: Decode<'q, R::Database> + Type<R::Database>,
    for<'q> Option<i64>: Decode<'q, R::Database> + Type<R::Database>,
    for<'q> Vec<u8>: Decode<'q, R::Database> + Type<R::Database>,
    for<'q> String: Decode<'q, R::Database> + Type<R::Database>,
{
    match shoal_row(Table::Whitelist, row)? {
        Item::Listed(e) => Ok(e),
        other => unreachable!("a whitelist row decoded as {other:?}"),
    }
}

fn key_row<R: Row>(row: &R) -> Result<AuthKey, StoreError>
where
    usize: ColumnIndex<R>,
    for<'q> i64: Decode<'q, R::Database> + Type<R::Database>,
    for<'q> Option<i64>: Decode<'q, R::Database> + Type<R::Database>,
    for<'q> Vec<u8>: Decode<'q, R::Database> + Type<R::Database>,
    for<'q> String: Decode<'q, R::Database> + Type<R::Database>,
{
    match shoal_row(Table::Keys, row)? {
        Item::Key(k) => Ok(k),
        other => unreachable!("a keys row decoded as {other:?}"),
    }
}

for_every_backend! {
impl SchemaMigrator {
    async fn migrate(&self) -> Result<(), StoreError> {
        // A database this binary refuses is refused here, before anything is written to it:
        // not a row, not a lock, not a journal mode.
        let status = self.migration_status().await?;
        let (torrents,): (i64,) = sqlx::query_as(self.q.table_exists.clone()).bind("torrents").fetch_one(&self.pool).await?;
        if torrents > 0 {
            // Someone else's `torrents` table (Torrust's, with or without its own history).
            let first = DB::migrator().iter().next().map(|m| m.version);
            if !status.iter().any(|m| Some(m.version) == first && m.state != MigrationState::Pending) {
                return Err(StoreError::Foreign);
            }
        }
        use sqlx::migrate::MigrateError;
        for m in &status {
            let refused = match m.state {
                MigrationState::Unknown => MigrateError::VersionMissing(m.version),
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
        let (exists,): (i64,) = sqlx::query_as(self.q.table_exists.clone()).bind("_sqlx_migrations").fetch_one(&self.pool).await?;
        let mut applied = HashMap::new();
        if exists > 0 {
            let rows = sqlx::query(self.q.applied_migrations.clone()).fetch_all(&self.pool).await?;
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
            out.push(MigrationInfo { version: m.version, description: m.description.to_string(), state });
        }
        for (version, (description, _, _)) in applied {
            out.push(MigrationInfo { version, description, state: MigrationState::Unknown });
        }
        out.sort_by_key(|m| m.version);
        Ok(out)
    }
}
}

for_every_backend! {
impl TorrentMetricsStore {
    async fn load_torrent_downloads(&self, h: &InfoHash) -> Result<Option<u64>, StoreError> {
        let row: Option<(i64,)> = sqlx::query_as(self.q.load_torrent.clone()).bind(&h.0[..]).fetch_optional(&self.pool).await?;
        row.map(|(n,)| from_db("completed", n)).transpose()
    }

    async fn save_torrent_downloads(&self, h: &InfoHash, n: u64) -> Result<(), StoreError> {
        sqlx::query(self.q.save_torrent.clone()).bind(&h.0[..]).bind(to_db(n)?).execute(&self.pool).await?;
        Ok(())
    }

    async fn increase_downloads_for_torrent(&self, h: &InfoHash) -> Result<(), StoreError> {
        sqlx::query(self.q.increase_torrent.clone()).bind(&h.0[..]).execute(&self.pool).await?;
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
        let total = rows.iter().try_fold(0i64, |acc, (_, d)| acc.checked_add(*d));
        let total = total.ok_or_else(|| StoreError::BadRow { what: "count", detail: "sum of deltas exceeds 2^63-1".into() })?;
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
            sqlx::query(self.q.add_to_counter.clone()).bind(DOWNLOADS_TOTAL).bind(total).execute(&mut *tx).await?;
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
        let row: Option<(i64,)> = sqlx::query_as(self.q.load_counter.clone()).bind(DOWNLOADS_TOTAL).fetch_optional(&self.pool).await?;
        row.map(|(n,)| from_db(DOWNLOADS_TOTAL, n)).transpose()
    }

    async fn save_global_downloads(&self, n: u64) -> Result<(), StoreError> {
        sqlx::query(self.q.save_counter.clone()).bind(DOWNLOADS_TOTAL).bind(to_db(n)?).execute(&self.pool).await?;
        Ok(())
    }

    async fn increase_global_downloads(&self, by: u64) -> Result<(), StoreError> {
        sqlx::query(self.q.add_to_counter.clone()).bind(DOWNLOADS_TOTAL).bind(to_db(by)?).execute(&self.pool).await?;
        Ok(())
    }
}
}

for_every_backend! {
impl WhitelistStore {
    async fn add_info_hash_to_whitelist(&self, e: &WhitelistEntry) -> Result<(), StoreError> {
        sqlx::query(self.q.whitelist_add.clone()).bind(&e.info_hash.0[..]).bind(e.added_at).execute(&self.pool).await?;
        Ok(())
    }

    async fn get_info_hash_from_whitelist(&self, h: &InfoHash) -> Result<Option<WhitelistEntry>, StoreError> {
        let row = sqlx::query(self.q.whitelist_get.clone()).bind(&h.0[..]).fetch_optional(&self.pool).await?;
        row.as_ref().map(whitelist_row).transpose()
    }

    async fn remove_info_hash_from_whitelist(&self, h: &InfoHash) -> Result<bool, StoreError> {
        let done = sqlx::query(self.q.whitelist_remove.clone()).bind(&h.0[..]).execute(&self.pool).await?;
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
}

for_every_backend! {
impl AuthKeyStore {
    async fn add_key_to_keys(&self, k: &AuthKey) -> Result<(), StoreError> {
        sqlx::query(self.q.key_add.clone()).bind(k.key.as_str()).bind(k.valid_until).bind(k.created_at).execute(&self.pool).await?;
        Ok(())
    }

    async fn get_key_from_keys(&self, k: &Key) -> Result<Option<AuthKey>, StoreError> {
        let row = sqlx::query(self.q.key_get.clone()).bind(k.as_str()).fetch_optional(&self.pool).await?;
        row.as_ref().map(key_row).transpose()
    }

    async fn remove_key_from_keys(&self, k: &Key) -> Result<bool, StoreError> {
        let done = sqlx::query(self.q.key_remove.clone()).bind(k.as_str()).execute(&self.pool).await?;
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
}

for_every_backend! {
impl Connection {
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
        Ok(sqlx::query_scalar(DB::VERSION_QUERY).fetch_one(&self.pool).await?)
    }

    async fn identity(&self) -> Result<String, StoreError> {
        Ok(sqlx::query_scalar(DB::IDENTITY_QUERY).fetch_one(&self.pool).await?)
    }
}
}

/// Reads one row of table `t` as laid out by `format`. The error names the row.
fn decode_row<R: Row>(t: Table, format: Format, row: &R, now: i64) -> Result<Item, String>
where
    usize: ColumnIndex<R>,
    for<'q> i64: Decode<'q, R::Database> + Type<R::Database>,
    for<'q> Option<i64>: Decode<'q, R::Database> + Type<R::Database>,
    for<'q> Vec<u8>: Decode<'q, R::Database> + Type<R::Database>,
    for<'q> String: Decode<'q, R::Database> + Type<R::Database>,
{
    let name = t.name();
    let get_err = |e: sqlx::Error| format!("{name} row: {e}");
    let count = |what: &str, n: i64| {
        if n < 0 {
            Err(format!("{name} row: negative {what} {n}"))
        } else {
            Ok(n)
        }
    };
    let hash_bytes = |b: Vec<u8>| {
        InfoHash::from_slice(&b)
            .ok_or_else(|| format!("{name} row: info_hash has {} bytes, expected 20", b.len()))
    };
    Ok(match (format, t) {
        (Format::Shoal, Table::Torrents) => Item::Torrent(
            hash_bytes(row.try_get(0).map_err(get_err)?)?,
            count("completed", row.try_get(1).map_err(get_err)?)?,
        ),
        (Format::Shoal, Table::Counters) => Item::Counter(
            row.try_get(0).map_err(get_err)?,
            row.try_get(1).map_err(get_err)?,
        ),
        (Format::Shoal, Table::Whitelist) => Item::Listed(WhitelistEntry {
            info_hash: hash_bytes(row.try_get(0).map_err(get_err)?)?,
            added_at: row.try_get(1).map_err(get_err)?,
        }),
        (Format::Shoal, Table::Keys) => {
            let text: String = row.try_get(0).map_err(get_err)?;
            let key = Key::parse(text.as_bytes())
                .map_err(|e| format!("{name} row: key {text:?}: {e}"))?;
            Item::Key(AuthKey {
                key,
                valid_until: row.try_get(1).map_err(get_err)?,
                created_at: row.try_get(2).map_err(get_err)?,
            })
        }
        (Format::Torrust, _) => {
            let id: i64 = row.try_get(0).map_err(get_err)?;
            let text: String = row
                .try_get(1)
                .map_err(|e| format!("{name} row id={id}: {e}"))?;
            let hash = || {
                InfoHash::from_hex(&text)
                    .map_err(|e| format!("{name} row id={id}: info_hash {text:?}: {e}"))
            };
            let number = |i: usize| {
                row.try_get::<Option<i64>, _>(i)
                    .map_err(|e| format!("{name} row id={id}: {e}"))
            };
            match t {
                Table::Torrents => {
                    let n = number(2)?
                        .ok_or_else(|| format!("{name} row id={id}: completed is NULL"))?;
                    Item::Torrent(
                        hash()?,
                        count("completed", n).map_err(|e| format!("{e} (id={id})"))?,
                    )
                }
                Table::Counters => {
                    Item::Counter(DOWNLOADS_TOTAL.to_string(), number(2)?.unwrap_or(0))
                }
                Table::Whitelist => Item::Listed(WhitelistEntry {
                    info_hash: hash()?,
                    added_at: now,
                }),
                Table::Keys => {
                    let key = Key::parse(text.as_bytes())
                        .map_err(|e| format!("{name} row id={id}: key {text:?}: {e}"))?;
                    Item::Key(AuthKey {
                        key,
                        valid_until: number(2)?,
                        created_at: now,
                    })
                }
            }
        }
    })
}

/// The table each `Table` is read from in Torrust's layout.
fn torrust_table(t: Table) -> &'static str {
    match t {
        Table::Counters => "torrent_aggregate_metrics",
        other => other.name(),
    }
}

fn merge_index(merge: Option<Merge>) -> usize {
    match merge {
        None => 0,
        Some(Merge::Add) => 1,
        Some(Merge::Max) => 2,
    }
}

for_every_backend! {
impl Transfer {
    async fn export(
        &self,
        format: Format,
        skip_invalid: bool,
        now: i64,
        out: Option<&tokio::sync::mpsc::Sender<Batch>>,
        batch_rows: usize,
    ) -> Result<[Exported; 4], StoreError> {
        let mut all: [Exported; 4] = Default::default();
        // One transaction: every table as of one moment, however long the read takes.
        let mut tx = self.pool.begin().await?;
        if let Some(sql) = DB::SNAPSHOT {
            sqlx::query(sql).execute(&mut *tx).await?;
        }
        for t in Table::ALL {
            let exported = &mut all[t as usize];
            if format == Format::Torrust {
                // Older Torrust databases lack torrent_aggregate_metrics; nothing to read then.
                let (n,): (i64,) = sqlx::query_as(self.q.table_exists.clone()).bind(torrust_table(t)).fetch_one(&mut *tx).await?;
                if n == 0 {
                    continue;
                }
            }
            let sql = self.q.export[t as usize][(format == Format::Torrust) as usize].clone();
            let mut rows = sqlx::query(sql).fetch(&mut *tx);
            let mut batch = Batch::empty(t, batch_rows);
            while let Some(row) = rows.try_next().await? {
            match decode_row(t, format, &row, now) {
                Ok(item) => {
                    exported.sum.add(item.hash());
                    if let Some(out) = out {
                        batch.push(item);
                        if batch.len() >= batch_rows {
                            let full = std::mem::replace(&mut batch, Batch::empty(t, batch_rows));
                            out.send(full).await.map_err(|_| StoreError::Copy(crate::copy::WRITER_STOPPED.into()))?;
                        }
                    }
                }
                Err(why) if skip_invalid => exported.skipped.push(why),
                Err(why) => return Err(StoreError::Copy(format!("{why}; nothing was written (--skip-invalid leaves such rows behind and lists them)"))),
            }
            }
            drop(rows);
            if let Some(out) = out.filter(|_| !batch.is_empty()) {
                out.send(batch).await.map_err(|_| StoreError::Copy(crate::copy::WRITER_STOPPED.into()))?;
            }
        }
        Ok(all)
    }

    async fn import(
        &self,
        mut rx: tokio::sync::mpsc::Receiver<Batch>,
        source_done: tokio::sync::oneshot::Receiver<()>,
        merge: Option<Merge>,
        before: [TableSum; 4],
        progress: &Progress,
    ) -> Result<Imported, StoreError> {
        let mut result = before.map(|expected| TableImport { copied: 0, expected, found: TableSum::default() });
        // Dropped without a commit on every early return: the destination rolls back.
        let mut tx = self.pool.begin().await?;
        while let Some(batch) = rx.recv().await {
            let t = batch.table();
            let items = batch.items();
            let r = &mut result[t as usize];
            if let Some(m) = merge {
                // Learn the rows this batch meets, so the expected sums stay exact.
                let mut q = QueryBuilder::<DB>::new(&self.q.existing_head[t as usize]);
                q.push("(");
                let mut list = q.separated(", ");
                for item in &items {
                    match item {
                        Item::Torrent(h, _) => list.push_bind(&h.0[..]),
                        Item::Counter(name, _) => list.push_bind(name.as_str()),
                        Item::Listed(e) => list.push_bind(&e.info_hash.0[..]),
                        Item::Key(k) => list.push_bind(k.key.as_str()),
                    };
                }
                q.push(")");
                let mut old = HashMap::new();
                for row in q.build().fetch_all(&mut *tx).await? {
                    let item = decode_row(t, Format::Shoal, &row, 0).map_err(StoreError::Copy)?;
                    old.insert(item.pk(), item);
                }
                for item in &items {
                    match old.get(&item.pk()) {
                        Some(o) => {
                            r.expected.remove(o.hash());
                            r.expected.add(o.merged(item, m)?.hash());
                        }
                        None => r.expected.add(item.hash()),
                    }
                }
            } else {
                for item in &items {
                    r.expected.add(item.hash());
                }
            }
            let mut q = QueryBuilder::<DB>::new(&self.q.import_head[t as usize]);
            match &batch {
                Batch::Torrents(v) => q.push_values(v, |mut row, (h, n)| {
                    row.push_bind(&h.0[..]).push_bind(*n);
                }),
                Batch::Counters(v) => q.push_values(v, |mut row, (name, n)| {
                    row.push_bind(name.as_str()).push_bind(*n);
                }),
                Batch::Whitelist(v) => q.push_values(v, |mut row, e| {
                    row.push_bind(&e.info_hash.0[..]).push_bind(e.added_at);
                }),
                Batch::Keys(v) => q.push_values(v, |mut row, k| {
                    row.push_bind(k.key.as_str()).push_bind(k.valid_until).push_bind(k.created_at);
                }),
            };
            q.push(&self.q.import_tail[t as usize][merge_index(merge)]);
            q.build().execute(&mut *tx).await?;
            r.copied += batch.len() as u64;
            progress.add(t, batch.len() as u64);
        }
        // The channel also closes when the reader fails; only its word says it read everything.
        if source_done.await.is_err() {
            return Err(StoreError::Copy(crate::copy::READER_STOPPED.into()));
        }
        for t in Table::ALL {
            let mut rows = sqlx::query(self.q.export[t as usize][0].clone()).fetch(&mut *tx);
            let found = &mut result[t as usize].found;
            while let Some(row) = rows.try_next().await? {
                found.add(decode_row(t, Format::Shoal, &row, 0).map_err(StoreError::Copy)?.hash());
            }
        }
        let verified = result.iter().all(|r| r.found == r.expected);
        if verified {
            tx.commit().await?;
        }
        Ok(Imported { tables: result, committed: verified })
    }
}
}
