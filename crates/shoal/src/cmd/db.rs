//! `shoal db status` and `shoal db upgrade`: look at and apply migrations without serving.

use store::{AnyStore, Connection, DatabaseUrl, MigrationState, SchemaMigrator};

use super::{Error, Result};
use crate::config::Config;

/// Show or apply the database migrations without serving.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub action: Action,
    /// TOML configuration file (database.url); the environment applies as for serve.
    #[arg(long, short, value_name = "FILE", global = true)]
    pub config: Option<std::path::PathBuf>,
}

#[derive(clap::Subcommand)]
pub enum Action {
    /// List every migration: applied, pending, or one this binary refuses (changed, unknown).
    Status,
    /// Apply pending migrations and exit.
    Upgrade,
}

async fn open(config: &Config) -> Result<(AnyStore, DatabaseUrl)> {
    let url = config.database.url.clone();
    let store = AnyStore::open(&url, 1)
        .await
        .map_err(Error::store("cannot open the database"))?;
    Ok((store, url))
}

fn label(s: MigrationState) -> &'static str {
    match s {
        MigrationState::Applied => "applied",
        MigrationState::Pending => "pending",
        MigrationState::Changed => "CHANGED (checksum differs from this binary)",
        MigrationState::Unknown => "UNKNOWN (from a newer shoal)",
        MigrationState::Dirty => "DIRTY (partially applied)",
        MigrationState::Torrust => "Torrust Tracker's own",
    }
}

/// Prints every migration and its state. Fails when `serve` would refuse the database.
pub async fn status(config: &Config) -> Result<()> {
    let (store, url) = open(config).await?;
    let read = async {
        let list = store.migration_status().await?;
        Ok::<_, store::StoreError>((list, store.foreign().await?))
    };
    let read = read
        .await
        .map_err(Error::store("cannot read the migrations"));
    store.close().await;
    let (list, found) = read?;
    println!("database {} ({})", url.redacted(), store.driver());
    println!("{:<16} {:<24} state", "version", "description");
    for m in &list {
        println!("{:<16} {:<24} {}", m.version, m.description, label(m.state));
    }
    if let Some(found) = found {
        return Err(Error::Said(crate::persist::adopt(&found, &url)));
    }
    let pending = list
        .iter()
        .filter(|m| m.state == MigrationState::Pending)
        .count();
    let bad: Vec<_> = list
        .iter()
        .filter(|m| !matches!(m.state, MigrationState::Applied | MigrationState::Pending))
        .collect();
    if !bad.is_empty() {
        let versions: Vec<String> = bad.iter().map(|m| m.version.to_string()).collect();
        return Err(Error::Said(format!(
            "this shoal cannot use the database: migration {} {}",
            versions.join(", "),
            label(bad[0].state)
        )));
    }
    println!("{pending} pending; `shoal db upgrade` (or `shoal serve`) applies them");
    Ok(())
}

pub async fn upgrade(config: &Config) -> Result<()> {
    let (store, url) = open(config).await?;
    let before = store
        .migration_status()
        .await
        .map_err(Error::store("cannot read the migrations"))?;
    let result = store
        .migrate()
        .await
        .map_err(|e| crate::persist::explain(e, &url));
    store.close().await;
    result?;
    let applied: Vec<_> = before
        .iter()
        .filter(|m| m.state == MigrationState::Pending)
        .collect();
    for m in &applied {
        println!("applied {} {}", m.version, m.description);
    }
    println!(
        "database {} is up to date ({} migrations applied now)",
        url.redacted(),
        applied.len()
    );
    Ok(())
}
