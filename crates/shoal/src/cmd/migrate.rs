//! `shoal migrate`: copy every row between any two databases, or out of a Torrust Tracker
//! database, then verify both sides (see `store::copy`).

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use store::copy::{self, CopyOptions, Format, Merge, Progress, Table, TableReport};
use store::{AnyStore, Connection, DatabaseUrl, MigrationState, SchemaMigrator};

use super::{Error, Result};
use crate::persist::explain;

/// Copy every row (torrents, counters, whitelist, keys) from one database to another and
/// verify both sides. Any pair of sqlite:, postgresql: and mysql: URLs, either way; a
/// Torrust Tracker database is read with torrust+sqlite://, torrust+mysql:// or
/// torrust+postgresql://. The source is never written to.
#[derive(clap::Args)]
pub struct Args {
    /// The database to read.
    #[arg(long, value_name = "URL")]
    pub from: String,
    /// The database to write; its migrations are applied first. Must be empty unless --merge.
    #[arg(long, value_name = "URL")]
    pub to: String,
    /// Copy into a database that already holds rows: `add` adds download counts, `max`
    /// keeps the larger; whitelist entries and keys already there are kept either way.
    #[arg(long, value_name = "HOW")]
    pub merge: Option<MergeArg>,
    /// Leave source rows that cannot be read (bad hex, wrong length) behind and list them,
    /// instead of stopping.
    #[arg(long)]
    pub skip_invalid: bool,
    /// Rows per batch.
    #[arg(long, default_value_t = 5000, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub batch_rows: u32,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum MergeArg {
    Add,
    Max,
}

impl From<MergeArg> for Merge {
    fn from(m: MergeArg) -> Merge {
        match m {
            MergeArg::Add => Merge::Add,
            MergeArg::Max => Merge::Max,
        }
    }
}

pub async fn run(args: Args) -> Result<()> {
    let (format, from) = match args.from.strip_prefix("torrust+") {
        Some(rest) => (Format::Torrust, rest),
        None => (Format::Shoal, args.from.as_str()),
    };
    let from = DatabaseUrl::parse(from).map_err(|e| Error::Said(format!("--from: {e}")))?;
    let to = DatabaseUrl::parse(&args.to).map_err(|e| Error::Said(format!("--to: {e}")))?;
    // A SQLite destination this command creates is removed again when it fails: all or
    // nothing includes the file.
    let created = to.sqlite_path().filter(|p| !p.exists());
    let src = AnyStore::open_read_only(&from)
        .await
        .map_err(Error::store("--from"))?;
    // Opening writes nothing (SQLite only creates a missing file); adopting it does, below.
    let dst = match AnyStore::open(&to, 4).await {
        Ok(dst) => dst,
        Err(e) => {
            src.close().await;
            remove_created(created.as_deref());
            return Err(Error::store("--to")(e));
        }
    };
    let result = copy_between(&args, format, (&src, &from), (&dst, &to)).await;
    src.close().await;
    dst.close().await;
    if result.is_err() {
        remove_created(created.as_deref());
    }
    result
}

/// Removes a SQLite database file (and its journals) that a failed run created.
fn remove_created(path: Option<&std::path::Path>) {
    let Some(path) = path else { return };
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(p);
    }
}

async fn copy_between(
    args: &Args,
    format: Format,
    (src, from): (&AnyStore, &DatabaseUrl),
    (dst, to): (&AnyStore, &DatabaseUrl),
) -> Result<()> {
    let same = async {
        let a = src.identity().await.map_err(Error::store("--from"))?;
        let b = dst.identity().await.map_err(Error::store("--to"))?;
        Ok::<_, Error>(!a.is_empty() && a == b)
    };
    if same.await? {
        return Err(Error::Said(format!(
            "--from {} and --to {} are the same database; nothing was written",
            from.redacted(),
            to.redacted()
        )));
    }
    if format == Format::Shoal {
        let status = src
            .migration_status()
            .await
            .map_err(Error::store("--from"))?;
        if let Some(m) = status.iter().find(|m| m.state != MigrationState::Applied) {
            return Err(Error::Said(format!(
                "--from {} is not a shoal database this version can read (migration {} is {:?}); a Torrust Tracker database is read with --from torrust+{}",
                from.redacted(),
                m.version,
                m.state,
                from.redacted()
            )));
        }
    }
    dst.migrate()
        .await
        .map_err(|e| Error::Said(format!("--to: {}", explain(e, to))))?;

    eprintln!(
        "copying {} ({}) to {} ({})",
        from.redacted(),
        src.driver(),
        to.redacted(),
        dst.driver()
    );
    let progress = Arc::new(Progress::default());
    let started = Instant::now();
    let printer = tokio::spawn(show_progress(progress.clone(), started));
    let opts = CopyOptions {
        merge: args.merge.map(Merge::from),
        skip_invalid: args.skip_invalid,
        batch_rows: args.batch_rows as usize,
    };
    let result = copy::copy(src, format, dst, opts, progress.clone()).await;
    printer.abort();
    let reports = result.map_err(Error::store("the copy"))?;
    let elapsed = started.elapsed();
    if std::io::stderr().is_terminal() {
        eprintln!();
    }
    print_summary(&reports, elapsed);
    let bad: Vec<&str> = reports
        .iter()
        .filter(|r| !r.ok())
        .map(|r| r.table.name())
        .collect();
    if bad.is_empty() {
        Ok(())
    } else {
        Err(Error::Said(format!(
            "verification failed for {}: the destination would not hold what it should; nothing was written",
            bad.join(", ")
        )))
    }
}

async fn show_progress(p: Arc<Progress>, started: Instant) {
    let terminal = std::io::stderr().is_terminal();
    let every = if terminal {
        Duration::from_millis(250)
    } else {
        Duration::from_secs(1)
    };
    loop {
        tokio::time::sleep(every).await;
        let rows = p.total();
        let rate = rows as f64 / started.elapsed().as_secs_f64().max(1e-3);
        let line = format!(
            "{}: {} rows copied, {rate:.0} rows/s",
            p.current().name(),
            rows
        );
        let mut err = std::io::stderr().lock();
        if terminal {
            let _ = write!(err, "\r\x1b[2K{line}");
        } else {
            let _ = writeln!(err, "{line}");
        }
        let _ = err.flush();
    }
}

fn print_summary(reports: &[TableReport], elapsed: Duration) {
    println!(
        "{:<10} {:>12} {:>12} {:>12} {:>18} {:>18}  result",
        "table", "source", "copied", "destination", "source sum", "destination sum"
    );
    let mut total = 0;
    for r in reports {
        total += r.copied;
        println!(
            "{:<10} {:>12} {:>12} {:>12} {:>18x} {:>18x}  {}",
            r.table.name(),
            r.source.rows,
            r.copied,
            r.destination.rows,
            r.source.sum,
            r.destination.sum,
            if r.ok() { "ok" } else { "MISMATCH" }
        );
        for why in &r.skipped {
            println!("  skipped: {why}");
        }
    }
    let secs = elapsed.as_secs_f64();
    let verdict = if reports.iter().all(TableReport::ok) {
        "verified by row count and checksum, then committed"
    } else {
        "NOT committed: the destination is as it was"
    };
    println!(
        "{total} rows in {secs:.2} s ({:.0} rows/s), {verdict}",
        total as f64 / secs.max(1e-3)
    );
    if let Some(r) = reports
        .iter()
        .find(|r| r.table == Table::Torrents && r.expected != r.source)
    {
        println!(
            "torrents merged: the destination now holds {} rows",
            r.expected.rows
        );
    }
}
