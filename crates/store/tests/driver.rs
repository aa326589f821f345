//! One driver suite, run unchanged against SQLite, PostgreSQL and MariaDB on real databases.
//! The servers come from `testkit` (started on loopback, or named by SHOAL_TEST_*_URL).

use std::collections::HashMap;

use protocol::{InfoHash, Key};
use store::{
    AnyStore, AuthKey, AuthKeyStore, ClientRule, Connection, DatabaseUrl, MigrationState, RuleKind,
    SchemaMigrator, Store, StoreError, TorrentMetricsStore, WhitelistEntry, WhitelistStore,
};
use testkit::Kind;

#[derive(Clone, Copy, Debug)]
enum Backend {
    Sqlite,
    Postgres,
    MariaDb,
}

async fn fresh_url(b: Backend) -> String {
    match b {
        Backend::Sqlite => {
            use std::hash::{BuildHasher, RandomState};
            let n = RandomState::new().hash_one(std::time::SystemTime::now());
            // Under target/tmp (Cargo's scratch space for tests), not /tmp: nothing to clean.
            let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
                .join(format!("shoal-store-{}-{n:x}", std::process::id()));
            format!("sqlite://{}/nested/shoal.db", dir.display())
        }
        Backend::Postgres => testkit::fresh_database(Kind::Postgres).await,
        Backend::MariaDb => testkit::fresh_database(Kind::MariaDb).await,
    }
}

async fn open(url: &str, max_connections: u32) -> AnyStore {
    AnyStore::open(&DatabaseUrl::parse(url).unwrap(), max_connections)
        .await
        .unwrap()
}

/// Runs SQL that the store API cannot express (tampering with migration history).
async fn exec(s: &AnyStore, sql: String) {
    let sql = sqlx::AssertSqlSafe(sql);
    match s {
        AnyStore::Sqlite(s) => sqlx::raw_sql(sql).execute(s.pool()).await.map(drop),
        AnyStore::Postgres(s) => sqlx::raw_sql(sql).execute(s.pool()).await.map(drop),
        AnyStore::MySql(s) => sqlx::raw_sql(sql).execute(s.pool()).await.map(drop),
    }
    .unwrap();
}

fn h(n: u32) -> InfoHash {
    let mut b = [0u8; 20];
    b[..4].copy_from_slice(&n.to_be_bytes());
    b[19] = 0xff;
    InfoHash(b)
}

fn key(s: &str) -> Key {
    format!("{s:A<32}").parse().unwrap()
}

/// The contract every driver keeps.
async fn suite<S: Store>(s: S) {
    let status = s.migration_status().await.unwrap();
    assert!(
        status.iter().all(|m| m.state == MigrationState::Pending),
        "{status:?}"
    );
    s.migrate().await.unwrap();
    s.migrate().await.expect("migrations are idempotent");
    let status = s.migration_status().await.unwrap();
    assert!(
        !status.is_empty() && status.iter().all(|m| m.state == MigrationState::Applied),
        "{status:?}"
    );
    assert_eq!(status[0].version, 20261122000000);
    s.ping().await.unwrap();

    torrents(&s).await;
    whitelist(&s).await;
    keys(&s).await;
    client_rules(&s).await;
    concurrency(&s).await;
}

async fn client_rules<S: Store>(s: &S) {
    assert!(s.load_client_rules().await.unwrap().is_empty());
    let rule = |prefix: &str, kind, added_at| ClientRule {
        prefix: prefix.into(),
        kind,
        added_at,
    };
    s.add_client_rule(&rule("-qB4520-", RuleKind::Deny, 10))
        .await
        .unwrap();
    s.add_client_rule(&rule("-TR", RuleKind::Allow, 11))
        .await
        .unwrap();
    // Same letters, other case: another prefix, as peer ids are case-sensitive.
    s.add_client_rule(&rule("-tr", RuleKind::Deny, 12))
        .await
        .unwrap();
    // A prefix added again changes its kind and keeps its first added_at.
    s.add_client_rule(&rule("-qB4520-", RuleKind::Allow, 99))
        .await
        .unwrap();
    assert_eq!(
        s.load_client_rules().await.unwrap(),
        vec![
            rule("-TR", RuleKind::Allow, 11),
            rule("-qB4520-", RuleKind::Allow, 10),
            rule("-tr", RuleKind::Deny, 12),
        ]
    );
    assert!(s.remove_client_rule("-tr").await.unwrap());
    assert!(!s.remove_client_rule("-tr").await.unwrap());
    assert_eq!(s.load_client_rules().await.unwrap().len(), 2);
}

async fn torrents<S: Store>(s: &S) {
    assert_eq!(s.load_torrent_downloads(&h(1)).await.unwrap(), None);
    s.increase_downloads_for_torrent(&h(1)).await.unwrap();
    s.increase_downloads_for_torrent(&h(1)).await.unwrap();
    assert_eq!(s.load_torrent_downloads(&h(1)).await.unwrap(), Some(2));
    for edge in [0, u32::MAX as u64, (1u64 << 32) + 5, i64::MAX as u64] {
        s.save_torrent_downloads(&h(2), edge).await.unwrap();
        assert_eq!(s.load_torrent_downloads(&h(2)).await.unwrap(), Some(edge));
    }
    assert!(
        matches!(
            s.save_torrent_downloads(&h(3), u64::MAX).await,
            Err(StoreError::BadRow { .. })
        ),
        "beyond 2^63-1 is refused"
    );
    assert_eq!(s.load_torrent_downloads(&h(3)).await.unwrap(), None);
    s.save_torrent_downloads(&h(2), u32::MAX as u64)
        .await
        .unwrap();

    // Batched deltas add to torrents and to the global total in one go; duplicates merge.
    assert_eq!(s.load_global_downloads().await.unwrap(), None);
    let mut deltas: Vec<_> = (10..2510).map(|i| (h(i), 1)).collect();
    deltas.push((h(2), 7));
    deltas.push((h(2), 3));
    s.add_downloads(&deltas).await.unwrap();
    s.add_downloads(&[]).await.unwrap();
    assert_eq!(
        s.load_torrent_downloads(&h(2)).await.unwrap(),
        Some(u32::MAX as u64 + 10),
        "a delta adds, it does not assign"
    );
    assert_eq!(s.load_torrent_downloads(&h(2509)).await.unwrap(), Some(1));
    assert_eq!(s.load_global_downloads().await.unwrap(), Some(2510));
    // A batch that cannot be stored changes nothing.
    assert!(
        s.add_downloads(&[(h(5000), 1), (h(5001), u64::MAX)])
            .await
            .is_err()
    );
    assert_eq!(s.load_torrent_downloads(&h(5000)).await.unwrap(), None);
    assert_eq!(s.load_global_downloads().await.unwrap(), Some(2510));

    s.increase_global_downloads(5).await.unwrap();
    assert_eq!(s.load_global_downloads().await.unwrap(), Some(2515));
    s.save_global_downloads(1 << 40).await.unwrap();
    assert_eq!(s.load_global_downloads().await.unwrap(), Some(1 << 40));
    s.increase_global_downloads(1).await.unwrap();
    assert_eq!(
        s.load_global_downloads().await.unwrap(),
        Some((1 << 40) + 1)
    );

    let mut seen = HashMap::new();
    let n = s
        .load_all_torrents_downloads(|k, v| {
            seen.insert(k, v);
        })
        .await
        .unwrap();
    assert_eq!(n, 2502);
    assert_eq!(seen.len(), 2502);
    assert_eq!(seen[&h(1)], 2);
    assert_eq!(seen[&h(2)], u32::MAX as u64 + 10);
}

async fn whitelist<S: Store>(s: &S) {
    assert!(s.load_whitelist().await.unwrap().is_empty());
    assert_eq!(s.get_info_hash_from_whitelist(&h(1)).await.unwrap(), None);
    let e = WhitelistEntry {
        info_hash: h(1),
        added_at: 1_700_000_000,
    };
    s.add_info_hash_to_whitelist(&e).await.unwrap();
    // Listing again keeps the first added_at.
    s.add_info_hash_to_whitelist(&WhitelistEntry {
        added_at: 1_800_000_000,
        ..e
    })
    .await
    .unwrap();
    assert_eq!(
        s.get_info_hash_from_whitelist(&h(1)).await.unwrap(),
        Some(e)
    );
    // Hashes that differ only in the last byte, and ones with zero bytes, stay apart.
    let mut zero = [0u8; 20];
    zero[19] = 1;
    let near = WhitelistEntry {
        info_hash: InfoHash(zero),
        added_at: 0,
    };
    let far = WhitelistEntry {
        info_hash: InfoHash([0xff; 20]),
        added_at: i64::MAX,
    };
    s.add_info_hash_to_whitelist(&near).await.unwrap();
    s.add_info_hash_to_whitelist(&far).await.unwrap();
    let mut all = s.load_whitelist().await.unwrap();
    all.sort_by_key(|e| e.info_hash);
    assert_eq!(all, vec![near, e, far]);
    assert!(s.remove_info_hash_from_whitelist(&h(1)).await.unwrap());
    assert!(
        !s.remove_info_hash_from_whitelist(&h(1)).await.unwrap(),
        "second removal finds nothing"
    );
    assert_eq!(s.get_info_hash_from_whitelist(&h(1)).await.unwrap(), None);
    assert_eq!(s.load_whitelist().await.unwrap().len(), 2);
}

async fn keys<S: Store>(s: &S) {
    assert!(s.load_keys().await.unwrap().is_empty());
    let forever = AuthKey {
        key: key("forever"),
        valid_until: None,
        created_at: 1_700_000_000,
    };
    let expiring = AuthKey {
        key: key("expiring"),
        valid_until: Some(1_700_000_100),
        created_at: 1_700_000_000,
    };
    // Same letters, other case: a different key on every backend.
    let upper = AuthKey {
        key: key("EXPIRING"),
        valid_until: Some(i64::MAX),
        created_at: 0,
    };
    for k in [forever, expiring, upper] {
        s.add_key_to_keys(&k).await.unwrap();
    }
    assert_eq!(
        s.get_key_from_keys(&forever.key).await.unwrap(),
        Some(forever)
    );
    assert_eq!(
        s.get_key_from_keys(&expiring.key).await.unwrap(),
        Some(expiring)
    );
    assert_eq!(s.get_key_from_keys(&upper.key).await.unwrap(), Some(upper));
    assert_eq!(s.get_key_from_keys(&key("unknown")).await.unwrap(), None);
    assert!(
        forever.is_valid_at(i64::MAX - 1)
            && expiring.is_valid_at(1_700_000_099)
            && !expiring.is_valid_at(1_700_000_100)
    );

    // Adding an existing key replaces its expiry.
    let renewed = AuthKey {
        valid_until: None,
        ..expiring
    };
    s.add_key_to_keys(&renewed).await.unwrap();
    assert_eq!(
        s.get_key_from_keys(&expiring.key).await.unwrap(),
        Some(renewed)
    );
    let mut all = s.load_keys().await.unwrap();
    all.sort_by_key(|k| k.key);
    let mut want = vec![forever, renewed, upper];
    want.sort_by_key(|k| k.key);
    assert_eq!(all, want);
    assert!(s.remove_key_from_keys(&upper.key).await.unwrap());
    assert!(!s.remove_key_from_keys(&upper.key).await.unwrap());
    assert_eq!(
        s.get_key_from_keys(&renewed.key).await.unwrap(),
        Some(renewed),
        "removing one case leaves the other"
    );
    assert_eq!(s.load_keys().await.unwrap().len(), 2);
}

async fn concurrency<S: Store>(s: &S) {
    let tasks: Vec<_> = (0..8)
        .map(|t| {
            let s = s.clone();
            tokio::spawn(async move {
                for i in 0..25 {
                    s.increase_downloads_for_torrent(&h(9099)).await.unwrap();
                    // Overlapping batches in opposite orders: a deadlock here would fail the flush.
                    let mut batch = vec![(h(9098), 2), (h(9097), 1), (h(9096), 1)];
                    if (t + i) % 2 == 0 {
                        batch.reverse();
                    }
                    s.add_downloads(&batch).await.unwrap();
                    s.increase_global_downloads(1).await.unwrap();
                }
            })
        })
        .collect();
    let before = s.load_global_downloads().await.unwrap().unwrap();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(s.load_torrent_downloads(&h(9099)).await.unwrap(), Some(200));
    assert_eq!(s.load_torrent_downloads(&h(9098)).await.unwrap(), Some(400));
    assert_eq!(s.load_torrent_downloads(&h(9096)).await.unwrap(), Some(200));
    // Each task added 4 per round through batches and 1 directly; some may have landed before `before`.
    let after = s.load_global_downloads().await.unwrap().unwrap();
    assert_eq!(after, (1 << 40) + 1 + 200 * 5, "before the tasks: {before}");
}

async fn run_suite(b: Backend) {
    let url = fresh_url(b).await;
    let s = open(&url, 8).await;
    suite(s.clone()).await;
    s.close().await;
    // Everything survives closing and reopening.
    let s = open(&url, 1).await;
    s.migrate().await.unwrap();
    assert_eq!(s.load_torrent_downloads(&h(9099)).await.unwrap(), Some(200));
    assert_eq!(s.load_keys().await.unwrap().len(), 2);
    assert_eq!(s.load_whitelist().await.unwrap().len(), 2);
    s.close().await;
}

/// The compatibility matrix sets SHOAL_TEST_EXPECT_VERSION to prove which server it tested.
async fn reports_the_server_version(b: Backend) {
    let s = open(&fresh_url(b).await, 1).await;
    let version = s.server_version().await.unwrap();
    assert!(
        version
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric()),
        "{version}"
    );
    if let Ok(want) = std::env::var("SHOAL_TEST_EXPECT_VERSION") {
        assert!(
            version.contains(&want),
            "server reports {version:?}, expected {want:?}"
        );
    }
    eprintln!("{b:?} server version: {version}");
    s.close().await;
}

async fn refuses_unknown_and_changed_migrations(b: Backend) {
    let url = fresh_url(b).await;
    let s = open(&url, 2).await;
    s.migrate().await.unwrap();
    let checksum = match b {
        Backend::Postgres => "'\\x00'::bytea",
        _ => "x'00'",
    };
    exec(&s, format!("INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) VALUES (29991231000000, 'from the future', TRUE, {checksum}, 0)")).await;
    let e = s.migrate().await.unwrap_err().to_string();
    assert!(
        e.contains("29991231000000") && e.contains("newer shoal"),
        "{e}"
    );
    let status = s.migration_status().await.unwrap();
    assert_eq!(
        status.last().map(|m| (m.version, m.state)),
        Some((29991231000000, MigrationState::Unknown))
    );
    exec(
        &s,
        "DELETE FROM _sqlx_migrations WHERE version = 29991231000000".into(),
    )
    .await;

    exec(
        &s,
        format!("UPDATE _sqlx_migrations SET checksum = {checksum} WHERE version = 20261122000000"),
    )
    .await;
    let e = s.migrate().await.unwrap_err().to_string();
    assert!(
        e.contains("20261122000000") && e.contains("checksum"),
        "{e}"
    );
    assert_eq!(
        s.migration_status().await.unwrap()[0].state,
        MigrationState::Changed
    );
    s.close().await;
}

async fn wrong_password_is_a_clear_error_without_the_password(b: Backend) {
    let url = fresh_url(b).await;
    let wrong = url.replace("shoal-test-pw", "not-the-password");
    assert_ne!(wrong, url);
    let e = AnyStore::open(&DatabaseUrl::parse(&wrong).unwrap(), 1)
        .await
        .err()
        .expect("a wrong password must fail")
        .to_string();
    assert!(
        e.contains("cannot open") && !e.contains("not-the-password") && e.contains("***"),
        "{e}"
    );
}

/// `identity` names the data, not the URL: two stores on one database agree, two databases
/// differ. `shoal migrate` relies on it to refuse copying a database into itself.
async fn identity_names_the_database_not_the_url(b: Backend) {
    let url = fresh_url(b).await;
    let a = open(&url, 1).await;
    a.migrate().await.unwrap();
    let respelled = match b {
        Backend::Sqlite => url.replace("/nested/", "/nested/./"),
        _ => url.replace("127.0.0.1", "localhost"),
    };
    assert_ne!(respelled, url);
    let same = open(&respelled, 1).await;
    let other = open(&fresh_url(b).await, 1).await;
    let id = a.identity().await.unwrap();
    assert!(!id.is_empty());
    assert_eq!(same.identity().await.unwrap(), id, "{url} and {respelled}");
    assert_ne!(other.identity().await.unwrap(), id);
    for s in [a, same, other] {
        s.close().await;
    }
}

macro_rules! on_every_backend {
    ($($test:ident),*) => {
        mod sqlite { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $test() { super::$test(super::Backend::Sqlite).await } )* }
        mod postgres { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $test() { super::$test(super::Backend::Postgres).await } )* }
        mod mariadb { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $test() { super::$test(super::Backend::MariaDb).await } )* }
    };
}

on_every_backend!(
    run_suite,
    refuses_unknown_and_changed_migrations,
    reports_the_server_version,
    identity_names_the_database_not_the_url
);

#[tokio::test]
async fn postgres_wrong_password() {
    wrong_password_is_a_clear_error_without_the_password(Backend::Postgres).await;
}

#[tokio::test]
async fn mariadb_wrong_password() {
    wrong_password_is_a_clear_error_without_the_password(Backend::MariaDb).await;
}

#[tokio::test]
async fn mariadb_scheme_is_mysql() {
    let url = fresh_url(Backend::MariaDb)
        .await
        .replacen("mysql://", "mariadb://", 1);
    let s = open(&url, 1).await;
    s.migrate().await.unwrap();
    assert_eq!(s.driver(), "mysql");
}
