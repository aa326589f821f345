//! Between the tracker and the database: the flusher that writes download deltas, and the
//! words for a database Shoal will not use.

pub mod flusher;

use store::{DatabaseUrl, StoreError};

/// The message for a store error, with the command to run when the database is Torrust's.
/// What a database shoal did not create is, and the command that copies its data.
pub fn adopt(found: &store::Foreign, url: &DatabaseUrl) -> String {
    format!(
        "{}: {found}; shoal neither serves nor changes it. Copy its data into a new database with: shoal migrate --from torrust+{} --to <new database url>",
        url.redacted(),
        url.redacted()
    )
}

pub fn explain(e: StoreError, url: &DatabaseUrl) -> String {
    match e {
        StoreError::Foreign(found) => adopt(&found, url),
        other => other.to_string(),
    }
}
