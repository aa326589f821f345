//! Databases as tests see them: whole contents to compare, and `shoal migrate` runs.

use std::collections::BTreeMap;

use protocol::{InfoHash, Key};
use store::{
    AnyStore, AuthKeyStore, ClientRuleStore, Connection, DatabaseUrl, SchemaMigrator,
    TorrentMetricsStore, WhitelistStore,
};

use super::{block_on, command};

/// Everything a database holds, in comparable form.
#[derive(Debug, PartialEq, Eq)]
pub struct Contents {
    pub torrents: BTreeMap<InfoHash, u64>,
    pub total: Option<u64>,
    pub whitelist: BTreeMap<InfoHash, i64>,
    pub keys: BTreeMap<Key, (Option<i64>, i64)>,
    /// prefix -> (kind, added_at)
    pub rules: BTreeMap<String, (&'static str, i64)>,
}

pub fn contents(url: &str) -> Contents {
    block_on(async {
        let s = AnyStore::open(&DatabaseUrl::parse(url).unwrap(), 2)
            .await
            .unwrap();
        let mut torrents = BTreeMap::new();
        s.load_all_torrents_downloads(|h, n| {
            torrents.insert(h, n);
        })
        .await
        .unwrap();
        let c = Contents {
            torrents,
            total: s.load_global_downloads().await.unwrap(),
            whitelist: s
                .load_whitelist()
                .await
                .unwrap()
                .into_iter()
                .map(|e| (e.info_hash, e.added_at))
                .collect(),
            keys: s
                .load_keys()
                .await
                .unwrap()
                .into_iter()
                .map(|k| (k.key, (k.valid_until, k.created_at)))
                .collect(),
            rules: s
                .load_client_rules()
                .await
                .unwrap()
                .into_iter()
                .map(|r| (r.prefix, (r.kind.as_str(), r.added_at)))
                .collect(),
        };
        s.close().await;
        c
    })
}

/// Opens the database and applies Shoal's schema: an empty Shoal database.
pub fn prepared(url: &str) -> String {
    block_on(async {
        let s = AnyStore::open(&DatabaseUrl::parse(url).unwrap(), 1)
            .await
            .unwrap();
        s.migrate().await.unwrap();
        s.close().await;
    });
    url.to_string()
}

pub fn big_hash(n: u32) -> InfoHash {
    let mut b = [0u8; 20];
    b[..4].copy_from_slice(&n.to_le_bytes());
    b[10] = 0xab;
    InfoHash(b)
}

/// `shoal migrate` with 500 rows per batch: (succeeded, stdout and stderr).
pub fn migrate(args: &[&str]) -> (bool, String) {
    migrate_in_batches(500, args)
}

pub fn migrate_in_batches(rows: usize, args: &[&str]) -> (bool, String) {
    let rows = rows.to_string();
    let mut all = vec!["migrate", "--batch-rows", &rows];
    all.extend_from_slice(args);
    let out = command(&all).output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}
