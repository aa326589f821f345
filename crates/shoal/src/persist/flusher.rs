//! Writes download deltas to the store, one batched transaction per interval. A failed write
//! keeps its deltas and retries with backoff; nothing is dropped.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use protocol::InfoHash;
use store::TorrentMetricsStore;
use tokio::sync::watch;

use crate::tracker::Tracker;

/// Retries slow down to this, so a database that comes back is used within seconds.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What the final flush may take at shutdown, retries included.
pub const FINAL_FLUSH: Duration = Duration::from_secs(8);

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
        let batch: Vec<_> = self.unflushed.iter().map(|(h, d)| (*h, *d)).collect();
        let started = Instant::now();
        match self.store.add_downloads(&batch).await {
            Ok(()) => {
                self.unflushed.clear();
                m.flushed(outstanding, started.elapsed());
                Ok(batch.len())
            }
            Err(e) => {
                m.flush_failed();
                Err(e)
            }
        }
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

    /// The last flush at shutdown: retries within `FINAL_FLUSH`, then an honest count of
    /// what is lost. Bounded so the loss is logged before systemd's `TimeoutStopSec` kills the
    /// process (docs/operations.md, "Stopping: the time budget").
    pub async fn finish(&mut self) -> Result<(), u64> {
        let deadline = tokio::time::Instant::now() + FINAL_FLUSH;
        for attempt in 1.. {
            match tokio::time::timeout_at(deadline, self.flush()).await {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(e)) => tracing::error!("final flush attempt {attempt} failed: {e}"),
                Err(_) => {
                    tracing::error!(
                        "final flush attempt {attempt} did not finish within {FINAL_FLUSH:?}"
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
                    let result = flusher.finish().await;
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
