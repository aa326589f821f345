//! The embedded default: one SQLite file, WAL journal (set when the database is adopted) with
//! `synchronous = FULL`, so an acknowledged flush survives power loss.

use std::str::FromStr;
use std::time::Duration;

use sqlx::Sqlite;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{SqliteConnectOptions, SqliteQueryResult, SqliteSynchronous};

use crate::sql::{Dialect, SqlStore};
use crate::{DatabaseUrl, StoreError};

static MIGRATOR: Migrator = sqlx::migrate!("migrations/sqlite");

pub type SqliteStore = SqlStore<Sqlite>;

impl Dialect for Sqlite {
    const DRIVER: &'static str = "sqlite";
    const GREATEST: &'static str = "max";
    const VERSION_QUERY: &'static str = "SELECT sqlite_version()";
    const TABLE_EXISTS: &'static str =
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?";

    fn migrator() -> &'static Migrator {
        &MIGRATOR
    }

    fn rows_affected(r: &SqliteQueryResult) -> u64 {
        r.rows_affected()
    }

    // WAL is kept in the file header, so it is set only on a database Shoal has adopted.
    const ADOPT: Option<&'static str> = Some("PRAGMA journal_mode = WAL");
    // The file's path; `AnyStore::identity` turns it into the file's device and inode.
    const IDENTITY_QUERY: &'static str =
        "SELECT file FROM pragma_database_list WHERE name = 'main'";
}

impl SqlStore<Sqlite> {
    /// Opens (creating the file and its folder if missing) without touching the schema.
    pub async fn open(url: &DatabaseUrl, max_connections: u32) -> Result<Self, StoreError> {
        if let Some(dir) = url
            .sqlite_path()
            .as_deref()
            .and_then(std::path::Path::parent)
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Connect {
                url: url.redacted(),
                source: sqlx::Error::Io(e),
            })?;
        }
        let options = SqliteConnectOptions::from_str(url.expose()).map(|o| {
            // No journal mode here: switching to WAL writes the file header, and a database
            // Shoal refuses must stay untouched; `migrate` switches it once adopted.
            o.create_if_missing(true)
                .synchronous(SqliteSynchronous::Full)
                .busy_timeout(Duration::from_secs(5))
        });
        SqlStore::connect(url, options, max_connections).await
    }

    /// Opens an existing file without creating it or changing its journal mode: a source
    /// for `shoal migrate` is never written to.
    pub async fn open_read_only(url: &DatabaseUrl) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(url.expose())
            .map(|o| o.read_only(true).create_if_missing(false));
        SqlStore::connect(url, options, 2).await
    }
}
