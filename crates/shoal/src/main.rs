//! `shoal`: a BitTorrent tracker on an embedded SQLite database.

use shoal::bench::{persistence as bench, udp_floor, udp_load};
use shoal::cmd::{admin, check, db, migrate, serve};
use shoal::config::{self, LogFormat};

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "shoal",
    version,
    about = "A BitTorrent tracker (UDP and HTTP) that keeps its download counts in SQLite, PostgreSQL or MySQL/MariaDB."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the tracker. Without --config: public mode, UDP on 0.0.0.0:6969, HTTP on
    /// 0.0.0.0:7070, admin API on 127.0.0.1:1212, SQLite in ./data/shoal.db.
    Serve {
        /// TOML configuration file; every key can also be set as SHOAL_<SECTION>__<KEY>.
        #[arg(long, short, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Copy every row (torrents, counters, whitelist, keys) from one database to another and
    /// verify both sides. Any pair of sqlite:, postgresql: and mysql: URLs, either way; a
    /// Torrust Tracker database is read with torrust+sqlite://, torrust+mysql:// or
    /// torrust+postgresql://. The source is never written to.
    Migrate {
        /// The database to read.
        #[arg(long, value_name = "URL")]
        from: String,
        /// The database to write; its migrations are applied first. Must be empty unless --merge.
        #[arg(long, value_name = "URL")]
        to: String,
        /// Copy into a database that already holds rows: `add` adds download counts, `max`
        /// keeps the larger; whitelist entries and keys already there are kept either way.
        #[arg(long, value_name = "HOW")]
        merge: Option<MergeArg>,
        /// Leave source rows that cannot be read (bad hex, wrong length) behind and list them,
        /// instead of stopping.
        #[arg(long)]
        skip_invalid: bool,
        /// Rows per batch.
        #[arg(long, default_value_t = 5000, value_name = "N")]
        batch_rows: usize,
    },
    /// Measure things and print the figures.
    Bench {
        #[command(subcommand)]
        what: BenchWhat,
    },
    /// Show or apply the database migrations without serving.
    Db {
        #[command(subcommand)]
        action: DbAction,
        /// TOML configuration file (database.url); the environment applies as for serve.
        #[arg(long, short, value_name = "FILE", global = true)]
        config: Option<PathBuf>,
    },
    /// Announce to and scrape trackers as a client would (udp://, http://, https://), on a
    /// random info-hash unless one is given; report each step. Exit 0 only if all worked.
    Check {
        #[arg(required = true, value_name = "URL")]
        urls: Vec<String>,
        /// 40 hex digits; default: a random one.
        #[arg(long, value_name = "HEX")]
        info_hash: Option<String>,
        /// A private tracker's key, appended to the announce path.
        #[arg(long, value_name = "KEY")]
        key: Option<String>,
        /// PEM CA to trust for https:// (default: the system's roots).
        #[arg(long, value_name = "FILE")]
        ca_cert: Option<PathBuf>,
        /// One JSON array instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// Change or show the whitelist of a running tracker through its admin API.
    Whitelist {
        #[command(subcommand)]
        action: WhitelistAction,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Create, import, remove or show the keys of a running tracker through its admin API.
    Keys {
        #[command(subcommand)]
        action: KeysAction,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Print the effective configuration (file plus environment), secrets redacted.
    Config {
        /// TOML configuration file to read before the environment.
        #[arg(long, short, value_name = "FILE")]
        config: Option<PathBuf>,
    },
}

#[derive(clap::Args)]
struct ApiArgs {
    /// The admin API, e.g. http://127.0.0.1:1212 (default: api.bind of the configuration).
    #[arg(long, value_name = "URL", global = true)]
    api: Option<String>,
    /// TOML configuration file for api.bind and api.token (SHOAL_API__TOKEN also works).
    #[arg(long, short, value_name = "FILE", global = true)]
    config: Option<PathBuf>,
}

#[derive(Subcommand)]
enum WhitelistAction {
    /// List an info-hash (40 hex digits).
    Add { info_hash: String },
    /// Unlist an info-hash.
    Remove { info_hash: String },
    /// Show every listed info-hash.
    List,
}

#[derive(Subcommand)]
enum KeysAction {
    /// Create a random key, valid for SECS seconds or forever.
    Add {
        #[arg(long, value_name = "SECS")]
        valid_for: Option<u64>,
    },
    /// Add a key of your own (32 characters).
    Import {
        key: String,
        #[arg(long, value_name = "UNIX")]
        valid_until: Option<i64>,
    },
    /// Remove a key.
    Remove { key: String },
    /// Show every key.
    List,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum MergeArg {
    Add,
    Max,
}

#[derive(Subcommand)]
enum BenchWhat {
    /// Time every store operation on a throwaway database; prints one JSON report.
    Persistence {
        /// The database to measure (it is migrated, written to and left with the rows).
        #[arg(long, value_name = "URL")]
        db_url: String,
        /// Repetitions of each per-row operation.
        #[arg(long, default_value_t = 1000, value_name = "N")]
        ops: usize,
        /// Tasks for the concurrent runs.
        #[arg(long, default_value_t = 4, value_name = "C")]
        concurrency: usize,
        /// Persisted counts for the start-up load (load_all_1m).
        #[arg(long, default_value_t = 1_000_000, value_name = "N")]
        rows: usize,
    },
    /// A UDP responder that answers BEP 15 connect, announce and scrape with correctly sized
    /// packets and does no tracker work: the throughput floor for scripts/bench-throughput.
    UdpFloor {
        #[arg(long, default_value = "127.0.0.1:3000", value_name = "ADDR")]
        bind: std::net::SocketAddr,
        /// Stop after this many seconds.
        #[arg(long, default_value_t = 60, value_name = "S")]
        seconds: u64,
        /// Peers in every announce answer (fewer if the request wants fewer).
        #[arg(long, default_value_t = 20, value_name = "N")]
        peers: usize,
    },
    /// The cost of several nodes: applying another node's peer changes (ns each) and the Redis
    /// memory of a stream that holds one million live peers; prints one JSON object.
    Cluster {
        #[arg(long, value_name = "URL")]
        redis_url: String,
        /// Peer changes to apply and to write (two records each) into the stream.
        #[arg(long, default_value_t = 1_000_000, value_name = "N")]
        changes: usize,
        #[arg(long, default_value_t = 100_000, value_name = "N")]
        torrents: usize,
        /// Records per stream entry (one publisher batch).
        #[arg(long, default_value_t = 1000, value_name = "N")]
        per_entry: usize,
        /// Announces timed from one node to another (two nodes in this process on the bus).
        #[arg(long, default_value_t = 300, value_name = "N")]
        lag_samples: usize,
    },
    /// Send BEP 15 requests at a fixed rate (aquatic_udp_load_test's default mix) and count
    /// answers: for measuring a tracker's CPU per response below saturation.
    UdpLoad {
        #[arg(long, default_value = "127.0.0.1:3000", value_name = "ADDR")]
        server: std::net::SocketAddr,
        /// Requests per second.
        #[arg(long, default_value_t = 50_000, value_name = "N")]
        rate: u64,
        #[arg(long, default_value_t = 20, value_name = "S")]
        seconds: u64,
        #[arg(long, default_value_t = 100_000, value_name = "N")]
        torrents: usize,
        #[arg(long, default_value_t = 1_000_000, value_name = "N")]
        peers: usize,
        /// Peers keep their role and re-announce without an event (a settled swarm).
        #[arg(long)]
        steady: bool,
    },
}

#[derive(Subcommand)]
enum DbAction {
    /// List every migration: applied, pending, or one this binary refuses (changed, unknown).
    Status,
    /// Apply pending migrations and exit.
    Upgrade,
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start runtime: {e}"))
}

fn load_config(file: Option<&std::path::Path>) -> Result<config::Config, String> {
    let loaded = config::load(file, std::env::vars()).map_err(|e| e.to_string())?;
    for var in &loaded.ignored_env {
        eprintln!("shoal: warning: environment variable {var} names no configuration key; ignored");
    }
    Ok(loaded.config)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Check {
            urls,
            info_hash,
            key,
            ca_cert,
            json,
        } => info_hash
            .map(|h| protocol::InfoHash::from_hex(&h).map_err(|e| format!("--info-hash: {e}")))
            .transpose()
            .and_then(|info_hash| {
                check::run(check::Args {
                    urls,
                    info_hash,
                    key,
                    ca_cert,
                    json,
                })
            }),
        Command::Whitelist { action, api } => load_config(api.config.as_deref()).and_then(|c| {
            let order = match action {
                WhitelistAction::Add { info_hash } => admin::Order::List(info_hash),
                WhitelistAction::Remove { info_hash } => admin::Order::Unlist(info_hash),
                WhitelistAction::List => admin::Order::ShowWhitelist,
            };
            admin::run(api.api.as_deref(), &c, order)
        }),
        Command::Keys { action, api } => load_config(api.config.as_deref()).and_then(|c| {
            let order = match action {
                KeysAction::Add { valid_for } => admin::Order::NewKey { valid_for },
                KeysAction::Import { key, valid_until } => {
                    admin::Order::ImportKey { key, valid_until }
                }
                KeysAction::Remove { key } => admin::Order::RemoveKey(key),
                KeysAction::List => admin::Order::ShowKeys,
            };
            admin::run(api.api.as_deref(), &c, order)
        }),
        Command::Config { config } => {
            load_config(config.as_deref()).map(|c| print!("{}", c.to_toml()))
        }
        Command::Serve { config } => load_config(config.as_deref()).and_then(|c| {
            let logs = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(&c.log.level))
                .with_writer(std::io::stderr);
            match c.log.format {
                LogFormat::Text => logs
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                    .init(),
                LogFormat::Json => logs.json().init(),
            }
            runtime()?.block_on(serve::run(c))
        }),
        Command::Migrate {
            from,
            to,
            merge,
            skip_invalid,
            batch_rows,
        } => runtime().and_then(|rt| {
            let merge = merge.map(|m| match m {
                MergeArg::Add => store::copy::Merge::Add,
                MergeArg::Max => store::copy::Merge::Max,
            });
            rt.block_on(migrate::run(migrate::Args {
                from,
                to,
                merge,
                skip_invalid,
                batch_rows: batch_rows.max(1),
            }))
        }),
        Command::Bench {
            what:
                BenchWhat::Persistence {
                    db_url,
                    ops,
                    concurrency,
                    rows,
                },
        } => runtime().and_then(|rt| {
            rt.block_on(bench::run(bench::Args {
                db_url,
                ops,
                concurrency,
                rows,
            }))
        }),
        Command::Bench {
            what:
                BenchWhat::Cluster {
                    redis_url,
                    changes,
                    torrents,
                    per_entry,
                    lag_samples,
                },
        } => runtime().and_then(|rt| {
            rt.block_on(shoal::bench::cluster::run(shoal::bench::cluster::Args {
                redis_url,
                changes: changes.max(1),
                torrents: torrents.max(1),
                per_entry,
                lag_samples,
            }))
        }),
        Command::Bench {
            what:
                BenchWhat::UdpFloor {
                    bind,
                    seconds,
                    peers,
                },
        } => udp_floor::run(bind, seconds, peers),
        Command::Bench {
            what:
                BenchWhat::UdpLoad {
                    server,
                    rate,
                    seconds,
                    torrents,
                    peers,
                    steady,
                },
        } => udp_load::run(udp_load::Args {
            server,
            rate,
            seconds,
            torrents,
            peers,
            steady,
        }),
        Command::Db { action, config } => load_config(config.as_deref()).and_then(|c| {
            runtime()?.block_on(async {
                match action {
                    DbAction::Status => db::status(&c).await,
                    DbAction::Upgrade => db::upgrade(&c).await,
                }
            })
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shoal: error: {e}");
            ExitCode::FAILURE
        }
    }
}
