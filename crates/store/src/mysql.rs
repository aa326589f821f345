//! MySQL and MariaDB. `mariadb://` URLs are accepted and mean the same as `mysql://`.

use std::str::FromStr;

use sqlx::MySql;
use sqlx::migrate::Migrator;
use sqlx::mysql::{MySqlConnectOptions, MySqlQueryResult};

use crate::sql::{Dialect, SqlStore};
use crate::{DatabaseUrl, StoreError};

static MIGRATOR: Migrator = sqlx::migrate!("migrations/mysql");

pub type MySqlStore = SqlStore<MySql>;

impl Dialect for MySql {
    const DRIVER: &'static str = "mysql";
    const BIGINT: &'static str = "SIGNED";
    const TABLE_EXISTS: &'static str = "SELECT count(*) FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = ?";

    fn migrator() -> &'static Migrator {
        &MIGRATOR
    }

    fn render(portable: &str) -> String {
        portable.to_string()
    }

    fn on_conflict_update(_pk: &str) -> String {
        "ON DUPLICATE KEY UPDATE".to_string()
    }

    fn inserted(col: &str) -> String {
        // VALUES() is what both MariaDB and MySQL 8 accept (MySQL's row alias is not in MariaDB).
        format!("VALUES({col})")
    }

    fn rows_affected(r: &MySqlQueryResult) -> u64 {
        r.rows_affected()
    }

    // MariaDB has no server UUID; host name, port and data folder name one server.
    const IDENTITY_QUERY: &'static str =
        "SELECT CONCAT(@@hostname, ':', @@port, ':', @@datadir, ':', DATABASE())";
}

impl SqlStore<MySql> {
    pub async fn open(url: &DatabaseUrl, max_connections: u32) -> Result<Self, StoreError> {
        let raw = url.expose();
        let raw = match raw.strip_prefix("mariadb:") {
            Some(rest) => format!("mysql:{rest}"),
            None => raw.to_string(),
        };
        let options = MySqlConnectOptions::from_str(&raw).map(|o| o.charset("utf8mb4"));
        SqlStore::connect(url, options, max_connections).await
    }

    /// MySQL has no read-only connection option; the copy engine only reads from a source.
    pub async fn open_read_only(url: &DatabaseUrl) -> Result<Self, StoreError> {
        Self::open(url, 2).await
    }
}
