//! `shoal bench persistence`: times every store operation on a real database and prints one
//! JSON report. Setup (filling tables) happens outside the timed regions. Point it at a
//! throwaway database: it writes rows and leaves them there.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use protocol::{InfoHash, Key};
use serde_json::{Value, json};

use crate::cmd::{Error, Result};
use store::{
    AnyStore, AuthKey, AuthKeyStore, Connection, DatabaseUrl, SchemaMigrator, TorrentMetricsStore,
    WhitelistEntry, WhitelistStore,
};

/// Time every store operation on a throwaway database; prints one JSON report.
#[derive(clap::Args)]
pub struct Args {
    /// The database to measure (it is migrated, written to and left with the rows).
    #[arg(long, value_name = "URL")]
    pub db_url: String,
    /// Repetitions of each per-row operation.
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub ops: usize,
    /// Tasks for the concurrent runs.
    #[arg(long, default_value_t = 4, value_name = "C")]
    pub concurrency: usize,
    /// Persisted counts for the start-up load (load_all_1m).
    #[arg(long, default_value_t = 1_000_000, value_name = "N")]
    pub rows: usize,
}

struct Timings {
    name: String,
    samples: Vec<Duration>,
}

impl Timings {
    fn json(mut self) -> Value {
        self.samples.sort();
        let n = self.samples.len();
        let at = |q: f64| self.samples[((n as f64 - 1.0) * q).round() as usize].as_secs_f64() * 1e6;
        json!({
            "name": self.name,
            "count": n,
            "best_us": round(at(0.0)),
            "median_us": round(at(0.5)),
            "p99_us": round(at(0.99)),
            "worst_us": round(at(1.0)),
        })
    }
}

fn round(us: f64) -> f64 {
    (us * 10.0).round() / 10.0
}

/// A run's own info-hashes, so repeated runs on one database do not collide.
fn hash(run: u64, i: usize) -> InfoHash {
    let mut b = [0u8; 20];
    b[..8].copy_from_slice(&run.to_be_bytes());
    b[8..16].copy_from_slice(&(i as u64).to_be_bytes());
    InfoHash(b)
}

fn key(run: u64, i: usize) -> Key {
    let digits = format!("{:016x}{i:016x}", run);
    let s: String = digits
        .chars()
        .map(|c| {
            if c.is_ascii_digit() {
                c
            } else {
                c.to_ascii_uppercase()
            }
        })
        .collect();
    s.parse().expect("32 hex characters form a key")
}

/// Times `count` calls of `op(i)`, one after another.
async fn time<F, Fut>(name: &str, count: usize, mut op: F) -> Result<Timings>
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = std::result::Result<(), store::StoreError>>,
{
    let mut samples = Vec::with_capacity(count);
    for i in 0..count {
        let t = Instant::now();
        op(i).await.map_err(Error::store(name))?;
        samples.push(t.elapsed());
    }
    Ok(Timings {
        name: name.into(),
        samples,
    })
}

/// The same operations from `c` tasks at once; each call is timed on its own.
async fn time_concurrent<F, Fut>(name: &str, count: usize, c: usize, op: F) -> Result<Timings>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = std::result::Result<(), store::StoreError>> + Send,
{
    let op = Arc::new(op);
    let mut tasks = Vec::new();
    for t in 0..c {
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            for i in (t..count).step_by(c) {
                let start = Instant::now();
                op(i).await?;
                samples.push(start.elapsed());
            }
            Ok::<_, store::StoreError>(samples)
        }));
    }
    let mut samples = Vec::with_capacity(count);
    for t in tasks {
        samples.extend(
            t.await
                .map_err(|e| Error::Said(format!("{name}: a timing task failed: {e}")))?
                .map_err(Error::store(name))?,
        );
    }
    Ok(Timings {
        name: format!("{name}@c{c}"),
        samples,
    })
}

// One measurement after another, in the order the report prints them: longer than a
// function should be, but read top to bottom it is the report.
pub async fn run(args: Args) -> Result<()> {
    let url = DatabaseUrl::parse(&args.db_url).map_err(Error::store("--db-url"))?;
    let s = AnyStore::open(&url, args.concurrency.max(1) as u32 + 1)
        .await
        .map_err(Error::store(format!("cannot open {}", url.redacted())))?;
    s.migrate()
        .await
        .map_err(|e| Error::Said(crate::persist::explain(e, &url)))?;
    let run = crate::os::since_epoch().as_nanos() as u64 | 1;
    let n = args.ops.max(1);
    let mut out = Vec::new();

    let st = &s;
    out.push(
        time("save_torrent_downloads", n, |i| async move {
            st.save_torrent_downloads(&hash(run, i), i as u64).await
        })
        .await?,
    );
    out.push(
        time("load_torrent_downloads", n, |i| async move {
            st.load_torrent_downloads(&hash(run, i)).await.map(drop)
        })
        .await?,
    );
    out.push(
        time("increase_downloads_for_torrent", n, |i| async move {
            st.increase_downloads_for_torrent(&hash(run, i)).await
        })
        .await?,
    );
    out.push(
        time("load_all_torrents_downloads", 5, |_| async move {
            st.load_all_torrents_downloads(|_, _| {}).await.map(drop)
        })
        .await?,
    );
    out.push(
        time("save_global_downloads", n, |i| async move {
            st.save_global_downloads(i as u64).await
        })
        .await?,
    );
    out.push(
        time("load_global_downloads", n, |_| async move {
            st.load_global_downloads().await.map(drop)
        })
        .await?,
    );
    out.push(
        time("increase_global_downloads", n, |_| async move {
            st.increase_global_downloads(1).await
        })
        .await?,
    );

    let entry = |i| WhitelistEntry {
        info_hash: hash(run, i),
        added_at: 1_700_000_000,
    };
    out.push(
        time("add_info_hash_to_whitelist", n, |i| async move {
            st.add_info_hash_to_whitelist(&entry(i)).await
        })
        .await?,
    );
    out.push(
        time("get_info_hash_from_whitelist", n, |i| async move {
            st.get_info_hash_from_whitelist(&hash(run, i))
                .await
                .map(drop)
        })
        .await?,
    );
    out.push(
        time("load_whitelist", 5, |_| async move {
            st.load_whitelist().await.map(drop)
        })
        .await?,
    );
    out.push(
        time("remove_info_hash_from_whitelist", n, |i| async move {
            st.remove_info_hash_from_whitelist(&hash(run, i))
                .await
                .map(drop)
        })
        .await?,
    );

    let auth = |i| AuthKey {
        key: key(run, i),
        valid_until: (i % 2 == 0).then_some(1_900_000_000),
        created_at: 1_700_000_000,
    };
    out.push(
        time("add_key_to_keys", n, |i| async move {
            st.add_key_to_keys(&auth(i)).await
        })
        .await?,
    );
    out.push(
        time("get_key_from_keys", n, |i| async move {
            st.get_key_from_keys(&key(run, i)).await.map(drop)
        })
        .await?,
    );
    out.push(
        time(
            "load_keys",
            5,
            |_| async move { st.load_keys().await.map(drop) },
        )
        .await?,
    );
    out.push(
        time("remove_key_from_keys", n, |i| async move {
            st.remove_key_from_keys(&key(run, i)).await.map(drop)
        })
        .await?,
    );

    // One flusher batch: 1,000 torrents, half of them new.
    let batches: Vec<Vec<(InfoHash, u64)>> = (0..20)
        .map(|b| (0..1000).map(|i| (hash(run, b * 500 + i), 1)).collect())
        .collect();
    let batches = &batches;
    out.push(
        time("flush_1000_deltas", batches.len(), |b| async move {
            st.add_downloads(&batches[b]).await
        })
        .await?,
    );

    // Under concurrency: the per-row operations again, from several tasks.
    let c = args.concurrency.max(1);
    let base = n * 10;
    macro_rules! concurrent {
        ($name:expr, |$st:ident, $i:ident| $body:expr) => {{
            let $st = s.clone();
            out.push(
                time_concurrent($name, n, c, move |$i| {
                    let $st = $st.clone();
                    async move { $body }
                })
                .await?,
            );
        }};
    }
    concurrent!("save_torrent_downloads", |st, i| st
        .save_torrent_downloads(&hash(run, base + i), 1)
        .await);
    concurrent!("load_torrent_downloads", |st, i| st
        .load_torrent_downloads(&hash(run, base + i))
        .await
        .map(drop));
    concurrent!("increase_downloads_for_torrent", |st, i| st
        .increase_downloads_for_torrent(&hash(run, i % 16))
        .await);
    concurrent!("increase_global_downloads", |st, _i| st
        .increase_global_downloads(1)
        .await);
    concurrent!("add_info_hash_to_whitelist", |st, i| st
        .add_info_hash_to_whitelist(&WhitelistEntry {
            info_hash: hash(run, base + i),
            added_at: 0
        })
        .await);
    concurrent!("get_info_hash_from_whitelist", |st, i| st
        .get_info_hash_from_whitelist(&hash(run, base + i))
        .await
        .map(drop));
    concurrent!("add_key_to_keys", |st, i| st
        .add_key_to_keys(&AuthKey {
            key: key(run, base + i),
            valid_until: None,
            created_at: 0
        })
        .await);
    concurrent!("get_key_from_keys", |st, i| st
        .get_key_from_keys(&key(run, base + i))
        .await
        .map(drop));

    // Start-up load: fill `rows` counts outside the timing, then stream them all into a map,
    // as serve does into the swarm.
    let load_run = run ^ 0x5a5a;
    for chunk in (0..args.rows).collect::<Vec<_>>().chunks(10_000) {
        let deltas: Vec<_> = chunk
            .iter()
            .map(|&i| (hash(load_run, i), 1 + (i % 9) as u64))
            .collect();
        s.add_downloads(&deltas)
            .await
            .map_err(Error::store(format!("filling {} rows", args.rows)))?;
    }
    let label = if args.rows == 1_000_000 {
        "load_all_1m".to_string()
    } else {
        format!("load_all_{}", args.rows)
    };
    out.push(
        time(&label, 3, |_| async move {
            let mut m = HashMap::with_capacity(args.rows + n * 20);
            st.load_all_torrents_downloads(|h, c| {
                m.insert(h, c);
            })
            .await
            .map(drop)
        })
        .await?,
    );

    let report = json!({
        "meta": {
            "git_revision": git_revision(),
            "driver": s.driver(),
            "server_version": s.server_version().await.unwrap_or_else(|e| format!("unknown ({e})")),
            "ops": n,
            "concurrency": c,
            "rows": args.rows,
            "timestamp": crate::os::unix_secs(),
        },
        "operations": out.into_iter().map(Timings::json).collect::<Vec<_>>(),
    });
    s.close().await;
    println!(
        "{}",
        serde_json::to_string_pretty(&report).map_err(|e| Error::Said(e.to_string()))?
    );
    Ok(())
}

fn git_revision() -> String {
    std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}
