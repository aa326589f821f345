//! The commands a user runs: `serve`, `migrate`, `db status|upgrade`, `check`, and the admin
//! commands (`whitelist`, `keys`) that talk to a running tracker.

pub mod admin;
pub mod check;
pub mod cli;
pub mod client;
pub mod db;
pub mod migrate;
pub mod serve;
