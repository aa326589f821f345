//! `shoal`: a BitTorrent tracker on SQLite, PostgreSQL or MySQL/MariaDB, on one node or
//! several. Everything it does is in the library; this reads the command line.

use std::process::ExitCode;

use clap::Parser;
use shoal::cmd::cli::{self, Cli};

fn main() -> ExitCode {
    match cli::run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(shoal::cmd::Error::Logged(_)) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("shoal: error: {e}");
            ExitCode::FAILURE
        }
    }
}
