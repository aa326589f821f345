//! Requests per second over the last hour, for the status page: every `status.sample_secs`
//! the request counters are read and the increase since the last sample is kept in a ring of
//! `SLOTS` samples (u32 per series: a few KB in all).

use std::collections::VecDeque;
use std::sync::Mutex;

use super::metrics::{Action, Protocol};

/// Samples kept: one hour at the default 30 s.
pub const SLOTS: usize = 120;

/// The series a sample holds: the requests each protocol answers.
pub const SERIES: [(Protocol, Action); 7] = [
    (Protocol::Udp, Action::Connect),
    (Protocol::Udp, Action::Announce),
    (Protocol::Udp, Action::Scrape),
    (Protocol::Http, Action::Announce),
    (Protocol::Http, Action::Scrape),
    (Protocol::Ws, Action::Announce),
    (Protocol::Ws, Action::Scrape),
];

#[derive(Default)]
pub struct History {
    inner: Mutex<Ring>,
}

#[derive(Default)]
struct Ring {
    /// Counter values at the last sample.
    last: Option<[u64; SERIES.len()]>,
    samples: VecDeque<[u32; SERIES.len()]>,
}

impl History {
    /// Takes a sample from the counters' current `totals` (in `SERIES` order).
    pub fn sample(&self, totals: [u64; SERIES.len()]) {
        let mut r = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(last) = r.last {
            let mut delta = [0u32; SERIES.len()];
            for (d, (now, before)) in delta.iter_mut().zip(totals.iter().zip(last)) {
                *d = now.saturating_sub(before).min(u64::from(u32::MAX)) as u32;
            }
            if r.samples.len() == SLOTS {
                r.samples.pop_front();
            }
            r.samples.push_back(delta);
        }
        r.last = Some(totals);
    }

    /// Oldest first: each sample's requests per series.
    pub fn samples(&self) -> Vec<[u32; SERIES.len()]> {
        let r = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        r.samples.iter().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_increase_of_the_last_hour_only() {
        let h = History::default();
        h.sample([0; 7]);
        for i in 1..=(SLOTS as u64 + 5) {
            h.sample([i * 10, 0, 0, i * i, 0, 0, 0]);
        }
        let s = h.samples();
        assert_eq!(s.len(), SLOTS);
        assert!(s.iter().all(|x| x[0] == 10));
        let last = SLOTS as u64 + 5;
        assert_eq!(
            u64::from(s[SLOTS - 1][3]),
            last * last - (last - 1) * (last - 1)
        );
    }
}
