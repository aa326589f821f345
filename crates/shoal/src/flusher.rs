//! Writes download deltas to the store, one batched transaction per interval. A failed write
//! keeps its deltas and retries with backoff; nothing is dropped.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use protocol::InfoHash;
use store::TorrentMetricsStore;
use tokio::sync::watch;

use crate::tracker::Tracker;

/// Retries slow down to this, so a database that comes back is used within seconds.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

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
        Flusher { store, tracker, unflushed: HashMap::new(), max_pending }
    }

    /// One flush: takes new deltas, writes everything outstanding.
    pub async fn flush(&mut self) -> Result<usize, store::StoreError> {
        let m = &self.tracker.metrics;
        let mut dropped = 0;
        for (h, d) in self.tracker.swarm.take_pending() {
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
            m.dropped_deltas.fetch_add(dropped, Relaxed);
            tracing::error!(
                "database.max_pending_torrents ({}) reached while the database is unreachable: {dropped} download increments dropped",
                self.max_pending
            );
        }
        m.unflushed_torrents.store(self.unflushed.len() as u64, Relaxed);
        let outstanding: u64 = self.unflushed.values().sum();
        m.unflushed_deltas.store(outstanding, Relaxed);
        if self.unflushed.is_empty() {
            return Ok(0);
        }
        let batch: Vec<_> = self.unflushed.iter().map(|(h, d)| (*h, *d)).collect();
        let started = Instant::now();
        match self.store.add_downloads(&batch).await {
            Ok(()) => {
                self.unflushed.clear();
                m.flushes.fetch_add(1, Relaxed);
                m.flush_failing.store(false, Relaxed);
                m.flushed_deltas.fetch_add(outstanding, Relaxed);
                m.unflushed_deltas.store(0, Relaxed);
                m.unflushed_torrents.store(0, Relaxed);
                m.flush_last_micros.store(started.elapsed().as_micros() as u64, Relaxed);
                Ok(batch.len())
            }
            Err(e) => {
                m.flush_failures.fetch_add(1, Relaxed);
                m.flush_failing.store(true, Relaxed);
                Err(e)
            }
        }
    }

    /// Flushes every `interval` until `stop` changes, then flushes once more.
    pub async fn run(mut self, interval: Duration, mut stop: watch::Receiver<bool>) -> Self {
        let mut wait = interval;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.changed() => break,
            }
            match self.flush().await {
                Ok(_) => wait = interval,
                Err(e) => {
                    wait = (wait * 2).min(MAX_BACKOFF);
                    let pending: u64 = self.unflushed.values().sum();
                    tracing::error!("flush failed, {pending} download increments kept for retry in {wait:?}: {e}");
                }
            }
        }
        self
    }

    /// The last flush at shutdown: a few quick retries, then an honest count of what is lost.
    pub async fn finish(&mut self) -> Result<(), u64> {
        for attempt in 0..5 {
            match self.flush().await {
                Ok(_) => return Ok(()),
                Err(e) => {
                    tracing::error!("final flush attempt {} failed: {e}", attempt + 1);
                    tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
                }
            }
        }
        Err(self.unflushed.values().sum())
    }
}
