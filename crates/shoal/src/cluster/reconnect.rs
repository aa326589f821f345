//! `after_reconnect` on a real Redis.

use super::*;

async fn xadd(c: &mut MultiplexedConnection, id: &str) {
    let _: Value = redis::cmd("XADD")
        .arg(STREAM)
        .arg(id)
        .arg("d")
        .arg("x")
        .query_async(c)
        .await
        .unwrap();
}

/// Trims the stream as a publisher's `XADD … MINID` does.
async fn xtrim(c: &mut MultiplexedConnection, min_id: u64) {
    let _: Value = redis::cmd("XTRIM")
        .arg(STREAM)
        .arg("MINID")
        .arg(min_id)
        .query_async(c)
        .await
        .unwrap();
}

/// On a real Redis: a reader that comes back after entries it had not read were trimmed
/// knows it (and forgets what they might have changed); one that had read them, or
/// finds the stream's ids gone back, does not.
#[tokio::test]
async fn a_reader_knows_when_entries_it_had_not_read_were_trimmed() {
    let redis = testkit::Redis::launch().expect("a Redis server for this test");
    let config: ClusterConfig = toml::from_str(&format!("redis_url = {:?}", redis.url())).unwrap();
    let mut c = connect(&Bus::of(&config)).await.unwrap();
    for id in ["1000-0", "2000-0", "3000-0", "4000-0"] {
        xadd(&mut c, id).await;
    }
    let mut last = String::from("2000-0");
    assert!(!after_reconnect(&mut c, &mut last).await, "nothing trimmed");
    xtrim(&mut c, 3500).await;
    assert!(
        after_reconnect(&mut c, &mut last).await,
        "3000-0 went unread"
    );
    xtrim(&mut c, 9000).await;
    assert!(
        after_reconnect(&mut c, &mut last).await,
        "an empty stream past it"
    );
    assert_eq!(last, "2000-0");
    let mut read_all = String::from("4000-0");
    assert!(
        !after_reconnect(&mut c, &mut read_all).await,
        "it had read 4000-0"
    );
    let mut ahead = String::from("9000-0");
    assert!(!after_reconnect(&mut c, &mut ahead).await);
    assert_eq!(ahead, "0-0", "ids went back: read from the start");
}
