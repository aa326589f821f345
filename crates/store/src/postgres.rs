//! PostgreSQL: for operators who outgrow one machine; several nodes can share one database
//! because every count is written as an additive delta.

use std::str::FromStr;

use sqlx::Postgres;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgQueryResult};

use crate::sql::{Dialect, SqlStore, numbered_placeholders};
use crate::{DatabaseUrl, StoreError};

static MIGRATOR: Migrator = sqlx::migrate!("migrations/postgres");

pub type PgStore = SqlStore<Postgres>;

impl Dialect for Postgres {
    const DRIVER: &'static str = "postgres";
    const TABLE_EXISTS: &'static str = "SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = $1";

    fn migrator() -> &'static Migrator {
        &MIGRATOR
    }

    fn render(portable: &str) -> String {
        numbered_placeholders(&portable.replace('`', "\""))
    }

    fn rows_affected(r: &PgQueryResult) -> u64 {
        r.rows_affected()
    }

    // READ COMMITTED would give each table its own snapshot.
    const SNAPSHOT: Option<&'static str> =
        Some("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY");
    // The cluster's identifier is made by initdb and differs between any two clusters.
    const IDENTITY_QUERY: &'static str = "SELECT CAST(system_identifier AS TEXT) || '/' || current_database() || '/' || current_schema() FROM pg_control_system()";
}

impl SqlStore<Postgres> {
    pub async fn open(url: &DatabaseUrl, max_connections: u32) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(url.expose()).map(|o| o.application_name("shoal"));
        SqlStore::connect(url, options, max_connections).await
    }

    /// Every transaction read-only: a source for `shoal migrate` is never written to.
    pub async fn open_read_only(url: &DatabaseUrl) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(url.expose()).map(|o| {
            o.application_name("shoal migrate")
                .options([("default_transaction_read_only", "on")])
        });
        SqlStore::connect(url, options, 2).await
    }
}
