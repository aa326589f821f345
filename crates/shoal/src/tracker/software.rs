//! Which BitTorrent client a peer id names, by its prefix (Azureus style `-qB4520-`,
//! Shadow style `M7-2-2--`): a fixed table, so `/metrics` has a bounded label set (the
//! known clients plus "other"). Counted per announce, one atomic add.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use protocol::PeerId;

use super::metrics::Text;

/// Prefix and name, longest prefixes first where one contains another.
const KNOWN: &[(&[u8], &str)] = &[
    (b"-qB", "qBittorrent"),
    (b"-TR", "Transmission"),
    (b"-LT", "libtorrent"),
    (b"-lt", "rTorrent"),
    (b"-DE", "Deluge"),
    (b"-WW", "WebTorrent"),
    (b"-WD", "WebTorrent Desktop"),
    (b"-UT", "uTorrent"),
    (b"-UM", "uTorrent Mac"),
    (b"-BT", "BitTorrent"),
    (b"-BI", "BiglyBT"),
    (b"-AZ", "Vuze"),
    (b"-KT", "KTorrent"),
    (b"-BC", "BitComet"),
    (b"-FD", "Free Download Manager"),
    (b"-XL", "Xunlei"),
    (b"-SD", "Xunlei"),
    (b"-PI", "PicoTorrent"),
    (b"-TX", "Tixati"),
    (b"TIX", "Tixati"),
    (b"A2-", "aria2"),
    (b"-SH", "shoal check"),
];

/// The distinct names, in first-seen order, then "other".
fn names() -> Vec<&'static str> {
    let mut out: Vec<&str> = Vec::new();
    for (_, n) in KNOWN {
        if !out.contains(n) {
            out.push(n);
        }
    }
    out.push("Mainline");
    out.push("other");
    out
}

/// Announces per client name.
pub struct Software {
    names: Vec<&'static str>,
    /// Index into `names` of each `KNOWN` entry.
    index: Vec<usize>,
    counts: Box<[AtomicU64]>,
}

impl Default for Software {
    fn default() -> Self {
        let names = names();
        let index = KNOWN
            .iter()
            .map(|(_, n)| names.iter().position(|m| m == n).unwrap_or(0))
            .collect();
        let counts = names.iter().map(|_| AtomicU64::new(0)).collect();
        Software {
            names,
            index,
            counts,
        }
    }
}

impl Software {
    /// The name a peer id's prefix gives, "other" when it is none of the known ones.
    pub fn name_of(&self, id: &PeerId) -> &'static str {
        self.names[self.slot(id)]
    }

    fn slot(&self, id: &PeerId) -> usize {
        if let Some(i) = KNOWN.iter().position(|(p, _)| id.0.starts_with(p)) {
            return self.index[i];
        }
        // Mainline (Shadow style): M, a digit, then dashes and digits: M7-2-2--.
        if id.0[0] == b'M' && id.0[1].is_ascii_digit() && id.0[2] == b'-' {
            return self.names.len() - 2;
        }
        self.names.len() - 1
    }

    pub fn count(&self, id: &PeerId) {
        self.counts[self.slot(id)].fetch_add(1, Relaxed);
    }

    /// (name, announces), every name, in table order.
    pub fn totals(&self) -> Vec<(&'static str, u64)> {
        self.names
            .iter()
            .zip(self.counts.iter())
            .map(|(n, c)| (*n, c.load(Relaxed)))
            .collect()
    }

    pub fn render(&self, out: &mut Text) {
        out.family(
            "shoal_announces_by_client_total",
            "counter",
            "Announces answered, by the client their peer id names (known clients, Mainline, other).",
        );
        for (name, n) in self.totals() {
            out.sample("shoal_announces_by_client_total", &[("client", name)], n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_ids_name_their_clients_and_the_rest_is_other() {
        let s = Software::default();
        let id = |p: &[u8]| {
            let mut b = [b'0'; 20];
            b[..p.len()].copy_from_slice(p);
            PeerId(b)
        };
        for (p, name) in [
            (&b"-qB4520-"[..], "qBittorrent"),
            (b"-TR4060-", "Transmission"),
            (b"-LT2090-", "libtorrent"),
            (b"-WW0208-", "WebTorrent"),
            (b"M7-2-2--", "Mainline"),
            (b"A2-1-37-", "aria2"),
            (b"-SD0100-", "Xunlei"),
            (b"-ZZ0000-", "other"),
            (b"garbage!", "other"),
        ] {
            assert_eq!(s.name_of(&id(p)), name, "{}", String::from_utf8_lossy(p));
        }
        s.count(&id(b"-qB4520-"));
        s.count(&id(b"-XL0012-"));
        s.count(&id(b"-SD0100-"));
        let totals = s.totals();
        assert!(totals.contains(&("qBittorrent", 1)) && totals.contains(&("Xunlei", 2)));
        assert_eq!(totals.iter().filter(|(n, _)| *n == "Xunlei").count(), 1);
    }
}
