//! Counters for the Prometheus endpoint. Hot-path counters are plain atomics.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Protocol {
    Udp,
    Http,
}

impl Protocol {
    fn label(self) -> &'static str {
        match self {
            Protocol::Udp => "udp",
            Protocol::Http => "http",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Action {
    Connect,
    Announce,
    Scrape,
}

impl From<protocol::udp::Action> for Action {
    fn from(a: protocol::udp::Action) -> Self {
        match a {
            protocol::udp::Action::Connect => Action::Connect,
            protocol::udp::Action::Announce => Action::Announce,
            protocol::udp::Action::Scrape => Action::Scrape,
        }
    }
}

/// Every error kind the servers report, sorted; anything else is counted as "other". A fixed
/// table of atomics, so a flood of malformed packets never serialises the UDP workers on a lock.
const KINDS: &[&str] = &[
    "bad_connection_id",
    "bad_escape",
    "bad_http",
    "bad_options",
    "bad_protocol_id",
    "bad_proxy_header",
    "expired_key",
    "head_timeout",
    "head_too_large",
    "malformed_key",
    "max_peers",
    "max_peers_per_ip",
    "max_peers_per_torrent",
    "max_torrents",
    "missing_key",
    "missing_param",
    "not_a_number",
    "not_found",
    "not_listed",
    "other",
    "oversized",
    "port_zero",
    "scrape_length",
    "scrape_needs_key",
    "tls_handshake",
    "too_many_connections",
    "too_many_info_hashes",
    "too_short",
    "truncated",
    "unknown_action",
    "unknown_event",
    "unknown_key",
    "wrong_length",
];

struct ErrorCounts([[AtomicU64; KINDS.len()]; 2]);

impl Default for ErrorCounts {
    fn default() -> Self {
        ErrorCounts(std::array::from_fn(|_| {
            std::array::from_fn(|_| AtomicU64::new(0))
        }))
    }
}

fn kind_slot(kind: &str) -> usize {
    KINDS
        .binary_search(&kind)
        .unwrap_or_else(|_| KINDS.binary_search(&"other").expect("other is a kind"))
}

#[derive(Default)]
pub struct Metrics {
    /// [protocol][action]
    requests: [[AtomicU64; 3]; 2],
    /// Malformed or refused requests, by protocol and kind (`KINDS`).
    errors: ErrorCounts,
    /// The same, by protocol and action ([protocol][connect, announce, scrape, unknown]).
    failed: [[AtomicU64; 4]; 2],
    pub flushes: AtomicU64,
    pub flush_failures: AtomicU64,
    /// The last flush failed (cleared by the next that succeeds); `/health` reports it.
    pub flush_failing: std::sync::atomic::AtomicBool,
    pub flush_last_micros: AtomicU64,
    pub flushed_deltas: AtomicU64,
    /// Deltas taken from the swarm but not yet in the database (failed flushes).
    pub unflushed_deltas: AtomicU64,
    /// Torrents those deltas belong to; bounded by `database.max_pending_torrents`.
    pub unflushed_torrents: AtomicU64,
    /// Increments dropped because that bound was reached.
    pub dropped_deltas: AtomicU64,
    pub expired_peers: AtomicU64,
}

impl Metrics {
    pub fn request(&self, p: Protocol, a: Action) {
        self.requests[p as usize][a as usize].fetch_add(1, Relaxed);
    }

    /// `action` is `None` when the request was too broken to tell.
    pub fn error(&self, p: Protocol, action: Option<Action>, kind: &'static str) {
        self.failed[p as usize][action.map_or(3, |a| a as usize)].fetch_add(1, Relaxed);
        self.errors.0[p as usize][kind_slot(kind)].fetch_add(1, Relaxed);
    }

    /// The Prometheus text: these counters, and the swarm's gauges as `g` says.
    pub fn render(&self, g: &swarm::SwarmStats) -> String {
        let mut out = String::new();
        out.push_str("# HELP shoal_requests_total Requests answered, by protocol and action.\n# TYPE shoal_requests_total counter\n");
        for p in [Protocol::Udp, Protocol::Http] {
            for (a, name) in [
                (Action::Connect, "connect"),
                (Action::Announce, "announce"),
                (Action::Scrape, "scrape"),
            ] {
                if p == Protocol::Http && a == Action::Connect {
                    continue;
                }
                let n = self.requests[p as usize][a as usize].load(Relaxed);
                let _ = writeln!(
                    out,
                    "shoal_requests_total{{protocol=\"{}\",action=\"{name}\"}} {n}",
                    p.label()
                );
            }
        }
        out.push_str("# HELP shoal_errors_total Malformed, refused or dropped requests, by protocol and kind.\n# TYPE shoal_errors_total counter\n");
        for p in [Protocol::Udp, Protocol::Http] {
            for (kind, n) in KINDS.iter().zip(&self.errors.0[p as usize]) {
                let n = n.load(Relaxed);
                if n > 0 {
                    let _ = writeln!(
                        out,
                        "shoal_errors_total{{protocol=\"{}\",kind=\"{kind}\"}} {n}",
                        p.label()
                    );
                }
            }
        }
        out.push_str("# HELP shoal_failed_requests_total Requests answered with an error or dropped, by protocol and action.\n# TYPE shoal_failed_requests_total counter\n");
        for p in [Protocol::Udp, Protocol::Http] {
            for (i, name) in ["connect", "announce", "scrape", "unknown"]
                .iter()
                .enumerate()
            {
                if p == Protocol::Http && i == 0 {
                    continue;
                }
                let n = self.failed[p as usize][i].load(Relaxed);
                let _ = writeln!(
                    out,
                    "shoal_failed_requests_total{{protocol=\"{}\",action=\"{name}\"}} {n}",
                    p.label()
                );
            }
        }
        let counter = |out: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        };
        let gauge = |out: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        };
        counter(
            &mut out,
            "shoal_flushes_total",
            "Successful flushes of download deltas.",
            self.flushes.load(Relaxed),
        );
        counter(
            &mut out,
            "shoal_flush_failures_total",
            "Flushes the database refused; their deltas are retried.",
            self.flush_failures.load(Relaxed),
        );
        counter(
            &mut out,
            "shoal_flushed_deltas_total",
            "Download increments written to the database.",
            self.flushed_deltas.load(Relaxed),
        );
        counter(
            &mut out,
            "shoal_dropped_deltas_total",
            "Download increments dropped because database.max_pending_torrents was reached.",
            self.dropped_deltas.load(Relaxed),
        );
        gauge(
            &mut out,
            "shoal_pending_torrents",
            "Torrents with download increments waiting for a failed flush to succeed.",
            self.unflushed_torrents.load(Relaxed),
        );
        counter(
            &mut out,
            "shoal_expired_peers_total",
            "Peers removed after the peer timeout.",
            self.expired_peers.load(Relaxed),
        );
        let secs = self.flush_last_micros.load(Relaxed) as f64 / 1e6;
        let _ = writeln!(
            out,
            "# HELP shoal_flush_last_seconds Duration of the last successful flush.\n# TYPE shoal_flush_last_seconds gauge\nshoal_flush_last_seconds {secs}"
        );
        gauge(
            &mut out,
            "shoal_pending_deltas",
            "Download increments waiting for the database.",
            g.pending_deltas + self.unflushed_deltas.load(Relaxed),
        );
        counter(
            &mut out,
            "shoal_uncounted_downloads_total",
            "Downloads not counted because limits.max_counted_torrents was reached.",
            g.uncounted_downloads,
        );
        gauge(
            &mut out,
            "shoal_torrents",
            "Torrents with at least one peer.",
            g.torrents,
        );
        gauge(
            &mut out,
            "shoal_counted_torrents",
            "Torrents with a download count.",
            g.counted_torrents,
        );
        gauge(
            &mut out,
            "shoal_seeders",
            "Seeders in all swarms.",
            g.seeders,
        );
        gauge(
            &mut out,
            "shoal_leechers",
            "Leechers in all swarms.",
            g.leechers,
        );
        gauge(
            &mut out,
            "shoal_peers",
            "Peers in all swarms.",
            g.seeders + g.leechers,
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_its_own_counter() {
        assert!(KINDS.is_sorted(), "kind_slot searches KINDS by bisection");
        let m = Metrics::default();
        m.error(Protocol::Udp, None, "too_short");
        m.error(Protocol::Udp, None, "too_short");
        m.error(Protocol::Http, Some(Action::Announce), "max_peers_per_ip");
        m.error(Protocol::Http, None, "no such kind");
        let g = swarm::SwarmStats::default();
        let text = m.render(&g);
        for line in [
            "shoal_errors_total{protocol=\"udp\",kind=\"too_short\"} 2",
            "shoal_errors_total{protocol=\"http\",kind=\"max_peers_per_ip\"} 1",
            "shoal_errors_total{protocol=\"http\",kind=\"other\"} 1",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
        for refusal in [
            swarm::Refusal::Torrents,
            swarm::Refusal::Peers,
            swarm::Refusal::PeersPerTorrent,
            swarm::Refusal::PeersPerIp,
        ] {
            assert_ne!(KINDS[kind_slot(refusal.key())], "other", "{refusal:?}");
        }
    }
}
