//! The commands a user runs: `serve`, `migrate`, `db status|upgrade`.

pub mod db;
pub mod migrate;
pub mod serve;
