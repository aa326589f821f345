//! Starts the real `shoal` binary on ephemeral loopback ports and speaks to it: `process`
//! runs it, `clients` talk to it, `stores` look into its databases.
#![allow(dead_code)]

pub mod clients;
pub mod nodes;
pub mod process;
pub mod stores;
pub mod tls;
pub mod ws;

#[allow(unused_imports)]
pub use clients::*;
#[allow(unused_imports)]
pub use process::*;
