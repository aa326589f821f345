//! Writes download deltas to the store, one batched transaction per interval (per 100,000
//! torrents, for more). A failed write keeps its deltas and retries with backoff; nothing is
//! dropped.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use protocol::InfoHash;
use store::TorrentMetricsStore;
use tokio::sync::watch;

use crate::tracker::Tracker;

/// Retries slow down to this, so a database that comes back is used within seconds.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Torrents per transaction: a flush of millions (after the database was away long, or the
/// last one at shutdown) commits as it goes, so a deadline or a failure keeps what it wrote.
const SLICE: usize = 100_000;

pub struct Flusher<S> {
    store: S,
    tracker: Arc<Tracker>,
    /// Deltas taken from the swarm whose write has not succeeded yet.
    unflushed: HashMap<InfoHash, u64>,
    /// At most this many torrents wait in `unflushed`; see `database.max_pending_torrents`.
    max_pending: usize,
}

impl<S: TorrentMetricsStore> Flusher<S> {
    pub fn new(store: S, tracker: Arc<Tracker>, max_pending: usize) -> Self {
        Flusher {
            store,
            tracker,
            unflushed: HashMap::new(),
            max_pending,
        }
    }

    /// One flush: takes new deltas, writes everything outstanding.
    pub async fn flush(&mut self) -> Result<usize, store::StoreError> {
        let m = self.tracker.metrics();
        let mut dropped = 0;
        for (h, d) in self.tracker.take_pending() {
            if let Some(slot) = self.unflushed.get_mut(&h) {
                *slot += d;
            } else if self.unflushed.len() < self.max_pending {
                self.unflushed.insert(h, d);
            } else {
                // Memory is bounded by torrents, not increments: a torrent already waiting
                // still accumulates, a new one past the bound is dropped, loudly.
                dropped += d;
            }
        }
        if dropped > 0 {
            m.flush_dropped(dropped);
            tracing::error!(
                "database.max_pending_torrents ({}) reached while the database is unreachable: {dropped} download increments dropped",
                self.max_pending
            );
        }
        let outstanding: u64 = self.unflushed.values().sum();
        m.flush_holds(self.unflushed.len(), outstanding);
        if self.unflushed.is_empty() {
            return Ok(0);
        }
        let started = Instant::now();
        let mut torrents: Vec<InfoHash> = self.unflushed.keys().copied().collect();
        // Each slice a run of neighbouring keys: its rows land on neighbouring index pages
        // instead of all over the B-tree.
        torrents.sort_unstable();
        for slice in torrents.chunks(SLICE) {
            let batch: Vec<_> = slice.iter().map(|h| (*h, self.unflushed[h])).collect();
            if let Err(e) = self.store.add_downloads(&batch).await {
                m.flush_failed();
                let left: u64 = self.unflushed.values().sum();
                m.flush_holds(self.unflushed.len(), left);
                return Err(e);
            }
            // Written: nothing between the write's end and this may be cancelled.
            slice.iter().for_each(|h| {
                self.unflushed.remove(h);
            });
        }
        m.flushed(outstanding, started.elapsed());
        Ok(torrents.len())
    }

    /// Starts a flush every `interval` (a slow write does not push the next one back) until
    /// `stop` changes; after a failure, waits with backoff instead.
    pub async fn run(mut self, interval: Duration, mut stop: watch::Receiver<bool>) -> Self {
        let mut next = tokio::time::Instant::now() + interval;
        let mut backoff = interval;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(next) => {}
                _ = stop.changed() => break,
            }
            let now = tokio::time::Instant::now();
            match self.flush().await {
                Ok(_) => {
                    backoff = interval;
                    next = (next + interval).max(now);
                }
                Err(e) => {
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    next = now + backoff;
                    let pending: u64 = self.unflushed.values().sum();
                    tracing::error!(
                        "flush failed, {pending} download increments kept for retry in {backoff:?}: {e}"
                    );
                }
            }
        }
        self
    }

    /// The last flush at shutdown: retries within `budget` (`database.final_flush_timeout_ms`),
    /// then an honest count of what is lost. Bounded so the loss is logged before systemd's
    /// `TimeoutStopSec` kills the process (docs/operations.md, "Stopping: the time budget").
    pub async fn finish(&mut self, budget: Duration) -> Result<(), u64> {
        let deadline = tokio::time::Instant::now() + budget;
        for attempt in 1.. {
            match tokio::time::timeout_at(deadline, self.flush()).await {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(e)) => tracing::error!("final flush attempt {attempt} failed: {e}"),
                Err(_) => {
                    tracing::error!(
                        "final flush attempt {attempt} did not finish within {budget:?} (database.final_flush_timeout_ms)"
                    );
                    break;
                }
            }
            let pause = Duration::from_millis(200 << attempt.min(4));
            if tokio::time::Instant::now() + pause >= deadline {
                break;
            }
            tokio::time::sleep(pause).await;
        }
        Err(self.unflushed.values().sum())
    }
}

/// The flusher on its own thread, runtime and connection pool: announces can saturate every
/// core, and a flush that waits behind them for CPU would stretch what a crash can lose past
/// one interval. The OS scheduler gives this thread its fair share whatever the workers do.
pub struct FlusherThread {
    stop: watch::Sender<bool>,
    thread: std::thread::JoinHandle<Result<(), String>>,
}

impl FlusherThread {
    /// Opens the flusher's own connection to `url` and starts flushing; returns once the
    /// connection is open, or with the reason it could not be.
    pub async fn start(
        url: store::DatabaseUrl,
        tracker: Arc<Tracker>,
        max_pending: usize,
        interval: Duration,
        final_budget: Duration,
    ) -> Result<Self, String> {
        let (stop, stop_rx) = watch::channel(false);
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("shoal-flusher".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
                rt.block_on(async move {
                    let store = match store::AnyStore::open(&url, 2).await {
                        Ok(s) => s,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e.to_string()));
                            return Ok(());
                        }
                    };
                    let _ = ready_tx.send(Ok(()));
                    let mut flusher = Flusher::new(store, tracker, max_pending).run(interval, stop_rx).await;
                    let result = flusher.finish(final_budget).await;
                    store::Connection::close(&flusher.store).await;
                    result.map_err(|lost| format!("database unreachable at shutdown: {lost} download increments could not be written"))
                })
            })
            .map_err(|e| format!("cannot start the flusher thread: {e}"))?;
        match ready_rx.await {
            Ok(Ok(())) => Ok(FlusherThread { stop, thread }),
            Ok(Err(e)) => Err(format!("the flusher cannot open the database: {e}")),
            Err(_) => Err(match thread.join() {
                Ok(Err(e)) => format!("the flusher did not start: {e}"),
                _ => "the flusher did not start".to_string(),
            }),
        }
    }

    /// Flushes what is left and stops; the error says how many increments could not be written.
    pub async fn finish(self) -> Result<(), String> {
        let _ = self.stop.send(true);
        let thread = self.thread;
        tokio::task::spawn_blocking(move || thread.join())
            .await
            .map_err(|e| e.to_string())?
            .map_err(|_| "the flusher thread panicked".to_string())?
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::config::{AnnounceConfig, Mode};
    use crate::tracker::{PeerAnnounce, Protocol};

    /// A real SQLite store whose `add_downloads` fails from the `fail_from`th call on.
    struct Failing {
        inner: store::AnyStore,
        calls: AtomicUsize,
        fail_from: usize,
    }

    impl TorrentMetricsStore for Failing {
        async fn load_torrent_downloads(
            &self,
            h: &InfoHash,
        ) -> Result<Option<u64>, store::StoreError> {
            self.inner.load_torrent_downloads(h).await
        }
        async fn save_torrent_downloads(
            &self,
            h: &InfoHash,
            n: u64,
        ) -> Result<(), store::StoreError> {
            self.inner.save_torrent_downloads(h, n).await
        }
        async fn increase_downloads_for_torrent(
            &self,
            h: &InfoHash,
        ) -> Result<(), store::StoreError> {
            self.inner.increase_downloads_for_torrent(h).await
        }
        async fn load_all_torrents_downloads<F>(&self, sink: F) -> Result<u64, store::StoreError>
        where
            F: FnMut(InfoHash, u64) + Send,
        {
            self.inner.load_all_torrents_downloads(sink).await
        }
        async fn add_downloads(&self, deltas: &[(InfoHash, u64)]) -> Result<(), store::StoreError> {
            if self.calls.fetch_add(1, Ordering::Relaxed) + 1 >= self.fail_from {
                return Err(store::StoreError::BadRow {
                    what: "test",
                    detail: "the database went away".into(),
                });
            }
            self.inner.add_downloads(deltas).await
        }
        async fn load_global_downloads(&self) -> Result<Option<u64>, store::StoreError> {
            self.inner.load_global_downloads().await
        }
        async fn save_global_downloads(&self, n: u64) -> Result<(), store::StoreError> {
            self.inner.save_global_downloads(n).await
        }
        async fn increase_global_downloads(&self, by: u64) -> Result<(), store::StoreError> {
            self.inner.increase_global_downloads(by).await
        }
    }

    /// A tracker holding one download for each of `n` torrents, and a migrated SQLite file.
    async fn pending(n: u32, name: &str) -> (Arc<Tracker>, store::AnyStore, std::path::PathBuf) {
        let tracker = Arc::new(Tracker::new(
            AnnounceConfig::default(),
            Mode::Public,
            swarm::Limits::NONE,
        ));
        let mut out = Vec::new();
        for i in 0..n {
            let mut h = [0u8; 20];
            h[..4].copy_from_slice(&i.to_le_bytes());
            for (left, event) in [
                (1, protocol::AnnounceEvent::Started),
                (0, protocol::AnnounceEvent::Completed),
            ] {
                let a = PeerAnnounce {
                    info_hash: InfoHash(h),
                    peer_id: protocol::PeerId([7; 20]),
                    ip: [10, 0, 0, 1].into(),
                    port: 6881,
                    left,
                    event,
                    numwant: Some(0),
                    key: None,
                };
                let _ = tracker.announce(Protocol::Udp, &a, tracker.now(), &mut out);
            }
        }
        let dir = std::env::temp_dir().join(format!("shoal-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let url = store::DatabaseUrl::parse(&format!("sqlite://{}/d.db", dir.display())).unwrap();
        let db = store::AnyStore::open(&url, 2).await.unwrap();
        store::SchemaMigrator::migrate(&db).await.unwrap();
        (tracker, db, dir)
    }

    /// The last flush gives up at its budget (`database.final_flush_timeout_ms`) and says
    /// how many increments it could not write; with the database back, it writes them all.
    #[tokio::test]
    async fn the_final_flush_keeps_to_its_budget_and_counts_what_it_lost() {
        let (tracker, db, dir) = pending(10, "final-flush").await;
        let failing = Failing {
            inner: db.clone(),
            calls: AtomicUsize::new(0),
            fail_from: 1,
        };
        let mut flusher = Flusher::new(failing, tracker, usize::MAX);
        let started = std::time::Instant::now();
        assert_eq!(flusher.finish(Duration::from_millis(700)).await, Err(10));
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(200) && took < Duration::from_secs(5),
            "retried, then gave up near the budget: {took:?}"
        );
        assert!(
            flusher.store.calls.load(Ordering::Relaxed) >= 2,
            "at least one retry"
        );
        flusher.store.fail_from = usize::MAX;
        assert_eq!(flusher.finish(Duration::from_millis(700)).await, Ok(()));
        assert_eq!(db.load_global_downloads().await.unwrap(), Some(10));
        store::Connection::close(&db).await;
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// More torrents than one transaction takes: the flush commits slice by slice, so a
    /// failure (or the shutdown deadline) halfway keeps what was written, and the retry
    /// writes the rest once.
    #[tokio::test]
    async fn a_large_flush_keeps_the_slices_it_wrote_when_the_database_goes_away() {
        let n = 2 * SLICE as u32 + 1;
        let (tracker, db, dir) = pending(n, "flusher").await;
        let failing = Failing {
            inner: db.clone(),
            calls: AtomicUsize::new(0),
            fail_from: 2,
        };
        let mut flusher = Flusher::new(failing, tracker.clone(), usize::MAX);
        assert!(flusher.flush().await.is_err(), "the second slice fails");
        let rows = db.load_all_torrents_downloads(|_, _| {}).await.unwrap();
        assert_eq!(rows, SLICE as u64, "the first slice is written");
        assert_eq!(
            db.load_global_downloads().await.unwrap(),
            Some(SLICE as u64)
        );
        assert_eq!(
            flusher.unflushed.len(),
            n as usize - SLICE,
            "the rest waits"
        );
        flusher.store.fail_from = usize::MAX;
        assert_eq!(flusher.flush().await.unwrap(), n as usize - SLICE);
        let mut sum = 0;
        let rows = db
            .load_all_torrents_downloads(|_, d| sum += d)
            .await
            .unwrap();
        assert_eq!(
            (rows, sum),
            (u64::from(n), u64::from(n)),
            "every download once"
        );
        assert_eq!(
            db.load_global_downloads().await.unwrap(),
            Some(u64::from(n))
        );
        store::Connection::close(&db).await;
        let _ = std::fs::remove_dir_all(&dir);
    }
}
