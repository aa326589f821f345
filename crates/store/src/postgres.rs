//! PostgreSQL: for operators who outgrow one machine; several nodes can share one database
//! because every count is written as an additive delta.

use std::str::FromStr;
use std::time::Duration;

use sqlx::Postgres;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgQueryResult};

use crate::sql::{Dialect, SqlStore, numbered_placeholders};
use crate::{DatabaseUrl, StoreError};

static MIGRATOR: Migrator = sqlx::migrate!("migrations/postgres");

pub type PgStore = SqlStore<Postgres>;

impl Dialect for Postgres {
    const DRIVER: &'static str = "postgres";
    const TABLE_EXISTS: &'static str =
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = $1";

    fn migrator() -> &'static Migrator {
        &MIGRATOR
    }

    fn render(portable: &str) -> String {
        numbered_placeholders(&portable.replace('`', "\""))
    }

    fn on_conflict_update(pk: &str) -> String {
        format!("ON CONFLICT ({pk}) DO UPDATE SET")
    }

    fn inserted(col: &str) -> String {
        format!("excluded.{col}")
    }

    fn rows_affected(r: &PgQueryResult) -> u64 {
        r.rows_affected()
    }
}

impl SqlStore<Postgres> {
    /// Connects (one connection up front, so a wrong address or password fails here).
    pub async fn open(url: &DatabaseUrl, max_connections: u32) -> Result<Self, StoreError> {
        let connect_err = |source| StoreError::Connect { url: url.redacted(), source };
        let options = PgConnectOptions::from_str(url.expose()).map_err(connect_err)?.application_name("shoal");
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await
            .map_err(connect_err)?;
        Ok(SqlStore::from_pool(pool))
    }
}
