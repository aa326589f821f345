//! Shoal, the program: a BitTorrent tracker on SQLite, PostgreSQL or MySQL/MariaDB. One
//! folder per part (docs/design.md, "Crates"); `main.rs` only reads the command line.
//!
//! Dependencies between the parts point one way: `cmd` → `server`, `persist` → `tracker`
//! → `config`; `bench` stands beside them.

pub mod bench;
pub mod cluster;
pub mod cmd;
pub mod config;
pub mod os;
pub mod persist;
pub mod server;
pub mod tracker;
pub mod trust;
