//! The commands a user runs: `serve`, `migrate`, `db status|upgrade`, `check`, and the admin
//! commands (`whitelist`, `keys`) that talk to a running tracker.

pub mod admin;
pub mod check;
pub mod cli;
pub mod client;
pub mod db;
pub mod migrate;
pub mod serve;

/// Why a command failed: what it was doing, with the cause kept (`source()`), not flattened
/// into text at the first `?`. Printed as "what: cause".
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("{what}: {source}")]
    Store {
        what: String,
        source: store::StoreError,
    },
    #[error("{what}: {source}")]
    Bus {
        what: String,
        source: redis::RedisError,
    },
    #[error(transparent)]
    Client(#[from] client::Error),
    /// The admin API answered, and refused.
    #[error("the API refused ({status}): {why}")]
    Refused { status: u16, why: String },
    #[error("the API answered {status} with something not JSON: {source}")]
    NotJson {
        status: u16,
        source: serde_json::Error,
    },
    /// What the command itself found: a refused database explained, a check that failed.
    #[error("{0}")]
    Said(String),
    /// Already logged through the configured formatter: not printed again.
    #[error("{0}")]
    Logged(Box<Error>),
}

impl Error {
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let what = what.into();
        move |source| Error::Io { what, source }
    }

    pub fn bus(what: impl Into<String>) -> impl FnOnce(redis::RedisError) -> Error {
        let what = what.into();
        move |source| Error::Bus { what, source }
    }

    pub fn store(what: impl Into<String>) -> impl FnOnce(store::StoreError) -> Error {
        let what = what.into();
        move |source| Error::Store { what, source }
    }
}

impl From<String> for Error {
    fn from(s: String) -> Self {
        Error::Said(s)
    }
}

pub type Result<T> = std::result::Result<T, Error>;
