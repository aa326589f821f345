//! One driver suite, run unchanged against every backend on a real database.


use protocol::InfoHash;
use store::{DatabaseUrl, SchemaMigrator, SqliteStore, Store, TorrentMetricsStore};

fn temp_sqlite_url(name: &str) -> (DatabaseUrl, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("shoal-store-{name}-{}-{}", std::process::id(), fastrand_u64()));
    let url = DatabaseUrl::parse(&format!("sqlite://{}/nested/shoal.db", dir.display())).unwrap();
    (url, dir)
}

fn fastrand_u64() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
}

fn h(n: u32) -> InfoHash {
    let mut b = [0u8; 20];
    b[..4].copy_from_slice(&n.to_be_bytes());
    b[19] = 0xff;
    InfoHash(b)
}

/// The contract every driver keeps.
async fn suite<S: Store + Clone>(s: S) {
    s.migrate().await.unwrap();
    s.migrate().await.expect("migrations are idempotent");
    s.ping().await.unwrap();

    // Per-torrent counts.
    assert_eq!(s.load_torrent_downloads(&h(1)).await.unwrap(), None);
    s.increase_downloads_for_torrent(&h(1)).await.unwrap();
    s.increase_downloads_for_torrent(&h(1)).await.unwrap();
    assert_eq!(s.load_torrent_downloads(&h(1)).await.unwrap(), Some(2));
    for edge in [0, u32::MAX as u64, (1u64 << 32) + 5, i64::MAX as u64] {
        s.save_torrent_downloads(&h(2), edge).await.unwrap();
        assert_eq!(s.load_torrent_downloads(&h(2)).await.unwrap(), Some(edge));
    }
    assert!(s.save_torrent_downloads(&h(3), u64::MAX).await.is_err(), "beyond 2^63-1 is refused, not wrapped");
    s.save_torrent_downloads(&h(2), u32::MAX as u64).await.unwrap();

    // Batched deltas add to torrents and to the global total in one go.
    assert_eq!(s.load_global_downloads().await.unwrap(), None);
    let mut deltas: Vec<_> = (10..2510).map(|i| (h(i), 1)).collect();
    deltas.push((h(2), 10));
    s.add_downloads(&deltas).await.unwrap();
    s.add_downloads(&[]).await.unwrap();
    assert_eq!(s.load_torrent_downloads(&h(2)).await.unwrap(), Some(u32::MAX as u64 + 10), "a delta adds, it does not assign");
    assert_eq!(s.load_torrent_downloads(&h(2509)).await.unwrap(), Some(1));
    assert_eq!(s.load_global_downloads().await.unwrap(), Some(2510));

    // Global counter.
    s.increase_global_downloads(5).await.unwrap();
    assert_eq!(s.load_global_downloads().await.unwrap(), Some(2515));
    s.save_global_downloads(1 << 40).await.unwrap();
    assert_eq!(s.load_global_downloads().await.unwrap(), Some(1 << 40));

    // Streaming load of every count.
    let mut seen = std::collections::HashMap::new();
    let n = s.load_all_torrents_downloads(|k, v| {
        seen.insert(k, v);
    }).await.unwrap();
    assert_eq!(n, 2502);
    assert_eq!(seen.len(), 2502);
    assert_eq!(seen[&h(1)], 2);
    assert_eq!(seen[&h(2)], u32::MAX as u64 + 10);

    // Concurrent increments from several tasks lose no update.
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let s = s.clone();
            tokio::spawn(async move {
                for _ in 0..25 {
                    s.increase_downloads_for_torrent(&h(9099)).await.unwrap();
                    s.add_downloads(&[(h(9098), 2)]).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(s.load_torrent_downloads(&h(9099)).await.unwrap(), Some(200));
    assert_eq!(s.load_torrent_downloads(&h(9098)).await.unwrap(), Some(400));
}

#[tokio::test]
async fn sqlite_driver() {
    let (url, dir) = temp_sqlite_url("suite");
    let s = SqliteStore::open(&url, 4).await.unwrap();
    suite(s.clone()).await;
    s.close().await;
    // Counts survive closing and reopening the file.
    let s = SqliteStore::open(&url, 1).await.unwrap();
    s.migrate().await.unwrap();
    assert_eq!(s.load_torrent_downloads(&h(9099)).await.unwrap(), Some(200));
    s.close().await;
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn sqlite_refuses_unknown_and_changed_migrations() {
    let (url, dir) = temp_sqlite_url("history");
    let s = SqliteStore::open(&url, 1).await.unwrap();
    s.migrate().await.unwrap();
    let pool = sqlx::SqlitePool::connect(url.expose()).await.unwrap();

    sqlx::query("INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) VALUES (29991231000000, 'from the future', 1, x'00', 0)")
        .execute(&pool).await.unwrap();
    let e = s.migrate().await.unwrap_err().to_string();
    assert!(e.contains("29991231000000") && e.contains("newer shoal"), "{e}");
    sqlx::query("DELETE FROM _sqlx_migrations WHERE version = 29991231000000").execute(&pool).await.unwrap();

    sqlx::query("UPDATE _sqlx_migrations SET checksum = x'0102' WHERE version = 20261122000000").execute(&pool).await.unwrap();
    let e = s.migrate().await.unwrap_err().to_string();
    assert!(e.contains("20261122000000") && e.contains("checksum"), "{e}");
    pool.close().await;
    s.close().await;
    std::fs::remove_dir_all(dir).unwrap();
}
