//! The command line: every command's arguments are its own module's `Args`; this file only
//! names the commands and hands each its arguments.

use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};

use super::{Error, Result, admin, check, db, migrate, serve};
use crate::bench;
use crate::config::{self, Config};

#[derive(Parser)]
#[command(
    name = "shoal",
    version,
    about = "A BitTorrent tracker (UDP and HTTP) that keeps its download counts in SQLite, PostgreSQL or MySQL/MariaDB, on one node or several."
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// A configuration file, read before the environment.
#[derive(clap::Args)]
pub struct ConfigArg {
    /// TOML configuration file; every key can also be set as SHOAL_<SECTION>__<KEY>.
    #[arg(long, short, value_name = "FILE")]
    config: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the tracker. Without --config: public mode, UDP on 0.0.0.0:6969, HTTP on
    /// 0.0.0.0:7070, admin API on 127.0.0.1:1212, SQLite in ./data/shoal.db.
    Serve(ConfigArg),
    Migrate(migrate::Args),
    /// Measure things and print the figures.
    Bench {
        #[command(subcommand)]
        what: Bench,
    },
    Db(db::Args),
    Check(check::Args),
    Whitelist(admin::WhitelistArgs),
    Keys(admin::KeysArgs),
    Clients(admin::ClientsArgs),
    /// Print the effective configuration (file plus environment), secrets redacted.
    Config(ConfigArg),
}

#[derive(Subcommand)]
enum Bench {
    Persistence(bench::persistence::Args),
    UdpFloor(bench::udp_floor::Args),
    Cluster(bench::cluster::Args),
    UdpLoad(bench::udp_load::Args),
    Swarm(bench::swarm::Args),
    UdpSwarm(bench::udp_swarm::Args),
    Stream(bench::stream::Args),
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(Error::io("cannot start the runtime"))
}

fn load_config(file: Option<&Path>) -> Result<Config> {
    let loaded = config::load(file, std::env::vars())?;
    for var in &loaded.ignored_env {
        eprintln!("shoal: warning: {}", ignored(var));
    }
    Ok(loaded.config)
}

fn ignored(var: &str) -> String {
    format!("environment variable {var} names no configuration key; ignored")
}

/// `serve` logs everything, warnings and the error it stops with included, through the
/// formatter `[log]` chose, so a JSON log stays JSON to its last line.
fn serve(file: Option<&Path>) -> Result<()> {
    let loaded = config::load(file, std::env::vars())?;
    serve::init_logs(&loaded.config.log);
    for var in &loaded.ignored_env {
        tracing::warn!("{}", ignored(var));
    }
    for warning in loaded.config.warnings() {
        tracing::warn!("{warning}");
    }
    let file = file.map(Path::to_path_buf);
    let result = runtime().and_then(|rt| rt.block_on(serve::run(loaded.config, file)));
    result.map_err(|e| {
        tracing::error!("{e}");
        Error::Logged(Box::new(e))
    })
}

/// Runs the command the line names.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Serve(c) => serve(c.config.as_deref()),
        Command::Migrate(args) => Ok(runtime()?.block_on(migrate::run(args))?),
        Command::Bench { what } => match what {
            Bench::Persistence(args) => runtime()?.block_on(bench::persistence::run(args)),
            Bench::Cluster(args) => runtime()?.block_on(bench::cluster::run(args)),
            Bench::UdpFloor(args) => bench::udp_floor::run(args),
            Bench::UdpLoad(args) => bench::udp_load::run(args),
            Bench::Swarm(args) => bench::swarm::run(args),
            Bench::UdpSwarm(args) if args.expire_secs > 0 => bench::udp_expiry::main(&args),
            Bench::UdpSwarm(args) => bench::udp_swarm::run(args),
            Bench::Stream(args) => runtime()?.block_on(bench::stream::run(args)),
        },
        Command::Db(args) => {
            let config = load_config(args.config.as_deref())?;
            runtime()?.block_on(async {
                match args.action {
                    db::Action::Status => db::status(&config).await,
                    db::Action::Upgrade => db::upgrade(&config).await,
                }
            })
        }
        Command::Check(args) => check::run(args),
        Command::Whitelist(a) => {
            let config = load_config(a.api.config.as_deref())?;
            admin::run(&a.api, &config, a.action.into())
        }
        Command::Keys(a) => {
            let config = load_config(a.api.config.as_deref())?;
            admin::run(&a.api, &config, a.action.into())
        }
        Command::Clients(a) => {
            let config = load_config(a.api.config.as_deref())?;
            admin::run(&a.api, &config, a.action.into())
        }
        Command::Config(c) => load_config(c.config.as_deref()).map(|c| print!("{}", c.to_toml())),
    }
}
