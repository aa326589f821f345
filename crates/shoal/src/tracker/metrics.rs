//! Counters for the Prometheus endpoint. Hot-path counters are plain atomics.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Protocol {
    Udp,
    Http,
    /// The WebSocket (WebTorrent) tracker.
    Ws,
}

impl Protocol {
    const ALL: [Protocol; PROTOCOLS] = [Protocol::Udp, Protocol::Http, Protocol::Ws];

    pub fn label(self) -> &'static str {
        match self {
            Protocol::Udp => "udp",
            Protocol::Http => "http",
            Protocol::Ws => "ws",
        }
    }
}

const PROTOCOLS: usize = 3;

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

/// Declares `ErrorKind` and its labels from one table, so a kind and its label cannot
/// drift apart, and a kind nobody registered cannot be counted.
macro_rules! error_kinds {
    ($($kind:ident => $label:literal,)*) => {
        /// Why a request was malformed, refused or dropped: one counter per protocol each.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum ErrorKind {
            $($kind,)*
        }

        impl ErrorKind {
            pub const ALL: &[ErrorKind] = &[$(ErrorKind::$kind,)*];

            /// The `kind` label of `shoal_errors_total`.
            pub fn label(self) -> &'static str {
                match self {
                    $(ErrorKind::$kind => $label,)*
                }
            }
        }
    };
}

error_kinds! {
    // The connection, before a request.
    TooManyConnections => "too_many_connections",
    BadProxyHeader => "bad_proxy_header",
    TlsHandshake => "tls_handshake",
    BadHttp => "bad_http",
    HeadTimeout => "head_timeout",
    HeadTooLarge => "head_too_large",
    NotFound => "not_found",
    // A UDP datagram.
    TooShort => "too_short",
    Oversized => "oversized",
    BadProtocolId => "bad_protocol_id",
    UnknownAction => "unknown_action",
    Truncated => "truncated",
    ScrapeLength => "scrape_length",
    BadOptions => "bad_options",
    BadConnectionId => "bad_connection_id",
    // An HTTP query.
    MissingParam => "missing_param",
    BadEscape => "bad_escape",
    WrongLength => "wrong_length",
    NotANumber => "not_a_number",
    TooManyInfoHashes => "too_many_info_hashes",
    // Either.
    UnknownEvent => "unknown_event",
    PortZero => "port_zero",
    // The access policy.
    NotListed => "not_listed",
    MissingKey => "missing_key",
    MalformedKey => "malformed_key",
    UnknownKey => "unknown_key",
    ExpiredKey => "expired_key",
    ScrapeNeedsKey => "scrape_needs_key",
    // A client rule ([clients]); shoal_client_refusals_total names the rule.
    ClientRefused => "client_refused",
    // The swarm's limits.
    MaxTorrents => "max_torrents",
    MaxPeers => "max_peers",
    MaxPeersPerTorrent => "max_peers_per_torrent",
    MaxPeersPerIp => "max_peers_per_ip",
    // A UDP or HTTP client announcing from the WebSocket endpoints' prefix (100::/64).
    BadAddress => "bad_address",
    // A WebSocket connection and its frames.
    BadUpgrade => "bad_upgrade",
    BadOrigin => "bad_origin",
    TooManyConnectionsPerIp => "too_many_connections_per_ip",
    NotJson => "not_json",
    BadId => "bad_id",
    BadAnswer => "bad_answer",
    FrameTooLarge => "frame_too_large",
    ConnectionTorrents => "connection_torrents",
    PeerIdInUse => "peer_id_in_use",
    UnknownOffer => "unknown_offer",
    IdleTimeout => "idle_timeout",
    SlowReader => "slow_reader",
}

const KINDS: usize = ErrorKind::ALL.len();

impl From<&protocol::udp::ParseError> for ErrorKind {
    fn from(e: &protocol::udp::ParseError) -> Self {
        use protocol::udp::ParseError as P;
        match e {
            P::TooShort(_) => ErrorKind::TooShort,
            P::TooLong(_) => ErrorKind::Oversized,
            P::BadProtocolId { .. } => ErrorKind::BadProtocolId,
            P::UnknownAction { .. } => ErrorKind::UnknownAction,
            P::Truncated { .. } => ErrorKind::Truncated,
            P::ScrapeLength { .. } => ErrorKind::ScrapeLength,
            P::UnknownEvent { .. } => ErrorKind::UnknownEvent,
            P::BadOptions { .. } => ErrorKind::BadOptions,
            P::PortZero { .. } => ErrorKind::PortZero,
        }
    }
}

impl From<&protocol::http::RequestError> for ErrorKind {
    fn from(e: &protocol::http::RequestError) -> Self {
        use protocol::http::RequestError as R;
        match e {
            R::Missing(_) => ErrorKind::MissingParam,
            R::BadEscape(_) => ErrorKind::BadEscape,
            R::WrongLength { .. } => ErrorKind::WrongLength,
            R::NotANumber(_) => ErrorKind::NotANumber,
            R::PortZero => ErrorKind::PortZero,
            R::UnknownEvent(_) => ErrorKind::UnknownEvent,
            R::TooManyInfoHashes(_) => ErrorKind::TooManyInfoHashes,
        }
    }
}

impl From<super::access::Refusal> for ErrorKind {
    fn from(r: super::access::Refusal) -> Self {
        use super::access::Refusal as A;
        match r {
            A::NotListed(_) => ErrorKind::NotListed,
            A::MissingKey => ErrorKind::MissingKey,
            A::MalformedKey => ErrorKind::MalformedKey,
            A::UnknownKey => ErrorKind::UnknownKey,
            A::ExpiredKey => ErrorKind::ExpiredKey,
            A::ScrapeNeedsKey => ErrorKind::ScrapeNeedsKey,
        }
    }
}

impl From<protocol::ws::ParseErrorKind> for ErrorKind {
    fn from(e: protocol::ws::ParseErrorKind) -> Self {
        use protocol::ws::ParseErrorKind as P;
        match e {
            P::NotJson => ErrorKind::NotJson,
            P::UnknownAction => ErrorKind::UnknownAction,
            P::BadId => ErrorKind::BadId,
            P::UnknownEvent => ErrorKind::UnknownEvent,
            P::BadAnswer => ErrorKind::BadAnswer,
            P::TooManyInfoHashes => ErrorKind::TooManyInfoHashes,
        }
    }
}

impl From<swarm::Refusal> for ErrorKind {
    fn from(r: swarm::Refusal) -> Self {
        match r {
            swarm::Refusal::Torrents => ErrorKind::MaxTorrents,
            swarm::Refusal::Peers => ErrorKind::MaxPeers,
            swarm::Refusal::PeersPerTorrent => ErrorKind::MaxPeersPerTorrent,
            swarm::Refusal::PeersPerIp => ErrorKind::MaxPeersPerIp,
        }
    }
}

/// [protocol][kind]: a fixed table of atomics, so a flood of malformed packets never
/// serialises the UDP workers on a lock.
struct ErrorCounts([[AtomicU64; KINDS]; PROTOCOLS]);

impl Default for ErrorCounts {
    fn default() -> Self {
        ErrorCounts(std::array::from_fn(|_| {
            std::array::from_fn(|_| AtomicU64::new(0))
        }))
    }
}

/// Prometheus text, written one way for every figure the process exposes (the tracker's,
/// the flusher's, the bus's, the admin endpoint's own).
#[derive(Default)]
pub struct Text(String);

impl Text {
    pub fn counter(&mut self, name: &str, help: &str, v: u64) {
        self.family(name, "counter", help);
        let _ = writeln!(self.0, "{name} {v}");
    }

    pub fn gauge(&mut self, name: &str, help: &str, v: impl std::fmt::Display) {
        self.family(name, "gauge", help);
        let _ = writeln!(self.0, "{name} {v}");
    }

    /// The header of a family whose samples carry labels (`sample`).
    pub fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    /// One sample: `labels` as `key="value"` pairs.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], v: u64) {
        let mut l = String::new();
        for (i, (k, val)) in labels.iter().enumerate() {
            let _ = write!(l, "{}{k}=\"{val}\"", if i > 0 { "," } else { "" });
        }
        let _ = writeln!(self.0, "{name}{{{l}}} {v}");
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// The process's counters. The hot-path ones are plain atomics behind methods that say what
/// happened; nothing outside reads or writes a field.
#[derive(Default)]
pub struct Metrics {
    /// [protocol][action]
    requests: [[AtomicU64; 3]; PROTOCOLS],
    /// Malformed or refused requests, by protocol and `ErrorKind`.
    errors: ErrorCounts,
    /// The same, by protocol and action ([protocol][connect, announce, scrape, unknown]).
    failed: [[AtomicU64; 4]; PROTOCOLS],
    ws: WsCounters,
    flushes: AtomicU64,
    flush_failures: AtomicU64,
    /// The last flush failed (cleared by the next that succeeds); `/health` reports it.
    flush_failing: std::sync::atomic::AtomicBool,
    flush_last_micros: AtomicU64,
    flushed_deltas: AtomicU64,
    /// Deltas taken from the swarm but not yet in the database (failed flushes).
    unflushed_deltas: AtomicU64,
    /// Torrents those deltas belong to; bounded by `database.max_pending_torrents`.
    unflushed_torrents: AtomicU64,
    /// Increments dropped because that bound was reached.
    dropped_deltas: AtomicU64,
    expired_peers: AtomicU64,
}

impl Metrics {
    pub fn request(&self, p: Protocol, a: Action) {
        self.requests[p as usize][a as usize].fetch_add(1, Relaxed);
    }

    /// Requests of protocol `p` and action `a` answered so far.
    pub fn requests(&self, p: Protocol, a: Action) -> u64 {
        self.requests[p as usize][a as usize].load(Relaxed)
    }

    /// (protocol, kind, count) of every error counted at least once.
    pub fn error_totals(&self) -> Vec<(&'static str, &'static str, u64)> {
        let mut out = Vec::new();
        for p in Protocol::ALL {
            for (kind, n) in ErrorKind::ALL.iter().zip(&self.errors.0[p as usize]) {
                let n = n.load(Relaxed);
                if n > 0 {
                    out.push((p.label(), kind.label(), n));
                }
            }
        }
        out
    }

    /// `action` is `None` when the request was too broken to tell.
    pub fn error(&self, p: Protocol, action: Option<Action>, kind: ErrorKind) {
        self.failed[p as usize][action.map_or(3, |a| a as usize)].fetch_add(1, Relaxed);
        self.errors.0[p as usize][kind as usize].fetch_add(1, Relaxed);
    }

    /// The flusher holds `deltas` increments of `torrents` torrents to write.
    pub fn flush_holds(&self, torrents: usize, deltas: u64) {
        self.unflushed_torrents.store(torrents as u64, Relaxed);
        self.unflushed_deltas.store(deltas, Relaxed);
    }

    /// `n` increments dropped: `database.max_pending_torrents` was reached.
    pub fn flush_dropped(&self, n: u64) {
        self.dropped_deltas.fetch_add(n, Relaxed);
    }

    /// A flush wrote `deltas` increments in `took`.
    pub fn flushed(&self, deltas: u64, took: std::time::Duration) {
        self.flushes.fetch_add(1, Relaxed);
        self.flush_failing.store(false, Relaxed);
        self.flushed_deltas.fetch_add(deltas, Relaxed);
        self.flush_holds(0, 0);
        self.flush_last_micros
            .store(took.as_micros() as u64, Relaxed);
    }

    /// The database refused a flush; its deltas are kept for the next.
    pub fn flush_failed(&self) {
        self.flush_failures.fetch_add(1, Relaxed);
        self.flush_failing.store(true, Relaxed);
    }

    /// Whether the last flush failed.
    pub fn flush_failing(&self) -> bool {
        self.flush_failing.load(Relaxed)
    }

    pub fn flush_failures(&self) -> u64 {
        self.flush_failures.load(Relaxed)
    }

    /// Increments taken from the swarm that a failed flush still holds.
    pub fn unflushed_deltas(&self) -> u64 {
        self.unflushed_deltas.load(Relaxed)
    }

    /// The WebSocket tracker's connections and relays.
    pub fn ws(&self) -> &WsCounters {
        &self.ws
    }

    pub fn expired(&self, peers: u64) {
        self.expired_peers.fetch_add(peers, Relaxed);
    }

    /// These counters, and the swarm's gauges as `g` says.
    pub fn render(&self, g: &swarm::SwarmStats, out: &mut Text) {
        self.render_requests(out);
        self.render_figures(g, out);
    }

    /// Requests, errors and failures, by protocol and action or kind.
    fn render_requests(&self, out: &mut Text) {
        out.family(
            "shoal_requests_total",
            "counter",
            "Requests answered, by protocol and action.",
        );
        for p in Protocol::ALL {
            for (a, name) in [
                (Action::Connect, "connect"),
                (Action::Announce, "announce"),
                (Action::Scrape, "scrape"),
            ] {
                if p != Protocol::Udp && a == Action::Connect {
                    continue;
                }
                let n = self.requests[p as usize][a as usize].load(Relaxed);
                let labels = [("protocol", p.label()), ("action", name)];
                out.sample("shoal_requests_total", &labels, n);
            }
        }
        out.family(
            "shoal_errors_total",
            "counter",
            "Malformed, refused or dropped requests, by protocol and kind.",
        );
        for p in Protocol::ALL {
            for (kind, n) in ErrorKind::ALL.iter().zip(&self.errors.0[p as usize]) {
                let n = n.load(Relaxed);
                if n > 0 {
                    let labels = [("protocol", p.label()), ("kind", kind.label())];
                    out.sample("shoal_errors_total", &labels, n);
                }
            }
        }
        out.family(
            "shoal_failed_requests_total",
            "counter",
            "Requests answered with an error or dropped, by protocol and action.",
        );
        for p in Protocol::ALL {
            for (i, name) in ["connect", "announce", "scrape", "unknown"]
                .iter()
                .enumerate()
            {
                if p != Protocol::Udp && i == 0 {
                    continue;
                }
                let n = self.failed[p as usize][i].load(Relaxed);
                let labels = [("protocol", p.label()), ("action", name)];
                out.sample("shoal_failed_requests_total", &labels, n);
            }
        }
    }

    /// The flusher's, the expiry's and the swarm's figures.
    fn render_figures(&self, g: &swarm::SwarmStats, out: &mut Text) {
        self.ws.render(out);
        out.counter(
            "shoal_flushes_total",
            "Successful flushes of download deltas.",
            self.flushes.load(Relaxed),
        );
        out.counter(
            "shoal_flush_failures_total",
            "Flushes the database refused; their deltas are retried.",
            self.flush_failures.load(Relaxed),
        );
        out.counter(
            "shoal_flushed_deltas_total",
            "Download increments written to the database.",
            self.flushed_deltas.load(Relaxed),
        );
        out.counter(
            "shoal_dropped_deltas_total",
            "Download increments dropped because database.max_pending_torrents was reached.",
            self.dropped_deltas.load(Relaxed),
        );
        out.gauge(
            "shoal_pending_torrents",
            "Torrents with download increments waiting for a failed flush to succeed.",
            self.unflushed_torrents.load(Relaxed),
        );
        out.counter(
            "shoal_expired_peers_total",
            "Peers removed after the peer timeout.",
            self.expired_peers.load(Relaxed),
        );
        out.gauge(
            "shoal_flush_last_seconds",
            "Duration of the last successful flush.",
            self.flush_last_micros.load(Relaxed) as f64 / 1e6,
        );
        out.gauge(
            "shoal_pending_deltas",
            "Download increments waiting for the database.",
            g.pending_deltas + self.unflushed_deltas.load(Relaxed),
        );
        out.counter(
            "shoal_uncounted_downloads_total",
            "Downloads not counted because limits.max_counted_torrents was reached.",
            g.uncounted_downloads,
        );
        out.gauge(
            "shoal_torrents",
            "Torrents with at least one peer.",
            g.torrents,
        );
        out.gauge(
            "shoal_counted_torrents",
            "Torrents with a download count.",
            g.counted_torrents,
        );
        out.gauge("shoal_seeders", "Seeders in all swarms.", g.seeders);
        out.gauge("shoal_leechers", "Leechers in all swarms.", g.leechers);
        out.gauge(
            "shoal_peers",
            "Peers in all swarms.",
            g.seeders + g.leechers,
        );
    }
}

/// The WebSocket tracker's own figures (its requests and refusals are in the tables above).
#[derive(Default)]
pub struct WsCounters {
    open: AtomicU64,
    offers: AtomicU64,
    answers: AtomicU64,
    dropped: AtomicU64,
}

impl WsCounters {
    pub fn opened(&self) {
        self.open.fetch_add(1, Relaxed);
    }

    pub fn closed(&self) {
        self.open.fetch_sub(1, Relaxed);
    }

    pub fn offer_relayed(&self) {
        self.offers.fetch_add(1, Relaxed);
    }

    pub fn answer_relayed(&self) {
        self.answers.fetch_add(1, Relaxed);
    }

    /// A frame for a connection whose queue was full (a slow reader) or that had gone.
    pub fn relay_dropped(&self) {
        self.dropped.fetch_add(1, Relaxed);
    }

    fn render(&self, out: &mut Text) {
        out.gauge(
            "shoal_ws_connections",
            "Open WebSocket tracker connections.",
            self.open.load(Relaxed),
        );
        out.counter(
            "shoal_ws_offers_relayed_total",
            "WebRTC offers forwarded to a peer.",
            self.offers.load(Relaxed),
        );
        out.counter(
            "shoal_ws_answers_relayed_total",
            "WebRTC answers forwarded to the peer that made the offer.",
            self.answers.load(Relaxed),
        );
        out.counter(
            "shoal_ws_relays_dropped_total",
            "Offers and answers not delivered: the receiver's queue was full or it had gone.",
            self.dropped.load(Relaxed),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_its_own_counter_and_label() {
        for (i, k) in ErrorKind::ALL.iter().enumerate() {
            assert_eq!(*k as usize, i, "ALL is in declaration order");
        }
        let mut labels: Vec<_> = ErrorKind::ALL.iter().map(|k| k.label()).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), KINDS, "labels are distinct");
        let m = Metrics::default();
        m.error(Protocol::Udp, None, ErrorKind::TooShort);
        m.error(Protocol::Udp, None, ErrorKind::TooShort);
        m.error(
            Protocol::Http,
            Some(Action::Announce),
            swarm::Refusal::PeersPerIp.into(),
        );
        let mut text = Text::default();
        m.render(&swarm::SwarmStats::default(), &mut text);
        let text = text.into_string();
        for line in [
            "shoal_errors_total{protocol=\"udp\",kind=\"too_short\"} 2",
            "shoal_errors_total{protocol=\"http\",kind=\"max_peers_per_ip\"} 1",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
    }
}
