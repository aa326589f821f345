//! `shoal migrate` end to end: all six directions between SQLite, PostgreSQL and MariaDB,
//! merges, and adoption of Torrust Tracker databases on each backend.

mod common;

use std::collections::BTreeMap;

use common::stores::*;
use common::*;
use protocol::Key;
use store::{
    AnyStore, AuthKey, AuthKeyStore, ClientRule, ClientRuleStore, Connection, DatabaseUrl,
    RuleKind, SchemaMigrator, TorrentMetricsStore, WhitelistEntry, WhitelistStore,
};

fn seed(url: &str) {
    block_on(async {
        let s = AnyStore::open(&DatabaseUrl::parse(url).unwrap(), 2)
            .await
            .unwrap();
        s.migrate().await.unwrap();
        let deltas: Vec<_> = (0..2600u32)
            .map(|n| (big_hash(n), u64::from(n % 7) + 1))
            .collect();
        s.add_downloads(&deltas).await.unwrap();
        s.save_torrent_downloads(&big_hash(5000), i64::MAX as u64)
            .await
            .unwrap();
        s.save_torrent_downloads(&big_hash(5001), 0).await.unwrap();
        s.save_global_downloads((1 << 40) + 3).await.unwrap();
        for n in 0..700u32 {
            s.add_info_hash_to_whitelist(&WhitelistEntry {
                info_hash: big_hash(n * 3),
                added_at: 1_700_000_000 + i64::from(n),
            })
            .await
            .unwrap();
        }
        for n in 0..650u32 {
            let key: Key = format!("{n:0>32}").parse().unwrap();
            let valid_until = if n % 2 == 0 {
                None
            } else {
                Some(1_800_000_000 + i64::from(n))
            };
            s.add_key_to_keys(&AuthKey {
                key,
                valid_until,
                created_at: 1_600_000_000,
            })
            .await
            .unwrap();
        }
        for (n, prefix) in ["-qB4520-", "-XL", "M7-2-2--", "-q/B%"].iter().enumerate() {
            let kind = if n % 2 == 0 {
                RuleKind::Deny
            } else {
                RuleKind::Allow
            };
            s.add_client_rule(&ClientRule {
                prefix: prefix.to_string(),
                kind,
                added_at: 1_650_000_000 + n as i64,
            })
            .await
            .unwrap();
        }
        s.close().await;
    });
}

#[test]
fn copies_every_row_in_all_six_directions() {
    let dir = temp_dir();
    let sqlite = |n: u32| format!("sqlite://{}/db{n}/shoal.db", dir.path().display());
    let first = sqlite(1);
    seed(&first);
    let want = contents(&first);
    assert_eq!(want.torrents.len(), 2602);
    assert_eq!(want.rules.len(), 4);
    // sqlite → postgres → mariadb → sqlite → mariadb → postgres → sqlite
    let chain = [
        first.clone(),
        database("postgres").unwrap(),
        database("mariadb").unwrap(),
        sqlite(2),
        database("mariadb").unwrap(),
        database("postgres").unwrap(),
        sqlite(3),
    ];
    for pair in chain.windows(2) {
        let (ok, out) = migrate(&["--from", &pair[0], "--to", &pair[1]]);
        assert!(ok, "{} -> {}: {out}", pair[0], pair[1]);
        assert_eq!(out.matches(" ok\n").count(), 5, "{out}");
        assert!(
            out.lines()
                .any(|l| l.starts_with("torrents") && l.matches(" 2602").count() == 3),
            "{out}"
        );
        assert!(
            !out.contains("shoal-test-pw"),
            "passwords never show: {out}"
        );
        assert_eq!(contents(&pair[1]), want, "{} -> {}", pair[0], pair[1]);
    }
    // The source was not written to: still the same, and no WAL switch on a read-only open.
    assert_eq!(contents(&first), want);
}

#[test]
fn a_destination_with_rows_needs_a_merge_rule() {
    let dir = temp_dir();
    let src = format!("sqlite://{}/src.db", dir.path().display());
    let dst = database("postgres").unwrap();
    seed(&src);
    block_on(async {
        let s = AnyStore::open(&DatabaseUrl::parse(&dst).unwrap(), 2)
            .await
            .unwrap();
        s.migrate().await.unwrap();
        s.save_torrent_downloads(&big_hash(1), 100).await.unwrap();
        s.save_torrent_downloads(&big_hash(9999), 4).await.unwrap();
        s.add_info_hash_to_whitelist(&WhitelistEntry {
            info_hash: big_hash(0),
            added_at: 5,
        })
        .await
        .unwrap();
        s.close().await;
    });
    let (ok, out) = migrate(&["--from", &src, "--to", &dst]);
    assert!(!ok && out.contains("--merge"), "{out}");
    assert_eq!(
        contents(&dst).torrents.len(),
        2,
        "a refused copy writes nothing"
    );

    let (ok, out) = migrate(&["--from", &src, "--to", &dst, "--merge", "max"]);
    assert!(ok, "{out}");
    let c = contents(&dst);
    assert_eq!(
        (
            c.torrents[&big_hash(1)],
            c.torrents[&big_hash(2)],
            c.torrents[&big_hash(9999)]
        ),
        (100, 3, 4)
    );
    assert_eq!(c.torrents.len(), 2603);
    assert_eq!(
        c.whitelist[&big_hash(0)],
        5,
        "entries already there are kept"
    );

    // Adding i64::MAX to itself cannot be stored: the copy stops and writes nothing.
    let (ok, out) = migrate(&["--from", &src, "--to", &dst, "--merge", "add"]);
    assert!(!ok && out.contains("overflows"), "{out}");
    assert_eq!(
        contents(&dst),
        c,
        "a failed copy leaves the destination as it was"
    );
    block_on(async {
        let s = AnyStore::open(&DatabaseUrl::parse(&dst).unwrap(), 1)
            .await
            .unwrap();
        s.save_torrent_downloads(&big_hash(5000), 0).await.unwrap();
        s.close().await;
    });
    let (ok, out) = migrate(&["--from", &src, "--to", &dst, "--merge", "add"]);
    assert!(ok, "{out}");
    let c = contents(&dst);
    assert_eq!(
        (c.torrents[&big_hash(1)], c.torrents[&big_hash(2)]),
        (102, 6)
    );
    assert_eq!(
        c.total,
        Some(((1 << 40) + 3) * 2),
        "max kept the source's total, add doubled it"
    );
}

/// A database laid out as Torrust Tracker writes it, with one malformed row.
fn torrust_database(backend: &str, dir: &std::path::Path, with_history: bool) -> String {
    let url = database(backend)
        .unwrap_or_else(|| format!("sqlite://{}/torrust.db?mode=rwc", dir.display()));
    let (id, text40, text32, key_col, keys_table) = match backend {
        "sqlite" => (
            "id INTEGER PRIMARY KEY AUTOINCREMENT",
            "TEXT",
            "TEXT",
            "key",
            "keys",
        ),
        "postgres" => (
            "id SERIAL PRIMARY KEY",
            "VARCHAR(40)",
            "VARCHAR(32)",
            "key",
            "keys",
        ),
        _ => (
            "id integer PRIMARY KEY AUTO_INCREMENT",
            "VARCHAR(40)",
            "VARCHAR(32)",
            "`key`",
            "`keys`",
        ),
    };
    let valid_until = if backend == "mariadb" {
        "INT(10)"
    } else {
        "INTEGER"
    };
    let mut sql = format!(
        "CREATE TABLE whitelist ({id}, info_hash {text40} NOT NULL UNIQUE);
         CREATE TABLE torrents ({id}, info_hash {text40} NOT NULL UNIQUE, completed INTEGER DEFAULT 0 NOT NULL);
         CREATE TABLE {keys_table} ({id}, {key_col} {text32} NOT NULL UNIQUE, valid_until {valid_until});
         CREATE TABLE torrent_aggregate_metrics ({id}, metric_name {text40} NOT NULL UNIQUE, value INTEGER DEFAULT 0 NOT NULL);
         INSERT INTO torrents (info_hash, completed) VALUES ('{}', 7), ('{}', 2147483647), ('not-hex', 1);
         INSERT INTO whitelist (info_hash) VALUES ('{}');
         INSERT INTO {keys_table} ({key_col}, valid_until) VALUES ('TorrustKeyTorrustKeyTorrustKey01', 1900000000), ('TorrustKeyTorrustKeyTorrustKey02', NULL);
         INSERT INTO torrent_aggregate_metrics (metric_name, value) VALUES ('torrents_downloads_total', 9);",
        big_hash(1).to_hex(),
        big_hash(2).to_hex().to_uppercase(),
        big_hash(3).to_hex(),
    );
    if with_history {
        // Torrust's own sqlx history: versions shoal does not know.
        let checksum = if backend == "postgres" {
            "'\\x00'::bytea"
        } else {
            "x'00'"
        };
        let (blob, boolean) = if backend == "postgres" {
            ("BYTEA", "BOOLEAN")
        } else {
            ("BLOB", "BOOLEAN")
        };
        sql.push_str(&format!(
            "CREATE TABLE _sqlx_migrations (version BIGINT PRIMARY KEY, description TEXT NOT NULL, installed_on TIMESTAMP, success {boolean} NOT NULL, checksum {blob} NOT NULL, execution_time BIGINT NOT NULL);
             INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) VALUES (20240730183000, 'torrust tracker create all tables', TRUE, {checksum}, 1);"
        ));
    }
    block_on(async {
        let s = AnyStore::open(&DatabaseUrl::parse(&url).unwrap(), 1)
            .await
            .unwrap();
        let sql = sqlx::AssertSqlSafe(sql);
        match &s {
            AnyStore::Sqlite(s) => sqlx::raw_sql(sql).execute(s.pool()).await.map(drop),
            AnyStore::Postgres(s) => sqlx::raw_sql(sql).execute(s.pool()).await.map(drop),
            AnyStore::MySql(s) => sqlx::raw_sql(sql).execute(s.pool()).await.map(drop),
        }
        .unwrap();
        s.close().await;
    });
    url.replace("?mode=rwc", "")
}

/// What a refused database must still be after Shoal has looked at it: for SQLite every byte
/// of its folder (the header's journal-mode bytes 18-19 included), for a server its tables.
fn fingerprint(url: &str) -> Vec<(String, Vec<u8>)> {
    let parsed = DatabaseUrl::parse(url).unwrap();
    if let Some(path) = parsed.sqlite_path() {
        let mut files: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().contains("torrust"))
            .map(|p| (p.display().to_string(), std::fs::read(&p).unwrap()))
            .collect();
        files.sort();
        return files;
    }
    block_on(async {
        let s = AnyStore::open(&parsed, 1).await.unwrap();
        let sql = "SELECT table_name FROM information_schema.tables WHERE table_schema NOT IN ('pg_catalog', 'information_schema', 'mysql', 'performance_schema', 'sys') ORDER BY 1";
        let names: Vec<String> = match &s {
            AnyStore::Postgres(s) => sqlx::query_scalar(sql).fetch_all(s.pool()).await.unwrap(),
            AnyStore::MySql(s) => sqlx::query_scalar(sql).fetch_all(s.pool()).await.unwrap(),
            AnyStore::Sqlite(_) => unreachable!(),
        };
        s.close().await;
        names.into_iter().map(|n| (n, vec![])).collect()
    })
}

fn adopts_torrust(backend: &str, with_history: bool) {
    let dir = temp_dir();
    let torrust = torrust_database(backend, dir.path(), with_history);
    let dst = match backend {
        "sqlite" => format!("sqlite://{}/shoal.db", dir.path().display()),
        other => database(other).unwrap(),
    };
    let untouched = fingerprint(&torrust);
    if backend == "sqlite" {
        assert_eq!(
            untouched[0].1[18..20],
            [1, 1],
            "a rollback-journal database to begin with"
        );
    }

    // serve refuses it and names the command.
    let err = command(&["serve"])
        .env("SHOAL_DATABASE__URL", &torrust)
        .env("SHOAL_UDP__BIND", "[]")
        .env("SHOAL_HTTP__BIND", "[]")
        .env("SHOAL_API__BIND", "127.0.0.1:0")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&err.stderr);
    assert!(
        !err.status.success() && text.contains("shoal migrate --from torrust+"),
        "{text}"
    );
    // Neither serve, nor db status or upgrade, nor a copy into it writes a byte to it.
    let empty = prepared(&format!("sqlite://{}/empty.db", dir.path().display()));
    // Both say what they found, by Torrust's own history, and name the command; neither
    // exits 0.
    let found = if with_history {
        "Torrust Tracker v4 database (Torrust's migrations 20240730183000)"
    } else {
        "Torrust Tracker v3 database"
    };
    for action in ["status", "upgrade"] {
        let out = command(&["db", action])
            .env("SHOAL_DATABASE__URL", &torrust)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.status.success(), "db {action}: {text}");
        assert!(
            text.contains(found) && text.contains("shoal migrate --from torrust+"),
            "db {action}: {text}"
        );
        assert!(
            !text.contains("UNKNOWN") && !text.contains("pending;"),
            "db {action}: {text}"
        );
    }
    // A refused copy leaves no new SQLite file behind.
    let fresh = dir.path().join("fresh.db");
    let (ok, out) = migrate(&[
        "--from",
        &torrust,
        "--to",
        &format!("sqlite://{}", fresh.display()),
    ]);
    assert!(!ok && out.contains("torrust+"), "{out}");
    assert!(
        !fresh.exists(),
        "a refused migrate created {}",
        fresh.display()
    );
    let (ok, out) = migrate(&["--from", &empty, "--to", &torrust]);
    assert!(
        !ok && out.contains("neither serves nor changes it"),
        "{out}"
    );
    assert!(
        fingerprint(&torrust) == untouched,
        "the refused database was written to"
    );

    // A bad row mid-stream, one row per batch: the rows before it are not committed either.
    let from = format!("torrust+{torrust}");
    let before = contents(&prepared(&dst));
    let (ok, out) = migrate_in_batches(1, &["--from", &from, "--to", &dst]);
    assert!(
        !ok && out.contains("torrents row id=3")
            && out.contains("not-hex")
            && out.contains("--skip-invalid"),
        "{out}"
    );
    assert_eq!(contents(&dst), before, "a failed copy writes nothing");
    let (ok, out) = migrate_in_batches(1, &["--from", &from, "--to", &dst, "--skip-invalid"]);
    assert!(
        ok,
        "a failed copy left nothing behind, so it runs again without --merge: {out}"
    );
    assert!(out.contains("skipped: torrents row id=3"), "{out}");
    let c = contents(&dst);
    assert_eq!(
        c.torrents,
        BTreeMap::from([(big_hash(1), 7), (big_hash(2), 2147483647)])
    );
    assert_eq!(c.total, Some(9));
    assert_eq!(
        c.whitelist.keys().copied().collect::<Vec<_>>(),
        vec![big_hash(3)]
    );
    let keys: Vec<_> = c
        .keys
        .iter()
        .map(|(k, (v, _))| (k.to_string(), *v))
        .collect();
    assert_eq!(
        keys,
        vec![
            ("TorrustKeyTorrustKeyTorrustKey01".into(), Some(1900000000)),
            ("TorrustKeyTorrustKeyTorrustKey02".into(), None)
        ]
    );
}

#[test]
fn adopts_torrust_sqlite_without_history() {
    adopts_torrust("sqlite", false);
}

#[test]
fn adopts_torrust_sqlite_with_history() {
    adopts_torrust("sqlite", true);
}

#[test]
fn adopts_torrust_postgres() {
    adopts_torrust("postgres", true);
}

#[test]
fn adopts_torrust_mariadb() {
    adopts_torrust("mariadb", false);
}
