//! Between the tracker and the database: the flusher that writes download deltas, and the
//! words for a database Shoal will not use.

pub mod flusher;

use store::{DatabaseUrl, StoreError};

/// The message for a store error, with the command to run when the database is Torrust's.
pub fn explain(e: StoreError, url: &DatabaseUrl) -> String {
    match e {
        StoreError::Foreign => format!(
            "{}: {e}. Copy its data into a new database with: shoal migrate --from torrust+{} --to <new database url>",
            url.redacted(),
            url.redacted()
        ),
        other => other.to_string(),
    }
}
